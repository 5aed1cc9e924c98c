/*
 * Canonical prompt bytes and a small bounded string buffer.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt.h"

/* Separators that cannot appear in JSON text or by accident in ordinary
 * prose, so the boundary between two fields is always unambiguous. */
#define SEP_FIELD	'\x1f'
#define SEP_PART	'\x1d'
#define SEP_ITEM	'\x1e'

void
sbuf_init(struct sbuf *sb, size_t max)
{
	memset(sb, 0, sizeof(*sb));
	sb->max = max;
}

void
sbuf_free(struct sbuf *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
	sb->overflow = 0;
}

void
sbuf_reset(struct sbuf *sb)
{
	sb->len = 0;
	sb->overflow = 0;
	if (sb->buf != NULL)
		sb->buf[0] = '\0';
}

int
sbuf_add(struct sbuf *sb, const void *data, size_t len)
{
	size_t ncap;
	char *nbuf;

	if (sb->overflow)
		return -1;
	if (len > sb->max || sb->len > sb->max - len) {
		sb->overflow = 1;
		return -1;
	}
	if (sb->len + len + 1 > sb->cap) {
		ncap = sb->cap ? sb->cap : 256;
		while (ncap < sb->len + len + 1)
			ncap *= 2;
		nbuf = realloc(sb->buf, ncap);
		if (nbuf == NULL) {
			sb->overflow = 1;
			return -1;
		}
		sb->buf = nbuf;
		sb->cap = ncap;
	}
	if (len > 0)
		memcpy(sb->buf + sb->len, data, len);
	sb->len += len;
	sb->buf[sb->len] = '\0';
	return 0;
}

int
sbuf_adds(struct sbuf *sb, const char *s)
{
	return sbuf_add(sb, s, strlen(s));
}

int
sbuf_addc(struct sbuf *sb, char c)
{
	return sbuf_add(sb, &c, 1);
}

int
sbuf_printf(struct sbuf *sb, const char *fmt, ...)
{
	char small[256], *big;
	va_list ap;
	int n, rv;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n < sizeof(small))
		return sbuf_add(sb, small, (size_t)n);
	big = malloc((size_t)n + 1);
	if (big == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	rv = sbuf_add(sb, big, (size_t)n);
	free(big);
	return rv;
}

char *
sbuf_take(struct sbuf *sb, size_t *len)
{
	char *p;

	if (sb->buf == NULL && sbuf_add(sb, "", 0) < 0)
		return NULL;
	p = sb->buf;
	if (len != NULL)
		*len = sb->len;
	sb->buf = NULL;
	sb->len = sb->cap = 0;
	return p;
}

static int
cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
add_scalar(struct sbuf *sb, struct json_object *o)
{
	const char *s;
	size_t len;

	s = json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	return sbuf_add(sb, s, len);
}

int
json_canonical(struct sbuf *sb, struct json_object *o, int drop_id_status)
{
	const char **keys;
	size_t n = 0, i, alen;
	struct json_object *v;
	int rv = 0;

	switch (json_object_get_type(o)) {
	case json_type_object: {
		struct json_object_iterator it, end;

		n = (size_t)json_object_object_length(o);
		keys = calloc(n ? n : 1, sizeof(*keys));
		if (keys == NULL)
			return -1;
		n = 0;
		it = json_object_iter_begin(o);
		end = json_object_iter_end(o);
		while (!json_object_iter_equal(&it, &end)) {
			const char *k = json_object_iter_peek_name(&it);

			if (!(drop_id_status && (strcmp(k, "id") == 0 ||
			    strcmp(k, "status") == 0)))
				keys[n++] = k;
			json_object_iter_next(&it);
		}
		qsort(keys, n, sizeof(*keys), cmp_keys);
		rv |= sbuf_addc(sb, '{');
		for (i = 0; i < n && rv == 0; i++) {
			struct json_object *ks = json_object_new_string(keys[i]);

			if (i > 0)
				rv |= sbuf_addc(sb, ',');
			rv |= add_scalar(sb, ks);
			json_object_put(ks);
			rv |= sbuf_addc(sb, ':');
			json_object_object_get_ex(o, keys[i], &v);
			rv |= json_canonical(sb, v, 0);
		}
		rv |= sbuf_addc(sb, '}');
		free(keys);
		return rv ? -1 : 0;
	}
	case json_type_array:
		alen = json_object_array_length(o);
		rv |= sbuf_addc(sb, '[');
		for (i = 0; i < alen && rv == 0; i++) {
			if (i > 0)
				rv |= sbuf_addc(sb, ',');
			rv |= json_canonical(sb, json_object_array_get_idx(o, i), 0);
		}
		rv |= sbuf_addc(sb, ']');
		return rv ? -1 : 0;
	case json_type_null:
		return sbuf_adds(sb, "null");
	default:
		return add_scalar(sb, o);
	}
}

