/*
 * The account store on SQLite.  See store.h for the contract.
 *
 * All data statements are prepared once in store_open and reused; values
 * are always bound, never pasted into SQL.  The only SQL run as text is
 * constant: the schema migrations and the synchronous pragma, which
 * SQLite applies when it is prepared, not when it is stepped, so a kept
 * prepared copy would do nothing.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "util.h"

#define STORE_BUSY_MS		100
#define STORE_LIST_MAX		1000000

/* One step per schema version: migrations[v] moves a file from v to v+1. */
static const char *const migrations[] = {
	/* 0 -> 1: the first schema */
	"CREATE TABLE accounts ("
	"  entry TEXT PRIMARY KEY NOT NULL"
	"    CHECK (length(entry) = 16 AND entry NOT GLOB '*[^0-9a-f]*'),"
	"  label TEXT UNIQUE,"
	"  account_id TEXT NOT NULL UNIQUE,"
	"  access_token TEXT NOT NULL,"
	"  refresh_token TEXT,"
	"  id_token TEXT,"
	"  access_expires INTEGER NOT NULL DEFAULT 0,"
	"  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN"
	"    ('active','refreshing','expired','rate_limited','disabled','banned')),"
	"  status_reason TEXT,"
	"  rate_limited_until INTEGER NOT NULL DEFAULT 0,"
	"  plan TEXT,"
	"  quota_json TEXT,"
	"  installation_id TEXT NOT NULL,"
	"  requests INTEGER NOT NULL DEFAULT 0,"
	"  input_tokens INTEGER NOT NULL DEFAULT 0,"
	"  cached_tokens INTEGER NOT NULL DEFAULT 0,"
	"  output_tokens INTEGER NOT NULL DEFAULT 0,"
	"  last_used INTEGER NOT NULL DEFAULT 0,"
	"  created INTEGER NOT NULL,"
	"  updated INTEGER NOT NULL"
	");"
	"CREATE TABLE affinity ("
	"  conversation TEXT PRIMARY KEY NOT NULL,"
	"  entry TEXT NOT NULL REFERENCES accounts(entry) ON DELETE CASCADE,"
	"  updated_at INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX affinity_by_entry ON affinity(entry);"
	"CREATE INDEX affinity_by_age ON affinity(updated_at);"
	"CREATE TABLE responses ("
	"  response_id TEXT PRIMARY KEY NOT NULL,"
	"  entry TEXT NOT NULL REFERENCES accounts(entry) ON DELETE CASCADE,"
	"  conversation TEXT,"
	"  created_at INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX responses_by_entry ON responses(entry);"
	"CREATE INDEX responses_by_age ON responses(created_at);",
	/* 1 -> 2: client API keys, only their SHA-256 */
	"CREATE TABLE api_keys ("
	"  label TEXT PRIMARY KEY NOT NULL,"
	"  hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),"
	"  created INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL DEFAULT 0,"
	"  requests INTEGER NOT NULL DEFAULT 0,"
	"  input_tokens INTEGER NOT NULL DEFAULT 0,"
	"  cached_tokens INTEGER NOT NULL DEFAULT 0"
	") WITHOUT ROWID;",
};
#define NMIGRATIONS	((int)(sizeof(migrations) / sizeof(migrations[0])))

/* The column list every account SELECT returns, in fill_account order. */
#define ACCOUNT_COLS \
	"entry, label, account_id, access_token, refresh_token, id_token," \
	" access_expires, status, status_reason, rate_limited_until, plan," \
	" quota_json, installation_id, requests, input_tokens, cached_tokens," \
	" output_tokens, last_used, created, updated"

