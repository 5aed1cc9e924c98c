/* worker/wsframe.c: masked client frames, read back as a server would. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "test_worker_suites.h"
#include "wsframe.h"

/* What a server reads: FIN, opcode, MASK, the length, the key, and the
 * payload unmasked one byte at a time (the reference method). */
struct parsed {
	int		 fin, opcode, masked;
	uint64_t	 len;
	size_t		 header;
	uint8_t		 key[4];
	uint8_t		*payload;
};

static void
parse(const uint8_t *f, size_t flen, struct parsed *p)
{
	size_t h = 2, i;

	ck_assert_uint_ge(flen, 2);
	p->fin = f[0] >> 7;
	ck_assert_int_eq(f[0] & 0x70, 0);	/* RSV bits clear */
	p->opcode = f[0] & 0x0f;
	p->masked = f[1] >> 7;
	p->len = f[1] & 0x7f;
	if (p->len == 126) {
		p->len = (uint64_t)f[2] << 8 | f[3];
		h = 4;
		ck_assert_uint_ge(p->len, 126);		/* shortest form */
	} else if (p->len == 127) {
		p->len = 0;
		for (i = 0; i < 8; i++)
			p->len = p->len << 8 | f[2 + i];
		h = 10;
		ck_assert_uint_gt(p->len, 0xffff);
	}
	memcpy(p->key, f + h, 4);
	p->header = h + 4;
	ck_assert_uint_eq(p->header + p->len, flen);
	p->payload = malloc(p->len + 1);
	for (i = 0; i < p->len; i++)
		p->payload[i] = f[p->header + i] ^ p->key[i & 3];
}

static uint8_t *
pattern(size_t len)
{
	uint8_t *b = malloc(len + 1);
	size_t i;

	for (i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 7 + 3);
	return b;
}

static void
round_trip(size_t len, size_t want_header)
{
	const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
	uint8_t *in = pattern(len), *out;
	struct parsed p;
	size_t n;

	ck_assert_uint_eq(wsframe_header_len(len), want_header);
	out = malloc(wsframe_header_len(len) + len);
	n = wsframe_build(out, WSFRAME_OP_TEXT, in, len, key);
	ck_assert_uint_eq(n, want_header + len);
	parse(out, n, &p);
	ck_assert_int_eq(p.fin, 1);
	ck_assert_int_eq(p.opcode, WSFRAME_OP_TEXT);
	ck_assert_int_eq(p.masked, 1);
	ck_assert_uint_eq(p.len, len);
	ck_assert_uint_eq(p.header, want_header);
	ck_assert_mem_eq(p.key, key, 4);
	ck_assert(len == 0 || memcmp(p.payload, in, len) == 0);
	/* the payload went out masked, not as it is */
	if (len >= 4)
		ck_assert(memcmp(out + want_header, in, len) != 0);
	free(p.payload);
	free(out);
	free(in);
}

START_TEST(test_wsframe__lengths)
{
	/* 7-bit, 16-bit and 64-bit lengths at each boundary */
	round_trip(0, 6);
	round_trip(1, 6);
	round_trip(125, 6);
	round_trip(126, 8);
	round_trip(127, 8);
	round_trip(65535, 8);
	round_trip(65536, 14);
	round_trip(70001, 14);
}
END_TEST

START_TEST(test_wsframe__mask_every_tail)
{
	const uint8_t key[4] = { 0x01, 0x80, 0xff, 0x5a };
	uint8_t *in = pattern(40), out[40], back[40];
	size_t len, i;

	/* every length across the eight-byte stride: each byte is XORed
	 * with key[i % 4], and masking twice gives the input back */
	for (len = 0; len <= sizeof(out); len++) {
		wsframe_mask(out, in, len, key);
		for (i = 0; i < len; i++)
			ck_assert_uint_eq(out[i], in[i] ^ key[i & 3]);
		wsframe_mask(back, out, len, key);
		ck_assert(len == 0 || memcmp(back, in, len) == 0);
	}
	/* in place */
	memcpy(out, in, 40);
	wsframe_mask(out, out, 40, key);
	for (i = 0; i < 40; i++)
		ck_assert_uint_eq(out[i], in[i] ^ key[i & 3]);
	free(in);
}
END_TEST

START_TEST(test_wsframe__opcode_and_key)
{
	uint8_t k1[4], k2[4], out[6 + 3];
	struct parsed p;

	wsframe_build(out, WSFRAME_OP_BINARY, "abc", 3,
	    (const uint8_t[4]){ 0, 0, 0, 0 });
	parse(out, sizeof(out), &p);
	ck_assert_int_eq(p.opcode, WSFRAME_OP_BINARY);
	ck_assert_int_eq(p.fin, 1);
	ck_assert_mem_eq(p.payload, "abc", 3);
	free(p.payload);
	/* two keys from the CSPRNG differ (2^-32 chance they do not) */
	ck_assert_int_eq(wsframe_mask_key(k1), 0);
	ck_assert_int_eq(wsframe_mask_key(k2), 0);
	ck_assert(memcmp(k1, k2, 4) != 0);
}
END_TEST

Suite *
make_suite_wsframe(void)
{
	Suite *s = suite_create("wsframe");
	TCase *tc = tcase_create("build");

	tcase_add_test(tc, test_wsframe__lengths);
	tcase_add_test(tc, test_wsframe__mask_every_tail);
	tcase_add_test(tc, test_wsframe__opcode_and_key);
	suite_add_tcase(s, tc);
	return s;
}
