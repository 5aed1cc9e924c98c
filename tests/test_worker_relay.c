/* worker/relay.c: how each upstream frame is treated (no network). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "jscan.h"
#include "relay.h"
#include "test_worker_suites.h"

static void
classify(const char *frame, struct frame_info *fi)
{
	relay_classify(frame, strlen(frame), fi);
}

START_TEST(test_relay__rate_limits_and_early)
{
	struct frame_info fi;

	classify("{\"type\":\"codex.rate_limits\",\"rate_limits\":{}}", &fi);
	ck_assert_int_eq(fi.cls, FC_RATE_LIMITS);
	ck_assert(!fi.terminal);
	classify("{\"type\":\"response.created\",\"response\":{\"id\":\"r1\"}}", &fi);
	ck_assert_int_eq(fi.cls, FC_EARLY);
	ck_assert_str_eq(fi.response_id, "r1");
	classify("{\"type\":\"response.in_progress\"}", &fi);
	ck_assert_int_eq(fi.cls, FC_EARLY);
	classify("{\"type\":\"response.metadata\"}", &fi);
	ck_assert_int_eq(fi.cls, FC_EARLY);
	classify("{\"type\":\"codex.response.metadata\"}", &fi);
	ck_assert_int_eq(fi.cls, FC_EARLY);
	classify("{\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	ck_assert(!fi.terminal);
}
END_TEST

/* The unparsed fast path agrees with the parse on every kind of frame. */
START_TEST(test_relay__fast_path_agrees)
{
	struct frame_info fi;

	/* an escaped type is parsed: "\u0065rror" is "error" */
	classify("{\"type\":\"\\u0065rror\",\"status\":503,\"error\":"
	    "{\"code\":\"server_is_overloaded\"}}", &fi);
	ck_assert_int_eq(fi.cls, FC_ERROR);
	ck_assert_int_eq(fi.http_status, 503);
	/* terminal and early types are never skipped */
	classify("{\"type\":\"response.completed\",\"response\":{\"id\":\"r9\"}}", &fi);
	ck_assert(fi.terminal && fi.completed);
	ck_assert_str_eq(fi.response_id, "r9");
	classify("{\"type\":\"response.incomplete\"}", &fi);
	ck_assert(fi.terminal);
	classify("{\"type\":\"codex.rate_limits\"}", &fi);
	ck_assert_int_eq(fi.cls, FC_RATE_LIMITS);
	/* type not first: parsed, same answer */
	classify("{\"delta\":\"x\",\"type\":\"response.completed\","
	    "\"response\":{\"id\":\"r8\"}}", &fi);
	ck_assert(fi.completed);
	/* a delta, skipped: output, not terminal */
	classify("{\"type\":\"response.output_text.delta\",\"delta\":\"\\\"\"}", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	ck_assert(!fi.terminal);
}
END_TEST

/* relay_classify() (json_lead_type, the scanner) and a whole json-c parse
 * give the same answer, field by field. */
static void
agree(const char *frame, size_t len, const char *what)
{
	struct frame_info a, b;

	relay_classify(frame, len, &a);
	relay_classify_parsed(frame, len, &b);
	ck_assert_msg(a.cls == b.cls && a.terminal == b.terminal &&
	    a.completed == b.completed && a.http_status == b.http_status &&
	    strcmp(a.code, b.code) == 0 &&
	    strcmp(a.response_id, b.response_id) == 0 &&
	    a.input_tokens == b.input_tokens &&
	    a.cached_tokens == b.cached_tokens &&
	    a.output_tokens == b.output_tokens,
	    "%s: fast cls %d term %d id '%s' tokens %llu/%llu/%llu; parsed cls "
	    "%d term %d id '%s' tokens %llu/%llu/%llu", what, a.cls, a.terminal,
	    a.response_id, (unsigned long long)a.input_tokens,
	    (unsigned long long)a.cached_tokens,
	    (unsigned long long)a.output_tokens, b.cls, b.terminal,
	    b.response_id, (unsigned long long)b.input_tokens,
	    (unsigned long long)b.cached_tokens,
	    (unsigned long long)b.output_tokens);
}

/* A response.completed as the backend sends it: the request echoed, a
 * long instructions text with escapes and UTF-8, then the usage. */
static char *
big_completed(const char *usage)
{
	size_t cap = 40000, n = 0, i;
	char *b = malloc(cap);

	n += (size_t)snprintf(b + n, cap - n, "{\"type\":\"response.completed\","
	    "\"sequence_number\":17,\"response\":{\"id\":\"resp_big\",\"object\":"
	    "\"response\",\"created_at\":1764460000,\"temperature\":1.0,"
	    "\"top_p\":1e0,\"instructions\":\"");
	for (i = 0; i < 600; i++)
		n += (size_t)snprintf(b + n, cap - n, "You are Codex \\\"%zu\\\"."
		    "\\n\\tcaf\xc3\xa9 \\u00e9 \\/ \\\\ ", i);
	n += (size_t)snprintf(b + n, cap - n, "\",\"tools\":[{\"type\":"
	    "\"function\",\"usage\":{\"input_tokens\":1}}],\"output\":[],"
	    "\"metadata\":{},\"parallel_tool_calls\":true,\"store\":false,"
	    "\"reasoning\":null,\"usage\":%s}}", usage);
	ck_assert_uint_lt(n, cap);
	return b;
}

START_TEST(test_relay__picked_agrees_with_parse)
{
	static const char *const frames[] = {
		"{\"type\":\"response.created\",\"response\":{\"id\":\"r1\","
		"\"instructions\":\"x\\ny\",\"usage\":null}}",
		"{\"type\":\"response.in_progress\",\"response\":{\"id\":\"r1\"}}",
		"{\"type\":\"codex.rate_limits\",\"rate_limits\":{\"primary\":"
		"{\"used_percent\":12.5}}}",
		"{\"type\":\"response.incomplete\",\"response\":{\"id\":\"r2\","
		"\"usage\":{\"input_tokens\":7,\"output_tokens\":3}}}",
		/* whitespace everywhere RFC 8259 allows it */
		" {\"type\":\"response.completed\" ,\r\n\"response\" :\t{ \"id\" "
		": \"r3\" , \"usage\" : { \"input_tokens\" : 10 , "
		"\"input_tokens_details\" : { \"cached_tokens\" : 8 } , "
		"\"output_tokens\" : 2 } } } \n",
		/* duplicate keys: json-c keeps the last */
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"a\"},"
		"\"response\":{\"usage\":{\"output_tokens\":4}}}",
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"a\","
		"\"id\":\"b\"}}",
		"{\"type\":\"response.completed\",\"type\":\"response.created\"}",
		"{\"type\":\"response.completed\",\"response\":{\"usage\":{"
		"\"output_tokens\":1,\"output_tokens\":2}}}",
		/* escapes where they matter, in the id or a key */
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"r\\u0031\"}}",
		"{\"type\":\"response.completed\",\"respons\\u0065\":{\"id\":\"x\"}}",
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"\\ud83d"
		"\\ude00\"}}",
		/* the id elsewhere, or not a string */
		"{\"type\":\"response.completed\",\"response\":{\"id\":5},"
		"\"response_id\":\"r5\"}",
		"{\"type\":\"response.completed\",\"response_id\":\"r6\"}",
		"{\"type\":\"response.completed\",\"response\":\"r7\"}",
		"{\"type\":\"response.completed\",\"response\":[{\"id\":\"r8\"}]}",
		"{\"type\":\"response.completed\",\"response\":{\"id\":\""
		"0123456789012345678901234567890123456789012345678901234567890123"
		"0123456789012345678901234567890123456789012345678901234567890123"
		"\"}}",
		/* numbers json-c reads as not an integer, or as one */
		"{\"type\":\"response.completed\",\"response\":{\"usage\":{"
		"\"input_tokens\":5.0,\"output_tokens\":-3,"
		"\"input_tokens_details\":{\"cached_tokens\":1e3}}}}",
		"{\"type\":\"response.completed\",\"response\":{\"usage\":{"
		"\"input_tokens\":123456789012345678,\"output_tokens\":"
		"1234567890123456789,\"input_tokens_details\":{\"cached_tokens\":"
		"99999999999999999999}}}}",
		"{\"type\":\"response.completed\",\"response\":{\"usage\":{"
		"\"input_tokens\":\"5\",\"output_tokens\":null,"
		"\"input_tokens_details\":[1]}}}",
		"{\"type\":\"response.completed\",\"response\":{\"usage\":{"
		"\"input_tokens\":-0,\"output_tokens\":0}},\"x\":1E+99,"
		"\"y\":-0.5e-7,\"z\":1e400}",
		/* not JSON (json-c says so too): every one is FC_OTHER */
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"r\"}} x",
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"r\"},}",
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"r}}",
		"{\"type\":\"response.completed\",\"response\":{\"id\":\"r\t\"}}",
		"{\"type\":\"response.completed\",\"n\":01}",
		"{\"type\":\"response.completed\",\"n\":tru}",
		"{\"type\":\"response.completed\",\"n\":[1,]}",
		"{\"type\":\"response.completed\",\"n\":\"\\x\"}",
		"{\"type\":\"response.completed\",\"n\":.5}",
		"{\"type\":\"response.completed\",\"n\":'a'}",
		"{\"type\":\"response.completed\"",
		"{\"type\":\"response.completed\",}",
		"{\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}"
		"{\"type\":\"response.created\"}",
	};
	char deep[400], *big;
	size_t i, n;

	for (i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
		char what[32];

		snprintf(what, sizeof(what), "frame %zu", i);
		agree(frames[i], strlen(frames[i]), what);
	}
	/* nesting past the scanner's depth, and past json-c's */
	for (n = 40; n <= 80; n += 40) {
		size_t k = 0;

		k += (size_t)snprintf(deep, sizeof(deep),
		    "{\"type\":\"response.completed\",\"response\":{\"id\":\"d\"},"
		    "\"n\":");
		for (i = 0; i < n; i++)
			deep[k++] = '[';
		for (i = 0; i < n; i++)
			deep[k++] = ']';
		deep[k++] = '}';
		agree(deep, k, n == 40 ? "deep 40" : "deep 80");
	}
	/* a NUL inside a string */
	agree("{\"type\":\"response.created\",\"n\":\"a\0b\"}",
	    sizeof("{\"type\":\"response.created\",\"n\":\"a\0b\"}") - 1, "nul");

	big = big_completed("{\"input_tokens\":7000,\"input_tokens_details\":"
	    "{\"cached_tokens\":6912},\"output_tokens\":12}");
	agree(big, strlen(big), "big completed");
	free(big);
}
END_TEST

/* The shortcut is taken on what the backend sends, not just agreed with
 * from a fallback: the scanner reads the big frame itself. */
START_TEST(test_relay__picked_reads_big_frames)
{
	char *big = big_completed("{\"input_tokens\":7000,"
	    "\"input_tokens_details\":{\"cached_tokens\":6912},"
	    "\"output_tokens\":12}");
	struct frame_info fi;
	struct jdoc d;
	size_t len;
	const char *v;

	ck_assert_int_eq(jdoc_scan(&d, big, strlen(big), NULL, 0), 0);
	ck_assert(jdoc_str_eq(&d, jdoc_path(&d, 0, "response.id"), "resp_big"));
	v = jdoc_raw(&d, jdoc_path(&d, 0, "response.usage.input_tokens_details.cached_tokens"), &len);
	ck_assert(len == 4 && memcmp(v, "6912", 4) == 0);
	ck_assert_int_eq(jdoc_path(&d, 0, "response.usage.nothing"), -1);
	ck_assert_int_eq(jdoc_path(&d, 0, "type.deeper"), -1);
	jdoc_free(&d);
	relay_classify(big, strlen(big), &fi);
	ck_assert(fi.terminal && fi.completed);
	ck_assert_str_eq(fi.response_id, "resp_big");
	ck_assert_uint_eq(fi.input_tokens, 7000);
	ck_assert_uint_eq(fi.cached_tokens, 6912);
	ck_assert_uint_eq(fi.output_tokens, 12);
	/* and refuses what is not strict JSON, leaving it to json-c */
	ck_assert_int_eq(jdoc_scan(&d, "{\"a\":1} x", 9, NULL, 0), -1);
	ck_assert_int_eq(jdoc_scan(&d, "{\"a\":NaN}", 9, NULL, 0), -1);
	free(big);
}
END_TEST

START_TEST(test_relay__error_table)
{
	static const struct {
		const char *code;
		int status;
	} rows[] = {
		{ "usage_limit_reached", 429 }, { "rate_limit_exceeded", 429 },
		{ "rate_limit_reached", 429 }, { "quota_exhausted", 402 },
		{ "payment_required", 402 }, { "unauthorized", 401 },
		{ "token_invalid", 401 }, { "token_expired", 401 },
		{ "account_deactivated", 401 }, { "forbidden", 403 },
		{ "account_banned", 403 }, { "banned", 403 },
		{ "previous_response_not_found", 400 },
		{ "server_is_overloaded", 503 }, { "server_error", 500 },
		{ "soft_rate_limit_warning", 0 }, { "model_not_supported_in_plan", 0 },
		{ "usage_limit", 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_int_eq(relay_error_status(rows[i].code), rows[i].status);
	ck_assert_int_eq(relay_error_status(NULL), 0);
}
END_TEST

START_TEST(test_relay__error_frames)
{
	struct frame_info fi;

	classify("{\"type\":\"error\",\"status\":429,\"error\":{\"type\":"
	    "\"usage_limit_reached\",\"message\":\"x\",\"resets_in_seconds\":60}}",
	    &fi);
	ck_assert_int_eq(fi.cls, FC_ERROR);
	ck_assert_int_eq(fi.http_status, 429);
	ck_assert_str_eq(fi.code, "usage_limit_reached");
	ck_assert(fi.terminal);

	/* code wins over type; matching is on the lower-cased code */
	classify("{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	    "\"code\":\"Token_Expired\"}}", &fi);
	ck_assert_int_eq(fi.cls, FC_ERROR);
	ck_assert_int_eq(fi.http_status, 401);
	ck_assert_str_eq(fi.code, "token_expired");

	/* an error nested only in response.error of response.failed */
	classify("{\"type\":\"response.failed\",\"response\":{\"id\":\"r9\","
	    "\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}", &fi);
	ck_assert_int_eq(fi.cls, FC_ERROR);
	ck_assert_int_eq(fi.http_status, 500);
	ck_assert(fi.terminal && !fi.completed);

	/* unknown codes pass through (and are terminal) */
	classify("{\"type\":\"error\",\"error\":{\"code\":"
	    "\"soft_rate_limit_warning\"}}", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	ck_assert(fi.terminal);

	classify("{\"type\":\"error\",\"error\":{\"code\":"
	    "\"websocket_connection_limit_reached\"}}", &fi);
	ck_assert_int_eq(fi.cls, FC_CONN_LIMIT);
	ck_assert_int_eq(fi.http_status, 503);

	/* an "error" member on another frame type is not an error frame */
	classify("{\"type\":\"response.output_item.done\",\"error\":"
	    "{\"code\":\"server_error\"}}", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
}
END_TEST

/* Every upstream failure before the first byte that another attempt may
 * survive is retryable; the account's own failures are account-scoped. */
START_TEST(test_relay__retryable_classification)
{
	static const struct {
		const char	*frame;
		enum frame_class cls;
		int		 status;
		int		 flags;
	} rows[] = {
		{ "{\"type\":\"error\",\"status\":503,\"error\":{\"type\":"
		  "\"service_unavailable_error\",\"code\":\"server_is_overloaded\"}}",
		  FC_ERROR, 503, ERR_F_RETRYABLE },
		{ "{\"type\":\"response.failed\",\"response\":{\"id\":\"r\","
		  "\"error\":{\"code\":\"server_error\"}}}",
		  FC_ERROR, 500, ERR_F_RETRYABLE },
		{ "{\"type\":\"error\",\"status\":500,\"error\":{\"code\":"
		  "\"server_error\"}}", FC_ERROR, 500, ERR_F_RETRYABLE },
		/* a gateway's 502 with a code we do not know */
		{ "{\"type\":\"error\",\"status\":502,\"error\":{\"type\":"
		  "\"bad_gateway\",\"message\":\"upstream connect error\"}}",
		  FC_ERROR, 502, ERR_F_RETRYABLE },
		{ "{\"type\":\"error\",\"status_code\":504}",
		  FC_ERROR, 504, ERR_F_RETRYABLE },
		{ "{\"type\":\"error\",\"error\":{\"code\":"
		  "\"websocket_connection_limit_reached\"}}",
		  FC_CONN_LIMIT, 503, ERR_F_RETRYABLE },
		{ "{\"type\":\"error\",\"status\":429,\"error\":{\"type\":"
		  "\"usage_limit_reached\"}}", FC_ERROR, 429, ERR_F_ACCOUNT },
		{ "{\"type\":\"error\",\"status\":401,\"error\":{\"code\":"
		  "\"token_expired\"}}", FC_ERROR, 401, ERR_F_ACCOUNT },
		{ "{\"type\":\"error\",\"status\":400,\"error\":{\"code\":"
		  "\"previous_response_not_found\"}}", FC_ERROR, 400, 0 },
		/* an unknown 4xx code, or a 5xx status on another frame type:
		 * relayed as it is */
		{ "{\"type\":\"error\",\"status\":400,\"error\":{\"code\":"
		  "\"model_not_supported_in_plan\"}}", FC_OTHER, 0, 0 },
		{ "{\"type\":\"response.output_text.delta\",\"status\":502}",
		  FC_OTHER, 0, 0 },
		{ "{\"type\":\"error\",\"status\":\"502\"}", FC_OTHER, 0, 0 },
	};
	struct frame_info fi;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		classify(rows[i].frame, &fi);
		ck_assert_msg(fi.cls == rows[i].cls && fi.http_status ==
		    rows[i].status, "row %zu: class %d status %d", i, fi.cls,
		    fi.http_status);
		ck_assert_msg(relay_error_flags(fi.http_status) == rows[i].flags,
		    "row %zu: flags %d", i, relay_error_flags(fi.http_status));
	}
}
END_TEST

START_TEST(test_relay__error_flags)
{
	static const struct {
		int status, flags;
	} rows[] = {
		{ 500, ERR_F_RETRYABLE }, { 502, ERR_F_RETRYABLE },
		{ 503, ERR_F_RETRYABLE }, { 504, ERR_F_RETRYABLE },
		{ 599, ERR_F_RETRYABLE }, { 401, ERR_F_ACCOUNT },
		{ 402, ERR_F_ACCOUNT }, { 403, ERR_F_ACCOUNT },
		{ 429, ERR_F_ACCOUNT }, { 400, 0 }, { 404, 0 }, { 409, 0 },
		{ 499, 0 }, { 600, 0 }, { 0, 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(relay_error_flags(rows[i].status) == rows[i].flags,
		    "status %d", rows[i].status);
}
END_TEST

/* codexpoold(8): dead after two and a half ping intervals of silence, at
 * that moment, not at the next ping (which would be three). */
START_TEST(test_upstream__liveness_deadline)
{
	const usec_t ping = 25 * USEC_PER_SEC, t0 = 1000 * USEC_PER_SEC;

	ck_assert_int_eq(upstream_liveness_window(ping), 62500 * USEC_PER_MSEC);
	ck_assert_int_eq(upstream_liveness_window(200 * USEC_PER_MSEC),
	    500 * USEC_PER_MSEC);
	ck_assert_int_eq(upstream_liveness_window(0), 0);
	/* at the pings after the last frame: still alive, and the time
	 * left is exact */
	ck_assert_int_eq(upstream_liveness_left(t0 + ping, t0, ping),
	    37500 * USEC_PER_MSEC);
	ck_assert_int_eq(upstream_liveness_left(t0 + 2 * ping, t0, ping),
	    12500 * USEC_PER_MSEC);
	ck_assert_int_eq(upstream_liveness_left(t0 + 62499 * USEC_PER_MSEC,
	    t0, ping), USEC_PER_MSEC);
	/* 62.5 s of silence: dead, well before the third ping at 75 s */
	ck_assert_int_eq(upstream_liveness_left(t0 + 62500 * USEC_PER_MSEC,
	    t0, ping), 0);
	ck_assert_int_eq(upstream_liveness_left(t0 + 3 * ping, t0, ping), 0);
}
END_TEST

START_TEST(test_relay__completed_usage)
{
	struct frame_info fi;

	classify("{\"type\":\"response.completed\",\"response\":{\"id\":"
	    "\"resp_abc\",\"usage\":{\"input_tokens\":5000,"
	    "\"input_tokens_details\":{\"cached_tokens\":4096},"
	    "\"output_tokens\":42}}}", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	ck_assert(fi.terminal && fi.completed);
	ck_assert_str_eq(fi.response_id, "resp_abc");
	ck_assert_uint_eq(fi.input_tokens, 5000);
	ck_assert_uint_eq(fi.cached_tokens, 4096);
	ck_assert_uint_eq(fi.output_tokens, 42);

	classify("{\"type\":\"response.incomplete\",\"response\":{\"id\":\"r2\"}}",
	    &fi);
	ck_assert(fi.terminal && !fi.completed);
}
END_TEST

START_TEST(test_relay__not_json)
{
	struct frame_info fi;

	classify("not json at all", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	ck_assert(!fi.terminal);
	classify("[1,2,3]", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	classify("{\"no_type\":1}", &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
	relay_classify("", 0, &fi);
	ck_assert_int_eq(fi.cls, FC_OTHER);
}
END_TEST

Suite *
make_suite_relay(void)
{
	Suite *s = suite_create("relay");
	TCase *tc = tcase_create("classify");

	tcase_add_test(tc, test_relay__rate_limits_and_early);
	tcase_add_test(tc, test_relay__error_table);
	tcase_add_test(tc, test_relay__fast_path_agrees);
	tcase_add_test(tc, test_relay__picked_agrees_with_parse);
	tcase_add_test(tc, test_relay__picked_reads_big_frames);
	tcase_add_test(tc, test_relay__error_frames);
	tcase_add_test(tc, test_relay__retryable_classification);
	tcase_add_test(tc, test_relay__error_flags);
	tcase_add_test(tc, test_upstream__liveness_deadline);
	tcase_add_test(tc, test_relay__completed_usage);
	tcase_add_test(tc, test_relay__not_json);
	suite_add_tcase(s, tc);
	return s;
}
