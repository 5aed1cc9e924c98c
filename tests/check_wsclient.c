/*
 * Client WebSockets end to end: a Codex-CLI-shaped client (one socket per
 * session, a generate:false prewarm, then response.create frames with
 * previous_response_id and only the new items) talks WebSocket to the real
 * daemon, whose worker pairs it with the conversation's pooled upstream
 * connection on the real simulator.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

#define SESSION	"019a0000-0000-7000-8000-00000000c0de"

/* A Codex CLI session's handshake headers. */
static char *
cli_headers(const char *session, const char *extra)
{
	char *h = NULL;

	if (asprintf(&h, "session_id: %s\r\nx-client-request-id: %s\r\n"
	    "openai-beta: responses_websockets=2026-02-06\r\noriginator: codex_exec\r\n"
	    "x-codex-window-id: %s:0\r\n%s", session, session, session,
	    extra ? extra : "") < 0)
		return NULL;
	return h;
}

static struct tl_ws *
ws_open(struct e2e *e, const char *session, const char *extra, int *status)
{
	char *h = cli_headers(session, extra);
	struct tl_ws *ws;
	int st = 0;

	ws = tl_ws_connect("127.0.0.1", e->port, "/v1/responses", h, NULL, &st);
	free(h);
	if (status != NULL)
		*status = st;
	return ws;
}

/* A session of the test conversation that must be accepted. */
static struct tl_ws *
session(struct e2e *e)
{
	struct tl_ws *ws = ws_open(e, SESSION, NULL, NULL);

	ck_assert_ptr_nonnull(ws);
	return ws;
}

/* One response.create; the frames up to the terminal one. */
static json_object *
ws_turn(struct tl_ws *ws, const struct tl_req *r, enum tl_ws_why *why)
{
	char *req = tl_req_ws(r);
	json_object *frames = tl_ws_turn(ws, req, WAIT_MS, why);

	free(req);
	return frames;
}

/* The id of the completed response in frames, copied, or NULL. */
static char *
completed_id(json_object *frames)
{
	json_object *done = tl_frames_find(frames, "response.completed");
	const char *id = done != NULL ? tl_response_id(done) : NULL;

	return id != NULL ? strdup(id) : NULL;
}

static json_object *
user_input(const char *text)
{
	json_object *in = json_object_new_array();

	json_object_array_add(in, tl_msg("user", text));
	return in;
}

/* A Codex CLI session: prewarm, then turns that continue the last one. */
struct cli {
	struct tl_ws	*ws;
	const char	*instructions;
	char		*last_id;
};

static json_object *
cli_turn(struct cli *c, const char *text, enum tl_ws_why *why)
{
	struct tl_req r = { 0 };
	json_object *in = user_input(text), *frames;

	r.instructions = c->instructions;
	r.previous_response_id = c->last_id;
	r.input = in;
	frames = ws_turn(c->ws, &r, why);
	json_object_put(in);
	free(c->last_id);
	c->last_id = completed_id(frames);
	return frames;
}

static int
cli_prewarm(struct cli *c)
{
	struct tl_req r = { 0 };
	enum tl_ws_why why;
	json_object *frames;

	r.instructions = c->instructions;
	r.prewarm = 1;
	frames = ws_turn(c->ws, &r, &why);
	free(c->last_id);
	c->last_id = completed_id(frames);
	json_object_put(frames);
	return c->last_id != NULL ? 0 : -1;
}

/* The number of upstream requests the simulator saw with previous_response_id. */
static int
sim_continued(struct e2e *e)
{
	json_object *st = tl_sim_state(&e->sim), *reqs, *r, *v;
	int n = 0;
	size_t i;

	if (st != NULL && json_object_object_get_ex(st, "requests", &reqs))
		for (i = 0; i < json_object_array_length(reqs); i++) {
			r = json_object_array_get_idx(reqs, i);
			if (json_object_object_get_ex(r, "previous_response_id", &v) &&
			    json_object_is_type(v, json_type_string))
				n++;
		}
	json_object_put(st);
	return n;
}

