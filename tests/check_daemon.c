/* Unit tests for the supervisor's bookkeeping: the pool map. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "msgtypes.h"
#include "poolmap.h"

#define A	"aaaaaaaaaaaaaaaa"
#define B	"bbbbbbbbbbbbbbbb"

/* Open a pooled connection for key through the full path the supervisor takes. */
static void
open_conn(struct poolmap *pm, const char *entry, uint64_t key, uint64_t id, int slot)
{
	struct pm_conn *evict;
	int granted = pm_reserve(pm, entry, key, 300, &evict);

	ck_assert_int_eq(granted, 1);
	pm_decision(pm, entry, true, DEC_NEW, id, key, slot, 100);
	pm_conn_up(pm, id, key, entry, slot, 100);
	pm_turn_end(pm, id, "resp_1", 2000, 0, 200);
}

START_TEST(test_poolmap__reserve_under_cap)
{
	struct poolmap pm;
	struct pm_conn *evict;

	pm_init(&pm, 2);
	ck_assert_int_eq(pm_reserve(&pm, A, 11, 300, &evict), 1);
	ck_assert_ptr_null(evict);
	ck_assert_int_eq(pm_reserve(&pm, A, 12, 300, &evict), 1);
	/* two handshakes in progress already fill the cap */
	ck_assert_int_eq(pm_reserve(&pm, A, 13, 300, &evict), 0);
	/* another account is not affected */
	ck_assert_int_eq(pm_reserve(&pm, B, 14, 300, &evict), 1);
	pm_unreserve(&pm, A);
	ck_assert_int_eq(pm_reserve(&pm, A, 13, 300, &evict), 1);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__existing_key_needs_no_grant)
{
	struct poolmap pm;
	struct pm_conn *evict;

	pm_init(&pm, 8);
	open_conn(&pm, A, 42, 1001, 0);
	ck_assert_int_eq(pm_reserve(&pm, A, 42, 300, &evict), 0);
	ck_assert_ptr_null(evict);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__lru_idle_evicted_at_cap)
{
	struct poolmap pm;
	struct pm_conn *evict;
	int busy;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 1);
	/* conn 101 is used again, so 102 is the least recently used */
	pm_decision(&pm, A, false, DEC_REUSE, 101, 1, 0, 300);
	pm_turn_end(&pm, 101, "resp_2", 2100, 2000, 400);
	ck_assert_int_eq(pm_reserve(&pm, A, 3, 300, &evict), 1);
	ck_assert_ptr_nonnull(evict);
	ck_assert_uint_eq(evict->id, 102);
	ck_assert(evict->closing);
	ck_assert_uint_eq(pm.lru_evictions, 1);
	/* the closing connection no longer owns its key: a new turn for key 2
	 * needs a slot again, and the only idle one left is 101 */
	ck_assert_int_eq(pm_reserve(&pm, A, 2, 300, &evict), 1);
	ck_assert_ptr_nonnull(evict);
	ck_assert_uint_eq(evict->id, 101);
	ck_assert_int_eq(pm_count(&pm, &busy), 2);
	pm_conn_down(&pm, 102);
	ck_assert_int_eq(pm_count(&pm, &busy), 1);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__all_busy_at_cap_means_no_grant)
{
	struct poolmap pm;
	struct pm_conn *evict;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 0);
	pm_decision(&pm, A, false, DEC_REUSE, 101, 1, 0, 300);
	pm_decision(&pm, A, false, DEC_REUSE, 102, 2, 0, 300);
	ck_assert_int_eq(pm_reserve(&pm, A, 3, 300, &evict), 0);
	ck_assert_ptr_null(evict);
	ck_assert_uint_eq(pm.lru_evictions, 0);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__failed_handshake_releases_slot)
{
	struct poolmap pm;
	struct pm_conn *evict;

	pm_init(&pm, 1);
	ck_assert_int_eq(pm_reserve(&pm, A, 5, 300, &evict), 1);
	pm_decision(&pm, A, true, DEC_NEW, 500, 5, 0, 100);
	/* the pooled handshake failed: the worker reports it down, then bypasses */
	pm_conn_down(&pm, 500);
	pm_decision(&pm, A, false, DEC_BYPASS, 0, 5, 0, 100);
	ck_assert_int_eq(pm_reserve(&pm, A, 6, 300, &evict), 1);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__response_owner_newest_only)
{
	struct poolmap pm;
	struct pm_conn *c;

	pm_init(&pm, 8);
	open_conn(&pm, A, 7, 700, 1);
	c = pm_owner(&pm, "resp_1");
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->id, 700);
	ck_assert_int_eq(c->slot, 1);
	pm_decision(&pm, A, false, DEC_REUSE, 700, 7, 1, 300);
	pm_turn_end(&pm, 700, "resp_2", 3000, 2900, 400);
	ck_assert_ptr_null(pm_owner(&pm, "resp_1"));
	ck_assert_ptr_eq(pm_owner(&pm, "resp_2"), c);
	pm_conn_down(&pm, 700);
	ck_assert_ptr_null(pm_owner(&pm, "resp_2"));
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__evict_account_and_slot_gone)
{
	struct poolmap pm;
	struct pm_conn *evict;
	int busy;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 1);
	open_conn(&pm, B, 3, 103, 1);
	ck_assert_int_eq(pm_evict_account(&pm, A), 2);
	/* evicted connections stop counting at once */
	ck_assert_int_eq(pm_reserve(&pm, A, 4, 300, &evict), 1);
	ck_assert_ptr_null(evict);
	pm_slot_gone(&pm, 1);
	ck_assert_ptr_null(pm_find(&pm, 102));
	ck_assert_ptr_null(pm_find(&pm, 103));
	ck_assert_ptr_nonnull(pm_find(&pm, 101));
	ck_assert_int_eq(pm_count(&pm, &busy), 1);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__expired_connection_is_replaced)
{
	struct poolmap pm;
	struct pm_conn *evict;

	pm_init(&pm, 8);
	pm_set_max_age(&pm, 1000);
	open_conn(&pm, A, 9, 900, 0);		/* created at 100 */
	ck_assert_int_eq(pm_reserve(&pm, A, 9, 1000, &evict), 0);	/* young: reuse */
	ck_assert_int_eq(pm_reserve(&pm, A, 9, 1200, &evict), 1);	/* old: a new one */
	ck_assert(pm_find(&pm, 900)->closing);
	ck_assert_ptr_null(evict);
	pm_free(&pm);
}
END_TEST

static Suite *
make_suite_poolmap(void)
{
	Suite *s = suite_create("poolmap");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_poolmap__reserve_under_cap);
	tcase_add_test(tc, test_poolmap__existing_key_needs_no_grant);
	tcase_add_test(tc, test_poolmap__lru_idle_evicted_at_cap);
	tcase_add_test(tc, test_poolmap__all_busy_at_cap_means_no_grant);
	tcase_add_test(tc, test_poolmap__failed_handshake_releases_slot);
	tcase_add_test(tc, test_poolmap__response_owner_newest_only);
	tcase_add_test(tc, test_poolmap__evict_account_and_slot_gone);
	tcase_add_test(tc, test_poolmap__expired_connection_is_replaced);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(make_suite_poolmap());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
