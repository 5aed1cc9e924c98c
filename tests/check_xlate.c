/*
 * Unit tests of the client API translations (daemon/xlate*.c) and the
 * model map (daemon/modelmap.c).
 *
 * Most cases are fixtures in tests/fixtures/xlate, one JSON file each:
 *
 *   chat-req-*.json, anthropic-req-*.json
 *	{"request": client body, "expect": the Responses body}
 *   chat-bad.json, anthropic-bad.json
 *	[{"name", "request", "param", "message": a substring of the message}]
 *	every one a 400 in the route's error shape
 *   chat-ev-*.json, anthropic-ev-*.json
 *	{"events": [upstream Responses events], "include_usage": bool,
 *	 "abort": null or the reason the caller ends with,
 *	 "expect_stream": [client SSE events: chat data objects or "[DONE]";
 *			   anthropic [event, data]],
 *	 "expect_status": status of the non-stream result,
 *	 "expect_result": the non-stream body}
 *
 * XLATE_REGEN=1 rewrites the expectations from the code's output (then
 * read the diff before committing).
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "modelmap.h"
#include "upframe.h"
#include "xlate.h"

#ifndef XLATE_FIXTURES
#define XLATE_FIXTURES	"tests/fixtures/xlate"
#endif

static char fixdir[1024];

static struct json_object *parse(const char *s);

static const char *
fixture_dir(void)
{
	const char *src = getenv("CODEXPOOL_SRCDIR");

	if (src != NULL && *src)
		snprintf(fixdir, sizeof(fixdir), "%s/tests/fixtures/xlate", src);
	else
		snprintf(fixdir, sizeof(fixdir), "%s", XLATE_FIXTURES);
	return fixdir;
}

static bool
regen(void)
{
	const char *r = getenv("XLATE_REGEN");
	return r != NULL && *r == '1';
}

static struct json_object *
load(const char *path)
{
	struct json_object *o = json_object_from_file(path);

	ck_assert_msg(o != NULL, "cannot read fixture %s", path);
	return o;
}

static void
save(const char *path, struct json_object *o)
{
	ck_assert_int_eq(json_object_to_file_ext(path, o,
	    JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
	    JSON_C_TO_STRING_NOSLASHESCAPE), 0);
}

static void
assert_json_eq(struct json_object *got, struct json_object *want, const char *what)
{
	char *g = strdup(json_plain(got, NULL) ? json_plain(got, NULL) : "null");

	ck_assert_msg(json_object_equal(got, want), "%s:\n  got  %s\n  want %s",
	    what, g, json_plain(want, NULL));
	free(g);
}

/* Fixture files of the directory whose names start with prefix, sorted. */
static size_t
fixtures(const char *prefix, char names[][256], size_t max)
{
	DIR *d = opendir(fixture_dir());
	struct dirent *de;
	size_t n = 0, i, j;
	char tmp[256];

	ck_assert_msg(d != NULL, "no fixture directory %s", fixture_dir());
	while ((de = readdir(d)) != NULL && n < max) {
		size_t l = strlen(de->d_name);
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && l > 5 &&
		    strcmp(de->d_name + l - 5, ".json") == 0 && l < 256)
			strcpy(names[n++], de->d_name);
	}
	closedir(d);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			strcpy(tmp, names[j]);
			strcpy(names[j], names[j - 1]);
			strcpy(names[j - 1], tmp);
		}
	return n;
}

static char *
path_of(const char *name)
{
	static char p[1400];

	snprintf(p, sizeof(p), "%s/%s", fixture_dir(), name);
	return p;
}

/* ---- requests ---- */

typedef struct json_object *(*translate_fn)(struct json_object *, struct xlate_error *);

static void
run_requests(const char *prefix, translate_fn fn)
{
	static char names[128][256];
	size_t n = fixtures(prefix, names, 128), i;

	ck_assert_msg(n >= 5, "too few %s fixtures: %zu", prefix, n);
	for (i = 0; i < n; i++) {
		const char *path = path_of(names[i]);
		struct json_object *fx = load(path), *got, *want;
		struct xlate_error err = { 0 };

		got = fn(json_get_obj(fx, "request"), &err);
		ck_assert_msg(got != NULL, "%s: refused: %d %s", names[i], err.status, err.message);
		if (regen()) {
			json_object_object_add(fx, "expect", json_object_get(got));
			save(path_of(names[i]), fx);
		} else {
			want = json_get_obj(fx, "expect");
			ck_assert_msg(want != NULL, "%s has no expect", names[i]);
			assert_json_eq(got, want, names[i]);
		}
		json_object_put(got);
		json_object_put(fx);
	}
}

START_TEST(test_chat__requests)
{
	run_requests("chat-req-", chat_request_to_responses);
}
END_TEST

START_TEST(test_anthropic__requests)
{
	run_requests("anthropic-req-", anthropic_request_to_responses);
}
END_TEST

