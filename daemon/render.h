/*
 * What a client of /v1/responses gets back, as bytes: Server-Sent Events,
 * the stream:false aggregate, and error bodies.  Pure functions over
 * buffers and json-c objects (no sockets, no supervisor state), so the
 * unit tests drive them directly; the front-end writes what they make.
 */
#ifndef CODEXPOOL_RENDER_H
#define CODEXPOOL_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <json-c/json.h>

/* "event: TYPE\ndata: DATA\n\n" (no event line when type is empty). */
void	render_sse(struct evbuffer *out, const char *type, const char *data, size_t len);

/* The "type" of an upstream frame into out; the backend writes it first,
 * so a prefix scan avoids parsing every delta.  Returns its length. */
size_t	render_frame_type(const char *frame, size_t len, char *out, size_t outlen);

/* The response.failed event a stream ends with when the upstream (or a
 * worker) broke mid-stream.  Caller frees. */
char	*render_failed_event(const char *code, const char *message, size_t *len);

/*
 * stream:false: the frames of one response folded into the object the
 * client gets.  Output items come from response.output_item.done; the
 * terminal event gives the response object.  Bounded by limit bytes of
 * frames kept.
 */
struct render_agg {
	struct json_object *output;	/* array of output items */
	struct json_object *final;	/* the terminal event's response */
	size_t		 bytes;
	size_t		 limit;
};

void	render_agg_init(struct render_agg *a, size_t limit);
void	render_agg_free(struct render_agg *a);
void	render_agg_event(struct render_agg *a, const char *type, const char *frame, size_t len);

/* How a turn that started ended (enum done_outcome in msgtypes.h). */
struct render_reply {
	int		 status;
	char		*body;		/* JSON text, caller frees */
	size_t		 len;
};

/* The stream:false answer for an outcome: the response object (200), or an
 * error body (502) when it failed, broke or grew past the limit. */
void	render_agg_result(struct render_agg *a, int outcome, const char *message,
	    struct render_reply *r);

/*
 * An upstream error frame or body as the client sees it: {"error": {...}}
 * in the OpenAI shape.  *retry_after is set (seconds) when the error says
 * when a limit resets, else left alone.  now_unix is the wall clock.
 */
void	render_upstream_error(int status, const char *code, const char *body, size_t len,
	    int64_t now_unix, int64_t *retry_after, struct render_reply *r);

/* Seconds until the limit an upstream error names resets, or -1. */
int64_t	render_retry_after(const char *body, size_t len, int64_t now_unix);

/* An error of our own in the OpenAI shape. */
void	render_error(int status, const char *type, const char *code, const char *message,
	    struct render_reply *r);

/* The reason phrase for a status (libevent's generic ones are vague). */
const char *render_reason_phrase(int status);

#endif
