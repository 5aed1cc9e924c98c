/*
 * End-to-end tests of the translating routes, /v1/chat/completions and
 * /v1/messages, through the real daemon and simulator: every turn of a
 * conversation rides one pooled upstream WebSocket from its first turn,
 * the cache is as warm as on /v1/responses, and answers and errors come
 * in each route's own shape.  Tool calls go both ways (the simulator
 * calls a function when the request has tools and the user text says
 * CALL:NAME), and implicit resume sends only the new items upstream
 * (checked in the simulator's request records).
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

/* A chat conversation: the full message list every turn. */
struct chat {
	json_object	*messages;
	const char	*headers;
};

/* A chat / Anthropic message with plain text content. */
static json_object *
msg(const char *role, const char *text)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string(text));
	return m;
}

static void
chat_init(struct chat *c, const char *system, const char *headers)
{
	c->messages = json_object_new_array();
	c->headers = headers;
	json_object_array_add(c->messages, msg("system", system));
}

static json_object *
post_json(struct e2e *e, const char *path, const char *headers, json_object *req,
    int *status, char **raw)
{
	struct tl_response r;
	const char *body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	json_object *o;

	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", path, headers, body,
	    strlen(body), &r), 0);
	*status = r.status;
	o = tl_response_json(&r);
	if (raw != NULL)
		*raw = strdup(r.body ? r.body : "");
	tl_response_free(&r);
	return o;
}

static json_object *
jpath(json_object *o, const char *path)
{
	json_object *cur = o;
	char buf[256], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save)) {
		if (json_object_is_type(cur, json_type_array))
			cur = json_object_array_get_idx(cur, (size_t)atoi(tok));
		else if (!json_object_object_get_ex(cur, tok, &cur))
			cur = NULL;
	}
	return cur;
}

static long long
jnum(json_object *o, const char *path)
{
	json_object *v = jpath(o, path);

	return v ? (long long)json_object_get_int64(v) : -1;
}

static const char *
jstr(json_object *o, const char *path)
{
	json_object *v = jpath(o, path);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* One non-streamed chat turn; returns cached/prompt tokens. */
static double
chat_turn(struct e2e *e, struct chat *c, const char *text)
{
	json_object *req = json_object_new_object(), *ans;
	const char *content;
	int status;
	double r;

	json_object_array_add(c->messages, msg("user", text));
	json_object_object_add(req, "model", json_object_new_string("gpt-5.4"));
	json_object_object_add(req, "messages", json_object_get(c->messages));
	ans = post_json(e, "/v1/chat/completions", c->headers, req, &status, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert_str_eq(jstr(ans, "object"), "chat.completion");
	ck_assert_str_eq(jstr(ans, "model"), "gpt-5.4");
	ck_assert_str_eq(jstr(ans, "choices.0.finish_reason"), "stop");
	content = jstr(ans, "choices.0.message.content");
	ck_assert_ptr_nonnull(content);
	ck_assert(jnum(ans, "usage.prompt_tokens") > 0);
	r = (double)jnum(ans, "usage.prompt_tokens_details.cached_tokens") /
	    (double)jnum(ans, "usage.prompt_tokens");
	json_object_array_add(c->messages, msg("assistant", content));
	json_object_put(ans);
	json_object_put(req);
	return r;
}

START_TEST(test_routes__chat_turns_share_one_connection)
{
	struct e2e e;
	struct chat c;
	double r;
	int i;

	e2e_start(&e, NULL, NULL);
	chat_init(&c, e.instructions, NULL);
	for (i = 1; i <= 4; i++) {
		r = chat_turn(&e, &c, i == 1 ? "hello" : "and then?");
		if (i >= 2)
			ck_assert_msg(r >= 0.9, "chat turn %d cached %.2f", i, r);
	}
	/* turn 1 already went over the pooled WebSocket */
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 3);
	json_object_put(c.messages);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_routes__chat_stream_chunks_usage_and_done)
{
	struct e2e e;
	json_object *req = json_object_new_object(), *msgs = json_object_new_array(), *so;
	struct tl_response r;
	const char *body;
	char *p;

	e2e_start(&e, NULL, NULL);
	json_object_array_add(msgs, msg("user", "stream please"));
	json_object_object_add(req, "model", json_object_new_string("gpt-5.4"));
	json_object_object_add(req, "messages", msgs);
	json_object_object_add(req, "stream", json_object_new_boolean(1));
	so = json_object_new_object();
	json_object_object_add(so, "include_usage", json_object_new_boolean(1));
	json_object_object_add(req, "stream_options", so);
	body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/chat/completions",
	    "x-session-id: chat-stream\r\n", body, strlen(body), &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.headers, "text/event-stream"));
	ck_assert_ptr_nonnull(strstr(r.body, "\"object\":\"chat.completion.chunk\""));
	ck_assert_ptr_nonnull(strstr(r.body, "\"finish_reason\":\"stop\""));
	ck_assert_ptr_nonnull(strstr(r.body, "\"prompt_tokens\""));
	p = strstr(r.body, "data: [DONE]");
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(p, "data: [DONE]\n\n");
	tl_response_free(&r);
	json_object_put(req);
	e2e_stop(&e);
}
END_TEST

