/*
 * Tests of codexpool-sim: the cache model, prompt canonicalisation and
 * fault parsing as units (libsim.a), the protocol logic without sockets,
 * the test library's parsers, and the real simulator process over
 * loopback (WebSocket, HTTP, TLS) through testlib.
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <json-c/json.h>

#include "cache.h"
#include "faults.h"
#include "jwt.h"
#include "log.h"
#include "prompt.h"
#include "sim.h"
#include "testlib.h"

#define WS_PATH		"/backend-api/codex/responses"
#define TURN_MS		30000

static char *base_dir;		/* removed by main() after all tests */

/* ---- helpers ------------------------------------------------------------ */

static json_object *
jget(json_object *o, const char *path)
{
	char buf[256], *tok, *save = NULL;
	json_object *cur = o;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok != NULL && cur != NULL;
	    tok = strtok_r(NULL, ".", &save)) {
		if (json_object_is_type(cur, json_type_array)) {
			cur = json_object_array_get_idx(cur, (size_t)atoi(tok));
			continue;
		}
		if (!json_object_object_get_ex(cur, tok, &cur))
			return NULL;
	}
	return cur;
}

static const char *
jstr(json_object *o, const char *path)
{
	json_object *v = jget(o, path);

	return v && json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : NULL;
}

static int64_t
jint(json_object *o, const char *path)
{
	json_object *v = jget(o, path);

	return v ? json_object_get_int64(v) : -1;
}

static char *
make_dir(void)
{
	char *d = malloc(strlen(base_dir) + 16);

	ck_assert_ptr_nonnull(d);
	sprintf(d, "%s/t.XXXXXX", base_dir);
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

/* ---- unit: cache ------------------------------------------------------ */

static char *
bytes_of(size_t n, unsigned seed)
{
	char *p = malloc(n + 1);
	size_t i;
	unsigned x = seed * 2654435761u + 1;

	ck_assert_ptr_nonnull(p);
	for (i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (char)('a' + (x >> 16) % 26);
	}
	p[n] = '\0';
	return p;
}

static int64_t
probe_lookup(struct prompt_cache *c, const char *acct, const char *key,
    const char *p, size_t n, int store)
{
	struct cache_probe probe;
	int64_t cached;

	ck_assert_int_eq(cache_probe_init(&probe, acct, key, p, n), 0);
	cached = prompt_cache_lookup(c, &probe);
	if (store)
		prompt_cache_store(c, &probe);
	cache_probe_free(&probe);
	return cached;
}

START_TEST(test_cache__tokens_and_boundaries)
{
	struct cache_probe probe;
	char *p = bytes_of(4096 + 512, 1);

	ck_assert_int_eq(prompt_tokens(0), 0);
	ck_assert_int_eq(prompt_tokens(1), 1);
	ck_assert_int_eq(prompt_tokens(4), 1);
	ck_assert_int_eq(prompt_tokens(5), 2);
	ck_assert_int_eq(cache_boundary_tokens(0), 1024);
	ck_assert_int_eq(cache_boundary_tokens(2), 1280);

	ck_assert_int_eq(cache_probe_init(&probe, "a", "k", p, 4095), 0);
	ck_assert_uint_eq(probe.n, 0);
	ck_assert_int_eq(probe.tokens, 1024);
	cache_probe_free(&probe);
	ck_assert_int_eq(cache_probe_init(&probe, "a", "k", p, 4096), 0);
	ck_assert_uint_eq(probe.n, 1);
	cache_probe_free(&probe);
	ck_assert_int_eq(cache_probe_init(&probe, "a", "k", p, 4096 + 511), 0);
	ck_assert_uint_eq(probe.n, 1);
	cache_probe_free(&probe);
	ck_assert_int_eq(cache_probe_init(&probe, "a", "k", p, 4096 + 512), 0);
	ck_assert_uint_eq(probe.n, 2);
	ck_assert_int_eq(probe.tokens, 1152);
	cache_probe_free(&probe);
	free(p);
}
END_TEST

START_TEST(test_cache__longest_prefix)
{
	struct prompt_cache *c = prompt_cache_new(0);
	char *a = bytes_of(20000, 2), *b = bytes_of(20000, 3);

	/* 12000 bytes = 3000 tokens; the longest boundary <= 3000 is 2944. */
	ck_assert_int_eq(probe_lookup(c, "acct", "key", a, 12000, 1), 0);
	ck_assert_int_eq(probe_lookup(c, "acct", "key", a, 12000, 0), 2944);
	/* A longer prompt with the same start hits the stored prefix. */
	ck_assert_int_eq(probe_lookup(c, "acct", "key", a, 20000, 0), 2944);
	/* Shares only 5000 bytes (1250 tokens): boundary 1152. */
	memcpy(b, a, 5000);
	ck_assert_int_eq(probe_lookup(c, "acct", "key", b, 20000, 0), 1152);
	/* Shares less than 1024 tokens: nothing. */
	b[100] = a[100] == 'x' ? 'y' : 'x';
	ck_assert_int_eq(probe_lookup(c, "acct", "key", b, 20000, 0), 0);
	/* Too short to cache at all. */
	ck_assert_int_eq(probe_lookup(c, "acct", "key", a, 4000, 1), 0);
	ck_assert_int_eq(probe_lookup(c, "acct", "key", a, 4000, 0), 0);
	prompt_cache_free(c);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_cache__scope_isolation)
{
	struct prompt_cache *c = prompt_cache_new(0);
	char *a = bytes_of(8192, 4);

	ck_assert_int_eq(probe_lookup(c, "acct-1", "key-1", a, 8192, 1), 0);
	ck_assert_int_eq(probe_lookup(c, "acct-1", "key-1", a, 8192, 0), 2048);
	ck_assert_int_eq(probe_lookup(c, "acct-2", "key-1", a, 8192, 0), 0);
	ck_assert_int_eq(probe_lookup(c, "acct-1", "key-2", a, 8192, 0), 0);
	ck_assert_int_eq(probe_lookup(c, "acct-1", NULL, a, 8192, 0), 0);
	/* The scope separator keeps ("acct-1k","ey-1") apart. */
	ck_assert_int_eq(probe_lookup(c, "acct-1k", "ey-1", a, 8192, 0), 0);
	prompt_cache_free(c);
	free(a);
}
END_TEST

START_TEST(test_cache__memory_cap)
{
	struct prompt_cache *c = prompt_cache_new(10);
	char *a = bytes_of(4096 + 19 * 512, 5), *b;
	int i;

	ck_assert_uint_eq(prompt_cache_capacity(c), 10);
	/* 20 boundaries into 10 slots: the 10 shortest stay. */
	ck_assert_int_eq(probe_lookup(c, "x", "k", a, 4096 + 19 * 512, 1), 0);
	ck_assert_uint_eq(prompt_cache_entries(c), 10);
	ck_assert_uint_eq(prompt_cache_evictions(c), 10);
	ck_assert_int_eq(probe_lookup(c, "x", "k", a, 4096 + 19 * 512, 0),
	    cache_boundary_tokens(9));
	for (i = 0; i < 50; i++) {
		b = bytes_of(8192, 100 + (unsigned)i);
		probe_lookup(c, "x", "k", b, 8192, 1);
		free(b);
		ck_assert_uint_le(prompt_cache_entries(c), 10);
	}
	ck_assert_uint_eq(prompt_cache_entries(c), 10);
	prompt_cache_clear(c);
	ck_assert_uint_eq(prompt_cache_entries(c), 0);
	prompt_cache_free(c);
	free(a);
}
END_TEST

START_TEST(test_cache__lru_refresh)
{
	struct prompt_cache *c = prompt_cache_new(4);
	char *p[5];
	int i;

	for (i = 0; i < 5; i++)
		p[i] = bytes_of(4096, 200 + (unsigned)i);	/* one boundary each */
	for (i = 0; i < 4; i++)
		probe_lookup(c, "x", "k", p[i], 4096, 1);
	/* A hit makes p[0] the newest, so p[1] is evicted next. */
	ck_assert_int_eq(probe_lookup(c, "x", "k", p[0], 4096, 0), 1024);
	probe_lookup(c, "x", "k", p[4], 4096, 1);
	ck_assert_int_eq(probe_lookup(c, "x", "k", p[0], 4096, 0), 1024);
	ck_assert_int_eq(probe_lookup(c, "x", "k", p[1], 4096, 0), 0);
	ck_assert_int_eq(probe_lookup(c, "x", "k", p[4], 4096, 0), 1024);
	for (i = 0; i < 5; i++)
		free(p[i]);
	prompt_cache_free(c);
}
END_TEST

static Suite *
make_suite_cache(void)
{
	Suite *s = suite_create("cache");
	TCase *tc = tcase_create("model");

	tcase_add_test(tc, test_cache__tokens_and_boundaries);
	tcase_add_test(tc, test_cache__longest_prefix);
	tcase_add_test(tc, test_cache__scope_isolation);
	tcase_add_test(tc, test_cache__memory_cap);
	tcase_add_test(tc, test_cache__lru_refresh);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- unit: prompt and faults ------------------------------------------- */

static char *
canon_item(const char *json, size_t *len)
{
	struct sbuf sb;
	json_object *o = json_tokener_parse(json);

	ck_assert_ptr_nonnull(o);
	sbuf_init(&sb, 1 << 20);
	ck_assert_int_eq(prompt_add_item(&sb, o), 0);
	json_object_put(o);
	return sbuf_take(&sb, len);
}

START_TEST(test_prompt__output_equals_resent_input)
{
	char *a, *b;
	size_t la, lb;

	/* As the sim sends it, and as a client resends it. */
	a = canon_item("{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\","
	    "\"status\":\"completed\",\"content\":[{\"type\":\"output_text\","
	    "\"text\":\"hello\",\"annotations\":[]}]}", &la);
	b = canon_item("{\"role\":\"assistant\",\"type\":\"message\",\"content\":"
	    "[{\"type\":\"output_text\",\"text\":\"hello\"}]}", &lb);
	ck_assert_uint_eq(la, lb);
	ck_assert_mem_eq(a, b, la);
	free(a);
	free(b);
	/* Other items: key order, id and status do not matter... */
	a = canon_item("{\"type\":\"function_call\",\"id\":\"fc_1\",\"status\":\"completed\","
	    "\"call_id\":\"c1\",\"name\":\"sh\",\"arguments\":\"{}\"}", &la);
	b = canon_item("{\"arguments\":\"{}\",\"name\":\"sh\",\"call_id\":\"c1\","
	    "\"type\":\"function_call\"}", &lb);
	ck_assert_uint_eq(la, lb);
	ck_assert_mem_eq(a, b, la);
	free(b);
	/* ...but the content does. */
	b = canon_item("{\"arguments\":\"{ }\",\"name\":\"sh\",\"call_id\":\"c1\","
	    "\"type\":\"function_call\"}", &lb);
	ck_assert(la != lb || memcmp(a, b, la) != 0);
	free(a);
	free(b);
	/* Roles differ. */
	a = canon_item("{\"type\":\"message\",\"role\":\"user\",\"content\":\"x\"}", &la);
	b = canon_item("{\"type\":\"message\",\"role\":\"developer\",\"content\":\"x\"}", &lb);
	ck_assert(la != lb || memcmp(a, b, la) != 0);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_prompt__last_user_text)
{
	json_object *in = json_tokener_parse("[{\"type\":\"message\",\"role\":\"user\","
	    "\"content\":[{\"type\":\"input_text\",\"text\":\"first\"}]},"
	    "{\"type\":\"message\",\"role\":\"assistant\",\"content\":"
	    "[{\"type\":\"output_text\",\"text\":\"reply\"}]},"
	    "{\"type\":\"message\",\"role\":\"user\",\"content\":"
	    "[{\"type\":\"input_text\",\"text\":\"second\"},"
	    "{\"type\":\"input_text\",\"text\":\"part\"}]},"
	    "{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":\"o\"}]");
	char *t = prompt_last_user_text(in);

	ck_assert_str_eq(t, "second\npart");
	free(t);
	json_object_put(in);
	in = json_tokener_parse("\"plain\"");
	t = prompt_last_user_text(in);
	ck_assert_str_eq(t, "plain");
	free(t);
	json_object_put(in);
	in = json_tokener_parse("[]");
	ck_assert_ptr_null(prompt_last_user_text(in));
	json_object_put(in);
}
END_TEST

START_TEST(test_faults__parse_and_markers)
{
	struct sim_fault f;
	struct fault_queue q;
	char buf[64];

	ck_assert_int_eq(fault_parse("close_mid_stream", &f), 0);
	ck_assert_int_eq(f.kind, FAULT_CLOSE_MID_STREAM);
	ck_assert_int_eq(fault_parse("slow_start=250", &f), 0);
	ck_assert_int_eq(f.kind, FAULT_SLOW_START);
	ck_assert_int_eq(f.arg, 250);
	fault_format(&f, buf, sizeof(buf));
	ck_assert_str_eq(buf, "slow_start=250");
	ck_assert_int_eq(fault_parse("slow_start", &f), -1);
	ck_assert_int_eq(fault_parse("slow_start=x", &f), -1);
	ck_assert_int_eq(fault_parse("reset=1", &f), -1);
	ck_assert_int_eq(fault_parse("nonsense", &f), -1);
	ck_assert_int_eq(fault_parse("reject_handshake", &f), 0);
	ck_assert_int_eq(f.arg, 503);
	ck_assert_int_eq(fault_parse("reject_handshake=429", &f), 0);
	ck_assert_int_eq(f.arg, 429);

	ck_assert_int_eq(fault_from_marker("hello [[sim:stall]] there", &f), 1);
	ck_assert_int_eq(f.kind, FAULT_STALL);
	ck_assert_int_eq(fault_from_marker("[[sim:slow_start=10]]", &f), 1);
	ck_assert_int_eq(f.arg, 10);
	ck_assert_int_eq(fault_from_marker("no marker", &f), 0);
	ck_assert_int_eq(fault_from_marker(NULL, &f), 0);
	ck_assert_int_eq(fault_from_marker("[[sim:bogus]]", &f), -1);
	ck_assert_int_eq(fault_from_marker("[[sim:reset", &f), -1);

	fault_queue_clear(&q);
	fault_parse("overloaded", &f);
	ck_assert_int_eq(fault_queue_push(&q, &f, 2), 0);
	fault_parse("reset", &f);
	ck_assert_int_eq(fault_queue_push(&q, &f, 1), 0);
	ck_assert_int_eq(fault_queue_push(&q, &f, 0), -1);
	ck_assert_int_eq(fault_queue_take(&q, &f), 1);
	ck_assert_int_eq(f.kind, FAULT_OVERLOADED);
	ck_assert_int_eq(fault_queue_take(&q, &f), 1);
	ck_assert_int_eq(f.kind, FAULT_OVERLOADED);
	ck_assert_int_eq(fault_queue_take(&q, &f), 1);
	ck_assert_int_eq(f.kind, FAULT_RESET);
	ck_assert_int_eq(fault_queue_take(&q, &f), 0);
	fault_parse("reject_handshake=502", &f);
	ck_assert_int_eq(fault_queue_push(&q, &f, 1), 0);
	ck_assert_int_eq(fault_queue_take(&q, &f), 0);
	ck_assert_int_eq(fault_queue_take_reject(&q), 502);
	ck_assert_int_eq(fault_queue_take_reject(&q), 0);
}
END_TEST

static Suite *
make_suite_prompt(void)
{
	Suite *s = suite_create("prompt");
	TCase *tc = tcase_create("canonical");

	tcase_add_test(tc, test_prompt__output_equals_resent_input);
	tcase_add_test(tc, test_prompt__last_user_text);
	tcase_add_test(tc, test_faults__parse_and_markers);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- unit: the protocol logic without sockets -------------------------- */

static struct sim usim;

static void
respond_setup(void)
{
	struct sim_opts o;
	char err[128];

	sim_opts_defaults(&o);
	o.accounts = 1;
	o.backends = 2;
	o.deltas = 3;
	o.have_seed = 1;
	o.seed = 7;
	ck_assert_int_eq(sim_init(&usim, &o, err, sizeof(err)), 0);
}

static void
respond_teardown(void)
{
	sim_free(&usim);
}

/* Runs one request; returns the frames as a JSON array and the step kinds
 * as a string ("F" frame, "I" idle, "C" close, "R" reset, "S" stall). */
static json_object *
run_plan(struct sim_session *s, const char *req, char *kinds, size_t ksize)
{
	json_object *frames = json_object_new_array();
	struct plan plan;
	struct plan_step *st;
	size_t k = 0;

	sim_respond(&usim, s, req, strlen(req), &plan);
	while ((st = plan_pop(&plan)) != NULL) {
		if (k + 1 < ksize)
			kinds[k++] = "FCRIS"[st->kind];
		if (st->kind == STEP_FRAME)
			json_object_array_add(frames, json_tokener_parse(st->data));
		if (st->kind == STEP_IDLE)
			s->busy = 0;
		step_free(st);
	}
	kinds[k] = '\0';
	return frames;
}

START_TEST(test_respond__event_sequence)
{
	struct sim_session s;
	json_object *frames, *in = json_object_new_array(), *f;
	char kinds[64], *req, *types, *text;
	size_t i, n;
	int64_t seq = -1;

	session_init(&s, 1, 0, usim.auth.accounts[0].id);
	json_object_array_add(in, tl_msg("user", "What is the meaning of all this, "
	    "asked the very long question"));
	req = tl_response_create(NULL, "be brief", "k", NULL, in);
	frames = run_plan(&s, req, kinds, sizeof(kinds));
	types = tl_frames_types(frames);
	ck_assert_str_eq(types, "codex.rate_limits response.created response.in_progress "
	    "response.output_item.added response.content_part.added "
	    "response.output_text.delta response.output_text.delta "
	    "response.output_text.delta response.output_text.done "
	    "response.content_part.done response.output_item.done response.completed");
	ck_assert_str_eq(kinds, "FFFFFFFFFFFFI");
	/* sequence_number counts up from 0 on every response.* event. */
	n = json_object_array_length(frames);
	for (i = 1; i < n; i++) {
		f = json_object_array_get_idx(frames, i);
		ck_assert_int_eq(jint(f, "sequence_number"), seq + 1);
		seq = jint(f, "sequence_number");
	}
	text = tl_output_text(frames);
	ck_assert_str_eq(text, "sim reply to: What is the meaning of all this, asked t");
	ck_assert_str_eq(jstr(tl_frames_find(frames, "response.output_text.done"), "text"),
	    text);
	ck_assert_ptr_nonnull(tl_response_id(tl_frames_find(frames, "response.completed")));
	ck_assert_int_eq(strncmp(tl_response_id(tl_frames_find(frames,
	    "response.completed")), "resp_", 5), 0);
	ck_assert_str_eq(s.last_resp_id, tl_response_id(tl_frames_find(frames,
	    "response.completed")));
	free(text);
	free(types);
	free(req);
	json_object_put(frames);
	json_object_put(in);
	session_free(&s);
}
END_TEST

START_TEST(test_respond__stateless_equals_incremental)
{
	struct sim_session s1, s2;
	json_object *hist = json_object_new_array(), *f1, *f2, *in2;
	char kinds[64], *instr = tl_text(16, 1), *req;
	struct tl_usage u1, u2;
	const char *id;

	session_init(&s1, 1, 0, usim.auth.accounts[0].id);
	session_init(&s2, 2, 1, usim.auth.accounts[0].id);
	json_object_array_add(hist, tl_msg("user", "turn one"));
	req = tl_response_create(NULL, instr, "k", NULL, hist);
	f1 = run_plan(&s1, req, kinds, sizeof(kinds));
	free(req);
	id = tl_response_id(tl_frames_find(f1, "response.completed"));
	/* Incremental on backend 0. */
	in2 = json_object_new_array();
	json_object_array_add(in2, tl_msg("user", "turn two"));
	req = tl_response_create(NULL, instr, "k", id, in2);
	json_object_put(f1);
	f1 = run_plan(&s1, req, kinds, sizeof(kinds));
	free(req);
	/* The same conversation, stateless, on backend 1 (warmed by the
	 * same first turn). */
	req = tl_response_create(NULL, instr, "k", NULL, hist);
	f2 = run_plan(&s2, req, kinds, sizeof(kinds));
	free(req);
	tl_history_add_output(hist, f2);
	json_object_array_add(hist, tl_msg("user", "turn two"));
	json_object_put(f2);
	req = tl_response_create(NULL, instr, "k", NULL, hist);
	f2 = run_plan(&s2, req, kinds, sizeof(kinds));
	free(req);
	ck_assert_int_eq(tl_usage_of(tl_frames_find(f1, "response.completed"), &u1), 0);
	ck_assert_int_eq(tl_usage_of(tl_frames_find(f2, "response.completed"), &u2), 0);
	/* Same prompt bytes, same tokens, same cache state: same numbers. */
	ck_assert_int_eq(u1.input_tokens, u2.input_tokens);
	ck_assert_int_eq(u1.cached_tokens, u2.cached_tokens);
	ck_assert_int_gt(u1.cached_tokens, 0);
	json_object_put(f1);
	json_object_put(f2);
	json_object_put(hist);
	json_object_put(in2);
	free(instr);
	session_free(&s1);
	session_free(&s2);
}
END_TEST

START_TEST(test_respond__errors)
{
	struct sim_session s;
	json_object *frames, *in = json_object_new_array();
	char kinds[64], *req, *r2;
	const char *first;

	session_init(&s, 1, 0, usim.auth.accounts[0].id);
	json_object_array_add(in, tl_msg("user", "hi"));
	req = tl_response_create(NULL, "x", "k", NULL, in);

	/* Busy: the answer is urgent and does not disturb the response. */
	s.busy = 1;
	frames = run_plan(&s, req, kinds, sizeof(kinds));
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.code"),
	    "conversation_already_has_active_response");
	ck_assert_int_eq(jint(json_object_array_get_idx(frames, 0), "status"), 400);
	json_object_put(frames);
	s.busy = 0;

	frames = run_plan(&s, "{not json", kinds, sizeof(kinds));
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.code"),
	    "invalid_json");
	json_object_put(frames);
	frames = run_plan(&s, "{\"type\":\"response.cancel\"}", kinds, sizeof(kinds));
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.code"),
	    "unsupported_message_type");
	json_object_put(frames);

	/* Only the newest completed response can be continued. */
	frames = run_plan(&s, req, kinds, sizeof(kinds));
	first = tl_response_id(tl_frames_find(frames, "response.completed"));
	ck_assert_ptr_nonnull(first);
	r2 = tl_response_create(NULL, "x", "k", first, in);
	json_object_put(frames);
	frames = run_plan(&s, r2, kinds, sizeof(kinds));
	ck_assert_ptr_nonnull(tl_frames_find(frames, "response.completed"));
	json_object_put(frames);
	frames = run_plan(&s, r2, kinds, sizeof(kinds));	/* `first` again */
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.code"),
	    "previous_response_not_found");
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.param"),
	    "previous_response_id");
	json_object_put(frames);
	free(r2);

	/* Connection age. */
	s.opened -= (usim.o.max_conn_age + 1) * USEC_PER_SEC;
	frames = run_plan(&s, req, kinds, sizeof(kinds));
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.code"),
	    "websocket_connection_limit_reached");
	json_object_put(frames);

	free(req);
	json_object_put(in);
	session_free(&s);
}
END_TEST