enum stmt_id {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_ACC_INSERT,
	S_ACC_GET,
	S_ACC_FIND,
	S_ACC_LIST,
	S_ACC_COUNT,
	S_ACC_TOKENS,
	S_ACC_STATUS,
	S_ACC_QUOTA,
	S_ACC_PLAN,
	S_ACC_LABEL,
	S_ACC_REMOVE,
	S_USAGE,
	S_AFF_PUT,
	S_AFF_GET,
	S_AFF_SWEEP,
	S_RESP_PUT,
	S_RESP_GET,
	S_RESP_FORGET,
	S_RESP_SWEEP,
	S_KEY_INSERT,
	S_KEY_LIST,
	S_KEY_REMOVE,
	S_KEY_USAGE,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_ACC_INSERT] = "INSERT INTO accounts (" ACCOUNT_COLS ") VALUES"
	    " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
	    " ?16, ?17, ?18, ?19, ?20)",
	[S_ACC_GET] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE entry = ?1",
	[S_ACC_FIND] = "SELECT " ACCOUNT_COLS " FROM accounts"
	    " WHERE entry = ?1 OR label = ?1 OR account_id = ?1 LIMIT 2",
	[S_ACC_LIST] = "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY created, rowid",
	[S_ACC_COUNT] = "SELECT count(*) FROM accounts",
	[S_ACC_TOKENS] = "UPDATE accounts SET access_token = ?2,"
	    " refresh_token = coalesce(?3, refresh_token),"
	    " id_token = coalesce(?4, id_token), access_expires = ?5, updated = ?6"
	    " WHERE entry = ?1",
	[S_ACC_STATUS] = "UPDATE accounts SET status = ?2, status_reason = ?3,"
	    " rate_limited_until = ?4, updated = ?5 WHERE entry = ?1",
	[S_ACC_QUOTA] = "UPDATE accounts SET quota_json = ?2, updated = ?3 WHERE entry = ?1",
	[S_ACC_PLAN] = "UPDATE accounts SET plan = ?2, updated = ?3 WHERE entry = ?1",
	[S_ACC_LABEL] = "UPDATE accounts SET label = ?2, updated = ?3 WHERE entry = ?1",
	[S_ACC_REMOVE] = "DELETE FROM accounts WHERE entry = ?1",
	[S_USAGE] = "UPDATE accounts SET requests = requests + ?2,"
	    " input_tokens = input_tokens + ?3, cached_tokens = cached_tokens + ?4,"
	    " output_tokens = output_tokens + ?5, last_used = max(last_used, ?6)"
	    " WHERE entry = ?1",
	[S_AFF_PUT] = "INSERT INTO affinity (conversation, entry, updated_at)"
	    " VALUES (?1, ?2, ?3) ON CONFLICT (conversation) DO UPDATE SET"
	    " entry = excluded.entry, updated_at = excluded.updated_at",
	[S_AFF_GET] = "SELECT entry, updated_at FROM affinity WHERE conversation = ?1",
	[S_AFF_SWEEP] = "DELETE FROM affinity WHERE updated_at < ?1",
	[S_RESP_PUT] = "INSERT INTO responses (response_id, entry, conversation, created_at)"
	    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (response_id) DO UPDATE SET"
	    " entry = excluded.entry, conversation = excluded.conversation,"
	    " created_at = excluded.created_at",
	[S_RESP_GET] = "SELECT entry, conversation FROM responses WHERE response_id = ?1",
	[S_RESP_FORGET] = "DELETE FROM responses WHERE response_id = ?1",
	[S_RESP_SWEEP] = "DELETE FROM responses WHERE created_at < ?1",
	[S_KEY_INSERT] = "INSERT INTO api_keys (label, hash, created) VALUES (?1, ?2, ?3)",
	[S_KEY_LIST] = "SELECT label, hash, created, last_used, requests, input_tokens,"
	    " cached_tokens FROM api_keys ORDER BY created, label",
	[S_KEY_REMOVE] = "DELETE FROM api_keys WHERE label = ?1",
	[S_KEY_USAGE] = "UPDATE api_keys SET requests = requests + ?2,"
	    " input_tokens = input_tokens + ?3, cached_tokens = cached_tokens + ?4,"
	    " last_used = max(last_used, ?5) WHERE label = ?1",
};

static const char *const status_names[ST_NSTATUS] = {
	[ST_ACTIVE] = "active",
	[ST_REFRESHING] = "refreshing",
	[ST_EXPIRED] = "expired",
	[ST_RATE_LIMITED] = "rate_limited",
	[ST_DISABLED] = "disabled",
	[ST_BANNED] = "banned",
};

struct store {
	sqlite3		*db;
	char		*path;
	sqlite3_stmt	*stmt[S_COUNT];
	bool		 in_batch;
	char		 err[512];
};

static void store_seterr(struct store *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));

static void
store_seterr(struct store *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->err, sizeof(st->err), fmt, ap);
	va_end(ap);
}

const char *
store_errmsg(const struct store *st)
{
	return st->err;
}

const char *
store_status_name(enum store_status s)
{
	if ((int)s < 0 || s >= ST_NSTATUS)
		return NULL;
	return status_names[s];
}

int
store_status_from_name(const char *name)
{
	int i;

	if (name == NULL)
		return -1;
	for (i = 0; i < ST_NSTATUS; i++)
		if (strcmp(name, status_names[i]) == 0)
			return i;
	return -1;
}

static void
random_fill(void *buf, size_t n)
{
	uint8_t *p = buf;
	ssize_t r;

	while (n > 0) {
		r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fatal("getrandom");
		}
		p += r;
		n -= (size_t)r;
	}
}

void
store_new_entry_id(char out[STORE_ENTRY_LEN])
{
	uint8_t b[8];

	random_fill(b, sizeof(b));
	hex_encode(b, sizeof(b), out);
}