START_TEST(test_ws__prewarm_then_incremental_turns_on_one_connection)
{
	struct e2e e;
	struct cli c = { 0 };
	struct tl_usage u;
	enum tl_ws_why why;
	json_object *frames;
	int t;

	e2e_start(&e, NULL, NULL);
	c.instructions = e.instructions;
	c.ws = session(&e);
	ck_assert_int_eq(cli_prewarm(&c), 0);
	for (t = 0; t < 4; t++) {
		char text[64];

		snprintf(text, sizeof(text), "turn %d of the session", t + 1);
		frames = cli_turn(&c, text, &why);
		ck_assert_int_eq(why, TL_WS_OK);
		ck_assert_ptr_nonnull(c.last_id);
		ck_assert_int_eq(tl_usage_of(tl_frames_find(frames, "response.completed"), &u), 0);
		/* the prewarm warmed the instructions: every turn is cached */
		ck_assert_msg(ratio(&u) >= 0.9, "turn %d cached %lld of %lld", t + 1,
		    (long long)u.cached_tokens, (long long)u.input_tokens);
		ck_assert_int_eq(tl_frames_count(frames, "codex.rate_limits"), 0);
		json_object_put(frames);
	}
	/* the account's ids went upstream, never the client's */
	{
		json_object *st = tl_sim_state(&e.sim), *reqs, *hs, *h, *v;
		const char *pck;
		size_t i;

		ck_assert(json_object_object_get_ex(st, "requests", &reqs));
		for (i = 0; i < json_object_array_length(reqs); i++) {
			ck_assert(json_object_object_get_ex(json_object_array_get_idx(reqs, i),
			    "prompt_cache_key", &v));
			pck = json_object_get_string(v);
			ck_assert_msg(pck != NULL && strncmp(pck, "cp_", 3) == 0,
			    "prompt_cache_key upstream: %s", pck ? pck : "(none)");
		}
		ck_assert(json_object_object_get_ex(st, "handshakes", &hs));
		ck_assert_int_eq(json_object_array_length(hs), 1);
		ck_assert(json_object_object_get_ex(json_object_array_get_idx(hs, 0),
		    "headers", &h));
		ck_assert(json_object_object_get_ex(h, "session-id", &v));
		ck_assert_str_ne(json_object_get_string(v), SESSION);
		ck_assert(json_object_object_get_ex(h, "chatgpt-account-id", &v));
		json_object_put(st);
	}
	/* one upstream connection; every turn continued natively there */
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(sim_continued(&e), 4);
	ck_assert_int_eq(status_num(&e, "ws_turns"), 5);
	ck_assert_int_eq(status_num(&e, "ws_clients"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 4);
	ck_assert_int_eq(status_num(&e, "requests_total"), 5);
	tl_ws_close(c.ws);
	ck_assert_int_eq(wait_status(&e, "ws_clients", 0), 0);
	/* the upstream connection stays pooled for the next session */
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);
	free(c.last_id);
	e2e_stop(&e);
}
END_TEST

/* A full (non-incremental) request, as a new session's first one. */
static json_object *
full_turn(struct tl_ws *ws, struct e2e *e, const char *text, const char *sim,
    enum tl_ws_why *why)
{
	struct tl_req r = { 0 };
	json_object *in = user_input(text), *frames;
	char *req;

	r.instructions = e->instructions;
	r.input = in;
	req = tl_req_ws(&r);
	if (sim != NULL) {
		/* per-request simulator options ride in the body */
		json_object *o = json_tokener_parse(req), *so = json_tokener_parse(sim);

		json_object_object_add(o, "sim", so);
		free(req);
		req = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	}
	frames = tl_ws_turn(ws, req, WAIT_MS, why);
	free(req);
	json_object_put(in);
	return frames;
}

/* A full turn that must complete. */
static void
turn_ok(struct tl_ws *ws, struct e2e *e, const char *text)
{
	enum tl_ws_why why;
	json_object *frames = full_turn(ws, e, text, NULL, &why);

	ck_assert_msg(why == TL_WS_OK && tl_frames_find(frames, "response.completed") != NULL,
	    "turn '%s' ended by %s without response.completed", text, tl_ws_why_name(why));
	json_object_put(frames);
}

