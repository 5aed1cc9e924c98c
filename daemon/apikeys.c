/*
 * Client API keys (see apikeys.h): the in-memory table, the HTTP gate,
 * the start-up rule for public listeners, and the `key` control
 * commands.
 *
 * The keys are 256-bit random strings, so a plain SHA-256 is enough to
 * store them: there is nothing to brute-force that a salt or a slow hash
 * would protect.  Nothing here logs a key or a presented credential.
 */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "apikeys.h"
#include "jsonutil.h"
#include "log.h"
#include "supervisor.h"

/* Longest credential we bother to hash; a real key is 47 bytes. */
#define PRESENTED_MAX	512

static struct apikey **keys;	/* pointers stay put while the array grows */
static size_t nkeys, capkeys;
static const struct apikey *current;
static const char *reject_reason;
static bool listen_public;	/* the client listener is not loopback-only */

/* ---- table ---------------------------------------------------------------- */

size_t
apikeys_count(void)
{
	return nkeys;
}

static struct apikey *
find_label(const char *label)
{
	size_t i;

	for (i = 0; i < nkeys; i++)
		if (strcmp(keys[i]->label, label) == 0)
			return keys[i];
	return NULL;
}

static struct apikey *
table_add(const char *label, const uint8_t hash[STORE_KEY_HASH_LEN], int64_t created)
{
	struct apikey *k = xcalloc(1, sizeof(*k));

	strlcpy_safe(k->label, label, sizeof(k->label));
	memcpy(k->hash, hash, STORE_KEY_HASH_LEN);
	k->created = created;
	if (nkeys == capkeys) {
		capkeys = capkeys ? capkeys * 2 : 8;
		keys = xrealloc(keys, capkeys * sizeof(*keys));
	}
	keys[nkeys++] = k;
	return k;
}

static void
table_remove(struct apikey *k)
{
	size_t i;

	for (i = 0; i < nkeys; i++) {
		if (keys[i] != k)
			continue;
		memmove(&keys[i], &keys[i + 1], (nkeys - i - 1) * sizeof(*keys));
		nkeys--;
		break;
	}
	if (current == k)
		current = NULL;
	explicit_bzero(k, sizeof(*k));
	free(k);
}

int
apikeys_load(void)
{
	struct store_apikey *rows = NULL;
	size_t n = 0, i;

	if (store_apikey_list(sv->store, &rows, &n) != 0) {
		log_warnx("account store: cannot load API keys: %s", store_errmsg(sv->store));
		return -1;
	}
	for (i = 0; i < n; i++) {
		struct apikey *k;

		if (strlen(rows[i].label) > APIKEY_LABEL_MAX || find_label(rows[i].label)) {
			log_warnx("account store: skipping API key with a bad label");
			continue;
		}
		k = table_add(rows[i].label, rows[i].hash, rows[i].created);
		k->last_used = rows[i].last_used;
		k->requests = (uint64_t)rows[i].requests;
		k->input_tokens = (uint64_t)rows[i].input_tokens;
		k->cached_tokens = (uint64_t)rows[i].cached_tokens;
	}
	store_apikey_list_free(rows, n);
	if (nkeys > 0)
		log_info("%zu client API key(s): requests need one", nkeys);
	return 0;
}

void
apikeys_free(void)
{
	while (nkeys > 0)
		table_remove(keys[nkeys - 1]);
	free(keys);
	keys = NULL;
	capkeys = 0;
	current = NULL;
}

/* ---- hashing -------------------------------------------------------------- */

static int
sha256(const void *data, size_t len, uint8_t out[STORE_KEY_HASH_LEN])
{
	unsigned int n = 0;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 ||
	    n != STORE_KEY_HASH_LEN)
		return -1;
	return 0;
}

/* ---- start-up rule -------------------------------------------------------- */

static bool
addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *b = s6->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && b[12] == 127;
	}
	return false;
}

/* Every address the host names is loopback (an empty host is "any"). */
static bool
host_is_loopback(const char *host)
{
	struct addrinfo hints, *res = NULL, *ai;
	bool all = true;

	if (host[0] == '\0')
		return false;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
		return false;
	for (ai = res; ai != NULL; ai = ai->ai_next)
		if (!addr_is_loopback(ai->ai_addr))
			all = false;
	freeaddrinfo(res);
	return all;
}

int
apikeys_check_listen(const char *listen, bool allow_anonymous, char *err, size_t errlen)
{
	char host[256];
	int port;

	if (listen == NULL || parse_hostport(listen, host, sizeof(host), &port) == -1)
		return 0;	/* http_start reports a bad address */
	listen_public = !host_is_loopback(host);
	if (!listen_public || nkeys > 0 || allow_anonymous)
		return 0;
	snprintf(err, errlen, "listen = %s is not a loopback address and no client API "
	    "key exists, so anyone who can reach it could use the pool's accounts: "
	    "create a key first (start codexpoold with listen = 127.0.0.1:PORT, run "
	    "'codexpoolctl key add LABEL', then restart), or set allow_anonymous = yes "
	    "to serve clients without keys", listen);
	return -1;
}