START_TEST(test_respond__fault_plans)
{
	static const struct {
		const char *marker;
		const char *kinds;
	} cases[] = {
		{ "close_before_first", "C" },
		{ "reset", "R" },
		{ "stall", "S" },
		{ "usage_limit", "FI" },
		{ "token_expired", "FI" },
		{ "overloaded", "FI" },
		{ "conn_limit", "FI" },
		{ "server_error", "FFFI" },
		{ "close_mid_stream", "FFFFFFFC" },
		{ "close_idle", "FFFFFFFFFFFFIC" },
		{ "slow_start=5", "FFFFFFFFFFFFI" },
	};
	struct sim_session s;
	json_object *frames, *in;
	char kinds[64], text[64], *req;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		session_init(&s, 1, 0, usim.auth.accounts[0].id);
		in = json_object_new_array();
		snprintf(text, sizeof(text), "please [[sim:%s]]", cases[i].marker);
		json_object_array_add(in, tl_msg("user", text));
		req = tl_response_create(NULL, "x", "k", NULL, in);
		frames = run_plan(&s, req, kinds, sizeof(kinds));
		ck_assert_msg(strcmp(kinds, cases[i].kinds) == 0, "%s: steps %s, want %s",
		    cases[i].marker, kinds, cases[i].kinds);
		free(req);
		json_object_put(frames);
		json_object_put(in);
		session_free(&s);
	}
}
END_TEST

/* The frames of one request with a body built by hand. */
static json_object *
run_body(struct sim_session *s, const char *body, const struct sim_knobs *k,
    struct plan *keep)
{
	json_object *frames = json_object_new_array();
	struct plan plan;
	struct plan_step *st;

	sim_respond_knobs(&usim, s, body, strlen(body), k, &plan);
	if (keep != NULL) {
		/* the caller looks at the steps (delays) too */
		for (st = plan.head; st != NULL; st = st->next)
			if (st->kind == STEP_FRAME)
				json_object_array_add(frames, json_tokener_parse(st->data));
		*keep = plan;
		s->busy = 0;
		return frames;
	}
	while ((st = plan_pop(&plan)) != NULL) {
		if (st->kind == STEP_FRAME)
			json_object_array_add(frames, json_tokener_parse(st->data));
		step_free(st);
	}
	s->busy = 0;
	return frames;
}

/* Checks a function call's events and returns its arguments (borrowed). */
static const char *
check_function_call(json_object *frames, const char *name, int out_index)
{
	json_object *f, *added = NULL, *done, *argsdone, *completed, *item;
	char joined[512] = "";
	size_t i, n = json_object_array_length(frames);
	int deltas = 0;
	const char *fc_id;

	for (i = 0; i < n; i++) {
		f = json_object_array_get_idx(frames, i);
		if (strcmp(jstr(f, "type"), "response.output_item.added") == 0 &&
		    strcmp(jstr(f, "item.type"), "function_call") == 0)
			added = f;
	}
	ck_assert_ptr_nonnull(added);
	ck_assert_int_eq(jint(added, "output_index"), out_index);
	ck_assert_str_eq(jstr(added, "item.name"), name);
	ck_assert_str_eq(jstr(added, "item.arguments"), "");
	ck_assert_str_eq(jstr(added, "item.status"), "in_progress");
	fc_id = jstr(added, "item.id");
	ck_assert_int_eq(strncmp(fc_id, "fc_", 3), 0);
	ck_assert_int_eq(strncmp(jstr(added, "item.call_id"), "call_", 5), 0);
	for (i = 0; i < n; i++) {
		f = json_object_array_get_idx(frames, i);
		if (strcmp(jstr(f, "type"), "response.function_call_arguments.delta") != 0)
			continue;
		ck_assert_str_eq(jstr(f, "item_id"), fc_id);
		ck_assert_int_eq(jint(f, "output_index"), out_index);
		strncat(joined, jstr(f, "delta"), sizeof(joined) - strlen(joined) - 1);
		deltas++;
	}
	ck_assert_int_ge(deltas, 2);
	argsdone = tl_frames_find(frames, "response.function_call_arguments.done");
	ck_assert_ptr_nonnull(argsdone);
	ck_assert_str_eq(jstr(argsdone, "item_id"), fc_id);
	ck_assert_str_eq(jstr(argsdone, "arguments"), joined);
	ck_assert_str_eq(jstr(argsdone, "name"), name);
	done = tl_frames_find(frames, "response.output_item.done");
	ck_assert_str_eq(jstr(done, "item.type"), "function_call");
	ck_assert_str_eq(jstr(done, "item.arguments"), joined);
	ck_assert_str_eq(jstr(done, "item.call_id"), jstr(added, "item.call_id"));
	ck_assert_str_eq(jstr(done, "item.status"), "completed");
	completed = tl_frames_find(frames, "response.completed");
	item = jget(completed, "response.output");
	ck_assert_int_eq(json_object_array_length(item), out_index + 1);
	item = json_object_array_get_idx(item, (size_t)out_index);
	ck_assert_str_eq(jstr(item, "type"), "function_call");
	ck_assert_str_eq(jstr(item, "name"), name);
	ck_assert_str_eq(jstr(item, "arguments"), joined);
	ck_assert_str_eq(jstr(item, "call_id"), jstr(added, "item.call_id"));
	/* The arguments are a JSON object. */
	f = json_tokener_parse(joined);
	ck_assert_ptr_nonnull(f);
	ck_assert(json_object_is_type(f, json_type_object));
	json_object_put(f);
	return jstr(item, "arguments");
}