void
store_new_uuid(char out[STORE_UUID_LEN])
{
	uint8_t b[16];
	char h[33];

	random_fill(b, sizeof(b));
	b[6] = (b[6] & 0x0f) | 0x40;	/* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	hex_encode(b, sizeof(b), h);
	snprintf(out, STORE_UUID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s",
	    h, h + 8, h + 12, h + 16, h + 20);
}

/* ---- input checks: clear errors instead of odd rows ---- */

static bool
valid_entry(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != STORE_ENTRY_LEN - 1)
		return false;
	for (i = 0; i < STORE_ENTRY_LEN - 1; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Non-empty, at most max bytes, no control characters (they would break
 * logs and the CLI's tables).  Quotes and anything else are fine. */
static bool
valid_text(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > max)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static bool
valid_token(const char *s)
{
	size_t n;

	return s != NULL && (n = strlen(s)) > 0 && n <= STORE_TOKEN_MAX;
}

static int
check_entry(struct store *st, const char *entry)
{
	if (valid_entry(entry))
		return 0;
	store_seterr(st, "bad entry id (want 16 lowercase hex characters)");
	return -1;
}

/* ---- statement helpers ---- */

static inline sqlite3_stmt *
stmt_get(struct store *st, enum stmt_id id)
{
	return st->stmt[id];
}

static void
stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

static void
bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (v == NULL)
		sqlite3_bind_null(s, i);
	else
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* Records SQLite's reason for a failed call; what names the operation. */
static int
sql_fail(struct store *st, const char *what)
{
	store_seterr(st, "%s: %s", what, sqlite3_errmsg(st->db));
	return -1;
}

/* Steps a statement that returns no rows; resets it either way. */
static int
exec_stmt(struct store *st, sqlite3_stmt *s, const char *what)
{
	int rc;

	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE) {
		store_seterr(st, "%s: %s", what, sqlite3_errmsg(st->db));
		stmt_done(s);
		return -1;
	}
	stmt_done(s);
	return 0;
}

/* An UPDATE/DELETE of one entry: 0, STORE_NOTFOUND, or -1. */
static int
exec_entry_update(struct store *st, sqlite3_stmt *s, const char *entry, const char *what)
{
	if (exec_stmt(st, s, what) != 0)
		return -1;
	if (sqlite3_changes(st->db) == 0) {
		store_seterr(st, "%s: no account %s", what, entry);
		return STORE_NOTFOUND;
	}
	return 0;
}

static int
exec_const(struct store *st, const char *sql, const char *what)
{
	char *msg = NULL;

	if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		store_seterr(st, "%s: %s", what, msg ? msg : sqlite3_errmsg(st->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/*
 * Durable section.  The pragma cannot change inside a transaction, so an
 * open batch is committed first (cheaply); the FULL commit that follows
 * fsyncs the WAL up to and including it.  durable_end restores NORMAL and
 * reopens the caller's batch.
 */
static int
durable_begin(struct store *st, bool *reopen)
{
	*reopen = false;
	if (st->in_batch) {
		if (exec_stmt(st, stmt_get(st, S_COMMIT), "commit batch") != 0)
			return -1;
		st->in_batch = false;
		*reopen = true;
	}
	return exec_const(st, "PRAGMA synchronous=FULL", "durable write");
}

static void
durable_end(struct store *st, bool reopen)
{
	char saved[sizeof(st->err)];

	/* keep the caller's error message if there is one */
	memcpy(saved, st->err, sizeof(saved));
	if (exec_const(st, "PRAGMA synchronous=NORMAL", "durable write") != 0)
		log_warnx("account store: %s", st->err);
	if (reopen) {
		if (exec_stmt(st, stmt_get(st, S_BEGIN), "reopen batch") != 0)
			log_warnx("account store: %s", st->err);
		else
			st->in_batch = true;
	}
	memcpy(st->err, saved, sizeof(saved));
}

/* ---- open / close ---- */

/*
 * Makes path exist as a regular file readable by the owner only.  It is
 * created here, before SQLite sees it, so there is never a moment when
 * the umask decides who can read the tokens.
 */
static int
secure_file(const char *path, bool create, char *err, size_t errlen)
{
	struct stat sb;
	int fd, flags;

	flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0);
	if ((fd = open(path, flags, 0600)) == -1) {
		if (!create && errno == ENOENT)
			return 0;
		if (errno == ELOOP)
			snprintf(err, errlen, "%s is a symbolic link; give the real path", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) == -1) {
		snprintf(err, errlen, "%s: fstat: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -1;
	}
	if ((sb.st_mode & 0777) != 0600) {
		if (sb.st_mode & 077)
			log_warnx("%s had mode %03o; it holds tokens, setting 600", path,
			    (unsigned)(sb.st_mode & 0777));
		if (fchmod(fd, 0600) == -1) {
			snprintf(err, errlen, "%s: chmod 600: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
	}
	close(fd);
	return 0;
}

static int
read_user_version(struct store *st, int *version)
{
	sqlite3_stmt *s;
	int rc;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
		return sql_fail(st, "read schema version");
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(s);
		return sql_fail(st, "read schema version");
	}
	*version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return 0;
}

static int
migrate(struct store *st)
{
	char sql[64];
	int v;

	if (read_user_version(st, &v) != 0)
		return -1;
	if (v > NMIGRATIONS) {
		store_seterr(st, "%s has schema version %d, newer than this codexpool "
		    "understands (%d); refusing to open it (upgrade codexpool, or restore "
		    "a backup made by this version)", st->path, v, NMIGRATIONS);
		return -1;
	}
	if (v < 0) {
		store_seterr(st, "%s has a bad schema version %d", st->path, v);
		return -1;
	}
	for (; v < NMIGRATIONS; v++) {
		if (exec_const(st, "BEGIN IMMEDIATE", "migrate") != 0)
			return -1;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if (exec_const(st, migrations[v], "migrate") != 0 ||
		    exec_const(st, sql, "migrate") != 0) {
			char why[sizeof(st->err)];

			memcpy(why, st->err, sizeof(why));
			(void)exec_const(st, "ROLLBACK", "migrate");
			store_seterr(st, "%s: schema step %d -> %d failed: %s", st->path,
			    v, v + 1, why);
			return -1;
		}
		if (exec_const(st, "COMMIT", "migrate") != 0)
			return -1;
		log_info("account store %s: schema migrated to version %d", st->path, v + 1);
	}
	return 0;
}

static int
set_wal(struct store *st)
{
	sqlite3_stmt *s;
	const char *mode;
	int ok;

	if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL) != SQLITE_OK)
		return sql_fail(st, "journal_mode");
	ok = sqlite3_step(s) == SQLITE_ROW &&
	    (mode = (const char *)sqlite3_column_text(s, 0)) != NULL &&
	    strcmp(mode, "wal") == 0;
	sqlite3_finalize(s);
	if (!ok) {
		store_seterr(st, "%s: cannot switch to WAL journal mode: %s", st->path,
		    sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

struct store *
store_open(const char *path, char *err, size_t errlen)
{
	struct store *st;
	char side[4096];
	int i;

	if (path == NULL || *path == '\0') {
		snprintf(err, errlen, "no account store path");
		return NULL;
	}
	if (secure_file(path, true, err, errlen) != 0)
		return NULL;
	/* SQLite gives its side files the database's mode; fix old ones. */
	snprintf(side, sizeof(side), "%s-wal", path);
	if (secure_file(side, false, err, errlen) != 0)
		return NULL;
	snprintf(side, sizeof(side), "%s-shm", path);
	if (secure_file(side, false, err, errlen) != 0)
		return NULL;

	st = xcalloc(1, sizeof(*st));
	st->path = xstrdup(path);
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
	    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		    st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, STORE_BUSY_MS);
	if (set_wal(st) != 0 ||
	    exec_const(st, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
	    " PRAGMA secure_delete=ON", "pragmas") != 0 ||
	    migrate(st) != 0) {
		snprintf(err, errlen, "%s", st->err);
		goto fail;
	}
	for (i = 0; i < S_COUNT; i++) {
		if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		    &st->stmt[i], NULL) != SQLITE_OK) {
			snprintf(err, errlen, "%s: prepare statement %d: %s", path, i,
			    sqlite3_errmsg(st->db));
			goto fail;
		}
	}
	return st;
fail:
	store_close(st);
	return NULL;
}

void
store_close(struct store *st)
{
	int i;

	if (st == NULL)
		return;
	if (st->in_batch && st->stmt[S_COMMIT] != NULL)
		(void)exec_stmt(st, st->stmt[S_COMMIT], "commit batch");
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	if (st->db != NULL && sqlite3_close(st->db) != SQLITE_OK)
		log_warnx("account store %s: close: %s", st->path, sqlite3_errmsg(st->db));
	free(st->path);
	free(st);
}

int
store_schema_version(struct store *st)
{
	int v;

	return read_user_version(st, &v) == 0 ? v : -1;
}

/* ---- transactions ---- */

int
store_begin(struct store *st)
{
	if (st->in_batch) {
		store_seterr(st, "a batch is already open");
		return -1;
	}
	if (exec_stmt(st, stmt_get(st, S_BEGIN), "begin") != 0)
		return -1;
	st->in_batch = true;
	return 0;
}

int
store_commit(struct store *st)
{
	if (!st->in_batch) {
		store_seterr(st, "no batch is open");
		return -1;
	}
	if (exec_stmt(st, stmt_get(st, S_COMMIT), "commit") != 0) {
		char why[sizeof(st->err)];

		memcpy(why, st->err, sizeof(why));
		(void)exec_stmt(st, stmt_get(st, S_ROLLBACK), "rollback");
		st->in_batch = false;
		memcpy(st->err, why, sizeof(why));
		return -1;
	}
	st->in_batch = false;
	return 0;
}

int
store_rollback(struct store *st)
{
	if (!st->in_batch) {
		store_seterr(st, "no batch is open");
		return -1;
	}
	st->in_batch = false;
	return exec_stmt(st, stmt_get(st, S_ROLLBACK), "rollback");
}

/* ---- accounts ---- */

static char *
col_dup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t ? xstrdup((const char *)t) : NULL;
}

static int
fill_account(struct store *st, sqlite3_stmt *s, struct store_account *a)
{
	const char *t;
	int status;

	memset(a, 0, sizeof(*a));
	t = (const char *)sqlite3_column_text(s, 0);
	strlcpy_safe(a->entry, t ? t : "", sizeof(a->entry));
	a->label = col_dup(s, 1);
	a->account_id = col_dup(s, 2);
	a->access_token = col_dup(s, 3);
	a->refresh_token = col_dup(s, 4);
	a->id_token = col_dup(s, 5);
	a->access_expires = sqlite3_column_int64(s, 6);
	status = store_status_from_name((const char *)sqlite3_column_text(s, 7));
	a->status_reason = col_dup(s, 8);
	a->rate_limited_until = sqlite3_column_int64(s, 9);
	a->plan = col_dup(s, 10);
	a->quota_json = col_dup(s, 11);
	t = (const char *)sqlite3_column_text(s, 12);
	strlcpy_safe(a->installation_id, t ? t : "", sizeof(a->installation_id));
	a->requests = sqlite3_column_int64(s, 13);
	a->input_tokens = sqlite3_column_int64(s, 14);
	a->cached_tokens = sqlite3_column_int64(s, 15);
	a->output_tokens = sqlite3_column_int64(s, 16);
	a->last_used = sqlite3_column_int64(s, 17);
	a->created = sqlite3_column_int64(s, 18);
	a->updated = sqlite3_column_int64(s, 19);
	if (status < 0) {
		store_seterr(st, "account %s has an unknown status", a->entry);
		store_account_free(a);
		return -1;
	}
	a->status = (enum store_status)status;
	return 0;
}

void
store_account_free(struct store_account *a)
{
	if (a == NULL)
		return;
	free(a->label);
	free(a->account_id);
	freezero_str(a->access_token);
	freezero_str(a->refresh_token);
	freezero_str(a->id_token);
	free(a->status_reason);
	free(a->plan);
	free(a->quota_json);
	memset(a, 0, sizeof(*a));
}

void
store_account_list_free(struct store_account *v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		store_account_free(&v[i]);
	free(v);
}

/* Which UNIQUE rule an insert broke, in words an operator understands. */
static void
explain_insert_conflict(struct store *st, const struct store_account *a)
{
	const char *msg = sqlite3_errmsg(st->db);

	if (strstr(msg, "accounts.account_id") != NULL)
		store_seterr(st, "an account with chatgpt account id %s is already in "
		    "the pool", a->account_id);
	else if (strstr(msg, "accounts.label") != NULL)
		store_seterr(st, "the label \"%s\" is already used by another account",
		    a->label);
	else if (strstr(msg, "accounts.entry") != NULL)
		store_seterr(st, "entry id %s already exists", a->entry);
	else
		store_seterr(st, "insert account: %s", msg);
}

int
store_account_insert(struct store *st, struct store_account *a)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_INSERT);
	const char *status;
	bool reopen;
	int rc;

	if (a->entry[0] == '\0')
		store_new_entry_id(a->entry);
	if (a->installation_id[0] == '\0')
		store_new_uuid(a->installation_id);
	if (a->created == 0)
		a->created = (int64_t)time(NULL);
	if (a->updated == 0)
		a->updated = a->created;
	if (check_entry(st, a->entry) != 0)
		return -1;
	if (!valid_text(a->account_id, STORE_ID_MAX)) {
		store_seterr(st, "bad chatgpt account id (1-%d printable bytes)", STORE_ID_MAX);
		return -1;
	}
	if (a->label != NULL && !valid_text(a->label, STORE_LABEL_MAX)) {
		store_seterr(st, "bad label (1-%d bytes, no control characters)",
		    STORE_LABEL_MAX);
		return -1;
	}
	if (!valid_token(a->access_token) ||
	    (a->refresh_token != NULL && !valid_token(a->refresh_token)) ||
	    (a->id_token != NULL && !valid_token(a->id_token))) {
		store_seterr(st, "missing or oversized token (at most %d bytes)",
		    STORE_TOKEN_MAX);
		return -1;
	}
	if ((status = store_status_name(a->status)) == NULL) {
		store_seterr(st, "unknown status %d", (int)a->status);
		return -1;
	}
	if (a->quota_json != NULL && strlen(a->quota_json) > STORE_JSON_MAX) {
		store_seterr(st, "quota JSON larger than %d bytes", STORE_JSON_MAX);
		return -1;
	}
	bind_text(s, 1, a->entry);
	bind_text(s, 2, a->label);
	bind_text(s, 3, a->account_id);
	bind_text(s, 4, a->access_token);
	bind_text(s, 5, a->refresh_token);
	bind_text(s, 6, a->id_token);
	sqlite3_bind_int64(s, 7, a->access_expires);
	bind_text(s, 8, status);
	bind_text(s, 9, a->status_reason);
	sqlite3_bind_int64(s, 10, a->rate_limited_until);
	bind_text(s, 11, a->plan);
	bind_text(s, 12, a->quota_json);
	bind_text(s, 13, a->installation_id);
	sqlite3_bind_int64(s, 14, a->requests);
	sqlite3_bind_int64(s, 15, a->input_tokens);
	sqlite3_bind_int64(s, 16, a->cached_tokens);
	sqlite3_bind_int64(s, 17, a->output_tokens);
	sqlite3_bind_int64(s, 18, a->last_used);
	sqlite3_bind_int64(s, 19, a->created);
	sqlite3_bind_int64(s, 20, a->updated);
	if (durable_begin(st, &reopen) != 0) {
		stmt_done(s);
		return -1;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		rc = 0;
	else if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		explain_insert_conflict(st, a);
		rc = -1;
	} else
		rc = sql_fail(st, "insert account");
	stmt_done(s);
	durable_end(st, reopen);
	return rc;
}

/* Runs a SELECT of account rows expecting at most one; see store.h. */
static int
select_one(struct store *st, sqlite3_stmt *s, struct store_account *out, const char *what)
{
	int rc;

	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		stmt_done(s);
		store_seterr(st, "%s: no such account", what);
		return STORE_NOTFOUND;
	}
	if (rc != SQLITE_ROW) {
		sql_fail(st, what);
		stmt_done(s);
		return -1;
	}
	if (fill_account(st, s, out) != 0) {
		stmt_done(s);
		return -1;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		store_account_free(out);
		stmt_done(s);
		store_seterr(st, "%s: more than one account matches", what);
		return STORE_AMBIGUOUS;
	}
	stmt_done(s);
	if (rc != SQLITE_DONE) {
		store_account_free(out);
		return sql_fail(st, what);
	}
	return 0;
}

