/*
 * Scale limits, end to end: the real daemon against codexpool-sim, small
 * numbers.  When max_clients or the fd limit runs out, clients get HTTP
 * 503 with an OpenAI-style error body, the daemon stays up, and it serves
 * again once the load is gone.
 */
#include "config.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctimer.h"
#include "e2e.h"

/*
 * The daemon's whole RLIMIT_NOFILE in the fd tests.  With 200 the
 * supervisor's derived client cap is 200 - (128 + 200/8) = 47 connections;
 * a worker with 64 runs out of sockets after some 50 conversations.
 */
#define CLIENT_FD_LIMIT	200
#define WORKER_FD_LIMIT	64
#define MAX_IDLE	(CLIENT_FD_LIMIT / 2)

/* {"error":{"message":...,"type":...}} with a non-empty message. */
static void
assert_openai_error(const char *body, const char *want_code)
{
	json_object *o = json_tokener_parse(body), *err, *v;

	ck_assert_msg(o != NULL, "not JSON: %s", body);
	ck_assert_msg(json_object_object_get_ex(o, "error", &err), "no error: %s", body);
	ck_assert(json_object_object_get_ex(err, "message", &v));
	ck_assert_int_gt(strlen(json_object_get_string(v)), 0);
	ck_assert(json_object_object_get_ex(err, "type", &v));
	ck_assert(json_object_is_type(v, json_type_string));
	if (want_code != NULL) {
		ck_assert(json_object_object_get_ex(err, "code", &v));
		ck_assert_str_eq(json_object_get_string(v), want_code);
	}
	json_object_put(o);
}

/* A turn saying text on conversation key; returns the HTTP status. */
static int
plain_turn_text(struct e2e *e, const char *key, const char *text, char **body)
{
	json_object *input = json_object_new_array();
	struct tl_req r = { .instructions = "be brief", .prompt_cache_key = key,
	    .input = input };
	struct tl_response resp;
	char *req;
	int status;

	json_object_array_add(input, tl_msg("user", text));
	req = tl_req_http(&r);
	json_object_put(input);
	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", "/v1/responses", NULL,
	    req, strlen(req), &resp), 0);
	free(req);
	status = resp.status;
	if (body != NULL)
		*body = strdup(resp.body ? resp.body : "");
	tl_response_free(&resp);
	return status;
}

/* A plain turn on its own conversation; returns the HTTP status. */
static int
plain_turn(struct e2e *e, const char *key, char **body)
{
	return plain_turn_text(e, key, "hello", body);
}

static int
tcp_connect(int port)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* What the daemon says unasked on fd within ms, NUL-terminated ("" if nothing). */
static char *
read_unasked(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char *buf = calloc(1, 4096);
	size_t n = 0;
	ssize_t r;

	ck_assert_ptr_nonnull(buf);
	while (n < 4095 && poll(&p, 1, ms) == 1) {
		if ((r = read(fd, buf + n, 4095 - n)) <= 0)
			break;
		n += (size_t)r;
	}
	return buf;
}

/* Restarts the fixture's daemon with RLIMIT_NOFILE = limit (soft and hard). */
static void
restart_with_fd_limit(struct e2e *e, int limit)
{
	char *bin = tl_program("daemon/codexpoold"), script[64], *out = NULL, *p;
	char *argv[] = { "/bin/sh", "-c", script, bin, "-f", "-c", e->conf, NULL };
	int64_t end;

	e2e_daemon_stop(e);
	snprintf(script, sizeof(script), "ulimit -n %d && exec \"$0\" \"$@\"", limit);
	e->port = 0;
	e->daemon = tl_spawn(e->log, argv);
	free(bin);
	ck_assert_int_gt(e->daemon, 0);
	end = tl_now_ms() + WAIT_MS;
	while (tl_now_ms() < end && e->port == 0) {
		if (access(e->ctl, F_OK) == 0 && ctl_run(e, &out, "status") == 0 && out &&
		    (p = strstr(out, "listen: 127.0.0.1:")) != NULL)
			e->port = atoi(p + strlen("listen: 127.0.0.1:"));
		free(out);
		out = NULL;
		if (e->port == 0) {
			ck_assert_msg(tl_alive(e->daemon), "codexpoold exited; see %s", e->log);
			tl_msleep(50);
		}
	}
	ck_assert_int_gt(e->port, 0);
}

static int
log_has(struct e2e *e, const char *needle)
{
	char *text = tl_read_file(e->log, NULL);
	int found = text != NULL && strstr(text, needle) != NULL;

	free(text);
	return found;
}

