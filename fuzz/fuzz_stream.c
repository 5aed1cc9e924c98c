/*
 * The stream translators fed a sequence of upstream events, as a turn
 * feeds them (turn.c on_event, front_xlate.c): built twice, as
 * fuzz_chat_stream (xlate_chat.c) and, with FUZZ_ANTHROPIC,
 * fuzz_anthropic_stream (xlate_anthropic.c).
 *
 * Input: one options byte, then the upstream frames, one per line.
 *	bit 0	stream:true (events emitted) rather than the aggregate result
 *	bit 1	include_usage
 *	bit 2	the turn breaks (an abort reason) rather than ending normally
 *	bit 3	a small aggregate limit (256 bytes), to reach the overflow
 *	bits 4-7 the client write that fails (1-15; 0: none does)
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jsonutil.h"
#include "render.h"
#include "resume.h"
#include "xlate.h"

#ifdef FUZZ_ANTHROPIC
#define stream_t		struct anthropic_stream
#define stream_new		anthropic_stream_new
#define stream_event		anthropic_stream_event
#define stream_end		anthropic_stream_end
#define stream_result		anthropic_stream_result
#define stream_started		anthropic_stream_started
#define stream_free		anthropic_stream_free
#else
#define stream_t		struct chat_stream
#define stream_new		chat_stream_new
#define stream_event		chat_stream_event
#define stream_end		chat_stream_end
#define stream_result		chat_stream_result
#define stream_started		chat_stream_started
#define stream_free		chat_stream_free
#endif

struct run {
	stream_t		*st;
	bool			 stream;
	unsigned		 fail_at;	/* the emit that fails, 0: none */
	unsigned		 emitted;
	struct resume_chain	 chain;
};

static int
emit(void *arg, const char *event, const char *data, size_t len)
{
	struct run *r = arg;
	volatile char sink = 0;
	size_t i;

	/* The caller writes what it gets: touch every byte. */
	if (event != NULL)
		sink ^= event[strlen(event) ? strlen(event) - 1 : 0];
	for (i = 0; i < len; i++)
		sink ^= data[i];
	(void)sink;
	return ++r->emitted == r->fail_at ? -1 : 0;
}

static void
on_frame(void *arg, const char *frame, size_t len)
{
	struct run *r = arg;
	struct jdoc d;
	char type[128];
	int item;

	render_frame_type(frame, len, type, sizeof(type));
	if (strcmp(type, "response.output_item.done") == 0 &&
	    jdoc_scan(&d, frame, len, NULL, 0) == 0) {
		if (jdoc_is(&d, (item = jdoc_member(&d, 0, "item")), JT_OBJECT))
			resume_chain_add(&r->chain, &d, item);
		jdoc_free(&d);
	}
	stream_event(r->st, type, frame, len, r->stream ? emit : NULL, r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xlate_stream_opts opts = {
		.client_model = "client-model", .id_seed = "fuzz1", .created = 1700000000,
	};
	struct json_object *res;
	struct run r;
	uint8_t flags;
	int status = 0;

	if (size < 1)
		return 0;
	flags = data[0];
	opts.include_usage = flags & 0x02;
	opts.max_aggregate = flags & 0x08 ? 256 : 0;
	memset(&r, 0, sizeof(r));
	r.stream = flags & 0x01;
	r.fail_at = flags >> 4;
	resume_chain_init(&r.chain);
	r.st = stream_new(&opts);

	fuzz_frames(data + 1, size - 1, on_frame, &r);

	if (r.stream && stream_started(r.st)) {
		stream_end(r.st, flags & 0x04 ? "upstream went away" : NULL, emit, &r);
	} else {
		/* stream:false, or an error before any output */
		stream_end(r.st, flags & 0x04 ? "upstream went away" : NULL, NULL, NULL);
		if ((res = stream_result(r.st, &status)) != NULL) {
			if (status < 200 || status > 599)
				abort();
			free(strdup(json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN)));
			json_object_put(res);
		}
	}
	stream_free(r.st);
	return 0;
}