/* Every bad input: NULL, status 400, the param, and the route's error body. */
static void
run_bad(const char *file, translate_fn fn, bool chat)
{
	struct json_object *cases = json_object_from_file(path_of(file));
	size_t i, n;

	ck_assert_msg(cases != NULL, "cannot read %s", file);
	n = json_object_array_length(cases);
	ck_assert_int_ge(n, 15);
	for (i = 0; i < n; i++) {
		struct json_object *c = json_object_array_get_idx(cases, i), *req, *got, *body, *e;
		const char *name = json_get_str(c, "name"), *param = json_get_str(c, "param");
		const char *msg = json_get_str(c, "message");
		struct xlate_error err = { 0 };
		char *text, perr[64];

		json_object_object_get_ex(c, "request", &req);
		got = fn(req, &err);
		ck_assert_msg(got == NULL, "%s: accepted: %s", name, json_plain(got, NULL));
		ck_assert_msg(err.status == 400, "%s: status %d", name, err.status);
		ck_assert_msg(strstr(err.message, msg) != NULL, "%s: message '%s' lacks '%s'",
		    name, err.message, msg);
		if (param != NULL)
			ck_assert_msg(err.param != NULL && strcmp(err.param, param) == 0,
			    "%s: param %s, want %s", name, err.param ? err.param : "NULL", param);
		text = chat ? chat_xlate_error_body(&err) : anthropic_error_body(err.status, err.message);
		body = json_parse_buf(text, strlen(text), perr, sizeof(perr));
		ck_assert_ptr_nonnull(body);
		if (chat) {
			e = json_get_obj(body, "error");
			ck_assert_str_eq(json_get_str(e, "type"), "invalid_request_error");
			ck_assert_str_eq(json_get_str(e, "message"), err.message);
			ck_assert(json_object_object_get_ex(e, "code", NULL));
			ck_assert(json_object_object_get_ex(e, "param", NULL));
			if (param != NULL)
				ck_assert_str_eq(json_get_str(e, "param"), param);
		} else {
			ck_assert_str_eq(json_get_str(body, "type"), "error");
			e = json_get_obj(body, "error");
			ck_assert_str_eq(json_get_str(e, "type"), "invalid_request_error");
			ck_assert_str_eq(json_get_str(e, "message"), err.message);
		}
		json_object_put(body);
		free(text);
	}
	json_object_put(cases);
}

START_TEST(test_chat__bad_requests)
{
	run_bad("chat-bad.json", chat_request_to_responses, true);
}
END_TEST

START_TEST(test_anthropic__bad_requests)
{
	run_bad("anthropic-bad.json", anthropic_request_to_responses, false);
}
END_TEST

/* ---- event streams ---- */

struct collect {
	struct json_object *out;
	bool		 anthropic;
	int		 fail_after;	/* emit fails from this call on; -1 never */
	int		 calls;
};

static int
collect(void *arg, const char *event, const char *data, size_t len)
{
	struct collect *c = arg;
	struct json_object *d, *pair;
	char perr[64];

	if (c->fail_after >= 0 && c->calls++ >= c->fail_after)
		return -1;
	ck_assert_msg(memchr(data, '\n', len) == NULL, "an SSE data line holds a newline");
	if ((d = json_parse_buf(data, len, perr, sizeof(perr))) == NULL)
		d = json_object_new_string_len(data, (int)len);
	if (c->anthropic) {
		ck_assert_ptr_nonnull(event);
		ck_assert_str_eq(event, json_get_str(d, "type"));
		pair = json_object_new_array();
		json_object_array_add(pair, json_object_new_string(event));
		json_object_array_add(pair, d);
		json_object_array_add(c->out, pair);
	} else {
		ck_assert_ptr_null(event);
		json_object_array_add(c->out, d);
	}
	return 0;
}

struct stream_ops {
	void	*(*new)(const struct xlate_stream_opts *);
	int	(*event)(void *, const char *, const char *, size_t, xlate_emit_fn, void *);
	int	(*end)(void *, const char *, xlate_emit_fn, void *);
	struct json_object *(*result)(void *, int *);
	void	(*free)(void *);
	bool	anthropic;
};

/* Thin wrappers so one driver runs both routes without casting functions. */
static void *c_new(const struct xlate_stream_opts *o) { return chat_stream_new(o); }
static int c_event(void *st, const char *t, const char *f, size_t l, xlate_emit_fn e, void *a)
{ return chat_stream_event(st, t, f, l, e, a); }
static int c_end(void *st, const char *r, xlate_emit_fn e, void *a)
{ return chat_stream_end(st, r, e, a); }
static struct json_object *c_result(void *st, int *s) { return chat_stream_result(st, s); }
static void c_free(void *st) { chat_stream_free(st); }
static void *a_new(const struct xlate_stream_opts *o) { return anthropic_stream_new(o); }
static int a_event(void *st, const char *t, const char *f, size_t l, xlate_emit_fn e, void *a)
{ return anthropic_stream_event(st, t, f, l, e, a); }
static int a_end(void *st, const char *r, xlate_emit_fn e, void *a)
{ return anthropic_stream_end(st, r, e, a); }
static struct json_object *a_result(void *st, int *s) { return anthropic_stream_result(st, s); }
static void a_free(void *st) { anthropic_stream_free(st); }