int
store_account_get(struct store *st, const char *entry, struct store_account *out)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_GET);

	memset(out, 0, sizeof(*out));
	if (check_entry(st, entry) != 0)
		return -1;
	bind_text(s, 1, entry);
	return select_one(st, s, out, "get account");
}

int
store_account_find(struct store *st, const char *text, struct store_account *out)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_FIND);

	memset(out, 0, sizeof(*out));
	if (text == NULL || *text == '\0' || strlen(text) > STORE_ID_MAX) {
		store_seterr(st, "find account: empty or oversized name");
		return -1;
	}
	bind_text(s, 1, text);
	return select_one(st, s, out, "find account");
}

int
store_account_list(struct store *st, struct store_account **vp, size_t *np)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_LIST);
	struct store_account *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	*vp = NULL;
	*np = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == STORE_LIST_MAX) {
			store_seterr(st, "list accounts: more than %d", STORE_LIST_MAX);
			goto fail;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		if (fill_account(st, s, &v[n]) != 0)
			goto fail;
		n++;
	}
	if (rc != SQLITE_DONE) {
		sql_fail(st, "list accounts");
		goto fail;
	}
	stmt_done(s);
	*vp = v;
	*np = n;
	return 0;
fail:
	stmt_done(s);
	store_account_list_free(v, n);
	return -1;
}

