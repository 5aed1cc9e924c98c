/*
 * POST /v1/chat/completions: the body as front_xlate.c takes it, the
 * chat -> Responses translation (xlate_chat.c), and the upstream frame of
 * what it made.
 */
#include "config.h"

#include <stdlib.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jsonutil.h"
#include "modelmap.h"
#include "xlate.h"

/* The client's model goes through the model map (fnmatch globs). */
static struct modelmap *map;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *chat, *body;
	struct xlate_error xerr;
	char err[256];

	chat = json_parse_buf((const char *)data, size, err, sizeof(err));
	if (chat == NULL)
		return 0;
	if (!json_object_is_type(chat, json_type_object)) {
		json_object_put(chat);
		return 0;
	}
	if (map == NULL &&
	    (map = modelmap_parse("claude-*opus*=gpt-5.4, *[mM]ini*=gpt-5.4-mini, gpt-?o=gpt-5.4, *=gpt-5.4",
	    err, sizeof(err))) == NULL)
		abort();
	(void)chat_include_usage(chat);
	memset(&xerr, 0, sizeof(xerr));
	if ((body = chat_request_to_responses(chat, &xerr)) == NULL) {
		if (xerr.status < 400 || xerr.status > 599)
			abort();
		free(chat_xlate_error_body(&xerr));
	} else {
		if (!json_object_is_type(body, json_type_object))
			abort();
		if (json_get_str(body, "model") != NULL)
			(void)modelmap_resolve(map, "gpt-5.4,gpt-5.4-mini", json_get_str(body, "model"));
		fuzz_upframe(body);
		json_object_put(body);
	}
	json_object_put(chat);
	return 0;
}
