/*
 * A JSON document checked once and indexed in place: no tree, no copies
 * of its values.  Every value, and every object key, is one token in
 * document order; a container's token says where its subtree ends, so a
 * caller skips a whole value in O(1) and can copy any value out as the
 * very bytes the client sent.  The request path uses it because a turn's
 * body (often 30-100 KB of history) only needs a few fields read and a
 * few replaced: parsing it into json-c and serializing it again was most
 * of the supervisor's CPU per turn.
 *
 * Strict RFC 8259, like json_parse_buf(): no comments, no trailing
 * commas, no control characters inside strings, nesting at most
 * JSON_MAX_DEPTH.  Strings are not checked for valid UTF-8 (json-c does
 * not either); they travel upstream as they came.
 */
#ifndef CODEXPOOL_JSCAN_H
#define CODEXPOOL_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum jtype {
	JT_OBJECT = 1, JT_ARRAY, JT_STRING, JT_NUMBER, JT_TRUE, JT_FALSE, JT_NULL
};

struct jtok {
	uint32_t	start;		/* offset of its first byte */
	uint32_t	len;		/* bytes: quotes and brackets included */
	uint32_t	next;		/* token index just past its subtree */
	uint32_t	count;		/* members of an object, elements of an array */
	uint8_t		type;		/* enum jtype */
	uint8_t		esc;		/* a string with backslash escapes */
};

struct jdoc {
	char		*text;		/* the document (ours when owned) */
	size_t		 len;
	struct jtok	*tok;		/* tok[0] is the root value */
	uint32_t	 ntok, cap;
	bool		 owned;		/* text is our NUL-terminated copy */
};

/* Check and index len bytes (a copy is kept).  0, or -1 with err set and
 * d left empty. */
int	jdoc_parse(struct jdoc *d, const char *text, size_t len, char *err,
	    size_t errlen);
/* The same without the copy: text must outlive d and is not
 * NUL-terminated by it (for a frame read once, then dropped). */
int	jdoc_scan(struct jdoc *d, const char *text, size_t len, char *err,
	    size_t errlen);
void	jdoc_free(struct jdoc *d);

static inline bool
jdoc_is(const struct jdoc *d, int i, enum jtype type)
{
	return i >= 0 && (uint32_t)i < d->ntok && d->tok[i].type == type;
}

/* The value of key in the object at obj (the last one when the key is
 * repeated, as json-c keeps), or -1. */
int	jdoc_member(const struct jdoc *d, int obj, const char *key);

/* The value at a dotted path of object keys from obj
 * ("response.usage.input_tokens"), or -1. */
int	jdoc_path(const struct jdoc *d, int obj, const char *path);

/*
 * Children in order.  For an array, each element; for an object, each
 * key token (its value is the token right after it):
 *	for (i = jdoc_first(d, c); i >= 0; i = jdoc_next(d, c, i))
 */
int	jdoc_first(const struct jdoc *d, int container);
int	jdoc_next(const struct jdoc *d, int container, int child);

/* The exact bytes of a value as sent (not NUL-terminated). */
const char *jdoc_raw(const struct jdoc *d, int i, size_t *len);

/* Does the string at i, unescaped, equal s? */
bool	jdoc_str_eq(const struct jdoc *d, int i, const char *s);

/* The string at i, unescaped: borrowed when it has no escapes (then not
 * NUL-terminated), else a malloc'd copy put in *tofree (the caller frees
 * *tofree either way).  NULL when i is not a string. */
const char *jdoc_str(const struct jdoc *d, int i, size_t *len, char **tofree);

/* A malloc'd NUL-terminated copy of the unescaped string at i, or NULL. */
char	*jdoc_strdup(const struct jdoc *d, int i);

/* Member key of object obj as a malloc'd string (NULL: absent or not a
 * string). */
char	*jdoc_get_strdup(const struct jdoc *d, int obj, const char *key);

/* The boolean at i, or def when i is not true or false. */
bool	jdoc_bool(const struct jdoc *d, int i, bool def);

/* Append s to out as a JSON string literal, quotes included; out has
 * room for 6 * len + 3 bytes.  Returns the bytes written. */
size_t	json_quote(char *out, const char *s, size_t len);

#endif
