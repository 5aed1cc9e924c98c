/*
 * Client API keys: who may spend the pool.
 *
 * A key is "cpk_" and 43 base64url characters (32 random bytes).  Only
 * its SHA-256 is kept, in the account store and in memory; a request's
 * key is hashed and compared with CRYPTO_memcmp against every known
 * hash.  While no key exists every request passes (a loopback listener,
 * or allow_anonymous = yes); once one exists, every API route needs
 * "Authorization: Bearer KEY" or "x-api-key: KEY".
 *
 * Per-key counters and last use live in memory and reach the store with
 * the periodic usage flush (accounts.c), never one write per request.
 */
#ifndef CODEXPOOL_APIKEYS_H
#define CODEXPOOL_APIKEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "store.h"

#define APIKEY_PREFIX		"cpk_"
#define APIKEY_RANDOM_BYTES	32
#define APIKEY_LABEL_MAX	STORE_KEY_LABEL_MAX
#define APIKEYS_MAX		1024

struct apikey {
	char		 label[APIKEY_LABEL_MAX + 1];
	uint8_t		 hash[STORE_KEY_HASH_LEN];
	int64_t		 created;		/* unix s */
	int64_t		 last_used;		/* unix s, 0 never */
	uint64_t	 requests, input_tokens, cached_tokens;	/* in the store */
	/* not yet written to the store */
	int64_t		 d_requests, d_input, d_cached;
	bool		 dirty;
};

/* Loads the keys from sv->store (after accounts_load). */
int	apikeys_load(void);
void	apikeys_free(void);
size_t	apikeys_count(void);

/*
 * Start-up rule: with no key, a listen address that is not loopback
 * needs allow_anonymous.  -1 with what to do in err otherwise.
 */
int	apikeys_check_listen(const char *listen, bool allow_anonymous, char *err,
	    size_t errlen);

/*
 * The HTTP front's gate.  Returns the key that authorized the request
 * (and counts one request for it), or NULL: *status is 0 when no key
 * is configured (anonymous, as before keys existed), 401 when a key is
 * needed and the request has none or a wrong one (send it with
 * apikey_reject).  The key may be removed at run time: callers that
 * keep it past the current event must copy its label.
 */
const struct apikey *apikey_check(struct evhttp_request *http, int *status);
/* The 401 answer, OpenAI-style, for the last apikey_check that refused. */
void	apikey_reject(struct evhttp_request *http, int status);
/* The key of the request being routed now (NULL: anonymous); valid only
 * during the synchronous dispatch that follows apikey_check. */
const struct apikey *apikey_current(void);
/* A finished turn's token usage for the key labelled label (ignored if
 * the key has been removed since). */
void	apikey_usage(const char *label, uint64_t input_tokens, uint64_t cached_tokens);

/* For the usage flush (inside its store batch). */
bool	apikeys_dirty(void);
void	apikeys_flush(struct store *st);

/*
 * Control commands.  Exactly one of text and json is non-NULL; on
 * failure nothing has been written and err says why (-1).
 */
typedef int apikeys_ctl_fn(struct evbuffer *text, struct json_object *json,
	    int argc, char **argv, char *err, size_t errlen);
apikeys_ctl_fn apikeys_ctl_add;		/* key add LABEL */
apikeys_ctl_fn apikeys_ctl_list;	/* key list */
apikeys_ctl_fn apikeys_ctl_remove;	/* key remove LABEL */

#endif
