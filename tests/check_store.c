/*
 * Tests of the account store against real SQLite files in a private
 * temp dir (one per test, removed afterwards).
 */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

static char basedir[PATH_MAX];		/* per run; removed even after failures */
static char tmpdir[PATH_MAX + 16];		/* per test, inside basedir */
static char dbpath[PATH_MAX + 48];

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void
suite_setup(void)
{
	const char *base = getenv("TMPDIR");

	if (base == NULL || *base == '\0')
		base = "/tmp";
	snprintf(basedir, sizeof(basedir), "%s/check_store.XXXXXX", base);
	if (mkdtemp(basedir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
}

static void
suite_teardown(void)
{
	/* a failed test skips its teardown: whatever it left goes here */
	nftw(basedir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/t.XXXXXX", basedir);
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(dbpath, sizeof(dbpath), "%s/accounts.db", tmpdir);
}

static void
teardown(void)
{
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct store *
open_ok(void)
{
	char err[512];
	struct store *st;

	st = store_open(dbpath, err, sizeof(err));
	ck_assert_msg(st != NULL, "store_open: %s", err);
	return st;
}

/* Inserts an account with made-up tokens; entry is generated. */
static void
add(struct store *st, const char *label, const char *acct_id, char entry[STORE_ENTRY_LEN])
{
	struct store_account a;
	char at[64], rt[64];

	memset(&a, 0, sizeof(a));
	snprintf(at, sizeof(at), "at-%s", acct_id);
	snprintf(rt, sizeof(rt), "rt-%s", acct_id);
	a.label = (char *)label;
	a.account_id = (char *)acct_id;
	a.access_token = at;
	a.refresh_token = rt;
	a.access_expires = 5000;
	a.created = 100;
	ck_assert_msg(store_account_insert(st, &a) == 0, "insert: %s", store_errmsg(st));
	ck_assert_int_eq(strlen(a.entry), 16);
	strcpy(entry, a.entry);
}

static int
mode_of(const char *path)
{
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	return (int)(sb.st_mode & 0777);
}

/* A second, independent connection: what another process would see. */
static sqlite3 *
raw_open(void)
{
	sqlite3 *db;

	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static int64_t
raw_int(sqlite3 *db, const char *sql, const char *arg)
{
	sqlite3_stmt *s;
	int64_t v;

	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (arg != NULL)
		sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
	ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static char *
raw_text(sqlite3 *db, const char *sql, const char *arg)
{
	sqlite3_stmt *s;
	const unsigned char *t;
	char *v;

	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (arg != NULL)
		sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
	ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
	t = sqlite3_column_text(s, 0);
	v = t ? strdup((const char *)t) : NULL;
	sqlite3_finalize(s);
	return v;
}

START_TEST(test_store__file_mode_0600)
{
	char side[PATH_MAX + 64];
	struct store *st;
	mode_t old;
	int fd;

	old = umask(0);		/* as permissive as it gets */
	st = open_ok();
	ck_assert_int_eq(mode_of(dbpath), 0600);
	snprintf(side, sizeof(side), "%s-wal", dbpath);
	ck_assert_int_eq(mode_of(side), 0600);
	snprintf(side, sizeof(side), "%s-shm", dbpath);
	ck_assert_int_eq(mode_of(side), 0600);
	store_close(st);

	/* an existing file that is too open gets fixed */
	ck_assert_int_eq(chmod(dbpath, 0644), 0);
	st = open_ok();
	ck_assert_int_eq(mode_of(dbpath), 0600);
	store_close(st);

	/* a new, empty file made by someone else with 0666 too */
	unlink(dbpath);
	fd = open(dbpath, O_CREAT | O_WRONLY, 0666);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(mode_of(dbpath), 0666);
	st = open_ok();
	ck_assert_int_eq(mode_of(dbpath), 0600);
	ck_assert_int_eq(store_schema_version(st), STORE_SCHEMA_VERSION);
	store_close(st);
	umask(old);
}
END_TEST

START_TEST(test_store__migrate_then_reopen_is_noop)
{
	struct store *st;
	sqlite3 *db;
	char e[STORE_ENTRY_LEN], *v;
	int64_t objects;

	st = open_ok();
	ck_assert_int_eq(store_schema_version(st), STORE_SCHEMA_VERSION);
	add(st, "one", "acct-1", e);
	store_close(st);

	db = raw_open();
	objects = raw_int(db, "SELECT count(*) FROM sqlite_master", NULL);
	v = raw_text(db, "PRAGMA journal_mode", NULL);
	ck_assert_str_eq(v, "wal");
	free(v);
	sqlite3_close(db);

	st = open_ok();
	ck_assert_int_eq(store_schema_version(st), STORE_SCHEMA_VERSION);
	store_close(st);

	db = raw_open();
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master", NULL), objects);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM accounts", NULL), 1);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version", NULL), STORE_SCHEMA_VERSION);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_store__newer_schema_refused)
{
	struct store *st;
	char err[512];
	sqlite3 *db;

	ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE future(x); PRAGMA user_version = 99",
	    NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	err[0] = '\0';
	st = store_open(dbpath, err, sizeof(err));
	ck_assert_ptr_null(st);
	ck_assert_msg(strstr(err, "newer") != NULL && strstr(err, "99") != NULL,
	    "unclear error: %s", err);

	/* and the file is left alone */
	ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version", NULL), 99);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_store__not_a_database_refused)
{
	static const char junk[] = "this is not an SQLite file, it is a text file\n"
	    "with several lines of text in it to fill a header\n";
	char err[512];
	int fd;

	fd = open(dbpath, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	err[0] = '\0';
	ck_assert_ptr_null(store_open(dbpath, err, sizeof(err)));
	ck_assert_msg(strstr(err, "not a database") != NULL, "unclear error: %s", err);
}
END_TEST

START_TEST(test_store__insert_get_list_find)
{
	struct store_account a, *v;
	struct store *st;
	char e1[STORE_ENTRY_LEN], e2[STORE_ENTRY_LEN], e3[STORE_ENTRY_LEN];
	char inst[STORE_UUID_LEN];
	size_t n;

	st = open_ok();
	add(st, "alpha", "11111111-aaaa", e1);
	add(st, NULL, "22222222-bbbb", e2);
	add(st, "gamma", "33333333-cccc", e3);

	ck_assert_int_eq(store_account_get(st, e1, &a), 0);
	ck_assert_str_eq(a.entry, e1);
	ck_assert_str_eq(a.label, "alpha");
	ck_assert_str_eq(a.account_id, "11111111-aaaa");
	ck_assert_str_eq(a.access_token, "at-11111111-aaaa");
	ck_assert_str_eq(a.refresh_token, "rt-11111111-aaaa");
	ck_assert_ptr_null(a.id_token);
	ck_assert_int_eq(a.status, ST_ACTIVE);
	ck_assert_int_eq(a.access_expires, 5000);
	ck_assert_int_eq(a.created, 100);
	/* a v4 UUID, made once */
	ck_assert_int_eq(strlen(a.installation_id), 36);
	ck_assert_int_eq(a.installation_id[14], '4');
	strcpy(inst, a.installation_id);
	store_account_free(&a);

	ck_assert_int_eq(store_account_list(st, &v, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(v[0].entry, e1);
	ck_assert_ptr_null(v[1].label);
	ck_assert_str_eq(v[2].label, "gamma");
	ck_assert_str_ne(v[0].installation_id, v[1].installation_id);
	store_account_list_free(v, n);
	ck_assert_int_eq(store_account_count(st, &n), 0);
	ck_assert_uint_eq(n, 3);

	/* find by each identifier */
	ck_assert_int_eq(store_account_find(st, e2, &a), 0);
	ck_assert_str_eq(a.account_id, "22222222-bbbb");
	store_account_free(&a);
	ck_assert_int_eq(store_account_find(st, "gamma", &a), 0);
	ck_assert_str_eq(a.entry, e3);
	store_account_free(&a);
	ck_assert_int_eq(store_account_find(st, "11111111-aaaa", &a), 0);
	ck_assert_str_eq(a.entry, e1);
	ck_assert_str_eq(a.installation_id, inst);
	store_account_free(&a);
	ck_assert_int_eq(store_account_find(st, "delta", &a), STORE_NOTFOUND);
	ck_assert_int_eq(store_account_get(st, "0123456789abcdef", &a), STORE_NOTFOUND);
	ck_assert_int_eq(store_account_get(st, "not-an-entry", &a), -1);

	/* a label equal to another account's id makes the name ambiguous */
	ck_assert_int_eq(store_account_set_label(st, e2, "33333333-cccc", 200), 0);
	ck_assert_int_eq(store_account_find(st, "33333333-cccc", &a), STORE_AMBIGUOUS);
	store_close(st);
}
END_TEST

START_TEST(test_store__duplicate_refused)
{
	struct store_account a;
	struct store *st;
	char e1[STORE_ENTRY_LEN];
	size_t n;

	st = open_ok();
	add(st, "first", "dup-acct", e1);

	memset(&a, 0, sizeof(a));
	a.label = "second";
	a.account_id = "dup-acct";
	a.access_token = "at";
	ck_assert_int_eq(store_account_insert(st, &a), -1);
	ck_assert_msg(strstr(store_errmsg(st), "dup-acct") != NULL &&
	    strstr(store_errmsg(st), "already") != NULL, "unclear: %s", store_errmsg(st));

	memset(&a, 0, sizeof(a));
	a.label = "first";
	a.account_id = "other-acct";
	a.access_token = "at";
	ck_assert_int_eq(store_account_insert(st, &a), -1);
	ck_assert_msg(strstr(store_errmsg(st), "label") != NULL, "unclear: %s",
	    store_errmsg(st));

	memset(&a, 0, sizeof(a));
	strcpy(a.entry, e1);
	a.account_id = "third-acct";
	a.access_token = "at";
	ck_assert_int_eq(store_account_insert(st, &a), -1);
	ck_assert_msg(strstr(store_errmsg(st), "entry") != NULL, "unclear: %s",
	    store_errmsg(st));

	ck_assert_int_eq(store_account_count(st, &n), 0);
	ck_assert_uint_eq(n, 1);
	store_close(st);
}
END_TEST

START_TEST(test_store__bad_input_refused)
{
	struct store_account a;
	struct store *st;
	char e[STORE_ENTRY_LEN], *big;

	st = open_ok();
	add(st, "ok", "acct-ok", e);
	memset(&a, 0, sizeof(a));
	a.label = "two\nlines";
	a.account_id = "acct-2";
	a.access_token = "at";
	ck_assert_int_eq(store_account_insert(st, &a), -1);
	a.label = NULL;
	a.access_token = NULL;
	ck_assert_int_eq(store_account_insert(st, &a), -1);
	a.access_token = "at";
	strcpy(a.entry, "ABCDEF0123456789");	/* upper case is not ours */
	ck_assert_int_eq(store_account_insert(st, &a), -1);

	big = malloc(STORE_TOKEN_MAX + 2);
	memset(big, 'x', STORE_TOKEN_MAX + 1);
	big[STORE_TOKEN_MAX + 1] = '\0';
	ck_assert_int_eq(store_account_set_tokens(st, e, big, NULL, NULL, 0, 1), -1);
	free(big);
	ck_assert_int_eq(store_account_set_tokens(st, e, "", NULL, NULL, 0, 1), -1);
	ck_assert_int_eq(store_usage_add(st, e, -1, 0, 0, 0, 1), -1);
	ck_assert_int_eq(store_affinity_put(st, "", e, 1), -1);
	ck_assert_int_eq(store_account_set_status(st, e, (enum store_status)42, NULL, 0, 1), -1);
	store_close(st);
}
END_TEST

START_TEST(test_store__set_tokens_durable_roundtrip)
{
	struct store_account a;
	struct store *st;
	sqlite3 *db;
	char e[STORE_ENTRY_LEN], *v;

	st = open_ok();
	add(st, "rot", "acct-rot", e);
	ck_assert_int_eq(store_account_set_tokens(st, e, "at-2", "rt-2", "id-2", 9000, 300), 0);

	/* committed: another connection sees it while we are still open */
	db = raw_open();
	v = raw_text(db, "SELECT refresh_token FROM accounts WHERE entry = ?1", e);
	ck_assert_str_eq(v, "rt-2");
	free(v);
	sqlite3_close(db);

	/* NULL refresh / id token keep the stored ones */
	ck_assert_int_eq(store_account_set_tokens(st, e, "at-3", NULL, NULL, 9500, 400), 0);
	ck_assert_int_eq(store_account_set_tokens(st, "0000000000000000", "x", NULL, NULL, 0, 1),
	    STORE_NOTFOUND);
	store_close(st);

	st = open_ok();
	ck_assert_int_eq(store_account_get(st, e, &a), 0);
	ck_assert_str_eq(a.access_token, "at-3");
	ck_assert_str_eq(a.refresh_token, "rt-2");
	ck_assert_str_eq(a.id_token, "id-2");
	ck_assert_int_eq(a.access_expires, 9500);
	ck_assert_int_eq(a.updated, 400);
	store_account_free(&a);
	store_close(st);
}
END_TEST

START_TEST(test_store__set_tokens_inside_batch)
{
	struct store_account a;
	struct store *st;
	sqlite3 *db;
	char e[STORE_ENTRY_LEN], *v;

	st = open_ok();
	add(st, "b", "acct-b", e);
	ck_assert_int_eq(store_begin(st), 0);
	ck_assert_int_eq(store_begin(st), -1);		/* no nesting */
	ck_assert_int_eq(store_usage_add(st, e, 1, 10, 5, 2, 50), 0);
	ck_assert_int_eq(store_account_set_tokens(st, e, "at-b2", "rt-b2", NULL, 0, 60), 0);

	/* the rotation is visible outside at once, the batch is still ours */
	db = raw_open();
	v = raw_text(db, "SELECT refresh_token FROM accounts WHERE entry = ?1", e);
	ck_assert_str_eq(v, "rt-b2");
	free(v);
	sqlite3_close(db);

	ck_assert_int_eq(store_usage_add(st, e, 1, 10, 5, 2, 70), 0);
	ck_assert_int_eq(store_commit(st), 0);
	ck_assert_int_eq(store_commit(st), -1);
	ck_assert_int_eq(store_account_get(st, e, &a), 0);
	ck_assert_int_eq(a.requests, 2);
	ck_assert_int_eq(a.input_tokens, 20);
	store_account_free(&a);
	store_close(st);
}
END_TEST

START_TEST(test_store__status_transitions)
{
	static const enum store_status path[] = {
		ST_REFRESHING, ST_ACTIVE, ST_RATE_LIMITED, ST_ACTIVE, ST_EXPIRED,
		ST_REFRESHING, ST_ACTIVE, ST_DISABLED, ST_ACTIVE, ST_BANNED,
	};
	struct store_account a;
	struct store *st;
	sqlite3 *db;
	char e[STORE_ENTRY_LEN], reason[64], *v;
	size_t i;
	int rc;

	st = open_ok();
	add(st, "s", "acct-s", e);
	for (i = 0; i < sizeof(path) / sizeof(path[0]); i++) {
		snprintf(reason, sizeof(reason), "step %zu", i);
		ck_assert_int_eq(store_account_set_status(st, e, path[i], reason,
		    path[i] == ST_RATE_LIMITED ? 7777 : 0, 1000 + (int64_t)i), 0);
		ck_assert_int_eq(store_account_get(st, e, &a), 0);
		ck_assert_int_eq(a.status, path[i]);
		ck_assert_str_eq(a.status_reason, reason);
		ck_assert_int_eq(a.rate_limited_until, path[i] == ST_RATE_LIMITED ? 7777 : 0);
		ck_assert_int_eq(a.updated, 1000 + (int64_t)i);
		store_account_free(&a);
	}
	ck_assert_int_eq(store_account_set_status(st, e, ST_ACTIVE, NULL, 0, 2000), 0);
	ck_assert_int_eq(store_account_get(st, e, &a), 0);
	ck_assert_ptr_null(a.status_reason);
	store_account_free(&a);

	for (i = 0; i < ST_NSTATUS; i++)
		ck_assert_int_eq(store_status_from_name(store_status_name(i)), (int)i);
	ck_assert_int_eq(store_status_from_name("quota_exhausted"), -1);
	store_close(st);

	/* the CHECK constraint holds even for a writer that is not us */
	db = raw_open();
	{
		sqlite3_stmt *s;

		ck_assert_int_eq(sqlite3_prepare_v2(db,
		    "UPDATE accounts SET status = 'bogus' WHERE entry = ?1", -1, &s, NULL),
		    SQLITE_OK);
		sqlite3_bind_text(s, 1, e, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		sqlite3_finalize(s);
		ck_assert_int_eq(rc, SQLITE_CONSTRAINT_CHECK);
	}
	v = raw_text(db, "SELECT status FROM accounts WHERE entry = ?1", e);
	ck_assert_str_eq(v, "active");
	free(v);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_store__remove_cascades)
{
	struct store_account a;
	struct store *st;
	sqlite3 *db;
	char e1[STORE_ENTRY_LEN], e2[STORE_ENTRY_LEN], got[STORE_ENTRY_LEN];

	st = open_ok();
	add(st, "r1", "acct-r1", e1);
	add(st, "r2", "acct-r2", e2);
	ck_assert_int_eq(store_affinity_put(st, "conv-a", e1, 10), 0);
	ck_assert_int_eq(store_affinity_put(st, "conv-b", e1, 10), 0);
	ck_assert_int_eq(store_affinity_put(st, "conv-c", e2, 10), 0);
	ck_assert_int_eq(store_response_put(st, "resp_1", e1, "conv-a", 10), 0);
	ck_assert_int_eq(store_response_put(st, "resp_2", e2, "conv-c", 10), 0);

	ck_assert_int_eq(store_account_remove(st, e1), 0);
	ck_assert_int_eq(store_account_remove(st, e1), STORE_NOTFOUND);
	ck_assert_int_eq(store_account_get(st, e1, &a), STORE_NOTFOUND);
	ck_assert_int_eq(store_affinity_get(st, "conv-a", 10, 100, got), STORE_NOTFOUND);
	ck_assert_int_eq(store_response_get(st, "resp_1", got, NULL), STORE_NOTFOUND);
	ck_assert_int_eq(store_affinity_get(st, "conv-c", 10, 100, got), 0);
	ck_assert_str_eq(got, e2);
	ck_assert_int_eq(store_response_get(st, "resp_2", got, NULL), 0);

	db = raw_open();
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM affinity WHERE entry = ?1", e1), 0);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM responses WHERE entry = ?1", e1), 0);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM affinity", NULL), 1);
	sqlite3_close(db);

	/* rows for an account that does not exist are refused */
	ck_assert_int_eq(store_affinity_put(st, "conv-x", e1, 10), STORE_NOTFOUND);
	ck_assert_int_eq(store_response_put(st, "resp_x", e1, NULL, 10), STORE_NOTFOUND);
	store_close(st);
}
END_TEST

START_TEST(test_store__affinity_ttl)
{
	struct store *st;
	char e1[STORE_ENTRY_LEN], e2[STORE_ENTRY_LEN], got[STORE_ENTRY_LEN];
	size_t removed;

	st = open_ok();
	add(st, "a1", "acct-a1", e1);
	add(st, "a2", "acct-a2", e2);
	ck_assert_int_eq(store_affinity_put(st, "c1", e1, 1000), 0);
	ck_assert_int_eq(store_affinity_put(st, "c2", e2, 1500), 0);

	ck_assert_int_eq(store_affinity_get(st, "c1", 1600, 600, got), 0);
	ck_assert_str_eq(got, e1);
	ck_assert_int_eq(store_affinity_get(st, "c1", 1601, 600, got), STORE_NOTFOUND);
	ck_assert_str_eq(got, "");
	ck_assert_int_eq(store_affinity_get(st, "nope", 1000, 600, got), STORE_NOTFOUND);

	/* a put moves the conversation and restarts its clock */
	ck_assert_int_eq(store_affinity_put(st, "c1", e2, 1700), 0);
	ck_assert_int_eq(store_affinity_get(st, "c1", 2200, 600, got), 0);
	ck_assert_str_eq(got, e2);

	/* the sweep removes what is past the TTL, nothing else */
	ck_assert_int_eq(store_affinity_sweep(st, 2150, 600, &removed), 0);
	ck_assert_uint_eq(removed, 1);		/* c2, last put at 1500 */
	ck_assert_int_eq(store_affinity_get(st, "c2", 1500, 600, got), STORE_NOTFOUND);
	ck_assert_int_eq(store_affinity_get(st, "c1", 2150, 600, got), 0);
	store_close(st);
}
END_TEST

START_TEST(test_store__response_ownership)
{
	struct store *st;
	char e1[STORE_ENTRY_LEN], e2[STORE_ENTRY_LEN], got[STORE_ENTRY_LEN], *conv;
	size_t removed;

	st = open_ok();
	add(st, "o1", "acct-o1", e1);
	add(st, "o2", "acct-o2", e2);
	ck_assert_int_eq(store_response_put(st, "resp_a", e1, "conv-1", 100), 0);
	ck_assert_int_eq(store_response_put(st, "resp_b", e2, NULL, 200), 0);
	ck_assert_int_eq(store_response_get(st, "resp_a", got, &conv), 0);
	ck_assert_str_eq(got, e1);
	ck_assert_str_eq(conv, "conv-1");
	free(conv);
	ck_assert_int_eq(store_response_get(st, "resp_b", got, &conv), 0);
	ck_assert_str_eq(got, e2);
	ck_assert_ptr_null(conv);
	ck_assert_int_eq(store_response_get(st, "resp_c", got, &conv), STORE_NOTFOUND);

	/* re-registering moves ownership */
	ck_assert_int_eq(store_response_put(st, "resp_a", e2, "conv-2", 300), 0);
	ck_assert_int_eq(store_response_get(st, "resp_a", got, NULL), 0);
	ck_assert_str_eq(got, e2);

	ck_assert_int_eq(store_response_forget(st, "resp_a"), 0);
	ck_assert_int_eq(store_response_forget(st, "resp_a"), STORE_NOTFOUND);
	ck_assert_int_eq(store_response_put(st, "resp_old", e1, NULL, 50), 0);
	ck_assert_int_eq(store_response_sweep(st, 1000, 900, &removed), 0);
	ck_assert_uint_eq(removed, 1);		/* resp_old (50 < 100) */
	ck_assert_int_eq(store_response_get(st, "resp_b", got, NULL), 0);
	store_close(st);
}
END_TEST

START_TEST(test_store__usage_counters)
{
	struct store_account a;
	struct store *st;
	char e[STORE_ENTRY_LEN];
	int i;

	st = open_ok();
	add(st, "u", "acct-u", e);
	ck_assert_int_eq(store_usage_add(st, e, 1, 1000, 800, 50, 500), 0);
	ck_assert_int_eq(store_begin(st), 0);
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(store_usage_add(st, e, 1, 10, 5, 1, 600 + i), 0);
	ck_assert_int_eq(store_commit(st), 0);
	/* an older timestamp does not move last_used back */
	ck_assert_int_eq(store_usage_add(st, e, 0, 0, 0, 0, 10), 0);
	ck_assert_int_eq(store_usage_add(st, "0000000000000000", 1, 1, 1, 1, 1),
	    STORE_NOTFOUND);

	/* a rolled back batch leaves no trace */
	ck_assert_int_eq(store_begin(st), 0);
	ck_assert_int_eq(store_usage_add(st, e, 1000, 1000, 1000, 1000, 9999), 0);
	ck_assert_int_eq(store_rollback(st), 0);
	store_close(st);

	st = open_ok();
	ck_assert_int_eq(store_account_get(st, e, &a), 0);
	ck_assert_int_eq(a.requests, 101);
	ck_assert_int_eq(a.input_tokens, 2000);
	ck_assert_int_eq(a.cached_tokens, 1300);
	ck_assert_int_eq(a.output_tokens, 150);
	ck_assert_int_eq(a.last_used, 699);
	store_account_free(&a);
	store_close(st);
}
END_TEST

START_TEST(test_store__quota_plan_label)
{
	static const char quota[] = "{\"primary\":{\"used_percent\":42,\"reset_at\":1700000000}}";
	struct store_account a;
	struct store *st;
	char e1[STORE_ENTRY_LEN], e2[STORE_ENTRY_LEN];

	st = open_ok();
	add(st, "q1", "acct-q1", e1);
	add(st, "q2", "acct-q2", e2);
	ck_assert_int_eq(store_account_set_quota(st, e1, quota, 10), 0);
	ck_assert_int_eq(store_account_set_plan(st, e1, "pro", 11), 0);
	ck_assert_int_eq(store_account_set_label(st, e1, "renamed", 12), 0);
	ck_assert_int_eq(store_account_set_label(st, e2, "renamed", 13), -1);
	ck_assert_msg(strstr(store_errmsg(st), "already used") != NULL, "unclear: %s",
	    store_errmsg(st));
	ck_assert_int_eq(store_account_get(st, e1, &a), 0);
	ck_assert_str_eq(a.quota_json, quota);
	ck_assert_str_eq(a.plan, "pro");
	ck_assert_str_eq(a.label, "renamed");
	store_account_free(&a);
	ck_assert_int_eq(store_account_set_label(st, e1, NULL, 14), 0);
	ck_assert_int_eq(store_account_find(st, "renamed", &a), STORE_NOTFOUND);
	store_close(st);
}
END_TEST

START_TEST(test_store__sql_in_values_stored_verbatim)
{
	static const char *const evil_label = "x'); DROP TABLE accounts; --";
	static const char *const evil_id = "a\"b'c' OR '1'='1";
	struct store_account a, *v;
	struct store *st;
	char e1[STORE_ENTRY_LEN], e2[STORE_ENTRY_LEN];
	size_t n;

	st = open_ok();
	add(st, "plain", "acct-plain", e1);
	add(st, evil_label, evil_id, e2);
	ck_assert_int_eq(store_account_find(st, evil_label, &a), 0);
	ck_assert_str_eq(a.label, evil_label);
	ck_assert_str_eq(a.account_id, evil_id);
	store_account_free(&a);
	ck_assert_int_eq(store_account_find(st, evil_id, &a), 0);
	ck_assert_str_eq(a.entry, e2);
	store_account_free(&a);
	/* the classic always-true clause matches nothing */
	ck_assert_int_eq(store_account_find(st, "' OR '1'='1", &a), STORE_NOTFOUND);
	ck_assert_int_eq(store_affinity_put(st, "k'; DELETE FROM affinity; --", e1, 5), 0);
	store_close(st);

	st = open_ok();
	ck_assert_int_eq(store_account_list(st, &v, &n), 0);
	ck_assert_uint_eq(n, 2);
	store_account_list_free(v, n);
	store_close(st);
}
END_TEST

static Suite *
make_suite_store(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("store");

	tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_store__file_mode_0600);
	tcase_add_test(tc, test_store__migrate_then_reopen_is_noop);
	tcase_add_test(tc, test_store__newer_schema_refused);
	tcase_add_test(tc, test_store__not_a_database_refused);
	tcase_add_test(tc, test_store__insert_get_list_find);
	tcase_add_test(tc, test_store__duplicate_refused);
	tcase_add_test(tc, test_store__bad_input_refused);
	tcase_add_test(tc, test_store__set_tokens_durable_roundtrip);
	tcase_add_test(tc, test_store__set_tokens_inside_batch);
	tcase_add_test(tc, test_store__status_transitions);
	tcase_add_test(tc, test_store__remove_cascades);
	tcase_add_test(tc, test_store__affinity_ttl);
	tcase_add_test(tc, test_store__response_ownership);
	tcase_add_test(tc, test_store__usage_counters);
	tcase_add_test(tc, test_store__quota_plan_label);
	tcase_add_test(tc, test_store__sql_in_values_stored_verbatim);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(make_suite_store());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
