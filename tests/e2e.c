/* The end-to-end fixture (see e2e.h). */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"

/* ---- fixture -------------------------------------------------------- */

int
ctl_run(struct e2e *e, char **out, const char *fmt, ...)
{
	char line[512], outpath[800], *argv[24], *tok, *save = NULL;
	char *ctlbin = tl_program("ctl/codexpoolctl");
	int argc = 0, rc;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	argv[argc++] = ctlbin;
	argv[argc++] = "-s";
	argv[argc++] = e->ctl;
	for (tok = strtok_r(line, " ", &save); tok && argc < 23; tok = strtok_r(NULL, " ", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	snprintf(outpath, sizeof(outpath), "%s/ctl.out", e->dir);
	unlink(outpath);
	rc = tl_run(outpath, argv, WAIT_MS);
	if (out != NULL)
		*out = tl_read_file(outpath, NULL);
	free(ctlbin);
	return rc;
}

/* A numeric field of `codexpoolctl status`; -1 if absent. */
long long
status_num(struct e2e *e, const char *key)
{
	char *out = NULL, *p, needle[128];
	long long v = -1;

	if (ctl_run(e, &out, "status") != 0 || out == NULL) {
		free(out);
		return -1;
	}
	snprintf(needle, sizeof(needle), "\n%s: ", key);
	if (strncmp(out, needle + 1, strlen(needle) - 1) == 0)
		v = strtoll(out + strlen(needle) - 1, NULL, 10);
	else if ((p = strstr(out, needle)) != NULL)
		v = strtoll(p + strlen(needle), NULL, 10);
	free(out);
	return v;
}

/* Polls a status counter until it equals want. */
int
wait_status(struct e2e *e, const char *key, long long want)
{
	int64_t end = tl_now_ms() + WAIT_MS;

	while (tl_now_ms() < end) {
		if (status_num(e, key) == want)
			return 0;
		tl_msleep(50);
	}
	fprintf(stderr, "status %s never became %lld (now %lld)\n", key, want, status_num(e, key));
	return -1;
}

long long
sim_num(struct e2e *e, const char *key)
{
	json_object *st = tl_sim_state(&e->sim), *v;
	long long n = -1;

	if (st != NULL && json_object_object_get_ex(st, key, &v))
		n = json_object_get_int64(v);
	json_object_put(st);
	return n;
}

void
e2e_daemon_start(struct e2e *e)
{
	char *daemonbin, *listen = NULL, *out = NULL, *p;
	char *argv[8];
	int64_t end;

	daemonbin = tl_program("daemon/codexpoold");
	argv[0] = daemonbin;
	argv[1] = "-f";
	argv[2] = "-c";
	argv[3] = e->conf;
	argv[4] = NULL;
	e->port = 0;
	e->daemon = tl_spawn(e->log, argv);
	free(daemonbin);
	ck_assert_int_gt(e->daemon, 0);
	/* Ready when the control socket answers with the bound address. */
	end = tl_now_ms() + WAIT_MS;
	while (tl_now_ms() < end && e->port == 0) {
		if (access(e->ctl, F_OK) == 0 && ctl_run(e, &out, "status") == 0 && out &&
		    (p = strstr(out, "listen: ")) != NULL) {
			listen = strchr(p, ':');
			if (listen && (listen = strchr(listen + 1, ':')) != NULL)
				e->port = atoi(listen + 1);
		}
		free(out);
		out = NULL;
		if (e->port == 0) {
			ck_assert_msg(tl_alive(e->daemon), "codexpoold exited during start-up; see %s", e->log);
			tl_msleep(50);
		}
	}
	ck_assert_int_gt(e->port, 0);
	/* Every worker up, so worker-death tests see a known pid. */
	end = tl_now_ms() + WAIT_MS;
	for (;;) {
		int up = 0;
		if (ctl_run(e, &out, "show workers") == 0 && out) {
			for (p = out; (p = strstr(p, " up ")) != NULL; p++)
				up++;
		}
		free(out);
		out = NULL;
		if (up == 2 || tl_now_ms() > end)
			break;
		tl_msleep(50);
	}
}

void
e2e_daemon_stop(struct e2e *e)
{
	char *log;
	int rc;

	rc = tl_stop(e->daemon, SIGTERM, WAIT_MS);
	e->daemon = 0;
	log = tl_read_file(e->log, NULL);
	ck_assert_msg(rc == 0, "codexpoold exited with %d; log %s", rc, e->log);
	ck_assert_msg(log == NULL || (strstr(log, "Sanitizer") == NULL &&
	    strstr(log, "runtime error") == NULL), "sanitizer report in %s", e->log);
	free(log);
}

void
e2e_start(struct e2e *e, const char *sim_args, const char *conf_extra)
{
	char conf[4096], auth[700];

	char simargs[2048], upstream[600];
	bool tls = sim_args != NULL && strncmp(sim_args, "tls", 3) == 0;

	memset(e, 0, sizeof(*e));
	e->dir = tl_tmpdir();
	ck_assert_ptr_nonnull(e->dir);
	if (tls) {
		/* "tls ...": real certificates for localhost, made here */
		ck_assert_int_eq(tl_make_certs(e->dir), 0);
		snprintf(simargs, sizeof(simargs), "--tls-cert %s/server.pem --tls-key %s/server.key %s",
		    e->dir, e->dir, sim_args + 3);
		sim_args = simargs;
	}
	ck_assert_int_eq(tl_sim_start(&e->sim, e->dir, sim_args), 0);
	if (tls)
		/* by name: the supervisor resolves it, the worker checks it */
		snprintf(upstream, sizeof(upstream), "wss://localhost:%d/backend-api/codex/responses\n"
		    "upstream_ca_file = %s/ca.pem", e->sim.port, e->dir);
	else
		snprintf(upstream, sizeof(upstream), "ws://127.0.0.1:%d/backend-api/codex/responses",
		    e->sim.port);
	tl_sim_auth_path(&e->sim, 1, auth, sizeof(auth));
	snprintf(e->conf, sizeof(e->conf), "%s/codexpool.conf", e->dir);
	snprintf(e->ctl, sizeof(e->ctl), "%s/ctl.sock", e->dir);
	snprintf(e->log, sizeof(e->log), "%s/daemon.log", e->dir);
	snprintf(conf, sizeof(conf),
	    "listen = 127.0.0.1:0\n"
	    "workers = 2\n"
	    "upstream_url = %s\n"
	    "token_url = %s://127.0.0.1:%d/oauth/token\n"
	    "auth_file = %s\n"
	    "control_socket = %s\n"
	    "data_dir = %s/data\n"
	    "shutdown_timeout = 10s\n"
	    "log_level = debug\n"
	    "%s\n", upstream, tls ? "https" : "http", e->sim.port, auth, e->ctl, e->dir,
	    conf_extra ? conf_extra : "");
	ck_assert_int_eq(tl_write_file(e->conf, conf, strlen(conf), 0600), 0);
	e2e_daemon_start(e);
	e->instructions = tl_text(INSTR_KIB, 7);
}

void
e2e_stop(struct e2e *e)
{
	if (e->daemon > 0)
		e2e_daemon_stop(e);
	tl_sim_stop(&e->sim);
	if (getenv("E2E_KEEP") == NULL)
		tl_rmrf(e->dir);
	free(e->dir);
	free(e->instructions);
}

/* ---- a stateless client: the full history every turn ---------------- */


void
conv_init(struct conv *c, const char *key)
{
	memset(c, 0, sizeof(*c));
	c->history = json_object_new_array();
	c->key = key;
}

void
conv_free(struct conv *c)
{
	json_object_put(c->history);
}

/* Output items of a non-streamed response, as a client resends them. */
static void
history_add_json(json_object *history, json_object *resp)
{
	json_object *out;
	size_t i;

	if (!json_object_object_get_ex(resp, "output", &out))
		return;
	for (i = 0; i < json_object_array_length(out); i++) {
		json_object *item = NULL;
		json_object_deep_copy(json_object_array_get_idx(out, i), &item, NULL);
		json_object_object_del(item, "id");
		json_object_object_del(item, "status");
		json_object_array_add(history, item);
	}
}

/*
 * One turn: append text as a user message, POST the whole history,
 * append the reply.  Returns the HTTP status; *u gets the usage.
 */
int
conv_turn(struct e2e *e, struct conv *c, const char *text, int stream,
    struct tl_usage *u, struct tl_response *keep)
{
	struct tl_req r = { .instructions = e->instructions, .prompt_cache_key = c->key,
	    .input = c->history, .stream = stream };
	struct tl_response resp;
	char *body;
	int status;

	json_object_array_add(c->history, tl_msg("user", text));
	body = tl_req_http(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", "/v1/responses", c->headers,
	    body, strlen(body), &resp), 0);
	free(body);
	status = resp.status;
	if (u != NULL)
		memset(u, 0, sizeof(*u));
	if (status == 200) {
		if (stream) {
			json_object *done = tl_sse_completed(resp.body);
			ck_assert_msg(done != NULL, "no response.completed in: %.300s", resp.body);
			if (u)
				tl_usage_of(done, u);
			json_object_put(done);
			tl_history_add_sse(c->history, resp.body);
		} else {
			json_object *o = tl_response_json(&resp);
			ck_assert_ptr_nonnull(o);
			if (u)
				tl_usage_of(o, u);
			history_add_json(c->history, o);
			json_object_put(o);
		}
		c->turns++;
	}
	if (keep != NULL)
		*keep = resp;
	else
		tl_response_free(&resp);
	return status;
}

double
ratio(const struct tl_usage *u)
{
	return u->input_tokens ? (double)u->cached_tokens / (double)u->input_tokens : 0.0;
}

/* Opens a streamed turn and reads its first event, so it holds its connection. */
struct tl_stream *
open_held_stream(struct e2e *e, struct conv *c, const char *text)
{
	struct tl_req r = { .instructions = e->instructions, .prompt_cache_key = c->key,
	    .input = c->history, .stream = 1 };
	struct tl_stream *s;
	char *body, *ev = NULL, *data = NULL;

	json_object_array_add(c->history, tl_msg("user", text));
	body = tl_req_http(&r);
	s = tl_stream_open(NULL, "127.0.0.1", e->port, "POST", "/v1/responses", NULL,
	    body, strlen(body));
	free(body);
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(tl_stream_status(s), 200);
	ck_assert_int_eq(tl_stream_read_event(s, &ev, &data, WAIT_MS), 1);
	free(ev);
	free(data);
	return s;
}

int
drain_stream(struct tl_stream *s, int *completed)
{
	char *ev = NULL, *data = NULL;
	int rc;

	*completed = 0;
	while ((rc = tl_stream_read_event(s, &ev, &data, WAIT_MS)) == 1) {
		if (ev && strcmp(ev, "response.completed") == 0)
			*completed = 1;
		free(ev);
		free(data);
		ev = data = NULL;
	}
	return rc;
}


int
e2e_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	setvbuf(stdout, NULL, _IONBF, 0);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_kill_all();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- accounts ---------------------------------------------------------- */

/* `account list` row fields of the account whose label or entry is who. */
int
account_field(struct e2e *e, const char *who, const char *field, char *out, size_t len)
{
	char *text = NULL;
	json_object *root, *rows, *v;
	size_t i;
	int found = -1;

	if (ctl_run(e, &text, "account list --json") != 0 || text == NULL) {
		free(text);
		return -1;
	}
	root = json_tokener_parse(text);
	free(text);
	rows = json_object_object_get(root, "accounts");
	for (i = 0; rows && i < json_object_array_length(rows); i++) {
		json_object *r = json_object_array_get_idx(rows, i);
		const char *label = json_object_get_string(json_object_object_get(r, "label"));
		const char *entry = json_object_get_string(json_object_object_get(r, "entry"));
		if ((label && strcmp(label, who) == 0) || (entry && strcmp(entry, who) == 0)) {
			v = json_object_object_get(r, field);
			snprintf(out, len, "%s", v ? json_object_get_string(v) : "");
			found = 0;
			break;
		}
	}
	json_object_put(root);
	return found;
}

int
wait_account_field(struct e2e *e, const char *who, const char *field, const char *want)
{
	int64_t end = tl_now_ms() + WAIT_MS;
	char v[256] = "";

	while (tl_now_ms() < end) {
		if (account_field(e, who, field, v, sizeof(v)) == 0 && strstr(v, want) != NULL)
			return 0;
		tl_msleep(50);
	}
	fprintf(stderr, "account %s field %s never contained '%s' (last '%s')\n", who, field,
	    want, v);
	return -1;
}

/* The account id the simulator saw on its newest request. */
char *
last_sim_account(struct e2e *e)
{
	json_object *st = tl_sim_state(&e->sim), *reqs, *last;
	char *acct = NULL;

	reqs = json_object_object_get(st, "requests");
	if (reqs && json_object_array_length(reqs) > 0) {
		last = json_object_array_get_idx(reqs, json_object_array_length(reqs) - 1);
		acct = strdup(json_object_get_string(json_object_object_get(last, "account")));
	}
	json_object_put(st);
	return acct;
}
