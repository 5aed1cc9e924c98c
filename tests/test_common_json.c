/* jsonutil.c and jwt.c. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "jwt.h"
#include "test_common_suites.h"
#include "util.h"

static struct json_object *
parse(const char *s, char *err, size_t errlen)
{
	return json_parse_buf(s, strlen(s), err, errlen);
}

START_TEST(test_jsonutil__parse_ok)
{
	struct json_object *o;
	char err[128];

	o = parse(" {\"a\":1,\"b\":[true,null],\"c\":{\"d\":\"e\"}}\n\t ", err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	ck_assert_int_eq(json_get_int(o, "a", -1), 1);
	ck_assert_ptr_nonnull(json_get_array(o, "b"));
	ck_assert_str_eq(json_get_str(json_get_obj(o, "c"), "d"), "e");
	json_object_put(o);
	/* A bare number at the very end of the input. */
	o = parse("12", err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	ck_assert_int_eq(json_object_get_int(o), 12);
	json_object_put(o);
	o = parse("\"s\"", err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	json_object_put(o);
	/* Only len bytes are read: the rest of the buffer is not ours. */
	o = json_parse_buf("{}garbage", 2, err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	json_object_put(o);
}
END_TEST

START_TEST(test_jsonutil__parse_errors)
{
	static const char *const bad[] = {
		"{\"a\":1} x", "{\"a\":1}{}", "[1,2", "{\"a\":", "['a']",
		"[1,]", "nul", "", "   ", "{\"a\":1,}", "\"abc",
	};
	char err[128], deep[JSON_MAX_DEPTH * 2 + 8];
	struct json_object *o;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		o = parse(bad[i], err, sizeof(err));
		ck_assert_msg(o == NULL, "'%s' parsed", bad[i]);
		ck_assert_msg(err[0] != '\0', "no error for '%s'", bad[i]);
	}
	o = parse("{\"a\":1} x", err, sizeof(err));
	ck_assert_str_eq(err, "invalid JSON at byte 8: trailing data after the JSON value");
	o = parse("[1,2", err, sizeof(err));
	ck_assert_ptr_nonnull(strstr(err, "truncated"));
	o = parse("{\"a\":", err, sizeof(err));
	ck_assert_ptr_nonnull(strstr(err, "truncated"));
	/* a document that is just null says so (it once said "success") */
	ck_assert_ptr_null(parse("null", err, sizeof(err)));
	ck_assert_str_eq(err, JSON_ERR_NULL);
	ck_assert_ptr_null(parse(" null ", err, sizeof(err)));
	ck_assert_str_eq(err, JSON_ERR_NULL);

	/* Nesting deeper than JSON_MAX_DEPTH. */
	memset(deep, '[', JSON_MAX_DEPTH + 1);
	memset(deep + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
	o = json_parse_buf(deep, 2 * (JSON_MAX_DEPTH + 1), err, sizeof(err));
	ck_assert_ptr_null(o);
	ck_assert_ptr_nonnull(strstr(err, "too deep"));
	o = json_parse_buf(deep + 1, 2 * JSON_MAX_DEPTH, err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	json_object_put(o);
	ck_assert_ptr_null(json_parse_buf(NULL, 0, NULL, 0));
}
END_TEST

START_TEST(test_jsonutil__getters_and_path)
{
	struct json_object *o, *v;
	char err[128];

	o = parse("{\"response\":{\"usage\":{\"input_tokens\":17,\"x\":\"s\"},"
	    "\"ok\":true},\"n\":\"7\"}", err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	v = json_get_path(o, "response.usage.input_tokens");
	ck_assert_ptr_nonnull(v);
	ck_assert_int_eq(json_object_get_int64(v), 17);
	ck_assert_ptr_nonnull(json_get_path(o, "response"));
	ck_assert_ptr_null(json_get_path(o, "response.usage.input_tokens.deeper"));
	ck_assert_ptr_null(json_get_path(o, "response.missing"));
	ck_assert_ptr_null(json_get_path(o, "response..usage"));
	ck_assert_ptr_null(json_get_path(o, ""));
	ck_assert_ptr_null(json_get_path(NULL, "a"));
	ck_assert(json_get_bool(json_get_obj(o, "response"), "ok", false));
	ck_assert(json_get_bool(o, "missing", true));
	/* Wrong types give the default, no coercion. */
	ck_assert_int_eq(json_get_int(o, "n", -5), -5);
	ck_assert_ptr_null(json_get_str(o, "response"));
	ck_assert_ptr_null(json_get_obj(o, "n"));
	ck_assert_ptr_null(json_get_array(o, "response"));
	ck_assert_ptr_null(json_get_str(NULL, "n"));
	json_object_put(o);
}
END_TEST

START_TEST(test_jsonutil__error_body)
{
	struct json_object *o;
	char *s, err[128];
	size_t len;

	s = json_error_body("bad \"input\"\n</script>", "invalid_request_error", NULL);
	ck_assert_str_eq(s, "{\"error\":{\"message\":\"bad \\\"input\\\"\\n</script>\","
	    "\"type\":\"invalid_request_error\",\"code\":null}}");
	o = json_parse_buf(s, strlen(s), err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_object_get_string(json_get_path(o, "error.message")),
	    "bad \"input\"\n</script>");
	ck_assert_str_eq(json_plain(o, &len), s);
	ck_assert_uint_eq(len, strlen(s));
	json_object_put(o);
	free(s);
	s = json_error_body("no accounts", "server_error", "no_account");
	ck_assert_str_eq(s, "{\"error\":{\"message\":\"no accounts\","
	    "\"type\":\"server_error\",\"code\":\"no_account\"}}");
	free(s);
}
END_TEST

static const uint8_t key[] = "test-signing-key";

static char *
mint(const char *payload)
{
	char *t = jwt_mint(payload, key, sizeof(key) - 1);

	ck_assert_ptr_nonnull(t);
	return t;
}

START_TEST(test_jwt__mint_verify)
{
	char *t = mint("{\"exp\":1900000000,\"sub\":\"u1\"}");
	const char *dot;

	ck_assert(strncmp(t, "eyJ", 3) == 0);
	/* Header is {"alg":"HS256","typ":"JWT"}. */
	dot = strchr(t, '.');
	ck_assert_ptr_nonnull(dot);
	ck_assert_int_eq((int)(dot - t), 36);
	ck_assert(strncmp(t, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", 36) == 0);
	ck_assert_int_eq(jwt_verify(t, key, sizeof(key) - 1), 1);
	ck_assert_int_eq(jwt_verify(t, (const uint8_t *)"other", 5), 0);
	free(t);
}
END_TEST

/* HS256 value checked with:
 *   printf %s 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30' |
 *	openssl dgst -sha256 -hmac k -binary | basenc --base64url | tr -d =  */
START_TEST(test_jwt__known_signature)
{
	char *t = jwt_mint("{}", (const uint8_t *)"k", 1);

	ck_assert_str_eq(t, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30."
	    "sdq8hlcnGupCQofW8T3WXS8lMHPKjY78f7plDHoTsoI");
	free(t);
}
END_TEST

START_TEST(test_jwt__tamper)
{
	char *t = mint("{\"exp\":1900000000}"), *u;
	size_t n = strlen(t), i;
	char *dot2 = strrchr(t, '.');

	/* Flip one character in each segment. */
	for (i = 0; i < n; i++) {
		if (t[i] == '.')
			continue;
		u = strdup(t);
		ck_assert_ptr_nonnull(u);
		u[i] = u[i] == 'A' ? 'B' : 'A';
		ck_assert_msg(jwt_verify(u, key, sizeof(key) - 1) == 0,
		    "tampered at %zu still verifies", i);
		free(u);
		if (i > 40 && t + i < dot2 - 2)
			i = (size_t)(dot2 - t) - 2;	/* skip ahead: enough cases */
	}
	/* Truncated signature, missing parts, alg none. */
	u = strdup(t);
	u[n - 1] = '\0';
	ck_assert_int_eq(jwt_verify(u, key, sizeof(key) - 1), 0);
	free(u);
	ck_assert_int_eq(jwt_verify("abc", key, sizeof(key) - 1), 0);
	ck_assert_int_eq(jwt_verify("a.b", key, sizeof(key) - 1), 0);
	ck_assert_int_eq(jwt_verify("a.b.c.d", key, sizeof(key) - 1), 0);
	ck_assert_int_eq(jwt_verify(NULL, key, sizeof(key) - 1), 0);
	ck_assert_int_eq(jwt_verify("eyJhbGciOiJub25lIn0.e30.", key, sizeof(key) - 1), 0);
	free(t);
}
END_TEST

START_TEST(test_json__lead_type)
{
	char t[16];
	const char *f = "{\"type\":\"response.created\",\"x\":1}";

	ck_assert(json_lead_type(f, strlen(f), t, sizeof(t)) == false);	/* too long for t */
	ck_assert(json_lead_type("{\"type\":\"error\"}", 16, t, sizeof(t)));
	ck_assert_str_eq(t, "error");
	ck_assert(!json_lead_type("{\"type\":\"e\\u0072r\"}", 20, t, sizeof(t)));
	ck_assert(!json_lead_type("{ \"type\":\"error\"}", 17, t, sizeof(t)));
	ck_assert(!json_lead_type("{\"type\":\"unterminated", 22, t, sizeof(t)));
	ck_assert(!json_lead_type("", 0, t, sizeof(t)));
}
END_TEST

START_TEST(test_jwt__exp_and_account)
{
	char *t, id[64];

	t = mint("{\"exp\":1764153600,\"" JWT_AUTH_CLAIM "\":"
	    "{\"chatgpt_account_id\":\"acct-1234\",\"chatgpt_plan_type\":\"pro\"}}");
	ck_assert_int_eq(jwt_exp(t), 1764153600);
	ck_assert_int_eq(jwt_account_id(t, id, sizeof(id)), 0);
	ck_assert_str_eq(id, "acct-1234");
	ck_assert_int_eq(jwt_account_id(t, id, 5), -1);	/* does not fit */
	free(t);

	t = mint("{\"sub\":\"x\"}");
	ck_assert_int_eq(jwt_exp(t), -1);
	ck_assert_int_eq(jwt_account_id(t, id, sizeof(id)), -1);
	free(t);
	t = mint("{\"exp\":\"soon\",\"" JWT_AUTH_CLAIM "\":\"flat\"}");
	ck_assert_int_eq(jwt_exp(t), -1);
	ck_assert_int_eq(jwt_account_id(t, id, sizeof(id)), -1);
	free(t);
	t = mint("[1,2]");
	ck_assert_ptr_null(jwt_payload(t));
	free(t);
}
END_TEST

START_TEST(test_jwt__payload_bad_input)
{
	struct json_object *o;

	ck_assert_ptr_null(jwt_payload(NULL));
	ck_assert_ptr_null(jwt_payload(""));
	ck_assert_ptr_null(jwt_payload("not a jwt"));
	ck_assert_ptr_null(jwt_payload("a..c"));
	ck_assert_ptr_null(jwt_payload("a.!!!!.c"));
	ck_assert_ptr_null(jwt_payload("a.bm90IGpzb24.c"));	/* "not json" */
	ck_assert_int_eq(jwt_exp("a.b.c"), -1);
	/* Unsigned tokens are still readable (no signature check here). */
	o = jwt_payload("eyJhbGciOiJub25lIn0.eyJleHAiOjV9.");
	ck_assert_ptr_nonnull(o);
	ck_assert_int_eq(json_get_int(o, "exp", -1), 5);
	json_object_put(o);
}
END_TEST

Suite *
make_suite_jsonutil(void)
{
	Suite *s = suite_create("jsonutil");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_jsonutil__parse_ok);
	tcase_add_test(tc, test_jsonutil__parse_errors);
	tcase_add_test(tc, test_jsonutil__getters_and_path);
	tcase_add_test(tc, test_jsonutil__error_body);
	suite_add_tcase(s, tc);
	return s;
}

Suite *
make_suite_jwt(void)
{
	Suite *s = suite_create("jwt");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_jwt__mint_verify);
	tcase_add_test(tc, test_jwt__known_signature);
	tcase_add_test(tc, test_jwt__tamper);
	tcase_add_test(tc, test_jwt__exp_and_account);
	tcase_add_test(tc, test_json__lead_type);
	tcase_add_test(tc, test_jwt__payload_bad_input);
	suite_add_tcase(s, tc);
	return s;
}
