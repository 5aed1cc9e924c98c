/* json-c helpers: strict bounded parsing, borrowed getters, error bodies. */
#include "config.h"
#include "jsonutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static void
set_err(char *err, size_t errlen, const char *msg, size_t off)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "invalid JSON at byte %zu: %s", off, msg);
}

/* 1 if buf[0..len) is one complete JSON value (an error path helper). */
static bool
complete_before(const char *buf, size_t len)
{
	struct json_tokener *tok;
	struct json_object *o;

	if (len == 0 || (tok = json_tokener_new_ex(JSON_MAX_DEPTH)) == NULL)
		return false;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, buf, (int)len);
	if (o == NULL && json_tokener_get_error(tok) == json_tokener_continue)
		o = json_tokener_parse_ex(tok, "", 1);
	json_tokener_free(tok);
	json_object_put(o);
	return o != NULL;
}

struct json_object *
json_parse_buf(const char *buf, size_t len, char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *o = NULL;
	enum json_tokener_error jerr;
	size_t end;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	for (end = 0; buf != NULL && end < len && (buf[end] == ' ' ||
	    buf[end] == '\t' || buf[end] == '\n' || buf[end] == '\r'); end++)
		;
	if (buf == NULL || end == len) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "empty JSON document");
		return NULL;
	}
	if (len > INT32_MAX) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "JSON document too large");
		return NULL;
	}
	if ((tok = json_tokener_new_ex(JSON_MAX_DEPTH)) == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "out of memory");
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, buf, (int)len);
	jerr = json_tokener_get_error(tok);
	if (o == NULL && jerr == json_tokener_continue) {
		/* A number at the very end (e.g. "12") only completes when the
		 * tokener sees a terminator: feed it one NUL. */
		o = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		if (o == NULL && (jerr == json_tokener_continue ||
		    jerr == json_tokener_error_parse_eof)) {
			if (err != NULL && errlen > 0)
				snprintf(err, errlen,
				    "truncated JSON (ended after %zu bytes)", len);
			goto fail;
		}
		if (o != NULL)
			goto out;
		if (jerr == json_tokener_success) {
			/* the whole document is the literal null */
			if (err != NULL && errlen > 0)
				snprintf(err, errlen, "%s", JSON_ERR_NULL);
			goto fail;
		}
		set_err(err, errlen, json_tokener_error_desc(jerr), len);
		goto fail;
	}
	if (o == NULL && jerr == json_tokener_success) {
		/* the whole document is the literal null */
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s", JSON_ERR_NULL);
		goto fail;
	}
	if (o == NULL) {
		end = json_tokener_get_parse_end(tok);
		/* Strict mode rejects trailing bytes itself, as a bare
		 * "unexpected character": say what it really is. */
		set_err(err, errlen, complete_before(buf, end) ?
		    "trailing data after the JSON value" :
		    json_tokener_error_desc(jerr), end);
		goto fail;
	}
	end = json_tokener_get_parse_end(tok);
	while (end < len && (buf[end] == ' ' || buf[end] == '\t' ||
	    buf[end] == '\n' || buf[end] == '\r'))
		end++;
	if (end < len) {
		set_err(err, errlen, "trailing data after the JSON value", end);
		goto fail;
	}
 out:
	json_tokener_free(tok);
	return o;
 fail:
	json_object_put(o);
	json_tokener_free(tok);
	return NULL;
}

const char *
json_get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int64_t
json_get_int(struct json_object *o, const char *key, int64_t def)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return def;
	return json_object_get_int64(v);
}

bool
json_get_bool(struct json_object *o, const char *key, bool def)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_boolean))
		return def;
	return json_object_get_boolean(v);
}

struct json_object *
json_get_obj(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_object))
		return NULL;
	return v;
}

struct json_object *
json_get_array(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_array))
		return NULL;
	return v;
}

struct json_object *
json_get_path(struct json_object *o, const char *path)
{
	char part[256];
	const char *p = path, *dot;
	size_t n;

	if (o == NULL || path == NULL)
		return NULL;
	for (;;) {
		if (!json_object_is_type(o, json_type_object))
			return NULL;
		dot = strchr(p, '.');
		n = dot != NULL ? (size_t)(dot - p) : strlen(p);
		if (n == 0 || n >= sizeof(part))
			return NULL;
		memcpy(part, p, n);
		part[n] = '\0';
		if (!json_object_object_get_ex(o, part, &o))
			return NULL;
		if (dot == NULL)
			return o;
		p = dot + 1;
	}
}

const char *
json_plain(struct json_object *o, size_t *len)
{
	const char *s;
	size_t n;

	s = json_object_to_json_string_length(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (len != NULL)
		*len = s != NULL ? n : 0;
	return s;
}

char *
json_error_body(const char *message, const char *type, const char *code)
{
	struct json_object *root, *e;
	char *out;

	root = json_object_new_object();
	e = json_object_new_object();
	if (root == NULL || e == NULL)
		goto oom;
	json_object_object_add(e, "message",
	    json_object_new_string(message != NULL ? message : ""));
	json_object_object_add(e, "type",
	    json_object_new_string(type != NULL ? type : "server_error"));
	json_object_object_add(e, "code",
	    code != NULL ? json_object_new_string(code) : NULL);
	json_object_object_add(root, "error", e);
	out = xstrdup(json_plain(root, NULL));
	json_object_put(root);
	return out;
 oom:
	json_object_put(e);
	json_object_put(root);
	return xstrdup("{\"error\":{\"message\":\"out of memory\","
	    "\"type\":\"server_error\",\"code\":null}}");
}

bool
json_lead_type(const char *buf, size_t len, char *type, size_t size)
{
	static const char prefix[] = "{\"type\":\"";
	size_t i, n = sizeof(prefix) - 1;

	if (size == 0 || len <= n || memcmp(buf, prefix, n) != 0)
		return false;
	for (i = 0; n + i < len && i < size - 1; i++) {
		if (buf[n + i] == '"') {
			type[i] = '\0';
			return true;
		}
		if (buf[n + i] == '\\')
			return false;
		type[i] = buf[n + i];
	}
	return false;
}
