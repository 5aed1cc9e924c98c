/* worker/pool.c and worker/idmap.c: the pool's pure logic, no network. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "idmap.h"
#include "pool.h"
#include "test_worker_suites.h"

/* ---- idmap ----------------------------------------------------------- */

START_TEST(test_idmap__put_get_del)
{
	struct idmap m;
	int vals[3];

	idmap_init(&m);
	ck_assert_ptr_null(idmap_get(&m, 1));
	ck_assert_ptr_null(idmap_del(&m, 1));
	idmap_put(&m, 0, &vals[0]);		/* 0 is a valid key */
	idmap_put(&m, 7, &vals[1]);
	idmap_put(&m, 7, &vals[2]);		/* replace */
	ck_assert_uint_eq(m.count, 2);
	ck_assert_ptr_eq(idmap_get(&m, 0), &vals[0]);
	ck_assert_ptr_eq(idmap_get(&m, 7), &vals[2]);
	ck_assert_ptr_eq(idmap_del(&m, 7), &vals[2]);
	ck_assert_ptr_null(idmap_get(&m, 7));
	ck_assert_uint_eq(m.count, 1);
	idmap_free(&m);
}
END_TEST

/* Random puts and deletes against a plain array: deletion by backward
 * shift must never lose an entry of the same cluster. */
START_TEST(test_idmap__random_against_reference)
{
	enum { N = 3000 };
	static int present[N];
	struct idmap m;
	unsigned seed = 12345;
	size_t i, cursor, seen;
	void *v;

	memset(present, 0, sizeof(present));
	idmap_init(&m);
	for (i = 0; i < 200000; i++) {
		uint64_t k;

		seed = seed * 1103515245u + 12345u;
		k = (seed >> 8) % N;
		if ((seed >> 4) & 1) {
			idmap_put(&m, k * 0x10000 + 3, &present[k]);
			present[k] = 1;
		} else {
			v = idmap_del(&m, k * 0x10000 + 3);
			ck_assert_ptr_eq(v, present[k] ? &present[k] : NULL);
			present[k] = 0;
		}
	}
	seen = 0;
	for (i = 0; i < N; i++) {
		v = idmap_get(&m, i * 0x10000 + 3);
		ck_assert_ptr_eq(v, present[i] ? &present[i] : NULL);
		seen += present[i];
	}
	ck_assert_uint_eq(m.count, seen);
	cursor = 0;
	i = 0;
	while (idmap_next(&m, &cursor) != NULL)
		i++;
	ck_assert_uint_eq(i, seen);
	idmap_free(&m);
}
END_TEST

Suite *
make_suite_idmap(void)
{
	Suite *s = suite_create("idmap");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_idmap__put_get_del);
	tcase_add_test(tc, test_idmap__random_against_reference);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- pool ------------------------------------------------------------- */

#define SEC	USEC_PER_SEC
#define KEY_A	0xaaaa000000000001ULL
#define KEY_B	0xbbbb000000000002ULL
#define KEY_C	0xcccc000000000003ULL

/* What the hooks saw. */
struct calls {
	int		nleft, nclose;
	uint64_t	left[64], closed[64];
	char		left_reason[64][64], close_reason[64][64];
};

static struct calls calls;

static void
hook_left(void *arg, struct pool_conn *c, const char *reason)
{
	(void)arg;
	if (calls.nleft < 64) {
		calls.left[calls.nleft] = c->id;
		snprintf(calls.left_reason[calls.nleft], 64, "%s", reason);
	}
	calls.nleft++;
}

static void
hook_close(void *arg, struct pool_conn *c, const char *reason)
{
	(void)arg;
	ck_assert_int_eq(c->state, CONN_CLOSING);
	if (calls.nclose < 64) {
		calls.closed[calls.nclose] = c->id;
		snprintf(calls.close_reason[calls.nclose], 64, "%s", reason);
	}
	calls.nclose++;
}

static const struct pool_hooks hooks = { hook_left, hook_close };

static void
setup_pool(struct pool *p)
{
	memset(&calls, 0, sizeof(calls));
	wpool_init(p, 3, 4242, &hooks, NULL);
	wpool_set_max_age(p, 3300 * SEC);
	wpool_set_liveness(p, 62 * SEC);
}

