/*
 * End-to-end tests of the translating routes, /v1/chat/completions and
 * /v1/messages, through the real daemon and simulator: every turn of a
 * conversation rides one pooled upstream WebSocket from its first turn,
 * the cache is as warm as on /v1/responses, and answers and errors come
 * in each route's own shape.
 */
#include "config.h"

#include <check.h>
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
	tcase_add_test(tc, test_routes__bad_input_in_each_shape);
	tcase_add_test(tc, test_routes__messages_upstream_limit_in_anthropic_shape);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_routes());
}
