/*
 * POST /v1/responses: the body checks of front_responses.c, then what a
 * turn makes of the body: the implicit-resume chain (resume.c) and the
 * upstream response.create frame (upframe.c), full, resumed and without
 * reasoning.  Every frame must be JSON that json-c reads: the splice
 * never sends upstream what it was not given.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jscan.h"
#include "jsonutil.h"
#include "resume.h"
#include "upframe.h"

static void
frame_of(const struct jdoc *body, const char *conv, int skip, const char *prev)
{
	struct json_object *o;
	size_t len;
	char *text = upframe_build(body, &(struct upframe_ids){ .upstream_conv = conv,
	    .installation_id = conv ? "installation-1" : NULL,
	    .model = conv ? "model-\"mapped\"" : NULL,
	    .resume_skip = skip, .resume_prev = prev }, &len);

	if (text == NULL || strlen(text) != len)
		abort();
	if ((o = json_parse_buf(text, len, NULL, 0)) == NULL ||
	    !json_object_is_type(o, json_type_object))
		abort();
	json_object_put(o);
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct resume_chain all, half;
	struct jdoc body;
	int input, skip, i, n = 0;

	if (jdoc_parse(&body, (const char *)data, size, NULL, 0) == -1)
		return 0;
	/* front_responses.c: an object with a string model and an input */
	input = jdoc_member(&body, 0, "input");
	if (!jdoc_is(&body, 0, JT_OBJECT) ||
	    !jdoc_is(&body, jdoc_member(&body, 0, "model"), JT_STRING) ||
	    (!jdoc_is(&body, input, JT_ARRAY) && !jdoc_is(&body, input, JT_STRING))) {
		jdoc_free(&body);
		return 0;
	}

	/* What a pooled connection would remember after this turn... */
	resume_chain_init(&all);
	resume_chain_add_input(&all, &body, input);
	skip = resume_prefix(&all, &body, input);
	n = jdoc_is(&body, input, JT_ARRAY) ? (int)body.tok[input].count : 0;
	if (skip != -1 && (skip < 1 || skip >= n))
		abort();	/* a first new item out of the input */

	/* ...and a history of the input's first half: the rest is new. */
	resume_chain_init(&half);
	if (n > 0)
		for (i = jdoc_first(&body, input); i >= 0 && (int)half.count < n / 2;
		    i = jdoc_next(&body, input, i))
			resume_chain_add(&half, &body, i);
	skip = resume_prefix(&half, &body, input);
	if (skip != -1 && (skip < 1 || skip >= n))
		abort();

	frame_of(&body, NULL, 0, NULL);
	frame_of(&body, "conv-1", 0, NULL);
	if (skip > 0)
		frame_of(&body, "conv-1", skip, "resp_prev");

	/* A turn that moves accounts drops the reasoning items. */
	upframe_drop_reasoning(&body);
	frame_of(&body, "conv-2", 0, NULL);
	jdoc_free(&body);
	return 0;
}