/* One Anthropic turn as Claude Code sends it. */
static json_object *
messages_turn(struct e2e *e, json_object *messages, const char *system, int stream,
    int *status, char **raw)
{
	json_object *req = json_object_new_object(), *ans;

	json_object_object_add(req, "model", json_object_new_string("claude-opus-5-5"));
	json_object_object_add(req, "max_tokens", json_object_new_int(4096));
	json_object_object_add(req, "system", json_object_new_string(system));
	json_object_object_add(req, "messages", json_object_get(messages));
	if (stream)
		json_object_object_add(req, "stream", json_object_new_boolean(1));
	ans = post_json(e, "/v1/messages?beta=true",
	    "x-claude-code-session-id: 0b6c8a1e-claude\r\nanthropic-version: 2023-06-01\r\n",
	    req, status, raw);
	json_object_put(req);
	return ans;
}

START_TEST(test_routes__messages_turns_share_one_connection)
{
	struct e2e e;
	json_object *msgs = json_object_new_array(), *ans;
	const char *text;
	long long in, cached;
	int status, i;

	e2e_start(&e, NULL, NULL);
	for (i = 1; i <= 4; i++) {
		json_object_array_add(msgs, msg("user", i == 1 ? "hi claude" : "go on"));
		ans = messages_turn(&e, msgs, e.instructions, 0, &status, NULL);
		ck_assert_int_eq(status, 200);
		ck_assert_str_eq(jstr(ans, "type"), "message");
		ck_assert_str_eq(jstr(ans, "role"), "assistant");
		/* the answer names the model the client asked for */
		ck_assert_str_eq(jstr(ans, "model"), "claude-opus-5-5");
		ck_assert_str_eq(jstr(ans, "stop_reason"), "end_turn");
		ck_assert_str_eq(jstr(ans, "content.0.type"), "text");
		text = jstr(ans, "content.0.text");
		ck_assert_ptr_nonnull(text);
		in = jnum(ans, "usage.input_tokens");
		cached = jnum(ans, "usage.cache_read_input_tokens");
		ck_assert(in >= 0 && cached >= 0);
		if (i >= 2)
			ck_assert_msg((double)cached / (double)(in + cached) >= 0.9,
			    "messages turn %d: cached %lld, uncached %lld", i, cached, in);
		json_object_array_add(msgs, msg("assistant", text));
		json_object_put(ans);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 3);
	json_object_put(msgs);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_routes__messages_stream_events)
{
	struct e2e e;
	json_object *msgs = json_object_new_array(), *ans;
	char *raw = NULL;
	int status;

	e2e_start(&e, NULL, NULL);
	json_object_array_add(msgs, msg("user", "stream it"));
	ans = messages_turn(&e, msgs, "be brief", 1, &status, &raw);
	ck_assert_int_eq(status, 200);
	ck_assert_ptr_nonnull(strstr(raw, "event: message_start\n"));
	ck_assert_ptr_nonnull(strstr(raw, "event: content_block_start\n"));
	ck_assert_ptr_nonnull(strstr(raw, "\"type\":\"text_delta\""));
	ck_assert_ptr_nonnull(strstr(raw, "event: content_block_stop\n"));
	ck_assert_ptr_nonnull(strstr(raw, "\"stop_reason\":\"end_turn\""));
	ck_assert_ptr_nonnull(strstr(raw, "event: message_stop\n"));
	ck_assert(strstr(raw, "event: message_start") < strstr(raw, "event: message_stop"));
	free(raw);
	json_object_put(ans);
	json_object_put(msgs);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_routes__count_tokens)
{
	struct e2e e;
	json_object *req = json_object_new_object(), *msgs = json_object_new_array(), *ans;
	int status;

	e2e_start(&e, NULL, NULL);
	json_object_array_add(msgs, msg("user", "how many tokens is this?"));
	json_object_object_add(req, "model", json_object_new_string("claude-sonnet-5"));
	json_object_object_add(req, "messages", msgs);
	ans = post_json(&e, "/v1/messages/count_tokens", NULL, req, &status, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert(jnum(ans, "input_tokens") > 0);
	json_object_put(ans);
	json_object_put(req);
	/* nothing went upstream */
	ck_assert_int_eq(sim_num(&e, "connections_total"), 0);
	e2e_stop(&e);
}
END_TEST

/* Bad input: a 400 in the route's own error shape, never a crash. */
START_TEST(test_routes__bad_input_in_each_shape)
{
	static const struct {
		const char *path, *body, *want;
	} cases[] = {
		{ "/v1/chat/completions", "{\"model\":\"gpt-5.4\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
		  "\"error\":{" },
		{ "/v1/chat/completions", "{\"model\":\"gpt-5.4\",\"messages\":\"nope\"}", "\"error\":{" },
		{ "/v1/chat/completions", "{not json", "\"error\":{" },
		{ "/v1/chat/completions", "null", "must be a JSON object" },
		{ "/v1/messages", "{\"model\":\"claude-opus-5-5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
		  "\"type\":\"error\"" },
		{ "/v1/messages", "{\"model\":\"claude-opus-5-5\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
		  "\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_none\",\"content\":\"x\"}]}]}",
		  "\"type\":\"invalid_request_error\"" },
		{ "/v1/messages", "{\"model\":\"claude-opus-5-5\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
		  "\"content\":[{\"type\":\"hologram\"}]}]}", "\"type\":\"error\"" },
		{ "/v1/messages", "[1,2]", "\"type\":\"error\"" },
	};
	struct e2e e;
	struct tl_response r;
	size_t i;

	e2e_start(&e, NULL, NULL);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", cases[i].path, NULL,
		    cases[i].body, strlen(cases[i].body), &r), 0);
		ck_assert_msg(r.status == 400, "case %zu: status %d", i, r.status);
		ck_assert_msg(strstr(r.body, cases[i].want) != NULL, "case %zu: %s", i, r.body);
		tl_response_free(&r);
	}
	ck_assert_int_eq(sim_num(&e, "connections_total"), 0);
	e2e_stop(&e);
}
END_TEST

