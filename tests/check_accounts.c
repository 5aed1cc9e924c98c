/*
 * Accounts end to end: the real daemon, its SQLite store and the
 * simulator's OAuth endpoint and fault injection.  Import, refresh with
 * rotation, failover on 429, refresh on 401, affinity across restarts,
 * conversation identity, continuations that never cross accounts, and
 * tokens that never reach an answer or a log.
 */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"

static int
account_count(struct e2e *e)
{
	char *text = NULL;
	json_object *root;
	int n = -1;

	if (ctl_run(e, &text, "account list --json") == 0 && text) {
		root = json_tokener_parse(text);
		n = (int)json_object_array_length(json_object_object_get(root, "accounts"));
		json_object_put(root);
	}
	free(text);
	return n;
}

/* Adds simulator account n (2, 3, ...) with a label through codexpoolctl. */
static void
add_account(struct e2e *e, int n, const char *label)
{
	char path[700];

	tl_sim_auth_path(&e->sim, n, path, sizeof(path));
	ck_assert_int_eq(ctl_run(e, NULL, "account add --auth-json %s --label %s", path, label), 0);
}

START_TEST(test_accounts__import_once_and_persist)
{
	struct e2e e;
	struct stat st;
	char path[800];

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(account_count(&e), 1);
	snprintf(path, sizeof(path), "%s/data/codexpool.db", e.dir);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	add_account(&e, 2, "second");
	ck_assert_int_eq(account_count(&e), 2);
	/* adding the same account again is refused with a reason */
	tl_sim_auth_path(&e.sim, 2, path, sizeof(path));
	ck_assert_int_eq(ctl_run(&e, NULL, "account add --auth-json %s", path), 1);
	/* a restart keeps both and does not import auth_file twice */
	e2e_daemon_stop(&e);
	e2e_daemon_start(&e);
	ck_assert_int_eq(account_count(&e), 2);
	ck_assert_int_eq(ctl_run(&e, NULL, "account remove second"), 0);
	ck_assert_int_eq(account_count(&e), 1);
	ck_assert_int_eq(ctl_run(&e, NULL, "account remove second"), 1);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__refresh_before_expiry_is_persisted)
{
	struct e2e e;

	/* tokens live 120 s; refreshing 119 s early means at once */
	e2e_start(&e, "--token-ttl 120", "token_refresh_margin = 119s");
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	ck_assert_int_ge(sim_num(&e, "refreshes"), 1);
	/* after a restart the daemon holds the rotated refresh token: a refresh
	 * with the old one would be refused as reused */
	e2e_daemon_stop(&e);
	unlink(e.log);
	e2e_daemon_start(&e);
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	ck_assert_int_eq(wait_account_field(&e, "auth_file", "status", "active"), 0);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__reused_refresh_token_expires_account)
{
	struct e2e e;
	struct tl_account a;
	struct tl_response r;
	char body[8192];

	e2e_start(&e, NULL, NULL);
	/* someone else uses the refresh token first (rotating it) */
	ck_assert_int_eq(tl_sim_account(&e.sim, 1, &a), 0);
	snprintf(body, sizeof(body), "{\"client_id\":\"app_EMoamEEZ73f0CkXaXp7hrann\","
	    "\"grant_type\":\"refresh_token\",\"refresh_token\":\"%s\"}", a.refresh_token);
	ck_assert_int_eq(tl_http("127.0.0.1", e.sim.port, "POST", "/oauth/token", NULL, body,
	    strlen(body), &r), 0);
	ck_assert_int_eq(r.status, 200);
	tl_response_free(&r);
	tl_account_free(&a);
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	ck_assert_int_eq(wait_account_field(&e, "auth_file", "status", "expired"), 0);
	ck_assert_int_eq(wait_account_field(&e, "auth_file", "reason", "refresh_token_reused"), 0);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__usage_limit_fails_over)
{
	struct e2e e;
	struct conv c;
	char status[64];
	int limited = 0;

	e2e_start(&e, NULL, NULL);
	add_account(&e, 2, "second");
	conv_init(&c, "conv-failover");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"usage_limit\",\"count\":1}"), 0);
	/* the client sees one good response */
	ck_assert_int_eq(conv_turn(&e, &c, "second", 1, NULL, NULL), 200);
	if (account_field(&e, "auth_file", "status", status, sizeof(status)) == 0 &&
	    strcmp(status, "rate_limited") == 0)
		limited++;
	if (account_field(&e, "second", "status", status, sizeof(status)) == 0 &&
	    strcmp(status, "rate_limited") == 0)
		limited++;
	ck_assert_int_eq(limited, 1);
	/* the error's x-codex-* headers show up as the locked account's quota */
	{
		char quota[512];
		const char *who = strcmp(status, "rate_limited") == 0 ? "second" : "auth_file";
		ck_assert_int_eq(account_field(&e, who, "quota", quota, sizeof(quota)), 0);
		json_object *q = json_tokener_parse(quota), *used = NULL;
		ck_assert_ptr_nonnull(q);
		ck_assert(json_object_object_get_ex(json_object_object_get(q, "primary"),
		    "used_percent", &used));
		ck_assert_msg(json_object_get_double(used) >= 100.0, "quota: %s", quota);
		json_object_put(q);
	}
	/* the conversation goes on with the other account */
	ck_assert_int_eq(conv_turn(&e, &c, "third", 0, NULL, NULL), 200);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__unauthorized_refreshes_and_retries)
{
	struct e2e e;
	struct conv c;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-401");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"token_expired\",\"count\":1}"), 0);
	ck_assert_int_eq(conv_turn(&e, &c, "second", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "refreshes"), 1);
	ck_assert_int_eq(wait_account_field(&e, "auth_file", "status", "active"), 0);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__affinity_survives_restart)
{
	static const char *keys[4] = { "aff-0", "aff-1", "aff-2", "aff-3" };
	struct e2e e;
	struct conv c[4];
	char *first[4];
	int i;

	e2e_start(&e, NULL, NULL);
	add_account(&e, 2, "second");
	for (i = 0; i < 4; i++) {
		conv_init(&c[i], keys[i]);
		ck_assert_int_eq(conv_turn(&e, &c[i], "hello", 0, NULL, NULL), 200);
		first[i] = last_sim_account(&e);
	}
	/* least loaded: the conversations went to both accounts */
	ck_assert(strcmp(first[0], first[1]) != 0 || strcmp(first[0], first[2]) != 0);
	e2e_daemon_stop(&e);
	e2e_daemon_start(&e);
	for (i = 3; i >= 0; i--) {
		char *now;
		ck_assert_int_eq(conv_turn(&e, &c[i], "again", 0, NULL, NULL), 200);
		now = last_sim_account(&e);
		ck_assert_str_eq(now, first[i]);
		free(now);
		free(first[i]);
		conv_free(&c[i]);
	}
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__identity_rules)
{
	static const char *headers[] = {
		"session_id: s-underscore\r\n", "session-id: s-hyphen\r\n",
		"x-session-id: s-x\r\n", "conversation_id: s-conv\r\n",
	};
	struct e2e e;
	struct conv c;
	json_object *st, *reqs, *last;
	const char *pck;
	size_t i;

	e2e_start(&e, NULL, NULL);
	for (i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		conv_init(&c, NULL);
		c.headers = headers[i];
		ck_assert_int_eq(conv_turn(&e, &c, "one", 0, NULL, NULL), 200);
		ck_assert_int_eq(conv_turn(&e, &c, "two", 0, NULL, NULL), 200);
		conv_free(&c);
	}
	conv_init(&c, "by-prompt-cache-key");
	ck_assert_int_eq(conv_turn(&e, &c, "one", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c, "two", 0, NULL, NULL), 200);
	conv_free(&c);
	/* five conversations, each one connection, every second turn a reuse */
	ck_assert_int_eq(sim_num(&e, "connections_total"), 5);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 5);
	/* upstream never sees the client's id: an account-scoped hash */
	st = tl_sim_state(&e.sim);
	reqs = json_object_object_get(st, "requests");
	last = json_object_array_get_idx(reqs, json_object_array_length(reqs) - 1);
	pck = json_object_get_string(json_object_object_get(last, "prompt_cache_key"));
	ck_assert_ptr_nonnull(pck);
	ck_assert_int_eq(strncmp(pck, "cp_", 3), 0);
	ck_assert_ptr_null(strstr(pck, "by-prompt-cache-key"));
	json_object_put(st);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__continuation_never_crosses_accounts)
{
	struct e2e e;
	struct conv c;
	struct tl_response r;
	json_object *o;
	char body[65536], *who;
	long long before;

	e2e_start(&e, NULL, NULL);
	add_account(&e, 2, "second");
	conv_init(&c, "conv-cont");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, &r), 200);
	o = tl_response_json(&r);
	tl_response_free(&r);
	who = last_sim_account(&e);
	/* take the owning account out of service */
	{
		struct tl_account a1;
		ck_assert_int_eq(tl_sim_account(&e.sim, 1, &a1), 0);
		ck_assert_int_eq(ctl_run(&e, NULL, "account disable %s",
		    strcmp(who, a1.account_id) == 0 ? "auth_file" : "second"), 0);
		tl_account_free(&a1);
	}
	before = sim_num(&e, "requests_total");
	snprintf(body, sizeof(body), "{\"model\":\"gpt-5.4\",\"previous_response_id\":\"%s\","
	    "\"input\":[{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
	    "\"text\":\"and then?\"}]}]}",
	    json_object_get_string(json_object_object_get(o, "id")));
	ck_assert_int_eq(tl_http("127.0.0.1", e.port, "POST", "/v1/responses", NULL, body,
	    strlen(body), &r), 0);
	ck_assert_msg(r.status == 400 || r.status == 409, "status %d: %s", r.status, r.body);
	tl_response_free(&r);
	/* nothing went upstream on the other account */
	ck_assert_int_eq(sim_num(&e, "requests_total"), before);
	json_object_put(o);
	free(who);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__kill_after_refresh_loses_no_token)
{
	struct e2e e;
	int rc;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	/* logged only after the rotated pair is committed */
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	rc = tl_stop(e.daemon, SIGKILL, WAIT_MS);
	ck_assert_int_eq(rc, -SIGKILL);
	e.daemon = 0;
	unlink(e.ctl);
	unlink(e.log);
	e2e_daemon_start(&e);
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	ck_assert_int_eq(wait_account_field(&e, "auth_file", "status", "active"), 0);
	ck_assert_int_eq(sim_num(&e, "refreshes"), 2);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__no_token_in_answers_or_logs)
{
	struct e2e e;
	struct tl_account a;
	struct conv c;
	char *out = NULL, *log;
	static const char *cmds[] = { "account list", "account list --json", "config",
	    "status", "show pools", "show conversations" };
	size_t i;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-secret");
	ck_assert_int_eq(conv_turn(&e, &c, "hi", 0, NULL, NULL), 200);
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	ck_assert_int_eq(tl_sim_account(&e.sim, 1, &a), 0);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ck_assert_int_eq(ctl_run(&e, &out, "%s", cmds[i]), 0);
		ck_assert_ptr_null(strstr(out, a.access_token));
		ck_assert_ptr_null(strstr(out, a.refresh_token));
		ck_assert_ptr_null(strstr(out, "eyJ"));
		free(out);
	}
	log = tl_read_file(e.log, NULL);
	ck_assert_ptr_null(strstr(log, a.access_token));
	ck_assert_ptr_null(strstr(log, a.refresh_token));
	ck_assert_ptr_null(strstr(log, "eyJ"));
	free(log);
	tl_account_free(&a);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_accounts__no_usable_account_is_503_with_reason)
{
	struct e2e e;
	struct conv c;
	struct tl_response r;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(ctl_run(&e, NULL, "account disable auth_file"), 0);
	conv_init(&c, "conv-none");
	ck_assert_int_eq(conv_turn(&e, &c, "anyone?", 0, NULL, &r), 503);
	ck_assert_ptr_nonnull(strstr(r.body, "disabled"));
	tl_response_free(&r);
	ck_assert_int_eq(ctl_run(&e, NULL, "account enable auth_file"), 0);
	json_object_array_del_idx(c.history, json_object_array_length(c.history) - 1, 1);
	ck_assert_int_eq(conv_turn(&e, &c, "now?", 0, NULL, NULL), 200);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* Removing an account while one of its turns streams: the turn ends,
 * nothing is used after it is freed (ASan watches), the daemon goes on. */
START_TEST(test_accounts__remove_while_streaming)
{
	struct e2e e;
	struct conv c, d;
	struct tl_stream *s;
	int completed;

	e2e_start(&e, "--delta-delay-ms 100", NULL);
	conv_init(&c, "conv-removed");
	s = open_held_stream(&e, &c, "long one");
	ck_assert_int_eq(ctl_run(&e, NULL, "account remove auth_file"), 0);
	ck_assert_int_eq(account_count(&e), 0);
	drain_stream(s, &completed);
	tl_stream_close(s, 0);
	ck_assert_int_eq(wait_status(&e, "requests_inflight", 0), 0);
	/* with no account left, a turn is a 503 that says so */
	conv_init(&d, "conv-after");
	ck_assert_int_eq(conv_turn(&e, &d, "anyone?", 0, NULL, NULL), 503);
	add_account(&e, 2, "second");
	json_object_array_del_idx(d.history, json_object_array_length(d.history) - 1, 1);
	ck_assert_int_eq(conv_turn(&e, &d, "now", 0, NULL, NULL), 200);
	conv_free(&c);
	conv_free(&d);
	e2e_stop(&e);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("accounts");
	TCase *tc = tcase_create("accounts");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_accounts__import_once_and_persist);
	tcase_add_test(tc, test_accounts__refresh_before_expiry_is_persisted);
	tcase_add_test(tc, test_accounts__reused_refresh_token_expires_account);
	tcase_add_test(tc, test_accounts__usage_limit_fails_over);
	tcase_add_test(tc, test_accounts__unauthorized_refreshes_and_retries);
	tcase_add_test(tc, test_accounts__affinity_survives_restart);
	tcase_add_test(tc, test_accounts__identity_rules);
	tcase_add_test(tc, test_accounts__continuation_never_crosses_accounts);
	tcase_add_test(tc, test_accounts__kill_after_refresh_loses_no_token);
	tcase_add_test(tc, test_accounts__no_token_in_answers_or_logs);
	tcase_add_test(tc, test_accounts__no_usable_account_is_503_with_reason);
	tcase_add_test(tc, test_accounts__remove_while_streaming);
	suite_add_tcase(s, tc);
	return e2e_run(s);
}
