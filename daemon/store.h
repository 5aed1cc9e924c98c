/*
 * The account store: one SQLite file, used by the supervisor only.
 *
 * Holds the accounts (tokens included, so the file is 0600), the
 * conversation -> account affinity and the response -> account ownership
 * used for continuations, and the hashes of the client API keys.  Every
 * statement is prepared once at open.
 *
 * Durability: the connection runs WAL with synchronous=NORMAL, so usage
 * counters, affinity and response rows cost no fsync (a power cut may
 * lose the last few of them, never corrupt the file).  The writes that
 * must survive a crash (insert, set_tokens, status, label, remove) commit
 * with synchronous=FULL, which fsyncs the WAL -- and with it every
 * earlier commit -- before the call returns.
 *
 * Return values: 0 success; STORE_NOTFOUND (1) when the entry or key does
 * not exist; STORE_AMBIGUOUS (2) from store_account_find; -1 on error with
 * the reason in store_errmsg().  Nothing here logs a token.
 */
#ifndef CODEXPOOL_STORE_H
#define CODEXPOOL_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION	2
#define STORE_ENTRY_LEN		17	/* 16 lowercase hex + NUL */
#define STORE_UUID_LEN		37	/* 8-4-4-4-12 + NUL */
#define STORE_LABEL_MAX		128	/* bytes */
#define STORE_ID_MAX		256	/* account id, conversation, response id */
#define STORE_TOKEN_MAX		(64 * 1024)
#define STORE_JSON_MAX		(64 * 1024)
#define STORE_KEY_LABEL_MAX	64	/* bytes */
#define STORE_KEY_HASH_LEN	32	/* SHA-256 */

#define STORE_NOTFOUND		1
#define STORE_AMBIGUOUS		2

enum store_status {
	ST_ACTIVE = 0,
	ST_REFRESHING,
	ST_EXPIRED,
	ST_RATE_LIMITED,
	ST_DISABLED,
	ST_BANNED,
	ST_NSTATUS
};

struct store_account {
	char		 entry[STORE_ENTRY_LEN];
	char		*label;			/* may be NULL */
	char		*account_id;		/* chatgpt account id */
	char		*access_token;		/* secret */
	char		*refresh_token;		/* secret, may be NULL */
	char		*id_token;		/* secret, may be NULL */
	int64_t		 access_expires;	/* unix s, 0 unknown */
	enum store_status status;
	char		*status_reason;		/* may be NULL */
	int64_t		 rate_limited_until;	/* unix s, 0 none */
	char		*plan;			/* may be NULL */
	char		*quota_json;		/* may be NULL */
	char		 installation_id[STORE_UUID_LEN];
	int64_t		 requests;
	int64_t		 input_tokens;
	int64_t		 cached_tokens;
	int64_t		 output_tokens;
	int64_t		 last_used;		/* unix s, 0 never */
	int64_t		 created;		/* unix s */
	int64_t		 updated;		/* unix s */
};

struct store;

/* Opens (creating with mode 0600, migrating) the file at path.  NULL with
 * err set on failure, e.g. a file written by a newer codexpool. */
struct store *store_open(const char *path, char *err, size_t errlen);
void	store_close(struct store *st);
const char *store_errmsg(const struct store *st);
int	store_schema_version(struct store *st);

const char *store_status_name(enum store_status s);
/* -1 when name is not a status. */
int	store_status_from_name(const char *name);

/* 16 random lowercase hex chars; a fresh v4 UUID. */
void	store_new_entry_id(char out[STORE_ENTRY_LEN]);
void	store_new_uuid(char out[STORE_UUID_LEN]);

/* Frees the strings (wiping the tokens) and zeroes *a; a itself is not freed. */
void	store_account_free(struct store_account *a);
void	store_account_list_free(struct store_account *v, size_t n);

/*
 * Adds a. An empty a->entry or a->installation_id is generated and written
 * back, created/updated default to now.  Fails (-1, clear message) when
 * the chatgpt account id, the entry id or the label already exists.
 */