/* Sends a slow turn and returns once its first output delta arrived. */
static void
start_slow_turn(struct tl_ws *ws, struct e2e *e, const char *text)
{
	struct tl_req r = { 0 };
	json_object *in = user_input(text), *o;
	enum tl_ws_why why;
	char *req, *msg;
	bool delta = false;

	r.instructions = e->instructions;
	r.input = in;
	req = tl_req_ws(&r);
	o = json_tokener_parse(req);
	json_object_object_add(o, "sim", json_tokener_parse(
	    "{\"deltas\":6,\"delta_delay_ms\":300}"));
	free(req);
	req = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	json_object_put(in);
	ck_assert_int_eq(tl_ws_send_text(ws, req, strlen(req)), 0);
	free(req);
	while (!delta && (msg = tl_ws_recv_text(ws, WAIT_MS, &why)) != NULL) {
		delta = strstr(msg, "response.output_text.delta") != NULL;
		free(msg);
	}
	ck_assert_msg(delta, "no delta before %s", tl_ws_why_name(why));
}

/* The next message is not a message: the socket closed with code. */
static void
expect_close(struct tl_ws *ws, int code)
{
	enum tl_ws_why why = TL_WS_OK;
	char *msg;

	while ((msg = tl_ws_recv_text(ws, WAIT_MS, &why)) != NULL) {
		ck_assert_msg(strstr(msg, "\"error\"") != NULL ||
		    strstr(msg, "response.") != NULL, "unexpected %s", msg);
		free(msg);
	}
	ck_assert_msg(why == TL_WS_CLOSED, "ended by %s, not a close", tl_ws_why_name(why));
	ck_assert_int_eq(tl_ws_close_code(ws), code);
}

/* The next message is an error event with status and code. */
static void
expect_error(struct tl_ws *ws, int status, const char *code)
{
	enum tl_ws_why why;
	char *msg = tl_ws_recv_text(ws, WAIT_MS, &why);
	json_object *o, *v;

	ck_assert_msg(msg != NULL, "no error event: %s", tl_ws_why_name(why));
	o = json_tokener_parse(msg);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "type")), "error");
	ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "status")), status);
	ck_assert(json_object_object_get_ex(o, "error", &v));
	ck_assert_str_eq(json_object_get_string(json_object_object_get(v, "code")), code);
	json_object_put(o);
	free(msg);
}