static const struct stream_ops chat_ops = {
	c_new, c_event, c_end, c_result, c_free, false,
};

static const struct stream_ops anthropic_ops = {
	a_new, a_event, a_end, a_result, a_free, true,
};

/* Feed a fixture's events; stream mode when c != NULL, else aggregate. */
static void *
feed(const struct stream_ops *ops, struct json_object *fx, struct collect *c)
{
	struct xlate_stream_opts opts = {
		.client_model = "client-model", .id_seed = "test1", .created = 1700000000,
		.include_usage = json_get_bool(fx, "include_usage", false),
	};
	struct json_object *events = json_get_array(fx, "events");
	void *st = ops->new(&opts);
	size_t i;

	for (i = 0; i < json_object_array_length(events); i++) {
		struct json_object *ev = json_object_array_get_idx(events, i);
		size_t len;
		const char *text = json_plain(ev, &len);

		ck_assert_int_eq(ops->event(st, json_get_str(ev, "type"), text, len,
		    c != NULL ? collect : NULL, c), 0);
	}
	ck_assert_int_eq(ops->end(st, json_get_str(fx, "abort"), c != NULL ? collect : NULL, c), 0);
	return st;
}

static void
run_events(const char *prefix, const struct stream_ops *ops)
{
	static char names[64][256];
	size_t n = fixtures(prefix, names, 64), i;

	ck_assert_msg(n >= 6, "too few %s fixtures: %zu", prefix, n);
	for (i = 0; i < n; i++) {
		struct json_object *fx = load(path_of(names[i])), *res;
		struct collect c = { json_object_new_array(), ops->anthropic, -1, 0 };
		char what[300];
		void *st;
		int status = 0;

		st = feed(ops, fx, &c);
		ops->free(st);
		st = feed(ops, fx, NULL);
		res = ops->result(st, &status);
		ops->free(st);
		if (regen()) {
			json_object_object_add(fx, "expect_stream", c.out);
			json_object_object_add(fx, "expect_status", json_object_new_int(status));
			json_object_object_add(fx, "expect_result", res);
			save(path_of(names[i]), fx);
		} else {
			snprintf(what, sizeof(what), "%s stream", names[i]);
			assert_json_eq(c.out, json_get_array(fx, "expect_stream"), what);
			snprintf(what, sizeof(what), "%s result", names[i]);
			assert_json_eq(res, json_get_obj(fx, "expect_result"), what);
			ck_assert_msg(status == json_get_int(fx, "expect_status", -1),
			    "%s: status %d", names[i], status);
			json_object_put(c.out);
			json_object_put(res);
		}
		json_object_put(fx);
	}
}

START_TEST(test_chat__event_streams)
{
	run_events("chat-ev-", &chat_ops);
}
END_TEST

START_TEST(test_anthropic__event_streams)
{
	run_events("anthropic-ev-", &anthropic_ops);
}
END_TEST

/* A failing emit stops the translation with -1, on every route. */
static void
emit_failure(const struct stream_ops *ops, const char *file)
{
	struct json_object *fx = load(path_of(file));
	struct json_object *events = json_get_array(fx, "events");
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x" };
	struct collect c = { json_object_new_array(), ops->anthropic, 0, 0 };
	void *st = ops->new(&opts);
	size_t i;
	int rc = 0;

	for (i = 0; i < json_object_array_length(events) && rc == 0; i++) {
		struct json_object *ev = json_object_array_get_idx(events, i);
		size_t len;
		const char *text = json_plain(ev, &len);
		rc = ops->event(st, json_get_str(ev, "type"), text, len, collect, &c);
	}
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(json_object_array_length(c.out), 0);
	ops->free(st);
	json_object_put(c.out);
	json_object_put(fx);
}

START_TEST(test_xlate__emit_failure_stops)
{
	emit_failure(&chat_ops, "chat-ev-text.json");
	emit_failure(&anthropic_ops, "anthropic-ev-text.json");
}
END_TEST

START_TEST(test_xlate__bad_frame)
{
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x" };
	struct chat_stream *cs = chat_stream_new(&opts);
	struct anthropic_stream *as = anthropic_stream_new(&opts);

	ck_assert_int_eq(chat_stream_event(cs, "response.output_text.delta", "{nope", 5,
	    NULL, NULL), -1);
	ck_assert_int_eq(anthropic_stream_event(as, "response.output_text.delta", "{nope", 5,
	    NULL, NULL), -1);
	chat_stream_free(cs);
	anthropic_stream_free(as);
}
END_TEST