START_TEST(test_respond__function_call_on_request)
{
	struct sim_session s;
	struct sim_knobs k;
	json_object *frames, *f;
	char *types;

	session_init(&s, 1, 0, usim.auth.accounts[0].id);
	/* Asked for in the body's "sim" object. */
	frames = run_body(&s, "{\"type\":\"response.create\",\"model\":\"m\","
	    "\"input\":\"what is the weather\",\"sim\":{\"function_call\":\"get_weather\"}}",
	    NULL, NULL);
	types = tl_frames_types(frames);
	ck_assert_str_eq(types, "codex.rate_limits response.created response.in_progress "
	    "response.output_item.added response.function_call_arguments.delta "
	    "response.function_call_arguments.delta response.function_call_arguments.delta "
	    "response.function_call_arguments.done response.output_item.done "
	    "response.completed");
	check_function_call(frames, "get_weather", 0);
	ck_assert_int_eq(tl_frames_count(frames, "response.output_text.delta"), 0);
	free(types);
	json_object_put(frames);

	/* "CALL:NAME" in the last user text, when the request has tools. */
	frames = run_body(&s, "{\"type\":\"response.create\",\"input\":\"please "
	    "CALL:lookup_file. thanks\",\"tools\":[{\"type\":\"function\",\"name\":"
	    "\"lookup_file\",\"parameters\":{}}]}", NULL, NULL);
	check_function_call(frames, "lookup_file", 0);
	json_object_put(frames);
	/* Without tools the marker is just text. */
	frames = run_body(&s, "{\"type\":\"response.create\",\"input\":\"please "
	    "CALL:lookup_file\"}", NULL, NULL);
	ck_assert_ptr_null(tl_frames_find(frames, "response.function_call_arguments.done"));
	ck_assert_int_gt(tl_frames_count(frames, "response.output_text.delta"), 0);
	json_object_put(frames);

	/* Outside knobs (HTTP headers) win over the body; with a reasoning
	 * item first, the call is output 1. */
	sim_knobs_init(&k);
	ck_assert_int_eq(sim_knob_set(&k, "function_call", "shell"), 0);
	ck_assert_int_eq(sim_knob_set(&k, "reasoning", "true"), 0);
	frames = run_body(&s, "{\"type\":\"response.create\",\"input\":\"x\","
	    "\"sim\":{\"function_call\":\"other\"}}", &k, NULL);
	check_function_call(frames, "shell", 1);
	f = json_object_array_get_idx(frames, 3);
	ck_assert_str_eq(jstr(f, "type"), "response.output_item.added");
	ck_assert_str_eq(jstr(f, "item.type"), "reasoning");
	ck_assert_int_eq(tl_frames_count(frames, "response.reasoning_summary_text.delta"), 3);
	f = tl_frames_find(frames, "response.reasoning_summary_text.done");
	ck_assert_str_eq(jstr(f, "text"), "Thinking about: x");
	ck_assert_int_eq(jint(f, "summary_index"), 0);
	f = tl_frames_find(frames, "response.completed");
	ck_assert_str_eq(jstr(f, "response.output.0.type"), "reasoning");
	ck_assert_str_eq(jstr(f, "response.output.0.summary.0.text"), "Thinking about: x");
	ck_assert_int_gt(jint(f, "response.usage.output_tokens_details.reasoning_tokens"), 0);
	ck_assert_int_gt(jint(f, "response.usage.output_tokens"),
	    jint(f, "response.usage.output_tokens_details.reasoning_tokens"));
	json_object_put(frames);

	/* Bad knobs are refused, not ignored. */
	ck_assert_int_eq(sim_knob_set(&k, "function_call", "bad name!"), -1);
	ck_assert_int_eq(sim_knob_set(&k, "deltas", "0"), -1);
	ck_assert_int_eq(sim_knob_set(&k, "first_event_ms", "-1"), -1);
	ck_assert_int_eq(sim_knob_set(&k, "nosuch", "1"), -1);
	frames = run_body(&s, "{\"type\":\"response.create\",\"input\":\"x\","
	    "\"sim\":{\"deltas\":\"many\"}}", NULL, NULL);
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.code"),
	    "invalid_sim_option");
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.param"),
	    "sim.deltas");
	json_object_put(frames);
	session_free(&s);
}
END_TEST

/* A request whose body asks for a function call "run". */
static json_object *
call_turn(struct sim_session *s, struct tl_req *r)
{
	char *req = tl_req_ws(r);
	json_object *o = json_tokener_parse(req), *frames;

	json_object_object_add(o, "sim", json_tokener_parse("{\"function_call\":\"run\"}"));
	frames = run_body(s, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
	    NULL, NULL);
	json_object_put(o);
	free(req);
	return frames;
}

static json_object *
call_output(const char *call_id)
{
	json_object *out = json_object_new_object();

	json_object_object_add(out, "type", json_object_new_string("function_call_output"));
	json_object_object_add(out, "call_id", json_object_new_string(call_id));
	json_object_object_add(out, "output", json_object_new_string("done"));
	return out;
}

/* A function call resent as input (stateless) is the same prompt as its
 * continuation (previous_response_id), and stays in the cache. */
START_TEST(test_respond__function_call_history_is_cached)
{
	struct sim_session s1, s2;
	json_object *hist = json_object_new_array(), *in2 = json_object_new_array();
	json_object *frames, *frames2;
	char *instr = tl_text(16, 3), *req;
	struct tl_req r = { .prompt_cache_key = "fc" };
	struct tl_usage u1, u2;

	r.instructions = instr;
	session_init(&s1, 1, 0, usim.auth.accounts[0].id);
	session_init(&s2, 2, 1, usim.auth.accounts[0].id);
	json_object_array_add(hist, tl_msg("user", "run it"));
	r.input = hist;
	frames = call_turn(&s1, &r);
	frames2 = call_turn(&s2, &r);
	ck_assert_int_eq(tl_history_add_output(hist, frames), 1);
	json_object_put(frames);
	ck_assert_str_eq(jstr(json_object_array_get_idx(hist, 1), "type"), "function_call");
	json_object_array_add(hist, call_output(jstr(json_object_array_get_idx(hist, 1),
	    "call_id")));
	req = tl_req_ws(&r);
	frames = run_body(&s1, req, NULL, NULL);
	free(req);
	ck_assert_int_eq(tl_usage_of(tl_frames_find(frames, "response.completed"), &u1), 0);
	json_object_put(frames);
	/* the same turn as a continuation: only the call's output */
	json_object_array_add(in2, call_output(jstr(tl_frames_find(frames2,
	    "response.output_item.done"), "item.call_id")));
	json_object_put(frames2);
	r.input = in2;
	r.previous_response_id = s2.last_resp_id;
	req = tl_req_ws(&r);
	frames = run_body(&s2, req, NULL, NULL);
	free(req);
	ck_assert_int_eq(tl_usage_of(tl_frames_find(frames, "response.completed"), &u2), 0);
	json_object_put(frames);
	/* Call ids differ between the two runs but have the same length. */
	ck_assert_int_eq(u1.input_tokens, u2.input_tokens);
	ck_assert_int_gt(u1.cached_tokens, u1.input_tokens * 9 / 10);
	json_object_put(hist);
	json_object_put(in2);
	free(instr);
	session_free(&s1);
	session_free(&s2);
}
END_TEST

START_TEST(test_respond__pacing_and_sse)
{
	struct sim_session s;
	struct sim_knobs k;
	struct plan plan;
	struct plan_step *st;
	json_object *frames;
	char *types;
	int i;

	session_init(&s, 1, 0, usim.auth.accounts[0].id);
	/* first_event_ms delays the first frame, delta_delay_ms each delta. */
	frames = run_body(&s, "{\"type\":\"response.create\",\"input\":\"pace me\","
	    "\"sim\":{\"first_event_ms\":70,\"delta_delay_ms\":9,\"deltas\":5}}",
	    NULL, &plan);
	ck_assert_int_eq(tl_frames_count(frames, "response.output_text.delta"), 5);
	for (st = plan.head, i = 0; st != NULL; st = st->next, i++) {
		json_object *f = st->kind == STEP_FRAME ? json_tokener_parse(st->data) : NULL;
		const char *t = f ? jstr(f, "type") : "";

		if (i == 0)
			ck_assert_int_eq(st->delay_ms, 70);
		else if (strcmp(t, "response.output_text.delta") == 0)
			ck_assert_int_eq(st->delay_ms, 9);
		else
			ck_assert_int_eq(st->delay_ms, 0);
		json_object_put(f);
	}
	plan_free(&plan);
	json_object_put(frames);

	/* HTTP/SSE: no "type" needed, no codex.rate_limits event (headers
	 * carry them), and the first-event delay moves to response.created. */
	s.sse = 1;
	frames = run_body(&s, "{\"input\":\"over http\",\"stream\":true,"
	    "\"sim\":{\"first_event_ms\":30}}", NULL, &plan);
	types = tl_frames_types(frames);
	ck_assert_str_eq(types, "response.created response.in_progress "
	    "response.output_item.added response.content_part.added "
	    "response.output_text.delta response.output_text.delta "
	    "response.output_text.delta response.output_text.done "
	    "response.content_part.done response.output_item.done response.completed");
	ck_assert_int_eq(plan.head->delay_ms, 30);
	plan_free(&plan);
	free(types);
	json_object_put(frames);
	frames = run_body(&s, "{\"input\":\"not streamed\"}", NULL, NULL);
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "type"), "error");
	ck_assert_int_eq(jint(json_object_array_get_idx(frames, 0), "status"), 400);
	ck_assert_str_eq(jstr(json_object_array_get_idx(frames, 0), "error.param"),
	    "stream");
	json_object_put(frames);
	sim_knobs_init(&k);
	session_free(&s);
}
END_TEST