int
store_account_count(struct store *st, size_t *n)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_COUNT);
	int rc;

	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sql_fail(st, "count accounts");
		stmt_done(s);
		return -1;
	}
	*n = (size_t)sqlite3_column_int64(s, 0);
	stmt_done(s);
	return 0;
}

/* A one-entry update that must be on disk before we return. */
static int
durable_update(struct store *st, sqlite3_stmt *s, const char *entry, const char *what)
{
	bool reopen;
	int rc;

	if (durable_begin(st, &reopen) != 0) {
		stmt_done(s);
		return -1;
	}
	rc = exec_entry_update(st, s, entry, what);
	durable_end(st, reopen);
	return rc;
}

int
store_account_set_tokens(struct store *st, const char *entry, const char *access,
    const char *refresh, const char *id_token, int64_t access_expires, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_TOKENS);

	if (check_entry(st, entry) != 0)
		return -1;
	if (!valid_token(access) || (refresh != NULL && !valid_token(refresh)) ||
	    (id_token != NULL && !valid_token(id_token))) {
		store_seterr(st, "set tokens: missing or oversized token");
		return -1;
	}
	bind_text(s, 1, entry);
	bind_text(s, 2, access);
	bind_text(s, 3, refresh);
	bind_text(s, 4, id_token);
	sqlite3_bind_int64(s, 5, access_expires);
	sqlite3_bind_int64(s, 6, now);
	return durable_update(st, s, entry, "set tokens");
}