START_TEST(test_ws__sequential_sessions_share_one_upstream_connection)
{
	struct e2e e;
	struct tl_usage u;
	enum tl_ws_why why;
	json_object *frames;
	struct tl_ws *ws;
	int i;

	e2e_start(&e, NULL, NULL);
	/* three `codex exec` processes of one thread, one after the other */
	for (i = 0; i < 3; i++) {
		ws = ws_open(&e, SESSION, NULL, NULL);
		ck_assert_ptr_nonnull(ws);
		frames = full_turn(ws, &e, "what is in this repository?", NULL, &why);
		ck_assert_int_eq(why, TL_WS_OK);
		ck_assert_int_eq(tl_usage_of(tl_frames_find(frames, "response.completed"), &u), 0);
		if (i > 0)
			ck_assert_msg(ratio(&u) >= 0.9, "session %d cached %lld of %lld", i + 1,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
		json_object_put(frames);
		tl_ws_close(ws);
		ck_assert_int_eq(wait_status(&e, "ws_clients", 0), 0);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 2);
	ck_assert_int_eq(status_num(&e, "ws_upgrades"), 3);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__busy_connection_bypasses_then_session_reconnects)
{
	struct e2e e;
	struct cli a = { 0 };
	enum tl_ws_why why;
	json_object *frames;
	struct tl_ws *b;

	e2e_start(&e, NULL, NULL);
	a.instructions = e.instructions;
	a.ws = session(&e);
	ck_assert_int_eq(cli_prewarm(&a), 0);
	start_slow_turn(a.ws, &e, "a long answer please");
	/* a second session of the conversation while the first streams */
	b = session(&e);
	turn_ok(b, &e, "and a short one");
	ck_assert_int_eq(status_num(&e, "bypass_busy"), 1);
	/* its response died with its one-shot connection: reconnect */
	expect_close(b, 1012);
	tl_ws_close(b);
	/* the first session's stream is intact and it continues */
	frames = tl_ws_collect(a.ws, WAIT_MS, &why);
	ck_assert_int_eq(why, TL_WS_OK);
	free(a.last_id);
	a.last_id = completed_id(frames);
	ck_assert_ptr_nonnull(a.last_id);
	json_object_put(frames);
	frames = cli_turn(&a, "go on", &why);
	ck_assert_int_eq(why, TL_WS_OK);
	ck_assert_ptr_nonnull(tl_frames_find(frames, "response.completed"));
	json_object_put(frames);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	tl_ws_close(a.ws);
	free(a.last_id);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__client_close_mid_response_evicts)
{
	struct e2e e;
	enum tl_ws_why why;
	json_object *frames;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	turn_ok(ws, &e, "first");
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);
	start_slow_turn(ws, &e, "second, slowly");
	tl_ws_abort(ws);
	ck_assert_int_eq(wait_status(&e, "client_aborts", 1), 0);
	/* the abandoned response's tail must not reach another turn */
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(wait_status(&e, "ws_clients", 0), 0);
	ws = ws_open(&e, SESSION, NULL, NULL);
	frames = full_turn(ws, &e, "third", NULL, &why);
	ck_assert_int_eq(why, TL_WS_OK);
	json_object_put(frames);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 2);
	tl_ws_close(ws);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__upstream_close_mid_response_is_error_and_1011)
{
	struct e2e e;
	enum tl_ws_why why;
	json_object *frames, *err, *v;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	frames = full_turn(ws, &e, "break [[sim:close_mid_stream]]", NULL, &why);
	ck_assert_int_eq(why, TL_WS_OK);
	ck_assert_int_ge(tl_frames_count(frames, "response.output_text.delta"), 1);
	ck_assert_ptr_null(tl_frames_find(frames, "response.completed"));
	err = tl_frames_find(frames, "error");
	ck_assert_ptr_nonnull(err);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(err, "status")), 502);
	ck_assert(json_object_object_get_ex(err, "error", &v));
	ck_assert_str_eq(json_object_get_string(json_object_object_get(v, "code")),
	    "stream_disconnected");
	json_object_put(frames);
	expect_close(ws, 1011);
	tl_ws_close(ws);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__upstream_close_while_idle_asks_to_reconnect)
{
	struct e2e e;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	turn_ok(ws, &e, "done soon [[sim:close_idle]]");
	/* its previous_response_id died with the connection */
	expect_close(ws, 1012);
	tl_ws_close(ws);
	e2e_stop(&e);
}
END_TEST

/* A continuation of a response this session's upstream connection does
 * not hold: the worker closes the socket with 1012 so the client resends
 * its full input; the client sees no error event before it (the worker
 * closes first, and the supervisor, told by ERR_F_CLIENT_CLOSED, sends
 * none). */
