/* Unit tests for the supervisor's pure modules: the pool map, reply
 * rendering, and the upstream frame. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "msgtypes.h"
#include "jsonutil.h"
#include "poolmap.h"
#include "render.h"
#include "resume.h"
#include "upframe.h"
#include "supervisor.h"
#include "log.h"

#define A	"aaaaaaaaaaaaaaaa"
#define B	"bbbbbbbbbbbbbbbb"

/* A reservation for a new connection: 1 if granted. */
static int
reserve(struct poolmap *pm, const char *entry, uint64_t key, usec_t now,
    struct pm_grant *g, struct pm_conn **evict)
{
	pm_acquire(pm, entry, key, false, now, g, evict);
	return g->reserved ? 1 : 0;
}

/* Open a pooled connection for key through the full path the supervisor takes. */
static void
open_conn(struct poolmap *pm, const char *entry, uint64_t key, uint64_t id, int slot)
{
	struct pm_conn *evict;
	struct pm_grant g;

	ck_assert_int_eq(reserve(pm, entry, key, 300, &g, &evict), 1);
	pm_decision(pm, entry, &g, DEC_NEW, id, slot, 100);
	pm_conn_up(pm, id, key, entry, slot, 100);
	pm_turn_end(pm, id, "resp_1", 2000, 0, 200);
}

/* A turn that reuses conn id of key from start to end. */
static void
reuse_turn(struct poolmap *pm, const char *entry, uint64_t key, uint64_t id, bool end)
{
	struct pm_conn *evict;
	struct pm_grant g;

	pm_acquire(pm, entry, key, false, 300, &g, &evict);
	ck_assert_uint_eq(g.claimed, id);
	pm_decision(pm, entry, &g, DEC_REUSE, id, 0, 300);
	if (end)
		pm_turn_end(pm, id, "resp_2", 2100, 2000, 400);
}

START_TEST(test_poolmap__reserve_under_cap)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g1, g2, g3, g4;

	pm_init(&pm, 2);
	ck_assert_int_eq(reserve(&pm, A, 11, 300, &g1, &evict), 1);
	ck_assert_ptr_null(evict);
	ck_assert_int_eq(reserve(&pm, A, 12, 300, &g2, &evict), 1);
	/* two handshakes in progress already fill the cap */
	ck_assert_int_eq(reserve(&pm, A, 13, 300, &g3, &evict), 0);
	/* another account is not affected */
	ck_assert_int_eq(reserve(&pm, B, 14, 300, &g4, &evict), 1);
	pm_release(&pm, A, &g1);
	ck_assert(!g1.reserved);
	ck_assert_int_eq(reserve(&pm, A, 13, 300, &g3, &evict), 1);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__existing_key_is_claimed)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g, g2;

	pm_init(&pm, 8);
	open_conn(&pm, A, 42, 1001, 0);
	pm_acquire(&pm, A, 42, false, 300, &g, &evict);
	ck_assert(!g.reserved);
	ck_assert_uint_eq(g.claimed, 1001);
	ck_assert(pm_find(&pm, 1001)->busy);
	ck_assert_ptr_null(evict);
	/* a second turn meanwhile gets nothing: the worker bypasses (busy) */
	pm_acquire(&pm, A, 42, false, 300, &g2, &evict);
	ck_assert(!g2.reserved);
	ck_assert_uint_eq(g2.claimed, 0);
	/* the first one's decision went another way: the claim is let go */
	pm_decision(&pm, A, &g, DEC_BYPASS, 0, 0, 300);
	ck_assert(!pm_find(&pm, 1001)->busy);
	pm_free(&pm);
}
END_TEST

/* Defect: the LRU victim could be an idle connection whose next turn was
 * already on its way to it. */
START_TEST(test_poolmap__claimed_connection_is_no_lru_victim)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g, g2;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 0);
	/* 101 is the least recently used, and its next turn is dispatched */
	pm_acquire(&pm, A, 1, false, 300, &g, &evict);
	ck_assert_uint_eq(g.claimed, 101);
	/* a new conversation at the cap must take 102, not 101 */
	ck_assert_int_eq(reserve(&pm, A, 3, 300, &g2, &evict), 1);
	ck_assert_ptr_nonnull(evict);
	ck_assert_uint_eq(evict->id, 102);
	ck_assert(!pm_find(&pm, 101)->closing);
	pm_free(&pm);
}
END_TEST

/* Defect: two first turns of one new conversation each reserved a slot
 * and could close another conversation's connection for nothing. */
