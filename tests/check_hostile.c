/*
 * Bad input and faults, end to end against the real daemon: idle client
 * connections past the cap and past the fd limit, clients that leave
 * before their reply, and conversation keys that are long, hold control
 * characters or NUL.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <dirent.h>
#include <unistd.h>

#include "e2e.h"

/* A TCP connection to the daemon that sends nothing; -1 on failure. */
static int
raw_connect(int port)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* 1 when the peer closed fd (EOF or reset) within timeout_ms; any bytes
 * before the close (a 503) are read and dropped. */
static int
wait_closed(int fd, int timeout_ms)
{
	int64_t end = tl_now_ms() + timeout_ms;
	char buf[1024];

	while (tl_now_ms() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return 1;
	}
	return 0;
}

/* Lines of the daemon's log that contain needle. */
static int
log_count(struct e2e *e, const char *needle)
{
	size_t len;
	char *text = tl_read_file(e->log, &len), *p;
	int n = 0;

	for (p = text; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	free(text);
	return n;
}


static int
simple_turn(struct e2e *e, const char *key)
{
	struct conv c;
	int status;

	conv_init(&c, key);
	status = conv_turn(e, &c, "hello", 0, NULL, NULL);
	conv_free(&c);
	return status;
}

#define NIDLE 40

START_TEST(test_hostile__connection_cap_refuses_and_idle_closes)
{
	struct e2e e;
	struct tl_response r;
	int fds[NIDLE], i, closed = 0;

	e2e_start(&e, NULL, "max_client_connections = 20\nclient_idle_timeout = 2s\n");
	for (i = 0; i < NIDLE; i++)
		ck_assert_int_ge(fds[i] = raw_connect(e.port), 0);
	/* the cap is full of idle connections: a real client gets a clean
	 * 503 (or, having sent first, a reset), never a hang */
	if (tl_http("127.0.0.1", e.port, "GET", "/health", NULL, NULL, 0, &r) == 0) {
		ck_assert_int_eq(r.status, 503);
		ck_assert_ptr_nonnull(strstr(r.body, "too_many_connections"));
		tl_response_free(&r);
	}
	/* the idle ones are closed after client_idle_timeout */
	for (i = 0; i < NIDLE; i++) {
		closed += wait_closed(fds[i], WAIT_MS);
		close(fds[i]);
	}
	ck_assert_int_eq(closed, NIDLE);
	ck_assert_int_ge(status_num(&e, "client_connections_refused"), NIDLE - 20);
	ck_assert_int_eq(simple_turn(&e, "after-cap"), 200);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_hostile__fd_exhaustion_pauses_accept)
{
	struct e2e e;
	struct rlimit rl;
	int fds[NIDLE], i, n, accept_lines;

	/* a cap above what the fd limit allows: accept() itself fails */
	e2e_start(&e, NULL, "max_client_connections = 100000\nclient_idle_timeout = 2s\n");
	n = tl_fd_count(e.daemon);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(prlimit(e.daemon, RLIMIT_NOFILE, NULL, &rl), 0);
	rl.rlim_cur = (rlim_t)n + 8;
	ck_assert_int_eq(prlimit(e.daemon, RLIMIT_NOFILE, &rl, NULL), 0);
	for (i = 0; i < NIDLE; i++)
		ck_assert_int_ge(fds[i] = raw_connect(e.port), 0);	/* the backlog takes them */
	/* long enough for a spinning accept loop to log thousands of lines */
	tl_msleep(1500);
	accept_lines = log_count(&e, "accept");
	ck_assert_int_ge(accept_lines, 1);
	ck_assert_int_lt(accept_lines, 50);
	/* the idle ones time out, the paused ones are accepted in turn */
	for (i = 0; i < NIDLE; i++) {
		ck_assert_int_eq(wait_closed(fds[i], WAIT_MS), 1);
		close(fds[i]);
	}
	ck_assert_int_lt(log_count(&e, "accept"), 50);
	ck_assert_int_eq(simple_turn(&e, "after-exhaustion"), 200);
	e2e_stop(&e);
}
END_TEST

/* A client that trickles its headers, never idle for long, is closed at
 * client_request_timeout. */
START_TEST(test_hostile__trickled_request_is_closed)
{
	struct e2e e;
	int64_t end;
	int fd, closed = 0;

	e2e_start(&e, NULL, "client_request_timeout = 2s\nclient_idle_timeout = 60s\n");
	fd = raw_connect(e.port);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_gt(send(fd, "POST /v1/responses HTTP/1.1\r\n", 30, MSG_NOSIGNAL), 0);
	end = tl_now_ms() + WAIT_MS;
	while (!closed && tl_now_ms() < end) {
		if (send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL) < 0)
			closed = 1;
		else
			closed = wait_closed(fd, 300);
	}
	ck_assert_int_eq(closed, 1);
	close(fd);
	ck_assert_int_eq(simple_turn(&e, "after-trickle"), 200);
	e2e_stop(&e);
}
END_TEST