/* The non-stream result is bounded by max_aggregate. */
START_TEST(test_xlate__aggregate_limit)
{
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x", .max_aggregate = 8 };
	struct chat_stream *cs = chat_stream_new(&opts);
	struct anthropic_stream *as = anthropic_stream_new(&opts);
	static const char d[] = "{\"type\":\"response.output_text.delta\",\"item_id\":\"m1\","
	    "\"delta\":\"0123456789\"}";
	static const char done[] = "{\"type\":\"response.completed\",\"response\":{}}";
	struct json_object *r;
	int status;

	ck_assert_int_eq(chat_stream_event(cs, "response.output_text.delta", d, sizeof(d) - 1,
	    NULL, NULL), 0);
	ck_assert_int_eq(chat_stream_event(cs, "response.completed", done, sizeof(done) - 1,
	    NULL, NULL), 0);
	r = chat_stream_result(cs, &status);
	ck_assert_int_eq(status, 502);
	ck_assert_str_eq(json_get_str(json_get_obj(r, "error"), "code"), "response_too_large");
	json_object_put(r);
	ck_assert_int_eq(anthropic_stream_event(as, "response.output_text.delta", d,
	    sizeof(d) - 1, NULL, NULL), 0);
	ck_assert_int_eq(anthropic_stream_event(as, "response.completed", done,
	    sizeof(done) - 1, NULL, NULL), 0);
	r = anthropic_stream_result(as, &status);
	ck_assert_int_eq(status, 502);
	ck_assert_str_eq(json_get_str(json_get_obj(r, "error"), "type"), "api_error");
	json_object_put(r);
	chat_stream_free(cs);
	anthropic_stream_free(as);
}
END_TEST

/* Events of odd shapes: no crash, no leak, a result at the end. */
START_TEST(test_xlate__odd_events)
{
	static const char *const events[] = {
		"{\"type\":\"response.output_text.delta\",\"delta\":5}",
		"{\"type\":\"response.output_text.delta\"}",
		"{\"type\":\"response.output_item.added\",\"item\":\"x\"}",
		"{\"type\":\"response.output_item.added\",\"item\":{\"type\":\"function_call\"}}",
		"{\"type\":\"response.function_call_arguments.delta\",\"item_id\":7,\"delta\":\"x\"}",
		"{\"type\":\"response.function_call_arguments.done\",\"arguments\":null}",
		"{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"function_call\",\"arguments\":3}}",
		"{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"message\",\"content\":\"no\"}}",
		"{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"message\",\"content\":[1,{\"type\":\"output_text\"}]}}",
		"{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"reasoning\",\"summary\":{\"a\":1},\"encrypted_content\":5}}",
		"{\"type\":\"response.output_item.done\"}",
		"{\"type\":\"response.reasoning_summary_text.delta\",\"delta\":\"r\",\"summary_index\":\"x\"}",
		"[1,2]",
		"\"text\"",
		"{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":\"many\",\"input_tokens_details\":5}}}",
	};
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x" };
	int mode, status;
	size_t i;

	for (mode = 0; mode < 4; mode++) {
		const struct stream_ops *ops = mode & 1 ? &anthropic_ops : &chat_ops;
		struct collect c = { json_object_new_array(), ops->anthropic, -1, 0 };
		bool stream = mode & 2;
		void *st = ops->new(&opts);
		struct json_object *r;

		for (i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
			char t[64] = "";
			struct json_object *o = parse(events[i]);
			if (json_get_str(o, "type") != NULL)
				snprintf(t, sizeof(t), "%s", json_get_str(o, "type"));
			json_object_put(o);
			ops->event(st, t, events[i], strlen(events[i]), stream ? collect : NULL, &c);
		}
		ck_assert_int_eq(ops->end(st, NULL, stream ? collect : NULL, &c), 0);
		r = ops->result(st, &status);
		ck_assert_int_eq(status, 200);
		ck_assert_ptr_nonnull(r);
		json_object_put(r);
		ops->free(st);
		json_object_put(c.out);
	}
}
END_TEST

/* Error frames without the usual fields still give a sane error. */
START_TEST(test_xlate__odd_errors)
{
	static const struct { const char *frame; int status; const char *code; } t[] = {
		{ "{\"type\":\"error\"}", 502, "upstream_error" },
		{ "{\"type\":\"error\",\"error\":\"str\",\"status\":\"x\"}", 502, "upstream_error" },
		{ "{\"type\":\"error\",\"code\":\"context_length_exceeded\",\"message\":\"too long\"}", 400, "context_length_exceeded" },
		{ "{\"type\":\"error\",\"status\":200,\"error\":{\"code\":\"rate_limit_exceeded\"}}", 429, "rate_limit_exceeded" },
		{ "{\"type\":\"response.failed\",\"response\":{}}", 502, "upstream_error" },
		{ "{\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"invalid_prompt\",\"message\":\"no\"}}}", 502, "invalid_prompt" },
		{ "{\"type\":\"error\",\"error\":{\"code\":\"token_expired\"}}", 401, "token_expired" },
		{ "{\"type\":\"error\",\"error\":{\"type\":\"account_banned\"}}", 403, "account_banned" },
		{ "{\"type\":\"error\",\"error\":{\"code\":\"quota_exhausted\"}}", 402, "quota_exhausted" },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct xlate_upstream_error ue;
		struct json_object *o = parse(t[i].frame);

		xlate_upstream_error_from(&ue, o);
		ck_assert_msg(ue.status == t[i].status, "case %zu: status %d", i, ue.status);
		ck_assert_str_eq(ue.code, t[i].code);
		ck_assert(ue.message[0] != '\0');
		json_object_put(o);
	}
}
END_TEST

