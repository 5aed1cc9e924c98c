#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "upframe.h"
#include "util.h"

#define INSTALLATION_KEY	"x-codex-installation-id"

/* Client fields that never go upstream as they are. */
static const char *replaced_fields[] = {
	"type", "stream", "background", "prompt_cache_key", NULL
};

static bool
replaced(const struct jdoc *d, int key)
{
	int i;

	for (i = 0; replaced_fields[i]; i++)
		if (jdoc_str_eq(d, key, replaced_fields[i]))
			return true;
	return false;
}

struct keyref {
	const char	*p;
	size_t		 len;
	int		 idx;		/* order among the members */
};

static int
keyref_cmp(const void *a, const void *b)
{
	const struct keyref *x = a, *y = b;
	int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);

	if (c != 0)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->idx - y->idx;
}

/* shadowed[i]: member i's key comes again later.  Sorting keeps a body
 * with very many keys O(n log n). */
static bool *
shadowed_members(const struct jdoc *d, int obj)
{
	uint32_t n = d->tok[obj].count, i = 0;
	struct keyref *refs;
	bool *shadowed, any = false;
	int k;

	if (n < 2)
		return NULL;
	refs = xcalloc(n, sizeof(*refs));
	for (k = jdoc_first(d, obj); k >= 0; k = jdoc_next(d, obj, k), i++) {
		refs[i].p = jdoc_raw(d, k, &refs[i].len);
		refs[i].idx = (int)i;
	}
	qsort(refs, n, sizeof(*refs), keyref_cmp);
	shadowed = xcalloc(n, sizeof(*shadowed));
	for (i = 0; i + 1 < n; i++)
		if (refs[i].len == refs[i + 1].len &&
		    memcmp(refs[i].p, refs[i + 1].p, refs[i].len) == 0)
			any = shadowed[refs[i].idx] = true;
	free(refs);
	if (!any) {
		free(shadowed);
		return NULL;
	}
	return shadowed;
}

struct out {
	char	*p;
	size_t	 len, cap;
};

static void
put(struct out *o, const char *s, size_t len)
{
	if (o->len + len > o->cap) {
		o->cap = (o->len + len) * 2;
		o->p = xrealloc(o->p, o->cap);
	}
	memcpy(o->p + o->len, s, len);
	o->len += len;
}

static void
puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void
put_raw(struct out *o, const struct jdoc *d, int i)
{
	size_t len;
	const char *s = jdoc_raw(d, i, &len);

	put(o, s, len);
}

static void
put_quoted(struct out *o, const char *s)
{
	size_t len = strlen(s);
	char *q = xmalloc(6 * len + 3);

	put(o, q, json_quote(q, s, len));
	free(q);
}

/* The backend wants items; a bare string is one user message. */
static void
put_string_input(struct out *o, const struct jdoc *d, int text)
{
	puts_(o, "[{\"type\":\"message\",\"role\":\"user\",\"content\":"
	    "[{\"type\":\"input_text\",\"text\":");
	put_raw(o, d, text);
	puts_(o, "}]}]");
}

/* The items of input from skip on. */
static void
put_input_tail(struct out *o, const struct jdoc *d, int input, int skip)
{
	int i, n = 0;

	put(o, "[", 1);
	for (i = jdoc_first(d, input); i >= 0; i = jdoc_next(d, input, i), n++) {
		if (n < skip)
			continue;
		if (n > skip)
			put(o, ",", 1);
		put_raw(o, d, i);
	}
	put(o, "]", 1);
}

/* The client's metadata object with our installation id in it. */
static void
put_metadata(struct out *o, const struct jdoc *d, int meta, const char *installation_id)
{
	int k;

	put(o, "{", 1);
	if (jdoc_is(d, meta, JT_OBJECT))
		for (k = jdoc_first(d, meta); k >= 0; k = jdoc_next(d, meta, k)) {
			if (jdoc_str_eq(d, k, INSTALLATION_KEY))
				continue;
			put_raw(o, d, k);
			put(o, ":", 1);
			put_raw(o, d, k + 1);
			put(o, ",", 1);
		}
	puts_(o, "\"" INSTALLATION_KEY "\":");
	put_quoted(o, installation_id);
	put(o, "}", 1);
}