/* A /v1/responses request written on a raw socket; returns the socket. */
static int
send_raw_turn(struct e2e *e, const char *key, int stream)
{
	json_object *input = json_object_new_array();
	struct tl_req r = { .instructions = e->instructions, .prompt_cache_key = key,
	    .input = input, .stream = stream };
	char *body, head[256];
	int fd;

	json_object_array_add(input, tl_msg("user", "take your time"));
	body = tl_req_http(&r);
	fd = raw_connect(e->port);
	ck_assert_int_ge(fd, 0);
	snprintf(head, sizeof(head), "POST /v1/responses HTTP/1.1\r\nHost: x\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", strlen(body));
	ck_assert_int_eq(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
	ck_assert_int_eq(send(fd, body, strlen(body), MSG_NOSIGNAL), (ssize_t)strlen(body));
	free(body);
	json_object_put(input);
	return fd;
}

static int
wait_sim(struct e2e *e, const char *key, long long want)
{
	int64_t end = tl_now_ms() + WAIT_MS;

	while (tl_now_ms() < end) {
		if (sim_num(e, key) == want)
			return 0;
		tl_msleep(50);
	}
	fprintf(stderr, "sim %s never became %lld (now %lld)\n", key, want, sim_num(e, key));
	return -1;
}

/* The upstream answer is 60 s away; the client leaves long before: the
 * turn is cancelled and its pooled connection closed within WAIT_MS. */
static void
client_leaves_before_reply(int stream)
{
	struct e2e e;
	int fd;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"slow_start\",\"ms\":60000}"), 0);
	fd = send_raw_turn(&e, stream ? "leaves-streaming" : "leaves-plain", stream);
	ck_assert_int_eq(wait_sim(&e, "connections_open", 1), 0);
	tl_msleep(300);		/* the request goes out on it */
	close(fd);
	ck_assert_int_eq(wait_status(&e, "client_aborts", 1), 0);
	ck_assert_int_eq(wait_sim(&e, "connections_open", 0), 0);
	ck_assert_int_eq(simple_turn(&e, "after-abort"), 200);
	e2e_stop(&e);
}

START_TEST(test_hostile__nonstream_client_leaves)
{
	client_leaves_before_reply(0);
}
END_TEST

START_TEST(test_hostile__stream_client_leaves_before_first_frame)
{
	client_leaves_before_reply(1);
}
END_TEST

START_TEST(test_hostile__long_session_keeps_its_account)
{
	struct e2e e;
	struct conv c;
	char hdr[400], path[700], *first = NULL, *now;
	int i;

	e2e_start(&e, NULL, NULL);
	tl_sim_auth_path(&e.sim, 2, path, sizeof(path));
	ck_assert_int_eq(ctl_run(&e, NULL, "account add --auth-json %s --label second", path), 0);
	memcpy(hdr, "session_id: ", 12);
	memset(hdr + 12, 's', 300);
	memcpy(hdr + 312, "\r\n", 3);
	conv_init(&c, NULL);
	c.headers = hdr;
	for (i = 0; i < 6; i++) {
		if (i == 3) {
			/* the affinity must come back from the store */
			e2e_daemon_stop(&e);
			e2e_daemon_start(&e);
		}
		ck_assert_int_eq(conv_turn(&e, &c, "again", 0, NULL, NULL), 200);
		now = last_sim_account(&e);
		ck_assert_ptr_nonnull(now);
		if (first == NULL)
			first = now;
		else {
			ck_assert_str_eq(now, first);
			free(now);
		}
		/* one conversation: one pooled connection per daemon run */
		ck_assert_int_eq(sim_num(&e, "connections_total"), i < 3 ? 1 : 2);
	}
	free(first);
	conv_free(&c);
	ck_assert_int_eq(log_count(&e, "cannot store affinity"), 0);
	e2e_stop(&e);
}
END_TEST

