/*
 * POST /v1/responses: the body checks of front_responses.c, then what a
 * turn makes of the body: the implicit-resume chain (resume.c) and the
 * upstream response.create frame (upframe.c), full and resumed.
 */
#include "config.h"

#include <stdlib.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jsonutil.h"
#include "resume.h"
#include "upframe.h"
#include "xlate.h"

static void
frame_of(struct json_object *body, const char *conv, int skip, const char *prev)
{
	size_t len;
	char *text = upframe_build(body, conv, conv ? "installation-1" : NULL, skip, prev, &len);

	if (text == NULL || strlen(text) != len)
		abort();
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *body, *input;
	struct resume_chain all, half;
	char err[256];
	int skip;
	size_t i, n;

	body = json_parse_buf((const char *)data, size, err, sizeof(err));
	if (body == NULL)
		return 0;
	/* front_responses.c: an object with a string model and an input */
	if (!json_object_is_type(body, json_type_object) ||
	    json_get_str(body, "model") == NULL ||
	    !json_object_object_get_ex(body, "input", &input) ||
	    !(json_object_is_type(input, json_type_array) ||
	      json_object_is_type(input, json_type_string))) {
		json_object_put(body);
		return 0;
	}

	/* What a pooled connection would remember after this turn... */
	resume_chain_init(&all);
	resume_chain_add_input(&all, input);
	skip = resume_prefix(&all, input);
	n = json_object_is_type(input, json_type_array) ? json_object_array_length(input) : 0;
	if (skip != -1 && (skip < 1 || (size_t)skip >= n))
		abort();	/* a first new item out of the input */

	/* ...and a history of the input's first half: the rest is new. */
	resume_chain_init(&half);
	for (i = 0; i < n / 2; i++)
		resume_chain_add(&half, json_object_array_get_idx(input, i));
	skip = resume_prefix(&half, input);
	if (skip != -1 && (skip < 1 || (size_t)skip >= n))
		abort();

	frame_of(body, NULL, 0, NULL);
	frame_of(body, "conv-1", 0, NULL);
	if (skip > 0)
		frame_of(body, "conv-1", skip, "resp_prev");

	/* A turn that moves accounts drops the reasoning items. */
	xlate_drop_reasoning(body);
	frame_of(body, "conv-2", 0, NULL);
	json_object_put(body);
	return 0;
}
