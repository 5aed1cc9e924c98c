/*
 * Helpers shared by the chat and Anthropic translations: errors, usage,
 * a bounded buffer, JSON emission.  Pure, like the translations.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "util.h"
#include "xlate.h"

void
xlate_error_set(struct xlate_error *err, int status, const char *param,
    const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	err->status = status;
	err->type = status >= 500 ? "server_error" : "invalid_request_error";
	err->code = NULL;
	err->param = param;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/* Token counts are what the upstream says, kept in [0, 2^53): sums of two
 * never overflow, and every count survives a JSON double (found by
 * fuzz_chat_stream: input_tokens near INT64_MAX overflowed a total). */
static int64_t
token_count(int64_t v)
{
	if (v < 0)
		return 0;
	return v > ((int64_t)1 << 53) ? (int64_t)1 << 53 : v;
}

void
xlate_usage_from(struct xlate_usage *u, struct json_object *response)
{
	struct json_object *usage = json_get_obj(response, "usage");

	if (usage == NULL)
		return;
	u->seen = true;
	u->input = token_count(json_get_int(usage, "input_tokens", 0));
	u->output = token_count(json_get_int(usage, "output_tokens", 0));
	u->cached = token_count(json_get_int(json_get_obj(usage, "input_tokens_details"),
	    "cached_tokens", 0));
	u->reasoning = token_count(json_get_int(json_get_obj(usage, "output_tokens_details"),
	    "reasoning_tokens", 0));
	if (u->cached > u->input)
		u->cached = u->input;
}

/*
 * Status of an upstream error code when the frame carries none.  Exact
 * codes first, then substrings (the backend adds new codes over time).
 */
static int
status_of_code(const char *code)
{
	static const struct {
		const char	*needle;
		int		 status;
	} table[] = {
		{ "server_is_overloaded", 503 },
		{ "server_error", 500 },
		{ "websocket_connection_limit_reached", 503 },
		{ "context_length_exceeded", 400 },
		{ "invalid_request", 400 },
		{ "not_found", 400 },
		{ "rate_limit", 429 },
		{ "usage_limit", 429 },
		{ "unauthorized", 401 },
		{ "invalid_api_key", 401 },
		{ "token_expired", 401 },
		{ "token_invalid", 401 },
		{ "forbidden", 403 },
		{ "banned", 403 },
		{ "payment", 402 },
		{ "quota", 402 },
	};
	size_t i;

	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strstr(code, table[i].needle) != NULL)
			return table[i].status;
	return 502;
}

void
xlate_upstream_error_from(struct xlate_upstream_error *ue, struct json_object *frame)
{
	struct json_object *e;
	const char *code, *msg;
	int64_t status;

	memset(ue, 0, sizeof(*ue));
	e = json_get_obj(frame, "error");
	if (e == NULL)
		e = json_get_obj(json_get_obj(frame, "response"), "error");
	if (e == NULL && (code = json_get_str(frame, "type")) != NULL &&
	    strcmp(code, "error") == 0)
		e = frame;	/* {"type":"error","code":..,"message":..} */
	code = json_get_str(e, "code");
	if (code == NULL || *code == '\0')
		code = json_get_str(e, "type");
	if (code == NULL || *code == '\0' || strcmp(code, "error") == 0)
		code = "upstream_error";
	msg = json_get_str(e, "message");
	strlcpy_safe(ue->code, code, sizeof(ue->code));
	snprintf(ue->message, sizeof(ue->message), "%s",
	    msg != NULL && *msg ? msg : "the upstream response failed");
	status = json_get_int(frame, "status", 0);
	ue->status = status >= 400 && status <= 599 ? (int)status : status_of_code(code);
}

void
xlate_buf_add(struct xlate_buf *b, const char *s, size_t n)
{
	size_t need;

	if (b->overflow)
		return;
	if (b->len + n > b->limit) {
		b->overflow = true;
		return;
	}
	need = b->len + n + 1;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < need)
			cap *= 2;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
xlate_buf_free(struct xlate_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

int
xlate_emit_json(xlate_emit_fn emit, void *arg, const char *event, struct json_object *o)
{
	const char *text;
	size_t len;
	int rc = 0;

	if (emit != NULL) {
		text = json_object_to_json_string_length(o,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
		rc = emit(arg, event, text, len) != 0 ? -1 : 0;
	}
	json_object_put(o);
	return rc;
}

struct json_object *
xlate_str(const char *s)
{
	return json_object_new_string(s != NULL ? s : "");
}

struct json_object *
xlate_part(const char *type, const char *key, const char *text)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "type", json_object_new_string(type));
	json_object_object_add(p, key, xlate_str(text));
	return p;
}

struct json_object *
xlate_message(const char *role, struct json_object *content)
{
	struct json_object *m = json_object_new_object();

	json_object_object_add(m, "type", json_object_new_string("message"));
	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", content);
	return m;
}

char *
xlate_id(const char *prefix, const char *seed)
{
	size_t pl = strlen(prefix), sl;
	char *id;

	if (seed == NULL)
		seed = "0";
	sl = strlen(seed);
	id = xmalloc(pl + sl + 1);
	memcpy(id, prefix, pl);
	memcpy(id + pl, seed, sl + 1);
	return id;
}