int
store_account_set_status(struct store *st, const char *entry, enum store_status status,
    const char *reason, int64_t until, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_STATUS);
	const char *name;

	if (check_entry(st, entry) != 0)
		return -1;
	if ((name = store_status_name(status)) == NULL) {
		store_seterr(st, "set status: unknown status %d", (int)status);
		return -1;
	}
	if (reason != NULL && strlen(reason) > STORE_ID_MAX) {
		store_seterr(st, "set status: reason longer than %d bytes", STORE_ID_MAX);
		return -1;
	}
	bind_text(s, 1, entry);
	bind_text(s, 2, name);
	bind_text(s, 3, reason);
	sqlite3_bind_int64(s, 4, until);
	sqlite3_bind_int64(s, 5, now);
	return durable_update(st, s, entry, "set status");
}

int
store_account_set_quota(struct store *st, const char *entry, const char *json, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_QUOTA);

	if (check_entry(st, entry) != 0)
		return -1;
	if (json != NULL && strlen(json) > STORE_JSON_MAX) {
		store_seterr(st, "set quota: JSON larger than %d bytes", STORE_JSON_MAX);
		return -1;
	}
	bind_text(s, 1, entry);
	bind_text(s, 2, json);
	sqlite3_bind_int64(s, 3, now);
	return exec_entry_update(st, s, entry, "set quota");
}

int
store_account_set_plan(struct store *st, const char *entry, const char *plan, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_PLAN);

	if (check_entry(st, entry) != 0)
		return -1;
	if (plan != NULL && !valid_text(plan, STORE_LABEL_MAX)) {
		store_seterr(st, "set plan: bad plan name");
		return -1;
	}
	bind_text(s, 1, entry);
	bind_text(s, 2, plan);
	sqlite3_bind_int64(s, 3, now);
	return exec_entry_update(st, s, entry, "set plan");
}

int
store_account_set_label(struct store *st, const char *entry, const char *label, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_LABEL);
	bool reopen;
	int rc;

	if (check_entry(st, entry) != 0)
		return -1;
	if (label != NULL && !valid_text(label, STORE_LABEL_MAX)) {
		store_seterr(st, "bad label (1-%d bytes, no control characters)",
		    STORE_LABEL_MAX);
		return -1;
	}
	bind_text(s, 1, entry);
	bind_text(s, 2, label);
	sqlite3_bind_int64(s, 3, now);
	if (durable_begin(st, &reopen) != 0) {
		stmt_done(s);
		return -1;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		rc = 0;
		if (sqlite3_changes(st->db) == 0) {
			store_seterr(st, "set label: no account %s", entry);
			rc = STORE_NOTFOUND;
		}
	} else if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_seterr(st, "the label \"%s\" is already used by another account",
		    label);
		rc = -1;
	} else
		rc = sql_fail(st, "set label");
	stmt_done(s);
	durable_end(st, reopen);
	return rc;
}