START_TEST(test_ws__foreign_continuation_reconnects_without_error)
{
	struct e2e e;
	struct tl_req r = { 0 };
	struct tl_ws *first, *second;
	enum tl_ws_why why;
	json_object *frames, *in = user_input("and then?");
	char *id, *req;

	e2e_start(&e, NULL, NULL);
	first = session(&e);
	frames = full_turn(first, &e, "hello", NULL, &why);
	ck_assert_ptr_nonnull(id = completed_id(frames));
	json_object_put(frames);
	/* another session, not paired with the first one's connection */
	second = session(&e);
	r.instructions = e.instructions;
	r.previous_response_id = id;
	r.input = in;
	req = tl_req_ws(&r);
	frames = tl_ws_turn(second, req, WAIT_MS, &why);
	ck_assert_msg(why == TL_WS_CLOSED, "ended by %s, not a close", tl_ws_why_name(why));
	ck_assert_int_eq(tl_ws_close_code(second), 1012);
	ck_assert_ptr_null(tl_frames_find(frames, "error"));
	json_object_put(frames);
	free(req);
	free(id);
	json_object_put(in);
	tl_ws_close(second);
	tl_ws_close(first);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__account_eviction_mid_response_closes_after_it)
{
	struct e2e e;
	enum tl_ws_why why;
	json_object *frames;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	turn_ok(ws, &e, "first");
	start_slow_turn(ws, &e, "second, slowly");
	ck_assert_int_eq(ctl_run(&e, NULL, "evict auth_file"), 0);
	/* the running response finishes, then the client must reconnect */
	frames = tl_ws_collect(ws, WAIT_MS, &why);
	ck_assert_int_eq(why, TL_WS_OK);
	ck_assert_ptr_nonnull(tl_frames_find(frames, "response.completed"));
	json_object_put(frames);
	expect_close(ws, 1012);
	tl_ws_close(ws);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__upgrade_needs_a_valid_key)
{
	struct e2e e;
	struct tl_ws *ws;
	char *out = NULL, *p, key[128], hdr[256];
	int status = 0;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(ctl_run(&e, &out, "key add cli"), 0);
	p = strstr(out, "key: ");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p + 5, "%127s", key), 1);
	free(out);
	ws = ws_open(&e, SESSION, NULL, &status);
	ck_assert_ptr_null(ws);
	ck_assert_int_eq(status, 401);
	ws = ws_open(&e, SESSION, "authorization: Bearer not-a-key\r\n", &status);
	ck_assert_ptr_null(ws);
	ck_assert_int_eq(status, 401);
	snprintf(hdr, sizeof(hdr), "authorization: Bearer %s\r\n", key);
	ws = ws_open(&e, SESSION, hdr, &status);
	ck_assert_ptr_nonnull(ws);
	turn_ok(ws, &e, "hello");
	tl_ws_close(ws);
	/* the turn was the key's */
	ck_assert_int_eq(ctl_run(&e, &out, "show conversations"), 0);
	ck_assert_ptr_nonnull(strstr(out, "responses-ws"));
	ck_assert_ptr_nonnull(strstr(out, " cli "));
	free(out);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__bad_frames_get_errors_never_a_crash)
{
	struct e2e e;
	enum tl_ws_why why;
	json_object *frames;
	struct tl_ws *ws;
	char *big;
	const char *binary = "\x01\x02\x03";

	e2e_start(&e, NULL, "max_body_size = 64K");
	ws = session(&e);
	ck_assert_int_eq(tl_ws_send_text(ws, "not json", 8), 0);
	expect_error(ws, 400, "invalid_json");
	ck_assert_int_eq(tl_ws_send_text(ws, "{\"type\":\"response.cancel\"}", 26), 0);
	expect_error(ws, 400, "unsupported_event");
	ck_assert_int_eq(tl_ws_send_text(ws, "{\"type\":\"response.create\",\"input\":[]}", 37), 0);
	expect_error(ws, 400, "missing_model");
	ck_assert_int_eq(tl_ws_send_text(ws, "[1,2]", 5), 0);
	expect_error(ws, 400, "invalid_json");
	/* the socket still serves turns, and answers pings */
	ck_assert_int_eq(tl_ws_send_ping(ws, "hb", 2), 0);
	turn_ok(ws, &e, "after the noise");
	ck_assert_int_ge(tl_ws_pongs(ws), 1);
	ck_assert_int_eq(tl_ws_send_binary(ws, binary, 3), 0);
	expect_error(ws, 400, "binary_not_supported");
	expect_close(ws, 1003);
	tl_ws_close(ws);

	/* over max_body_size: an error, then 1009 */
	ws = session(&e);
	big = tl_text(100, 3);
	ck_assert_int_eq(tl_ws_send_fragmented(ws, big, strlen(big), 16384), 0);
	free(big);
	expect_error(ws, 400, "message_too_large");
	expect_close(ws, 1009);
	tl_ws_close(ws);

	/* a second response.create while one runs */
	ws = ws_open(&e, SESSION, NULL, NULL);
	start_slow_turn(ws, &e, "slowly");
	big = tl_response_create(NULL, "x", NULL, NULL, NULL);
	ck_assert_int_eq(tl_ws_send_text(ws, big, strlen(big)), 0);
	free(big);
	frames = tl_ws_collect(ws, WAIT_MS, &why);
	ck_assert_ptr_nonnull(tl_frames_find(frames, "error"));
	json_object_put(frames);
	frames = tl_ws_collect(ws, WAIT_MS, &why);
	ck_assert_ptr_nonnull(tl_frames_find(frames, "response.completed"));
	json_object_put(frames);
	tl_ws_close(ws);

	/* the daemon is fine */
	ck_assert_int_eq(status_num(&e, "workers"), 2);
	ck_assert_int_eq(status_num(&e, "worker_restarts"), 0);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__switched_off_answers_426)
{
	struct e2e e;
	struct tl_ws *ws;
	int status = 0;

	e2e_start(&e, NULL, "client_websockets = no");
	ws = ws_open(&e, SESSION, NULL, &status);
	ck_assert_ptr_null(ws);
	ck_assert_int_eq(status, 426);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__shutdown_closes_idle_clients_with_1001)
{
	struct e2e e;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	turn_ok(ws, &e, "hello");
	e2e_daemon_stop(&e);
	expect_close(ws, 1001);
	tl_ws_close(ws);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__sessions_count_in_max_clients)
{
	struct e2e e;
	struct tl_response r;
	struct tl_ws *ws, *ws2;
	char *body;
	int status = 0;

	e2e_start(&e, NULL, "max_clients = 1");
	ws = session(&e);
	ck_assert_int_eq(wait_status(&e, "ws_clients", 1), 0);
	ws2 = ws_open(&e, "another-session", NULL, &status);
	ck_assert_ptr_null(ws2);
	ck_assert_int_eq(status, 503);
	body = tl_responses_body(NULL, "x", "k", 0, NULL);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL, body,
	    strlen(body), &r), 0);
	ck_assert_int_eq(r.status, 503);
	ck_assert_ptr_nonnull(strstr(r.body, "max_clients"));
	tl_response_free(&r);
	tl_ws_close(ws);
	ck_assert_int_eq(wait_status(&e, "ws_clients", 0), 0);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL, body,
	    strlen(body), &r), 0);
	ck_assert_int_eq(r.status, 200);
	tl_response_free(&r);
	free(body);
	e2e_stop(&e);
}
END_TEST

