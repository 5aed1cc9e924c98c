/*
 * POST /v1/messages and /v1/messages/count_tokens: the Anthropic ->
 * Responses translation (xlate_anthropic.c), the session id of
 * metadata.user_id, the token count, and the upstream frame.
 */
#include "config.h"

#include <stdlib.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jsonutil.h"
#include "xlate.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *msg, *body, *count;
	struct xlate_error xerr;
	char err[256];

	msg = json_parse_buf((const char *)data, size, err, sizeof(err));
	if (msg == NULL)
		return 0;
	if (!json_object_is_type(msg, json_type_object)) {
		json_object_put(msg);
		return 0;
	}
	free(anthropic_session_of(msg));

	memset(&xerr, 0, sizeof(xerr));
	if ((body = anthropic_request_to_responses(msg, &xerr)) == NULL) {
		if (xerr.status < 400 || xerr.status > 599)
			abort();
		free(anthropic_error_body(xerr.status, xerr.message));
	} else {
		fuzz_upframe(body);
		json_object_put(body);
	}

	memset(&xerr, 0, sizeof(xerr));
	if ((count = anthropic_count_tokens(msg, &xerr)) == NULL) {
		if (xerr.status < 400 || xerr.status > 599)
			abort();
	} else {
		json_object_put(count);
	}
	json_object_put(msg);
	return 0;
}
