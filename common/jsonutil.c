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

/* ---- json_pick: a strict scan for a few values ------------------------ */

struct pick_scan {
	const char	*p, *end;
	struct json_pick *picks;
	size_t		 npicks;
	uint32_t	 seen[8];	/* per pick: path depths met (dup keys) */
	char		 path[256];
};

static bool	pick_value(struct pick_scan *, int, bool, size_t);

static void
pick_ws(struct pick_scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
	    *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A string at s->p; *escaped: it held a backslash. */
static bool
pick_string(struct pick_scan *s, bool *escaped)
{
	const char *p = s->p + 1, *end = s->end;
	int i, u;

	*escaped = false;
	for (;;) {
		/* the hot loop: instructions and other long texts */
		while (p < end && (unsigned char)*p >= 0x20 && *p != '"' &&
		    *p != '\\')
			p++;
		if (p >= end || (unsigned char)*p < 0x20)
			return false;
		if (*p == '"')
			break;
		*escaped = true;
		if (++p >= end)
			return false;
		switch (*p) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n':
		case 'r': case 't':
			p++;
			break;
		case 'u':
			if (end - p < 5)
				return false;
			for (u = 0, i = 1; i <= 4; i++) {
				if (hexval(p[i]) < 0)
					return false;
				u = u << 4 | hexval(p[i]);
			}
			if (u >= 0xd800 && u <= 0xdfff)
				return false;	/* surrogates: json-c's call */
			p += 5;
			break;
		default:
			return false;
		}
	}
	s->p = p + 1;
	return true;
}

/* RFC 8259 numbers that json-c reads the same way: an integer of up to 18
 * digits (an int64), or a short double with a short exponent. */
static bool
pick_number(struct pick_scan *s)
{
	const char *p = s->p, *end = s->end, *digits;
	bool real = false;

	if (p < end && *p == '-')
		p++;
	digits = p;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	else
		return false;
	if (p - digits > 18)
		return false;
	if (p < end && *p == '.') {
		real = true;
		if (++p >= end || *p < '0' || *p > '9')
			return false;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = true;
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		digits = p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == digits || p - digits > 2)
			return false;
	}
	if (real && p - s->p > 32)
		return false;
	s->p = p;
	return true;
}

static bool
pick_literal(struct pick_scan *s, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return false;
	s->p += n;
	return true;
}

/*
 * The key just read extends the path to path[0..plen); which picks lie
 * on it.  Returns whether any does (the value is worth following), and
 * false in *ok for a key on a pick's way seen before (json-c keeps the
 * last of duplicate keys; a scan that took the first could differ).
 */
static bool
pick_key(struct pick_scan *s, size_t plen, int depth, bool *ok)
{
	const struct json_pick *k;
	bool on = false;
	size_t i;

	for (i = 0; i < s->npicks; i++) {
		k = &s->picks[i];
		if (strncmp(k->path, s->path, plen) != 0 ||
		    (k->path[plen] != '\0' && k->path[plen] != '.'))
			continue;
		if (depth >= 32 || (s->seen[i] & (1u << depth))) {
			*ok = false;
			return false;
		}
		s->seen[i] |= 1u << depth;
		on = true;
	}
	return on;
}

static bool
pick_object(struct pick_scan *s, int depth, bool onpath, size_t plen)
{
	const char *key, *val;
	size_t klen, nlen, i;
	bool escaped, ok = true, follow;

	s->p++;		/* { */
	pick_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return true;
	}
	for (;;) {
		if (s->p >= s->end || *s->p != '"')
			return false;
		key = s->p + 1;
		if (!pick_string(s, &escaped))
			return false;
		klen = (size_t)(s->p - 1 - key);
		follow = false;
		nlen = plen;
		if (onpath) {
			if (escaped)
				return false;
			nlen = plen + (plen ? 1 : 0) + klen;
			if (nlen < sizeof(s->path)) {
				if (plen)
					s->path[plen] = '.';
				memcpy(s->path + nlen - klen, key, klen);
				s->path[nlen] = '\0';
				follow = pick_key(s, nlen, depth, &ok);
				if (!ok)
					return false;
			}
		}
		pick_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return false;
		s->p++;
		pick_ws(s);
		val = s->p;
		if (!pick_value(s, depth + 1, follow, nlen))
			return false;
		if (follow) {
			s->path[nlen] = '\0';	/* the child wrote deeper */
			for (i = 0; i < s->npicks; i++)
				if (strcmp(s->picks[i].path, s->path) == 0) {
					s->picks[i].val = val;
					s->picks[i].len = (size_t)(s->p - val);
				}
		}
		pick_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			pick_ws(s);
			continue;
		}
		if (s->p < s->end && *s->p == '}') {
			s->p++;
			return true;
		}
		return false;
	}
}

static bool
pick_array(struct pick_scan *s, int depth)
{
	s->p++;		/* [ */
	pick_ws(s);
	if (s->p < s->end && *s->p == ']') {
		s->p++;
		return true;
	}
	for (;;) {
		/* json_get_path() goes through objects only */
		if (!pick_value(s, depth + 1, false, 0))
			return false;
		pick_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			pick_ws(s);
			continue;
		}
		if (s->p < s->end && *s->p == ']') {
			s->p++;
			return true;
		}
		return false;
	}
}

static bool
pick_value(struct pick_scan *s, int depth, bool onpath, size_t plen)
{
	bool escaped;

	if (s->p >= s->end || depth > JSON_PICK_DEPTH)
		return false;
	switch (*s->p) {
	case '{':
		return pick_object(s, depth, onpath, plen);
	case '[':
		return pick_array(s, depth);
	case '"':
		return pick_string(s, &escaped);
	case 't':
		return pick_literal(s, "true");
	case 'f':
		return pick_literal(s, "false");
	case 'n':
		return pick_literal(s, "null");
	default:
		return pick_number(s);
	}
}

bool
json_pick(const char *buf, size_t len, struct json_pick *picks, size_t npicks)
{
	struct pick_scan s;
	size_t i;

	if (npicks > sizeof(s.seen) / sizeof(s.seen[0]))
		return false;
	memset(s.seen, 0, sizeof(s.seen));
	s.p = buf;
	s.end = buf + len;
	s.picks = picks;
	s.npicks = npicks;
	s.path[0] = '\0';
	for (i = 0; i < npicks; i++) {
		picks[i].val = NULL;
		picks[i].len = 0;
	}
	pick_ws(&s);
	if (s.p >= s.end || *s.p != '{' || !pick_value(&s, 1, true, 0))
		return false;
	pick_ws(&s);
	return s.p == s.end;
}