START_TEST(test_scale__max_clients_503_then_recovers)
{
	struct e2e e;
	struct conv a, b;
	struct tl_stream *sa, *sb;
	char *body = NULL;
	int completed = 0;

	/* each turn streams 40 deltas 50 ms apart: two turns fill max_clients */
	e2e_start(&e, "--deltas 40 --delta-delay-ms 50", "max_clients = 2");
	conv_init(&a, "scale-held-a");
	conv_init(&b, "scale-held-b");
	sa = open_held_stream(&e, &a, "first");
	sb = open_held_stream(&e, &b, "second");

	ck_assert_int_eq(plain_turn(&e, "scale-third", &body), 503);
	assert_openai_error(body, NULL);
	free(body);
	ck_assert(tl_alive(e.daemon));

	ck_assert_int_eq(drain_stream(sa, &completed), 0);
	ck_assert_int_eq(completed, 1);
	tl_stream_close(sa, 0);
	ck_assert_int_eq(drain_stream(sb, &completed), 0);
	ck_assert_int_eq(completed, 1);
	tl_stream_close(sb, 0);
	ck_assert_int_eq(wait_status(&e, "requests_inflight", 0), 0);
	ck_assert_int_eq(plain_turn(&e, "scale-third", NULL), 200);
	conv_free(&a);
	conv_free(&b);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_scale__fd_limit_refuses_clients_with_503_then_recovers)
{
	struct e2e e;
	int idle[MAX_IDLE], n = 0, i, probe;
	char *said, want[64];

	e2e_start(&e, NULL, NULL);
	restart_with_fd_limit(&e, CLIENT_FD_LIMIT);
	snprintf(want, sizeof(want), "RLIMIT_NOFILE: %d", CLIENT_FD_LIMIT);
	ck_assert_msg(log_has(&e, want), "no \"%s\" in %s", want, e.log);
	ck_assert_int_eq(plain_turn(&e, "scale-fd-before", NULL), 200);

	/* idle connections until the daemon refuses one */
	for (n = 0; n < MAX_IDLE; n++) {
		idle[n] = tcp_connect(e.port);
		if (status_num(&e, "client_connections_refused") > 0)
			break;
	}
	ck_assert_int_lt(n, MAX_IDLE);
	/* a new client is told, unasked, why */
	probe = tcp_connect(e.port);
	said = read_unasked(probe, WAIT_MS);
	ck_assert_msg(strncmp(said, "HTTP/1.1 503", 12) == 0, "got: %s", said);
	ck_assert_ptr_nonnull(strstr(said, "\r\n\r\n"));
	assert_openai_error(strstr(said, "\r\n\r\n") + 4, "too_many_connections");
	free(said);
	close(probe);
	ck_assert(tl_alive(e.daemon));

	for (i = 0; i <= n && i < MAX_IDLE; i++)
		close(idle[i]);
	ck_assert_int_eq(wait_status(&e, "client_connections", 0), 0);
	ck_assert_int_eq(plain_turn(&e, "scale-fd-after", NULL), 200);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_scale__worker_out_of_fds_fails_turns_cleanly_then_recovers)
{
	struct e2e e;
	char key[64], *body = NULL;
	int i, ok = 0, refused = 0, status;

	/* one worker; every conversation keeps an upstream socket open */
	e2e_start(&e, NULL, "workers = 1\nws_pool_max_per_account = 1000");
	restart_with_fd_limit(&e, WORKER_FD_LIMIT);
	for (i = 0; i < WORKER_FD_LIMIT + 16; i++) {
		snprintf(key, sizeof(key), "scale-conv-%d", i);
		status = plain_turn(&e, key, &body);
		if (status == 200)
			ok++;
		else {
			ck_assert_msg(status >= 500, "status %d: %s", status, body);
			assert_openai_error(body, NULL);
			refused++;
		}
		free(body);
		body = NULL;
		ck_assert_msg(tl_alive(e.daemon), "codexpoold died; see %s", e.log);
	}
	ck_assert_int_gt(ok, 0);
	ck_assert_int_gt(refused, 0);
	ck_assert_int_eq(status_num(&e, "worker_restarts"), 0);	/* no worker crashed */
	/* closing the pooled connections gives the fds back */
	ck_assert_int_eq(ctl_run(&e, NULL, "pool disable"), 0);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(ctl_run(&e, NULL, "pool enable"), 0);
	ck_assert_int_eq(plain_turn(&e, "scale-after-evict", NULL), 200);
	e2e_stop(&e);
}
END_TEST

/* ---- the connection timer heap (worker/ctimer.c) ---------------------- */

#define NTIMERS	300

struct fired {
	struct ctimer	 t;
	int		 id;
};

static int	fired_order[NTIMERS], nfired;
static usec_t	fired_due[NTIMERS];

static void
record_fire(struct ctimer *t)
{
	struct fired *f = (struct fired *)t;

	fired_due[nfired] = t->due;
	fired_order[nfired++] = f->id;
}

