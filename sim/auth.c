/*
 * Accounts, token minting, handshake token checks and refresh rotation.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "auth.h"
#include "jwt.h"
#include "util.h"

void
sim_random_bytes(void *buf, size_t n)
{
	static uint64_t fallback;
	unsigned char *p = buf;
	ssize_t r;
	size_t i;

	while (n > 0) {
		r = getrandom(p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		p += r;
		n -= (size_t)r;
	}
	/* getrandom does not fail on Linux >= 3.17; keep going anyway. */
	if (fallback == 0)
		fallback = (uint64_t)now_wall_usec() ^ (uint64_t)getpid() << 32;
	for (i = 0; i < n; i++) {
		fallback = fallback * 6364136223846793005ULL + 1442695040888963407ULL;
		p[i] = (unsigned char)(fallback >> 56);
	}
}

static void
random_hex(char *out, size_t nbytes)
{
	uint8_t raw[64];

	if (nbytes > sizeof(raw))
		nbytes = sizeof(raw);
	sim_random_bytes(raw, nbytes);
	hex_encode(raw, nbytes, out);
}

static void
make_uuid(char *out, size_t size)
{
	uint8_t b[16];

	sim_random_bytes(b, sizeof(b));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, size,
	    "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
	    b[10], b[11], b[12], b[13], b[14], b[15]);
}

static struct json_object *
auth_claim(const struct sim_account *a)
{
	struct json_object *c = json_object_new_object();

	json_object_object_add(c, "chatgpt_account_id", json_object_new_string(a->id));
	json_object_object_add(c, "chatgpt_plan_type", json_object_new_string("plus"));
	json_object_object_add(c, "chatgpt_user_id", json_object_new_string(a->user_id));
	json_object_object_add(c, "user_id", json_object_new_string(a->user_id));
	return c;
}

static char *
mint(const struct sim_auth *auth, struct json_object *payload)
{
	char *tok;

	tok = jwt_mint(json_object_to_json_string_ext(payload,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
	    auth->key, sizeof(auth->key));
	json_object_put(payload);
	return tok;
}

/* New access, id and refresh tokens for a; the old refresh token is
 * retired by the caller when it rotates. */
static int
issue_tokens(const struct sim_auth *auth, struct sim_account *a)
{
	struct json_object *p;
	char jti[33], rt[65];
	long now = (long)time(NULL);

	random_hex(jti, 16);
	p = json_object_new_object();
	json_object_object_add(p, "iss", json_object_new_string("https://auth.openai.com"));
	json_object_object_add(p, "aud", json_object_new_string("https://api.openai.com/v1"));
	json_object_object_add(p, "sub", json_object_new_string(a->user_id));
	json_object_object_add(p, "client_id", json_object_new_string(SIM_CLIENT_ID));
	json_object_object_add(p, "iat", json_object_new_int64(now));
	json_object_object_add(p, "nbf", json_object_new_int64(now));
	json_object_object_add(p, "exp", json_object_new_int64(now + auth->ttl));
	json_object_object_add(p, "jti", json_object_new_string(jti));
	json_object_object_add(p, JWT_AUTH_CLAIM, auth_claim(a));
	freezero_str(a->access_token);
	a->access_token = mint(auth, p);

	random_hex(jti, 16);
	p = json_object_new_object();
	json_object_object_add(p, "iss", json_object_new_string("https://auth.openai.com"));
	json_object_object_add(p, "aud", json_object_new_string(SIM_CLIENT_ID));
	json_object_object_add(p, "sub", json_object_new_string(a->user_id));
	json_object_object_add(p, "email", json_object_new_string(a->email));
	json_object_object_add(p, "email_verified", json_object_new_boolean(1));
	json_object_object_add(p, "iat", json_object_new_int64(now));
	json_object_object_add(p, "exp", json_object_new_int64(now + auth->ttl));
	json_object_object_add(p, "jti", json_object_new_string(jti));
	json_object_object_add(p, JWT_AUTH_CLAIM, auth_claim(a));
	freezero_str(a->id_token);
	a->id_token = mint(auth, p);

	memcpy(rt, "rt_sim_", 7);
	random_hex(rt + 7, 24);
	freezero_str(a->refresh_token);
	a->refresh_token = xstrdup(rt);
	a->issued_at = now;
	return (a->access_token && a->id_token) ? 0 : -1;
}

int
sim_auth_init(struct sim_auth *auth, int n, long ttl)
{
	int i;

	memset(auth, 0, sizeof(*auth));
	if (n < 0 || n > SIM_ACCOUNTS_MAX || ttl <= 0)
		return -1;
	sim_random_bytes(auth->key, sizeof(auth->key));
	auth->ttl = ttl;
	auth->n = n;
	auth->accounts = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*auth->accounts));
	for (i = 0; i < n; i++) {
		struct sim_account *a = &auth->accounts[i];

		a->index = i + 1;
		make_uuid(a->id, sizeof(a->id));
		snprintf(a->user_id, sizeof(a->user_id), "user-sim%d-", i + 1);
		random_hex(a->user_id + strlen(a->user_id), 6);
		snprintf(a->email, sizeof(a->email), "sim%d@codexpool-sim.test", i + 1);
		if (issue_tokens(auth, a) < 0)
			return -1;
	}
	return 0;
}