/* More tool calls than XLATE_MAX_TOOL_CALLS end the turn with an error. */
START_TEST(test_chat__tool_call_limit)
{
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x" };
	struct chat_stream *st = chat_stream_new(&opts);
	struct json_object *r;
	char frame[256];
	int i, status;

	for (i = 0; i <= XLATE_MAX_TOOL_CALLS; i++) {
		int n = snprintf(frame, sizeof(frame), "{\"type\":\"response.output_item.added\","
		    "\"item\":{\"type\":\"function_call\",\"id\":\"fc_%d\",\"call_id\":\"c%d\","
		    "\"name\":\"f\"}}", i, i);
		ck_assert_int_eq(chat_stream_event(st, "response.output_item.added", frame,
		    (size_t)n, NULL, NULL), 0);
	}
	r = chat_stream_result(st, &status);
	ck_assert_int_eq(status, 502);
	ck_assert_str_eq(json_get_str(json_get_obj(r, "error"), "code"), "too_many_tool_calls");
	json_object_put(r);
	chat_stream_free(st);
}
END_TEST

/* Reasoning items can be dropped from a translated body (account moves). */
START_TEST(test_anthropic__drop_reasoning)
{
	struct json_object *fx = load(path_of("anthropic-req-thinking.json")), *body;
	struct xlate_error err;
	struct jdoc d;
	const char *text;
	size_t len;
	int input, i, before;

	body = anthropic_request_to_responses(json_get_obj(fx, "request"), &err);
	ck_assert_ptr_nonnull(body);
	text = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &len);
	ck_assert_int_eq(jdoc_parse(&d, text, len, NULL, 0), 0);
	before = (int)d.tok[jdoc_member(&d, 0, "input")].count;
	ck_assert_uint_eq(upframe_drop_reasoning(&d), 2);
	input = jdoc_member(&d, 0, "input");
	ck_assert_int_eq((int)d.tok[input].count, before - 2);
	for (i = jdoc_first(&d, input); i >= 0; i = jdoc_next(&d, input, i))
		ck_assert(!jdoc_str_eq(&d, jdoc_member(&d, i, "type"), "reasoning"));
	/* the rest of the body is untouched */
	ck_assert(jdoc_str_eq(&d, jdoc_member(&d, 0, "model"),
	    json_get_str(body, "model")));
	ck_assert_uint_eq(upframe_drop_reasoning(&d), 0);
	jdoc_free(&d);
	json_object_put(body);
	json_object_put(fx);
}
END_TEST

/* Nothing reaches the client before the first content: an early upstream
 * error can still become a plain HTTP error. */
static void
started_after(const char *file, bool want)
{
	struct json_object *fx = load(path_of(file));
	struct json_object *events = json_get_array(fx, "events");
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x" };
	struct collect cc = { json_object_new_array(), false, -1, 0 };
	struct collect ca = { json_object_new_array(), true, -1, 0 };
	struct chat_stream *cs = chat_stream_new(&opts);
	struct anthropic_stream *as = anthropic_stream_new(&opts);
	size_t i;

	for (i = 0; i < json_object_array_length(events); i++) {
		struct json_object *ev = json_object_array_get_idx(events, i);
		size_t len;
		const char *text = json_plain(ev, &len), *type = json_get_str(ev, "type");
		ck_assert_int_eq(chat_stream_event(cs, type, text, len, collect, &cc), 0);
		ck_assert_int_eq(anthropic_stream_event(as, type, text, len, collect, &ca), 0);
	}
	ck_assert_msg(chat_stream_started(cs) == want, "%s: chat started", file);
	ck_assert_msg(anthropic_stream_started(as) == want, "%s: anthropic started", file);
	ck_assert_int_eq(json_object_array_length(cc.out) > 0, want);
	ck_assert_int_eq(json_object_array_length(ca.out) > 0, want);
	chat_stream_free(cs);
	anthropic_stream_free(as);
	json_object_put(cc.out);
	json_object_put(ca.out);
	json_object_put(fx);
}

START_TEST(test_xlate__nothing_before_content)
{
	started_after("chat-ev-error-overloaded.json", false);
	started_after("chat-ev-error-usage-limit.json", false);
	started_after("chat-ev-text.json", true);
	started_after("chat-ev-tool-no-deltas.json", true);
}
END_TEST