/* An upstream usage limit with one account reaches an Anthropic client as
 * rate_limit_error 429 with Retry-After. */
START_TEST(test_routes__messages_upstream_limit_in_anthropic_shape)
{
	struct e2e e;
	json_object *msgs = json_object_new_array(), *ans;
	char *raw = NULL;
	int status;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"usage_limit\",\"count\":1}"), 0);
	json_object_array_add(msgs, msg("user", "hit the limit"));
	ans = messages_turn(&e, msgs, "be brief", 0, &status, &raw);
	ck_assert_msg(status == 429, "status %d: %s", status, raw);
	ck_assert_str_eq(jstr(ans, "type"), "error");
	ck_assert_str_eq(jstr(ans, "error.type"), "rate_limit_error");
	free(raw);
	json_object_put(ans);
	json_object_put(msgs);
	e2e_stop(&e);
}
END_TEST

/* An upstream that stays overloaded past the retries reaches an Anthropic
 * client as overloaded_error 529 (its SDKs back off on it), as a failure
 * after the stream began already did (found by the soak). */
START_TEST(test_routes__messages_upstream_overloaded_is_529)
{
	struct e2e e;
	json_object *msgs = json_object_new_array(), *ans;
	char *raw = NULL;
	int status;

	e2e_start(&e, NULL, NULL);
	json_object_array_add(msgs, msg("user", "busy? [[sim:overloaded]]"));
	ans = messages_turn(&e, msgs, "be brief", 0, &status, &raw);
	ck_assert_msg(status == 529, "status %d: %s", status, raw);
	ck_assert_str_eq(jstr(ans, "type"), "error");
	ck_assert_str_eq(jstr(ans, "error.type"), "overloaded_error");
	free(raw);
	json_object_put(ans);
	json_object_put(msgs);
	e2e_stop(&e);
}
END_TEST