static struct pool_req
req(uint64_t rid, uint64_t key, const char *entry, uint32_t flags)
{
	struct pool_req r;

	memset(&r, 0, sizeof(r));
	r.rid = rid;
	r.key_hash = key;
	r.entry = entry;
	r.flags = flags;
	return r;
}

/* A pooled connection for key, established and idle after one turn. */
static struct pool_conn *
idle_conn(struct pool *p, uint64_t key, const char *entry, usec_t now)
{
	struct pool_req r = req(100 + key % 50, key, entry,
	    REQ_F_POOLED | REQ_F_GRANT);
	struct pool_decision d;

	wpool_decide(p, &r, now, &d);
	ck_assert_int_eq(d.verdict, PV_NEW);
	wpool_established(p, d.conn, now);
	ck_assert_int_eq(d.conn->state, CONN_BUSY);
	ck_assert(wpool_turn_done(p, d.conn, now));
	ck_assert_int_eq(d.conn->state, CONN_IDLE);
	return d.conn;
}

/* Three turns of one conversation: new, reuse, reuse, one connection. */
START_TEST(test_pool__new_then_reuse)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c;
	int i;

	setup_pool(&p);
	r = req(1, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	wpool_decide(&p, &r, 10 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_NEW);
	c = d.conn;
	ck_assert(c->pooled && c->in_pool);
	ck_assert_int_eq(c->state, CONN_CONNECTING);
	ck_assert_uint_eq(c->cur_rid, 1);
	ck_assert_ptr_eq(wpool_find_key(&p, KEY_A), c);
	ck_assert_ptr_eq(wpool_find_id(&p, c->id), c);
	wpool_established(&p, c, 10 * SEC);
	ck_assert(wpool_turn_done(&p, c, 11 * SEC));

	for (i = 0; i < 2; i++) {
		r = req(2 + i, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
		wpool_decide(&p, &r, (20 + i) * SEC, &d);
		ck_assert_int_eq(d.verdict, PV_REUSE);
		ck_assert_ptr_eq(d.conn, c);
		ck_assert_int_eq(c->state, CONN_BUSY);
		ck_assert_uint_eq(c->cur_rid, 2 + i);
		ck_assert(wpool_turn_done(&p, c, (21 + i) * SEC));
	}
	ck_assert_uint_eq(c->turns, 3);
	ck_assert_uint_eq(p.st.dispatch_new, 1);
	ck_assert_uint_eq(p.st.dispatch_reuse, 2);
	ck_assert_uint_eq(wpool_count_pooled(&p), 1);
	ck_assert_int_eq(calls.nleft, 0);
	ck_assert_int_eq(calls.nclose, 0);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__miss_without_grant_is_cap)
{
	struct pool p;
	struct pool_req r = req(1, KEY_A, "acct-1", REQ_F_POOLED);
	struct pool_decision d;

	setup_pool(&p);
	wpool_decide(&p, &r, SEC, &d);
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_CAP);
	ck_assert_ptr_null(d.conn);
	ck_assert_uint_eq(wpool_count_pooled(&p), 0);
	ck_assert_uint_eq(p.st.bypass[BYP_CAP], 1);
	wpool_free(&p);
}
END_TEST