START_TEST(test_poolmap__one_reservation_per_key)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g1, g2, g3;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	ck_assert_int_eq(reserve(&pm, A, 7, 300, &g1, &evict), 1);
	ck_assert_ptr_null(evict);
	/* the same conversation's second first turn: no reservation, no victim */
	ck_assert_int_eq(reserve(&pm, A, 7, 300, &g2, &evict), 0);
	ck_assert_ptr_null(evict);
	ck_assert(!pm_find(&pm, 101)->closing);
	ck_assert_uint_eq(pm.lru_evictions, 0);
	/* once the first one's decision is in, the key may reserve again */
	pm_decision(&pm, A, &g1, DEC_BYPASS, 0, 0, 300);
	ck_assert_int_eq(reserve(&pm, A, 7, 300, &g3, &evict), 1);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__lru_idle_evicted_at_cap)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g;
	int busy;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 1);
	/* conn 101 is used again, so 102 is the least recently used */
	reuse_turn(&pm, A, 1, 101, true);
	ck_assert_int_eq(reserve(&pm, A, 3, 300, &g, &evict), 1);
	ck_assert_ptr_nonnull(evict);
	ck_assert_uint_eq(evict->id, 102);
	ck_assert(evict->closing);
	ck_assert_uint_eq(pm.lru_evictions, 1);
	/* the closing connection no longer owns its key: a new turn for key 2
	 * needs a slot again, and the only idle one left is 101 */
	ck_assert_int_eq(reserve(&pm, A, 2, 300, &g, &evict), 1);
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
	struct pm_grant g;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 0);
	reuse_turn(&pm, A, 1, 101, false);
	reuse_turn(&pm, A, 2, 102, false);
	ck_assert_int_eq(reserve(&pm, A, 3, 300, &g, &evict), 0);
	ck_assert_ptr_null(evict);
	ck_assert_uint_eq(pm.lru_evictions, 0);
	pm_free(&pm);
}
END_TEST

START_TEST(test_poolmap__failed_handshake_releases_slot)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g;

	pm_init(&pm, 1);
	ck_assert_int_eq(reserve(&pm, A, 5, 300, &g, &evict), 1);
	pm_decision(&pm, A, &g, DEC_NEW, 500, 0, 100);
	/* the pooled handshake failed: the worker reports it down, then bypasses */
	pm_conn_down(&pm, 500);
	ck_assert_int_eq(reserve(&pm, A, 6, 300, &g, &evict), 1);
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
	reuse_turn(&pm, A, 7, 700, false);
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
	struct pm_grant g;
	int busy;

	pm_init(&pm, 2);
	open_conn(&pm, A, 1, 101, 0);
	open_conn(&pm, A, 2, 102, 1);
	open_conn(&pm, B, 3, 103, 1);
	ck_assert_int_eq(pm_evict_account(&pm, A), 2);
	/* evicted connections stop counting at once */
	ck_assert_int_eq(reserve(&pm, A, 4, 300, &g, &evict), 1);
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
	struct pm_grant g;

	pm_init(&pm, 8);
	pm_set_max_age(&pm, 1000);
	open_conn(&pm, A, 9, 900, 0);		/* created at 100 */
	pm_acquire(&pm, A, 9, false, 1000, &g, &evict);	/* young: reuse */
	ck_assert(!g.reserved);
	ck_assert_uint_eq(g.claimed, 900);
	pm_release(&pm, A, &g);
	ck_assert(!pm_find(&pm, 900)->busy);
	ck_assert_int_eq(reserve(&pm, A, 9, 1200, &g, &evict), 1);	/* old: a new one */
	ck_assert(pm_find(&pm, 900)->closing);
	ck_assert_ptr_null(evict);
	pm_free(&pm);
}
END_TEST

/* A retry after a retryable failure must not reuse the key's connection. */
START_TEST(test_poolmap__fresh_replaces_the_connection)
{
	struct poolmap pm;
	struct pm_conn *evict;
	struct pm_grant g;

	pm_init(&pm, 8);
	open_conn(&pm, A, 9, 900, 0);
	pm_acquire(&pm, A, 9, true, 300, &g, &evict);
	ck_assert(g.reserved);
	ck_assert_uint_eq(g.claimed, 0);
	ck_assert(pm_find(&pm, 900)->closing);
	pm_free(&pm);
}
END_TEST

/* Defect: after a drain, a conversation started during it was routed back
 * to its hash slot, away from the connection it has on another worker. */
START_TEST(test_poolmap__slot_of_follows_the_connection)
{
	struct poolmap pm;

	pm_init(&pm, 8);
	ck_assert_int_eq(pm_slot_of(&pm, 9), -1);
	open_conn(&pm, A, 9, 900, 1);
	ck_assert_int_eq(pm_slot_of(&pm, 9), 1);
	pm_set_conversation(&pm, 900, 77, "cp_abc");
	ck_assert_str_eq(pm_find(&pm, 900)->upconv, "cp_abc");
	ck_assert_uint_eq(pm_find(&pm, 900)->conv_hash, 77);
	pm_evict_account(&pm, A);
	ck_assert_int_eq(pm_slot_of(&pm, 9), -1);
	pm_free(&pm);
}
END_TEST