START_TEST(test_respond__send_time_stamp)
{
	char buf[SIM_STAMP_MAX], out[256];
	const char *obj = "{\"type\":\"x\"}";
	json_object *o;
	int64_t now = (int64_t)time(NULL) * 1000000, us;
	size_t n;

	n = sim_stamp_suffix(obj, strlen(obj), buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	snprintf(out, sizeof(out), "%.*s%.*s", (int)strlen(obj) - 1, obj, (int)n, buf);
	o = json_tokener_parse(out);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(jstr(o, "type"), "x");
	us = jint(o, "sim_sent_us");
	/* CLOCK_REALTIME microseconds */
	ck_assert_int_ge(us, now - 60 * 1000000LL);
	ck_assert_int_le(us, now + 60 * 1000000LL);
	json_object_put(o);
	/* rate limits repeat unchanged, like the backend's */
	obj = "{\"type\":\"codex.rate_limits\",\"plan_type\":\"plus\"}";
	ck_assert_uint_eq(sim_stamp_suffix(obj, strlen(obj), buf, sizeof(buf)), 0);
	n = sim_stamp_suffix("{}", 2, buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(buf[0], '"');
	ck_assert_int_eq(sim_stamp_suffix("[1]", 3, buf, sizeof(buf)), 0);
	ck_assert_int_eq(sim_stamp_suffix("{", 1, buf, sizeof(buf)), 0);
}
END_TEST

static Suite *
make_suite_respond(void)
{
	Suite *s = suite_create("respond");
	TCase *tc = tcase_create("plans");

	tcase_add_checked_fixture(tc, respond_setup, respond_teardown);
	tcase_add_test(tc, test_respond__event_sequence);
	tcase_add_test(tc, test_respond__stateless_equals_incremental);
	tcase_add_test(tc, test_respond__errors);
	tcase_add_test(tc, test_respond__fault_plans);
	tcase_add_test(tc, test_respond__function_call_on_request);
	tcase_add_test(tc, test_respond__function_call_history_is_cached);
	tcase_add_test(tc, test_respond__pacing_and_sse);
	tcase_add_test(tc, test_respond__send_time_stamp);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- unit: testlib parsers -------------------------------------------- */

START_TEST(test_testlib__sse_and_headers)
{
	const char *body =
	    ": comment\n"
	    "event: response.created\n"
	    "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\"}}\n\n"
	    "data: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\r\n\r\n"
	    "event: response.output_text.delta\n"
	    "data: {\"type\":\"response.output_text.delta\",\n"
	    "data: \"delta\":\"b\"}\n\n"
	    "event: response.completed\n"
	    "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r1\","
	    "\"usage\":{\"input_tokens\":10,\"input_tokens_details\":"
	    "{\"cached_tokens\":4},\"output_tokens\":2,\"total_tokens\":12}}}";
	const char *hdrs = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	    "X-Thing:  spaced value \r\n\r\n";
	json_object *c, *events;
	struct tl_usage u;
	char *v;

	ck_assert_int_eq(tl_sse_count(body, "response.output_text.delta"), 2);
	ck_assert_int_eq(tl_sse_count(body, "response.created"), 1);
	c = tl_sse_completed(body);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(tl_usage_of(c, &u), 0);
	ck_assert_int_eq(u.input_tokens, 10);
	ck_assert_int_eq(u.cached_tokens, 4);
	ck_assert_int_eq(u.total_tokens, 12);
	ck_assert_str_eq(tl_response_id(c), "r1");
	json_object_put(c);
	events = tl_sse_events(body);
	ck_assert_uint_eq(json_object_array_length(events), 4);
	json_object_put(events);

	v = tl_header_get(hdrs, "x-thing");
	ck_assert_str_eq(v, "spaced value");
	free(v);
	v = tl_header_get(hdrs, "content-type");
	ck_assert_str_eq(v, "text/event-stream");
	free(v);
	ck_assert_ptr_null(tl_header_get(hdrs, "content-length"));
}
END_TEST

START_TEST(test_testlib__builders)
{
	char *a = tl_text(4, 1), *b = tl_text(4, 1), *c = tl_text(4, 2), *req;
	json_object *hist = json_object_new_array(), *frames, *o;

	ck_assert_uint_eq(strlen(a), 4096);
	ck_assert_str_eq(a, b);
	ck_assert_str_ne(a, c);
	json_object_array_add(hist, tl_msg("user", "hi"));
	req = tl_response_create("m", "ins", "pck", "resp_1", hist);
	o = json_tokener_parse(req);
	ck_assert_str_eq(jstr(o, "type"), "response.create");
	ck_assert_str_eq(jstr(o, "previous_response_id"), "resp_1");
	ck_assert_str_eq(jstr(o, "prompt_cache_key"), "pck");
	ck_assert_str_eq(jstr(o, "input.0.content.0.type"), "input_text");
	ck_assert_ptr_null(jget(o, "generate"));
	json_object_put(o);
	free(req);
	req = tl_responses_body("m", NULL, NULL, 1, hist);
	o = json_tokener_parse(req);
	ck_assert_ptr_null(jget(o, "type"));
	ck_assert_ptr_null(jget(o, "instructions"));
	ck_assert(json_object_get_boolean(jget(o, "stream")));
	json_object_put(o);
	free(req);

	frames = json_tokener_parse("[{\"type\":\"response.output_item.done\",\"item\":"
	    "{\"type\":\"message\",\"id\":\"m1\",\"status\":\"completed\",\"role\":"
	    "\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"yo\"}]}},"
	    "{\"type\":\"response.completed\",\"response\":{\"id\":\"r\"}}]");
	ck_assert_int_eq(tl_history_add_output(hist, frames), 1);
	ck_assert_uint_eq(json_object_array_length(hist), 2);
	ck_assert_ptr_null(jget(hist, "1.id"));
	ck_assert_ptr_null(jget(hist, "1.status"));
	ck_assert_str_eq(jstr(hist, "1.content.0.text"), "yo");
	json_object_put(frames);
	json_object_put(hist);
	free(a);
	free(b);
	free(c);
}
END_TEST

START_TEST(test_testlib__processes)
{
	char *sleeper[] = { "sleep", "30", NULL };
	char *truth[] = { "sh", "-c", "exit 3", NULL };
	pid_t pid;

	pid = tl_spawn(NULL, sleeper);
	ck_assert_int_gt(pid, 0);
	ck_assert(tl_alive(pid));
	ck_assert_int_eq(tl_wait_exit(pid, 50), -1001);
	ck_assert_int_eq(tl_stop(pid, SIGTERM, 10000), -SIGTERM);
	ck_assert_int_eq(tl_run(NULL, truth, 10000), 3);
}
END_TEST

/*
 * A one-shot raw HTTP server in a child process: reads one request, then
 * writes reply in pieces of the given sizes (0-terminated list), so the
 * client sees chunk headers and SSE lines split across reads.
 */
static pid_t
raw_server(int *port, const char *reply, const size_t *pieces)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	pid_t pid;
	int ls, c;

	ls = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(ls, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(ls, 4), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char buf[4096];
		size_t off = 0, i, got = 0;
		ssize_t n;

		c = accept(ls, NULL, NULL);
		while (c >= 0 && (n = read(c, buf + got, sizeof(buf) - 1 - got)) > 0) {
			got += (size_t)n;
			buf[got] = '\0';
			if (strstr(buf, "\r\n\r\n") != NULL)
				break;
		}
		for (i = 0; pieces[i] != 0 && off < strlen(reply); i++) {
			size_t len = pieces[i];

			if (off + len > strlen(reply))
				len = strlen(reply) - off;
			if (write(c, reply + off, len) < 0)
				break;
			off += len;
			usleep(20000);
		}
		if (off < strlen(reply) && write(c, reply + off, strlen(reply) - off) < 0)
			_exit(1);
		close(c);
		_exit(0);
	}
	close(ls);
	return pid;
}

START_TEST(test_testlib__chunked_sse)
{
	static const char *const chunks[] = {
		"event: response.created\ndata: {\"type\":\"a\"}\n\n",
		"event: response.completed\r\n",
		"data: {\"type\":\"b\",\"n\":1}\n\n",
		NULL
	};
	char reply[1024];
	size_t off, i, bodylen = 0;
	static const size_t pieces[] = { 7, 50, 3, 1, 1, 30, 9, 2, 0 };
	struct tl_response r;
	struct tl_stream *st;
	char *ev, *data;
	int port;
	pid_t pid;

	off = (size_t)snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (i = 0; chunks[i] != NULL; i++) {
		off += (size_t)snprintf(reply + off, sizeof(reply) - off, "%zx\r\n%s\r\n",
		    strlen(chunks[i]), chunks[i]);
		bodylen += strlen(chunks[i]);
	}
	snprintf(reply + off, sizeof(reply) - off, "0\r\n\r\n");

	/* Streaming, event by event. */
	pid = raw_server(&port, reply, pieces);
	st = tl_stream_open(NULL, "127.0.0.1", port, "POST", "/v1/responses", NULL,
	    "{}", 2);
	ck_assert_ptr_nonnull(st);
	ck_assert_int_eq(tl_stream_status(st), 200);
	ck_assert_int_eq(tl_stream_read_event(st, &ev, &data, 10000), 1);
	ck_assert_str_eq(ev, "response.created");
	ck_assert_str_eq(data, "{\"type\":\"a\"}");
	free(ev);
	free(data);
	ck_assert_int_eq(tl_stream_read_event(st, &ev, &data, 10000), 1);
	ck_assert_str_eq(ev, "response.completed");
	ck_assert_str_eq(data, "{\"type\":\"b\",\"n\":1}");
	free(ev);
	free(data);
	ck_assert_int_eq(tl_stream_read_event(st, &ev, &data, 10000), 0);
	tl_stream_close(st, 0);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);

	/* Whole body, de-chunked. */
	pid = raw_server(&port, reply, pieces);
	ck_assert_int_eq(tl_http("127.0.0.1", port, "GET", "/x", NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_int_eq(tl_sse_count(r.body, "response.completed"), 1);
	ck_assert_uint_eq(r.bodylen, bodylen);
	tl_response_free(&r);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
}
END_TEST

static Suite *
make_suite_testlib(void)
{
	Suite *s = suite_create("testlib");
	TCase *tc = tcase_create("parsers");

	tcase_add_test(tc, test_testlib__sse_and_headers);
	tcase_add_test(tc, test_testlib__builders);
	tcase_add_test(tc, test_testlib__processes);
	tcase_add_test(tc, test_testlib__chunked_sse);
	suite_add_tcase(s, tc);
	return s;
}

/* ---- end to end: the real simulator ----------------------------------- */

static char *tdir;
static struct tl_sim sim;

static void
e2e_setup(void)
{
	tdir = make_dir();
	memset(&sim, 0, sizeof(sim));
	sim.pid = -1;
}

static void
e2e_teardown(void)
{
	if (sim.pid > 0)
		tl_sim_stop(&sim);
	tl_kill_all();
	free(tdir);
	tdir = NULL;
}

static void
start_sim(const char *args)
{
	ck_assert_msg(tl_sim_start(&sim, tdir, args) == 0, "sim did not start (%s)",
	    args ? args : "");
}

/* The sim must exit 0 on SIGTERM: clean shutdown, no leaks under ASan. */
static void
stop_sim_ok(void)
{
	int st = tl_sim_stop(&sim);

	ck_assert_msg(st == 0, "codexpool-sim exited with %d; see %s", st, sim.log);
}

static struct tl_ws *
open_ws(int account, const char *extra, struct tl_account *acct_out)
{
	struct tl_account a;
	struct tl_ws *ws;
	char *h, *hh;
	int status = 0;

	ck_assert_int_eq(tl_sim_account(&sim, account, &a), 0);
	h = tl_auth_headers(&a);
	hh = malloc(strlen(h) + (extra ? strlen(extra) : 0) + 1);
	sprintf(hh, "%s%s", h, extra ? extra : "");
	ws = tl_ws_connect("127.0.0.1", sim.port, WS_PATH, hh,
	    sim.tls ? sim.ca_file : NULL, &status);
	ck_assert_msg(ws != NULL, "websocket refused with %d", status);
	free(h);
	free(hh);
	if (acct_out != NULL)
		*acct_out = a;
	else
		tl_account_free(&a);
	return ws;
}

/* Sends req and requires a response.completed; returns the frames. */
static json_object *
turn_ok(struct tl_ws *ws, const char *req, struct tl_usage *u)
{
	enum tl_ws_why why;
	json_object *frames = tl_ws_turn(ws, req, TURN_MS, &why);
	json_object *c = tl_frames_find(frames, "response.completed");
	char *types = tl_frames_types(frames);

	ck_assert_msg(why == TL_WS_OK && c != NULL, "turn ended %s with frames: %s",
	    tl_ws_why_name(why), types);
	free(types);
	if (u != NULL)
		ck_assert_int_eq(tl_usage_of(c, u), 0);
	return frames;
}

static double
ratio(const struct tl_usage *u)
{
	return u->input_tokens > 0 ? (double)u->cached_tokens / (double)u->input_tokens : 0;
}

START_TEST(test_sim__five_turns_stateless)
{
	json_object *hist = json_object_new_array(), *frames;
	char *instr = tl_text(16, 11), *req, msg[64];
	struct tl_usage u;
	struct tl_ws *ws;
	int t;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	for (t = 1; t <= 5; t++) {
		snprintf(msg, sizeof(msg), "question number %d", t);
		json_object_array_add(hist, tl_msg("user", msg));
		req = tl_response_create(NULL, instr, "conv-stateless", NULL, hist);
		frames = turn_ok(ws, req, &u);
		free(req);
		if (t == 1)
			ck_assert_int_eq(u.cached_tokens, 0);
		else
			ck_assert_msg(ratio(&u) >= 0.90, "turn %d: cached %lld of %lld", t,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
		ck_assert_int_eq(tl_history_add_output(hist, frames), 1);
		json_object_put(frames);
	}
	tl_ws_close(ws);
	json_object_put(hist);
	free(instr);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__five_turns_incremental)
{
	json_object *in, *frames, *state, *reqs;
	char *instr = tl_text(16, 12), *req, msg[64], prev[80] = "";
	struct tl_usage u;
	struct tl_ws *ws;
	int t;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	for (t = 1; t <= 5; t++) {
		in = json_object_new_array();
		snprintf(msg, sizeof(msg), "incremental question %d", t);
		json_object_array_add(in, tl_msg("user", msg));
		req = tl_response_create(NULL, instr, "conv-incr", t > 1 ? prev : NULL, in);
		frames = turn_ok(ws, req, &u);
		free(req);
		if (t > 1)
			ck_assert_msg(ratio(&u) >= 0.90, "turn %d: cached %lld of %lld", t,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
		snprintf(prev, sizeof(prev), "%s",
		    tl_response_id(tl_frames_find(frames, "response.completed")));
		json_object_put(frames);
		json_object_put(in);
	}
	tl_ws_close(ws);
	/* The sim recorded the chain. */
	state = tl_sim_state(&sim);
	ck_assert_ptr_nonnull(state);
	reqs = jget(state, "requests");
	ck_assert_uint_eq(json_object_array_length(reqs), 5);
	ck_assert_ptr_null(jstr(reqs, "0.previous_response_id"));
	ck_assert_str_eq(jstr(reqs, "4.previous_response_id"), jstr(reqs, "3.response_id"));
	json_object_put(state);
	free(instr);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__new_connection_per_turn)
{
	json_object *hist = json_object_new_array(), *frames, *state;
	char *instr = tl_text(16, 13), *req, msg[64];
	int served[8] = { 0 }, backend, t, hits = 0, misses = 0;
	struct tl_usage u;
	struct tl_ws *ws;

	start_sim("--backends 3");
	for (t = 1; t <= 5; t++) {
		ws = open_ws(1, NULL, NULL);
		snprintf(msg, sizeof(msg), "fresh connection turn %d", t);
		json_object_array_add(hist, tl_msg("user", msg));
		req = tl_response_create(NULL, instr, "conv-reconnect", NULL, hist);
		frames = turn_ok(ws, req, &u);
		free(req);
		tl_history_add_output(hist, frames);
		json_object_put(frames);
		tl_ws_close(ws);

		state = tl_sim_state(&sim);
		ck_assert_ptr_nonnull(state);
		ck_assert_uint_eq(json_object_array_length(jget(state, "requests")),
		    (size_t)t);
		backend = (int)jint(json_object_array_get_idx(jget(state, "requests"),
		    (size_t)t - 1), "backend");
		json_object_put(state);
		ck_assert_int_ge(backend, 0);
		ck_assert_int_lt(backend, 3);
		if (served[backend]) {
			ck_assert_msg(ratio(&u) >= 0.90, "turn %d on warm backend %d: "
			    "cached %lld of %lld", t, backend,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
			hits++;
		} else {
			ck_assert_msg(ratio(&u) < 0.1, "turn %d on cold backend %d: "
			    "cached %lld of %lld", t, backend,
			    (long long)u.cached_tokens, (long long)u.input_tokens);
			misses++;
		}
		served[backend] = 1;
	}
	/* 5 connections over 3 backends: both cases happened. */
	ck_assert_int_ge(hits, 2);
	ck_assert_int_ge(misses, 1);
	json_object_put(hist);
	free(instr);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__prewarm_then_turn)
{
	struct tl_req r = { 0 };
	json_object *frames, *f2, *in = json_object_new_array();
	char *instr = tl_text(16, 14), *req, *types;
	struct tl_usage u;
	struct tl_ws *ws;

	start_sim(NULL);
	ws = open_ws(2, NULL, NULL);
	r.instructions = instr;
	r.prompt_cache_key = "conv-prewarm";
	r.prewarm = 1;
	req = tl_req_ws(&r);
	frames = turn_ok(ws, req, &u);
	free(req);
	types = tl_frames_types(frames);
	ck_assert_str_eq(types, "codex.rate_limits response.created response.completed");
	free(types);
	ck_assert_int_eq(u.input_tokens, 0);
	ck_assert_int_eq(u.cached_tokens, 0);
	ck_assert_int_eq(u.output_tokens, 0);

	json_object_array_add(in, tl_msg("user", "first real turn"));
	r.prewarm = 0;
	r.input = in;
	r.previous_response_id = tl_response_id(tl_frames_find(frames,
	    "response.completed"));
	req = tl_req_ws(&r);
	f2 = turn_ok(ws, req, &u);
	/* The prewarm stored the instructions' prefix. */
	ck_assert_msg(ratio(&u) >= 0.90, "cached %lld of %lld",
	    (long long)u.cached_tokens, (long long)u.input_tokens);
	free(req);
	json_object_put(f2);
	json_object_put(frames);
	json_object_put(in);
	tl_ws_close(ws);
	free(instr);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__event_sequence_and_delays)
{
	json_object *in = json_object_new_array(), *frames;
	char *req, *types, *text;
	struct tl_ws *ws;
	int64_t t0;

	start_sim("--deltas 4 --delta-delay-ms 60");
	ws = open_ws(1, NULL, NULL);
	json_object_array_add(in, tl_msg("user", "hello simulator"));
	req = tl_response_create(NULL, "short", NULL, NULL, in);
	t0 = tl_now_ms();
	frames = turn_ok(ws, req, NULL);
	/* A lower bound only: four deltas, each 60 ms after the previous. */
	ck_assert_int_ge(tl_now_ms() - t0, 240);
	types = tl_frames_types(frames);
	ck_assert_str_eq(types, "codex.rate_limits response.created response.in_progress "
	    "response.output_item.added response.content_part.added "
	    "response.output_text.delta response.output_text.delta "
	    "response.output_text.delta response.output_text.delta "
	    "response.output_text.done response.content_part.done "
	    "response.output_item.done response.completed");
	text = tl_output_text(frames);
	ck_assert_str_eq(text, "sim reply to: hello simulator");
	ck_assert_int_gt(jint(tl_frames_find(frames, "codex.rate_limits"),
	    "rate_limits.primary.window_minutes"), 0);
	ck_assert_int_eq(jint(tl_frames_find(frames, "codex.rate_limits"),
	    "rate_limits.secondary.window_minutes"), 10080);
	free(text);
	free(types);
	free(req);
	json_object_put(frames);
	json_object_put(in);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

/* Connects with the given headers; returns the HTTP status and the
 * refusal body's error.code in code (if refused). */
static int
try_connect(const char *headers, char *code, size_t csize)
{
	struct tl_response refusal;
	struct tl_ws *ws;
	json_object *o;
	int status;

	ws = tl_ws_connect_ex(NULL, "127.0.0.1", sim.port, WS_PATH, headers, &refusal);
	if (ws != NULL) {
		tl_ws_close(ws);
		return 101;
	}
	status = refusal.status;
	if (code != NULL) {
		code[0] = '\0';
		o = tl_response_json(&refusal);
		if (o != NULL && jstr(o, "error.code") != NULL)
			snprintf(code, csize, "%s", jstr(o, "error.code"));
		json_object_put(o);
		if (status != 0) {
			char *ct = tl_header_get(refusal.headers, "content-type");

			/* WebSocket clients reject an HTTP/1.0 refusal unread. */
			ck_assert_int_eq(strncmp(refusal.headers, "HTTP/1.1 ", 9), 0);
			ck_assert_ptr_nonnull(ct);
			ck_assert_str_eq(ct, "application/json");
			free(ct);
		}
	}
	tl_response_free(&refusal);
	return status;
}

START_TEST(test_sim__auth_rejections)
{
	struct tl_account a1, a2;
	char hdr[8192], code[64], *bad, *state_text;
	json_object *state;
	size_t n;

	start_sim(NULL);
	ck_assert_int_eq(tl_sim_account(&sim, 1, &a1), 0);
	ck_assert_int_eq(tl_sim_account(&sim, 2, &a2), 0);
	ck_assert_str_ne(a1.account_id, a2.account_id);

	ck_assert_int_eq(try_connect(NULL, code, sizeof(code)), 401);
	ck_assert_str_eq(code, "missing_authorization");

	/* A flipped signature character. */
	bad = strdup(a1.access_token);
	n = strlen(bad);
	bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
	snprintf(hdr, sizeof(hdr), "authorization: Bearer %s\r\nchatgpt-account-id: %s\r\n",
	    bad, a1.account_id);
	ck_assert_int_eq(try_connect(hdr, code, sizeof(code)), 401);
	ck_assert_str_eq(code, "invalid_token");
	free(bad);

	/* Not a JWT at all. */
	snprintf(hdr, sizeof(hdr), "authorization: Bearer sk-not-a-jwt\r\n"
	    "chatgpt-account-id: %s\r\n", a1.account_id);
	ck_assert_int_eq(try_connect(hdr, code, sizeof(code)), 401);
	ck_assert_str_eq(code, "invalid_token");

	/* Account 1's token with account 2's id. */
	snprintf(hdr, sizeof(hdr), "authorization: Bearer %s\r\nchatgpt-account-id: %s\r\n",
	    a1.access_token, a2.account_id);
	ck_assert_int_eq(try_connect(hdr, code, sizeof(code)), 401);
	ck_assert_str_eq(code, "account_mismatch");

	/* No account header. */
	snprintf(hdr, sizeof(hdr), "authorization: Bearer %s\r\n", a1.access_token);
	ck_assert_int_eq(try_connect(hdr, code, sizeof(code)), 401);
	ck_assert_str_eq(code, "missing_account_id");

	/* The right pair works; a path not ending in /responses does not. */
	snprintf(hdr, sizeof(hdr), "authorization: Bearer %s\r\nchatgpt-account-id: %s\r\n",
	    a2.access_token, a2.account_id);
	ck_assert_int_eq(try_connect(hdr, NULL, 0), 101);
	{
		struct tl_response refusal;

		ck_assert_ptr_null(tl_ws_connect_ex(NULL, "127.0.0.1", sim.port,
		    "/v1/other", hdr, &refusal));
		ck_assert_int_eq(refusal.status, 404);
		tl_response_free(&refusal);
	}

	state = tl_sim_state(&sim);
	ck_assert_ptr_nonnull(state);
	ck_assert_int_eq(jint(state, "handshakes_total"), 7);
	ck_assert_int_eq(jint(state, "handshakes_rejected"), 6);
	ck_assert_int_eq(jint(state, "handshakes.1.status"), 401);
	ck_assert_str_eq(jstr(state, "handshakes.1.error"), "invalid_token");
	ck_assert_str_eq(jstr(state, "handshakes.5.headers.authorization"),
	    "Bearer [redacted]");
	state_text = strdup(json_object_to_json_string(state));
	ck_assert_ptr_null(strstr(state_text, a1.access_token));
	ck_assert_ptr_null(strstr(state_text, a2.access_token));
	free(state_text);
	json_object_put(state);
	stop_sim_ok();
	ck_assert(!tl_file_contains(sim.log, a1.access_token));
	ck_assert(!tl_file_contains(sim.log, a2.access_token));
	tl_account_free(&a1);
	tl_account_free(&a2);
}
END_TEST

START_TEST(test_sim__expired_token)
{
	struct tl_account a;
	char code[64], *h;
	int64_t exp, deadline;

	start_sim("--token-ttl 1");
	ck_assert_int_eq(tl_sim_account(&sim, 1, &a), 0);
	exp = jwt_exp(a.access_token);
	ck_assert_int_gt(exp, 0);
	/* Poll the wall clock past the token's exp (about a second). */
	deadline = tl_now_ms() + 10000;
	while ((int64_t)time(NULL) <= exp && tl_now_ms() < deadline)
		tl_msleep(50);
	ck_assert_int_gt((int64_t)time(NULL), exp);
	h = tl_auth_headers(&a);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 401);
	ck_assert_str_eq(code, "token_expired");
	free(h);
	tl_account_free(&a);
	stop_sim_ok();
}
END_TEST

static int
token_request(const char *refresh_token, const char *client_id, json_object **out)
{
	struct tl_response r;
	char body[1024];
	int status;

	snprintf(body, sizeof(body), "{\"client_id\":\"%s\",\"grant_type\":"
	    "\"refresh_token\",\"refresh_token\":\"%s\"}", client_id, refresh_token);
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "POST", "/oauth/token", NULL,
	    body, strlen(body), &r), 0);
	status = r.status;
	*out = tl_response_json(&r);
	tl_response_free(&r);
	ck_assert_ptr_nonnull(*out);
	return status;
}

START_TEST(test_sim__token_refresh_rotation)
{
	struct tl_account a, fresh = { 0 };
	json_object *o, *state;
	char code[64], *h;

	start_sim(NULL);
	ck_assert_int_eq(tl_sim_account(&sim, 1, &a), 0);

	ck_assert_int_eq(token_request(a.refresh_token, "app_EMoamEEZ73f0CkXaXp7hrann",
	    &o), 200);
	ck_assert_ptr_nonnull(jstr(o, "access_token"));
	ck_assert_ptr_nonnull(jstr(o, "id_token"));
	ck_assert_ptr_nonnull(jstr(o, "refresh_token"));
	ck_assert_int_eq(jint(o, "expires_in"), 3600);
	ck_assert_str_ne(jstr(o, "refresh_token"), a.refresh_token);
	ck_assert_str_ne(jstr(o, "access_token"), a.access_token);
	fresh.access_token = strdup(jstr(o, "access_token"));
	fresh.refresh_token = strdup(jstr(o, "refresh_token"));
	fresh.account_id = strdup(a.account_id);
	{
		char claim[128];

		ck_assert_int_eq(jwt_account_id(fresh.access_token, claim, sizeof(claim)), 0);
		ck_assert_str_eq(claim, a.account_id);
	}
	json_object_put(o);

	/* The used refresh token is burnt. */
	ck_assert_int_eq(token_request(a.refresh_token, "app_EMoamEEZ73f0CkXaXp7hrann",
	    &o), 401);
	ck_assert_str_eq(jstr(o, "error.code"), "refresh_token_reused");
	json_object_put(o);
	ck_assert_int_eq(token_request("rt_unknown", "app_EMoamEEZ73f0CkXaXp7hrann",
	    &o), 401);
	ck_assert_str_eq(jstr(o, "error.code"), "invalid_grant");
	json_object_put(o);
	ck_assert_int_eq(token_request(fresh.refresh_token, "someone-else", &o), 401);
	ck_assert_str_eq(jstr(o, "error.code"), "invalid_client");
	json_object_put(o);

	/* The new access token opens a connection. */
	h = tl_auth_headers(&fresh);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 101);
	free(h);
	/* The rotated refresh token works once more. */
	ck_assert_int_eq(token_request(fresh.refresh_token, "app_EMoamEEZ73f0CkXaXp7hrann",
	    &o), 200);
	json_object_put(o);

	state = tl_sim_state(&sim);
	ck_assert_int_eq(jint(state, "refreshes"), 2);
	ck_assert_int_eq(jint(state, "accounts.0.refreshes"), 2);
	json_object_put(state);
	tl_account_free(&a);
	tl_account_free(&fresh);
	stop_sim_ok();
}
END_TEST

static json_object *
turn_any(struct tl_ws *ws, const char *req, enum tl_ws_why *why)
{
	return tl_ws_turn(ws, req, TURN_MS, why);
}

static char *
req_with_text(const char *text, const char *prev)
{
	json_object *in = json_object_new_array();
	char *req;

	json_object_array_add(in, tl_msg("user", text));
	req = tl_response_create(NULL, "instructions", "conv-x", prev, in);
	json_object_put(in);
	return req;
}

START_TEST(test_sim__previous_response_not_found)
{
	json_object *f1, *f2, *f3;
	char *req, a_id[80], b_id[80];
	struct tl_ws *ws, *ws2;
	enum tl_ws_why why;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("one", NULL);
	f1 = turn_ok(ws, req, NULL);
	free(req);
	snprintf(a_id, sizeof(a_id), "%s", tl_response_id(tl_frames_find(f1,
	    "response.completed")));
	req = req_with_text("two", a_id);
	f2 = turn_ok(ws, req, NULL);
	free(req);
	snprintf(b_id, sizeof(b_id), "%s", tl_response_id(tl_frames_find(f2,
	    "response.completed")));

	/* A is no longer the newest. */
	req = req_with_text("three", a_id);
	f3 = turn_any(ws, req, &why);
	free(req);
	ck_assert_int_eq(why, TL_WS_OK);
	ck_assert_str_eq(jstr(tl_frames_find(f3, "error"), "error.code"),
	    "previous_response_not_found");
	ck_assert_int_eq(jint(tl_frames_find(f3, "error"), "status"), 400);
	ck_assert_str_eq(jstr(tl_frames_find(f3, "error"), "error.type"),
	    "invalid_request_error");
	ck_assert_str_eq(jstr(tl_frames_find(f3, "error"), "error.param"),
	    "previous_response_id");
	ck_assert_ptr_nonnull(strstr(jstr(tl_frames_find(f3, "error"), "error.message"),
	    a_id));
	json_object_put(f3);

	/* B is connection-local: unknown on another connection. */
	ws2 = open_ws(1, NULL, NULL);
	req = req_with_text("elsewhere", b_id);
	f3 = turn_any(ws2, req, &why);
	free(req);
	ck_assert_str_eq(jstr(tl_frames_find(f3, "error"), "error.code"),
	    "previous_response_not_found");
	json_object_put(f3);
	tl_ws_close(ws2);

	/* And B still continues on its own connection. */
	req = req_with_text("four", b_id);
	f3 = turn_ok(ws, req, NULL);
	free(req);
	json_object_put(f3);
	json_object_put(f1);
	json_object_put(f2);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__one_response_at_a_time)
{
	json_object *frames;
	char *slow, *req;
	struct tl_ws *ws;
	enum tl_ws_why why;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	/* The first response waits a minute before its first frame, so the
	 * second request certainly arrives while it is active. */
	slow = req_with_text("slow one [[sim:slow_start=60000]]", NULL);
	req = req_with_text("impatient", NULL);
	ck_assert_int_eq(tl_ws_send_text(ws, slow, strlen(slow)), 0);
	frames = turn_any(ws, req, &why);
	ck_assert_int_eq(why, TL_WS_OK);
	ck_assert_int_eq(json_object_array_length(frames), 1);
	ck_assert_str_eq(jstr(tl_frames_find(frames, "error"), "error.code"),
	    "conversation_already_has_active_response");
	ck_assert_int_eq(jint(tl_frames_find(frames, "error"), "status"), 400);
	json_object_put(frames);
	free(slow);
	free(req);
	tl_ws_abort(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_close_before_first)
{
	enum tl_ws_why why;
	struct tl_ws *ws;
	json_object *f;
	char *req;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("please [[sim:close_before_first]]", NULL);
	f = turn_any(ws, req, &why);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	ck_assert_int_eq(json_object_array_length(f), 0);
	ck_assert_int_eq(tl_ws_close_code(ws), 1011);
	json_object_put(f);
	free(req);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_close_mid_stream)
{
	enum tl_ws_why why;
	struct tl_ws *ws;
	json_object *f;
	char *req, *types;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("please [[sim:close_mid_stream]]", NULL);
	f = turn_any(ws, req, &why);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	ck_assert_int_eq(tl_ws_close_code(ws), 1011);
	types = tl_frames_types(f);
	ck_assert_str_eq(types, "codex.rate_limits response.created response.in_progress "
	    "response.output_item.added response.content_part.added "
	    "response.output_text.delta response.output_text.delta");
	free(types);
	json_object_put(f);
	free(req);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_reset)
{
	enum tl_ws_why why;
	struct tl_ws *ws;
	json_object *f;
	char *req;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("please [[sim:reset]]", NULL);
	f = turn_any(ws, req, &why);
	ck_assert_msg(why == TL_WS_RESET, "ended %s", tl_ws_why_name(why));
	ck_assert_int_eq(json_object_array_length(f), 0);
	ck_assert_int_eq(tl_ws_close_code(ws), -1);
	json_object_put(f);
	free(req);
	tl_ws_abort(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_error_frames)
{
	enum tl_ws_why why;
	struct tl_ws *ws;
	json_object *f, *e;
	char *req;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);

	req = req_with_text("please [[sim:usage_limit]]", NULL);
	f = turn_any(ws, req, &why);
	free(req);
	ck_assert_int_eq(why, TL_WS_OK);
	ck_assert_int_eq(json_object_array_length(f), 1);
	e = tl_frames_find(f, "error");
	ck_assert_int_eq(jint(e, "status"), 429);
	ck_assert_str_eq(jstr(e, "error.type"), "usage_limit_reached");
	ck_assert_str_eq(jstr(e, "error.plan_type"), "plus");
	ck_assert_int_gt(jint(e, "error.resets_at"), (int64_t)time(NULL));
	ck_assert_str_eq(jstr(e, "headers.x-codex-primary-used-percent"), "100.0");
	json_object_put(f);

	req = req_with_text("please [[sim:token_expired]]", NULL);
	f = turn_any(ws, req, &why);
	free(req);
	e = tl_frames_find(f, "error");
	ck_assert_int_eq(jint(e, "status"), 401);
	ck_assert_str_eq(jstr(e, "error.code"), "token_expired");
	json_object_put(f);

	req = req_with_text("please [[sim:overloaded]]", NULL);
	f = turn_any(ws, req, &why);
	free(req);
	e = tl_frames_find(f, "error");
	ck_assert_int_eq(jint(e, "status"), 503);
	ck_assert_str_eq(jstr(e, "error.code"), "server_is_overloaded");
	json_object_put(f);

	req = req_with_text("please [[sim:server_error]]", NULL);
	f = turn_any(ws, req, &why);
	free(req);
	ck_assert_int_eq(why, TL_WS_OK);
	e = tl_frames_find(f, "response.failed");
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(jstr(e, "response.error.code"), "server_error");
	ck_assert_str_eq(jstr(e, "response.status"), "failed");
	ck_assert_int_eq(tl_frames_count(f, "response.output_item.added"), 0);
	ck_assert_int_eq(tl_frames_count(f, "response.created"), 1);
	json_object_put(f);

	req = req_with_text("please [[sim:bogus_kind]]", NULL);
	f = turn_any(ws, req, &why);
	free(req);
	ck_assert_str_eq(jstr(tl_frames_find(f, "error"), "error.code"),
	    "invalid_sim_marker");
	json_object_put(f);

	/* The connection survives error frames. */
	req = req_with_text("all good now", NULL);
	f = turn_ok(ws, req, NULL);
	free(req);
	json_object_put(f);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

/* Waits up to ms for a pong; returns how many arrived. */
static int
wait_pong(struct tl_ws *ws, int ms)
{
	int64_t deadline = tl_now_ms() + ms;
	enum tl_ws_why why;
	char *t;

	while (tl_ws_pongs(ws) == 0 && tl_now_ms() < deadline) {
		t = tl_ws_recv_text(ws, 50, &why);
		free(t);
		if (why != TL_WS_OK && why != TL_WS_TIMEOUT)
			break;
	}
	return tl_ws_pongs(ws);
}

START_TEST(test_sim__fault_stall)
{
	struct tl_ws *ws, *control;
	enum tl_ws_why why;
	char *req, *t;

	start_sim(NULL);
	/* Control: a healthy connection answers pings. */
	control = open_ws(1, NULL, NULL);
	ck_assert_int_eq(tl_ws_send_ping(control, "p", 1), 0);
	ck_assert_int_eq(wait_pong(control, 20000), 1);

	ws = open_ws(1, NULL, NULL);
	req = req_with_text("please [[sim:stall]]", NULL);
	ck_assert_int_eq(tl_ws_send_text(ws, req, strlen(req)), 0);
	free(req);
	/* Nothing comes; the stall never ends by itself. */
	t = tl_ws_recv_text(ws, 1500, &why);
	ck_assert_ptr_null(t);
	ck_assert_int_eq(why, TL_WS_TIMEOUT);
	/* Wait until the sim has recorded the request, so it has stopped
	 * reading before the ping goes out. */
	{
		int64_t deadline = tl_now_ms() + 20000;
		json_object *state = NULL;

		for (;;) {
			json_object_put(state);
			state = tl_sim_state(&sim);
			if (jint(state, "requests_total") >= 1 || tl_now_ms() > deadline)
				break;
			tl_msleep(20);
		}
		ck_assert_str_eq(jstr(state, "requests.0.fault"), "stall");
		json_object_put(state);
	}
	ck_assert_int_eq(tl_ws_send_ping(ws, "p", 1), 0);
	ck_assert_int_eq(wait_pong(ws, 1500), 0);
	/* The control connection is still served. */
	req = req_with_text("still alive?", NULL);
	json_object_put(turn_ok(control, req, NULL));
	free(req);
	/* A stalled connection whose peer leaves (close frame and FIN, as a
	 * relay's liveness check does) is closed, not counted open forever:
	 * it reads nothing, so only a hang-up check can see it. */
	tl_ws_close(ws);
	{
		int64_t deadline = tl_now_ms() + 20000;
		json_object *state = NULL;

		for (;;) {
			json_object_put(state);
			state = tl_sim_state(&sim);
			if (jint(state, "connections_open") == 1 || tl_now_ms() > deadline)
				break;
			tl_msleep(20);
		}
		ck_assert_int_eq(jint(state, "connections_open"), 1);
		json_object_put(state);
	}
	tl_ws_close(control);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_slow_start)
{
	struct tl_ws *ws;
	json_object *f;
	char *req;
	int64_t t0;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("please [[sim:slow_start=400]]", NULL);
	t0 = tl_now_ms();
	f = turn_ok(ws, req, NULL);
	ck_assert_int_ge(tl_now_ms() - t0, 400);
	json_object_put(f);
	free(req);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_close_idle)
{
	enum tl_ws_why why;
	struct tl_ws *ws;
	json_object *f;
	char *req, *t;

	start_sim(NULL);
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("please [[sim:close_idle]]", NULL);
	f = turn_ok(ws, req, NULL);
	json_object_put(f);
	free(req);
	/* After the completed response, the server closes the idle socket. */
	t = tl_ws_recv_text(ws, 20000, &why);
	ck_assert_ptr_null(t);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	ck_assert_int_eq(tl_ws_close_code(ws), 1000);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__fault_runtime_and_global)
{
	struct tl_ws *ws1, *ws2;
	enum tl_ws_why why;
	json_object *f, *state;
	char *req;

	start_sim(NULL);
	ck_assert_int_eq(tl_sim_fault(&sim, "{\"kind\":\"overloaded\",\"count\":2}"), 0);
	ck_assert_int_ne(tl_sim_fault(&sim, "{\"kind\":\"no_such_fault\"}"), 0);
	ck_assert_int_ne(tl_sim_fault(&sim, "{\"kind\":\"slow_start\"}"), 0);
	ws1 = open_ws(1, NULL, NULL);
	ws2 = open_ws(2, NULL, NULL);
	req = req_with_text("plain request", NULL);
	/* "Anywhere": one on each connection, then normal again. */
	f = turn_any(ws1, req, &why);
	ck_assert_str_eq(jstr(tl_frames_find(f, "error"), "error.code"),
	    "server_is_overloaded");
	json_object_put(f);
	f = turn_any(ws2, req, &why);
	ck_assert_str_eq(jstr(tl_frames_find(f, "error"), "error.code"),
	    "server_is_overloaded");
	json_object_put(f);
	json_object_put(turn_ok(ws1, req, NULL));
	/* slow_start with ms from the body; then clear. */
	ck_assert_int_eq(tl_sim_fault(&sim, "{\"kind\":\"slow_start\",\"ms\":10}"), 0);
	json_object_put(turn_ok(ws2, req, NULL));
	ck_assert_int_eq(tl_sim_fault(&sim, "{\"kind\":\"reset\",\"count\":5}"), 0);
	ck_assert_int_eq(tl_sim_fault(&sim, "{\"kind\":\"clear\"}"), 0);
	json_object_put(turn_ok(ws2, req, NULL));

	state = tl_sim_state(&sim);
	ck_assert_str_eq(jstr(state, "requests.0.fault"), "overloaded");
	ck_assert_str_eq(jstr(state, "requests.1.fault"), "overloaded");
	ck_assert_ptr_null(jstr(state, "requests.2.fault"));
	ck_assert_str_eq(jstr(state, "requests.3.fault"), "slow_start=10");
	ck_assert_ptr_null(jstr(state, "requests.4.fault"));
	json_object_put(state);
	tl_ws_close(ws1);
	tl_ws_close(ws2);
	free(req);
	stop_sim_ok();

	/* A global fault hits every request. */
	start_sim("--fault close_before_first");
	ws1 = open_ws(1, NULL, NULL);
	req = req_with_text("anything", NULL);
	f = turn_any(ws1, req, &why);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	ck_assert_int_eq(tl_ws_close_code(ws1), 1011);
	json_object_put(f);
	tl_ws_close(ws1);
	ws1 = open_ws(1, NULL, NULL);
	f = turn_any(ws1, req, &why);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	json_object_put(f);
	tl_ws_close(ws1);
	free(req);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__reject_handshake)
{
	struct tl_account a;
	char *h, code[64];

	start_sim(NULL);
	ck_assert_int_eq(tl_sim_account(&sim, 1, &a), 0);
	h = tl_auth_headers(&a);
	ck_assert_int_eq(tl_sim_fault(&sim,
	    "{\"kind\":\"reject_handshake\",\"status\":503,\"count\":2}"), 0);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 503);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 503);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 101);
	ck_assert_int_eq(tl_sim_fault(&sim, "{\"kind\":\"reject_handshake=426\"}"), 0);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 426);
	ck_assert_int_eq(try_connect(h, code, sizeof(code)), 101);
	free(h);
	tl_account_free(&a);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__tls)
{
	struct tl_conn_opts o = { 0 };
	struct tl_response r;
	struct tl_ws *ws;
	json_object *f, *state;
	char args[1400], *req, *other;
	int status;

	ck_assert_int_eq(tl_make_certs(tdir), 0);
	snprintf(args, sizeof(args), "--tls-cert %s/server.pem --tls-key %s/server.key",
	    tdir, tdir);
	start_sim(args);
	ck_assert(sim.tls);
	ck_assert_str_ne(sim.ca_file, "");

	ws = open_ws(1, NULL, NULL);	/* verified against ca.pem */
	req = req_with_text("over tls", NULL);
	f = turn_ok(ws, req, NULL);
	json_object_put(f);
	free(req);
	tl_ws_close(ws);

	state = tl_sim_state(&sim);	/* HTTPS with the same CA */
	ck_assert_ptr_nonnull(state);
	ck_assert_int_eq(jint(state, "requests_total"), 1);
	json_object_put(state);

	/* By name too (SAN DNS:localhost). */
	o.ca_file = sim.ca_file;
	o.server_name = "localhost";
	ck_assert_int_eq(tl_http_opts(&o, "127.0.0.1", sim.port, "GET", "/v1/models",
	    NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "{\"models\":[]}");
	tl_response_free(&r);

	/* A client trusting another CA refuses the server. */
	other = malloc(strlen(tdir) + 16);
	sprintf(other, "%s/other", tdir);
	ck_assert_int_eq(mkdir(other, 0700), 0);
	ck_assert_int_eq(tl_make_certs(other), 0);
	strcat(other, "/ca.pem");
	status = -1;
	ck_assert_ptr_null(tl_ws_connect("127.0.0.1", sim.port, WS_PATH, NULL, other,
	    &status));
	ck_assert_int_eq(status, 0);
	/* And plain HTTP to the TLS port gets no HTTP answer. */
	o.ca_file = NULL;
	o.server_name = NULL;
	o.timeout_ms = 5000;
	ck_assert_int_ne(tl_http_opts(&o, "127.0.0.1", sim.port, "GET", "/sim/state",
	    NULL, NULL, 0, &r), 0);
	free(other);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__connection_age_cap)
{
	struct tl_ws *ws;
	enum tl_ws_why why;
	json_object *f, *e = NULL;
	char *req;
	int64_t deadline;
	int status;

	start_sim("--max-conn-age 1");
	ws = open_ws(1, NULL, NULL);
	req = req_with_text("how old are you", NULL);
	deadline = tl_now_ms() + 30000;
	/* Poll: requests complete until the connection is a second old. */
	for (;;) {
		f = turn_any(ws, req, &why);
		ck_assert_int_eq(why, TL_WS_OK);
		e = tl_frames_find(f, "error");
		if (e != NULL)
			break;
		ck_assert_ptr_nonnull(tl_frames_find(f, "response.completed"));
		json_object_put(f);
		ck_assert_msg(tl_now_ms() < deadline, "the age cap never triggered");
		tl_msleep(100);
	}
	ck_assert_str_eq(jstr(e, "error.code"), "websocket_connection_limit_reached");
	ck_assert_int_eq(jint(e, "status"), 400);
	ck_assert_str_eq(jstr(e, "error.message"),
	    "Responses websocket connection limit reached (60 minutes). "
	    "Create a new websocket connection to continue.");
	json_object_put(f);
	free(req);
	tl_ws_close(ws);
	/* A new connection is accepted. */
	{
		struct tl_account a;
		char *h;

		ck_assert_int_eq(tl_sim_account(&sim, 1, &a), 0);
		h = tl_auth_headers(&a);
		status = try_connect(h, NULL, 0);
		ck_assert_int_eq(status, 101);
		free(h);
		tl_account_free(&a);
	}
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__introspection)
{
	static const char *codex_headers =
	    "version: 0.169.0\r\n"
	    "session_id: 019a2b3c-0000-7000-8000-000000007d41\r\n"
	    "session-id: 019a2b3c-0000-7000-8000-000000007d41\r\n"
	    "x-client-request-id: 019a2b3c-0000-7000-8000-000000007d41\r\n"
	    "x-codex-window-id: 019a2b3c-0000-7000-8000-000000007d41:0\r\n"
	    "x-codex-turn-metadata: {\"turn_id\":\"t1\",\"sandbox\":\"none\"}\r\n"
	    "user-agent: codex_exec/0.169.0 (Debian 12; x86_64)\r\n";
	struct tl_account a;
	struct tl_response r;
	struct tl_ws *ws;
	json_object *state, *f, *hs;
	char *req, *big, *text;
	int64_t deadline;

	start_sim("--accounts 3");
	ws = open_ws(3, codex_headers, &a);
	req = req_with_text("record me", NULL);
	f = turn_ok(ws, req, NULL);
	json_object_put(f);

	state = tl_sim_state(&sim);
	ck_assert_ptr_nonnull(state);
	ck_assert_int_eq(jint(state, "connections_total"), 1);
	ck_assert_int_eq(jint(state, "connections_open"), 1);
	ck_assert_int_eq(json_object_array_length(jget(state, "accounts")), 3);
	ck_assert_int_eq(jint(jget(state, "connections_by_account"), a.account_id), 1);
	hs = jget(state, "handshakes.0");
	ck_assert_str_eq(jstr(hs, "path"), WS_PATH);
	ck_assert_int_eq(jint(hs, "status"), 101);
	ck_assert_str_eq(jstr(hs, "account"), a.account_id);
	ck_assert_str_eq(jstr(hs, "headers.authorization"), "Bearer [redacted]");
	ck_assert_str_eq(jstr(hs, "headers.chatgpt-account-id"), a.account_id);
	ck_assert_str_eq(jstr(hs, "headers.openai-beta"), "responses_websockets=2026-02-06");
	ck_assert_str_eq(jstr(hs, "headers.originator"), "codex_exec");
	ck_assert_str_eq(jstr(hs, "headers.version"), "0.169.0");
	ck_assert_str_eq(jstr(hs, "headers.session_id"),
	    "019a2b3c-0000-7000-8000-000000007d41");
	ck_assert_str_eq(jstr(hs, "headers.session-id"),
	    "019a2b3c-0000-7000-8000-000000007d41");
	ck_assert_str_eq(jstr(hs, "headers.x-client-request-id"),
	    "019a2b3c-0000-7000-8000-000000007d41");
	ck_assert_str_eq(jstr(hs, "headers.x-codex-window-id"),
	    "019a2b3c-0000-7000-8000-000000007d41:0");
	ck_assert_str_eq(jstr(hs, "headers.x-codex-turn-metadata"),
	    "{\"turn_id\":\"t1\",\"sandbox\":\"none\"}");
	ck_assert_str_eq(jstr(hs, "headers.user-agent"), "codex_exec/0.169.0 (Debian 12; x86_64)");
	ck_assert_int_eq(jint(hs, "conn"), jint(state, "requests.0.conn"));
	ck_assert_int_eq(jint(hs, "backend"), jint(state, "requests.0.backend"));
	ck_assert_str_eq(jstr(state, "requests.0.account"), a.account_id);
	ck_assert_str_eq(jstr(state, "requests.0.prompt_cache_key"), "conv-x");
	ck_assert_ptr_null(jstr(state, "requests.0.previous_response_id"));
	ck_assert(json_object_get_boolean(jget(state, "requests.0.generate")));
	ck_assert_int_gt(jint(state, "requests.0.input_tokens"), 0);
	ck_assert_int_eq(jint(state, "requests.0.cached_tokens"), 0);
	text = strdup(json_object_to_json_string(state));
	ck_assert_ptr_null(strstr(text, a.access_token));
	free(text);
	json_object_put(state);

	/* Closing is seen. */
	tl_ws_close(ws);
	deadline = tl_now_ms() + 20000;
	for (;;) {
		state = tl_sim_state(&sim);
		if (jint(state, "connections_open") == 0 || tl_now_ms() > deadline)
			break;
		json_object_put(state);
		tl_msleep(20);
	}
	ck_assert_int_eq(jint(state, "connections_open"), 0);
	ck_assert_ptr_null(jget(jget(state, "connections_by_account"), a.account_id));
	json_object_put(state);

	/* Reset clears records and counters, keeps the caches. */
	ck_assert_int_eq(tl_sim_reset(&sim), 0);
	state = tl_sim_state(&sim);
	ck_assert_int_eq(jint(state, "connections_total"), 0);
	ck_assert_int_eq(json_object_array_length(jget(state, "requests")), 0);
	ck_assert_int_eq(json_object_array_length(jget(state, "handshakes")), 0);
	json_object_put(state);

	/* Other endpoints. */
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "GET",
	    "/backend-api/codex/models?client_version=0.125.0", NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "{\"models\":[]}");
	tl_response_free(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "GET", "/nope", NULL, NULL, 0,
	    &r), 0);
	ck_assert_int_eq(r.status, 404);
	tl_response_free(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "GET", WS_PATH, NULL, NULL, 0,
	    &r), 0);
	ck_assert_int_eq(r.status, 426);
	tl_response_free(&r);
	big = malloc(2u << 20);
	memset(big, 'x', 2u << 20);
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "POST", "/sim/fault", NULL, big,
	    2u << 20, &r), 0);
	ck_assert_int_eq(r.status, 413);
	tl_response_free(&r);
	free(big);
	/* The sim still works after all that. */
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "GET", "/sim/health", NULL, NULL,
	    0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	tl_response_free(&r);

	free(req);
	stop_sim_ok();
	ck_assert(!tl_file_contains(sim.log, a.access_token));
	ck_assert(tl_file_contains(sim.log, "open backend="));
	tl_account_free(&a);
}
END_TEST

