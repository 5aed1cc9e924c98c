/*
 * Which conversation a request belongs to, and what goes upstream for it.
 *
 * Order (first match wins), documented in codexpoold(8):
 *   1. previous_response_id: the conversation and connection that own that
 *      response (handled by the caller, before this);
 *   2. a session header: session_id, session-id, x-session-id,
 *      conversation_id (x-claude-code-session-id first on /v1/messages
 *      and /v1/chat/completions);
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

#include <string.h>

#include <openssl/evp.h>
#include <event2/http.h>

#include "jsonutil.h"
#include "store.h"
#include "supervisor.h"
#include "util.h"

/*
 * What a conversation key is, for every source (headers, prompt_cache_key,
 * x-claude-code-session-id): the client's bytes, trimmed of surrounding
 * white space.  Short printable text is kept as it is, so logs and `show
 * conversations` name what the client sent; anything longer than the store
 * keeps (STORE_ID_MAX) or holding a control character or NUL becomes
 * "h_" and 32 hex digits of SHA-256 over the exact bytes, so distinct keys
 * stay distinct and the store, the pool and identity agree on one string.
 */
#define CONV_KEEP_MAX	STORE_ID_MAX

static bool
printable_key(const char *s, size_t n)
{
	size_t i;

	if (n > CONV_KEEP_MAX)
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

char *
conversation_key(const char *s, size_t n)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	char hex[65], *d;

	if (s == NULL)
		return NULL;
	while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
	    s[n - 1] == '\n'))
		n--;
	if (n == 0)
		return NULL;
	if (printable_key(s, n)) {
		d = xmalloc(n + 1);
		memcpy(d, s, n);
		d[n] = '\0';
		return d;
	}
	EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL);
	hex_encode(md, 32, hex);
	d = xmalloc(2 + 32 + 1);
	memcpy(d, "h_", 2);
	memcpy(d + 2, hex, 32);
	d[34] = '\0';
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
conversation_of_headers(struct evhttp_request *http, char **conv)
{
	/* x-codex-window-id is "<thread>:<generation>": a new window after
	 * compaction is a new conversation, as the Codex CLI reconnects then */
	static const char *headers[] = { "session_id", "session-id", "x-session-id",
	    "conversation_id", "x-codex-window-id", NULL };
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	const char *v;
	int i;

	*conv = NULL;
	for (i = 0; headers[i]; i++)
		if ((v = evhttp_find_header(h, headers[i])) != NULL &&
		    (*conv = conversation_key(v, strlen(v))) != NULL)
			return headers[i];
	return NULL;
}

const char *
conversation_of(struct evhttp_request *http, struct json_object *body, char **conv)
{
	struct json_object *pck;
	const char *src, *user, *parts[4];
	char hex[65];

	if ((src = conversation_of_headers(http, conv)) != NULL)
		return src;
	/* a JSON string may hold NUL: its length, not strlen */
	if (json_object_object_get_ex(body, "prompt_cache_key", &pck) &&
	    json_object_is_type(pck, json_type_string) &&
	    (*conv = conversation_key(json_object_get_string(pck),
	    (size_t)json_object_get_string_len(pck))) != NULL)
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
