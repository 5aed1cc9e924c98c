/*
 * JWT helpers: read the payload of a token without checking it (the
 * upstream does that), and mint/verify HS256 tokens for the simulator and
 * the tests.
 */
#include "config.h"
#include "jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jsonutil.h"
#include "util.h"

#define JWT_MAX_LEN	(64 * 1024)

/* Split token into its three segments; 0 if JWT-shaped. */
static int
jwt_split(const char *token, size_t *l1, const char **p2, size_t *l2,
    const char **p3, size_t *l3)
{
	const char *d1, *d2;
	size_t len;

	if (token == NULL || (len = strnlen(token, JWT_MAX_LEN + 1)) > JWT_MAX_LEN)
		return -1;
	if ((d1 = strchr(token, '.')) == NULL ||
	    (d2 = strchr(d1 + 1, '.')) == NULL || strchr(d2 + 1, '.') != NULL)
		return -1;
	*l1 = (size_t)(d1 - token);
	*p2 = d1 + 1;
	*l2 = (size_t)(d2 - *p2);
	*p3 = d2 + 1;
	*l3 = len - (size_t)(*p3 - token);
	if (*l1 == 0 || *l2 == 0)
		return -1;
	return 0;
}

struct json_object *
jwt_payload(const char *token)
{
	const char *p2, *p3;
	size_t l1, l2, l3;
	struct json_object *o;
	uint8_t *buf;
	int n;

	if (jwt_split(token, &l1, &p2, &l2, &p3, &l3) == -1)
		return NULL;
	buf = xmalloc(l2);
	if ((n = b64url_decode(p2, l2, buf, l2)) <= 0) {
		free(buf);
		return NULL;
	}
	o = json_parse_buf((const char *)buf, (size_t)n, NULL, 0);
	free(buf);
	if (o != NULL && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

int64_t
jwt_exp(const char *token)
{
	struct json_object *o, *v;
	int64_t exp = -1;

	if ((o = jwt_payload(token)) == NULL)
		return -1;
	if (json_object_object_get_ex(o, "exp", &v) &&
	    (json_object_is_type(v, json_type_int) ||
	    json_object_is_type(v, json_type_double)))
		exp = json_object_get_int64(v);
	json_object_put(o);
	return exp;
}

int
jwt_account_id(const char *token, char *out, size_t outlen)
{
	struct json_object *o;
	const char *id;
	int rc = -1;

	if ((o = jwt_payload(token)) == NULL)
		return -1;
	id = json_get_str(json_get_obj(o, JWT_AUTH_CLAIM), "chatgpt_account_id");
	if (id != NULL && *id != '\0' && strlen(id) < outlen) {
		strlcpy_safe(out, id, outlen);
		rc = 0;
	}
	json_object_put(o);
	return rc;
}

static int
hs256(const uint8_t *key, size_t keylen, const char *data, size_t len,
    uint8_t mac[32])
{
	unsigned int maclen = 32;
	static const uint8_t empty;

	if (HMAC(EVP_sha256(), keylen ? key : &empty, (int)keylen,
	    (const unsigned char *)data, len, mac, &maclen) == NULL ||
	    maclen != 32)
		return -1;
	return 0;
}

char *
jwt_mint(const char *payload_json, const uint8_t *key, size_t keylen)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	size_t plen = strlen(payload_json), cap, off;
	uint8_t mac[32];
	char *out;
	int n;

	if (plen > JWT_MAX_LEN)
		return NULL;
	cap = (sizeof(header) + plen + 32) * 4 / 3 + 16;
	out = xmalloc(cap);
	n = b64url_encode((const uint8_t *)header, sizeof(header) - 1, out, cap);
	off = (size_t)n;
	out[off++] = '.';
	n = b64url_encode((const uint8_t *)payload_json, plen, out + off,
	    cap - off);
	off += (size_t)n;
	if (hs256(key, keylen, out, off, mac) == -1) {
		free(out);
		return NULL;
	}
	out[off++] = '.';
	n = b64url_encode(mac, sizeof(mac), out + off, cap - off);
	off += (size_t)n;
	out[off] = '\0';
	return out;
}

int
jwt_verify(const char *token, const uint8_t *key, size_t keylen)
{
	const char *p2, *p3;
	size_t l1, l2, l3;
	uint8_t mac[32], got[32];
	struct json_object *hdr;
	uint8_t hbuf[256];
	int n, ok;

	if (jwt_split(token, &l1, &p2, &l2, &p3, &l3) == -1)
		return 0;
	/* Only HS256: never let the token choose a weaker algorithm. */
	if ((n = b64url_decode(token, l1, hbuf, sizeof(hbuf))) <= 0)
		return 0;
	if ((hdr = json_parse_buf((const char *)hbuf, (size_t)n, NULL, 0)) == NULL)
		return 0;
	ok = json_get_str(hdr, "alg") != NULL &&
	    strcmp(json_get_str(hdr, "alg"), "HS256") == 0;
	json_object_put(hdr);
	if (!ok)
		return 0;
	if (b64url_decode(p3, l3, got, sizeof(got)) != 32)
		return 0;
	if (hs256(key, keylen, token, l1 + 1 + l2, mac) == -1)
		return 0;
	return CRYPTO_memcmp(mac, got, sizeof(mac)) == 0;
}
