#include "config.h"

#include <string.h>

#include "upframe.h"
#include "util.h"

/* Client fields that never go upstream as they are. */
static const char *replaced_fields[] = {
	"type", "stream", "background", "prompt_cache_key", NULL
};

static bool
replaced(const char *key)
{
	int i;

	for (i = 0; replaced_fields[i]; i++)
		if (strcmp(key, replaced_fields[i]) == 0)
			return true;
	return false;
}

/* The backend wants items; a bare string is one user message. */
static struct json_object *
string_input(struct json_object *text)
{
	struct json_object *msg = json_object_new_object();
	struct json_object *content = json_object_new_array();
	struct json_object *part = json_object_new_object();
	struct json_object *items = json_object_new_array();

	json_object_object_add(part, "type", json_object_new_string("input_text"));
	json_object_object_add(part, "text", json_object_get(text));
	json_object_array_add(content, part);
	json_object_object_add(msg, "type", json_object_new_string("message"));
	json_object_object_add(msg, "role", json_object_new_string("user"));
	json_object_object_add(msg, "content", content);
	json_object_array_add(items, msg);
	return items;
}

/* The items of input from skip on (borrowed into a new array). */
static struct json_object *
input_tail(struct json_object *input, int skip)
{
	struct json_object *tail = json_object_new_array();
	size_t i, n = json_object_array_length(input);

	for (i = (size_t)skip; i < n; i++)
		json_object_array_add(tail, json_object_get(json_object_array_get_idx(input, i)));
	return tail;
}

char *
upframe_build(struct json_object *body, const char *upstream_conv,
    const char *installation_id, int resume_skip, const char *resume_prev, size_t *len)
{
	struct json_object *frame = json_object_new_object(), *meta, *copy;
	const char *text;
	char *out;

	json_object_object_add(frame, "type", json_object_new_string("response.create"));
	json_object_object_foreach(body, key, val) {
		if (replaced(key))
			continue;
		if (strcmp(key, "input") == 0 && json_object_is_type(val, json_type_string)) {
			json_object_object_add(frame, "input", string_input(val));
			continue;
		}
		if (strcmp(key, "input") == 0 && resume_prev != NULL &&
		    json_object_is_type(val, json_type_array)) {
			json_object_object_add(frame, "input", input_tail(val, resume_skip));
			continue;
		}
		if (strcmp(key, "client_metadata") == 0) {
			/* a copy: the installation id is added to it below */
			copy = NULL;
			if (json_object_is_type(val, json_type_object) &&
			    json_object_deep_copy(val, &copy, NULL) == 0)
				json_object_object_add(frame, key, copy);
			continue;
		}
		json_object_object_add(frame, key, json_object_get(val));
	}
	if (resume_prev != NULL)
		json_object_object_add(frame, "previous_response_id",
		    json_object_new_string(resume_prev));
	if (!json_object_object_get_ex(frame, "store", NULL))
		json_object_object_add(frame, "store", json_object_new_boolean(0));
	json_object_object_add(frame, "stream", json_object_new_boolean(1));
	if (upstream_conv != NULL && *upstream_conv)
		json_object_object_add(frame, "prompt_cache_key",
		    json_object_new_string(upstream_conv));
	if (installation_id != NULL && *installation_id) {
		if (!json_object_object_get_ex(frame, "client_metadata", &meta)) {
			meta = json_object_new_object();
			json_object_object_add(frame, "client_metadata", meta);
		}
		json_object_object_add(meta, "x-codex-installation-id",
		    json_object_new_string(installation_id));
	}
	text = json_object_to_json_string_length(frame,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
	out = xmalloc(*len + 1);
	memcpy(out, text, *len + 1);
	json_object_put(frame);
	return out;
}