/* A second turn while the first runs (or connects): one-shot, never a wait. */
START_TEST(test_pool__busy_and_connecting_bypass)
{
	struct pool p;
	struct pool_req r1 = req(1, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	struct pool_req r2 = req(2, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	struct pool_decision d1, d2;

	setup_pool(&p);
	wpool_decide(&p, &r1, SEC, &d1);
	ck_assert_int_eq(d1.verdict, PV_NEW);
	wpool_decide(&p, &r2, SEC, &d2);		/* still connecting */
	ck_assert_int_eq(d2.verdict, PV_BYPASS);
	ck_assert_int_eq(d2.reason, BYP_BUSY);
	wpool_established(&p, d1.conn, 2 * SEC);
	wpool_decide(&p, &r2, 2 * SEC, &d2);	/* busy */
	ck_assert_int_eq(d2.verdict, PV_BYPASS);
	ck_assert_int_eq(d2.reason, BYP_BUSY);
	ck_assert_uint_eq(p.st.bypass[BYP_BUSY], 2);
	ck_assert_uint_eq(wpool_count_pooled(&p), 1);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__disabled_and_no_key)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *idle, *busy;

	setup_pool(&p);
	r = req(1, 0, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	wpool_decide(&p, &r, SEC, &d);
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_NO_KEY);
	r = req(2, KEY_A, "acct-1", REQ_F_GRANT);	/* not pooled */
	wpool_decide(&p, &r, SEC, &d);
	ck_assert_int_eq(d.reason, BYP_NO_KEY);
	r = req(3, KEY_A, "", REQ_F_POOLED | REQ_F_GRANT);
	wpool_decide(&p, &r, SEC, &d);
	ck_assert_int_eq(d.reason, BYP_NO_KEY);
	ck_assert_uint_eq(p.st.bypass[BYP_NO_KEY], 3);

	idle = idle_conn(&p, KEY_A, "acct-1", SEC);
	busy = idle_conn(&p, KEY_B, "acct-1", SEC);
	r = req(4, KEY_B, "acct-1", REQ_F_POOLED);
	wpool_decide(&p, &r, 2 * SEC, &d);
	ck_assert_ptr_eq(d.conn, busy);

	/* disabling closes idle connections now, busy ones after the turn */
	wpool_set_enabled(&p, false);
	ck_assert_int_eq(idle->state, CONN_CLOSING);
	ck_assert_int_eq(calls.nclose, 1);
	ck_assert_uint_eq(calls.closed[0], idle->id);
	ck_assert_int_eq(busy->state, CONN_BUSY);
	ck_assert(busy->pending_close);
	ck_assert_int_eq(calls.nleft, 2);	/* both left the pool */
	ck_assert_uint_eq(wpool_count_pooled(&p), 0);

	r = req(5, KEY_C, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	wpool_decide(&p, &r, 3 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_DISABLED);

	ck_assert(!wpool_turn_done(&p, busy, 4 * SEC));
	ck_assert_int_eq(busy->state, CONN_CLOSING);
	ck_assert_int_eq(calls.nclose, 2);
	wpool_free(&p);
}
END_TEST

/* An expired connection is retired and the turn is a miss. */
START_TEST(test_pool__expired_is_a_miss)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *old;

	setup_pool(&p);
	wpool_set_liveness(&p, 0);
	old = idle_conn(&p, KEY_A, "acct-1", 0);
	r = req(7, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	wpool_decide(&p, &r, 3300 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_NEW);
	ck_assert_ptr_ne(d.conn, old);
	ck_assert_int_eq(old->state, CONN_CLOSING);
	ck_assert_str_eq(calls.close_reason[0], "max age");
	ck_assert_ptr_eq(wpool_find_key(&p, KEY_A), d.conn);
	ck_assert_uint_eq(p.st.expired, 1);

	/* without a grant the reason says why it missed */
	old = idle_conn(&p, KEY_B, "acct-1", 0);
	r = req(8, KEY_B, "acct-1", REQ_F_POOLED);
	wpool_decide(&p, &r, 4000 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_EXPIRED);
	ck_assert_ptr_null(wpool_find_key(&p, KEY_B));
	wpool_free(&p);
}
END_TEST

/* A silent (liveness) or lost connection is never reused. */
START_TEST(test_pool__dead_is_a_miss)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c;

	setup_pool(&p);
	c = idle_conn(&p, KEY_A, "acct-1", 0);
	r = req(7, KEY_A, "acct-1", REQ_F_POOLED);
	wpool_decide(&p, &r, 63 * SEC, &d);	/* no frame, no pong for 63 s */
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_DEAD);
	ck_assert_int_eq(c->state, CONN_CLOSING);
	ck_assert_uint_eq(p.st.liveness_kills, 1);

	c = idle_conn(&p, KEY_B, "acct-1", 100 * SEC);
	wpool_activity(c, 150 * SEC);
	r = req(8, KEY_B, "acct-1", REQ_F_POOLED | REQ_F_GRANT);
	wpool_decide(&p, &r, 200 * SEC, &d);	/* 50 s of silence: alive */
	ck_assert_int_eq(d.verdict, PV_REUSE);
	ck_assert(wpool_turn_done(&p, c, 200 * SEC));

	/* the socket went away: it leaves the pool at once */
	wpool_lost(&p, c, "closed by upstream");
	ck_assert_int_eq(c->state, CONN_DEAD);
	ck_assert_ptr_null(wpool_find_key(&p, KEY_B));
	ck_assert_str_eq(calls.left_reason[calls.nleft - 1], "closed by upstream");
	wpool_decide(&p, &r, 201 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_NEW);
	wpool_conn_free(&p, c);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__continue_reuses_owner)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c;

	setup_pool(&p);
	c = idle_conn(&p, KEY_A, "acct-1", SEC);
	/* the key may differ: ownership is by connection */
	r = req(9, KEY_B, "acct-1", REQ_F_POOLED | REQ_F_CONTINUE);
	r.owner_conn = c->id;
	wpool_decide(&p, &r, 2 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_REUSE);
	ck_assert_ptr_eq(d.conn, c);
	ck_assert_int_eq(c->state, CONN_BUSY);
	ck_assert_uint_eq(wpool_count_pooled(&p), 1);

	/* busy owner: 409, nothing created */
	r.rid = 10;
	wpool_decide(&p, &r, 3 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_ERROR);
	ck_assert_int_eq(d.http_status, 409);
	ck_assert_str_eq(d.code, "conversation_busy");
	ck_assert_uint_eq(wpool_count_pooled(&p), 1);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__continue_owner_gone)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c;

	setup_pool(&p);
	r = req(9, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_CONTINUE | REQ_F_GRANT);
	r.owner_conn = 0x0300001092000001ULL;	/* never existed */
	wpool_decide(&p, &r, SEC, &d);
	ck_assert_int_eq(d.verdict, PV_ERROR);
	ck_assert_int_eq(d.http_status, 400);
	ck_assert_str_eq(d.code, "previous_response_not_found");
	ck_assert_ptr_nonnull(strstr(d.message, "without previous_response_id"));
	ck_assert_uint_eq(wpool_count_pooled(&p), 0);	/* never creates */

	/* an owner of another account is not ours to use */
	c = idle_conn(&p, KEY_A, "acct-1", SEC);
	r.owner_conn = c->id;
	r.entry = "acct-2";
	wpool_decide(&p, &r, 2 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_ERROR);
	ck_assert_int_eq(d.http_status, 400);
	ck_assert_int_eq(c->state, CONN_IDLE);

	/* a dead owner */
	r.entry = "acct-1";
	wpool_lost(&p, c, "closed");
	wpool_decide(&p, &r, 3 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_ERROR);
	ck_assert_int_eq(d.http_status, 400);
	wpool_conn_free(&p, c);

	/* pool disabled: the owner was closed with it */
	c = idle_conn(&p, KEY_B, "acct-1", 4 * SEC);
	r.owner_conn = c->id;
	wpool_set_enabled(&p, false);
	wpool_decide(&p, &r, 5 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_ERROR);
	ck_assert_int_eq(d.http_status, 400);
	ck_assert_uint_eq(p.st.continue_errors, 4);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__continue_owner_expired)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c;

	setup_pool(&p);
	wpool_set_liveness(&p, 0);
	c = idle_conn(&p, KEY_A, "acct-1", 0);
	r = req(9, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_CONTINUE);
	r.owner_conn = c->id;
	wpool_decide(&p, &r, 3301 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_ERROR);
	ck_assert_int_eq(d.http_status, 400);
	ck_assert_str_eq(d.code, "previous_response_not_found");
	ck_assert_ptr_nonnull(strstr(d.message, "maximum age"));
	ck_assert_int_eq(c->state, CONN_CLOSING);
	ck_assert_int_eq(calls.nclose, 1);
	ck_assert_uint_eq(p.st.expired, 1);
	wpool_free(&p);
}
END_TEST