START_TEST(test_anthropic__ping)
{
	struct collect c = { json_object_new_array(), true, -1, 0 };

	ck_assert_int_eq(anthropic_ping(collect, &c), 0);
	ck_assert_str_eq(json_plain(c.out, NULL), "[[\"ping\",{\"type\":\"ping\"}]]");
	json_object_put(c.out);
}
END_TEST

/* ---- small functions ---- */

static struct json_object *
parse(const char *s)
{
	char perr[64];
	struct json_object *o = json_parse_buf(s, strlen(s), perr, sizeof(perr));

	ck_assert_msg(o != NULL, "bad test JSON: %s", perr);
	return o;
}

START_TEST(test_chat__include_usage)
{
	struct json_object *a = parse("{\"stream_options\":{\"include_usage\":true}}");
	struct json_object *b = parse("{\"stream\":true}");

	ck_assert(chat_include_usage(a));
	ck_assert(!chat_include_usage(b));
	json_object_put(a);
	json_object_put(b);
}
END_TEST

START_TEST(test_chat__ignored_fields_listed)
{
	static const char *const must[] = { "max_tokens", "max_completion_tokens",
	    "temperature", "top_p", NULL };
	size_t i, j;

	for (i = 0; must[i] != NULL; i++) {
		for (j = 0; chat_ignored_fields[j] != NULL; j++)
			if (strcmp(chat_ignored_fields[j], must[i]) == 0)
				break;
		ck_assert_msg(chat_ignored_fields[j] != NULL, "%s not listed", must[i]);
	}
	for (j = 0; anthropic_ignored_fields[j] != NULL; j++)
		;
	ck_assert_int_gt(j, 3);
}
END_TEST

START_TEST(test_chat__error_bodies)
{
	static const struct { int status; const char *type; } t[] = {
		{ 400, "invalid_request_error" }, { 401, "authentication_error" },
		{ 403, "permission_error" }, { 404, "invalid_request_error" },
		{ 429, "rate_limit_error" }, { 500, "server_error" }, { 502, "server_error" },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char *s = chat_error_body(t[i].status, "some_code", "it \"broke\"");
		struct json_object *o = parse(s), *e = json_get_obj(o, "error");
		ck_assert_str_eq(json_get_str(e, "type"), t[i].type);
		ck_assert_str_eq(json_get_str(e, "code"), "some_code");
		ck_assert_str_eq(json_get_str(e, "message"), "it \"broke\"");
		ck_assert(json_object_object_get_ex(e, "param", NULL));
		json_object_put(o);
		free(s);
	}
}
END_TEST

START_TEST(test_anthropic__error_bodies)
{
	static const struct { int status; const char *type; } t[] = {
		{ 400, "invalid_request_error" }, { 401, "authentication_error" },
		{ 403, "permission_error" }, { 404, "not_found_error" },
		{ 413, "request_too_large" }, { 429, "rate_limit_error" },
		{ 500, "api_error" }, { 502, "api_error" }, { 503, "overloaded_error" },
		{ 529, "overloaded_error" },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char *s = anthropic_error_body(t[i].status, "no");
		struct json_object *o = parse(s);
		ck_assert_str_eq(json_get_str(o, "type"), "error");
		ck_assert_str_eq(json_get_str(json_get_obj(o, "error"), "type"), t[i].type);
		ck_assert_str_eq(json_get_str(json_get_obj(o, "error"), "message"), "no");
		json_object_put(o);
		free(s);
	}
}
END_TEST

START_TEST(test_anthropic__session_of)
{
	static const struct { const char *body; const char *want; } t[] = {
		{ "{\"metadata\":{\"user_id\":\"user_abc123_account__session_0b1c-22\"}}", "0b1c-22" },
		{ "{\"metadata\":{\"user_id\":\"user_abc_account_f00_session_s-1\"}}", "s-1" },
		{ "{\"metadata\":{\"user_id\":\"{\\\"device_id\\\":\\\"d\\\",\\\"session_id\\\":\\\"s-2\\\"}\"}}", "s-2" },
		{ "{\"metadata\":{\"user_id\":\"plain-user\"}}", NULL },
		{ "{\"metadata\":{\"user_id\":\"user_x_session_\"}}", NULL },
		{ "{\"metadata\":{}}", NULL },
		{ "{}", NULL },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct json_object *o = parse(t[i].body);
		char *s = anthropic_session_of(o);
		if (t[i].want == NULL)
			ck_assert_msg(s == NULL, "case %zu: got %s", i, s);
		else
			ck_assert_str_eq(s, t[i].want);
		free(s);
		json_object_put(o);
	}
}
END_TEST