START_TEST(test_sim__message_limits)
{
	struct tl_ws *ws;
	enum tl_ws_why why;
	json_object *f, *in;
	char *req, *huge, *t;

	start_sim("--max-message 100000");
	ws = open_ws(1, NULL, NULL);

	/* Invalid JSON: an error frame, the connection stays. */
	f = turn_any(ws, "{oops", &why);
	ck_assert_str_eq(jstr(tl_frames_find(f, "error"), "error.code"), "invalid_json");
	json_object_put(f);

	/* A 50 KB request in 1 KB fragments is reassembled. */
	in = json_object_new_array();
	huge = tl_text(50, 3);
	json_object_array_add(in, tl_msg("user", huge));
	free(huge);
	req = tl_response_create(NULL, "x", "frag", NULL, in);
	json_object_put(in);
	ck_assert_int_eq(tl_ws_send_fragmented(ws, req, strlen(req), 1024), 0);
	f = tl_ws_collect(ws, TURN_MS, &why);
	ck_assert_ptr_nonnull(tl_frames_find(f, "response.completed"));
	json_object_put(f);
	free(req);

	/* Over the limit: an error, then close 1009. */
	in = json_object_new_array();
	huge = tl_text(200, 4);
	json_object_array_add(in, tl_msg("user", huge));
	free(huge);
	req = tl_response_create(NULL, "x", "big", NULL, in);
	json_object_put(in);
	f = turn_any(ws, req, &why);
	free(req);
	ck_assert_str_eq(jstr(tl_frames_find(f, "error"), "error.code"),
	    "message_too_large");
	json_object_put(f);
	t = tl_ws_recv_text(ws, 20000, &why);
	ck_assert_ptr_null(t);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	ck_assert_int_eq(tl_ws_close_code(ws), 1009);
	tl_ws_close(ws);

	/* Binary frames are refused with 1003. */
	ws = open_ws(1, NULL, NULL);
	ck_assert_int_eq(tl_ws_send_binary(ws, "\x01\x02", 2), 0);
	f = tl_ws_collect(ws, TURN_MS, &why);
	ck_assert_str_eq(jstr(tl_frames_find(f, "error"), "error.code"),
	    "binary_not_supported");
	json_object_put(f);
	t = tl_ws_recv_text(ws, 20000, &why);
	ck_assert_ptr_null(t);
	ck_assert_int_eq(why, TL_WS_CLOSED);
	ck_assert_int_eq(tl_ws_close_code(ws), 1003);
	tl_ws_close(ws);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__bad_command_line)
{
	char *prog = tl_program("sim/codexpool-sim");
	char *log = malloc(strlen(tdir) + 16);
	char *a1[] = { prog, "--backends", "0", NULL };
	char *a2[] = { prog, "--fault", "nope", NULL };
	char *a3[] = { prog, "--tls-cert", "x.pem", NULL };
	char *a4[] = { prog, "--listen", "127.0.0.1", NULL };
	char *a5[] = { prog, "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem",
	    "--tls-key", "/nonexistent.key", NULL };

	sprintf(log, "%s/cli.log", tdir);
	ck_assert_int_eq(tl_run(log, a1, 20000), 2);
	ck_assert_int_eq(tl_run(log, a2, 20000), 2);
	ck_assert_int_eq(tl_run(log, a3, 20000), 2);
	ck_assert_int_eq(tl_run(log, a4, 20000), 2);
	ck_assert_int_eq(tl_run(log, a5, 20000), 1);
	ck_assert(tl_file_contains(log, "--backends"));
	free(log);
	free(prog);
}
END_TEST

