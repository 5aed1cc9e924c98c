/* hash.c: pinned hash values and the jump hash's consistency. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "hash.h"
#include "test_common_suites.h"

#define NKEYS	100000

/* The values are persisted in logs and `show pools`: they must never
 * change.  Cross-checked against an independent implementation of the
 * same definitions (FNV-1a 64, splitmix64 finaliser, Lamping & Veach). */
START_TEST(test_hash__known_values)
{
	ck_assert_uint_eq(hash64("", 0), 0xf52a15e9a9b5e89bULL);
	ck_assert_uint_eq(hash64_str("a"), 0x02c0bdbf481420f8ULL);
	ck_assert_uint_eq(hash64_str("acct-1:conv-1"), 0x9de2291a585a78dcULL);
	ck_assert_uint_eq(hash64("3fa2:9c1e", 9), 0xbb72b8b84a938f56ULL);
	ck_assert_uint_eq(hash64_str(NULL), hash64("", 0));
	ck_assert_int_eq(jump_hash(1, 1000), 549);
	ck_assert_int_eq(jump_hash(0xdeadbeef, 1000), 285);
	ck_assert_int_eq(jump_hash(256, 1024), 520);
	ck_assert_int_eq(jump_hash(0x9de2291a585a78dcULL, 1000), 243);
}
END_TEST

static uint64_t *
make_keys(void)
{
	uint64_t *keys = malloc(NKEYS * sizeof(*keys));
	char name[64];
	int i;

	ck_assert_ptr_nonnull(keys);
	for (i = 0; i < NKEYS; i++) {
		snprintf(name, sizeof(name), "acct-%d:conv-%08x", i % 97, i);
		keys[i] = hash64_str(name);
	}
	return keys;
}

START_TEST(test_hash__jump_moves_little_and_only_to_new_bucket)
{
	uint64_t *keys = make_keys();
	int32_t n, a, b;
	int i, moved, bad_range, bad_target;
	double frac, ideal;

	/* Plain counters in the loop: a Check assertion per key is slow. */
	for (n = 1; n <= 16; n++) {
		moved = bad_range = bad_target = 0;
		for (i = 0; i < NKEYS; i++) {
			a = jump_hash(keys[i], n);
			b = jump_hash(keys[i], n + 1);
			if (a < 0 || a >= n || b < 0 || b > n)
				bad_range++;
			if (a != b) {
				moved++;
				/* A moved key always goes to the new bucket. */
				if (b != n)
					bad_target++;
			}
		}
		ck_assert_int_eq(bad_range, 0);
		ck_assert_msg(bad_target == 0, "%d keys moved between old buckets"
		    " going from %d to %d", bad_target, n, n + 1);
		frac = (double)moved / NKEYS;
		ideal = 1.0 / (n + 1);
		ck_assert_msg(frac >= 0.5 * ideal && frac <= 1.5 * ideal,
		    "%d -> %d buckets moved %.4f of the keys (ideal %.4f)",
		    n, n + 1, frac, ideal);
	}
	free(keys);
}
END_TEST

START_TEST(test_hash__jump_uniform)
{
	uint64_t *keys = make_keys();
	int count[8] = { 0 }, i;
	double mean = NKEYS / 8.0;

	for (i = 0; i < NKEYS; i++)
		count[jump_hash(keys[i], 8)]++;
	for (i = 0; i < 8; i++)
		ck_assert_msg(count[i] > mean * 0.9 && count[i] < mean * 1.1,
		    "bucket %d has %d keys, mean %.0f", i, count[i], mean);
	free(keys);
}
END_TEST

START_TEST(test_hash__jump_edge_cases)
{
	ck_assert_int_eq(jump_hash(12345, 0), 0);
	ck_assert_int_eq(jump_hash(12345, -3), 0);
	ck_assert_int_eq(jump_hash(12345, 1), 0);
	ck_assert_int_eq(jump_hash(UINT64_MAX, 1), 0);
	ck_assert_int_lt(jump_hash(UINT64_MAX, 1000), 1000);
	/* Stable: same key, same answer. */
	ck_assert_int_eq(jump_hash(hash64_str("k"), 7), jump_hash(hash64_str("k"), 7));
}
END_TEST

Suite *
make_suite_hash(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_hash__known_values);
	tcase_add_test(tc, test_hash__jump_moves_little_and_only_to_new_bucket);
	tcase_add_test(tc, test_hash__jump_uniform);
	tcase_add_test(tc, test_hash__jump_edge_cases);
	suite_add_tcase(s, tc);
	return s;
}