/* ---- the HTTP gate -------------------------------------------------------- */

/* The credential of a request: a Bearer token, else x-api-key. */
static const char *
presented_key(struct evhttp_request *http, size_t *len)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	const char *v, *end;

	if ((v = evhttp_find_header(h, "Authorization")) != NULL &&
	    strncasecmp(v, "Bearer", 6) == 0 && (v[6] == ' ' || v[6] == '\t')) {
		v += 6;
		while (*v == ' ' || *v == '\t')
			v++;
	} else if ((v = evhttp_find_header(h, "x-api-key")) != NULL) {
		while (*v == ' ' || *v == '\t')
			v++;
	} else
		return NULL;
	end = v + strlen(v);
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end == v)
		return NULL;
	*len = (size_t)(end - v);
	return v;
}

const struct apikey *
apikey_check(struct evhttp_request *http, int *status)
{
	uint8_t hash[STORE_KEY_HASH_LEN];
	struct apikey *match = NULL;
	const char *v;
	size_t len = 0, i;

	*status = 0;
	current = NULL;
	if (nkeys == 0)
		return NULL;
	if ((v = presented_key(http, &len)) == NULL) {
		reject_reason = "Missing API key: send it as 'Authorization: Bearer KEY' "
		    "or 'x-api-key: KEY' (codexpoolctl key add LABEL makes one)";
		*status = 401;
		return NULL;
	}
	if (len > PRESENTED_MAX || sha256(v, len, hash) != 0) {
		reject_reason = "Incorrect API key provided";
		*status = 401;
		return NULL;
	}
	/* compare against every key: the time taken says nothing about which */
	for (i = 0; i < nkeys; i++)
		if (CRYPTO_memcmp(keys[i]->hash, hash, sizeof(hash)) == 0)
			match = keys[i];
	if (match == NULL) {
		reject_reason = "Incorrect API key provided";
		*status = 401;
		return NULL;
	}
	match->d_requests++;
	match->last_used = (int64_t)time(NULL);
	match->dirty = true;
	current = match;
	return match;
}

void
apikey_reject(struct evhttp_request *http, int status)
{
	log_debug("refused a client request: %s", reject_reason ? reject_reason : "no key");
	evhttp_add_header(evhttp_request_get_output_headers(http), "WWW-Authenticate",
	    "Bearer realm=\"codexpool\"");
	send_error(http, status, "invalid_request_error", "invalid_api_key", "%s",
	    reject_reason ? reject_reason : "Incorrect API key provided");
}

const struct apikey *
apikey_current(void)
{
	return current;
}

void
apikey_usage(const char *label, uint64_t input_tokens, uint64_t cached_tokens)
{
	struct apikey *k;

	if (label == NULL || (k = find_label(label)) == NULL)
		return;
	k->d_input += (int64_t)input_tokens;
	k->d_cached += (int64_t)cached_tokens;
	k->dirty = true;
}

/* ---- usage flush ---------------------------------------------------------- */

bool
apikeys_dirty(void)
{
	size_t i;

	for (i = 0; i < nkeys; i++)
		if (keys[i]->dirty)
			return true;
	return false;
}

void
apikeys_flush(struct store *st)
{
	struct apikey *k;
	size_t i;

	for (i = 0; i < nkeys; i++) {
		k = keys[i];
		if (!k->dirty)
			continue;
		if (store_apikey_usage_add(st, k->label, k->d_requests, k->d_input,
		    k->d_cached, k->last_used) < 0) {
			log_warnx("API key '%s': cannot store usage: %s", k->label,
			    store_errmsg(st));
			continue;
		}
		k->requests += (uint64_t)k->d_requests;
		k->input_tokens += (uint64_t)k->d_input;
		k->cached_tokens += (uint64_t)k->d_cached;
		k->d_requests = k->d_input = k->d_cached = 0;
		k->dirty = false;
	}
}

/* ---- control commands ----------------------------------------------------- */

/* Labels are words: they travel unquoted on the control line and in logs. */
static bool
valid_label(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > APIKEY_LABEL_MAX)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("._-@", s[i]) == NULL)
			return false;
	return true;
}

