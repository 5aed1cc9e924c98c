/*
 * What daemon/render.c makes of upstream bytes for a /v1/responses
 * client: the frame type scan, the stream:false aggregate of a sequence
 * of frames, and an upstream error body.
 *
 * Input: two option bytes, then the frames, one per line.
 *	byte 0	bit 0: a small aggregate limit (512 bytes); bits 1-2: the
 *		outcome (DONE_*, 0 and 3 = an unknown one)
 *	byte 1	the upstream error's HTTP status (400 + byte % 200)
 * The whole rest is also taken as one upstream error body.
 */
#include "config.h"

#include <stdlib.h>

#include "fuzz.h"
#include "msgtypes.h"
#include "render.h"

static void
on_frame(void *arg, const char *frame, size_t len)
{
	struct render_agg *agg = arg;
	char type[128], tiny[4];

	if (render_frame_type(frame, len, type, sizeof(type)) >= sizeof(type))
		abort();
	if (strlen(type) >= sizeof(type))
		abort();
	(void)render_frame_type(frame, len, tiny, sizeof(tiny));
	if (strlen(tiny) >= sizeof(tiny))
		abort();
	render_agg_event(agg, type, frame, len);
}

static void
reply_done(struct render_reply *r)
{
	if (r->body == NULL || strlen(r->body) != r->len || r->status < 100 || r->status > 599)
		abort();
	free(r->body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int outcomes[] = { 0, DONE_COMPLETED, DONE_FAILED, DONE_STREAM_ERROR };
	struct render_agg agg;
	struct render_reply r;
	int64_t retry_after = -7;
	const char *body;
	char *code;
	size_t len;

	if (size < 2)
		return 0;
	render_agg_init(&agg, data[0] & 0x01 ? 512 : 16u * 1024 * 1024);
	fuzz_frames(data + 2, size - 2, on_frame, &agg);
	memset(&r, 0, sizeof(r));
	render_agg_result(&agg, outcomes[(data[0] >> 1) & 3], "upstream went away", &r);
	reply_done(&r);
	render_agg_free(&agg);

	/* the same bytes as an upstream error body (copied: exact size) */
	len = size - 2;
	code = fuzz_cstr(data + 2, len);
	body = code;
	memset(&r, 0, sizeof(r));
	render_upstream_error(400 + data[1] % 200, len ? code : NULL, body, len,
	    1700000000, &retry_after, &r);
	reply_done(&r);
	(void)render_retry_after(body, len, 1700000000);
	free(code);
	return 0;
}