static const char *
nonblank(const char *s)
{
	return s != NULL && *s != '\0' ? s : NULL;
}

char *
upframe_build(const struct jdoc *d, const struct upframe_ids *ids, size_t *len)
{
	const char *upstream_conv = nonblank(ids->upstream_conv);
	const char *installation_id = nonblank(ids->installation_id);
	const char *model = nonblank(ids->model);
	const char *resume_prev = ids->resume_prev;
	int resume_skip = ids->resume_skip;
	struct out o = { 0 };
	bool has_store = false, has_meta = false, *shadowed;
	int k, v, n = 0;

	o.cap = d->len + 256;
	o.p = xmalloc(o.cap);
	puts_(&o, "{\"type\":\"response.create\"");
	shadowed = shadowed_members(d, 0);
	for (k = jdoc_first(d, 0); k >= 0; k = jdoc_next(d, 0, k), n++) {
		v = k + 1;
		if ((shadowed != NULL && shadowed[n]) || replaced(d, k) ||
		    (resume_prev != NULL && jdoc_str_eq(d, k, "previous_response_id")))
			continue;
		put(&o, ",", 1);
		put_raw(&o, d, k);
		put(&o, ":", 1);
		if (jdoc_str_eq(d, k, "input") && jdoc_is(d, v, JT_STRING)) {
			put_string_input(&o, d, v);
		} else if (jdoc_str_eq(d, k, "input") && resume_prev != NULL &&
		    jdoc_is(d, v, JT_ARRAY)) {
			put_input_tail(&o, d, v, resume_skip);
		} else if (jdoc_str_eq(d, k, "model") && model != NULL) {
			put_quoted(&o, model);
		} else if (jdoc_str_eq(d, k, "client_metadata") && installation_id != NULL) {
			put_metadata(&o, d, v, installation_id);
			has_meta = true;
		} else {
			if (jdoc_str_eq(d, k, "store"))
				has_store = true;
			put_raw(&o, d, v);
		}
	}
	free(shadowed);
	if (resume_prev != NULL) {
		puts_(&o, ",\"previous_response_id\":");
		put_quoted(&o, resume_prev);
	}
	if (!has_store)
		puts_(&o, ",\"store\":false");
	puts_(&o, ",\"stream\":true");
	if (upstream_conv != NULL) {
		puts_(&o, ",\"prompt_cache_key\":");
		put_quoted(&o, upstream_conv);
	}
	if (installation_id != NULL && !has_meta) {
		puts_(&o, ",\"client_metadata\":");
		put_metadata(&o, d, -1, installation_id);
	}
	put(&o, "}", 2);	/* and the NUL */
	*len = o.len - 1;
	return o.p;
}

static bool
is_reasoning(const struct jdoc *d, int item)
{
	return jdoc_str_eq(d, jdoc_member(d, item, "type"), "reasoning");
}

size_t
upframe_drop_reasoning(struct jdoc *d)
{
	struct out o = { 0 };
	struct jdoc nd;
	size_t dropped = 0;
	int input = jdoc_member(d, 0, "input"), i, n = 0;
	const char *raw;

	if (!jdoc_is(d, input, JT_ARRAY))
		return 0;
	for (i = jdoc_first(d, input); i >= 0; i = jdoc_next(d, input, i))
		if (is_reasoning(d, i))
			dropped++;
	if (dropped == 0)
		return 0;
	/* the document with the input array's bytes replaced */
	o.cap = d->len;
	o.p = xmalloc(o.cap);
	put(&o, d->text, d->tok[input].start);
	put(&o, "[", 1);
	for (i = jdoc_first(d, input); i >= 0; i = jdoc_next(d, input, i)) {
		if (is_reasoning(d, i))
			continue;
		if (n++ > 0)
			put(&o, ",", 1);
		put_raw(&o, d, i);
	}
	put(&o, "]", 1);
	raw = d->text + d->tok[input].start + d->tok[input].len;
	put(&o, raw, d->len - (size_t)(raw - d->text));
	if (jdoc_parse(&nd, o.p, o.len, NULL, 0) == 0) {
		jdoc_free(d);
		*d = nd;
	} else {
		dropped = 0;	/* cannot happen: spliced from checked parts */
	}
	free(o.p);
	return dropped;
}