static const char *
str_member(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int
prompt_add_header(struct sbuf *sb, struct json_object *req)
{
	struct json_object *tools = NULL;
	const char *instr = str_member(req, "instructions");
	int rv = 0;

	rv |= sbuf_adds(sb, "I");
	rv |= sbuf_addc(sb, SEP_FIELD);
	if (instr != NULL)
		rv |= sbuf_adds(sb, instr);
	rv |= sbuf_addc(sb, SEP_ITEM);
	rv |= sbuf_adds(sb, "T");
	rv |= sbuf_addc(sb, SEP_FIELD);
	if (json_object_object_get_ex(req, "tools", &tools) && tools != NULL)
		rv |= json_canonical(sb, tools, 0);
	else
		rv |= sbuf_adds(sb, "[]");
	rv |= sbuf_addc(sb, SEP_ITEM);
	return rv ? -1 : 0;
}

/* Appends the text of a message's content: a string or an array of parts. */
static int
add_content_text(struct sbuf *sb, struct json_object *content)
{
	size_t i, n;
	int rv = 0;

	if (content == NULL)
		return 0;
	if (json_object_is_type(content, json_type_string))
		return sbuf_adds(sb, json_object_get_string(content));
	if (!json_object_is_type(content, json_type_array))
		return json_canonical(sb, content, 0);
	n = json_object_array_length(content);
	for (i = 0; i < n && rv == 0; i++) {
		struct json_object *part = json_object_array_get_idx(content, i);
		const char *text = str_member(part, "text");

		if (i > 0)
			rv |= sbuf_addc(sb, SEP_PART);
		if (text != NULL)
			rv |= sbuf_adds(sb, text);
		else if (str_member(part, "image_url") != NULL) {
			rv |= sbuf_adds(sb, "image:");
			rv |= sbuf_adds(sb, str_member(part, "image_url"));
		} else
			rv |= json_canonical(sb, part, 1);
	}
	return rv ? -1 : 0;
}

static int
is_message(struct json_object *item)
{
	const char *type = str_member(item, "type");

	if (type != NULL)
		return strcmp(type, "message") == 0;
	/* The shorthand {"role":..,"content":..} is a message too. */
	return str_member(item, "role") != NULL;
}

int
prompt_add_item(struct sbuf *sb, struct json_object *item)
{
	struct json_object *content = NULL;
	const char *role;
	int rv = 0;

	if (json_object_is_type(item, json_type_object) && is_message(item)) {
		role = str_member(item, "role");
		rv |= sbuf_adds(sb, "M");
		rv |= sbuf_addc(sb, SEP_FIELD);
		rv |= sbuf_adds(sb, role ? role : "");
		rv |= sbuf_addc(sb, SEP_FIELD);
		json_object_object_get_ex(item, "content", &content);
		rv |= add_content_text(sb, content);
	} else {
		rv |= sbuf_adds(sb, "J");
		rv |= sbuf_addc(sb, SEP_FIELD);
		rv |= json_canonical(sb, item, 1);
	}
	rv |= sbuf_addc(sb, SEP_ITEM);
	return rv ? -1 : 0;
}

int
prompt_add_input(struct sbuf *sb, struct json_object *input)
{
	size_t i, n;

	if (input == NULL)
		return 0;
	if (json_object_is_type(input, json_type_string)) {
		int rv = 0;

		rv |= sbuf_adds(sb, "M");
		rv |= sbuf_addc(sb, SEP_FIELD);
		rv |= sbuf_adds(sb, "user");
		rv |= sbuf_addc(sb, SEP_FIELD);
		rv |= sbuf_adds(sb, json_object_get_string(input));
		rv |= sbuf_addc(sb, SEP_ITEM);
		return rv ? -1 : 0;
	}
	if (!json_object_is_type(input, json_type_array))
		return -1;
	n = json_object_array_length(input);
	for (i = 0; i < n; i++)
		if (prompt_add_item(sb, json_object_array_get_idx(input, i)) < 0)
			return -1;
	return 0;
}

char *
prompt_last_user_text(struct json_object *input)
{
	struct json_object *item, *content = NULL;
	struct sbuf sb;
	const char *role;
	size_t i;

	if (input == NULL)
		return NULL;
	if (json_object_is_type(input, json_type_string))
		return strdup(json_object_get_string(input));
	if (!json_object_is_type(input, json_type_array))
		return NULL;
	for (i = json_object_array_length(input); i > 0; i--) {
		item = json_object_array_get_idx(input, i - 1);
		if (!json_object_is_type(item, json_type_object) || !is_message(item))
			continue;
		role = str_member(item, "role");
		if (role == NULL || strcmp(role, "user") != 0)
			continue;
		json_object_object_get_ex(item, "content", &content);
		sbuf_init(&sb, 64u << 20);
		if (content != NULL && json_object_is_type(content, json_type_array)) {
			size_t j, n = json_object_array_length(content);

			for (j = 0; j < n; j++) {
				const char *t = str_member(
				    json_object_array_get_idx(content, j), "text");

				if (t == NULL)
					continue;
				if (sb.len > 0)
					sbuf_addc(&sb, '\n');
				sbuf_adds(&sb, t);
			}
		} else if (content != NULL &&
		    json_object_is_type(content, json_type_string))
			sbuf_adds(&sb, json_object_get_string(content));
		return sbuf_take(&sb, NULL);
	}
	return NULL;
}