/* ---- tool calls, both ways, and implicit resume ----------------------- */

/* The simulator's newest request record (owned), or NULL. */
static json_object *
sim_last_request(struct e2e *e)
{
	json_object *st = tl_sim_state(&e->sim), *reqs, *last = NULL;
	size_t n;

	if (st != NULL && json_object_object_get_ex(st, "requests", &reqs) &&
	    (n = json_object_array_length(reqs)) > 0)
		last = json_object_get(json_object_array_get_idx(reqs, n - 1));
	json_object_put(st);
	return last;
}

/* The newest request's cached share, as the simulator billed it. */
static double
sim_last_cached_share(struct e2e *e)
{
	json_object *rq = sim_last_request(e);
	double r;

	ck_assert_ptr_nonnull(rq);
	ck_assert(jnum(rq, "input_tokens") > 0);
	r = (double)jnum(rq, "cached_tokens") / (double)jnum(rq, "input_tokens");
	json_object_put(rq);
	return r;
}

/* The newest request went upstream as a continuation (or not). */
static bool
sim_last_continued(struct e2e *e, long long *items)
{
	json_object *rq = sim_last_request(e);
	bool cont;

	ck_assert_ptr_nonnull(rq);
	cont = jstr(rq, "previous_response_id") != NULL;
	if (items != NULL)
		*items = jnum(rq, "input_items");
	json_object_put(rq);
	return cont;
}

/* [{"type":"function","function":{"name":"lookup",..}}] */
static json_object *
chat_tools(void)
{
	json_object *tools = json_object_new_array(), *t = json_object_new_object();
	json_object *f = json_object_new_object();

	json_object_object_add(f, "name", json_object_new_string("lookup"));
	json_object_object_add(f, "description", json_object_new_string("Look a word up."));
	json_object_object_add(f, "parameters", json_tokener_parse(
	    "{\"type\":\"object\",\"properties\":{\"input\":{\"type\":\"string\"}}}"));
	json_object_object_add(t, "type", json_object_new_string("function"));
	json_object_object_add(t, "function", f);
	json_object_array_add(tools, t);
	return tools;
}

static json_object *
chat_request(struct chat *c, int stream)
{
	json_object *req = json_object_new_object();

	json_object_object_add(req, "model", json_object_new_string("gpt-5.4"));
	json_object_object_add(req, "messages", json_object_get(c->messages));
	json_object_object_add(req, "tools", chat_tools());
	if (stream)
		json_object_object_add(req, "stream", json_object_new_boolean(1));
	return req;
}

/* Arguments text parses as a JSON object with the simulator's "input". */
static void
assert_call_arguments(const char *args)
{
	json_object *a;

	ck_assert_ptr_nonnull(args);
	a = json_tokener_parse(args);
	ck_assert_msg(a != NULL && json_object_is_type(a, json_type_object),
	    "arguments are not a JSON object: %s", args);
	ck_assert_ptr_nonnull(jstr(a, "input"));
	json_object_put(a);
}

/* The assistant's tool call and the tool's result, as a chat client
 * appends them. */
