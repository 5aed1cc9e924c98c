/*
 * Shared bits of the libFuzzer targets (fuzz/README: how to run them).
 * Each target is one LLVMFuzzerTestOneInput over a parser that sees
 * bytes from outside: a client, the upstream, a worker, a file.
 */
#ifndef CODEXPOOL_FUZZ_H
#define CODEXPOOL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jscan.h"
#include "upframe.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A translated Responses body as the turn carries it (text, checked),
 * then its upstream frame, which must be a JSON object again; and the
 * same without reasoning items. */
static inline void
fuzz_upframe(struct json_object *body)
{
	struct json_object *o;
	struct jdoc d;
	const char *text;
	char *frame;
	size_t len;
	int pass;

	text = json_object_to_json_string_length(body,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (jdoc_parse(&d, text, len, NULL, 0) == -1)
		return;		/* a number json-c cannot print back */
	for (pass = 0; pass < 2; pass++) {
		frame = upframe_build(&d, &(struct upframe_ids){ .upstream_conv = "conv-1",
		    .installation_id = "installation-1" }, &len);
		if ((o = json_tokener_parse(frame)) == NULL ||
		    !json_object_is_type(o, json_type_object))
			abort();
		json_object_put(o);
		free(frame);
		upframe_drop_reasoning(&d);
	}
	jdoc_free(&d);
}

/* The input as a NUL-terminated string (cut at its first NUL); free it. */
static inline char *
fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/*
 * Frames of a stream: the input split at '\n' (a frame never holds one:
 * upstream frames are single-line JSON).  Calls fn for each non-empty
 * frame, on an exact-size copy so ASan sees any read past its end.
 */
static inline void
fuzz_frames(const uint8_t *data, size_t size,
    void (*fn)(void *arg, const char *frame, size_t len), void *arg)
{
	size_t start = 0, i;

	for (i = 0; i <= size; i++) {
		if (i < size && data[i] != '\n')
			continue;
		if (i > start) {
			char *f = malloc(i - start);
			if (f == NULL)
				abort();
			memcpy(f, data + start, i - start);
			fn(arg, f, i - start);
			free(f);
		}
		start = i + 1;
	}
}

#endif