/* ---- HTTP/SSE ---------------------------------------------------------- */

/* POST WS_PATH with account 1's headers plus extra; the whole answer. */
static void
http_post(const char *body, const char *extra, int with_auth, struct tl_response *out)
{
	struct tl_account a;
	char *h = NULL, *hh;

	ck_assert_int_eq(tl_sim_account(&sim, 1, &a), 0);
	if (with_auth)
		h = tl_auth_headers(&a);
	hh = malloc((h ? strlen(h) : 0) + (extra ? strlen(extra) : 0) + 1);
	sprintf(hh, "%s%s", h ? h : "", extra ? extra : "");
	ck_assert_int_eq(tl_http("127.0.0.1", sim.port, "POST", WS_PATH, hh, body,
	    strlen(body), out), 0);
	free(h);
	free(hh);
	tl_account_free(&a);
}

/* Every frame but the rate limits carries a plausible CLOCK_REALTIME send
 * time, in order. */
static void
check_sent_times(json_object *frames)
{
	int64_t now = (int64_t)time(NULL) * 1000000, prev = 0, t;
	json_object *f;
	size_t i;

	ck_assert_int_gt(json_object_array_length(frames), 0);
	for (i = 0; i < json_object_array_length(frames); i++) {
		f = json_object_array_get_idx(frames, i);
		if (strcmp(jstr(f, "type"), "codex.rate_limits") == 0) {
			ck_assert(!json_object_object_get_ex(f, "sim_sent_us", NULL));
			continue;
		}
		t = jint(f, "sim_sent_us");
		ck_assert_int_ge(t, now - 60 * 1000000LL);
		ck_assert_int_le(t, now + 60 * 1000000LL);
		ck_assert_int_ge(t, prev);
		prev = t;
	}
}