static void
chat_add_tool_round(struct chat *c, const char *id, const char *name, const char *args)
{
	json_object *m = json_object_new_object(), *tcs = json_object_new_array();
	json_object *tc = json_object_new_object(), *f = json_object_new_object();

	json_object_object_add(f, "name", json_object_new_string(name));
	json_object_object_add(f, "arguments", json_object_new_string(args));
	json_object_object_add(tc, "id", json_object_new_string(id));
	json_object_object_add(tc, "type", json_object_new_string("function"));
	json_object_object_add(tc, "function", f);
	json_object_array_add(tcs, tc);
	json_object_object_add(m, "role", json_object_new_string("assistant"));
	json_object_object_add(m, "content", NULL);
	json_object_object_add(m, "tool_calls", tcs);
	json_object_array_add(c->messages, m);
	m = json_object_new_object();
	json_object_object_add(m, "role", json_object_new_string("tool"));
	json_object_object_add(m, "tool_call_id", json_object_new_string(id));
	json_object_object_add(m, "content", json_object_new_string("lookup says: 42"));
	json_object_array_add(c->messages, m);
}

/* The turn after the tool ran: a normal answer on the same connection,
 * from the warm cache. */
static void
chat_tool_result_turn(struct e2e *e, struct chat *c, bool resumed)
{
	json_object *req = chat_request(c, 0), *ans;
	long long items = -1;
	int status;
	double share;

	ans = post_json(e, "/v1/chat/completions", c->headers, req, &status, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert_str_eq(jstr(ans, "choices.0.finish_reason"), "stop");
	ck_assert_ptr_nonnull(jstr(ans, "choices.0.message.content"));
	ck_assert_ptr_null(jpath(ans, "choices.0.message.tool_calls"));
	ck_assert_int_eq(sim_num(e, "connections_total"), 1);
	share = sim_last_cached_share(e);
	ck_assert_msg(share >= 0.9, "tool result turn cached %.2f", share);
	if (resumed) {
		/* the client's echo of the call matched the upstream's output:
		 * only the tool's output went up, continuing the call's response */
		ck_assert_msg(sim_last_continued(e, &items), "the tool message went upstream in full");
		ck_assert_int_eq(items, 1);
	} else {
		/* the user message, the call and its output */
		ck_assert(!sim_last_continued(e, &items));
		ck_assert_int_eq(items, 3);
	}
	json_object_put(ans);
	json_object_put(req);
}

/* _i 0: implicit resume (the default); 1: implicit_resume = no, so the
 * tool's result goes up with the whole history and the call in it. */
START_TEST(test_routes__chat_tool_call_round_trip)
{
	struct e2e e;
	struct chat c;
	json_object *req, *ans, *tc;
	bool full_body = _i == 1;
	int status;

	e2e_start(&e, NULL, full_body ? "implicit_resume = no" : NULL);
	chat_init(&c, e.instructions, NULL);
	json_object_array_add(c.messages, msg("user", "Please CALL:lookup the word pool."));
	req = chat_request(&c, 0);
	ans = post_json(&e, "/v1/chat/completions", NULL, req, &status, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert_str_eq(jstr(ans, "choices.0.finish_reason"), "tool_calls");
	tc = jpath(ans, "choices.0.message.tool_calls.0");
	ck_assert_ptr_nonnull(tc);
	ck_assert_ptr_nonnull(jstr(tc, "id"));
	ck_assert(strlen(jstr(tc, "id")) > 0);
	ck_assert_str_eq(jstr(tc, "type"), "function");
	ck_assert_str_eq(jstr(tc, "function.name"), "lookup");
	assert_call_arguments(jstr(tc, "function.arguments"));
	chat_add_tool_round(&c, jstr(tc, "id"), "lookup", jstr(tc, "function.arguments"));
	json_object_put(ans);
	json_object_put(req);
	chat_tool_result_turn(&e, &c, !full_body);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 1);
	json_object_put(c.messages);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_routes__chat_tool_call_streamed)
{
	struct e2e e;
	struct chat c;
	json_object *req, *events, *ev, *tcs, *tc;
	struct tl_response r;
	char id[128] = "", name[64] = "", args[1024] = "";
	const char *body, *finish = NULL, *v;
	int pieces = 0;
	size_t i, j;

	e2e_start(&e, NULL, NULL);
	chat_init(&c, e.instructions, NULL);
	json_object_array_add(c.messages, msg("user", "Now CALL:lookup for the word cache."));
	req = chat_request(&c, 1);
	body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/chat/completions", NULL,
	    body, strlen(body), &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(r.body, "data: [DONE]"));
	events = tl_sse_events(r.body);
	for (i = 0; i < json_object_array_length(events); i++) {
		ev = json_object_array_get_idx(events, i);
		if ((v = jstr(ev, "choices.0.finish_reason")) != NULL)
			finish = v;
		if ((tcs = jpath(ev, "choices.0.delta.tool_calls")) == NULL)
			continue;
		for (j = 0; j < json_object_array_length(tcs); j++) {
			tc = json_object_array_get_idx(tcs, j);
			ck_assert_int_eq(jnum(tc, "index"), 0);
			if ((v = jstr(tc, "id")) != NULL) {
				ck_assert_str_eq(jstr(tc, "type"), "function");
				snprintf(id, sizeof(id), "%s", v);
			}
			if ((v = jstr(tc, "function.name")) != NULL)
				snprintf(name, sizeof(name), "%s", v);
			if ((v = jstr(tc, "function.arguments")) != NULL && *v) {
				ck_assert(strlen(args) + strlen(v) < sizeof(args));
				strcat(args, v);
				pieces++;
			}
		}
	}
	ck_assert_ptr_nonnull(finish);
	ck_assert_str_eq(finish, "tool_calls");
	ck_assert(id[0] != '\0');
	ck_assert_str_eq(name, "lookup");
	/* the simulator streams the arguments in several deltas */
	ck_assert_msg(pieces >= 2, "%d argument pieces", pieces);
	assert_call_arguments(args);
	json_object_put(events);
	tl_response_free(&r);
	json_object_put(req);
	chat_add_tool_round(&c, id, name, args);
	chat_tool_result_turn(&e, &c, true);
	json_object_put(c.messages);
	e2e_stop(&e);
}
END_TEST

