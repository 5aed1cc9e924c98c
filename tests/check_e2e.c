/*
 * End-to-end tests: the real codexpoold (supervisor and workers) against a
 * real codexpool-sim on loopback, driven over HTTP and the control socket.
 * Each test starts its own simulator and daemon in a private directory on
 * free ports, and stops them; a daemon that does not exit cleanly, or
 * whose log shows a sanitizer report, fails the test.
 */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"

/* ---- the seed's cases ------------------------------------------------- */

START_TEST(test_e2e__five_turns_one_connection)
{
	struct e2e e;
	struct conv c;
	struct tl_usage u;
	char text[64];
	int i;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-five");
	for (i = 1; i <= 5; i++) {
		snprintf(text, sizeof(text), "question %d", i);
		ck_assert_int_eq(conv_turn(&e, &c, text, i % 2, &u, NULL), 200);
		if (i >= 2)
			ck_assert_msg(ratio(&u) >= 0.9, "turn %d cached %lld of %lld", i,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 4);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__two_conversations_two_connections)
{
	struct e2e e;
	struct conv a, b;
	int i;

	e2e_start(&e, NULL, NULL);
	conv_init(&a, "conv-a");
	conv_init(&b, "conv-b");
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(conv_turn(&e, &a, "hello from a", 0, NULL, NULL), 200);
		ck_assert_int_eq(conv_turn(&e, &b, "hello from b", 0, NULL, NULL), 200);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 4);
	conv_free(&a);
	conv_free(&b);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__server_close_evicts)
{
	struct e2e e;
	struct conv c;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-close");
	/* The simulator closes this connection right after the turn. */
	ck_assert_int_eq(conv_turn(&e, &c, "bye [[sim:close_idle]]", 0, NULL, NULL), 200);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(conv_turn(&e, &c, "again", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_retry_stale"), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__pool_disabled_in_config)
{
	struct e2e e;
	struct conv c;
	int i;

	e2e_start(&e, NULL, "ws_pool_enabled = no");
	conv_init(&c, "conv-off");
	for (i = 0; i < 5; i++)
		ck_assert_int_eq(conv_turn(&e, &c, "turn", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 5);
	ck_assert_int_eq(status_num(&e, "bypass_disabled"), 5);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 0);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__evict_reconnects)
{
	struct e2e e;
	struct conv c;
	char *out = NULL;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-evict");
	ck_assert_int_eq(conv_turn(&e, &c, "one", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);
	ck_assert_int_eq(ctl_run(&e, &out, "evict auth_file"), 0);
	ck_assert_ptr_nonnull(strstr(out, "connections: 1"));
	free(out);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(conv_turn(&e, &c, "two", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	/* an unknown account is an error with a reason and exit status 1 */
	ck_assert_int_eq(ctl_run(&e, NULL, "evict nosuchaccount"), 1);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* Without a key, a header or a user message there is no conversation. */
START_TEST(test_e2e__no_conversation_is_one_shot)
{
	struct e2e e;
	struct tl_response r;
	static const char body[] = "{\"model\":\"gpt-5.4\",\"input\":[{\"type\":\"message\","
	    "\"role\":\"developer\",\"content\":[{\"type\":\"input_text\",\"text\":\"ping\"}]}]}";
	int i;

	e2e_start(&e, NULL, NULL);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL,
		    body, strlen(body), &r), 0);
		ck_assert_int_eq(r.status, 200);
		tl_response_free(&r);
	}
	ck_assert_int_eq(status_num(&e, "bypass_no_key"), 2);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 0);
	e2e_stop(&e);
}
END_TEST

/* A stateless client without any key stays one conversation. */
START_TEST(test_e2e__stateless_client_is_one_conversation)
{
	struct e2e e;
	struct conv c;
	struct tl_usage u;
	int i;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, NULL);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(conv_turn(&e, &c, i == 0 ? "the first question" : "more", i % 2, &u, NULL), 200);
		if (i > 0)
			ck_assert_msg(ratio(&u) >= 0.9, "turn %d cached %lld of %lld", i + 1,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 3);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__session_header_is_the_conversation)
{
	struct e2e e;
	struct conv c;
	int i;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, NULL);
	c.headers = "session-id: 019a2b3c-0000-7000-8000-00000000beef\r\n";
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(conv_turn(&e, &c, "turn", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 2);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* ---- concurrency, caps, failures ------------------------------------- */

START_TEST(test_e2e__concurrent_turns_bypass_busy)
{
	struct e2e e;
	struct conv c, c2;
	struct tl_stream *s;
	int completed;

	e2e_start(&e, "--delta-delay-ms 100", NULL);
	conv_init(&c, "conv-busy");
	conv_init(&c2, "conv-busy");
	s = open_held_stream(&e, &c, "long answer please");
	/* the same conversation while its connection streams: one-shot, no queue */
	ck_assert_int_eq(conv_turn(&e, &c2, "meanwhile", 0, NULL, NULL), 200);
	ck_assert_int_eq(drain_stream(s, &completed), 0);
	ck_assert_int_eq(completed, 1);
	tl_stream_close(s, 0);
	ck_assert_int_eq(status_num(&e, "bypass_busy"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	conv_free(&c);
	conv_free(&c2);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__account_cap_across_workers)
{
	struct e2e e;
	static const char *keys[4] = { "conv-cap-0", "conv-cap-1", "conv-cap-2", "conv-cap-3" };
	struct conv c[4];
	struct tl_stream *s[2];
	int i, completed;

	/* cap 2: conversations on both workers count against one account */
	e2e_start(&e, "--delta-delay-ms 100", "ws_pool_max_per_account = 2");
	for (i = 0; i < 4; i++)
		conv_init(&c[i], keys[i]);
	ck_assert_int_eq(conv_turn(&e, &c[0], "zero", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c[1], "one", 0, NULL, NULL), 200);
	/* a third conversation closes the least recently used idle one (conv 0) */
	ck_assert_int_eq(conv_turn(&e, &c[2], "two", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "lru_evictions"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 3);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 2), 0);
	/* both pooled connections busy: a new conversation goes one-shot */
	s[0] = open_held_stream(&e, &c[1], "hold one");
	s[1] = open_held_stream(&e, &c[2], "hold two");
	ck_assert_int_eq(conv_turn(&e, &c[3], "three", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "bypass_cap"), 1);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(drain_stream(s[i], &completed), 0);
		ck_assert_int_eq(completed, 1);
		tl_stream_close(s[i], 0);
	}
	ck_assert_int_le(status_num(&e, "pooled_open"), 2);
	for (i = 0; i < 4; i++)
		conv_free(&c[i]);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__stale_reuse_retried_once)
{
	struct e2e e;
	struct conv c;
	struct tl_usage u;

	/* the worker's own retry is for full-body turns: an implicit resume
	 * fails closed instead (check_routes covers that path) */
	e2e_start(&e, NULL, "implicit_resume = no");
	conv_init(&c, "conv-stale");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	/* the pooled connection dies before its next first frame */
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"close_before_first\",\"count\":1}"), 0);
	ck_assert_int_eq(conv_turn(&e, &c, "second", 1, &u, NULL), 200);
	ck_assert_int_gt(u.input_tokens, 0);
	ck_assert_int_eq(status_num(&e, "decisions_retry_stale"), 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__mid_stream_close_is_an_error_event)
{
	struct e2e e;
	struct conv c;
	struct tl_response resp;
	struct tl_req r;
	json_object *failed, *err;
	char *body;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-mid");
	json_object_array_add(c.history, tl_msg("user", "break [[sim:close_mid_stream]]"));
	r = (struct tl_req){ .instructions = e.instructions, .prompt_cache_key = c.key,
	    .input = c.history, .stream = 1 };
	body = tl_req_http(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL, body,
	    strlen(body), &resp), 0);
	free(body);
	ck_assert_int_eq(resp.status, 200);
	failed = tl_sse_find(resp.body, "response.failed");
	ck_assert_msg(failed != NULL, "no response.failed in: %.400s", resp.body);
	ck_assert_int_eq(tl_sse_count(resp.body, "response.completed"), 0);
	err = json_object_object_get(json_object_object_get(failed, "response"), "error");
	ck_assert_str_eq(json_object_get_string(json_object_object_get(err, "code")),
	    "stream_disconnected");
	json_object_put(failed);
	tl_response_free(&resp);
	/* nothing was retried after output began */
	ck_assert_int_eq(status_num(&e, "decisions_retry_stale"), 0);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__client_disconnect_evicts)
{
	struct e2e e;
	struct conv c;
	struct tl_stream *s;

	e2e_start(&e, "--delta-delay-ms 200 --deltas 50", NULL);
	conv_init(&c, "conv-abort");
	s = open_held_stream(&e, &c, "long");
	tl_stream_close(s, 1);
	ck_assert_int_eq(wait_status(&e, "client_aborts", 1), 0);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(wait_status(&e, "requests_inflight", 0), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__silent_connection_dies_by_liveness)
{
	struct e2e e;
	struct conv c;

	e2e_start(&e, NULL, "ws_ping_interval = 1s\nimplicit_resume = no");
	conv_init(&c, "conv-stall");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	/* the pooled connection goes silent: no frames, no pongs */
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"stall\",\"count\":1}"), 0);
	ck_assert_int_eq(conv_turn(&e, &c, "second", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "decisions_retry_stale"), 1);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__max_age_replaces_connection)
{
	struct e2e e;
	struct conv c;

	e2e_start(&e, NULL, "ws_pool_max_age = 1s");
	conv_init(&c, "conv-age");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	tl_msleep(1500);	/* let the connection pass its maximum age */
	ck_assert_int_eq(conv_turn(&e, &c, "second", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 2);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__connection_limit_error_replaces_connection)
{
	struct e2e e;
	struct conv c;

	e2e_start(&e, "--max-conn-age 1", "implicit_resume = no");
	conv_init(&c, "conv-limit");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	tl_msleep(1500);	/* past the simulator's connection age cap */
	ck_assert_int_eq(conv_turn(&e, &c, "second", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "decisions_retry_stale"), 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__previous_response_id_routed_to_owner)
{
	struct e2e e;
	struct conv c;
	struct tl_response resp;
	json_object *o, *body, *input, *last;
	const char *id;
	char *text, *out = NULL;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-prev");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, &resp), 200);
	o = tl_response_json(&resp);
	id = json_object_get_string(json_object_object_get(o, "id"));
	ck_assert_ptr_nonnull(id);

	/* only the new item, continuing the response */
	input = json_object_new_array();
	json_object_array_add(input, tl_msg("user", "and then?"));
	body = json_object_new_object();
	json_object_object_add(body, "model", json_object_new_string("gpt-5.4"));
	json_object_object_add(body, "instructions", json_object_new_string(e.instructions));
	json_object_object_add(body, "previous_response_id", json_object_new_string(id));
	json_object_object_add(body, "input", input);
	text = strdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
	tl_response_free(&resp);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL, text,
	    strlen(text), &resp), 0);
	ck_assert_msg(resp.status == 200, "status %d: %s", resp.status, resp.body);
	tl_response_free(&resp);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	{
		json_object *st = tl_sim_state(&e.sim);
		json_object *rs = json_object_object_get(st, "requests");
		last = json_object_array_get_idx(rs, json_object_array_length(rs) - 1);
		ck_assert_str_eq(json_object_get_string(json_object_object_get(last,
		    "previous_response_id")), id);
		json_object_put(st);
	}

	/* once the owning connection is gone the id cannot be continued */
	ck_assert_int_eq(ctl_run(&e, &out, "evict auth_file"), 0);
	free(out);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL, text,
	    strlen(text), &resp), 0);
	ck_assert_int_eq(resp.status, 400);
	ck_assert_ptr_nonnull(strstr(resp.body, "previous_response_not_found"));
	tl_response_free(&resp);
	free(text);
	json_object_put(body);
	json_object_put(o);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* The pid of a worker from `show workers`. */
