/*
 * A real worker process against the real simulator.
 *
 * Each test forks a child that runs worker_main() on one end of a
 * socketpair and drives it from the other end with msgchan, exactly as
 * the supervisor does (no supervisor involved).  The child's log goes to
 * <tmpdir>/worker.log and is printed when a test fails.  Nothing waits
 * for time to pass: every wait is for a message or a state, with a
 * generous deadline.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "jsonutil.h"
#include "log.h"
#include "msg.h"
#include "msgcodec.h"
#include "msgtypes.h"
#include "test_worker_suites.h"
#include "testlib.h"
#include "worker.h"

#define WAIT_MS		30000
#define ANY_RID		UINT64_MAX
#define KEY_1		0x1111aaaa00000001ULL
#define KEY_2		0x2222bbbb00000002ULL
#define KEY_3		0x3333cccc00000003ULL

struct rmsg {
	uint32_t	 type;
	uint64_t	 rid;
	uint8_t		*data;
	size_t		 len;
	int		 used;
};

struct wk {
	pid_t		 pid;
	struct msgchan	*ch;
	struct rmsg	*log;
	size_t		 nlog;
	char		*dir;
	char		 logfile[600];
	struct tl_sim	 sim;
	int		 sim_up;
	struct tl_account acct;
	char		*frame;		/* a plain response.create */
};

/* Everything a turn got back. */
struct turn {
	int		 ndec;
	int		 dec[4];
	int		 reason[4];
	uint64_t	 dec_conn[4];
	int		 started;
	int		 events;
	uint32_t	 final;		/* MSG_REQ_DONE or MSG_REQ_ERROR */
	int		 outcome;
	char		 message[512];
	char		 response_id[128];
	uint64_t	 conn_id;
	uint64_t	 input_tokens, cached_tokens, output_tokens;
	int		 status;
	int		 flags;
	char		 code[128];
	char		 body[4096];
};

static struct wk K;

/* ---- the channel ------------------------------------------------------ */

static void
dump_worker_log(void)
{
	char *log = K.logfile[0] ? tl_read_file(K.logfile, NULL) : NULL;

	if (log != NULL)
		fprintf(stderr, "---- worker log ----\n%s---- end ----\n", log);
	free(log);
	log = K.sim_up ? tl_read_file(K.sim.log, NULL) : NULL;
	if (log != NULL)
		fprintf(stderr, "---- sim log ----\n%s---- end ----\n", log);
	free(log);
}

static int
wk_pump(int timeout_ms)
{
	struct pollfd pfd;
	struct msg m;
	int rc, n = 0;

	if (K.ch == NULL) {
		if (timeout_ms > 0)
			tl_msleep(timeout_ms);	/* only a poll interval */
		return -1;
	}
	pfd.fd = msgchan_fd(K.ch);
	pfd.events = POLLIN;
	if (poll(&pfd, 1, timeout_ms) <= 0)
		return 0;
	rc = msgchan_read(K.ch);
	while (msgchan_next(K.ch, &m) == 1) {
		struct rmsg *r;

		K.log = realloc(K.log, (K.nlog + 1) * sizeof(*K.log));
		ck_assert_ptr_nonnull(K.log);
		r = &K.log[K.nlog++];
		memset(r, 0, sizeof(*r));
		r->type = m.hdr.type;
		r->rid = m.hdr.rid;
		r->len = m.hdr.len;
		r->data = malloc(r->len + 1);
		memcpy(r->data, m.data, r->len);
		if (m.fd >= 0)
			close(m.fd);
		n++;
	}
	return rc == MSGCHAN_EOF && n == 0 ? -1 : n;
}

/* The first unused message of type (and rid) or NULL after timeout. */
static struct rmsg *
wk_wait(uint32_t type, uint64_t rid, int timeout_ms)
{
	int64_t deadline = tl_now_ms() + timeout_ms;
	size_t i;

	for (;;) {
		for (i = 0; i < K.nlog; i++) {
			struct rmsg *r = &K.log[i];

			if (!r->used && r->type == type &&
			    (rid == ANY_RID || r->rid == rid)) {
				r->used = 1;
				return r;
			}
		}
		if (tl_now_ms() >= deadline)
			return NULL;
		if (wk_pump(100) < 0)
			return NULL;
	}
}

static struct rmsg *
wk_must(uint32_t type, uint64_t rid)
{
	struct rmsg *r = wk_wait(type, rid, WAIT_MS);

	if (r == NULL) {
		dump_worker_log();
		ck_abort_msg("no %s for rid %llx", msg_type_name(type),
		    (unsigned long long)rid);
	}
	return r;
}

static int
wk_count(uint32_t type, uint64_t rid)
{
	size_t i;
	int n = 0;

	for (i = 0; i < K.nlog; i++)
		if (K.log[i].type == type && (rid == ANY_RID || K.log[i].rid == rid))
			n++;
	return n;
}

/* A logged message as the struct msg the codec decodes. */
static struct msg
as_msg(const struct rmsg *rm)
{
	struct msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = rm->type;
	m.hdr.rid = rm->rid;
	m.hdr.len = (uint32_t)rm->len;
	m.data = rm->data;
	m.fd = -1;
	return m;
}

static void
wk_send(uint32_t type, uint64_t rid, struct msgbuf *b)
{
	int rc = b ? msgchan_send_buf(K.ch, type, rid, b) :
	    msgchan_send(K.ch, type, rid, NULL, 0, -1);
	struct pollfd pfd;

	ck_assert_int_eq(rc, MSGCHAN_OK);
	while (msgchan_pending(K.ch) > 0) {
		pfd.fd = msgchan_fd(K.ch);
		pfd.events = POLLOUT;
		ck_assert_int_ge(poll(&pfd, 1, WAIT_MS), 0);
		ck_assert_int_ge(msgchan_flush(K.ch), 0);
	}
}

/* ---- the worker process ----------------------------------------------- */