int
store_account_remove(struct store *st, const char *entry)
{
	sqlite3_stmt *s = stmt_get(st, S_ACC_REMOVE);

	if (check_entry(st, entry) != 0)
		return -1;
	bind_text(s, 1, entry);
	/* affinity and responses go with it: ON DELETE CASCADE */
	return durable_update(st, s, entry, "remove account");
}

int
store_usage_add(struct store *st, const char *entry, int64_t requests,
    int64_t input_tokens, int64_t cached_tokens, int64_t output_tokens, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_USAGE);

	if (check_entry(st, entry) != 0)
		return -1;
	if (requests < 0 || input_tokens < 0 || cached_tokens < 0 || output_tokens < 0) {
		store_seterr(st, "usage: negative counter");
		return -1;
	}
	bind_text(s, 1, entry);
	sqlite3_bind_int64(s, 2, requests);
	sqlite3_bind_int64(s, 3, input_tokens);
	sqlite3_bind_int64(s, 4, cached_tokens);
	sqlite3_bind_int64(s, 5, output_tokens);
	sqlite3_bind_int64(s, 6, now);
	return exec_entry_update(st, s, entry, "usage");
}

/* ---- affinity ---- */

/* A write to a child table: a missing account is STORE_NOTFOUND. */
static int
exec_child_insert(struct store *st, sqlite3_stmt *s, const char *entry, const char *what)
{
	int rc;

	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		rc = 0;
	else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
		store_seterr(st, "%s: no account %s", what, entry);
		rc = STORE_NOTFOUND;
	} else
		rc = sql_fail(st, what);
	stmt_done(s);
	return rc;
}

int
store_affinity_put(struct store *st, const char *conversation, const char *entry,
    int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_AFF_PUT);

	if (check_entry(st, entry) != 0)
		return -1;
	if (!valid_text(conversation, STORE_ID_MAX)) {
		store_seterr(st, "affinity: bad conversation key");
		return -1;
	}
	bind_text(s, 1, conversation);
	bind_text(s, 2, entry);
	sqlite3_bind_int64(s, 3, now);
	return exec_child_insert(st, s, entry, "affinity");
}

int
store_affinity_get(struct store *st, const char *conversation, int64_t now, int64_t ttl,
    char entry_out[STORE_ENTRY_LEN])
{
	sqlite3_stmt *s = stmt_get(st, S_AFF_GET);
	const char *e;
	int64_t at;
	int rc;

	entry_out[0] = '\0';
	if (!valid_text(conversation, STORE_ID_MAX)) {
		store_seterr(st, "affinity: bad conversation key");
		return -1;
	}
	bind_text(s, 1, conversation);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		stmt_done(s);
		return STORE_NOTFOUND;
	}
	if (rc != SQLITE_ROW) {
		sql_fail(st, "affinity");
		stmt_done(s);
		return -1;
	}
	e = (const char *)sqlite3_column_text(s, 0);
	at = sqlite3_column_int64(s, 1);
	if (ttl > 0 && now - at > ttl) {
		stmt_done(s);
		return STORE_NOTFOUND;	/* the sweep deletes it */
	}
	strlcpy_safe(entry_out, e ? e : "", STORE_ENTRY_LEN);
	stmt_done(s);
	return 0;
}

static int
sweep(struct store *st, enum stmt_id id, int64_t before, size_t *removed, const char *what)
{
	sqlite3_stmt *s = stmt_get(st, id);

	sqlite3_bind_int64(s, 1, before);
	if (exec_stmt(st, s, what) != 0)
		return -1;
	if (removed != NULL)
		*removed = (size_t)sqlite3_changes(st->db);
	return 0;
}

int
store_affinity_sweep(struct store *st, int64_t now, int64_t ttl, size_t *removed)
{
	return sweep(st, S_AFF_SWEEP, now - ttl, removed, "affinity sweep");
}

/* ---- response ownership ---- */

int
store_response_put(struct store *st, const char *response_id, const char *entry,
    const char *conversation, int64_t now)
{
	sqlite3_stmt *s = stmt_get(st, S_RESP_PUT);

	if (check_entry(st, entry) != 0)
		return -1;
	if (!valid_text(response_id, STORE_ID_MAX) ||
	    (conversation != NULL && !valid_text(conversation, STORE_ID_MAX))) {
		store_seterr(st, "response: bad response id or conversation key");
		return -1;
	}
	bind_text(s, 1, response_id);
	bind_text(s, 2, entry);
	bind_text(s, 3, conversation);
	sqlite3_bind_int64(s, 4, now);
	return exec_child_insert(st, s, entry, "response owner");
}

int
store_response_get(struct store *st, const char *response_id,
    char entry_out[STORE_ENTRY_LEN], char **conv_out)
{
	sqlite3_stmt *s = stmt_get(st, S_RESP_GET);
	const char *e;
	int rc;

	entry_out[0] = '\0';
	if (conv_out != NULL)
		*conv_out = NULL;
	if (!valid_text(response_id, STORE_ID_MAX)) {
		store_seterr(st, "response: bad response id");
		return -1;
	}
	bind_text(s, 1, response_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		stmt_done(s);
		return STORE_NOTFOUND;
	}
	if (rc != SQLITE_ROW) {
		sql_fail(st, "response owner");
		stmt_done(s);
		return -1;
	}
	e = (const char *)sqlite3_column_text(s, 0);
	strlcpy_safe(entry_out, e ? e : "", STORE_ENTRY_LEN);
	if (conv_out != NULL)
		*conv_out = col_dup(s, 1);
	stmt_done(s);
	return 0;
}