/* [{"name":"lookup","description":..,"input_schema":{..}}] */
static json_object *
anthropic_tools(void)
{
	json_object *tools = json_object_new_array(), *t = json_object_new_object();

	json_object_object_add(t, "name", json_object_new_string("lookup"));
	json_object_object_add(t, "description", json_object_new_string("Look a word up."));
	json_object_object_add(t, "input_schema", json_tokener_parse(
	    "{\"type\":\"object\",\"properties\":{\"input\":{\"type\":\"string\"}}}"));
	json_object_array_add(tools, t);
	return tools;
}

static json_object *
messages_tool_turn(struct e2e *e, json_object *messages, int stream, int *status,
    char **raw)
{
	json_object *req = json_object_new_object(), *ans;

	json_object_object_add(req, "model", json_object_new_string("claude-opus-5-5"));
	json_object_object_add(req, "max_tokens", json_object_new_int(4096));
	json_object_object_add(req, "system", json_object_new_string(e->instructions));
	json_object_object_add(req, "messages", json_object_get(messages));
	json_object_object_add(req, "tools", anthropic_tools());
	if (stream)
		json_object_object_add(req, "stream", json_object_new_boolean(1));
	ans = post_json(e, "/v1/messages", "x-claude-code-session-id: tools-session\r\n"
	    "anthropic-version: 2023-06-01\r\n", req, status, raw);
	json_object_put(req);
	return ans;
}

/* The assistant's tool_use and the user's tool_result, as Claude Code
 * appends them. */
static void
messages_add_tool_round(json_object *msgs, const char *id, const char *name,
    json_object *input)
{
	json_object *m = json_object_new_object(), *content = json_object_new_array();
	json_object *b = json_object_new_object();

	json_object_object_add(b, "type", json_object_new_string("tool_use"));
	json_object_object_add(b, "id", json_object_new_string(id));
	json_object_object_add(b, "name", json_object_new_string(name));
	json_object_object_add(b, "input", json_object_get(input));
	json_object_array_add(content, b);
	json_object_object_add(m, "role", json_object_new_string("assistant"));
	json_object_object_add(m, "content", content);
	json_object_array_add(msgs, m);
	m = json_object_new_object();
	content = json_object_new_array();
	b = json_object_new_object();
	json_object_object_add(b, "type", json_object_new_string("tool_result"));
	json_object_object_add(b, "tool_use_id", json_object_new_string(id));
	json_object_object_add(b, "content", json_object_new_string("lookup says: 42"));
	json_object_array_add(content, b);
	json_object_object_add(m, "role", json_object_new_string("user"));
	json_object_object_add(m, "content", content);
	json_object_array_add(msgs, m);
}