static Suite *
make_suite_poolmap(void)
{
	Suite *s = suite_create("poolmap");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_poolmap__reserve_under_cap);
	tcase_add_test(tc, test_poolmap__existing_key_is_claimed);
	tcase_add_test(tc, test_poolmap__claimed_connection_is_no_lru_victim);
	tcase_add_test(tc, test_poolmap__one_reservation_per_key);
	tcase_add_test(tc, test_poolmap__fresh_replaces_the_connection);
	tcase_add_test(tc, test_poolmap__slot_of_follows_the_connection);
	tcase_add_test(tc, test_poolmap__lru_idle_evicted_at_cap);
	tcase_add_test(tc, test_poolmap__all_busy_at_cap_means_no_grant);
	tcase_add_test(tc, test_poolmap__failed_handshake_releases_slot);
	tcase_add_test(tc, test_poolmap__response_owner_newest_only);
	tcase_add_test(tc, test_poolmap__evict_account_and_slot_gone);
	tcase_add_test(tc, test_poolmap__expired_connection_is_replaced);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- render -------------------------------------------------------- */

static char *
buf_text(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

START_TEST(test_render__sse)
{
	struct evbuffer *b = evbuffer_new();
	char *s;

	render_sse(b, "response.created", "{\"a\":1}", 7);
	render_sse(b, "", "x", 1);
	s = buf_text(b);
	ck_assert_str_eq(s, "event: response.created\ndata: {\"a\":1}\n\ndata: x\n\n");
	free(s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_render__frame_type)
{
	char t[64];
	const char *fast = "{\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}";
	const char *slow = "{\"delta\":\"hi\",\"type\":\"response.completed\"}";

	ck_assert_uint_eq(render_frame_type(fast, strlen(fast), t, sizeof(t)), 26);
	ck_assert_str_eq(t, "response.output_text.delta");
	render_frame_type(slow, strlen(slow), t, sizeof(t));
	ck_assert_str_eq(t, "response.completed");
	render_frame_type("nope", 4, t, sizeof(t));
	ck_assert_str_eq(t, "");
}
END_TEST

static void
agg_feed(struct render_agg *a, const char *frame)
{
	char t[64];

	render_frame_type(frame, strlen(frame), t, sizeof(t));
	render_agg_event(a, t, frame, strlen(frame));
}

START_TEST(test_render__aggregate_completed)
{
	struct render_agg a;
	struct render_reply r = { 0 };
	struct json_object *o;
	char err[64];

	render_agg_init(&a, 1 << 20);
	agg_feed(&a, "{\"type\":\"response.created\",\"response\":{\"id\":\"r1\"}}");
	agg_feed(&a, "{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"message\",\"id\":\"m1\"}}");
	agg_feed(&a, "{\"type\":\"response.completed\",\"response\":{\"id\":\"r1\",\"status\":\"completed\",\"output\":[]}}");
	render_agg_result(&a, DONE_COMPLETED, "", &r);
	ck_assert_int_eq(r.status, 200);
	o = json_parse_buf(r.body, r.len, err, sizeof(err));
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_get_str(o, "id"), "r1");
	ck_assert_int_eq((int)json_object_array_length(json_get_array(o, "output")), 1);
	json_object_put(o);
	free(r.body);
	render_agg_free(&a);
}
END_TEST

START_TEST(test_render__aggregate_failures)
{
	struct render_agg a;
	struct render_reply r = { 0 };

	render_agg_init(&a, 1 << 20);
	agg_feed(&a, "{\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}");
	render_agg_result(&a, DONE_FAILED, "", &r);
	ck_assert_int_eq(r.status, 502);
	ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"server_error\""));
	ck_assert_ptr_nonnull(strstr(r.body, "boom"));
	free(r.body);
	render_agg_free(&a);

	render_agg_init(&a, 1 << 20);
	render_agg_result(&a, DONE_STREAM_ERROR, "reset", &r);
	ck_assert_int_eq(r.status, 502);
	ck_assert_ptr_nonnull(strstr(r.body, "stream_disconnected"));
	ck_assert_ptr_nonnull(strstr(r.body, "reset"));
	free(r.body);
	render_agg_free(&a);

	render_agg_init(&a, 10);
	agg_feed(&a, "{\"type\":\"response.completed\",\"response\":{\"id\":\"r1\"}}");
	render_agg_result(&a, DONE_COMPLETED, "", &r);
	ck_assert_int_eq(r.status, 502);
	ck_assert_ptr_nonnull(strstr(r.body, "response_too_large"));
	free(r.body);
	render_agg_free(&a);
}
END_TEST

/* Found by fuzz/fuzz_render: a response.completed whose "output" is not an
 * array, after an output item, aborted the daemon in json-c. */