static int
count_fds(void)
{
	int n = 0, fd;

	for (fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

static void
wk_spawn(int slot)
{
	int sv[2], lfd, rc, nfd;
	struct rmsg *hello;
	struct m_hello h;
	struct msg m;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	K.pid = fork();
	ck_assert_int_ge(K.pid, 0);
	if (K.pid == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		lfd = open(K.logfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (lfd >= 0) {
			dup2(lfd, 2);
			close(lfd);
		}
		log_init("worker-test", 1, LOG_LVL_DEBUG);
		nfd = count_fds();
		rc = worker_main(slot, sv[1]);
		/* everything it opened is closed, and the channel too */
		if (rc == 0 && count_fds() != nfd - 1) {
			fprintf(stderr, "worker leaked descriptors: %d -> %d\n",
			    nfd, count_fds());
			rc = 98;
		}
#if defined(__SANITIZE_ADDRESS__)
		/* _exit skips the atexit leak check: run it here */
		if (__lsan_do_recoverable_leak_check() != 0)
			rc = 99;
#endif
		_exit(rc);	/* not exit(): no test-process atexit handlers */
	}
	close(sv[1]);
	K.ch = msgchan_new(sv[0]);
	ck_assert_ptr_nonnull(K.ch);
	hello = wk_must(MSG_HELLO, 0);
	m = as_msg(hello);
	ck_assert_int_eq(m_hello_decode(&m, &h), 0);
	ck_assert_uint_eq(h.proto_version, MSG_PROTO_VERSION);
	ck_assert_uint_eq(h.slot, (uint32_t)slot);
	ck_assert_uint_eq(h.pid, (uint32_t)K.pid);
}

/* Exit status of the worker, waiting up to timeout_ms; -1 on timeout. */
static int
wk_reap(int timeout_ms)
{
	int64_t deadline = tl_now_ms() + timeout_ms;
	int status;
	pid_t p;

	for (;;) {
		p = waitpid(K.pid, &status, WNOHANG);
		if (p == K.pid) {
			K.pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) :
			    1000 + WTERMSIG(status);
		}
		if (tl_now_ms() >= deadline)
			return -1;
		wk_pump(50);
	}
}

struct cfg {
	const char	*host;
	int		 port;
	int		 tls;
	const char	*ca_file;
	const char	*proxy_host;
	int		 proxy_port;
	int		 pool_enabled;
	int64_t		 max_age_us;
	int64_t		 ping_us;
	int64_t		 hs_timeout_us;
	int64_t		 start_timeout_us;
};

static void
cfg_defaults(struct cfg *c)
{
	memset(c, 0, sizeof(*c));
	c->host = "localhost";
	c->port = K.sim.port;
	c->pool_enabled = 1;
	c->max_age_us = 3300LL * 1000000;
	c->ping_us = 25LL * 1000000;
	c->hs_timeout_us = 15LL * 1000000;
	c->start_timeout_us = 180LL * 1000000;
}

static void
wk_config(const struct cfg *c)
{
	struct msgbuf b;

	msgbuf_init(&b);
	m_config_encode(&b, &(struct m_config){
	    .upstream_host = c->host, .upstream_port = (uint32_t)c->port,
	    .upstream_path = "/backend-api/codex/responses",
	    .tls = c->tls != 0, .ca_file = c->ca_file,
	    .proxy_host = c->proxy_host, .proxy_port = (uint32_t)c->proxy_port,
	    .pool_enabled = c->pool_enabled != 0,
	    .max_age_us = (uint64_t)c->max_age_us,
	    .ping_interval_us = (uint64_t)c->ping_us,
	    .handshake_timeout_us = (uint64_t)c->hs_timeout_us,
	    .response_start_timeout_us = (uint64_t)c->start_timeout_us,
	    .originator = "codex_exec", .client_version = "0.169.0" });
	wk_send(MSG_CONFIG, 0, &b);
	msgbuf_free(&b);
}

static void
wk_addrs(const char *addr)
{
	struct msgbuf b;

	msgbuf_init(&b);
	m_upstream_addrs_encode(&b, &(struct m_upstream_addrs){
	    .naddrs = addr ? 1 : 0, .addrs = { addr } });
	wk_send(MSG_UPSTREAM_ADDRS, 0, &b);
	msgbuf_free(&b);
}

/* Build a MSG_REQ_START payload. */
static void
req_payload(struct msgbuf *b, uint64_t key, const char *entry, uint32_t flags,
    uint64_t owner, const char *frame)
{
	struct m_req_start p = {
		.key_hash = key,
		.entry = entry,
		.account_id = K.acct.account_id,
		.access_token = K.acct.access_token,
		.session_id = "0199a3c2-7e1b-7c4d-9f00-5e1a2b3c4d5e",
		.flags = flags,
		.attempt = 1,
		.owner_conn = owner,
		.nheaders = 3,
		.headers = {
			{ "x-codex-turn-metadata", "{\"turn_id\":\"t1\"}" },
			{ "host", "evil.example" },		/* never forwarded */
			{ "x-codex-beta-features", "a\r\nx-injected: 1" }, /* CR/LF: dropped */
		},
		.frame = frame,
		.frame_len = strlen(frame),
	};

	msgbuf_init(b);
	m_req_start_encode(b, &p);
}

static void
wk_start_turn(uint64_t rid, uint64_t key, uint32_t flags, uint64_t owner,
    const char *frame)
{
	struct msgbuf b;

	req_payload(&b, key, "acct-0001", flags, owner, frame ? frame : K.frame);
	wk_send(MSG_REQ_START, rid, &b);
	msgbuf_free(&b);
}

/* A response.create whose user text is text (markers steer the sim). */
static char *
frame_with(const char *text, const char *prev_id)
{
	json_object *input = json_object_new_array();
	char *f;

	json_object_array_add(input, tl_msg("user", text));
	f = tl_response_create(NULL, "You are a test.", NULL, prev_id, input);
	json_object_put(input);
	return f;
}

/* Collect a turn: decisions, start, events, and its one final message. */
static void
wk_turn(uint64_t rid, struct turn *t)
{
	struct rmsg *fin = NULL;
	size_t fin_idx = 0;
	struct m_req_decision dec;
	struct m_req_done done;
	struct m_req_error err;
	struct msg m;
	int64_t deadline = tl_now_ms() + WAIT_MS;
	size_t i;

	memset(t, 0, sizeof(*t));
	while (fin == NULL) {
		for (i = 0; i < K.nlog && fin == NULL; i++)
			if (K.log[i].rid == rid && (K.log[i].type == MSG_REQ_DONE ||
			    K.log[i].type == MSG_REQ_ERROR)) {
				fin = &K.log[i];
				fin_idx = i;
			}
		if (fin != NULL)
			break;
		if (tl_now_ms() >= deadline || wk_pump(100) < 0) {
			dump_worker_log();
			ck_abort_msg("no final message for rid %llx",
			    (unsigned long long)rid);
		}
	}
	/* exactly one final, and nothing for the rid after it */
	wk_pump(0);
	fin = &K.log[fin_idx];		/* the log may have moved */
	ck_assert_int_eq(wk_count(MSG_REQ_DONE, rid) + wk_count(MSG_REQ_ERROR, rid), 1);
	for (i = 0; i < K.nlog; i++) {
		struct rmsg *x = &K.log[i];

		if (x->rid != rid || x->used)
			continue;
		if (x->type == MSG_REQ_DECISION && t->ndec < 4) {
			x->used = 1;
			m = as_msg(x);
			ck_assert_int_eq(m_req_decision_decode(&m, &dec), 0);
			t->dec[t->ndec] = dec.decision;
			t->reason[t->ndec] = dec.reason;
			t->dec_conn[t->ndec] = dec.conn_id;
			t->ndec++;
		} else if (x->type == MSG_REQ_STARTED) {
			x->used = 1;
			m = as_msg(x);
			ck_assert_int_eq(m_req_started_decode(&m), 0);
			ck_assert_int_eq(t->events, 0);	/* STARTED comes first */
			t->started++;
		} else if (x->type == MSG_REQ_EVENT) {
			struct m_req_event ev;

			x->used = 1;
			m = as_msg(x);
			ck_assert_int_eq(m_req_event_decode(&m, &ev), 0);
			ck_assert_uint_gt(ev.frame_len, 0);
			ck_assert_int_eq(t->started, 1);
			t->events++;
		} else if (x->type == MSG_RATE_LIMITS) {
			struct m_rate_limits rl;

			x->used = 1;
			m = as_msg(x);
			ck_assert_int_eq(m_rate_limits_decode(&m, &rl), 0);
			ck_assert_str_eq(rl.entry, "acct-0001");
			ck_assert_uint_gt(rl.frame_len, 0);
		}
	}
	fin->used = 1;
	t->final = fin->type;
	m = as_msg(fin);
	if (fin->type == MSG_REQ_DONE) {
		ck_assert_int_eq(m_req_done_decode(&m, &done), 0);
		t->outcome = done.outcome;
		snprintf(t->message, sizeof(t->message), "%s", done.message);
		snprintf(t->response_id, sizeof(t->response_id), "%s",
		    done.response_id);
		t->input_tokens = done.input_tokens;
		t->cached_tokens = done.cached_tokens;
		t->output_tokens = done.output_tokens;
		t->conn_id = done.conn_id;
	} else {
		ck_assert_int_eq(m_req_error_decode(&m, &err), 0);
		t->status = (int)err.http_status;
		t->flags = err.flags;
		snprintf(t->code, sizeof(t->code), "%s", err.code);
		snprintf(t->body, sizeof(t->body), "%.*s", (int)err.body_len,
		    (const char *)err.body);
	}
}

static void
expect_completed(const struct turn *t)
{
	if (t->final != MSG_REQ_DONE || t->outcome != DONE_COMPLETED) {
		dump_worker_log();
		ck_abort_msg("turn not completed: final %s outcome %d status %d "
		    "code %s msg %s body %s", msg_type_name(t->final), t->outcome,
		    t->status, t->code, t->message, t->body);
	}
	ck_assert_int_eq(t->started, 1);
	ck_assert_int_gt(t->events, 0);
	ck_assert(t->response_id[0] != '\0');
}

/* A CONN_DOWN for conn_id: 1 and its reason, or 0. */
static int
conn_down(uint64_t conn_id, char *reason, size_t rlen, int timeout_ms)
{
	int64_t deadline = tl_now_ms() + timeout_ms;
	struct m_conn_down cd;
	struct msg m;
	size_t i;

	for (;;) {
		for (i = 0; i < K.nlog; i++) {
			if (K.log[i].type != MSG_CONN_DOWN)
				continue;
			m = as_msg(&K.log[i]);
			ck_assert_int_eq(m_conn_down_decode(&m, &cd), 0);
			ck_assert_str_eq(cd.entry, "acct-0001");
			if (cd.conn_id == conn_id) {
				if (reason)
					snprintf(reason, rlen, "%s", cd.reason);
				return 1;
			}
		}
		if (tl_now_ms() >= deadline || wk_pump(100) < 0)
			return 0;
	}
}

static int
count_conn_up(uint64_t conn_id)
{
	struct m_conn_up cu;
	struct msg m;
	size_t i;
	int n = 0;

	for (i = 0; i < K.nlog; i++) {
		if (K.log[i].type != MSG_CONN_UP)
			continue;
		m = as_msg(&K.log[i]);
		ck_assert_int_eq(m_conn_up_decode(&m, &cu), 0);
		ck_assert_str_eq(cu.entry, "acct-0001");
		if (conn_id == 0 || cu.conn_id == conn_id)
			n++;
	}
	return n;
}

static uint64_t
wk_stat(const char *name)
{
	static uint64_t rid = 0x5000;
	static struct m_stats st;	/* big: not on the stack */
	struct msg m;
	uint32_t i;
	uint64_t v = UINT64_MAX;

	wk_send(MSG_STATS_REQ, ++rid, NULL);
	m = as_msg(wk_must(MSG_STATS, rid));
	ck_assert_int_eq(m_stats_decode(&m, &st), 0);
	for (i = 0; i < st.nstats; i++)
		if (strcmp(st.stats[i].name, name) == 0)
			v = st.stats[i].value;
	ck_assert_msg(v != UINT64_MAX, "no stat %s", name);
	return v;
}

static int64_t
sim_int(const char *key)
{
	json_object *st = tl_sim_state(&K.sim);
	int64_t v;

	if (st == NULL)
		dump_worker_log();
	ck_assert_ptr_nonnull(st);
	v = json_get_int(st, key, -1);
	json_object_put(st);
	return v;
}

/* Polls the sim until key == want; the value seen last. */
static int64_t
sim_wait_int(const char *key, int64_t want)
{
	int64_t deadline = tl_now_ms() + WAIT_MS, v;

	for (;;) {
		v = sim_int(key);
		if (v == want || tl_now_ms() >= deadline)
			return v;
		wk_pump(50);
	}
}

/* ---- fixtures -------------------------------------------------------- */

static void
start_env(int tls)
{
	char args[1400];
	struct cfg c;

	memset(&K, 0, sizeof(K));
	K.dir = tl_tmpdir();
	ck_assert_ptr_nonnull(K.dir);
	snprintf(K.logfile, sizeof(K.logfile), "%s/worker.log", K.dir);
	/* the worker first: it must not inherit the sim's process registry */
	wk_spawn(2);
	if (tls) {
		ck_assert_int_eq(tl_make_certs(K.dir), 0);
		snprintf(args, sizeof(args), "--tls-cert %s/server.pem "
		    "--tls-key %s/server.key", K.dir, K.dir);
	}
	ck_assert_int_eq(tl_sim_start(&K.sim, K.dir, tls ? args : NULL), 0);
	K.sim_up = 1;
	ck_assert_int_eq(tl_sim_account(&K.sim, 1, &K.acct), 0);
	K.frame = frame_with("hello worker", NULL);
	cfg_defaults(&c);
	if (tls) {
		c.tls = 1;
		c.ca_file = K.sim.ca_file;
	}
	wk_config(&c);
	wk_addrs("127.0.0.1");
}

static void
setup_plain(void)
{
	start_env(0);
}

static void
teardown_env(void)
{
	size_t i;

	if (getenv("CODEXPOOL_TEST_VERBOSE") != NULL)
		dump_worker_log();
	if (K.pid > 0) {
		kill(K.pid, SIGKILL);
		waitpid(K.pid, NULL, 0);
	}
	if (K.ch != NULL)
		msgchan_free(K.ch);
	if (K.sim_up)
		tl_sim_stop(&K.sim);
	tl_account_free(&K.acct);
	for (i = 0; i < K.nlog; i++)
		free(K.log[i].data);
	free(K.log);
	free(K.frame);
	if (K.dir != NULL) {
		tl_rmrf(K.dir);
		free(K.dir);
	}
	memset(&K, 0, sizeof(K));
}

/* Graceful stop: MSG_SHUTDOWN, and the worker exits 0 (no leaks). */
static void
stop_worker(void)
{
	struct msgbuf b;
	int rc;

	msgbuf_init(&b);
	m_shutdown_encode(&b, &(struct m_shutdown){ .grace_us = 10 * 1000000ULL });
	wk_send(MSG_SHUTDOWN, 0, &b);
	msgbuf_free(&b);
	rc = wk_reap(WAIT_MS);
	if (rc != 0)
		dump_worker_log();
	ck_assert_int_eq(rc, 0);
}

/* ---- tests ------------------------------------------------------------ */

/* Three turns of one conversation share one upstream connection. */
START_TEST(test_worker__three_turns_one_connection)
{
	struct turn t[3];
	json_object *st, *hs, *h;
	const char *v;
	int i;

	for (i = 0; i < 3; i++) {
		wk_start_turn(0x100 + i, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
		wk_turn(0x100 + i, &t[i]);
		expect_completed(&t[i]);
		ck_assert_int_eq(t[i].ndec, 1);
	}
	ck_assert_int_eq(t[0].dec[0], DEC_NEW);
	ck_assert_int_eq(t[1].dec[0], DEC_REUSE);
	ck_assert_int_eq(t[2].dec[0], DEC_REUSE);
	ck_assert_uint_ne(t[0].dec_conn[0], 0);
	ck_assert_uint_eq(t[1].dec_conn[0], t[0].dec_conn[0]);
	ck_assert_uint_eq(t[2].dec_conn[0], t[0].dec_conn[0]);
	/* a completed turn on a pooled connection names its owner */
	for (i = 0; i < 3; i++)
		ck_assert_uint_eq(t[i].conn_id, t[0].dec_conn[0]);
	ck_assert_int_eq(count_conn_up(t[0].dec_conn[0]), 1);
	ck_assert_int_eq(sim_int("connections_total"), 1);
	ck_assert_int_eq(sim_int("requests_total"), 3);
	ck_assert_uint_eq(wk_stat("dispatch_new"), 1);
	ck_assert_uint_eq(wk_stat("dispatch_reuse"), 2);
	ck_assert_uint_eq(wk_stat("conns_open"), 1);
	ck_assert_uint_eq(wk_stat("requests_inflight"), 0);
	ck_assert_uint_gt(wk_stat("frames_relayed"), 3);

	/* what the upstream saw in the handshake */
	st = tl_sim_state(&K.sim);
	ck_assert_ptr_nonnull(st);
	hs = json_get_array(st, "handshakes");
	ck_assert_ptr_nonnull(hs);
	ck_assert_uint_eq(json_object_array_length(hs), 1);
	h = json_get_obj(json_object_array_get_idx(hs, 0), "headers");
	ck_assert_ptr_nonnull(h);
	ck_assert_str_eq(json_get_str(h, "authorization"), "Bearer [redacted]");
	ck_assert_str_eq(json_get_str(h, "chatgpt-account-id"), K.acct.account_id);
	ck_assert_str_eq(json_get_str(h, "openai-beta"),
	    "responses_websockets=2026-02-06");
	ck_assert_str_eq(json_get_str(h, "originator"), "codex_exec");
	ck_assert_str_eq(json_get_str(h, "version"), "0.169.0");
	v = "0199a3c2-7e1b-7c4d-9f00-5e1a2b3c4d5e";
	ck_assert_str_eq(json_get_str(h, "session-id"), v);
	ck_assert_str_eq(json_get_str(h, "x-client-request-id"), v);
	ck_assert_str_eq(json_get_str(h, "x-codex-window-id"),
	    "0199a3c2-7e1b-7c4d-9f00-5e1a2b3c4d5e:0");
	ck_assert_str_eq(json_get_str(h, "user-agent"),
	    "codex_exec/0.169.0 (Debian 12; x86_64)");
	ck_assert_str_eq(json_get_str(h, "x-codex-turn-metadata"),
	    "{\"turn_id\":\"t1\"}");
	ck_assert_ptr_null(json_get_str(h, "x-codex-beta-features"));
	ck_assert_ptr_null(json_get_str(h, "sec-websocket-extensions"));
	ck_assert_ptr_null(json_get_str(h, "sec-websocket-protocol"));
	ck_assert_str_eq(json_get_str(h, "host"), "localhost");
	json_object_put(st);

	stop_worker();
	/* tokens never reach the log */
	ck_assert_int_eq(tl_file_contains(K.logfile, K.acct.access_token), 0);
	ck_assert_int_eq(tl_file_contains(K.logfile, "ws=new:"), 1);
	ck_assert_int_eq(tl_file_contains(K.logfile, "ws=reuse:"), 1);
}
END_TEST

/* A second turn while the key's connection is busy: bypass(busy). */
START_TEST(test_worker__busy_key_bypass)
{
	struct turn t1, t2;

	/* both in one write: the worker decides the second while the first
	 * is still connecting, whatever the timing */
	wk_start_turn(0x200, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_start_turn(0x201, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x200, &t1);
	wk_turn(0x201, &t2);
	expect_completed(&t1);
	expect_completed(&t2);
	ck_assert_int_eq(t1.dec[0], DEC_NEW);
	ck_assert_int_eq(t2.dec[0], DEC_BYPASS);
	ck_assert_int_eq(t2.reason[0], BYP_BUSY);
	ck_assert_uint_eq(t2.dec_conn[0], 0);
	ck_assert_uint_eq(t2.conn_id, 0);	/* one-shot: no owner */
	ck_assert_int_eq(sim_int("connections_total"), 2);
	ck_assert_int_eq(count_conn_up(0), 1);
	/* the one-shot closes after its turn; the pooled one stays */
	ck_assert_int_eq(sim_wait_int("connections_open", 1), 1);
	ck_assert_uint_eq(wk_stat("bypass_busy"), 1);
	stop_worker();
}
END_TEST

/* The seed's rule: a reused connection that dies before the first frame
 * is retried once on a fresh one-shot connection. */
START_TEST(test_worker__stale_reuse_retry)
{
	struct turn t1, t2, t3;
	char why[128];

	wk_start_turn(0x300, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x300, &t1);
	expect_completed(&t1);
	ck_assert_int_eq(tl_sim_fault(&K.sim,
	    "{\"kind\":\"close_before_first\",\"count\":1}"), 0);
	wk_start_turn(0x301, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x301, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.ndec, 2);
	ck_assert_int_eq(t2.dec[0], DEC_REUSE);
	ck_assert_uint_eq(t2.dec_conn[0], t1.dec_conn[0]);
	ck_assert_int_eq(t2.dec[1], DEC_RETRY_STALE);
	ck_assert_uint_eq(t2.dec_conn[1], t1.dec_conn[0]);
	ck_assert_uint_eq(t2.conn_id, 0);
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_int_eq(sim_int("connections_total"), 2);
	ck_assert_uint_eq(wk_stat("retry_stale"), 1);

	/* the stale connection is gone: the next turn opens a new one */
	wk_start_turn(0x302, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x302, &t3);
	expect_completed(&t3);
	ck_assert_int_eq(t3.dec[0], DEC_NEW);
	ck_assert_uint_ne(t3.dec_conn[0], t1.dec_conn[0]);
	stop_worker();
}
END_TEST

/* A continuation is never retried elsewhere: it fails closed. */
START_TEST(test_worker__continuation_fails_closed)
{
	struct turn t1, t2, t3, t4;
	char *f;

	wk_start_turn(0x400, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x400, &t1);
	expect_completed(&t1);

	/* on its owner: reuse */
	f = frame_with("and then?", t1.response_id);
	wk_start_turn(0x401, KEY_1, REQ_F_POOLED | REQ_F_CONTINUE,
	    t1.conn_id, f);
	wk_turn(0x401, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.dec[0], DEC_REUSE);
	ck_assert_uint_eq(t2.dec_conn[0], t1.conn_id);
	free(f);

	/* the owner dies before the first frame: 502, no retry */
	ck_assert_int_eq(tl_sim_fault(&K.sim,
	    "{\"kind\":\"close_before_first\",\"count\":1}"), 0);
	f = frame_with("more", t2.response_id);
	wk_start_turn(0x402, KEY_1, REQ_F_POOLED | REQ_F_CONTINUE,
	    t2.conn_id, f);
	wk_turn(0x402, &t3);
	free(f);
	ck_assert_uint_eq(t3.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t3.status, 502);
	ck_assert_str_eq(t3.code, "upstream_connection_lost");
	ck_assert_int_eq(t3.ndec, 1);
	ck_assert_int_eq(t3.started, 0);

	/* now the owner is gone: refused before any dispatch */
	f = frame_with("again", t2.response_id);
	wk_start_turn(0x403, KEY_1, REQ_F_POOLED | REQ_F_CONTINUE,
	    t2.conn_id, f);
	wk_turn(0x403, &t4);
	free(f);
	ck_assert_uint_eq(t4.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t4.status, 400);
	ck_assert_str_eq(t4.code, "previous_response_not_found");
	ck_assert_int_eq(t4.ndec, 0);
	ck_assert_int_eq(sim_int("connections_total"), 1);
	stop_worker();
}
END_TEST

START_TEST(test_worker__mid_stream_close)
{
	struct turn t;
	char *f = frame_with("break it [[sim:close_mid_stream]]", NULL);

	wk_start_turn(0x500, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	wk_turn(0x500, &t);
	free(f);
	ck_assert_uint_eq(t.final, MSG_REQ_DONE);
	ck_assert_int_eq(t.outcome, DONE_STREAM_ERROR);
	ck_assert_int_eq(t.started, 1);
	ck_assert_int_gt(t.events, 0);
	ck_assert_ptr_nonnull(strstr(t.message,
	    "upstream closed before response.completed"));
	ck_assert_ptr_nonnull(strstr(t.message, "code=1011"));
	ck_assert_int_eq(t.ndec, 1);		/* never replayed */
	ck_assert_int_eq(conn_down(t.dec_conn[0], NULL, 0, WAIT_MS), 1);
	ck_assert_int_eq(sim_int("connections_total"), 1);
	stop_worker();
}
END_TEST

/* A classified first-frame error: nothing reached the client, the
 * account is at fault, and the connection stays pooled. */
START_TEST(test_worker__first_frame_error_keeps_conn)
{
	struct turn t1, t2;
	json_object *body;
	char *f = frame_with("limit [[sim:usage_limit]]", NULL);

	wk_start_turn(0x600, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	wk_turn(0x600, &t1);
	free(f);
	ck_assert_uint_eq(t1.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t1.status, 429);
	ck_assert_int_eq(t1.flags & ERR_F_ACCOUNT, ERR_F_ACCOUNT);
	ck_assert_int_eq(t1.flags & ERR_F_RETRYABLE, 0);
	ck_assert_str_eq(t1.code, "usage_limit_reached");
	ck_assert_int_eq(t1.started, 0);
	ck_assert_int_eq(t1.events, 0);
	body = json_parse_buf(t1.body, strlen(t1.body), NULL, 0);
	ck_assert_ptr_nonnull(body);		/* the upstream frame itself */
	ck_assert_str_eq(json_get_str(body, "type"), "error");
	json_object_put(body);

	wk_start_turn(0x601, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x601, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.dec[0], DEC_REUSE);
	ck_assert_uint_eq(t2.dec_conn[0], t1.dec_conn[0]);
	ck_assert_int_eq(sim_int("connections_total"), 1);
	stop_worker();
}
END_TEST

/* The client went away: the connection is evicted, never reused. */
START_TEST(test_worker__cancel_evicts)
{
	struct turn t1, t2;
	char why[128];
	char *f = frame_with("wait [[sim:stall]]", NULL);

	wk_start_turn(0x700, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	free(f);
	wk_must(MSG_CONN_UP, 0);		/* established, turn sent */
	wk_send(MSG_REQ_CANCEL, 0x700, NULL);
	wk_turn(0x700, &t1);
	ck_assert_uint_eq(t1.final, MSG_REQ_ERROR);
	ck_assert_str_eq(t1.code, "client_cancelled");
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_str_eq(why, "cancelled");
	/* a second cancel of a finished turn is ignored */
	wk_send(MSG_REQ_CANCEL, 0x700, NULL);

	wk_start_turn(0x701, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x701, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.dec[0], DEC_NEW);
	ck_assert_uint_ne(t2.dec_conn[0], t1.dec_conn[0]);
	ck_assert_int_eq(wk_count(MSG_REQ_DONE, 0x700) +
	    wk_count(MSG_REQ_ERROR, 0x700), 1);
	stop_worker();
}
END_TEST

START_TEST(test_worker__evict_entry)
{
	struct turn t1, t2, t3;
	struct msgbuf b;
	char why[128];

	wk_start_turn(0x800, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x800, &t1);
	wk_start_turn(0x801, KEY_2, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x801, &t2);
	expect_completed(&t1);
	expect_completed(&t2);
	ck_assert_int_eq(sim_wait_int("connections_open", 2), 2);

	msgbuf_init(&b);
	m_evict_encode(&b, &(struct m_evict){ .entry = "acct-0001" });
	wk_send(MSG_EVICT, 0, &b);
	msgbuf_free(&b);
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_str_eq(why, "evicted");
	ck_assert_int_eq(conn_down(t2.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_int_eq(sim_wait_int("connections_open", 0), 0);
	ck_assert_uint_eq(wk_stat("conns_open"), 0);
	ck_assert_uint_eq(wk_stat("evicted"), 2);

	wk_start_turn(0x802, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x802, &t3);
	expect_completed(&t3);
	ck_assert_int_eq(t3.dec[0], DEC_NEW);
	stop_worker();
}
END_TEST

/* An upgrade answered with an HTTP status is final: no one-shot retry. */
START_TEST(test_worker__handshake_status)
{
	struct turn t;
	char why[128];

	ck_assert_int_eq(tl_sim_fault(&K.sim,
	    "{\"kind\":\"reject_handshake\",\"status\":429,\"count\":1}"), 0);
	wk_start_turn(0x900, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x900, &t);
	ck_assert_uint_eq(t.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t.status, 429);
	ck_assert_int_eq(t.flags & ERR_F_ACCOUNT, ERR_F_ACCOUNT);
	ck_assert_str_eq(t.code, "rate_limit_exceeded");
	ck_assert_int_eq(t.ndec, 1);
	ck_assert_int_eq(t.dec[0], DEC_NEW);
	/* the reserved cap slot is given back */
	ck_assert_int_eq(conn_down(t.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_int_eq(count_conn_up(t.dec_conn[0]), 0);
	ck_assert_int_eq(sim_int("handshakes_total"), 1);
	stop_worker();
}
END_TEST

/* A 5xx on the upgrade of a new pooled connection (a load balancer's):
 * one one-shot fallback, as for a refused connection.  A 5xx on a
 * one-shot is final and retryable. */
START_TEST(test_worker__handshake_5xx_falls_back)
{
	struct turn t1, t2, t3;
	char why[128];

	ck_assert_int_eq(tl_sim_fault(&K.sim,
	    "{\"kind\":\"reject_handshake\",\"status\":503,\"count\":1}"), 0);
	wk_start_turn(0x1500, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1500, &t1);
	expect_completed(&t1);
	ck_assert_int_eq(t1.ndec, 2);
	ck_assert_int_eq(t1.dec[0], DEC_NEW);
	ck_assert_int_eq(t1.dec[1], DEC_BYPASS);
	ck_assert_int_eq(t1.reason[1], BYP_FACTORY_ERROR);
	ck_assert_uint_eq(t1.conn_id, 0);		/* one-shot: owns nothing */
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_ptr_nonnull(strstr(why, "HTTP 503"));
	ck_assert_int_eq(count_conn_up(t1.dec_conn[0]), 0);
	ck_assert_int_eq(sim_int("handshakes_total"), 2);
	ck_assert_uint_eq(wk_stat("bypass_factory_error"), 1);

	/* the fallback refused too: final, retryable, nothing relayed */
	ck_assert_int_eq(tl_sim_fault(&K.sim,
	    "{\"kind\":\"reject_handshake\",\"status\":502,\"count\":2}"), 0);
	wk_start_turn(0x1501, KEY_2, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1501, &t2);
	ck_assert_uint_eq(t2.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t2.status, 502);
	ck_assert_int_eq(t2.flags, ERR_F_RETRYABLE);
	ck_assert_str_eq(t2.code, "upstream_unavailable");
	ck_assert_int_eq(t2.ndec, 2);
	ck_assert_int_eq(t2.reason[1], BYP_FACTORY_ERROR);
	ck_assert_int_eq(t2.started, 0);

	/* a one-shot from the start (no conversation): no second try */
	ck_assert_int_eq(tl_sim_fault(&K.sim,
	    "{\"kind\":\"reject_handshake\",\"status\":503,\"count\":1}"), 0);
	wk_start_turn(0x1502, 0, REQ_F_GRANT, 0, NULL);
	wk_turn(0x1502, &t3);
	ck_assert_uint_eq(t3.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t3.status, 503);
	ck_assert_int_eq(t3.flags, ERR_F_RETRYABLE);
	ck_assert_int_eq(t3.ndec, 1);
	ck_assert_int_eq(t3.dec[0], DEC_BYPASS);
	ck_assert_int_eq(t3.reason[0], BYP_NO_KEY);
	ck_assert_int_eq(sim_int("handshakes_total"), 5);
	stop_worker();
}
END_TEST

/* Upstream failures before the first byte that another attempt may get
 * past are retryable, and not the account's fault. */
START_TEST(test_worker__retryable_failures)
{
	static const struct {
		const char	*marker;
		int		 status;
		const char	*code;
	} rows[] = {
		{ "[[sim:overloaded]]", 503, "server_is_overloaded" },
		{ "[[sim:server_error]]", 500, "server_error" },
		{ "[[sim:reset]]", 502, "upstream_unavailable" },
	};
	struct turn t;
	char text[64];
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *f;

		snprintf(text, sizeof(text), "fail %s", rows[i].marker);
		f = frame_with(text, NULL);
		wk_start_turn(0x1800 + i, KEY_1 + i, REQ_F_POOLED | REQ_F_GRANT,
		    0, f);
		free(f);
		wk_turn(0x1800 + i, &t);
		ck_assert_msg(t.final == MSG_REQ_ERROR && t.status ==
		    rows[i].status && t.flags == ERR_F_RETRYABLE &&
		    strcmp(t.code, rows[i].code) == 0,
		    "%s: final %s status %d flags %d code %s", rows[i].marker,
		    msg_type_name(t.final), t.status, t.flags, t.code);
		ck_assert_int_eq(t.started, 0);
		ck_assert_int_eq(t.events, 0);
	}
	stop_worker();
}
END_TEST

/* REQ_F_FRESH (the supervisor's retry after a retryable failure): the
 * key's idle connection is closed, never reused; a new pooled one with
 * a grant, a one-shot without. */
START_TEST(test_worker__fresh_retry)
{
	struct turn t1, t2, t3, t4;
	char why[128];

	wk_start_turn(0x1600, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1600, &t1);
	expect_completed(&t1);
	ck_assert_int_eq(t1.dec[0], DEC_NEW);

	wk_start_turn(0x1601, KEY_1, REQ_F_POOLED | REQ_F_GRANT | REQ_F_FRESH,
	    0, NULL);
	wk_turn(0x1601, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.ndec, 1);
	ck_assert_int_eq(t2.dec[0], DEC_NEW);
	ck_assert_uint_ne(t2.dec_conn[0], t1.dec_conn[0]);
	ck_assert_uint_eq(t2.conn_id, t2.dec_conn[0]);
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_str_eq(why, "fresh connection for a retry");
	ck_assert_int_eq(sim_int("connections_total"), 2);
	ck_assert_int_eq(sim_wait_int("connections_open", 1), 1);
	ck_assert_uint_eq(wk_stat("fresh_closed"), 1);
	ck_assert_uint_eq(wk_stat("dispatch_reuse"), 0);

	/* no grant: the idle one goes all the same, the turn is one-shot */
	wk_start_turn(0x1602, KEY_1, REQ_F_POOLED | REQ_F_FRESH, 0, NULL);
	wk_turn(0x1602, &t3);
	expect_completed(&t3);
	ck_assert_int_eq(t3.ndec, 1);
	ck_assert_int_eq(t3.dec[0], DEC_BYPASS);
	ck_assert_int_eq(t3.reason[0], BYP_CAP);
	ck_assert_int_eq(conn_down(t2.dec_conn[0], NULL, 0, WAIT_MS), 1);
	ck_assert_uint_eq(wk_stat("fresh_closed"), 2);

	/* without the flag the pool works as before */
	wk_start_turn(0x1603, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1603, &t4);
	expect_completed(&t4);
	ck_assert_int_eq(t4.dec[0], DEC_NEW);
	ck_assert_int_eq(sim_wait_int("connections_open", 1), 1);
	stop_worker();
}
END_TEST

/* A payload the codec rejects: a turn is answered (500, never retried),
 * anything else is dropped, and the worker carries on. */
START_TEST(test_worker__malformed_messages)
{
	struct turn t1, t2;
	struct msgbuf b;
	char *f;

	req_payload(&b, KEY_1, "acct-0001", REQ_F_POOLED | REQ_F_GRANT, 0,
	    K.frame);
	msg_add_u8(&b, 0);			/* one byte too many */
	wk_send(MSG_REQ_START, 0x1700, &b);
	msgbuf_free(&b);
	wk_turn(0x1700, &t1);
	ck_assert_uint_eq(t1.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t1.status, 500);
	ck_assert_int_eq(t1.flags, 0);
	ck_assert_str_eq(t1.code, "worker_protocol_error");
	ck_assert_int_eq(t1.ndec, 0);

	msgbuf_init(&b);
	msg_add_u32(&b, 5);			/* a string cut short */
	msg_add_u8(&b, 'a');
	wk_send(MSG_EVICT, 0, &b);
	msgbuf_free(&b);

	/* a cancel with a payload does not cancel the running turn */
	f = frame_with("take a moment [[sim:slow_start=300]]", NULL);
	wk_start_turn(0x1701, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	free(f);
	wk_must(MSG_REQ_DECISION, 0x1701);
	msgbuf_init(&b);
	msg_add_u8(&b, 1);
	wk_send(MSG_REQ_CANCEL, 0x1701, &b);
	msgbuf_free(&b);
	wk_turn(0x1701, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(sim_int("requests_total"), 1);
	stop_worker();
	ck_assert_int_eq(tl_file_contains(K.logfile,
	    "malformed evict (5 bytes) ignored"), 1);
}
END_TEST

/* Pool switched off at run time, and turns without a conversation. */
START_TEST(test_worker__bypass_disabled_and_no_key)
{
	struct turn t1, t2, t3;
	struct msgbuf b;

	wk_start_turn(0xa00, 0, REQ_F_GRANT, 0, NULL);
	wk_turn(0xa00, &t1);
	expect_completed(&t1);
	ck_assert_int_eq(t1.dec[0], DEC_BYPASS);
	ck_assert_int_eq(t1.reason[0], BYP_NO_KEY);

	wk_start_turn(0xa01, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xa01, &t2);
	expect_completed(&t2);
	msgbuf_init(&b);
	m_pool_enable_encode(&b, &(struct m_pool_enable){ .enabled = false });
	wk_send(MSG_POOL_ENABLE, 0, &b);
	msgbuf_free(&b);
	ck_assert_int_eq(conn_down(t2.dec_conn[0], NULL, 0, WAIT_MS), 1);

	wk_start_turn(0xa02, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xa02, &t3);
	expect_completed(&t3);
	ck_assert_int_eq(t3.dec[0], DEC_BYPASS);
	ck_assert_int_eq(t3.reason[0], BYP_DISABLED);
	ck_assert_int_eq(sim_wait_int("connections_open", 0), 0);
	ck_assert_uint_eq(wk_stat("bypass_disabled"), 1);
	ck_assert_uint_eq(wk_stat("bypass_no_key"), 1);
	stop_worker();
}
END_TEST

/* A stalled reused connection is found dead by the liveness check
 * (no pongs), and the turn is retried as a stale reuse. */
START_TEST(test_worker__liveness_kill)
{
	struct turn t1, t2;
	struct cfg c;

	cfg_defaults(&c);
	c.ping_us = 200 * 1000;		/* dead after 500 ms of silence */
	wk_config(&c);
	wk_start_turn(0xb00, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xb00, &t1);
	expect_completed(&t1);
	ck_assert_int_eq(tl_sim_fault(&K.sim, "{\"kind\":\"stall\",\"count\":1}"), 0);
	wk_start_turn(0xb01, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xb01, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.dec[0], DEC_REUSE);
	ck_assert_int_eq(t2.dec[1], DEC_RETRY_STALE);
	ck_assert_uint_ge(wk_stat("liveness_kills"), 1);
	stop_worker();
}
END_TEST

/* Response-start timeout on a new connection: a clear 502. */
START_TEST(test_worker__start_timeout)
{
	struct turn t;
	struct cfg c;
	char *f = frame_with("slow [[sim:slow_start=60000]]", NULL);

	cfg_defaults(&c);
	c.start_timeout_us = 300 * 1000;
	wk_config(&c);
	wk_start_turn(0xc00, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	wk_turn(0xc00, &t);
	free(f);
	ck_assert_uint_eq(t.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t.status, 502);
	ck_assert_int_eq(t.flags & ERR_F_RETRYABLE, ERR_F_RETRYABLE);
	ck_assert_str_eq(t.code, "upstream_unavailable");
	ck_assert_ptr_nonnull(strstr(t.body, "response start timeout"));
	ck_assert_int_eq(conn_down(t.dec_conn[0], NULL, 0, WAIT_MS), 1);
	stop_worker();
}
END_TEST

/* Shutdown: new turns refused, the running one finishes, exit 0. */
START_TEST(test_worker__shutdown_drains)
{
	struct turn t1, t2, t3;
	struct msgbuf b;
	char *f = frame_with("take your time [[sim:slow_start=500]]", NULL);
	int rc;

	wk_start_turn(0xd00, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xd00, &t1);
	expect_completed(&t1);
	wk_start_turn(0xd01, KEY_2, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	free(f);
	wk_must(MSG_REQ_DECISION, 0xd01);
	msgbuf_init(&b);
	m_shutdown_encode(&b, &(struct m_shutdown){ .grace_us = 60 * 1000000ULL });
	wk_send(MSG_SHUTDOWN, 0, &b);
	msgbuf_free(&b);
	wk_start_turn(0xd02, KEY_3, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xd02, &t3);
	ck_assert_uint_eq(t3.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t3.status, 503);
	ck_assert_str_eq(t3.code, "shutting_down");
	wk_turn(0xd01, &t2);
	expect_completed(&t2);
	ck_assert_uint_eq(t2.conn_id, 0);	/* closing: owns nothing */
	ck_assert_int_eq(conn_down(t1.dec_conn[0], NULL, 0, WAIT_MS), 1);
	rc = wk_reap(WAIT_MS);
	if (rc != 0)
		dump_worker_log();
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(sim_wait_int("connections_open", 0), 0);
}
END_TEST

/* The supervisor vanished: the worker exits at once. */
START_TEST(test_worker__exit_on_eof)
{
	struct turn t;
	int rc;

	wk_start_turn(0xe00, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xe00, &t);
	expect_completed(&t);
	msgchan_free(K.ch);
	K.ch = NULL;
	rc = wk_reap(WAIT_MS);
	if (rc != 0)
		dump_worker_log();
	ck_assert_int_eq(rc, 0);
}
END_TEST

/* The upstream closes an idle pooled connection: it leaves the pool at
 * once, and the next turn opens a new one (no stale reuse needed). */
START_TEST(test_worker__upstream_closes_idle)
{
	struct turn t1, t2;
	char why[256];
	char *f = frame_with("bye after [[sim:close_idle]]", NULL);

	wk_start_turn(0x1400, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, f);
	wk_turn(0x1400, &t1);
	free(f);
	expect_completed(&t1);
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_ptr_nonnull(strstr(why, "closed by upstream"));
	wk_start_turn(0x1401, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1401, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.ndec, 1);
	ck_assert_int_eq(t2.dec[0], DEC_NEW);
	ck_assert_uint_eq(wk_stat("retry_stale"), 0);
	stop_worker();
}
END_TEST

/* A port nobody listens on (bound, then released). */
static int
dead_port(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* A listener that never answers (the kernel completes the TCP handshake). */
static int
mute_listener(int *port)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* Nothing listens: the pooled attempt fails, one one-shot, then 502. */
START_TEST(test_worker__upstream_refused)
{
	struct turn t;
	struct cfg c;
	char why[128];

	cfg_defaults(&c);
	c.port = dead_port();
	wk_config(&c);
	wk_start_turn(0x1000, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1000, &t);
	ck_assert_uint_eq(t.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t.status, 502);
	ck_assert_int_eq(t.flags, ERR_F_RETRYABLE);
	ck_assert_str_eq(t.code, "upstream_unavailable");
	ck_assert_int_eq(t.ndec, 2);
	ck_assert_int_eq(t.dec[0], DEC_NEW);
	ck_assert_int_eq(t.dec[1], DEC_BYPASS);
	ck_assert_int_eq(t.reason[1], BYP_FACTORY_ERROR);
	ck_assert_int_eq(conn_down(t.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_uint_eq(wk_stat("bypass_factory_error"), 1);
	ck_assert_uint_eq(wk_stat("sockets"), 0);

	/* a name and no address from the supervisor: the worker does not
	 * resolve, it fails the attempt (synchronously inside lws) */
	c.host = "upstream.invalid";
	wk_config(&c);
	wk_addrs(NULL);
	wk_start_turn(0x1001, KEY_2, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1001, &t);
	ck_assert_uint_eq(t.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t.status, 502);
	ck_assert_ptr_nonnull(strstr(t.body, "no resolved address"));
	ck_assert_int_eq(t.ndec, 2);
	ck_assert_int_eq(conn_down(t.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_uint_eq(wk_stat("sockets"), 0);
	stop_worker();
}
END_TEST

/* An upgrade that is never answered is bounded by handshake_timeout. */
START_TEST(test_worker__handshake_timeout)
{
	struct turn t;
	struct cfg c;
	int lfd, port;

	lfd = mute_listener(&port);
	cfg_defaults(&c);
	c.port = port;
	c.hs_timeout_us = 300 * 1000;
	wk_config(&c);
	wk_start_turn(0x1100, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1100, &t);
	close(lfd);
	ck_assert_uint_eq(t.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t.status, 502);
	ck_assert_ptr_nonnull(strstr(t.body, "handshake timeout"));
	ck_assert_int_eq(t.ndec, 2);
	ck_assert_int_eq(t.reason[1], BYP_FACTORY_ERROR);
	stop_worker();
}
END_TEST

/* Reloads keep connections; MSG_CONN_CLOSE closes one by id. */
START_TEST(test_worker__reload_and_conn_close)
{
	struct turn t1, t2, t3;
	struct msgbuf b;
	struct cfg c;
	char other[700], why[128];

	wk_start_turn(0x1200, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1200, &t1);
	expect_completed(&t1);

	/* new trust settings: a new vhost for new connections only */
	snprintf(other, sizeof(other), "%s/other", K.dir);
	ck_assert_int_eq(mkdir(other, 0700), 0);
	ck_assert_int_eq(tl_make_certs(other), 0);
	strcat(other, "/ca.pem");
	cfg_defaults(&c);
	c.ca_file = other;
	c.ping_us = 20LL * 1000000;
	wk_config(&c);
	wk_start_turn(0x1201, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1201, &t2);
	expect_completed(&t2);
	ck_assert_int_eq(t2.dec[0], DEC_REUSE);
	wk_start_turn(0x1202, KEY_2, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1202, &t3);
	expect_completed(&t3);
	ck_assert_int_eq(t3.dec[0], DEC_NEW);
	ck_assert_int_eq(sim_wait_int("connections_open", 2), 2);

	msgbuf_init(&b);
	m_conn_close_encode(&b, &(struct m_conn_close){
	    .conn_id = t1.dec_conn[0], .reason = "make room" });
	wk_send(MSG_CONN_CLOSE, 0, &b);
	msgbuf_free(&b);
	ck_assert_int_eq(conn_down(t1.dec_conn[0], why, sizeof(why), WAIT_MS), 1);
	ck_assert_str_eq(why, "make room");
	ck_assert_int_eq(sim_wait_int("connections_open", 1), 1);
	ck_assert_uint_eq(wk_stat("conns_open"), 1);
	stop_worker();
}
END_TEST

/* ---- an HTTP CONNECT proxy for the proxy test ---- */

static void
proxy_one(int c, int target_port, const char *record)
{
	char buf[8192];
	size_t n = 0;
	ssize_t r;
	struct sockaddr_in sa;
	struct pollfd p[2];
	char *end = NULL, *eol;
	int u, fd;
	const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	while (end == NULL && n < sizeof(buf) - 1) {
		r = read(c, buf + n, sizeof(buf) - 1 - n);
		if (r <= 0)
			return;
		n += (size_t)r;
		buf[n] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (end == NULL || (eol = strstr(buf, "\r\n")) == NULL)
		return;
	if ((fd = open(record, O_WRONLY | O_CREAT | O_APPEND, 0600)) >= 0) {
		*eol = '\n';
		(void)!write(fd, buf, (size_t)(eol - buf + 1));
		close(fd);
	}
	u = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)target_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(u, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return;
	(void)!write(c, ok, sizeof(ok) - 1);
	end += 4;
	if ((size_t)(end - buf) < n)
		(void)!write(u, end, n - (size_t)(end - buf));
	p[0].fd = c;
	p[1].fd = u;
	p[0].events = p[1].events = POLLIN;
	while (poll(p, 2, -1) > 0) {
		int i;

		for (i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(p[i].fd, buf, sizeof(buf));
			if (r <= 0 || write(p[1 - i].fd, buf, (size_t)r) != r)
				return;
		}
	}
}

static pid_t
start_proxy(int target_port, int *port, const char *record)
{
	int lfd = mute_listener(port);
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGCHLD, SIG_IGN);	/* no zombies */
		for (;;) {
			int c = accept(lfd, NULL, NULL);

			if (c < 0)
				continue;
			if (fork() == 0) {
				close(lfd);
				proxy_one(c, target_port, record);
				_exit(0);
			}
			close(c);
		}
	}
	close(lfd);
	return pid;
}

/* Through an HTTP CONNECT proxy the worker asks for the upstream by
 * name and never resolves it itself (.invalid never resolves). */
START_TEST(test_worker__connect_proxy)
{
	struct turn t;
	struct cfg c;
	char record[700], want[128];
	json_object *st, *h;
	pid_t proxy;
	int pport;

	snprintf(record, sizeof(record), "%s/proxy.log", K.dir);
	proxy = start_proxy(K.sim.port, &pport, record);
	cfg_defaults(&c);
	c.host = "upstream.invalid";
	c.proxy_host = "127.0.0.1";
	c.proxy_port = pport;
	wk_config(&c);
	wk_addrs(NULL);
	wk_start_turn(0x1300, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0x1300, &t);
	kill(proxy, SIGKILL);
	waitpid(proxy, NULL, 0);
	expect_completed(&t);
	ck_assert_int_eq(t.dec[0], DEC_NEW);
	snprintf(want, sizeof(want), "CONNECT upstream.invalid:%d ", K.sim.port);
	ck_assert_int_eq(tl_file_contains(record, want), 1);
	st = tl_sim_state(&K.sim);
	ck_assert_ptr_nonnull(st);
	h = json_get_obj(json_object_array_get_idx(json_get_array(st,
	    "handshakes"), 0), "headers");
	ck_assert_str_eq(json_get_str(h, "host"), "upstream.invalid");
	json_object_put(st);
	stop_worker();
}
END_TEST

static void
setup_tls(void)
{
	start_env(1);
}

/* TLS with the configured CA; the certificate is checked against the
 * host name, never the numeric address we connect to. */
START_TEST(test_worker__tls_verified)
{
	struct turn t1, t2;
	struct cfg c;

	wk_start_turn(0xf00, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xf00, &t1);
	expect_completed(&t1);
	ck_assert_int_eq(t1.dec[0], DEC_NEW);

	/* same address, a name the certificate does not have: refused,
	 * although the certificate also lists IP 127.0.0.1 */
	cfg_defaults(&c);
	c.tls = 1;
	c.ca_file = K.sim.ca_file;
	c.host = "wrong.example";
	wk_config(&c);
	wk_start_turn(0xf01, KEY_2, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xf01, &t2);
	ck_assert_uint_eq(t2.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t2.status, 502);
	ck_assert_int_eq(t2.ndec, 2);
	ck_assert_int_eq(t2.dec[1], DEC_BYPASS);
	ck_assert_int_eq(t2.reason[1], BYP_FACTORY_ERROR);
	stop_worker();
}
END_TEST

/* A CA that did not sign the server: the handshake fails, no silent
 * success, no plaintext fallback. */
START_TEST(test_worker__tls_wrong_ca)
{
	struct turn t;
	struct cfg c;
	char other[700];

	snprintf(other, sizeof(other), "%s/other", K.dir);
	ck_assert_int_eq(mkdir(other, 0700), 0);
	ck_assert_int_eq(tl_make_certs(other), 0);
	strcat(other, "/ca.pem");
	cfg_defaults(&c);
	c.tls = 1;
	c.ca_file = other;
	wk_config(&c);
	wk_start_turn(0xf10, KEY_1, REQ_F_POOLED | REQ_F_GRANT, 0, NULL);
	wk_turn(0xf10, &t);
	ck_assert_uint_eq(t.final, MSG_REQ_ERROR);
	ck_assert_int_eq(t.status, 502);
	ck_assert_str_eq(t.code, "upstream_unavailable");
	ck_assert_int_eq(t.ndec, 2);
	ck_assert_int_eq(t.dec[0], DEC_NEW);
	ck_assert_int_eq(t.dec[1], DEC_BYPASS);
	ck_assert_int_eq(t.reason[1], BYP_FACTORY_ERROR);
	ck_assert_int_eq(conn_down(t.dec_conn[0], NULL, 0, WAIT_MS), 1);
	ck_assert_int_eq(t.started, 0);
	stop_worker();
}
END_TEST

Suite *
make_suite_worker(void)
{
	Suite *s = suite_create("worker");
	TCase *tc = tcase_create("plain");

	tcase_add_checked_fixture(tc, setup_plain, teardown_env);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_worker__three_turns_one_connection);
	tcase_add_test(tc, test_worker__busy_key_bypass);
	tcase_add_test(tc, test_worker__stale_reuse_retry);
	tcase_add_test(tc, test_worker__continuation_fails_closed);
	tcase_add_test(tc, test_worker__mid_stream_close);
	tcase_add_test(tc, test_worker__first_frame_error_keeps_conn);
	tcase_add_test(tc, test_worker__cancel_evicts);
	tcase_add_test(tc, test_worker__evict_entry);
	tcase_add_test(tc, test_worker__handshake_status);
	tcase_add_test(tc, test_worker__handshake_5xx_falls_back);
	tcase_add_test(tc, test_worker__fresh_retry);
	tcase_add_test(tc, test_worker__retryable_failures);
	tcase_add_test(tc, test_worker__malformed_messages);
	tcase_add_test(tc, test_worker__bypass_disabled_and_no_key);
	tcase_add_test(tc, test_worker__liveness_kill);
	tcase_add_test(tc, test_worker__start_timeout);
	tcase_add_test(tc, test_worker__shutdown_drains);
	tcase_add_test(tc, test_worker__exit_on_eof);
	tcase_add_test(tc, test_worker__upstream_refused);
	tcase_add_test(tc, test_worker__handshake_timeout);
	tcase_add_test(tc, test_worker__reload_and_conn_close);
	tcase_add_test(tc, test_worker__connect_proxy);
	tcase_add_test(tc, test_worker__upstream_closes_idle);
	suite_add_tcase(s, tc);

	tc = tcase_create("tls");
	tcase_add_checked_fixture(tc, setup_tls, teardown_env);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_worker__tls_verified);
	tcase_add_test(tc, test_worker__tls_wrong_ca);
	suite_add_tcase(s, tc);
	return s;
}