static int
worker_pid(struct e2e *e, int slot)
{
	char *out = NULL, *line, *save = NULL;
	int pid = -1, s, p;

	if (ctl_run(e, &out, "show workers") != 0 || out == NULL)
		return -1;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (sscanf(line, "%d %d", &s, &p) == 2 && s == slot)
			pid = p;
	free(out);
	return pid;
}

START_TEST(test_e2e__killed_worker_is_respawned)
{
	struct e2e e;
	struct conv c;
	int pid, newpid = -1;
	int64_t end;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-kill");
	pid = worker_pid(&e, 0);
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	end = tl_now_ms() + WAIT_MS;
	while (tl_now_ms() < end) {
		newpid = worker_pid(&e, 0);
		if (newpid > 0 && newpid != pid)
			break;
		tl_msleep(50);
	}
	ck_assert_int_gt(newpid, 0);
	ck_assert_int_ne(newpid, pid);
	ck_assert_int_eq(wait_status(&e, "worker_restarts", 1), 0);
	ck_assert_int_eq(tl_file_contains(e.log, "terminated: signal 9"), 1);
	/* and it serves: a few conversations land on both workers */
	ck_assert_int_eq(conv_turn(&e, &c, "still there?", 0, NULL, NULL), 200);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* Requests served per worker, from `show workers`. */
static void
worker_requests(struct e2e *e, long long req[2])
{
	char *out = NULL, *line, *save = NULL, state[16];
	int s, p, up, restarts;
	long long n;

	req[0] = req[1] = -1;
	ck_assert_int_eq(ctl_run(e, &out, "show workers"), 0);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (sscanf(line, "%d %d %15s %d %d %lld", &s, &p, state, &up, &restarts, &n) == 6 &&
		    s >= 0 && s < 2)
			req[s] = n;
	free(out);
}

START_TEST(test_e2e__conversation_stays_on_its_worker)
{
	struct e2e e;
	struct conv c;
	long long before[2], after[2];
	char key[32];
	int i, k;

	e2e_start(&e, NULL, NULL);
	for (k = 0; k < 6; k++) {
		snprintf(key, sizeof(key), "conv-shard-%d", k);
		conv_init(&c, key);
		worker_requests(&e, before);
		for (i = 0; i < 3; i++)
			ck_assert_int_eq(conv_turn(&e, &c, "turn", 0, NULL, NULL), 200);
		worker_requests(&e, after);
		/* all three turns on one worker */
		ck_assert((after[0] - before[0] == 3 && after[1] == before[1]) ||
		    (after[1] - before[1] == 3 && after[0] == before[0]));
		conv_free(&c);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 6);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_e2e__bad_requests_get_openai_errors)
{
	struct e2e e;
	struct tl_response r;
	json_object *o, *err;
	static const struct { const char *method, *path, *body; int status; const char *code; } cases[] = {
		{ "POST", "/v1/responses", "{not json", 400, "invalid_json" },
		{ "POST", "/v1/responses", "[]", 400, "invalid_body" },
		{ "POST", "/v1/responses", "{\"input\":\"hi\"}", 400, "missing_model" },
		{ "POST", "/v1/responses", "{\"model\":\"m\"}", 400, "invalid_input" },
		{ "POST", "/v1/responses", "{\"model\":\"m\",\"input\":\"hi\",\"previous_response_id\":\"resp_nope\"}",
		  400, "previous_response_not_found" },
		{ "GET", "/v1/responses", NULL, 405, "method_not_allowed" },
		{ "GET", "/nowhere", NULL, 404, "not_found" },
	};
	size_t i;

	e2e_start(&e, NULL, NULL);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(tl_http("127.0.0.1", e.port, cases[i].method, cases[i].path, NULL,
		    cases[i].body, cases[i].body ? strlen(cases[i].body) : 0, &r), 0);
		ck_assert_msg(r.status == cases[i].status, "case %zu: status %d", i, r.status);
		o = tl_response_json(&r);
		ck_assert_msg(o != NULL, "case %zu: body is not JSON: %s", i, r.body);
		err = json_object_object_get(o, "error");
		ck_assert_ptr_nonnull(err);
		ck_assert_str_eq(json_object_get_string(json_object_object_get(err, "code")), cases[i].code);
		ck_assert_ptr_nonnull(json_object_get_string(json_object_object_get(err, "message")));
		json_object_put(o);
		tl_response_free(&r);
	}
	/* a first-frame usage limit is a real 429, and the connection stays pooled */
	{
		struct conv c;
		conv_init(&c, "conv-429");
		ck_assert_int_eq(conv_turn(&e, &c, "ok", 0, NULL, NULL), 200);
		ck_assert_int_eq(conv_turn(&e, &c, "limit [[sim:usage_limit]]", 1, NULL, NULL), 429);
		json_object_array_del_idx(c.history, json_object_array_length(c.history) - 1, 1);
		/* the only account is locked now: 503 says why, until an operator reset */
		ck_assert_int_eq(conv_turn(&e, &c, "locked", 0, NULL, &r), 503);
		ck_assert_ptr_nonnull(strstr(r.body, "rate_limited"));
		tl_response_free(&r);
		json_object_array_del_idx(c.history, json_object_array_length(c.history) - 1, 1);
		ck_assert_int_eq(ctl_run(&e, NULL, "account reset auth_file"), 0);
		ck_assert_int_eq(conv_turn(&e, &c, "ok again", 0, NULL, NULL), 200);
		conv_free(&c);
	}
	e2e_stop(&e);
}
END_TEST