int	store_account_insert(struct store *st, struct store_account *a);
/* get/find fill *out (free with store_account_free) on 0. */
int	store_account_get(struct store *st, const char *entry, struct store_account *out);
/* Matches the entry id, the label or the chatgpt account id. */
int	store_account_find(struct store *st, const char *text, struct store_account *out);
/* All accounts in creation order; *v is NULL when there are none. */
int	store_account_list(struct store *st, struct store_account **v, size_t *n);
int	store_account_count(struct store *st, size_t *n);

/* Durable before it returns.  refresh_token NULL keeps the stored one;
 * id_token NULL keeps the stored one. */
int	store_account_set_tokens(struct store *st, const char *entry, const char *access,
	    const char *refresh, const char *id_token, int64_t access_expires, int64_t now);
int	store_account_set_status(struct store *st, const char *entry, enum store_status s,
	    const char *reason, int64_t until, int64_t now);
int	store_account_set_quota(struct store *st, const char *entry, const char *json,
	    int64_t now);
int	store_account_set_plan(struct store *st, const char *entry, const char *plan,
	    int64_t now);
/* label NULL clears it. */
int	store_account_set_label(struct store *st, const char *entry, const char *label,
	    int64_t now);
/* Also deletes the account's affinity and response rows. */
int	store_account_remove(struct store *st, const char *entry);

/* Adds to the counters; cheap (no fsync).  Batch many in store_begin/commit. */
int	store_usage_add(struct store *st, const char *entry, int64_t requests,
	    int64_t input_tokens, int64_t cached_tokens, int64_t output_tokens, int64_t now);

/* One write transaction around many calls.  A durable call made inside a
 * batch commits the batch first (durably) and opens a new one. */
int	store_begin(struct store *st);
int	store_commit(struct store *st);
int	store_rollback(struct store *st);

/* conversation is a hash string.  get returns STORE_NOTFOUND when absent
 * or older than ttl seconds; entry_out gets the entry id. */
int	store_affinity_put(struct store *st, const char *conversation, const char *entry,
	    int64_t now);
int	store_affinity_get(struct store *st, const char *conversation, int64_t now,
	    int64_t ttl, char entry_out[STORE_ENTRY_LEN]);
/* Deletes rows older than ttl; *removed (may be NULL) gets their number. */
int	store_affinity_sweep(struct store *st, int64_t now, int64_t ttl, size_t *removed);

/* Which account (and conversation) produced response_id.  conversation may
 * be NULL; conv_out (may be NULL) gets a malloc'd copy or NULL. */
int	store_response_put(struct store *st, const char *response_id, const char *entry,
	    const char *conversation, int64_t now);
int	store_response_get(struct store *st, const char *response_id,
	    char entry_out[STORE_ENTRY_LEN], char **conv_out);
int	store_response_forget(struct store *st, const char *response_id);
int	store_response_sweep(struct store *st, int64_t now, int64_t max_age, size_t *removed);

/*
 * Client API keys.  Only the SHA-256 of a key is stored: the key itself
 * is shown once when it is made and never written anywhere.  Labels are
 * unique.  insert and remove are durable; usage_add is cheap (batch it).
 */
struct store_apikey {
	char		*label;
	uint8_t		 hash[STORE_KEY_HASH_LEN];
	int64_t		 created;		/* unix s */
	int64_t		 last_used;		/* unix s, 0 never */
	int64_t		 requests;
	int64_t		 input_tokens;
	int64_t		 cached_tokens;
};

/* -1 with a clear message when the label (or the hash) already exists. */
int	store_apikey_insert(struct store *st, const char *label,
	    const uint8_t hash[STORE_KEY_HASH_LEN], int64_t created);
/* All keys in creation order; *v is NULL when there are none. */
int	store_apikey_list(struct store *st, struct store_apikey **v, size_t *n);
void	store_apikey_list_free(struct store_apikey *v, size_t n);
int	store_apikey_remove(struct store *st, const char *label);
/* Adds to the counters; last_used only moves forward. */
int	store_apikey_usage_add(struct store *st, const char *label, int64_t requests,
	    int64_t input_tokens, int64_t cached_tokens, int64_t last_used);

#endif
