/*
 * Which conversation a request belongs to, and what goes upstream for it.
 *
 * Order (first match wins), documented in codexpoold(8):
 *   1. previous_response_id: the conversation and connection that own that
 *      response (handled by the caller, before this);
 *   2. a session header: session_id, session-id, x-session-id,
 *      conversation_id;
 *   3. the body's prompt_cache_key;
 *   4. for stateless clients: a hash of the model, the instructions and the
 *      first user input item, so a client that resends the whole history
 *      every turn stays one conversation;
 *   5. otherwise none: the turn goes out on a one-shot connection.
 *
 * Upstream, an account never sees another account's ids: the
 * prompt_cache_key, session id and x-client-request-id sent for a
 * conversation are a hash of (account entry, conversation).
 */
#include "config.h"

#include <ctype.h>
#include <string.h>

#include <openssl/evp.h>
#include <event2/http.h>

#include "jsonutil.h"
#include "supervisor.h"
#include "util.h"

#define CONV_MAX	512

static char *
trimmed_dup(const char *s)
{
	size_t n;
	char *d;

	while (*s && isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0 || n > CONV_MAX)
		return NULL;
	d = xmalloc(n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* SHA-256 of parts separated by NUL bytes, as lowercase hex (65 bytes). */
static void
sha256_parts(const char *const *parts, size_t nparts, char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[32];
	unsigned int mdlen = 0;
	size_t i;

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (i = 0; i < nparts; i++) {
		if (i > 0)
			EVP_DigestUpdate(ctx, "", 1);
		EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]));
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	hex_encode(md, 32, hex);
}

/* The first user item of the input, as canonical JSON text (borrowed). */
static const char *
first_user_item(struct json_object *body)
{
	struct json_object *input = json_get_array(body, "input");
	size_t i;

	if (input == NULL) {
		const char *s = json_get_str(body, "input");
		return s;
	}
	for (i = 0; i < json_object_array_length(input); i++) {
		struct json_object *item = json_object_array_get_idx(input, i);
		const char *role = json_get_str(item, "role");
		if (role != NULL && strcmp(role, "user") == 0)
			return json_plain(json_get_obj(item, "content") ?
			    json_get_obj(item, "content") : item, NULL);
	}
	return NULL;
}

const char *
conversation_of(struct evhttp_request *http, struct json_object *body, char **conv)
{
	static const char *headers[] = { "session_id", "session-id", "x-session-id",
	    "conversation_id", NULL };
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	const char *v, *user, *parts[4];
	char hex[65];
	int i;

	*conv = NULL;
	for (i = 0; headers[i]; i++)
		if ((v = evhttp_find_header(h, headers[i])) != NULL &&
		    (*conv = trimmed_dup(v)) != NULL)
			return headers[i];
	if ((v = json_get_str(body, "prompt_cache_key")) != NULL &&
	    (*conv = trimmed_dup(v)) != NULL)
		return "prompt_cache_key";
	if ((user = first_user_item(body)) != NULL) {
		parts[0] = "stateless";
		parts[1] = json_get_str(body, "model") ? json_get_str(body, "model") : "";
		parts[2] = json_get_str(body, "instructions") ? json_get_str(body, "instructions") : "";
		parts[3] = user;
		sha256_parts(parts, 4, hex);
		hex[32] = '\0';
		*conv = xmalloc(40);
		memcpy(*conv, "sl_", 3);
		memcpy(*conv + 3, hex, 33);
		return "stateless hash";
	}
	return NULL;
}

void
upstream_conversation_id(const char *entry, const char *conv, char out[40])
{
	const char *parts[3] = { "conversation", entry, conv };
	char hex[65];

	sha256_parts(parts, 3, hex);
	memcpy(out, "cp_", 3);
	memcpy(out + 3, hex, 32);
	out[35] = '\0';
}