/* Account eviction: idle ones close now, busy ones after their turn,
 * other accounts are untouched, and all of them leave the pool at once. */
START_TEST(test_pool__evict_entry)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *a1, *a2, *a3, *b1;

	setup_pool(&p);
	a1 = idle_conn(&p, KEY_A, "acct-1", SEC);
	a2 = idle_conn(&p, KEY_B, "acct-1", SEC);
	a3 = idle_conn(&p, KEY_C, "acct-1", SEC);
	b1 = idle_conn(&p, 0xdddd000000000004ULL, "acct-2", SEC);
	r = req(20, KEY_B, "acct-1", REQ_F_POOLED);
	wpool_decide(&p, &r, 2 * SEC, &d);
	ck_assert_ptr_eq(d.conn, a2);

	ck_assert_uint_eq(wpool_evict_entry(&p, "acct-1"), 3);
	ck_assert_int_eq(calls.nleft, 3);
	ck_assert_int_eq(calls.nclose, 2);
	ck_assert_int_eq(a1->state, CONN_CLOSING);
	ck_assert_int_eq(a3->state, CONN_CLOSING);
	ck_assert_int_eq(a2->state, CONN_BUSY);
	ck_assert(a2->pending_close);
	ck_assert_int_eq(b1->state, CONN_IDLE);
	ck_assert_ptr_null(wpool_find_key(&p, KEY_A));
	ck_assert_ptr_null(wpool_find_key(&p, KEY_B));
	ck_assert_ptr_eq(wpool_find_id(&p, b1->id), b1);
	ck_assert_uint_eq(wpool_count_pooled(&p), 1);
	ck_assert_uint_eq(p.st.evicted, 3);

	/* the busy one finishes its turn, then closes */
	ck_assert(!wpool_turn_done(&p, a2, 3 * SEC));
	ck_assert_int_eq(a2->state, CONN_CLOSING);
	ck_assert_int_eq(calls.nclose, 3);
	ck_assert_str_eq(calls.close_reason[2], "pending close after turn");
	ck_assert_uint_eq(wpool_evict_entry(&p, "acct-1"), 0);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__close_id_pending_after_turn)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c;

	setup_pool(&p);
	c = idle_conn(&p, KEY_A, "acct-1", SEC);
	r = req(21, KEY_A, "acct-1", REQ_F_POOLED);
	wpool_decide(&p, &r, 2 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_REUSE);
	ck_assert_int_eq(wpool_close_id(&p, c->id, "make room"), 0);
	ck_assert_int_eq(wpool_close_id(&p, c->id, "again"), -1);
	ck_assert_int_eq(calls.nleft, 1);
	ck_assert_str_eq(calls.left_reason[0], "make room");
	ck_assert_int_eq(calls.nclose, 0);
	ck_assert(!wpool_turn_done(&p, c, 3 * SEC));
	ck_assert_int_eq(calls.nclose, 1);
	/* closing completes: the socket is gone */
	wpool_lost(&p, c, "closed");
	ck_assert_int_eq(c->state, CONN_DEAD);
	ck_assert_int_eq(calls.nleft, 1);	/* left only once */
	wpool_conn_free(&p, c);
	ck_assert_uint_eq(p.nconns, 0);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__sweep_expired)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *old_idle, *old_busy, *young;

	setup_pool(&p);
	wpool_set_liveness(&p, 0);
	wpool_set_max_age(&p, 100 * SEC);
	old_idle = idle_conn(&p, KEY_A, "acct-1", 0);
	old_busy = idle_conn(&p, KEY_B, "acct-1", 0);
	young = idle_conn(&p, KEY_C, "acct-1", 50 * SEC);
	r = req(30, KEY_B, "acct-1", REQ_F_POOLED);
	wpool_decide(&p, &r, 90 * SEC, &d);
	ck_assert_ptr_eq(d.conn, old_busy);

	ck_assert_uint_eq(wpool_sweep(&p, 120 * SEC), 2);
	ck_assert_int_eq(old_idle->state, CONN_CLOSING);
	ck_assert(old_busy->pending_close);
	ck_assert_int_eq(old_busy->state, CONN_BUSY);
	ck_assert_int_eq(young->state, CONN_IDLE);
	ck_assert_uint_eq(p.st.expired, 2);
	ck_assert_uint_eq(wpool_sweep(&p, 130 * SEC), 0);
	wpool_free(&p);
}
END_TEST