int
store_response_forget(struct store *st, const char *response_id)
{
	sqlite3_stmt *s = stmt_get(st, S_RESP_FORGET);

	if (!valid_text(response_id, STORE_ID_MAX)) {
		store_seterr(st, "response: bad response id");
		return -1;
	}
	bind_text(s, 1, response_id);
	if (exec_stmt(st, s, "forget response") != 0)
		return -1;
	return sqlite3_changes(st->db) == 0 ? STORE_NOTFOUND : 0;
}

int
store_response_sweep(struct store *st, int64_t now, int64_t max_age, size_t *removed)
{
	return sweep(st, S_RESP_SWEEP, now - max_age, removed, "response sweep");
}

/* ---- client API keys ---- */

static bool
valid_key_label(const char *label)
{
	return valid_text(label, STORE_KEY_LABEL_MAX);
}

int
store_apikey_insert(struct store *st, const char *label,
    const uint8_t hash[STORE_KEY_HASH_LEN], int64_t created)
{
	sqlite3_stmt *s = stmt_get(st, S_KEY_INSERT);
	bool reopen;
	int rc;

	if (!valid_key_label(label)) {
		store_seterr(st, "bad key label (1-%d bytes, no control characters)",
		    STORE_KEY_LABEL_MAX);
		return -1;
	}
	bind_text(s, 1, label);
	sqlite3_bind_blob(s, 2, hash, STORE_KEY_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, created);
	if (durable_begin(st, &reopen) != 0) {
		stmt_done(s);
		return -1;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		rc = 0;
	else if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		if (strstr(sqlite3_errmsg(st->db), "api_keys.hash") != NULL)
			store_seterr(st, "a key with the same hash already exists");
		else
			store_seterr(st, "a key labelled \"%s\" already exists", label);
		rc = -1;
	} else
		rc = sql_fail(st, "insert key");
	stmt_done(s);
	durable_end(st, reopen);
	return rc;
}

int
store_apikey_list(struct store *st, struct store_apikey **vp, size_t *np)
{
	sqlite3_stmt *s = stmt_get(st, S_KEY_LIST);
	struct store_apikey *v = NULL, *k;
	size_t n = 0, cap = 0;
	const void *h;
	int rc;

	*vp = NULL;
	*np = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == STORE_LIST_MAX) {
			store_seterr(st, "list keys: more than %d", STORE_LIST_MAX);
			goto fail;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		k = &v[n];
		memset(k, 0, sizeof(*k));
		h = sqlite3_column_blob(s, 1);
		if (h == NULL || sqlite3_column_bytes(s, 1) != STORE_KEY_HASH_LEN) {
			store_seterr(st, "list keys: a row has a bad hash");
			goto fail;
		}
		memcpy(k->hash, h, STORE_KEY_HASH_LEN);
		k->label = col_dup(s, 0);
		k->created = sqlite3_column_int64(s, 2);
		k->last_used = sqlite3_column_int64(s, 3);
		k->requests = sqlite3_column_int64(s, 4);
		k->input_tokens = sqlite3_column_int64(s, 5);
		k->cached_tokens = sqlite3_column_int64(s, 6);
		n++;
	}
	if (rc != SQLITE_DONE) {
		sql_fail(st, "list keys");
		goto fail;
	}
	stmt_done(s);
	*vp = v;
	*np = n;
	return 0;
fail:
	stmt_done(s);
	store_apikey_list_free(v, n);
	return -1;
}

void
store_apikey_list_free(struct store_apikey *v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i].label);
	free(v);
}

int
store_apikey_remove(struct store *st, const char *label)
{
	sqlite3_stmt *s = stmt_get(st, S_KEY_REMOVE);
	bool reopen;
	int rc;

	if (!valid_key_label(label)) {
		store_seterr(st, "bad key label");
		return -1;
	}
	bind_text(s, 1, label);
	if (durable_begin(st, &reopen) != 0) {
		stmt_done(s);
		return -1;
	}
	rc = exec_stmt(st, s, "remove key");
	if (rc == 0 && sqlite3_changes(st->db) == 0) {
		store_seterr(st, "no key labelled \"%s\"", label);
		rc = STORE_NOTFOUND;
	}
	durable_end(st, reopen);
	return rc;
}

int
store_apikey_usage_add(struct store *st, const char *label, int64_t requests,
    int64_t input_tokens, int64_t cached_tokens, int64_t last_used)
{
	sqlite3_stmt *s = stmt_get(st, S_KEY_USAGE);

	if (!valid_key_label(label)) {
		store_seterr(st, "key usage: bad label");
		return -1;
	}
	if (requests < 0 || input_tokens < 0 || cached_tokens < 0) {
		store_seterr(st, "key usage: negative counter");
		return -1;
	}
	bind_text(s, 1, label);
	sqlite3_bind_int64(s, 2, requests);
	sqlite3_bind_int64(s, 3, input_tokens);
	sqlite3_bind_int64(s, 4, cached_tokens);
	sqlite3_bind_int64(s, 5, last_used);
	if (exec_stmt(st, s, "key usage") != 0)
		return -1;
	if (sqlite3_changes(st->db) == 0) {
		store_seterr(st, "key usage: no key labelled \"%s\"", label);
		return STORE_NOTFOUND;
	}
	return 0;
}