START_TEST(test_render__aggregate_output_not_an_array)
{
	static const char *outputs[] = { "48", "null", "\"x\"", "{}", NULL };
	struct render_agg a;
	struct render_reply r = { 0 };
	struct json_object *o, *out;
	char frame[256], err[64];
	int i;

	for (i = 0; outputs[i] != NULL; i++) {
		render_agg_init(&a, 1 << 20);
		agg_feed(&a, "{\"type\":\"response.output_item.done\",\"output_index\":0,"
		    "\"item\":{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\"}}");
		snprintf(frame, sizeof(frame), "{\"type\":\"response.completed\",\"response\":"
		    "{\"id\":\"resp_B\",\"status\":\"completed\",\"output\":%s}}", outputs[i]);
		agg_feed(&a, frame);
		render_agg_result(&a, DONE_COMPLETED, "", &r);
		ck_assert_int_eq(r.status, 200);
		o = json_parse_buf(r.body, r.len, err, sizeof(err));
		ck_assert_ptr_nonnull(o);
		out = json_get_array(o, "output");
		ck_assert_msg(out != NULL, "output %s: not replaced by the items", outputs[i]);
		ck_assert_int_eq((int)json_object_array_length(out), 1);
		json_object_put(o);
		free(r.body);
		render_agg_free(&a);
	}
}
END_TEST

START_TEST(test_render__upstream_error)
{
	struct render_reply r = { 0 };
	const char *body = "{\"type\":\"error\",\"status\":429,\"error\":{\"type\":\"usage_limit_reached\","
	    "\"message\":\"slow down\",\"resets_in_seconds\":42}}";
	const char *at = "{\"error\":{\"code\":\"x\",\"resets_at\":1100}}";
	int64_t ra = -1;

	render_upstream_error(429, "usage_limit_reached", body, strlen(body), 1000, &ra, &r);
	ck_assert_int_eq(r.status, 429);
	ck_assert_int_eq((int)ra, 42);
	ck_assert_ptr_nonnull(strstr(r.body, "{\"error\":{"));
	ck_assert_ptr_nonnull(strstr(r.body, "slow down"));
	free(r.body);
	ck_assert_int_eq((int)render_retry_after(at, strlen(at), 1000), 100);
	ck_assert_int_eq((int)render_retry_after("{}", 2, 1000), -1);
	ra = -1;
	render_upstream_error(502, "bad", "not json", 8, 1000, &ra, &r);
	ck_assert_int_eq(r.status, 502);
	ck_assert_int_eq((int)ra, -1);
	ck_assert_ptr_nonnull(strstr(r.body, "server_error"));
	free(r.body);
	ck_assert_str_eq(render_reason_phrase(429), "Too Many Requests");
	ck_assert_str_eq(render_reason_phrase(503), "Service Unavailable");
}
END_TEST

START_TEST(test_render__failed_event)
{
	size_t len;
	char *s = render_failed_event("worker_crashed", "gone", &len);

	ck_assert_str_eq(s, "{\"type\":\"response.failed\",\"response\":{\"status\":\"failed\","
	    "\"error\":{\"code\":\"worker_crashed\",\"message\":\"gone\"}}}");
	ck_assert_uint_eq(len, strlen(s));
	free(s);
}
END_TEST

/* ---- upframe ---------------------------------------------------------- */

static struct jdoc *
doc(const char *text)
{
	struct jdoc *d = xmalloc(sizeof(*d));
	char err[64];

	ck_assert_msg(jdoc_parse(d, text, strlen(text), err, sizeof(err)) == 0,
	    "%s: %s", text, err);
	return d;
}

static void
doc_free(struct jdoc *d)
{
	jdoc_free(d);
	free(d);
}

static struct json_object *
frame_of_ids(const char *body, const struct upframe_ids *ids)
{
	struct json_object *f;
	struct jdoc *b = doc(body);
	char err[64], *text;
	size_t len;

	text = upframe_build(b, ids, &len);
	ck_assert_uint_eq(len, strlen(text));
	f = json_parse_buf(text, len, err, sizeof(err));
	ck_assert_msg(f != NULL, "%s: %s", text, err);
	free(text);
	doc_free(b);
	return f;
}

static struct json_object *
frame_of(const char *body, const char *upconv)
{
	return frame_of_ids(body, &(struct upframe_ids){ .upstream_conv = upconv,
	    .installation_id = "inst-1" });
}

