/*
 * POST /v1/responses: the OpenAI Responses API front-end of the turn
 * lifecycle.  It checks the request, finds the conversation, and renders
 * the output: Server-Sent Events for stream:true (headers committed only
 * at the first output frame, so anything that fails before is still a
 * real HTTP error), one JSON object for stream:false.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "front_ws.h"
#include "jscan.h"
#include "jsonutil.h"
#include "msgtypes.h"
#include "render.h"
#include "supervisor.h"
#include "turn.h"

/* Client headers that travel to the upstream handshake unchanged. */
static const char *forwarded_headers[] = {
	"x-codex-turn-metadata",
	"x-codex-turn-state",
	"x-codex-beta-features",
	"x-openai-subagent",
	"x-codex-parent-thread-id",
	"x-responsesapi-include-timing-metrics",
	NULL
};

static void
responses_start(struct turn *t)
{
	if (t->stream)
		client_start_stream(t, "text/event-stream");
}

static void
sse_out(struct turn *t, const char *type, const char *data, size_t len)
{
	struct evbuffer *buf = evbuffer_new();

	render_sse(buf, type, data, len);
	client_write(t, buf);
	evbuffer_free(buf);
}

static void
responses_event(struct turn *t, const char *type, const char *frame, size_t len)
{
	if (t->stream)
		sse_out(t, type, frame, len);
	else
		render_agg_event(t->front, type, frame, len);
}

static void
responses_finish(struct turn *t, int outcome, const char *code, const char *message)
{
	struct render_reply rr = { 0 };
	char *text;
	size_t len;

	if (t->stream) {
		if (outcome == DONE_STREAM_ERROR) {
			text = render_failed_event(code, message, &len);
			sse_out(t, "response.failed", text, len);
			free(text);
		}
		client_end_stream(t);
		return;
	}
	if (outcome == DONE_STREAM_ERROR && strcmp(code, "stream_disconnected") != 0)
		render_error(502, "server_error", code, message, &rr);
	else
		render_agg_result(t->front, outcome, message, &rr);
	client_reply(t, rr.status, "application/json", rr.body, rr.len, -1);
	free(rr.body);
}

static void
responses_fail(struct turn *t, const struct turn_error *e)
{
	struct render_reply rr = { 0 };
	int64_t ra = e->retry_after;

	if (e->body != NULL)
		render_upstream_error(e->status, e->code, e->body, e->len,
		    now_wall_usec() / USEC_PER_SEC, &ra, &rr);
	else
		render_error(e->status, e->type, e->code, e->message, &rr);
	client_reply(t, rr.status, "application/json", rr.body, rr.len, ra);
	free(rr.body);
}

static void
responses_free(struct turn *t)
{
	render_agg_free(t->front);
	free(t->front);
}

static const struct turn_ops responses_ops = {
	.route = "responses",
	.start = responses_start,
	.event = responses_event,
	.finish = responses_finish,
	.fail = responses_fail,
	.free = responses_free,
};

/* Refuse a request that is not one: 0 when body can be a turn. */
static int
check_request(struct evhttp_request *http, const struct jdoc *body)
{
	int input;

	if (!jdoc_is(body, 0, JT_OBJECT)) {
		send_error(http, 400, "invalid_request_error", "invalid_body",
		    "the request body must be a JSON object");
		return -1;
	}
	if (!jdoc_is(body, jdoc_member(body, 0, "model"), JT_STRING)) {
		send_error(http, 400, "invalid_request_error", "missing_model",
		    "'model' is required and must be a string");
		return -1;
	}
	input = jdoc_member(body, 0, "input");
	if (!jdoc_is(body, input, JT_ARRAY) && !jdoc_is(body, input, JT_STRING)) {
		send_error(http, 400, "invalid_request_error", "invalid_input",
		    "'input' is required and must be a string or an array of items");
		return -1;
	}
	if (clients_in_use() >= sv->cfg.max_clients) {
		send_error(http, 503, "server_error", "too_many_requests",
		    "codexpool is serving %d turns and client WebSockets already "
		    "(max_clients)", clients_in_use());
		return -1;
	}
	return 0;
}

void
responses_handle(struct evhttp_request *http)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(http);
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	size_t len = evbuffer_get_length(in);
	struct render_agg *agg;
	struct jdoc *body;
	const char *source, *v;
	struct turn *t;
	char err[256], *conv = NULL;
	int i;

	if (len == 0) {
		send_error(http, 400, "invalid_request_error", "empty_body",
		    "the request body is empty; send a JSON Responses API request");
		return;
	}
	/* checked and indexed, not parsed into a tree: most of the body goes
	 * upstream as it came (upframe.c) */
	body = xmalloc(sizeof(*body));
	if (jdoc_parse(body, (const char *)evbuffer_pullup(in, -1), len, err,
	    sizeof(err)) == -1) {
		send_error(http, 400, "invalid_request_error", "invalid_json",
		    "the request body is not valid JSON: %s", err);
		free(body);
		return;
	}
	evbuffer_drain(in, len);	/* the turn keeps its own copy */
	if (check_request(http, body) == -1) {
		jdoc_free(body);
		free(body);
		return;
	}

	agg = xcalloc(1, sizeof(*agg));
	render_agg_init(agg, sv->cfg.max_client_buffer);
	t = turn_new(http, &responses_ops, agg, body,
	    jdoc_bool(body, jdoc_member(body, 0, "stream"), false));
	source = conversation_of(http, body, NULL, &conv);
	turn_set_conversation(t, conv, source);
	for (i = 0; forwarded_headers[i]; i++)
		if ((v = evhttp_find_header(h, forwarded_headers[i])) != NULL)
			turn_forward_header(t, forwarded_headers[i], v);
	turn_start(t);
}