/* REQ_F_FRESH: the key's idle connection is closed, never reused; a new
 * pooled one with a grant, one-shot (cap) without; a busy one is left
 * alone; a continuation ignores the flag. */
START_TEST(test_pool__fresh_closes_idle)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	struct pool_conn *c, *n;

	setup_pool(&p);
	c = idle_conn(&p, KEY_A, "acct-1", SEC);
	r = req(2, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT | REQ_F_FRESH);
	wpool_decide(&p, &r, 2 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_NEW);
	ck_assert_ptr_ne(d.conn, c);
	n = d.conn;
	ck_assert_int_eq(c->state, CONN_CLOSING);
	ck_assert(!c->in_pool);
	ck_assert_int_eq(calls.nclose, 1);
	ck_assert_uint_eq(calls.closed[0], c->id);
	ck_assert_int_eq(calls.nleft, 1);
	ck_assert_ptr_eq(wpool_find_key(&p, KEY_A), n);
	ck_assert_uint_eq(p.st.fresh_closed, 1);
	ck_assert_uint_eq(p.st.dispatch_reuse, 0);

	/* while the new one is connecting: busy, left alone */
	r = req(3, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_GRANT | REQ_F_FRESH);
	wpool_decide(&p, &r, 3 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_BUSY);
	ck_assert_int_eq(n->state, CONN_CONNECTING);
	wpool_established(&p, n, 3 * SEC);
	ck_assert(wpool_turn_done(&p, n, 4 * SEC));

	/* a continuation of n's response runs on n whatever the flag */
	r = req(4, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_CONTINUE |
	    REQ_F_FRESH);
	r.owner_conn = n->id;
	wpool_decide(&p, &r, 5 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_REUSE);
	ck_assert_ptr_eq(d.conn, n);
	ck_assert(wpool_turn_done(&p, n, 6 * SEC));

	/* no grant: closed all the same, and the turn goes one-shot */
	r = req(5, KEY_A, "acct-1", REQ_F_POOLED | REQ_F_FRESH);
	wpool_decide(&p, &r, 7 * SEC, &d);
	ck_assert_int_eq(d.verdict, PV_BYPASS);
	ck_assert_int_eq(d.reason, BYP_CAP);
	ck_assert_int_eq(n->state, CONN_CLOSING);
	ck_assert_ptr_null(wpool_find_key(&p, KEY_A));
	ck_assert_uint_eq(p.st.fresh_closed, 2);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__oneshot_closes_after_turn)
{
	struct pool p;
	struct pool_conn *c;

	setup_pool(&p);
	c = wpool_oneshot(&p, 40, KEY_A, "acct-1", SEC);
	ck_assert(!c->pooled && !c->in_pool);
	ck_assert_ptr_null(wpool_find_key(&p, KEY_A));
	ck_assert_ptr_null(wpool_find_id(&p, c->id));
	ck_assert_uint_eq(wpool_count_oneshot(&p), 1);
	wpool_established(&p, c, SEC);
	ck_assert_int_eq(c->state, CONN_BUSY);
	ck_assert(!wpool_turn_done(&p, c, 2 * SEC));
	ck_assert_int_eq(c->state, CONN_CLOSING);
	ck_assert_int_eq(calls.nleft, 0);	/* never was in the pool */
	ck_assert_int_eq(calls.nclose, 1);
	ck_assert_uint_eq(p.st.oneshot_opened, 1);
	wpool_free(&p);
}
END_TEST