START_TEST(test_upframe__rewrites)
{
	struct json_object *f, *item;

	f = frame_of("{\"model\":\"m\",\"input\":\"hi\",\"stream\":false,\"background\":true,"
	    "\"prompt_cache_key\":\"client-key\",\"client_metadata\":{\"a\":\"b\"}}", "cp_1");
	ck_assert_str_eq(json_get_str(f, "type"), "response.create");
	ck_assert(json_get_bool(f, "stream", false));
	ck_assert(!json_get_bool(f, "store", true));
	ck_assert(!json_object_object_get_ex(f, "background", NULL));
	ck_assert_str_eq(json_get_str(f, "prompt_cache_key"), "cp_1");
	item = json_object_array_get_idx(json_get_array(f, "input"), 0);
	ck_assert_str_eq(json_get_str(item, "role"), "user");
	ck_assert_str_eq(json_get_str(json_object_array_get_idx(json_get_array(item, "content"), 0),
	    "text"), "hi");
	ck_assert_str_eq(json_get_str(json_get_obj(f, "client_metadata"), "a"), "b");
	ck_assert_str_eq(json_get_str(json_get_obj(f, "client_metadata"),
	    "x-codex-installation-id"), "inst-1");
	json_object_put(f);

	/* no conversation: the client's key never goes upstream */
	f = frame_of("{\"model\":\"m\",\"input\":[],\"store\":true,\"prompt_cache_key\":\"k\"}", NULL);
	ck_assert(!json_object_object_get_ex(f, "prompt_cache_key", NULL));
	ck_assert(json_get_bool(f, "store", false));
	json_object_put(f);
}
END_TEST

/* The body is spliced: what the proxy does not change goes as sent. */
START_TEST(test_upframe__splices_bytes)
{
	const char *body = "{ \"model\" : \"gpt-5\", \"instructions\":\"caf\\u00e9 \\\"q\\\" \\/\","
	    "\"input\":[ {\"role\":\"user\",\"content\":\"hi\"} ],\"temperature\":1.50,"
	    "\"client_metadata\":{\"x-codex-installation-id\":\"theirs\",\"k\":[1, 2]},"
	    "\"tools\":[],\"tools\":[{\"type\":\"web_search\"}],\"stream\":false}";
	struct upframe_ids ids = { .upstream_conv = "cp_\"1", .installation_id = "inst-1",
	    .model = "gpt-5-mapped" };
	struct jdoc *b = doc(body);
	struct json_object *f;
	char *text;
	size_t len;

	text = upframe_build(b, &ids, &len);
	/* the client's bytes, escapes and spacing kept */
	ck_assert_ptr_nonnull(strstr(text, "\"instructions\":\"caf\\u00e9 \\\"q\\\" \\/\""));
	ck_assert_ptr_nonnull(strstr(text, "\"input\":[ {\"role\":\"user\",\"content\":\"hi\"} ]"));
	ck_assert_ptr_nonnull(strstr(text, "\"temperature\":1.50"));
	ck_assert_ptr_nonnull(strstr(text, "\"k\":[1, 2]"));
	/* ours, quoted */
	ck_assert_ptr_nonnull(strstr(text, "\"prompt_cache_key\":\"cp_\\\"1\""));
	ck_assert_ptr_nonnull(strstr(text, "\"model\":\"gpt-5-mapped\""));
	ck_assert_ptr_null(strstr(text, "theirs"));
	ck_assert_ptr_null(strstr(text, "\"tools\":[],"));
	f = json_parse_buf(text, len, NULL, 0);
	ck_assert_ptr_nonnull(f);
	ck_assert_str_eq(json_get_str(f, "instructions"), "caf\xc3\xa9 \"q\" /");
	ck_assert_str_eq(json_get_str(json_get_obj(f, "client_metadata"),
	    "x-codex-installation-id"), "inst-1");
	ck_assert_int_eq((int)json_object_array_length(json_get_array(f, "tools")), 1);
	ck_assert(json_get_bool(f, "stream", false));
	json_object_put(f);
	free(text);

	/* a metadata that is not an object becomes ours; none at all too */
	f = frame_of("{\"model\":\"m\",\"input\":\"x\",\"client_metadata\":null}", NULL);
	ck_assert_str_eq(json_get_str(json_get_obj(f, "client_metadata"),
	    "x-codex-installation-id"), "inst-1");
	json_object_put(f);
	f = frame_of_ids("{\"model\":\"m\",\"input\":\"x\",\"client_metadata\":null}",
	    &(struct upframe_ids){ 0 });
	ck_assert(json_object_object_get_ex(f, "client_metadata", NULL));
	ck_assert_ptr_null(json_get_obj(f, "client_metadata"));
	ck_assert(!json_object_object_get_ex(f, "prompt_cache_key", NULL));
	json_object_put(f);
	doc_free(b);
}
END_TEST

