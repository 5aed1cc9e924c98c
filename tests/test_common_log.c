/* log.c: redaction and line output. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "test_common_suites.h"

#define JWT_SAMPLE \
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2J5dGVz"

static void
check_redact(const char *in, const char *want)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "%s", in);
	log_redact(buf, sizeof(buf));
	ck_assert_msg(strcmp(buf, want) == 0, "redact(%s) = '%s', want '%s'",
	    in, buf, want);
}

START_TEST(test_log__redact_bearer)
{
	check_redact("Authorization: Bearer sk-abc.def_123",
	    "Authorization: Bearer [redacted]");
	check_redact("authorization: bearer abc123, next",
	    "authorization: bearer [redacted], next");
	check_redact("BEARER\tx/y+z== tail", "BEARER\t[redacted] tail");
	/* Words that merely contain "bearer" are left alone. */
	check_redact("flagbearer abc", "flagbearer abc");
	check_redact("Bearer", "Bearer");
}
END_TEST

START_TEST(test_log__redact_jwt)
{
	check_redact("token " JWT_SAMPLE " expired",
	    "token [redacted] expired");
	check_redact("id=" JWT_SAMPLE, "id=[redacted]");
	/* Two segments or no eyJ: not a JWT. */
	check_redact("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0 x",
	    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0 x");
	check_redact("version 1.2.3", "version 1.2.3");
}
END_TEST

START_TEST(test_log__redact_json_tokens)
{
	check_redact("{\"refresh_token\":\"rt_secret\",\"x\":1}",
	    "{\"refresh_token\":\"[redacted]\",\"x\":1}");
	check_redact("{\"access_token\": \"abc\\\"def\", \"id_token\":\"q\"}",
	    "{\"access_token\": \"[redacted]\", \"id_token\":\"[redacted]\"}");
	/* JSON quoted inside a JSON string. */
	check_redact("body=\"{\\\"refresh_token\\\":\\\"rt_1\\\"}\"",
	    "body=\"{\\\"refresh_token\\\":\\\"[redacted]\\\"}\"");
	check_redact("grant_type=refresh_token&refresh_token=rt_2&client_id=c",
	    "grant_type=refresh_token&refresh_token=[redacted]&client_id=c");
	check_redact("access_token=abc def", "access_token=[redacted] def");
	check_redact("{\"refresh_token\":null}", "{\"refresh_token\":null}");
	/* Unterminated value: everything after the quote goes. */
	check_redact("{\"id_token\":\"abcdef", "{\"id_token\":\"[redacted]");
}
END_TEST

START_TEST(test_log__redact_clean_line_unchanged)
{
	const char *s = "worker 2 started, pool key 3fa2:conv-9 (max_age 55m) token_count=12";

	check_redact(s, s);
	check_redact("", "");
}
END_TEST

START_TEST(test_log__redact_tiny_buffer)
{
	char buf[12], one[1], two[2];

	/* Growth ("Bearer x" -> "Bearer [redacted]") is cut at the buffer. */
	snprintf(buf, sizeof(buf), "Bearer abc");
	log_redact(buf, sizeof(buf));
	ck_assert_str_eq(buf, "Bearer [red");
	ck_assert_ptr_null(strstr(buf, "abc"));
	one[0] = '\0';
	log_redact(one, sizeof(one));
	ck_assert_int_eq(one[0], 0);
	two[0] = 'x';
	two[1] = 'y';		/* not terminated: must not read past */
	log_redact(two, sizeof(two));
	ck_assert_int_eq(two[1], 0);
	log_redact(NULL, 0);
	log_redact(buf, 0);
}
END_TEST

START_TEST(test_log__redact_long_line)
{
	char buf[4096];
	size_t i;

	/* Many secrets in a full buffer: output stays terminated in bounds. */
	buf[0] = '\0';
	for (i = 0; strlen(buf) + 20 < sizeof(buf); i++)
		strcat(buf, "Bearer a ");
	log_redact(buf, sizeof(buf));
	ck_assert_uint_lt(strlen(buf), sizeof(buf));
	ck_assert_ptr_null(strstr(buf, " a "));
}
END_TEST

START_TEST(test_log__file_output)
{
	char path[] = "/tmp/check_common_log.XXXXXX", line[1024];
	size_t n;
	FILE *f;
	int fd;

	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	log_init("testproc", 1, LOG_LVL_INFO);
	ck_assert_int_eq(log_set_file(path), 0);
	log_info("hello %d", 42);
	log_debug("not shown");
	olog(LOG_LVL_WARN, "rid=0000002a acct=3fa2", "upstream said Bearer %s", "tok123");
	log_info("refresh with {\"refresh_token\":\"%s\"}", "rt_secret");
	ck_assert_int_eq(log_set_file(NULL), 0);

	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(line, 1, sizeof(line) - 1, f);
	line[n] = '\0';
	fclose(f);
	unlink(path);
	ck_assert_ptr_nonnull(strstr(line, "testproc["));
	ck_assert_ptr_nonnull(strstr(line, "]: info: hello 42\n"));
	ck_assert_ptr_null(strstr(line, "not shown"));
	ck_assert_ptr_nonnull(strstr(line,
	    "warn: rid=0000002a acct=3fa2 upstream said Bearer [redacted]\n"));
	ck_assert_ptr_null(strstr(line, "tok123"));
	ck_assert_ptr_null(strstr(line, "rt_secret"));
	/* ISO 8601 UTC timestamp with milliseconds. */
	ck_assert_int_eq(line[4], '-');
	ck_assert_int_eq(line[10], 'T');
	ck_assert_int_eq(line[19], '.');
	ck_assert_int_eq(line[23], 'Z');
	ck_assert_int_eq(log_set_file("/nonexistent-dir/x.log"), -1);
}
END_TEST

START_TEST(test_log__levels)
{
	ck_assert_int_eq(log_level_from_name("error"), LOG_LVL_ERROR);
	ck_assert_int_eq(log_level_from_name("warn"), LOG_LVL_WARN);
	ck_assert_int_eq(log_level_from_name("info"), LOG_LVL_INFO);
	ck_assert_int_eq(log_level_from_name("debug"), LOG_LVL_DEBUG);
	ck_assert_int_eq(log_level_from_name("loud"), -1);
	ck_assert_int_eq(log_level_from_name(NULL), -1);
	log_set_level(LOG_LVL_DEBUG);
	ck_assert_int_eq(log_get_level(), LOG_LVL_DEBUG);
	log_set_level(LOG_LVL_INFO);
}
END_TEST

Suite *
make_suite_log(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_log__redact_bearer);
	tcase_add_test(tc, test_log__redact_jwt);
	tcase_add_test(tc, test_log__redact_json_tokens);
	tcase_add_test(tc, test_log__redact_clean_line_unchanged);
	tcase_add_test(tc, test_log__redact_tiny_buffer);
	tcase_add_test(tc, test_log__redact_long_line);
	tcase_add_test(tc, test_log__file_output);
	tcase_add_test(tc, test_log__levels);
	suite_add_tcase(s, tc);
	return s;
}