/* The pool switched off at run time really is off for client WebSockets:
 * the paired session is told to reconnect, and every later turn runs on a
 * one-shot connection, after which its session must reconnect too. */
START_TEST(test_ws__pool_disable_really_disables)
{
	struct e2e e;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	turn_ok(ws, &e, "pooled");
	ck_assert_int_eq(ctl_run(&e, NULL, "pool disable"), 0);
	expect_close(ws, 1012);
	tl_ws_close(ws);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ws = session(&e);
	turn_ok(ws, &e, "one-shot");
	ck_assert_int_eq(status_num(&e, "bypass_disabled"), 1);
	expect_close(ws, 1012);
	tl_ws_close(ws);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 0);
	e2e_stop(&e);
}
END_TEST

/* A usage limit before any output: with another account to take the
 * conversation, the session closes with 1012 (no error event) and the
 * client's reconnect lands there; with none, the client gets the error
 * event, with its status, and then 1012 (the account changed). */
START_TEST(test_ws__usage_limit_moves_by_reconnect)
{
	struct e2e e;
	enum tl_ws_why why;
	json_object *frames;
	struct tl_ws *ws;
	struct tl_account a2;
	char path[700], *acct;

	e2e_start(&e, NULL, NULL);
	tl_sim_auth_path(&e.sim, 2, path, sizeof(path));
	ck_assert_int_eq(ctl_run(&e, NULL, "account add --auth-json %s --label two", path), 0);
	ws = session(&e);
	turn_ok(ws, &e, "first");
	frames = full_turn(ws, &e, "spend it all [[sim:usage_limit]]", NULL, &why);
	ck_assert_int_eq(json_object_array_length(frames), 0);
	json_object_put(frames);
	ck_assert_int_eq(tl_ws_close_code(ws), 1012);
	tl_ws_close(ws);
	ck_assert_int_eq(status_num(&e, "ws_reconnects"), 1);
	ck_assert_int_eq(status_num(&e, "account_moves"), 1);
	/* the reconnect lands on the other account */
	ws = session(&e);
	turn_ok(ws, &e, "spend it all");
	ck_assert_int_eq(tl_sim_account(&e.sim, 2, &a2), 0);
	acct = last_sim_account(&e);
	ck_assert_ptr_nonnull(acct);
	ck_assert_str_eq(acct, a2.account_id);
	free(acct);
	tl_account_free(&a2);
	tl_ws_close(ws);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ws__usage_limit_without_another_account_is_an_error_event)
{
	struct e2e e;
	enum tl_ws_why why;
	json_object *frames, *err;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	frames = full_turn(ws, &e, "spend it all [[sim:usage_limit]]", NULL, &why);
	err = tl_frames_find(frames, "error");
	ck_assert_ptr_nonnull(err);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(err, "status")), 429);
	json_object_put(frames);
	expect_close(ws, 1012);
	tl_ws_close(ws);
	ck_assert_int_eq(status_num(&e, "ws_reconnects"), 0);
	e2e_stop(&e);
}
END_TEST