/* The scanner takes what json-c takes and refuses what it refuses. */
START_TEST(test_jscan__agrees_with_json_c)
{
	static const char *good[] = {
		"{}", "[]", "0", "-0.5e+10", "\"\\ud83d\\ude00\"", " {\"a\" : [1, {\"b\":null}] } ",
		"[true,false,null,\"\\u0000\"]", "{\"a\":{},\"b\":[[],[[]]]}",
	};
	static const char *bad[] = {
		"", " ", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{1:2}", "01", ".5",
		"-", "1e", "tru", "nul", "\"abc", "\"a\\x\"", "\"\\u12\"", "[1 2]", "{} {}",
		"'a'", "[1]]", "{\"a\":1}}",
	};
	/* json-c lets these through even in strict mode; RFC 8259 does not,
	 * and neither does the backend */
	static const char *lax[] = {
		"1.", "-01", "NaN", "Infinity", "\"tab\there\"", "[\"\n\"]", "[\"\x01\"]",
	};
	struct json_object *o;
	struct jdoc d;
	char err[128];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_msg(jdoc_parse(&d, good[i], strlen(good[i]), err, sizeof(err)) == 0,
		    "%s: %s", good[i], err);
		jdoc_free(&d);
		o = json_parse_buf(good[i], strlen(good[i]), err, sizeof(err));
		ck_assert_msg(o != NULL || strcmp(err, JSON_ERR_NULL) == 0, "json-c: %s", good[i]);
		json_object_put(o);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(jdoc_parse(&d, bad[i], strlen(bad[i]), err, sizeof(err)) == -1,
		    "accepted %s", bad[i]);
		ck_assert(err[0] != '\0');
		ck_assert_ptr_null(json_parse_buf(bad[i], strlen(bad[i]), NULL, 0));
	}
	for (i = 0; i < sizeof(lax) / sizeof(lax[0]); i++)
		ck_assert_msg(jdoc_parse(&d, lax[i], strlen(lax[i]), err, sizeof(err)) == -1,
		    "accepted %s", lax[i]);
	/* depth: 64 nested arrays parse, 65 do not */
	{
		char deep[200];

		memset(deep, '[', 64);
		memset(deep + 64, ']', 64);
		ck_assert_int_eq(jdoc_parse(&d, deep, 128, NULL, 0), 0);
		jdoc_free(&d);
		memset(deep, '[', 65);
		memset(deep + 65, ']', 65);
		ck_assert_int_eq(jdoc_parse(&d, deep, 130, err, sizeof(err)), -1);
	}
}
END_TEST

/* The word-at-a-time string scan stops at every quote, backslash and
 * control byte, wherever it falls in a word. */
START_TEST(test_jscan__string_scan_positions)
{
	char text[64], *v;
	struct jdoc d;
	size_t n, at;

	for (n = 0; n < 40; n++) {
		text[0] = '"';
		memset(text + 1, 0xc3, n);	/* high bytes: UTF-8 runs */
		text[n + 1] = '"';
		ck_assert_int_eq(jdoc_parse(&d, text, n + 2, NULL, 0), 0);
		ck_assert_uint_eq(d.tok[0].len, n + 2);
		jdoc_free(&d);
		for (at = 1; at <= n; at++) {
			text[at] = 0x1f;
			ck_assert_int_eq(jdoc_parse(&d, text, n + 2, NULL, 0), -1);
			text[at] = '"';		/* ends early: trailing data */
			ck_assert_int_eq(jdoc_parse(&d, text, n + 2, NULL, 0), -1);
			text[at] = 0xc3;
		}
		if (n >= 2) {
			text[n - 1] = '\\';
			text[n] = 'n';
			ck_assert_int_eq(jdoc_parse(&d, text, n + 2, NULL, 0), 0);
			ck_assert(d.tok[0].esc);
			v = jdoc_strdup(&d, 0);
			ck_assert_uint_eq(strlen(v), n - 1);
			ck_assert_int_eq(v[n - 2], '\n');
			free(v);
			jdoc_free(&d);
		}
	}
}
END_TEST

/* Walking, lookup and unescaping. */
START_TEST(test_jscan__walk)
{
	const char *text = "{\"a\":[1,{\"x\":2},\"s\"],\"b\":\"l\\u00e9\\n\",\"a\":true,\"e\":{}}";
	struct jdoc d;
	int a, i, n = 0;
	char *s, *tofree;
	const char *v;
	size_t len;

	ck_assert_int_eq(jdoc_parse(&d, text, strlen(text), NULL, 0), 0);
	ck_assert_uint_eq(d.tok[0].count, 4);
	/* the last of a repeated key */
	ck_assert(jdoc_is(&d, jdoc_member(&d, 0, "a"), JT_TRUE));
	a = jdoc_first(&d, 0) + 1;
	ck_assert(jdoc_is(&d, a, JT_ARRAY));
	for (i = jdoc_first(&d, a); i >= 0; i = jdoc_next(&d, a, i))
		n++;
	ck_assert_int_eq(n, 3);
	v = jdoc_raw(&d, a, &len);
	ck_assert_int_eq((int)len, (int)strlen("[1,{\"x\":2},\"s\"]"));
	ck_assert(strncmp(v, "[1,{\"x\":2},\"s\"]", len) == 0);
	s = jdoc_get_strdup(&d, 0, "b");
	ck_assert_str_eq(s, "l\xc3\xa9\n");
	free(s);
	ck_assert(jdoc_str_eq(&d, jdoc_member(&d, 0, "b"), "l\xc3\xa9\n"));
	v = jdoc_str(&d, jdoc_member(&d, 0, "b"), &len, &tofree);
	ck_assert_uint_eq(len, 4);
	free(tofree);
	ck_assert_int_eq(jdoc_first(&d, jdoc_member(&d, 0, "e")), -1);
	ck_assert_int_eq(jdoc_member(&d, 0, "zz"), -1);
	ck_assert_ptr_null(jdoc_get_strdup(&d, 0, "a"));
	jdoc_free(&d);
}
END_TEST