/* thinking.budget_tokens -> effort at and around each threshold. */
START_TEST(test_anthropic__thinking_budgets)
{
	static const struct { int budget; const char *effort; } t[] = {
		{ 1024, "low" }, { 1999, "low" }, { 2000, "medium" }, { 4000, "medium" },
		{ 7999, "medium" }, { 8000, "high" }, { 10000, "high" }, { 19999, "high" },
		{ 20000, "xhigh" }, { 31999, "xhigh" },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char body[256];
		struct json_object *req, *out;
		struct xlate_error err;

		snprintf(body, sizeof(body), "{\"model\":\"m\",\"max_tokens\":64000,"
		    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
		    "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":%d}}", t[i].budget);
		req = parse(body);
		out = anthropic_request_to_responses(req, &err);
		ck_assert_ptr_nonnull(out);
		ck_assert_str_eq(json_get_str(json_get_obj(out, "reasoning"), "effort"), t[i].effort);
		json_object_put(out);
		json_object_put(req);
	}
}
END_TEST

/*
 * count_tokens: ceil(bytes of instructions + input JSON + tools JSON / 4).
 * instructions "abcd" = 4 bytes; the input is
 * [{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}]
 * = 80 bytes; 84 / 4 = 21.
 */
/* Upstream token counts near INT64_MAX: no overflow in the totals of
 * either route's usage (found by fuzz_chat_stream). */
START_TEST(test_xlate__huge_token_counts)
{
	static const char done[] = "{\"type\":\"response.completed\",\"response\":{\"id\":\"r\","
	    "\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":9223372036854775807,"
	    "\"output_tokens\":9223372036854775807,\"input_tokens_details\":{\"cached_tokens\":-5},"
	    "\"output_tokens_details\":{\"reasoning_tokens\":9223372036854775807}}}}";
	struct xlate_stream_opts opts = { .client_model = "m", .id_seed = "x", .include_usage = true };
	struct chat_stream *cs = chat_stream_new(&opts);
	struct anthropic_stream *as = anthropic_stream_new(&opts);
	struct json_object *o;
	int status = 0;

	chat_stream_event(cs, "response.completed", done, sizeof(done) - 1, NULL, NULL);
	chat_stream_end(cs, NULL, NULL, NULL);
	o = chat_stream_result(cs, &status);
	ck_assert_int_eq(status, 200);
	ck_assert(json_object_get_int64(json_object_object_get(json_object_object_get(o, "usage"),
	    "total_tokens")) == ((int64_t)1 << 54));
	json_object_put(o);
	anthropic_stream_event(as, "response.completed", done, sizeof(done) - 1, NULL, NULL);
	anthropic_stream_end(as, NULL, NULL, NULL);
	o = anthropic_stream_result(as, &status);
	ck_assert_int_eq(status, 200);
	ck_assert(json_object_get_int64(json_object_object_get(json_object_object_get(o, "usage"),
	    "cache_read_input_tokens")) == 0);
	json_object_put(o);
	chat_stream_free(cs);
	anthropic_stream_free(as);
}
END_TEST