START_TEST(test_sim__http_sse_matches_ws)
{
	json_object *hist_ws = json_object_new_array(), *hist_http = json_object_new_array();
	json_object *frames, *events;
	struct tl_req r = { .prompt_cache_key = "k-ws" };
	struct tl_response resp;
	struct tl_usage uw, uh;
	struct tl_ws *ws;
	char *instr = tl_text(8, 5), *req, *tw, *th, *v, *text_ws, *text_http;
	int t;

	/* One backend: both paths see the same cache model. */
	start_sim("--backends 1 --deltas 3");
	ws = open_ws(1, NULL, NULL);
	r.instructions = instr;
	for (t = 1; t <= 2; t++) {
		json_object_array_add(hist_ws, tl_msg("user", t == 1 ? "compare me" : "again"));
		json_object_array_add(hist_http, tl_msg("user", t == 1 ? "compare me" : "again"));
		r.prompt_cache_key = "k-ws";
		r.input = hist_ws;
		r.stream = 0;
		req = tl_req_ws(&r);
		frames = turn_ok(ws, req, &uw);
		free(req);
		check_sent_times(frames);
		tl_history_add_output(hist_ws, frames);

		r.prompt_cache_key = "k-http";
		r.input = hist_http;
		r.stream = 1;
		req = tl_req_http(&r);
		http_post(req, NULL, 1, &resp);
		free(req);
		ck_assert_int_eq(resp.status, 200);
		v = tl_header_get(resp.headers, "content-type");
		ck_assert_str_eq(v, "text/event-stream");
		free(v);
		v = tl_header_get(resp.headers, "transfer-encoding");
		ck_assert_str_eq(v, "chunked");
		free(v);
		/* rate limits as headers, not as an event */
		v = tl_header_get(resp.headers, "x-codex-primary-used-percent");
		ck_assert_ptr_nonnull(v);
		free(v);
		events = tl_sse_events(resp.body);
		check_sent_times(events);
		/* the event: line names each block's type */
		ck_assert_int_eq(tl_sse_count(resp.body, "response.output_text.delta"), 3);
		ck_assert_ptr_nonnull(strstr(resp.body, "event: response.created\ndata: {"));
		tw = tl_frames_types(frames);
		th = tl_frames_types(events);
		ck_assert_int_eq(strncmp(tw, "codex.rate_limits ", 18), 0);
		ck_assert_str_eq(th, tw + 18);
		text_ws = tl_output_text(frames);
		text_http = tl_output_text(events);
		ck_assert_str_eq(text_http, text_ws);
		ck_assert_int_eq(tl_usage_of(tl_frames_find(events, "response.completed"),
		    &uh), 0);
		ck_assert_int_eq(uh.input_tokens, uw.input_tokens);
		ck_assert_int_eq(uh.cached_tokens, uw.cached_tokens);
		ck_assert_int_eq(uh.output_tokens, uw.output_tokens);
		if (t == 2)	/* a stateless client's second turn hits the cache */
			ck_assert_int_gt(uh.cached_tokens, uh.input_tokens / 2);
		ck_assert_int_eq(tl_history_add_sse(hist_http, resp.body), 1);
		free(text_ws);
		free(text_http);
		free(tw);
		free(th);
		json_object_put(events);
		json_object_put(frames);
		tl_response_free(&resp);
	}
	tl_ws_close(ws);
	json_object_put(hist_ws);
	json_object_put(hist_http);
	free(instr);
	stop_sim_ok();
}
END_TEST