/* ---- implicit resume --------------------------------------------------- */

START_TEST(test_resume__prefix_of_echoed_history)
{
	struct resume_chain c;
	struct jdoc *turn1, *out, *turn2, *edited, *same;

	/* what the connection sent, and the output item it got back */
	turn1 = doc("[{\"role\":\"user\",\"content\":\"hi\"}]");
	out = doc("{\"type\":\"message\",\"id\":\"msg_1\",\"status\":\"completed\",\"role\":\"assistant\","
	    "\"content\":[{\"type\":\"output_text\",\"text\":\"hello\",\"annotations\":[]}]}");
	resume_chain_init(&c);
	resume_chain_add_input(&c, turn1, 0);
	resume_chain_add(&c, out, 0);
	ck_assert_uint_eq(c.count, 2);
	/* the client echoes the answer in its own shape and spacing, with an
	 * escape, plus reasoning it kept */
	turn2 = doc("[{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hi\"}]},"
	    "{\"type\":\"reasoning\",\"encrypted_content\":\"x\"},"
	    "{ \"role\" : \"assistant\", \"content\":[{\"type\":\"output_text\",\"text\":\"hel\\u006co\"}]},"
	    "{\"role\":\"user\",\"content\":\"next\"}]");
	ck_assert_int_eq(resume_prefix(&c, turn2, 0), 3);
	/* an edited history is not a continuation */
	edited = doc("[{\"role\":\"user\",\"content\":\"hi!\"},"
	    "{\"role\":\"assistant\",\"content\":\"hello\"},{\"role\":\"user\",\"content\":\"next\"}]");
	ck_assert_int_eq(resume_prefix(&c, edited, 0), -1);
	/* nothing new: no resume */
	same = doc("[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]");
	ck_assert_int_eq(resume_prefix(&c, same, 0), -1);
	doc_free(turn1);
	doc_free(out);
	doc_free(turn2);
	doc_free(edited);
	doc_free(same);
}
END_TEST

START_TEST(test_resume__tool_calls_and_frame)
{
	struct resume_chain c, empty;
	struct jdoc *in, *call, *body;
	struct json_object *f;
	char *text, err[64];
	size_t len;
	int input;

	in = doc("[{\"role\":\"user\",\"content\":\"weather?\"}]");
	call = doc("{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"get\",\"arguments\":\"{}\"}");
	resume_chain_init(&c);
	resume_chain_add_input(&c, in, 0);
	resume_chain_add(&c, call, 0);
	body = doc("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"weather?\"},"
	    "{\"type\":\"function_call\",\"call_id\":\"call_1\",\"name\":\"get\",\"arguments\":\"{}\"},"
	    "{\"type\":\"function_call_output\",\"call_id\":\"call_1\",\"output\":\"sunny\"}],"
	    "\"previous_response_id\":null}");
	input = jdoc_member(body, 0, "input");
	ck_assert_int_eq(resume_prefix(&c, body, input), 2);
	/* a different call id is another history */
	resume_chain_init(&empty);
	ck_assert_int_eq(resume_prefix(&empty, body, input), -1);
	text = upframe_build(body, &(struct upframe_ids){ .upstream_conv = "cp_1",
	    .resume_skip = 2, .resume_prev = "resp_9" }, &len);
	f = json_parse_buf(text, len, err, sizeof(err));
	ck_assert_msg(f != NULL, "%s: %s", text, err);
	ck_assert_str_eq(json_get_str(f, "previous_response_id"), "resp_9");
	ck_assert_int_eq((int)json_object_array_length(json_get_array(f, "input")), 1);
	ck_assert_str_eq(json_get_str(json_object_array_get_idx(json_get_array(f, "input"), 0),
	    "type"), "function_call_output");
	json_object_put(f);
	free(text);
	doc_free(in);
	doc_free(call);
	doc_free(body);
}
END_TEST