START_TEST(test_anthropic__count_tokens)
{
	struct json_object *req = parse("{\"model\":\"claude-x\",\"system\":\"abcd\","
	    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
	struct json_object *bad = parse("{\"model\":\"claude-x\",\"messages\":[]}");
	struct json_object *out;
	struct xlate_error err;

	out = anthropic_count_tokens(req, &err);
	ck_assert_ptr_nonnull(out);
	ck_assert_str_eq(json_plain(out, NULL), "{\"input_tokens\":21}");
	json_object_put(out);
	ck_assert_ptr_null(anthropic_count_tokens(bad, &err));
	ck_assert_int_eq(err.status, 400);
	json_object_put(req);
	json_object_put(bad);
}
END_TEST

/* ---- model map ---- */

#define DEFAULT_MAP	"claude-*opus*=gpt-5.4, *sonnet*=gpt-5.4, *haiku*=gpt-5.4-mini, *=gpt-5.4"

START_TEST(test_modelmap__lookup)
{
	char err[128];
	struct modelmap *mm = modelmap_parse(DEFAULT_MAP, err, sizeof(err));

	ck_assert_msg(mm != NULL, "%s", err);
	ck_assert_uint_eq(modelmap_count(mm), 4);
	ck_assert_str_eq(modelmap_lookup(mm, "claude-opus-4-1-20250805"), "gpt-5.4");
	ck_assert_str_eq(modelmap_lookup(mm, "claude-3-5-haiku-20241022"), "gpt-5.4-mini");
	ck_assert_str_eq(modelmap_lookup(mm, "Claude-Haiku-4-5"), "gpt-5.4-mini");
	ck_assert_str_eq(modelmap_lookup(mm, "claude-sonnet-4-5"), "gpt-5.4");
	ck_assert_str_eq(modelmap_lookup(mm, "gpt-4o"), "gpt-5.4");
	/* known models pass unchanged; others go through the map */
	ck_assert_str_eq(modelmap_resolve(mm, "gpt-5.4,gpt-5.4-mini", "gpt-5.4-mini"), "gpt-5.4-mini");
	ck_assert_str_eq(modelmap_resolve(mm, "gpt-5.4, gpt-5.4-mini", "gpt-5.4-mini"), "gpt-5.4-mini");
	ck_assert_str_eq(modelmap_resolve(mm, "gpt-5.4,gpt-5.4-mini", "gpt-5.4-min"), "gpt-5.4");
	ck_assert_str_eq(modelmap_resolve(mm, NULL, "claude-haiku"), "gpt-5.4-mini");
	modelmap_free(mm);

	/* first match wins; no match = NULL, resolve keeps the client's name */
	mm = modelmap_parse("a*=one,ab*=two,[xy]z?=three", err, sizeof(err));
	ck_assert_msg(mm != NULL, "%s", err);
	ck_assert_str_eq(modelmap_lookup(mm, "abc"), "one");
	ck_assert_str_eq(modelmap_lookup(mm, "yz1"), "three");
	ck_assert_ptr_null(modelmap_lookup(mm, "zz1"));
	ck_assert_str_eq(modelmap_resolve(mm, "", "zz1"), "zz1");
	modelmap_free(mm);

	mm = modelmap_parse("   ", err, sizeof(err));
	ck_assert_ptr_nonnull(mm);
	ck_assert_uint_eq(modelmap_count(mm), 0);
	ck_assert_ptr_null(modelmap_lookup(mm, "x"));
	modelmap_free(mm);
}
END_TEST

START_TEST(test_modelmap__errors)
{
	static const struct { const char *spec; const char *err; } t[] = {
		{ "gpt", "position 1: 'gpt' has no '=MODEL'" },
		{ "a=b,,c=d", "position 5: empty rule" },
		{ "a=b,", "position 5: empty rule" },
		{ "=x", "position 1: empty pattern before '='" },
		{ "a=", "position 3: empty model after '='" },
		{ "a= ", "position 4: empty model after '='" },
		{ "a=b c", "position 4: ' ' is not allowed in a model name" },
		{ "a=b=c", "position 4: '=' is not allowed in a model name" },
		{ "a=gpt*", "position 6: '*' is not allowed in a model name" },
		{ " [ab=x", "position 2: unclosed '[' in the pattern" },
		{ "a b=x", "position 2: space inside the pattern" },
	};
	char err[128], big[2048];
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(modelmap_parse(t[i].spec, err, sizeof(err)) == NULL,
		    "'%s' parsed", t[i].spec);
		ck_assert_str_eq(err, t[i].err);
	}
	big[0] = '\0';
	for (i = 0; i < MODELMAP_MAX_RULES + 1; i++)
		strcat(big, i ? ",m*=x" : "m*=x");
	ck_assert_ptr_null(modelmap_parse(big, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "more than 64 rules"));
	memset(big, 'a', MODELMAP_MAX_NAME + 1);
	strcpy(big + MODELMAP_MAX_NAME + 1, "=x");
	ck_assert_ptr_null(modelmap_parse(big, err, sizeof(err)));
	ck_assert_str_eq(err, "position 1: pattern longer than 128 bytes");
}
END_TEST

static Suite *
xlate_suite(void)
{
	Suite *s = suite_create("xlate");
	TCase *tc;

	tc = tcase_create("chat");
	tcase_add_test(tc, test_chat__requests);
	tcase_add_test(tc, test_chat__bad_requests);
	tcase_add_test(tc, test_chat__event_streams);
	tcase_add_test(tc, test_chat__include_usage);
	tcase_add_test(tc, test_chat__ignored_fields_listed);
	tcase_add_test(tc, test_chat__error_bodies);
	tcase_add_test(tc, test_chat__tool_call_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("anthropic");
	tcase_add_test(tc, test_anthropic__requests);
	tcase_add_test(tc, test_anthropic__bad_requests);
	tcase_add_test(tc, test_anthropic__event_streams);
	tcase_add_test(tc, test_anthropic__ping);
	tcase_add_test(tc, test_anthropic__error_bodies);
	tcase_add_test(tc, test_anthropic__session_of);
	tcase_add_test(tc, test_anthropic__thinking_budgets);
	tcase_add_test(tc, test_anthropic__count_tokens);
	tcase_add_test(tc, test_xlate__huge_token_counts);
	tcase_add_test(tc, test_anthropic__drop_reasoning);
	suite_add_tcase(s, tc);

	tc = tcase_create("common");
	tcase_add_test(tc, test_xlate__emit_failure_stops);
	tcase_add_test(tc, test_xlate__bad_frame);
	tcase_add_test(tc, test_xlate__aggregate_limit);
	tcase_add_test(tc, test_xlate__odd_events);
	tcase_add_test(tc, test_xlate__nothing_before_content);
	tcase_add_test(tc, test_xlate__odd_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("modelmap");
	tcase_add_test(tc, test_modelmap__lookup);
	tcase_add_test(tc, test_modelmap__errors);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(xlate_suite());
	int failed;

	setvbuf(stdout, NULL, _IONBF, 0);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
