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

#include "jscan.h"
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

/* The first user item of the input as canonical JSON text (json-c's plain
 * form, so the client's spacing does not count), or the input string;
 * malloc'd. */
static char *
first_user_item(const struct jdoc *d)
{
	int input = jdoc_member(d, 0, "input"), i, content;
	struct json_object *o;
	const char *raw;
	char *text;
	size_t len;

	if (jdoc_is(d, input, JT_STRING))
		return jdoc_strdup(d, input);
	if (!jdoc_is(d, input, JT_ARRAY))
		return NULL;
	for (i = jdoc_first(d, input); i >= 0; i = jdoc_next(d, input, i)) {
		if (!jdoc_str_eq(d, jdoc_member(d, i, "role"), "user"))
			continue;
		/* the content when it is an object, else the whole item (the
		 * derived keys of running conversations depend on this) */
		content = jdoc_member(d, i, "content");
		if (!jdoc_is(d, content, JT_OBJECT))
			content = i;
		raw = jdoc_raw(d, content, &len);
		if ((o = json_parse_buf(raw, len, NULL, 0)) == NULL)
			return NULL;
		text = xstrdup(json_plain(o, NULL));
		json_object_put(o);
		return text;
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
conversation_of(struct evhttp_request *http, const struct jdoc *body,
    const char *model, char **conv)
{
	const char *src, *parts[4];
	char hex[65], *user, *mdl = NULL, *instr;
	int pck;

	if ((src = conversation_of_headers(http, conv)) != NULL)
		return src;
	pck = jdoc_member(body, 0, "prompt_cache_key");
	if (jdoc_is(body, pck, JT_STRING)) {
		const char *s;
		char *tofree;
		size_t len;

		/* a JSON string may hold NUL: its length, not strlen */
		s = jdoc_str(body, pck, &len, &tofree);
		*conv = conversation_key(s, len);
		free(tofree);
		if (*conv != NULL)
			return "prompt_cache_key";
	}
	if ((user = first_user_item(body)) == NULL)
		return NULL;
	if (model == NULL)
		model = mdl = jdoc_get_strdup(body, 0, "model");
	instr = jdoc_get_strdup(body, 0, "instructions");
	parts[0] = "stateless";
	parts[1] = model ? model : "";
	parts[2] = instr ? instr : "";
	parts[3] = user;
	sha256_parts(parts, 4, hex);
	hex[32] = '\0';
	*conv = xmalloc(40);
	memcpy(*conv, "sl_", 3);
	memcpy(*conv + 3, hex, 33);
	free(user);
	free(mdl);
	free(instr);
	return "stateless hash";
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