void
sim_auth_free(struct sim_auth *auth)
{
	int i, j;

	for (i = 0; i < auth->n; i++) {
		struct sim_account *a = &auth->accounts[i];

		freezero_str(a->access_token);
		freezero_str(a->id_token);
		freezero_str(a->refresh_token);
		for (j = 0; j < a->nretired; j++)
			freezero_str(a->retired[j]);
	}
	free(auth->accounts);
	explicit_bzero(auth->key, sizeof(auth->key));
	memset(auth, 0, sizeof(*auth));
}

static void
iso8601_now(char *buf, size_t size)
{
	usec_t now = now_wall_usec();
	time_t secs = (time_t)(now / USEC_PER_SEC);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, size, "%s.%06ldZ", base, (long)(now % USEC_PER_SEC));
}

char *
sim_auth_file_json(const struct sim_account *a)
{
	struct json_object *o, *t;
	char when[48];
	char *s;

	iso8601_now(when, sizeof(when));
	o = json_object_new_object();
	json_object_object_add(o, "auth_mode", json_object_new_string("chatgpt"));
	json_object_object_add(o, "OPENAI_API_KEY", NULL);
	t = json_object_new_object();
	json_object_object_add(t, "id_token", json_object_new_string(a->id_token));
	json_object_object_add(t, "access_token", json_object_new_string(a->access_token));
	json_object_object_add(t, "refresh_token", json_object_new_string(a->refresh_token));
	json_object_object_add(t, "account_id", json_object_new_string(a->id));
	json_object_object_add(o, "tokens", t);
	json_object_object_add(o, "last_refresh", json_object_new_string(when));
	s = xstrdup(json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

static int
write_secret_file(const char *path, const char *data, char *err, size_t errlen)
{
	char tmp[4096];
	size_t len = strlen(data), off = 0;
	ssize_t w;
	int fd;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		snprintf(err, errlen, "path too long: %s", path);
		return -1;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	while (off < len) {
		w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return -1;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

int
sim_auth_write_files(const struct sim_auth *auth, const char *dir,
    char *err, size_t errlen)
{
	char path[4096];
	char *json;
	int i, rv;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	for (i = 0; i < auth->n; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/account-%d.json", dir,
		    i + 1) >= sizeof(path)) {
			snprintf(err, errlen, "auth dir path too long");
			return -1;
		}
		json = sim_auth_file_json(&auth->accounts[i]);
		rv = write_secret_file(path, json, err, errlen);
		freezero_str(json);
		if (rv < 0)
			return -1;
	}
	return 0;
}

struct sim_account *
sim_auth_find(struct sim_auth *auth, const char *account_id)
{
	int i;

	if (account_id == NULL)
		return NULL;
	for (i = 0; i < auth->n; i++)
		if (strcmp(auth->accounts[i].id, account_id) == 0)
			return &auth->accounts[i];
	return NULL;
}

enum auth_verdict
sim_auth_check(struct sim_auth *auth, const char *authorization,
    const char *account_header, struct sim_account **out)
{
	char claim[128];
	const char *tok;
	struct sim_account *a;
	int64_t exp;

	if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
		return AUTH_MISSING;
	tok = authorization + 7;
	while (*tok == ' ')
		tok++;
	if (*tok == '\0')
		return AUTH_MISSING;
	if (jwt_verify(tok, auth->key, sizeof(auth->key)) != 1)
		return AUTH_BAD_TOKEN;
	exp = jwt_exp(tok);
	if (exp < 0)
		return AUTH_BAD_TOKEN;
	if (exp <= (int64_t)time(NULL))
		return AUTH_EXPIRED;
	if (jwt_account_id(tok, claim, sizeof(claim)) != 0)
		return AUTH_BAD_TOKEN;
	if (account_header == NULL || *account_header == '\0')
		return AUTH_NO_ACCOUNT_HEADER;
	if (strcmp(account_header, claim) != 0)
		return AUTH_ACCOUNT_MISMATCH;
	a = sim_auth_find(auth, claim);
	if (a == NULL)
		return AUTH_UNKNOWN_ACCOUNT;
	if (out != NULL)
		*out = a;
	return AUTH_OK;
}

const char *
auth_verdict_code(enum auth_verdict v)
{
	switch (v) {
	case AUTH_OK:			return "ok";
	case AUTH_MISSING:		return "missing_authorization";
	case AUTH_BAD_TOKEN:		return "invalid_token";
	case AUTH_EXPIRED:		return "token_expired";
	case AUTH_NO_ACCOUNT_HEADER:	return "missing_account_id";
	case AUTH_ACCOUNT_MISMATCH:	return "account_mismatch";
	case AUTH_UNKNOWN_ACCOUNT:	return "account_not_found";
	}
	return "invalid_token";
}

const char *
auth_verdict_message(enum auth_verdict v)
{
	switch (v) {
	case AUTH_OK:
		return "ok";
	case AUTH_MISSING:
		return "Missing bearer authentication in header.";
	case AUTH_BAD_TOKEN:
		return "Could not validate the provided authentication token.";
	case AUTH_EXPIRED:
		return "Provided authentication token is expired. Please try signing in again.";
	case AUTH_NO_ACCOUNT_HEADER:
		return "Missing chatgpt-account-id header.";
	case AUTH_ACCOUNT_MISMATCH:
		return "The chatgpt-account-id header does not match the token.";
	case AUTH_UNKNOWN_ACCOUNT:
		return "Unknown account.";
	}
	return "Unauthorized.";
}

enum refresh_result
sim_auth_refresh(struct sim_auth *auth, const char *refresh_token,
    struct sim_account **out)
{
	struct sim_account *a;
	int i, j;

	if (refresh_token == NULL)
		return REFRESH_UNKNOWN;
	for (i = 0; i < auth->n; i++) {
		a = &auth->accounts[i];
		for (j = 0; j < a->nretired; j++)
			if (strcmp(a->retired[j], refresh_token) == 0) {
				if (out != NULL)
					*out = a;
				return REFRESH_REUSED;
			}
		if (a->refresh_token == NULL ||
		    strcmp(a->refresh_token, refresh_token) != 0)
			continue;
		/* Rotate: the presented token joins the retired list. */
		if (a->nretired == SIM_RETIRED_MAX) {
			freezero_str(a->retired[0]);
			memmove(&a->retired[0], &a->retired[1],
			    (SIM_RETIRED_MAX - 1) * sizeof(a->retired[0]));
			a->nretired--;
		}
		a->retired[a->nretired++] = a->refresh_token;
		a->refresh_token = NULL;
		if (issue_tokens(auth, a) < 0)
			return REFRESH_UNKNOWN;
		a->refreshes++;
		if (out != NULL)
			*out = a;
		return REFRESH_OK;
	}
	return REFRESH_UNKNOWN;
}
