/* util.c: strings, base64url, hex, host:port. */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_common_suites.h"
#include "util.h"

START_TEST(test_util__strlcpy_safe)
{
	char buf[4];

	ck_assert_uint_eq(strlcpy_safe(buf, "abcdef", sizeof(buf)), 6);
	ck_assert_str_eq(buf, "abc");
	ck_assert_uint_eq(strlcpy_safe(buf, "ab", sizeof(buf)), 2);
	ck_assert_str_eq(buf, "ab");
	buf[0] = 'x';
	ck_assert_uint_eq(strlcpy_safe(buf, "ab", 0), 2);
	ck_assert_int_eq(buf[0], 'x');
}
END_TEST

START_TEST(test_util__xstrdup_and_alloc)
{
	char *s = xstrdup("token");
	void *p;

	ck_assert_ptr_null(xstrdup(NULL));
	ck_assert_str_eq(s, "token");
	freezero_str(s);
	freezero_str(NULL);
	p = xcalloc(3, 5);
	ck_assert_int_eq(((char *)p)[14], 0);
	p = xrealloc(p, 1000);
	free(p);
	free(xmalloc(0));
}
END_TEST

START_TEST(test_util__hex)
{
	const uint8_t in[] = { 0x00, 0x9f, 0xff, 0x10 };
	char out[9];

	hex_encode(in, sizeof(in), out);
	ck_assert_str_eq(out, "009fff10");
	hex_encode(in, 0, out);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_util__b64url_known)
{
	static const struct {
		const char *plain, *enc;
	} v[] = {
		{ "", "" }, { "f", "Zg" }, { "fo", "Zm8" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg" }, { "fooba", "Zm9vYmE" }, { "foobar", "Zm9vYmFy" },
	};
	const uint8_t special[] = { 0xfb, 0xff };
	char out[32];
	uint8_t dec[32];
	size_t i;
	int n;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		n = b64url_encode((const uint8_t *)v[i].plain, strlen(v[i].plain),
		    out, sizeof(out));
		ck_assert_int_eq(n, (int)strlen(v[i].enc));
		ck_assert_str_eq(out, v[i].enc);
		n = b64url_decode(v[i].enc, strlen(v[i].enc), dec, sizeof(dec));
		ck_assert_int_eq(n, (int)strlen(v[i].plain));
		ck_assert_mem_eq(dec, v[i].plain, (size_t)n);
	}
	/* The url-safe alphabet: '-' and '_' instead of '+' and '/'. */
	ck_assert_int_eq(b64url_encode(special, 2, out, sizeof(out)), 3);
	ck_assert_str_eq(out, "-_8");
}
END_TEST

START_TEST(test_util__b64url_round_trip)
{
	uint8_t in[64], dec[64];
	char enc[100];
	size_t len, i;
	int n;

	srand(7);
	for (len = 0; len <= sizeof(in); len++) {
		for (i = 0; i < len; i++)
			in[i] = (uint8_t)rand();
		n = b64url_encode(in, len, enc, sizeof(enc));
		ck_assert_int_ge(n, 0);
		ck_assert_ptr_null(strchr(enc, '='));
		n = b64url_decode(enc, (size_t)n, dec, sizeof(dec));
		ck_assert_int_eq(n, (int)len);
		ck_assert_mem_eq(dec, in, len);
	}
}
END_TEST

START_TEST(test_util__b64url_bad_input)
{
	uint8_t dec[16];
	char enc[9];

	ck_assert_int_eq(b64url_decode("Zg==", 4, dec, sizeof(dec)), -1);	/* padding */
	ck_assert_int_eq(b64url_decode("a+b/", 4, dec, sizeof(dec)), -1);	/* std alphabet */
	ck_assert_int_eq(b64url_decode("Zm9vY", 5, dec, sizeof(dec)), -1);	/* 1 mod 4 */
	ck_assert_int_eq(b64url_decode("Zh", 2, dec, sizeof(dec)), -1);	/* stray bits */
	ck_assert_int_eq(b64url_decode("Zm 9v", 5, dec, sizeof(dec)), -1);
	ck_assert_int_eq(b64url_decode("Zm9vYmFy", 8, dec, 5), -1);		/* out too small */
	ck_assert_int_eq(b64url_decode("Zm9vYmFy", 8, dec, 6), 6);
	ck_assert_int_eq(b64url_encode((const uint8_t *)"foobar", 6, enc, 8), -1);
	ck_assert_int_eq(b64url_encode((const uint8_t *)"foobar", 6, enc, 9), 8);
}
END_TEST

START_TEST(test_util__parse_hostport)
{
	char host[64];
	int port;

	ck_assert_int_eq(parse_hostport("127.0.0.1:8080", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_int_eq(port, 8080);
	ck_assert_int_eq(parse_hostport("proxy.example.com:3128", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "proxy.example.com");
	ck_assert_int_eq(port, 3128);
	ck_assert_int_eq(parse_hostport("[::1]:443", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(port, 443);
	ck_assert_int_eq(parse_hostport("[fe80::1%eth0]:1", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "fe80::1%eth0");
	ck_assert_int_eq(parse_hostport(":9000", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "");
	ck_assert_int_eq(port, 9000);
	ck_assert_int_eq(parse_hostport("[::]:0", host, sizeof(host), &port), 0);
	ck_assert_int_eq(port, 0);

	ck_assert_int_eq(parse_hostport("localhost", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("host:", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("host:65536", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("host:-1", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("host:80x", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("::1:80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("[::1]80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("[::1:80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("[]:80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("[zz::1]:80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("a b:80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(parse_hostport("averylonghostname:80", host, 8, &port), -1);
	ck_assert_int_eq(parse_hostport(NULL, host, sizeof(host), &port), -1);
}
END_TEST

START_TEST(test_util__fd_flags)
{
	int p[2];

	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(set_nonblock(p[0]), 0);
	ck_assert_int_eq(set_nonblock(p[0]), 0);
	ck_assert(fcntl(p[0], F_GETFL) & O_NONBLOCK);
	ck_assert_int_eq(set_cloexec(p[1]), 0);
	ck_assert(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(set_nonblock(p[0]), -1);
}
END_TEST

START_TEST(test_util__clocks)
{
	usec_t a = now_mono_usec(), b = now_mono_usec();

	ck_assert(a > 0);
	ck_assert(b >= a);
	/* Wall clock is after 2020-01-01. */
	ck_assert(now_wall_usec() > 1577836800LL * USEC_PER_SEC);
}
END_TEST

Suite *
make_suite_util(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_util__strlcpy_safe);
	tcase_add_test(tc, test_util__xstrdup_and_alloc);
	tcase_add_test(tc, test_util__hex);
	tcase_add_test(tc, test_util__b64url_known);
	tcase_add_test(tc, test_util__b64url_round_trip);
	tcase_add_test(tc, test_util__b64url_bad_input);
	tcase_add_test(tc, test_util__parse_hostport);
	tcase_add_test(tc, test_util__fd_flags);
	tcase_add_test(tc, test_util__clocks);
	suite_add_tcase(s, tc);
	return s;
}