/* wss:// by host name: resolved by the supervisor (evdns, /etc/hosts),
 * chain and name verified by the worker against a CA the test made. */
START_TEST(test_e2e__tls_upstream_by_name)
{
	struct e2e e;
	struct conv c;
	struct tl_usage u;
	int i;

	e2e_start(&e, "tls", NULL);
	conv_init(&c, "conv-tls");
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(conv_turn(&e, &c, "over TLS", i % 2, &u, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert(ratio(&u) >= 0.9);
	/* a refresh goes over verified TLS too */
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* The wrong CA: no turn succeeds and nothing is sent in the clear. */
START_TEST(test_e2e__tls_wrong_ca_fails)
{
	struct e2e e;
	struct conv c;
	char other[800], conf[4096], *text;

	e2e_start(&e, "tls", NULL);
	/* a second, unrelated CA */
	snprintf(other, sizeof(other), "%s/other", e.dir);
	ck_assert_int_eq(mkdir(other, 0700), 0);
	ck_assert_int_eq(tl_make_certs(other), 0);
	text = tl_read_file(e.conf, NULL);
	snprintf(conf, sizeof(conf), "%supstream_ca_file = %s/ca.pem\n", text, other);
	free(text);
	e2e_daemon_stop(&e);
	ck_assert_int_eq(tl_write_file(e.conf, conf, strlen(conf), 0600), 0);
	e2e_daemon_start(&e);
	conv_init(&c, "conv-badca");
	ck_assert_int_eq(conv_turn(&e, &c, "hello?", 0, NULL, NULL), 502);
	ck_assert_int_eq(sim_num(&e, "requests_total"), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* SIGTERM while a stream runs: it finishes, then the daemon exits 0. */
START_TEST(test_e2e__graceful_stop_lets_streams_finish)
{
	struct e2e e;
	struct conv c, late;
	struct tl_stream *s;
	int completed, rc;

	e2e_start(&e, "--delta-delay-ms 150", NULL);
	conv_init(&c, "conv-stop");
	conv_init(&late, "conv-late");
	s = open_held_stream(&e, &c, "finish me");
	ck_assert_int_eq(kill(e.daemon, SIGTERM), 0);
	ck_assert_int_eq(drain_stream(s, &completed), 0);
	ck_assert_int_eq(completed, 1);
	tl_stream_close(s, 0);
	rc = tl_wait_exit(e.daemon, WAIT_MS);
	ck_assert_int_eq(rc, 0);
	e.daemon = 0;
	ck_assert_int_eq(tl_file_contains(e.log, "Sanitizer"), 0);
	conv_free(&c);
	conv_free(&late);
	e2e_stop(&e);
}
END_TEST

/* A client that stops reading cannot make the daemon buffer without
 * bound: past max_client_buffer it is dropped and its connection evicted. */
START_TEST(test_e2e__slow_client_is_dropped)
{
	struct e2e e;
	struct conv c, d;
	struct tl_stream *s;
	char buf[4096];
	ssize_t n;
	int64_t end;

	e2e_start(&e, "--reply-bytes 12000000 --deltas 300", "max_client_buffer = 64k");
	conv_init(&c, "conv-slow");
	s = open_held_stream(&e, &c, "a very long answer");
	/* read nothing more: the daemon must give up on this client */
	ck_assert_int_eq(wait_status(&e, "client_aborts", 1), 0);
	ck_assert_int_eq(wait_status(&e, "requests_inflight", 0), 0);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(tl_file_contains(e.log, "client reads too slowly"), 1);
	/* the stream ends early for the client */
	end = tl_now_ms() + WAIT_MS;
	while ((n = tl_stream_read(s, buf, sizeof(buf), 5000)) > 0 && tl_now_ms() < end)
		;
	ck_assert_int_le(n, 0);
	tl_stream_close(s, 0);
	/* a non-streamed answer larger than the buffer limit is refused clearly */
	conv_init(&d, "conv-after-slow");
	{
		struct tl_response r;
		ck_assert_int_eq(conv_turn(&e, &d, "too big to hold", 0, NULL, &r), 502);
		ck_assert_ptr_nonnull(strstr(r.body, "response_too_large"));
		tl_response_free(&r);
	}
	conv_free(&c);
	conv_free(&d);
	e2e_stop(&e);
}
END_TEST

static Suite *
make_suite_e2e(void)
{
	Suite *s = suite_create("e2e");
	TCase *seed = tcase_create("seed");
	TCase *pool = tcase_create("pool");
	TCase *proc = tcase_create("processes");

	tcase_set_timeout(seed, 120);
	tcase_set_timeout(pool, 120);
	tcase_set_timeout(proc, 120);
	tcase_add_test(seed, test_e2e__five_turns_one_connection);
	tcase_add_test(seed, test_e2e__two_conversations_two_connections);
	tcase_add_test(seed, test_e2e__server_close_evicts);
	tcase_add_test(seed, test_e2e__pool_disabled_in_config);
	tcase_add_test(seed, test_e2e__evict_reconnects);
	tcase_add_test(seed, test_e2e__no_conversation_is_one_shot);
	tcase_add_test(seed, test_e2e__stateless_client_is_one_conversation);
	tcase_add_test(seed, test_e2e__session_header_is_the_conversation);
	tcase_add_test(pool, test_e2e__concurrent_turns_bypass_busy);
	tcase_add_test(pool, test_e2e__account_cap_across_workers);
	tcase_add_test(pool, test_e2e__stale_reuse_retried_once);
	tcase_add_test(pool, test_e2e__mid_stream_close_is_an_error_event);
	tcase_add_test(pool, test_e2e__client_disconnect_evicts);
	tcase_add_test(pool, test_e2e__silent_connection_dies_by_liveness);
	tcase_add_test(pool, test_e2e__max_age_replaces_connection);
	tcase_add_test(pool, test_e2e__connection_limit_error_replaces_connection);
	tcase_add_test(pool, test_e2e__previous_response_id_routed_to_owner);
	tcase_add_test(pool, test_e2e__bad_requests_get_openai_errors);
	tcase_add_test(proc, test_e2e__killed_worker_is_respawned);
	tcase_add_test(proc, test_e2e__tls_upstream_by_name);
	tcase_add_test(proc, test_e2e__tls_wrong_ca_fails);
	tcase_add_test(proc, test_e2e__graceful_stop_lets_streams_finish);
	tcase_add_test(proc, test_e2e__slow_client_is_dropped);
	tcase_add_test(proc, test_e2e__conversation_stays_on_its_worker);
	suite_add_tcase(s, seed);
	suite_add_tcase(s, pool);
	suite_add_tcase(s, proc);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_e2e());
}