static void
iso_time(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		snprintf(buf, len, "-");
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int
apikeys_ctl_add(struct evbuffer *text, struct json_object *json, int argc, char **argv,
    char *err, size_t errlen)
{
	uint8_t raw[APIKEY_RANDOM_BYTES], hash[STORE_KEY_HASH_LEN];
	char secret[sizeof(APIKEY_PREFIX) + 2 * APIKEY_RANDOM_BYTES], when[32];
	const char *label = argv[0];
	int64_t now = (int64_t)time(NULL);
	size_t plen = strlen(APIKEY_PREFIX);
	int n;

	if (!valid_label(label)) {
		snprintf(err, errlen, "bad label '%.80s': use 1-%d letters, digits, '.', '_', "
		    "'-' or '@'", label, APIKEY_LABEL_MAX);
		return -1;
	}
	if (find_label(label) != NULL) {
		snprintf(err, errlen, "a key labelled '%s' already exists (remove it first, "
		    "or pick another label)", label);
		return -1;
	}
	if (nkeys >= APIKEYS_MAX) {
		snprintf(err, errlen, "too many keys (at most %d)", APIKEYS_MAX);
		return -1;
	}
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		snprintf(err, errlen, "cannot get random bytes for a key");
		return -1;
	}
	memcpy(secret, APIKEY_PREFIX, plen);
	n = b64url_encode(raw, sizeof(raw), secret + plen, sizeof(secret) - plen);
	explicit_bzero(raw, sizeof(raw));
	if (n < 0 || sha256(secret, strlen(secret), hash) != 0) {
		explicit_bzero(secret, sizeof(secret));
		snprintf(err, errlen, "cannot make a key");
		return -1;
	}
	/* the store first, durably: a key we printed must survive a crash */
	if (store_apikey_insert(sv->store, label, hash, now) != 0) {
		explicit_bzero(secret, sizeof(secret));
		snprintf(err, errlen, "%s", store_errmsg(sv->store));
		return -1;
	}
	table_add(label, hash, now);
	log_info("control: client API key '%s' added (%zu key(s))", label, nkeys);
	iso_time(now, when, sizeof(when));
	if (json) {
		json_object_object_add(json, "label", json_object_new_string(label));
		json_object_object_add(json, "key", json_object_new_string(secret));
		json_object_object_add(json, "created", json_object_new_int64(now));
	} else {
		evbuffer_add_printf(text, "label: %s\nkey: %s\ncreated: %s\n"
		    "note: the key is shown only now; codexpool keeps only its hash\n",
		    label, secret, when);
	}
	explicit_bzero(secret, sizeof(secret));
	return 0;
}

int
apikeys_ctl_list(struct evbuffer *text, struct json_object *json, int argc, char **argv,
    char *err, size_t errlen)
{
	struct json_object *rows = json ? json_object_new_array() : NULL;
	char created[32], used[32];
	size_t i;

	if (!rows)
		evbuffer_add_printf(text, "# label created last_used requests input_tokens "
		    "cached_tokens\n");
	for (i = 0; i < nkeys; i++) {
		const struct apikey *k = keys[i];
		uint64_t req = k->requests + (uint64_t)k->d_requests;
		uint64_t in = k->input_tokens + (uint64_t)k->d_input;
		uint64_t cached = k->cached_tokens + (uint64_t)k->d_cached;

		iso_time(k->created, created, sizeof(created));
		iso_time(k->last_used, used, sizeof(used));
		if (rows) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "label", json_object_new_string(k->label));
			json_object_object_add(r, "created", json_object_new_int64(k->created));
			json_object_object_add(r, "last_used", json_object_new_int64(k->last_used));
			json_object_object_add(r, "requests", json_object_new_int64((int64_t)req));
			json_object_object_add(r, "input_tokens", json_object_new_int64((int64_t)in));
			json_object_object_add(r, "cached_tokens", json_object_new_int64((int64_t)cached));
			json_object_array_add(rows, r);
		} else {
			evbuffer_add_printf(text, "%s %s %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
			    k->label, created, used, req, in, cached);
		}
	}
	if (rows)
		json_object_object_add(json, "keys", rows);
	return 0;
}

int
apikeys_ctl_remove(struct evbuffer *text, struct json_object *json, int argc, char **argv,
    char *err, size_t errlen)
{
	struct apikey *k;
	char label[APIKEY_LABEL_MAX + 1];
	int rc;

	if (!valid_label(argv[0]) || (k = find_label(argv[0])) == NULL) {
		snprintf(err, errlen, "no key labelled '%.80s' (see 'key list')", argv[0]);
		return -1;
	}
	if (nkeys == 1 && listen_public && !sv->cfg.allow_anonymous) {
		snprintf(err, errlen, "'%s' is the last key and codexpoold listens on %s, "
		    "which is not loopback: without a key anyone reaching it could use the "
		    "pool; add another key first, or set allow_anonymous = yes and restart",
		    k->label, sv->listen_addr);
		return -1;
	}
	strlcpy_safe(label, k->label, sizeof(label));
	rc = store_apikey_remove(sv->store, label);
	if (rc < 0) {
		snprintf(err, errlen, "cannot remove key '%s': %s", label,
		    store_errmsg(sv->store));
		return -1;
	}
	/* STORE_NOTFOUND: gone from the file already; forget it here too */
	table_remove(k);
	log_info("control: client API key '%s' removed (%zu left%s)", label, nkeys,
	    nkeys == 0 ? ": requests no longer need a key" : "");
	if (json)
		json_object_object_add(json, "removed", json_object_new_string(label));
	else
		evbuffer_add_printf(text, "removed: %s\n", label);
	if (nkeys == 0) {
		if (json)
			json_object_object_add(json, "keys_left", json_object_new_int(0));
		else
			evbuffer_add_printf(text, "note: no key is left; requests need no key now\n");
	}
	return 0;
}
