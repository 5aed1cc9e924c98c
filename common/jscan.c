#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "jscan.h"
#include "jsonutil.h"
#include "util.h"

/* Bytes that end the quick run through a string: the quote, the
 * backslash, and the control characters JSON forbids there. */
static const uint8_t str_stop[256] = {
	[0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1,
	[0x06] = 1, [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1,
	[0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1,
	[0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1,
	[0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1,
	[0x1e] = 1, [0x1f] = 1, ['"'] = 1, ['\\'] = 1,
};

struct scanner {
	struct jdoc	*d;
	const unsigned char *base, *p, *end;
	char		*err;
	size_t		 errlen;
};

static int
fail(struct scanner *s, const char *what)
{
	if (s->err != NULL && s->errlen > 0)
		snprintf(s->err, s->errlen, "%s at byte %zu", what,
		    (size_t)(s->p - s->base));
	return -1;
}

static void
skip_ws(struct scanner *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' ||
	    *s->p == '\r' || *s->p == '\t'))
		s->p++;
}

static int
push(struct scanner *s, enum jtype type)
{
	struct jdoc *d = s->d;
	struct jtok *t;

	if (d->ntok == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 64;
		d->tok = xrealloc(d->tok, (size_t)d->cap * sizeof(*d->tok));
	}
	t = &d->tok[d->ntok];
	t->start = (uint32_t)(s->p - s->base);
	t->len = 1;
	t->next = d->ntok + 1;
	t->count = 0;
	t->type = (uint8_t)type;
	t->esc = 0;
	return (int)d->ntok++;
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Skip the bytes of a string that need no look: most of a body is long
 * strings, so this goes 16 bytes at a time (SSE2, in every x86-64) or 8
 * (any 64-bit machine), stopping in the block that holds a quote, a
 * backslash or a control byte.  The byte loop then finds which.
 */
#ifdef __SSE2__
static const unsigned char *
skip_plain(const unsigned char *p, const unsigned char *end)
{
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
	const __m128i flip = _mm_set1_epi8((char)0x80);
	const __m128i space = _mm_set1_epi8((char)(0x20 ^ 0x80));
	__m128i v, hit;
	int mask;

	while (end - p >= 16) {
		v = _mm_loadu_si128((const __m128i *)(const void *)p);
		/* unsigned v < 0x20 is signed (v ^ 0x80) < (0x20 ^ 0x80) */
		hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
		    _mm_cmpeq_epi8(v, bslash)),
		    _mm_cmplt_epi8(_mm_xor_si128(v, flip), space));
		if ((mask = _mm_movemask_epi8(hit)) != 0)
			return p + __builtin_ctz((unsigned)mask);
		p += 16;
	}
	return p;
}
#else
#define ONES	0x0101010101010101ULL
#define HIGHS	0x8080808080808080ULL

static const unsigned char *
skip_plain(const unsigned char *p, const unsigned char *end)
{
	uint64_t v, q, b;

	for (; end - p >= 8; p += 8) {
		memcpy(&v, p, sizeof(v));
		q = v ^ (ONES * '"');
		b = v ^ (ONES * '\\');
		if ((((q - ONES) & ~q) | ((b - ONES) & ~b) |
		    ((v - ONES * 0x20) & ~v)) & HIGHS)
			break;
	}
	return p;
}
#endif

/* A string from its opening quote; s->p ends past the closing one. */
static int
scan_string(struct scanner *s)
{
	int t = push(s, JT_STRING), i;

	s->p++;
	for (;;) {
		s->p = skip_plain(s->p, s->end);
		while (s->p < s->end && !str_stop[*s->p])
			s->p++;
		if (s->p == s->end)
			return fail(s, "unterminated string");
		if (*s->p == '"')
			break;
		if (*s->p != '\\')
			return fail(s, "control character in a string");
		s->d->tok[t].esc = 1;
		if (s->end - s->p < 2)
			return fail(s, "unterminated string");
		switch (s->p[1]) {
		case '"': case '\\': case '/': case 'b': case 'f':
		case 'n': case 'r': case 't':
			s->p += 2;
			break;
		case 'u':
			if (s->end - s->p < 6)
				return fail(s, "short \\u escape");
			for (i = 2; i < 6; i++)
				if (hexval(s->p[i]) < 0)
					return fail(s, "bad \\u escape");
			s->p += 6;
			break;
		default:
			return fail(s, "bad escape");
		}
	}
	s->p++;
	s->d->tok[t].len = (uint32_t)(s->p - s->base) - s->d->tok[t].start;
	return 0;
}

static bool
digit(const struct scanner *s)
{
	return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

static int
scan_number(struct scanner *s)
{
	int t = push(s, JT_NUMBER);

	if (*s->p == '-')
		s->p++;
	if (!digit(s))
		return fail(s, "bad number");
	if (*s->p == '0')
		s->p++;
	else
		while (digit(s))
			s->p++;
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (!digit(s))
			return fail(s, "bad number");
		while (digit(s))
			s->p++;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (!digit(s))
			return fail(s, "bad number");
		while (digit(s))
			s->p++;
	}
	s->d->tok[t].len = (uint32_t)(s->p - s->base) - s->d->tok[t].start;
	return 0;
}

static int
scan_literal(struct scanner *s, const char *word, enum jtype type)
{
	size_t n = strlen(word);
	int t;

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return fail(s, "unexpected character");
	t = push(s, type);
	s->d->tok[t].len = (uint32_t)n;
	s->p += n;
	return 0;
}

static void
close_container(struct scanner *s, int t)
{
	s->p++;
	s->d->tok[t].len = (uint32_t)(s->p - s->base) - s->d->tok[t].start;
	s->d->tok[t].next = s->d->ntok;
}

static int
scan(struct scanner *s)
{
	int stack[JSON_MAX_DEPTH], depth = 0, top;
	bool obj;

	skip_ws(s);
	if (s->p == s->end)
		return fail(s, "empty JSON document");
value:
	skip_ws(s);
	if (s->p == s->end)
		return fail(s, "unexpected end of document");
	switch (*s->p) {
	case '{':
	case '[':
		if (depth == JSON_MAX_DEPTH)
			return fail(s, "nesting too deep");
		obj = *s->p == '{';
		top = push(s, obj ? JT_OBJECT : JT_ARRAY);
		stack[depth++] = top;
		s->p++;
		skip_ws(s);
		if (s->p < s->end && *s->p == (obj ? '}' : ']')) {
			close_container(s, top);
			depth--;
			goto after;
		}
		if (obj)
			goto key;
		goto value;
	case '"':
		if (scan_string(s) == -1)
			return -1;
		break;
	case 't':
		if (scan_literal(s, "true", JT_TRUE) == -1)
			return -1;
		break;
	case 'f':
		if (scan_literal(s, "false", JT_FALSE) == -1)
			return -1;
		break;
	case 'n':
		if (scan_literal(s, "null", JT_NULL) == -1)
			return -1;
		break;
	default:
		if (*s->p != '-' && !digit(s))
			return fail(s, "unexpected character");
		if (scan_number(s) == -1)
			return -1;
		break;
	}
after:
	/* a value just ended: it is a child of the container on top */
	skip_ws(s);
	if (depth == 0) {
		if (s->p != s->end)
			return fail(s, "trailing data after the document");
		return 0;
	}
	top = stack[depth - 1];
	s->d->tok[top].count++;
	obj = s->d->tok[top].type == JT_OBJECT;
	if (s->p == s->end)
		return fail(s, "unexpected end of document");
	if (*s->p == ',') {
		s->p++;
		if (obj)
			goto key;
		goto value;
	}
	if (*s->p == (obj ? '}' : ']')) {
		close_container(s, top);
		depth--;
		goto after;
	}
	return fail(s, obj ? "expected ',' or '}'" : "expected ',' or ']'");
key:
	skip_ws(s);
	if (s->p == s->end || *s->p != '"')
		return fail(s, "expected a string key");
	if (scan_string(s) == -1)
		return -1;
	skip_ws(s);
	if (s->p == s->end || *s->p != ':')
		return fail(s, "expected ':'");
	s->p++;
	goto value;
}

static int
index_text(struct jdoc *d, char *err, size_t errlen)
{
	struct scanner s = { .d = d, .err = err, .errlen = errlen };

	s.base = s.p = (const unsigned char *)d->text;
	s.end = s.base + d->len;
	if (scan(&s) == -1) {
		jdoc_free(d);
		return -1;
	}
	return 0;
}

static int
too_large(struct jdoc *d, size_t len, char *err, size_t errlen)
{
	memset(d, 0, sizeof(*d));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (len < UINT32_MAX)
		return 0;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "JSON document too large");
	return -1;
}

int
jdoc_parse(struct jdoc *d, const char *text, size_t len, char *err, size_t errlen)
{
	if (too_large(d, len, err, errlen))
		return -1;
	d->text = xmalloc(len + 1);
	memcpy(d->text, text, len);
	d->text[len] = '\0';
	d->len = len;
	d->owned = true;
	return index_text(d, err, errlen);
}

int
jdoc_scan(struct jdoc *d, const char *text, size_t len, char *err, size_t errlen)
{
	if (too_large(d, len, err, errlen))
		return -1;
	d->text = (char *)(uintptr_t)text;	/* never written through */
	d->len = len;
	return index_text(d, err, errlen);
}

void
jdoc_free(struct jdoc *d)
{
	if (d->owned)
		free(d->text);
	free(d->tok);
	memset(d, 0, sizeof(*d));
}

int
jdoc_path(const struct jdoc *d, int obj, const char *path)
{
	char key[128];
	size_t n;

	while (obj >= 0 && *path != '\0') {
		n = strcspn(path, ".");
		if (n >= sizeof(key))
			return -1;
		memcpy(key, path, n);
		key[n] = '\0';
		obj = jdoc_member(d, obj, key);
		path += n;
		if (*path == '.')
			path++;
	}
	return obj;
}

int
jdoc_first(const struct jdoc *d, int c)
{
	if (c < 0 || (uint32_t)c >= d->ntok || d->tok[c].count == 0)
		return -1;
	return c + 1;
}

int
jdoc_next(const struct jdoc *d, int c, int child)
{
	uint32_t n;

	if (d->tok[c].type == JT_OBJECT)
		n = d->tok[child + 1].next;	/* past the key's value */
	else
		n = d->tok[child].next;
	return n < d->tok[c].next ? (int)n : -1;
}

const char *
jdoc_raw(const struct jdoc *d, int i, size_t *len)
{
	*len = d->tok[i].len;
	return d->text + d->tok[i].start;
}

static void
put_utf8(char **o, unsigned cp)
{
	unsigned char *u = (unsigned char *)*o;

	if (cp < 0x80) {
		*u++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*u++ = (unsigned char)(0xc0 | (cp >> 6));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*u++ = (unsigned char)(0xe0 | (cp >> 12));
		*u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else {
		*u++ = (unsigned char)(0xf0 | (cp >> 18));
		*u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		*u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	}
	*o = (char *)u;
}

static unsigned
hex4(const char *p)
{
	return (unsigned)(hexval((unsigned char)p[0]) << 12 |
	    hexval((unsigned char)p[1]) << 8 | hexval((unsigned char)p[2]) << 4 |
	    hexval((unsigned char)p[3]));
}

/* Unescape the (checked) string body p..end into out, which has room for
 * end - p bytes (no escape grows).  Returns the length. */
static size_t
unescape(const char *p, const char *end, char *out)
{
	char *o = out;
	unsigned cp, lo;

	while (p < end) {
		if (*p != '\\') {
			*o++ = *p++;
			continue;
		}
		switch (p[1]) {
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			cp = hex4(p + 2);
			p += 6;
			if (cp >= 0xd800 && cp < 0xdc00 && end - p >= 6 &&
			    p[0] == '\\' && p[1] == 'u' &&
			    (lo = hex4(p + 2)) >= 0xdc00 && lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				p += 6;
			} else if (cp >= 0xd800 && cp < 0xe000) {
				cp = 0xfffd;	/* a lone surrogate */
			}
			put_utf8(&o, cp);
			continue;
		default: *o++ = p[1]; break;	/* " \ / */
		}
		p += 2;
	}
	return (size_t)(o - out);
}

const char *
jdoc_str(const struct jdoc *d, int i, size_t *len, char **tofree)
{
	const struct jtok *t;
	const char *body;

	*tofree = NULL;
	if (!jdoc_is(d, i, JT_STRING))
		return NULL;
	t = &d->tok[i];
	body = d->text + t->start + 1;
	if (!t->esc) {
		*len = t->len - 2;
		return body;
	}
	*tofree = xmalloc(t->len);
	*len = unescape(body, body + t->len - 2, *tofree);
	(*tofree)[*len] = '\0';
	return *tofree;
}

char *
jdoc_strdup(const struct jdoc *d, int i)
{
	char *tofree, *out;
	const char *s;
	size_t len;

	if ((s = jdoc_str(d, i, &len, &tofree)) == NULL)
		return NULL;
	if (tofree != NULL)
		return tofree;
	out = xmalloc(len + 1);
	memcpy(out, s, len);
	out[len] = '\0';
	return out;
}

bool
jdoc_str_eq(const struct jdoc *d, int i, const char *s)
{
	const struct jtok *t;
	char *tofree;
	const char *v;
	size_t len, n = strlen(s);
	bool eq;

	if (!jdoc_is(d, i, JT_STRING))
		return false;
	t = &d->tok[i];
	if (!t->esc)
		return t->len - 2 == n && memcmp(d->text + t->start + 1, s, n) == 0;
	v = jdoc_str(d, i, &len, &tofree);
	eq = len == n && memcmp(v, s, n) == 0;
	free(tofree);
	return eq;
}

int
jdoc_member(const struct jdoc *d, int obj, const char *key)
{
	int k, found = -1;

	if (!jdoc_is(d, obj, JT_OBJECT))
		return -1;
	for (k = jdoc_first(d, obj); k >= 0; k = jdoc_next(d, obj, k))
		if (jdoc_str_eq(d, k, key))
			found = k + 1;
	return found;
}

char *
jdoc_get_strdup(const struct jdoc *d, int obj, const char *key)
{
	return jdoc_strdup(d, jdoc_member(d, obj, key));
}

bool
jdoc_bool(const struct jdoc *d, int i, bool def)
{
	if (jdoc_is(d, i, JT_TRUE))
		return true;
	if (jdoc_is(d, i, JT_FALSE))
		return false;
	return def;
}

size_t
json_quote(char *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;
	size_t i;
	unsigned char c;

	*o++ = '"';
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			*o++ = '\\';
			*o++ = (char)c;
		} else if (c < 0x20) {
			*o++ = '\\';
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		} else {
			*o++ = (char)c;
		}
	}
	*o++ = '"';
	return (size_t)(o - out);
}
