#include "config.h"

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

static void
mix_str(uint64_t *h, const char *s)
{
	mix(h, s ? s : "", s ? strlen(s) : 0);
}

static void
mix_json(uint64_t *h, struct json_object *o)
{
	size_t len = 0;
	const char *text;

	if (o == NULL) {
		mix(h, "", 0);
		return;
	}
	if (json_object_is_type(o, json_type_string)) {
		mix(h, json_object_get_string(o), (size_t)json_object_get_string_len(o));
		return;
	}
	text = json_plain(o, &len);
	mix(h, text, len);
}

/* A message's content: a string, or parts whose text (or, for images and
 * files, whose whole part) counts; "hi" and [{"type":"input_text",
 * "text":"hi"}] are the same. */
static void
mix_content(uint64_t *h, struct json_object *content)
{
	size_t i, n;
	struct json_object *part, *text;

	if (content == NULL || !json_object_is_type(content, json_type_array)) {
		mix_json(h, content);
		return;
	}
	n = json_object_array_length(content);
	for (i = 0; i < n; i++) {
		part = json_object_array_get_idx(content, i);
		if (json_object_object_get_ex(part, "text", &text))
			mix_json(h, text);
		else
			mix_json(h, part);
	}
}

void
resume_chain_add(struct resume_chain *c, struct json_object *item)
{
	const char *type = json_get_str(item, "type");
	uint64_t *h = &c->hash;

	if (type == NULL && json_get_str(item, "role") != NULL)
		type = "message";
	if (type == NULL)
		type = "";
	if (strcmp(type, "reasoning") == 0)
		return;
	mix_str(h, type);
	if (strcmp(type, "message") == 0) {
		struct json_object *content = NULL;
		mix_str(h, json_get_str(item, "role"));
		json_object_object_get_ex(item, "content", &content);
		mix_content(h, content);
	} else if (strcmp(type, "function_call") == 0) {
		mix_str(h, json_get_str(item, "call_id"));
		mix_str(h, json_get_str(item, "name"));
		mix_str(h, json_get_str(item, "arguments"));
	} else if (strcmp(type, "function_call_output") == 0) {
		struct json_object *out = NULL;
		mix_str(h, json_get_str(item, "call_id"));
		json_object_object_get_ex(item, "output", &out);
		mix_json(h, out);
	} else {
		mix_json(h, item);
	}
	c->count++;
}

void
resume_chain_add_input(struct resume_chain *c, struct json_object *input)
{
	size_t i, n;

	if (input != NULL && json_object_is_type(input, json_type_string)) {
		/* a bare string is one user message */
		mix_str(&c->hash, "message");
		mix_str(&c->hash, "user");
		mix_json(&c->hash, input);
		c->count++;
		return;
	}
	if (input == NULL || !json_object_is_type(input, json_type_array))
		return;
	n = json_object_array_length(input);
	for (i = 0; i < n; i++)
		resume_chain_add(c, json_object_array_get_idx(input, i));
}

int
resume_prefix(const struct resume_chain *c, struct json_object *input)
{
	struct resume_chain t;
	size_t i, n;

	if (c->count == 0 || input == NULL || !json_object_is_type(input, json_type_array))
		return -1;
	n = json_object_array_length(input);
	resume_chain_init(&t);
	for (i = 0; i < n && t.count < c->count; i++)
		resume_chain_add(&t, json_object_array_get_idx(input, i));
	if (t.count != c->count || t.hash != c->hash || i >= n)
		return -1;
	return (int)i;
}