START_TEST(test_pool__state_machine)
{
	struct pool p;
	struct pool_conn *c;

	setup_pool(&p);
	c = wpool_oneshot(&p, 41, 0, "acct-1", SEC);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_BUSY), 0);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_CONNECTING), -1);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_IDLE), 0);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_CLOSING), 0);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_IDLE), -1);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_BUSY), -1);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_DEAD), 0);
	ck_assert_int_eq(wpool_set_state(&p, c, CONN_IDLE), -1);
	ck_assert_int_eq(c->state, CONN_DEAD);
	ck_assert_uint_eq(wpool_count_state(&p, CONN_DEAD), 1);
	ck_assert_uint_eq(wpool_count_state(&p, CONN_IDLE), 0);
	ck_assert_str_eq(wpool_state_name(CONN_CLOSING), "closing");
	wpool_conn_free(&p, c);
	ck_assert_uint_eq(wpool_count_state(&p, CONN_DEAD), 0);
	wpool_free(&p);
}
END_TEST

/* Ids: unique per pool, never 0, and disjoint across slots and pids. */
START_TEST(test_pool__conn_ids_unique)
{
	struct pool p1, p2, p3;
	struct idmap seen;
	uint64_t id;
	int i;

	wpool_init(&p1, 0, 100, NULL, NULL);
	wpool_init(&p2, 1, 100, NULL, NULL);	/* another worker */
	wpool_init(&p3, 0, 101, NULL, NULL);	/* a respawn of worker 0 */
	idmap_init(&seen);
	for (i = 0; i < 20000; i++) {
		id = wpool_next_id(&p1);
		ck_assert_uint_ne(id, 0);
		ck_assert_ptr_null(idmap_get(&seen, id));
		idmap_put(&seen, id, &seen);
		id = wpool_next_id(&p2);
		ck_assert_ptr_null(idmap_get(&seen, id));
		idmap_put(&seen, id, &seen);
		id = wpool_next_id(&p3);
		ck_assert_ptr_null(idmap_get(&seen, id));
		idmap_put(&seen, id, &seen);
	}
	ck_assert_uint_eq(seen.count, 60000);
	id = wpool_next_id(&p2);
	ck_assert_uint_eq(id >> 56, 1);
	ck_assert_uint_eq((id >> 32) & 0xffffff, 100);
	/* the sequence wraps without producing a repeat of 0 */
	p1.seq = UINT32_MAX;
	ck_assert_uint_eq(wpool_next_id(&p1) & 0xffffffff, 1);
	idmap_free(&seen);
	wpool_free(&p1);
	wpool_free(&p2);
	wpool_free(&p3);
}
END_TEST