static Suite *
make_suite_render(void)
{
	Suite *s = suite_create("render");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_render__sse);
	tcase_add_test(tc, test_render__frame_type);
	tcase_add_test(tc, test_render__aggregate_completed);
	tcase_add_test(tc, test_render__aggregate_failures);
	tcase_add_test(tc, test_render__aggregate_output_not_an_array);
	tcase_add_test(tc, test_render__upstream_error);
	tcase_add_test(tc, test_render__failed_event);
	tcase_add_test(tc, test_upframe__rewrites);
	tcase_add_test(tc, test_upframe__splices_bytes);
	tcase_add_test(tc, test_jscan__agrees_with_json_c);
	tcase_add_test(tc, test_jscan__walk);
	tcase_add_test(tc, test_jscan__string_scan_positions);
	tcase_add_test(tc, test_resume__prefix_of_echoed_history);
	tcase_add_test(tc, test_resume__tool_calls_and_frame);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- conversation keys (identity.c) and rate-limited logging ---- */

static int
is_hashed_key(const char *k)
{
	size_t i;

	if (k == NULL || strlen(k) != 34 || strncmp(k, "h_", 2) != 0)
		return 0;
	for (i = 2; i < 34; i++)
		if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f')))
			return 0;
	return 1;
}

START_TEST(test_conv_key__short_printable_kept)
{
	const char *in = "  sess-1 \"quoted\" \xc3\xa9  ";
	char *k = conversation_key(in, strlen(in));

	ck_assert_str_eq(k, "sess-1 \"quoted\" \xc3\xa9");
	free(k);
	ck_assert_ptr_null(conversation_key("   \t ", 5));
	ck_assert_ptr_null(conversation_key("", 0));
	ck_assert_ptr_null(conversation_key(NULL, 0));
}
END_TEST

START_TEST(test_conv_key__long_hashed_and_distinct)
{
	char a[600], b[600];
	char *ka, *kb, *k256;

	memset(a, 'x', sizeof(a));
	memcpy(b, a, sizeof(b));
	b[599] = 'y';
	ka = conversation_key(a, 300);
	ck_assert(is_hashed_key(ka));
	kb = conversation_key(a, 300);
	ck_assert_str_eq(ka, kb);		/* stable */
	free(kb);
	kb = conversation_key(b, 600);
	ck_assert(is_hashed_key(kb));
	ck_assert_str_ne(ka, kb);
	free(kb);
	/* past the old 512 limit: still a key, not ignored */
	kb = conversation_key(a, 600);
	ck_assert(is_hashed_key(kb));
	ck_assert_str_ne(ka, kb);
	free(kb);
	/* 256 bytes is what the store keeps: kept as it is */
	k256 = conversation_key(a, 256);
	ck_assert_uint_eq(strlen(k256), 256);
	free(k256);
	k256 = conversation_key(a, 257);
	ck_assert(is_hashed_key(k256));
	free(k256);
	free(ka);
}
END_TEST

START_TEST(test_conv_key__control_and_nul)
{
	char *k1 = conversation_key("a\0b", 3);
	char *k2 = conversation_key("a\0c", 3);
	char *k3 = conversation_key("a", 1);
	char *k4 = conversation_key("tab\there", 8);
	char *k5 = conversation_key("del\x7f", 4);

	ck_assert(is_hashed_key(k1));
	ck_assert(is_hashed_key(k2));
	ck_assert_str_ne(k1, k2);		/* not cut at the NUL */
	ck_assert_str_eq(k3, "a");
	ck_assert(is_hashed_key(k4));
	ck_assert(is_hashed_key(k5));
	free(k1);
	free(k2);
	free(k3);
	free(k4);
	free(k5);
}
END_TEST

START_TEST(test_log__ratelimit)
{
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(1000000);
	unsigned long long sup = 99;
	int i, allowed = 0;

	ck_assert(log_ratelimit_allow(&rl, 5000000, &sup));
	ck_assert_uint_eq(sup, 0);
	for (i = 1; i <= 1000; i++)
		allowed += log_ratelimit_allow(&rl, 5000000 + i * 100, &sup);
	ck_assert_int_eq(allowed, 0);
	ck_assert(log_ratelimit_allow(&rl, 6000001, &sup));
	ck_assert_uint_eq(sup, 1000);
	ck_assert(!log_ratelimit_allow(&rl, 6000002, &sup));
	ck_assert(log_ratelimit_allow(&rl, 9000000, &sup));
	ck_assert_uint_eq(sup, 1);
}
END_TEST

static Suite *
make_suite_hostile(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_conv_key__short_printable_kept);
	tcase_add_test(tc, test_conv_key__long_hashed_and_distinct);
	tcase_add_test(tc, test_conv_key__control_and_nul);
	tcase_add_test(tc, test_log__ratelimit);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(make_suite_poolmap());
	int failed;

	srunner_add_suite(sr, make_suite_render());
	srunner_add_suite(sr, make_suite_hostile());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