START_TEST(test_scale__timer_heap_fires_in_order_and_forgets_cancelled)
{
	struct lws_context_creation_info info;
	struct lws_context *ctx;
	struct ctimers h;
	struct fired *f = calloc(NTIMERS, sizeof(*f));
	int i, cancelled = 0;

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	lws_set_log_level(LLL_ERR, NULL);
	ck_assert_ptr_nonnull(ctx = lws_create_context(&info));
	memset(&h, 0, sizeof(h));
	nfired = 0;
	/* far in the future, scrambled; every 7th rescheduled, every 5th cancelled */
	for (i = 0; i < NTIMERS; i++) {
		f[i].id = i;
		ctimer_schedule(&h, ctx, &f[i].t, record_fire,
		    1000 * USEC_PER_SEC + (usec_t)((i * 7919) % NTIMERS) * 1000);
	}
	for (i = 0; i < NTIMERS; i += 7)
		ctimer_schedule(&h, ctx, &f[i].t, record_fire, 2000 * USEC_PER_SEC + i);
	for (i = 0; i < NTIMERS; i += 5) {
		ctimer_cancel(&h, &f[i].t);
		ck_assert_int_eq(f[i].t.slot, 0);
		cancelled++;
	}
	ck_assert_uint_eq(h.n, (size_t)(NTIMERS - cancelled));
	/* nothing is due yet */
	ck_assert(ctimers_run(&h, now_mono_usec()) > 0);
	ck_assert_int_eq(nfired, 0);
	/* everything is due in an hour: all fire once, in due order */
	ck_assert(ctimers_run(&h, now_mono_usec() + 3600 * USEC_PER_SEC) == 0);
	ck_assert_int_eq(nfired, NTIMERS - cancelled);
	for (i = 1; i < nfired; i++)
		ck_assert(fired_due[i - 1] <= fired_due[i]);
	for (i = 0; i < nfired; i++)
		ck_assert_int_ne(fired_order[i] % 5, 0);
	ck_assert_ptr_null(h.v);	/* an empty heap holds no memory */
	lws_sul_cancel(&h.sul);
	lws_context_destroy(ctx);
	free(f);
}
END_TEST

/* ---- timers on the workers' event loop (worker/worker.c) --------------- */

#define LATE_TIMER_TURNS	6

/*
 * Each turn's upstream answer is held back 5 s ([[sim:slow_start]]), so
 * only the worker's response-start timer (1 s, scheduled from inside a
 * descriptor callback while lws' timer is armed for the 10 s sweep) can end
 * it, and the supervisor tries each turn three times (fresh connections):
 * 18 such timers.  An event loop that lets a timer wait for the
 * already-armed one (lws 4.1.6's libev glue) makes each 5 s late on
 * average and runs past this test case's timeout (60 s); a correct one
 * takes some 20 s.  Then a plain turn succeeds.
 */
START_TEST(test_scale__worker_timer_from_callback_ends_turns_then_recovers)
{
	struct e2e e;
	char key[64], *body = NULL;
	int i, status;

	e2e_start(&e, NULL, "response_start_timeout = 1s");
	for (i = 0; i < LATE_TIMER_TURNS; i++) {
		snprintf(key, sizeof(key), "scale-late-%d", i % 3);
		status = plain_turn_text(&e, key, "hello [[sim:slow_start=5000]]",
		    &body);
		ck_assert_msg(status == 502, "turn %d: status %d: %s", i, status,
		    body);
		assert_openai_error(body, "upstream_unavailable");
		free(body);
		body = NULL;
	}
	ck_assert_msg(log_has(&e, "response start timeout: no response within "
	    "1000 ms"), "no start timeout in %s", e.log);
	ck_assert_int_eq(status_num(&e, "worker_restarts"), 0);
	ck_assert_int_eq(plain_turn(&e, "scale-late-0", NULL), 200);
	e2e_stop(&e);
}
END_TEST

static Suite *
make_suite_scale(void)
{
	Suite *s = suite_create("scale");
	TCase *tc = tcase_create("timers");

	tcase_add_test(tc, test_scale__timer_heap_fires_in_order_and_forgets_cancelled);
	suite_add_tcase(s, tc);
	tc = tcase_create("limits");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_scale__max_clients_503_then_recovers);
	tcase_add_test(tc, test_scale__fd_limit_refuses_clients_with_503_then_recovers);
	tcase_add_test(tc, test_scale__worker_out_of_fds_fails_turns_cleanly_then_recovers);
	suite_add_tcase(s, tc);
	tc = tcase_create("loop timers");
	tcase_set_timeout(tc, 60);	/* the clock of this case's test */
	tcase_add_test(tc, test_scale__worker_timer_from_callback_ends_turns_then_recovers);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_scale());
}