START_TEST(test_sim__http_sse_errors_calls_pacing)
{
	json_object *in = json_object_new_array(), *tools, *events, *j, *prev = NULL;
	struct tl_req r = { .input = NULL, .stream = 1 };
	struct tl_response resp;
	struct tl_stream *st;
	char *req, *v, *ev, *data;
	size_t i;
	int rc, completed = 0, n = 0;

	start_sim("--deltas 3");
	json_object_array_add(in, tl_msg("user", "hello over http"));
	r.input = in;
	req = tl_req_http(&r);

	/* the WebSocket's auth checks */
	http_post(req, NULL, 0, &resp);
	ck_assert_int_eq(resp.status, 401);
	j = tl_response_json(&resp);
	ck_assert_str_eq(jstr(j, "error.code"), "missing_authorization");
	json_object_put(j);
	tl_response_free(&resp);

	/* a function call asked for by header */
	http_post(req, "x-sim-function-call: get_weather\r\n", 1, &resp);
	ck_assert_int_eq(resp.status, 200);
	events = tl_sse_events(resp.body);
	check_function_call(events, "get_weather", 0);
	check_sent_times(events);
	json_object_put(events);
	tl_response_free(&resp);

	/* ... or by "CALL:NAME" when the request has tools */
	free(req);
	json_object_put(in);
	in = json_object_new_array();
	json_object_array_add(in, tl_msg("user", "now CALL:read_file please"));
	tools = json_tokener_parse("[{\"type\":\"function\",\"name\":\"read_file\","
	    "\"parameters\":{\"type\":\"object\"}}]");
	r.input = in;
	r.tools = tools;
	req = tl_req_http(&r);
	http_post(req, NULL, 1, &resp);
	ck_assert_int_eq(resp.status, 200);
	events = tl_sse_events(resp.body);
	check_function_call(events, "read_file", 0);
	json_object_put(events);
	tl_response_free(&resp);
	r.tools = NULL;
	json_object_put(tools);
	free(req);
	req = tl_req_http(&r);

	/* pacing by header: deltas leave at least delta_delay_ms apart */
	http_post(req, "x-sim-delta-delay-ms: 20\r\nx-sim-deltas: 4\r\n", 1, &resp);
	ck_assert_int_eq(resp.status, 200);
	events = tl_sse_events(resp.body);
	for (i = 0; i < json_object_array_length(events); i++) {
		j = json_object_array_get_idx(events, i);
		if (strcmp(jstr(j, "type"), "response.output_text.delta") != 0)
			continue;
		if (prev != NULL)
			ck_assert_int_ge(jint(j, "sim_sent_us") - jint(prev, "sim_sent_us"),
			    20000);
		prev = j;
		n++;
	}
	ck_assert_int_eq(n, 4);
	json_object_put(events);
	tl_response_free(&resp);

	/* bad knobs, stream:false, a fault's status and headers */
	http_post(req, "x-sim-deltas: lots\r\n", 1, &resp);
	ck_assert_int_eq(resp.status, 400);
	j = tl_response_json(&resp);
	ck_assert_str_eq(jstr(j, "error.code"), "invalid_sim_option");
	json_object_put(j);
	tl_response_free(&resp);
	http_post("{\"model\":\"m\",\"input\":\"x\"}", NULL, 1, &resp);
	ck_assert_int_eq(resp.status, 400);
	j = tl_response_json(&resp);
	ck_assert_str_eq(jstr(j, "error.param"), "stream");
	json_object_put(j);
	tl_response_free(&resp);
	http_post("{\"input\":\"x [[sim:usage_limit]]\",\"stream\":true}", NULL, 1, &resp);
	ck_assert_int_eq(resp.status, 429);
	v = tl_header_get(resp.headers, "x-codex-primary-used-percent");
	ck_assert_str_eq(v, "100.0");
	free(v);
	j = tl_response_json(&resp);
	ck_assert_str_eq(jstr(j, "error.type"), "usage_limit_reached");
	json_object_put(j);
	tl_response_free(&resp);

	/* a mid-stream cut: the stream ends without response.completed */
	{
		struct tl_account a;
		char *h;
		const char *body = "{\"input\":\"x [[sim:close_mid_stream]]\",\"stream\":true}";

		ck_assert_int_eq(tl_sim_account(&sim, 1, &a), 0);
		h = tl_auth_headers(&a);
		st = tl_stream_open(NULL, "127.0.0.1", sim.port, "POST", WS_PATH, h, body,
		    strlen(body));
		ck_assert_ptr_nonnull(st);
		ck_assert_int_eq(tl_stream_status(st), 200);
		n = 0;
		while ((rc = tl_stream_read_event(st, &ev, &data, TURN_MS)) == 1) {
			if (ev != NULL && strcmp(ev, "response.completed") == 0)
				completed = 1;
			n++;
			free(ev);
			free(data);
		}
		ck_assert_int_eq(completed, 0);
		ck_assert_int_gt(n, 2);
		ck_assert_int_ne(rc, 1);
		tl_stream_close(st, 0);
		free(h);
		tl_account_free(&a);
	}
	free(req);
	json_object_put(in);
	stop_sim_ok();
}
END_TEST

/* ---- --procs N ----------------------------------------------------------- */

/* The children of parent, from /proc/N/stat. */
static int
children_of(pid_t parent, pid_t *out, int max)
{
	char path[64], buf[512], *p;
	int n = 0, pid, ppid;
	struct dirent *de;
	DIR *d = opendir("/proc");
	FILE *f;

	while (d != NULL && (de = readdir(d)) != NULL && n < max) {
		if ((pid = atoi(de->d_name)) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) != NULL &&
		    (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == (int)parent)
			out[n++] = (pid_t)pid;
		fclose(f);
	}
	if (d != NULL)
		closedir(d);
	return n;
}

/* 1 if pid no longer runs (no /proc entry, or a zombie nobody reaped). */
static int
pid_gone(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	int gone = 1;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 1;
	if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL)
		gone = p[2] == 'Z' || p[2] == 'X';
	fclose(f);
	return gone;
}

/* Waits (bounded) until the sim has n service processes; returns them. */
static int
wait_children(pid_t *kids, int n)
{
	int64_t end = tl_now_ms() + TURN_MS;
	int got;

	while ((got = children_of(sim.pid, kids, 8)) < n && tl_now_ms() < end)
		tl_msleep(20);
	return got;
}

START_TEST(test_sim__procs_share_the_listener)
{
	json_object *hist[2], *frames, *state;
	char *instr = tl_text(16, 31), *req, msg[64], key[32];
	struct tl_ws *ws[2];
	struct tl_usage u;
	pid_t kids[8];
	int t, c, i;

	start_sim("--procs 2 --backends 1");
	ck_assert_int_eq(wait_children(kids, 2), 2);
	for (c = 0; c < 2; c++) {
		ws[c] = open_ws(c + 1, NULL, NULL);
		hist[c] = json_object_new_array();
	}
	/* Interleaved turns: each connection stays in the process that
	 * accepted it, so its prompt cache keeps hitting. */
	for (t = 1; t <= 3; t++) {
		for (c = 0; c < 2; c++) {
			snprintf(msg, sizeof(msg), "procs question %d of %d", t, c);
			snprintf(key, sizeof(key), "conv-procs-%d", c);
			json_object_array_add(hist[c], tl_msg("user", msg));
			req = tl_response_create(NULL, instr, key, NULL, hist[c]);
			frames = turn_ok(ws[c], req, &u);
			free(req);
			if (t > 1)
				ck_assert_msg(ratio(&u) >= 0.90, "conversation %d turn %d: "
				    "cached %lld of %lld", c, t, (long long)u.cached_tokens,
				    (long long)u.input_tokens);
			ck_assert_int_eq(tl_history_add_output(hist[c], frames), 1);
			json_object_put(frames);
		}
	}
	for (c = 0; c < 2; c++) {
		tl_ws_close(ws[c]);
		json_object_put(hist[c]);
	}
	/* The control endpoints answer from whichever process accepts. */
	state = tl_sim_state(&sim);
	ck_assert_ptr_nonnull(state);
	json_object_put(state);
	free(instr);
	stop_sim_ok();
	for (i = 0; i < 2; i++)
		ck_assert_msg(pid_gone(kids[i]), "service process %d outlived the sim",
		    (int)kids[i]);
}
END_TEST

START_TEST(test_sim__procs_die_with_the_parent)
{
	char *prog = tl_program("sim/codexpool-sim");
	char *log = malloc(strlen(tdir) + 16);
	char *bad[] = { prog, "--procs", "0", NULL };
	int64_t end;
	pid_t kids[8];
	int i, st;

	sprintf(log, "%s/cli.log", tdir);
	ck_assert_int_eq(tl_run(log, bad, 20000), 2);
	ck_assert(tl_file_contains(log, "--procs"));
	start_sim("--procs 3");
	ck_assert_int_eq(wait_children(kids, 3), 3);
	/* No SIGTERM to pass on: PR_SET_PDEATHSIG stops them. */
	ck_assert_int_eq(kill(sim.pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(sim.pid, &st, 0), sim.pid);
	sim.pid = -1;
	end = tl_now_ms() + TURN_MS;
	for (i = 0; i < 3; i++) {
		while (!pid_gone(kids[i]) && tl_now_ms() < end)
			tl_msleep(20);
		ck_assert_msg(pid_gone(kids[i]), "service process %d outlived a "
		    "killed parent", (int)kids[i]);
	}
	free(log);
	free(prog);
}
END_TEST

static Suite *
make_suite_sim(void)
{
	Suite *s = suite_create("sim");
	TCase *tc = tcase_create("e2e");

	tcase_add_checked_fixture(tc, e2e_setup, e2e_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_sim__five_turns_stateless);
	tcase_add_test(tc, test_sim__five_turns_incremental);
	tcase_add_test(tc, test_sim__new_connection_per_turn);
	tcase_add_test(tc, test_sim__prewarm_then_turn);
	tcase_add_test(tc, test_sim__event_sequence_and_delays);
	tcase_add_test(tc, test_sim__auth_rejections);
	tcase_add_test(tc, test_sim__expired_token);
	tcase_add_test(tc, test_sim__token_refresh_rotation);
	tcase_add_test(tc, test_sim__previous_response_not_found);
	tcase_add_test(tc, test_sim__one_response_at_a_time);
	tcase_add_test(tc, test_sim__fault_close_before_first);
	tcase_add_test(tc, test_sim__fault_close_mid_stream);
	tcase_add_test(tc, test_sim__fault_reset);
	tcase_add_test(tc, test_sim__fault_error_frames);
	tcase_add_test(tc, test_sim__fault_stall);
	tcase_add_test(tc, test_sim__fault_slow_start);
	tcase_add_test(tc, test_sim__fault_close_idle);
	tcase_add_test(tc, test_sim__fault_runtime_and_global);
	tcase_add_test(tc, test_sim__reject_handshake);
	tcase_add_test(tc, test_sim__tls);
	tcase_add_test(tc, test_sim__connection_age_cap);
	tcase_add_test(tc, test_sim__introspection);
	tcase_add_test(tc, test_sim__message_limits);
	tcase_add_test(tc, test_sim__bad_command_line);
	tcase_add_test(tc, test_sim__http_sse_matches_ws);
	tcase_add_test(tc, test_sim__http_sse_errors_calls_pacing);
	tcase_add_test(tc, test_sim__procs_share_the_listener);
	tcase_add_test(tc, test_sim__procs_die_with_the_parent);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	setvbuf(stdout, NULL, _IONBF, 0);
	log_init("check_sim", 1, LOG_LVL_ERROR);
	base_dir = tl_tmpdir();
	if (base_dir == NULL)
		return EXIT_FAILURE;
	sr = srunner_create(make_suite_cache());
	srunner_add_suite(sr, make_suite_prompt());
	srunner_add_suite(sr, make_suite_respond());
	srunner_add_suite(sr, make_suite_testlib());
	srunner_add_suite(sr, make_suite_sim());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (getenv("CODEXPOOL_KEEP_TMP") != NULL)
		fprintf(stderr, "check_sim: kept %s\n", base_dir);
	else
		tl_rmrf(base_dir);
	free(base_dir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