/* The same rule for Claude Code's session header on /v1/messages. */
START_TEST(test_hostile__long_claude_session_keeps_its_account)
{
	static const char body[] = "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";
	struct e2e e;
	struct tl_response r;
	char hdr[512], path[700], *first = NULL, *now;
	int i;

	e2e_start(&e, NULL, NULL);
	tl_sim_auth_path(&e.sim, 2, path, sizeof(path));
	ck_assert_int_eq(ctl_run(&e, NULL, "account add --auth-json %s --label second", path), 0);
	memcpy(hdr, "x-claude-code-session-id: ", 26);
	memset(hdr + 26, 'c', 300);
	snprintf(hdr + 326, sizeof(hdr) - 326, "\r\nanthropic-version: 2023-06-01\r\n");
	for (i = 0; i < 4; i++) {
		if (i == 2) {
			e2e_daemon_stop(&e);
			e2e_daemon_start(&e);
		}
		ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/messages", hdr,
		    body, strlen(body), &r), 0);
		ck_assert_int_eq(r.status, 200);
		tl_response_free(&r);
		now = last_sim_account(&e);
		ck_assert_ptr_nonnull(now);
		if (first == NULL)
			first = now;
		else {
			ck_assert_str_eq(now, first);
			free(now);
		}
	}
	free(first);
	ck_assert_int_eq(log_count(&e, "cannot store affinity"), 0);
	e2e_stop(&e);
}
END_TEST

/* A turn whose prompt_cache_key is the JSON text key (escapes and all). */
static int
turn_with_raw_key(struct e2e *e, const char *json_key)
{
	json_object *input = json_object_new_array();
	struct tl_req r = { .instructions = e->instructions, .prompt_cache_key = "@KEY@",
	    .input = input };
	struct tl_response resp;
	char *body, *at, *full;
	int status;

	json_object_array_add(input, tl_msg("user", "same first message"));
	body = tl_req_http(&r);
	at = strstr(body, "@KEY@");
	ck_assert_ptr_nonnull(at);
	full = malloc(strlen(body) + strlen(json_key) + 1);
	memcpy(full, body, (size_t)(at - body));
	strcpy(full + (at - body), json_key);
	strcat(full, at + 5);
	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", "/v1/responses", NULL,
	    full, strlen(full), &resp), 0);
	status = resp.status;
	tl_response_free(&resp);
	free(full);
	free(body);
	json_object_put(input);
	return status;
}

START_TEST(test_hostile__keys_with_nul_stay_distinct)
{
	struct e2e e;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(turn_with_raw_key(&e, "a\\u0000b"), 200);
	ck_assert_int_eq(turn_with_raw_key(&e, "a\\u0000c"), 200);
	/* two conversations: two pooled connections, no reuse */
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 0);
	/* and each is itself again */
	ck_assert_int_eq(turn_with_raw_key(&e, "a\\u0000b"), 200);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(log_count(&e, "cannot store affinity"), 0);
	e2e_stop(&e);
}
END_TEST

static Suite *
hostile_suite(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, test_hostile__connection_cap_refuses_and_idle_closes);
	tcase_add_test(tc, test_hostile__fd_exhaustion_pauses_accept);
	tcase_add_test(tc, test_hostile__trickled_request_is_closed);
	tcase_add_test(tc, test_hostile__nonstream_client_leaves);
	tcase_add_test(tc, test_hostile__stream_client_leaves_before_first_frame);
	tcase_add_test(tc, test_hostile__long_session_keeps_its_account);
	tcase_add_test(tc, test_hostile__long_claude_session_keeps_its_account);
	tcase_add_test(tc, test_hostile__keys_with_nul_stay_distinct);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return e2e_run(hostile_suite());
}