/* Many connections: lookups stay exact with thousands of keys. */
START_TEST(test_pool__thousands_of_keys)
{
	struct pool p;
	struct pool_req r;
	struct pool_decision d;
	uint64_t k;

	setup_pool(&p);
	for (k = 1; k <= 5000; k++) {
		r = req(k, k * 0x9e3779b97f4a7c15ULL, "acct-1",
		    REQ_F_POOLED | REQ_F_GRANT);
		wpool_decide(&p, &r, SEC, &d);
		ck_assert_int_eq(d.verdict, PV_NEW);
		wpool_established(&p, d.conn, SEC);
		wpool_turn_done(&p, d.conn, SEC);
	}
	ck_assert_uint_eq(wpool_count_pooled(&p), 5000);
	ck_assert_uint_eq(wpool_count_state(&p, CONN_IDLE), 5000);
	for (k = 1; k <= 5000; k++) {
		r = req(k + 10000, k * 0x9e3779b97f4a7c15ULL, "acct-1",
		    REQ_F_POOLED);
		wpool_decide(&p, &r, 2 * SEC, &d);
		ck_assert_int_eq(d.verdict, PV_REUSE);
		ck_assert_uint_eq(d.conn->key_hash, k * 0x9e3779b97f4a7c15ULL);
	}
	ck_assert_uint_eq(wpool_evict_entry(&p, "acct-1"), 5000);
	ck_assert_uint_eq(wpool_count_pooled(&p), 0);
	wpool_free(&p);
}
END_TEST

Suite *
make_suite_pool(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("decide");

	tcase_add_test(tc, test_pool__new_then_reuse);
	tcase_add_test(tc, test_pool__miss_without_grant_is_cap);
	tcase_add_test(tc, test_pool__busy_and_connecting_bypass);
	tcase_add_test(tc, test_pool__disabled_and_no_key);
	tcase_add_test(tc, test_pool__expired_is_a_miss);
	tcase_add_test(tc, test_pool__dead_is_a_miss);
	tcase_add_test(tc, test_pool__continue_reuses_owner);
	tcase_add_test(tc, test_pool__continue_owner_gone);
	tcase_add_test(tc, test_pool__continue_owner_expired);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifecycle");
	tcase_add_test(tc, test_pool__evict_entry);
	tcase_add_test(tc, test_pool__close_id_pending_after_turn);
	tcase_add_test(tc, test_pool__sweep_expired);
	tcase_add_test(tc, test_pool__fresh_closes_idle);
	tcase_add_test(tc, test_pool__oneshot_closes_after_turn);
	tcase_add_test(tc, test_pool__state_machine);
	tcase_add_test(tc, test_pool__conn_ids_unique);
	tcase_add_test(tc, test_pool__thousands_of_keys);
	suite_add_tcase(s, tc);
	return s;
}