/* A 401 before any output: the token is refreshed and the turn sent again
 * on the session's worker; the account's connections were evicted by the
 * refresh, so the session then closes with 1012. */
START_TEST(test_ws__expired_token_refreshed_then_reconnect)
{
	struct e2e e;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"token_expired\",\"count\":1}"), 0);
	turn_ok(ws, &e, "old token");
	ck_assert_int_ge(sim_num(&e, "refreshes"), 1);
	expect_close(ws, 1012);
	tl_ws_close(ws);
	e2e_stop(&e);
}
END_TEST

/* A reused connection that fails before the first frame: a full request
 * is retried once on a fresh connection, as on HTTP; a continuation cannot
 * be (its response died with the connection) and gets an error event.
 * Either way the session's connection is gone: 1012 after the turn. */
START_TEST(test_ws__stale_reuse_retried_once)
{
	struct e2e e;
	struct cli c = { 0 };
	enum tl_ws_why why;
	json_object *frames, *err;
	struct tl_ws *ws;

	e2e_start(&e, NULL, NULL);
	ws = session(&e);
	turn_ok(ws, &e, "first");
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"close_before_first\",\"count\":1}"), 0);
	turn_ok(ws, &e, "second");
	ck_assert_int_eq(status_num(&e, "decisions_retry_stale"), 1);
	expect_close(ws, 1012);
	tl_ws_close(ws);

	c.instructions = e.instructions;
	c.ws = session(&e);
	frames = cli_turn(&c, "full", &why);
	json_object_put(frames);
	ck_assert_ptr_nonnull(c.last_id);
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"close_before_first\",\"count\":1}"), 0);
	frames = cli_turn(&c, "continued", &why);
	err = tl_frames_find(frames, "error");
	ck_assert_ptr_nonnull(err);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(err, "status")), 502);
	json_object_put(frames);
	expect_close(c.ws, 1012);
	tl_ws_close(c.ws);
	free(c.last_id);
	e2e_stop(&e);
}
END_TEST

static Suite *
make_suite_wsclient(void)
{
	Suite *s = suite_create("wsclient");
	TCase *tc = tcase_create("wsclient");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_ws__prewarm_then_incremental_turns_on_one_connection);
	tcase_add_test(tc, test_ws__sequential_sessions_share_one_upstream_connection);
	tcase_add_test(tc, test_ws__busy_connection_bypasses_then_session_reconnects);
	tcase_add_test(tc, test_ws__client_close_mid_response_evicts);
	tcase_add_test(tc, test_ws__upstream_close_mid_response_is_error_and_1011);
	tcase_add_test(tc, test_ws__upstream_close_while_idle_asks_to_reconnect);
	tcase_add_test(tc, test_ws__foreign_continuation_reconnects_without_error);
	tcase_add_test(tc, test_ws__account_eviction_mid_response_closes_after_it);
	tcase_add_test(tc, test_ws__upgrade_needs_a_valid_key);
	tcase_add_test(tc, test_ws__bad_frames_get_errors_never_a_crash);
	tcase_add_test(tc, test_ws__switched_off_answers_426);
	tcase_add_test(tc, test_ws__shutdown_closes_idle_clients_with_1001);
	tcase_add_test(tc, test_ws__sessions_count_in_max_clients);
	tcase_add_test(tc, test_ws__pool_disable_really_disables);
	tcase_add_test(tc, test_ws__usage_limit_moves_by_reconnect);
	tcase_add_test(tc, test_ws__usage_limit_without_another_account_is_an_error_event);
	tcase_add_test(tc, test_ws__expired_token_refreshed_then_reconnect);
	tcase_add_test(tc, test_ws__stale_reuse_retried_once);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_wsclient());
}
