#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "jsonutil.h"
#include "resume.h"

#define FNV_PRIME	0x100000001b3ULL

void
resume_chain_init(struct resume_chain *c)
{
	c->hash = 0xcbf29ce484222325ULL;
	c->count = 0;
}

static void
mix(uint64_t *h, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		*h ^= (unsigned char)s[i];
		*h *= FNV_PRIME;
	}
	/* a separator no text contains: "ab"+"c" differs from "a"+"bc" */
	*h ^= 0x100;
	*h *= FNV_PRIME;
}

/* A string value unescaped; anything else (absent included) as "". */
static void
mix_str(uint64_t *h, const struct jdoc *d, int i)
{
	const char *s;
	char *tofree;
	size_t len;

	if ((s = jdoc_str(d, i, &len, &tofree)) == NULL)
		mix(h, "", 0);
	else
		mix(h, s, len);
	free(tofree);
}

/* Any value in one normal form: a string unescaped, anything else as
 * json-c's plain text of it, so spacing and escapes the client chose do
 * not count.  Non-string values are rare here (image parts, odd items). */
static void
mix_value(uint64_t *h, const struct jdoc *d, int i)
{
	struct json_object *o;
	const char *raw, *text;
	size_t len;

	if (i < 0 || jdoc_is(d, i, JT_STRING)) {
		mix_str(h, d, i);
		return;
	}
	raw = jdoc_raw(d, i, &len);
	if ((o = json_parse_buf(raw, len, NULL, 0)) == NULL) {
		mix(h, raw, len);	/* JSON null, which json-c parses to NULL */
		return;
	}
	text = json_plain(o, &len);
	mix(h, text, len);
	json_object_put(o);
}

/* A message's content: a string, or parts whose text (or, for images and
 * files, whose whole part) counts; "hi" and [{"type":"input_text",
 * "text":"hi"}] are the same. */
static void
mix_content(uint64_t *h, const struct jdoc *d, int content)
{
	int part, text;

	if (!jdoc_is(d, content, JT_ARRAY)) {
		mix_value(h, d, content);
		return;
	}
	for (part = jdoc_first(d, content); part >= 0; part = jdoc_next(d, content, part)) {
		if ((text = jdoc_member(d, part, "text")) >= 0)
			mix_value(h, d, text);
		else
			mix_value(h, d, part);
	}
}

void
resume_chain_add(struct resume_chain *c, const struct jdoc *d, int item)
{
	int type = jdoc_member(d, item, "type");
	uint64_t *h = &c->hash;
	bool message;

	if (!jdoc_is(d, type, JT_STRING))
		type = -1;
	if (jdoc_str_eq(d, type, "reasoning"))
		return;
	message = jdoc_str_eq(d, type, "message") ||
	    (type < 0 && jdoc_is(d, jdoc_member(d, item, "role"), JT_STRING));
	if (message) {
		mix(h, "message", strlen("message"));
		mix_str(h, d, jdoc_member(d, item, "role"));
		mix_content(h, d, jdoc_member(d, item, "content"));
	} else if (jdoc_str_eq(d, type, "function_call")) {
		mix_str(h, d, type);
		mix_str(h, d, jdoc_member(d, item, "call_id"));
		mix_str(h, d, jdoc_member(d, item, "name"));
		mix_str(h, d, jdoc_member(d, item, "arguments"));
	} else if (jdoc_str_eq(d, type, "function_call_output")) {
		mix_str(h, d, type);
		mix_str(h, d, jdoc_member(d, item, "call_id"));
		mix_value(h, d, jdoc_member(d, item, "output"));
	} else {
		mix_str(h, d, type);
		mix_value(h, d, item);
	}
	c->count++;
}

void
resume_chain_add_input(struct resume_chain *c, const struct jdoc *d, int input)
{
	int i;

	if (jdoc_is(d, input, JT_STRING)) {
		/* a bare string is one user message */
		mix(&c->hash, "message", strlen("message"));
		mix(&c->hash, "user", strlen("user"));
		mix_str(&c->hash, d, input);
		c->count++;
		return;
	}
	if (!jdoc_is(d, input, JT_ARRAY))
		return;
	for (i = jdoc_first(d, input); i >= 0; i = jdoc_next(d, input, i))
		resume_chain_add(c, d, i);
}

int
resume_prefix(const struct resume_chain *c, const struct jdoc *d, int input)
{
	struct resume_chain t;
	int i, n = 0;

	if (c->count == 0 || !jdoc_is(d, input, JT_ARRAY))
		return -1;
	resume_chain_init(&t);
	for (i = jdoc_first(d, input); i >= 0 && t.count < c->count;
	    i = jdoc_next(d, input, i), n++)
		resume_chain_add(&t, d, i);
	if (t.count != c->count || t.hash != c->hash || i < 0)
		return -1;
	return n;
}