static void
messages_tool_result_turn(struct e2e *e, json_object *msgs)
{
	json_object *ans;
	long long items = -1;
	int status;
	double share;

	ans = messages_tool_turn(e, msgs, 0, &status, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert_str_eq(jstr(ans, "stop_reason"), "end_turn");
	ck_assert_str_eq(jstr(ans, "content.0.type"), "text");
	ck_assert_ptr_nonnull(jstr(ans, "content.0.text"));
	ck_assert_int_eq(sim_num(e, "connections_total"), 1);
	share = sim_last_cached_share(e);
	ck_assert_msg(share >= 0.9, "tool_result turn cached %.2f", share);
	/* the client's echo of the call matched the upstream's output: only
	 * the tool's output went up, continuing the call's response */
	ck_assert_msg(sim_last_continued(e, &items), "the tool_result went upstream in full");
	ck_assert_int_eq(items, 1);
	json_object_put(ans);
}

START_TEST(test_routes__messages_tool_use_round_trip)
{
	struct e2e e;
	json_object *msgs = json_object_new_array(), *ans, *content, *b, *tu = NULL;
	int status;
	size_t i;

	e2e_start(&e, NULL, NULL);
	json_object_array_add(msgs, msg("user", "Please CALL:lookup the word socket."));
	ans = messages_tool_turn(&e, msgs, 0, &status, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert_str_eq(jstr(ans, "stop_reason"), "tool_use");
	content = jpath(ans, "content");
	ck_assert_ptr_nonnull(content);
	for (i = 0; i < json_object_array_length(content); i++) {
		b = json_object_array_get_idx(content, i);
		if (jstr(b, "type") && strcmp(jstr(b, "type"), "tool_use") == 0)
			tu = b;
	}
	ck_assert_ptr_nonnull(tu);
	ck_assert_ptr_nonnull(jstr(tu, "id"));
	ck_assert(strlen(jstr(tu, "id")) > 0);
	ck_assert_str_eq(jstr(tu, "name"), "lookup");
	ck_assert(json_object_is_type(jpath(tu, "input"), json_type_object));
	ck_assert_ptr_nonnull(jstr(tu, "input.input"));
	messages_add_tool_round(msgs, jstr(tu, "id"), "lookup", jpath(tu, "input"));
	json_object_put(ans);
	messages_tool_result_turn(&e, msgs);
	json_object_put(msgs);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_routes__messages_tool_use_streamed)
{
	struct e2e e;
	json_object *msgs = json_object_new_array(), *ans, *events, *ev, *input;
	char id[128] = "", name[64] = "", partial[1024] = "", *raw = NULL;
	const char *type, *v, *stop = NULL;
	int status, pieces = 0;
	size_t i;

	e2e_start(&e, NULL, NULL);
	json_object_array_add(msgs, msg("user", "Stream it and CALL:lookup the word warm."));
	ans = messages_tool_turn(&e, msgs, 1, &status, &raw);
	ck_assert_int_eq(status, 200);
	events = tl_sse_events(raw);
	for (i = 0; i < json_object_array_length(events); i++) {
		ev = json_object_array_get_idx(events, i);
		if ((type = jstr(ev, "type")) == NULL)
			continue;
		if (strcmp(type, "content_block_start") == 0 &&
		    (v = jstr(ev, "content_block.type")) != NULL && strcmp(v, "tool_use") == 0) {
			snprintf(id, sizeof(id), "%s", jstr(ev, "content_block.id"));
			snprintf(name, sizeof(name), "%s", jstr(ev, "content_block.name"));
		} else if (strcmp(type, "content_block_delta") == 0 &&
		    (v = jstr(ev, "delta.type")) != NULL && strcmp(v, "input_json_delta") == 0) {
			v = jstr(ev, "delta.partial_json");
			ck_assert_ptr_nonnull(v);
			ck_assert(strlen(partial) + strlen(v) < sizeof(partial));
			strcat(partial, v);
			pieces++;
		} else if (strcmp(type, "message_delta") == 0)
			stop = jstr(ev, "delta.stop_reason");
	}
	ck_assert_ptr_nonnull(stop);
	ck_assert_str_eq(stop, "tool_use");
	ck_assert(id[0] != '\0');
	ck_assert_str_eq(name, "lookup");
	ck_assert_msg(pieces >= 2, "%d input_json_delta pieces", pieces);
	input = json_tokener_parse(partial);
	ck_assert_msg(input != NULL && json_object_is_type(input, json_type_object),
	    "partial_json pieces do not make an object: %s", partial);
	ck_assert_ptr_nonnull(jstr(input, "input"));
	messages_add_tool_round(msgs, id, name, input);
	json_object_put(input);
	json_object_put(events);
	json_object_put(ans);
	free(raw);
	messages_tool_result_turn(&e, msgs);
	json_object_put(msgs);
	e2e_stop(&e);
}
END_TEST

/*
 * Implicit resume: from turn 2 a stateless chat client's full history goes
 * upstream as only its new message plus previous_response_id, the answer
 * as warm as ever; a client that edits an earlier message gets its whole
 * body sent.
 */
START_TEST(test_routes__chat_implicit_resume_and_edited_history)
{
	struct e2e e;
	struct chat c;
	json_object *first;
	long long items = -1;
	double r;

	e2e_start(&e, NULL, NULL);
	chat_init(&c, e.instructions, "x-session-id: resume-chat\r\n");
	r = chat_turn(&e, &c, "first question");
	ck_assert(!sim_last_continued(&e, NULL));
	r = chat_turn(&e, &c, "second question");
	ck_assert_msg(r >= 0.9, "turn 2 cached %.2f", r);
	ck_assert_msg(sim_last_continued(&e, &items), "turn 2 went upstream in full");
	/* the new user message alone: the rest is the previous response */
	ck_assert_int_eq(items, 1);
	r = chat_turn(&e, &c, "third question");
	ck_assert_msg(r >= 0.9, "turn 3 cached %.2f", r);
	ck_assert(sim_last_continued(&e, &items));
	ck_assert_int_eq(items, 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);

	/* edit the first user message: nothing upstream holds this history */
	first = json_object_array_get_idx(c.messages, 1);
	json_object_object_add(first, "content", json_object_new_string("first question, edited"));
	r = chat_turn(&e, &c, "fourth question");
	ck_assert_msg(!sim_last_continued(&e, &items),
	    "an edited history went upstream as a continuation");
	/* system + 3 user + 3 assistant + the new user message */
	ck_assert_int_eq(items, 7);
	json_object_put(c.messages);
	e2e_stop(&e);
}
END_TEST

static Suite *
make_suite_routes(void)
{
	Suite *s = suite_create("routes");
	TCase *tc = tcase_create("routes");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_routes__chat_turns_share_one_connection);
	tcase_add_test(tc, test_routes__chat_stream_chunks_usage_and_done);
	tcase_add_test(tc, test_routes__messages_turns_share_one_connection);
	tcase_add_test(tc, test_routes__messages_stream_events);
	tcase_add_test(tc, test_routes__count_tokens);
	tcase_add_test(tc, test_routes__messages_upstream_overloaded_is_529);
	tcase_add_test(tc, test_routes__bad_input_in_each_shape);
	tcase_add_test(tc, test_routes__messages_upstream_limit_in_anthropic_shape);
	tcase_add_loop_test(tc, test_routes__chat_tool_call_round_trip, 0, 2);
	tcase_add_test(tc, test_routes__chat_tool_call_streamed);
	tcase_add_test(tc, test_routes__messages_tool_use_round_trip);
	tcase_add_test(tc, test_routes__messages_tool_use_streamed);
	tcase_add_test(tc, test_routes__chat_implicit_resume_and_edited_history);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_routes());
}
