/*
 * POST /v1/chat/completions and POST /v1/messages: front-ends of the turn
 * lifecycle that translate (xlate_chat.c, xlate_anthropic.c).  The request
 * becomes a Responses body and rides the conversation's pooled upstream
 * WebSocket from its first turn, like /v1/responses; the upstream events
 * are translated back as they come.  The two routes differ only in their
 * translator and their error shape, so one table row describes each.
 *
 * Headers are committed at the first translated byte, not at the first
 * upstream frame: the translators emit nothing before the first content,
 * so an upstream error that comes first is still a plain HTTP error.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "front_ws.h"
#include "jscan.h"
#include "jsonutil.h"
#include "log.h"
#include "modelmap.h"
#include "msgtypes.h"
#include "render.h"
#include "supervisor.h"
#include "turn.h"
#include "xlate.h"

/* One translating route. */
struct xroute {
	const char	*route;
	int		 overloaded;	/* status when max_clients is reached */
	struct json_object *(*to_responses)(struct json_object *, struct xlate_error *);
	void		*(*stream_new)(const struct xlate_stream_opts *);
	int		 (*stream_event)(void *, const char *, const char *, size_t,
			    xlate_emit_fn, void *);
	int		 (*stream_end)(void *, const char *, xlate_emit_fn, void *);
	struct json_object *(*stream_result)(void *, int *);
	bool		 (*stream_started)(const void *);
	void		 (*stream_free)(void *);
	char		*(*error_body)(int status, const char *code, const char *message);
	int		 (*ping)(xlate_emit_fn, void *);	/* NULL: an SSE comment */
};

/* The translators' own types behind one signature each. */
static void *chat_new(const struct xlate_stream_opts *o) { return chat_stream_new(o); }
static int chat_event(void *st, const char *type, const char *f, size_t len,
    xlate_emit_fn emit, void *arg) { return chat_stream_event(st, type, f, len, emit, arg); }
static int chat_end(void *st, const char *why, xlate_emit_fn emit, void *arg)
    { return chat_stream_end(st, why, emit, arg); }
static struct json_object *chat_result(void *st, int *status)
    { return chat_stream_result(st, status); }
static bool chat_started(const void *st) { return chat_stream_started(st); }
static void chat_free(void *st) { chat_stream_free(st); }

static void *anth_new(const struct xlate_stream_opts *o) { return anthropic_stream_new(o); }
static int anth_event(void *st, const char *type, const char *f, size_t len,
    xlate_emit_fn emit, void *arg) { return anthropic_stream_event(st, type, f, len, emit, arg); }
static int anth_end(void *st, const char *why, xlate_emit_fn emit, void *arg)
    { return anthropic_stream_end(st, why, emit, arg); }
static struct json_object *anth_result(void *st, int *status)
    { return anthropic_stream_result(st, status); }
static bool anth_started(const void *st) { return anthropic_stream_started(st); }
static void anth_free(void *st) { anthropic_stream_free(st); }
static char *anth_error_body(int status, const char *code, const char *message)
    { (void)code; return anthropic_error_body(status, message); }

static const struct xroute chat_route = {
	"chat", 503, chat_request_to_responses, chat_new, chat_event, chat_end,
	chat_result, chat_started, chat_free, chat_error_body, NULL,
};

/* Anthropic clients (Claude Code) back off and retry on 529 overloaded. */
static const struct xroute messages_route = {
	"messages", 529, anthropic_request_to_responses, anth_new, anth_event, anth_end,
	anth_result, anth_started, anth_free, anth_error_body, anthropic_ping,
};

/* A turn's translating state. */
struct xfront {
	const struct xroute *r;
	void		*st;
	bool		 committed;	/* headers sent */
};

static struct modelmap *model_map;
static char *model_map_spec;

/* The model map of the current configuration (reparsed after a reload). */
static const struct modelmap *
current_model_map(void)
{
	const char *spec = sv->cfg.model_map ? sv->cfg.model_map : "";
	char err[256];
	struct modelmap *mm;

	if (model_map_spec != NULL && strcmp(model_map_spec, spec) == 0)
		return model_map;
	if ((mm = modelmap_parse(spec, err, sizeof(err))) == NULL) {
		/* config checks refuse a bad map; keep the last good one */
		log_warnx("model_map: %s", err);
		return model_map;
	}
	modelmap_free(model_map);
	free(model_map_spec);
	model_map = mm;
	model_map_spec = xstrdup(spec);
	return model_map;
}

int
model_map_check(const char *spec, char *err, size_t errlen)
{
	struct modelmap *mm = modelmap_parse(spec ? spec : "", err, errlen);

	if (mm == NULL)
		return -1;
	modelmap_free(mm);
	return 0;
}

void
model_map_free(void)
{
	modelmap_free(model_map);
	free(model_map_spec);
	model_map = NULL;
	model_map_spec = NULL;
}

/* ---- output ------------------------------------------------------------- */

static void
commit(struct turn *t)
{
	struct xfront *f = t->front;

	if (!f->committed) {
		f->committed = true;
		client_start_stream(t, "text/event-stream");
	}
}

static int
emit_sse(void *arg, const char *event, const char *data, size_t len)
{
	struct turn *t = arg;
	struct evbuffer *buf;

	if (t->cl.gone)
		return -1;
	commit(t);
	buf = evbuffer_new();
	render_sse(buf, event, data, len);
	client_write(t, buf);
	evbuffer_free(buf);
	return 0;
}

static void
reply_json(struct turn *t, int status, struct json_object *o, int64_t retry_after)
{
	size_t len;
	const char *text = json_object_to_json_string_length(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	client_reply(t, status, "application/json", text, len, retry_after);
}

static void
xlate_start(struct turn *t)
{
	(void)t;	/* headers wait for the first translated byte */
}

static void
xlate_event(struct turn *t, const char *type, const char *frame, size_t len)
{
	struct xfront *f = t->front;

	f->r->stream_event(f->st, type, frame, len, t->stream ? emit_sse : NULL, t);
}

static void
xlate_finish(struct turn *t, int outcome, const char *code, const char *message)
{
	struct xfront *f = t->front;
	const char *why = outcome == DONE_STREAM_ERROR ? message : NULL;
	struct json_object *o;
	int status = 502;

	(void)code;
	if (t->stream && (f->committed || f->r->stream_started(f->st) ||
	    outcome == DONE_COMPLETED)) {
		f->r->stream_end(f->st, why, emit_sse, t);
		commit(t);
		client_end_stream(t);
		return;
	}
	/* stream:false, or a stream whose first event was an error */
	f->r->stream_end(f->st, why, NULL, NULL);
	if ((o = f->r->stream_result(f->st, &status)) == NULL) {
		char *body = f->r->error_body(502, "stream_disconnected",
		    "the upstream response ended without a result");
		client_reply(t, 502, "application/json", body, strlen(body), -1);
		free(body);
		return;
	}
	reply_json(t, status, o, -1);
	json_object_put(o);
}

/* An error before any output, in the route's shape. */
static void
xlate_fail(struct turn *t, const struct turn_error *e)
{
	struct xfront *f = t->front;
	struct xlate_upstream_error ue;
	struct json_object *o;
	const char *code = e->code, *message = e->message;
	char err[64], *body;
	int status;

	if (e->body != NULL &&
	    (o = json_parse_buf(e->body, e->len, err, sizeof(err))) != NULL) {
		xlate_upstream_error_from(&ue, o);
		json_object_put(o);
		if (ue.message[0])
			message = ue.message;
		if (ue.code[0])
			code = ue.code;
	}
	/* Overloaded in the route's own words (529 for Anthropic clients), as
	 * stream_result says it when the failure comes later. */
	status = e->status == 503 ? f->r->overloaded : e->status;
	body = f->r->error_body(status, code, message ? message : "upstream error");
	client_reply(t, status, "application/json", body, strlen(body), e->retry_after);
	free(body);
}

static void
xlate_keepalive(struct turn *t)
{
	struct xfront *f = t->front;

	/* Silence before the first content: commit now so the client and
	 * the proxies between keep the connection. */
	commit(t);
	if (f->r->ping != NULL)
		f->r->ping(emit_sse, t);
	else
		client_keepalive(t);
}

static void
xlate_free(struct turn *t)
{
	struct xfront *f = t->front;

	f->r->stream_free(f->st);
	free(f);
}

static const struct turn_ops chat_ops = {
	.route = "chat", .start = xlate_start, .event = xlate_event, .finish = xlate_finish,
	.fail = xlate_fail, .keepalive = xlate_keepalive, .free = xlate_free,
};

static const struct turn_ops messages_ops = {
	.route = "messages", .start = xlate_start, .event = xlate_event, .finish = xlate_finish,
	.fail = xlate_fail, .keepalive = xlate_keepalive, .free = xlate_free,
};

/* ---- requests ----------------------------------------------------------- */

static void
route_error(struct evhttp_request *http, const struct xroute *r, int status,
    const char *code, const char *message)
{
	char *body = r->error_body(status, code, message);

	http_send_json(http, status, body);
	free(body);
}

/* The client's JSON object, or NULL after an error reply. */
static struct json_object *
read_body(struct evhttp_request *http, const struct xroute *r)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(http);
	size_t len = evbuffer_get_length(in);
	struct json_object *o;
	char err[256], msg[300];

	if (len == 0) {
		route_error(http, r, 400, "empty_body", "the request body is empty");
		return NULL;
	}
	o = json_parse_buf((const char *)evbuffer_pullup(in, -1), len, err, sizeof(err));
	evbuffer_drain(in, len);	/* parsed: the raw body is not needed again */
	if (o == NULL && strcmp(err, JSON_ERR_NULL) != 0) {
		snprintf(msg, sizeof(msg), "the request body is not valid JSON: %s", err);
		route_error(http, r, 400, "invalid_json", msg);
		return NULL;
	}
	if (!json_object_is_type(o, json_type_object)) {
		route_error(http, r, 400, "invalid_body", "the request body must be a JSON object");
		json_object_put(o);
		return NULL;
	}
	return o;
}

static void
handle(struct evhttp_request *http, const struct xroute *r, const struct turn_ops *ops)
{
	struct xlate_stream_opts opts;
	struct xlate_error xerr;
	struct json_object *client, *body;
	struct xfront *f;
	struct turn *t;
	const char *model, *source, *v, *text;
	char *conv = NULL, seed[32], *eb, err[128], msg[256];
	struct jdoc *doc;
	size_t len;

	if ((client = read_body(http, r)) == NULL)
		return;
	memset(&xerr, 0, sizeof(xerr));
	if ((body = r->to_responses(client, &xerr)) == NULL) {
		eb = r == &chat_route ? chat_xlate_error_body(&xerr) :
		    anthropic_error_body(xerr.status, xerr.message);
		http_send_json(http, xerr.status, eb);
		free(eb);
		json_object_put(client);
		return;
	}
	if (clients_in_use() >= sv->cfg.max_clients) {
		route_error(http, r, r->overloaded, "too_many_requests",
		    "codexpool is serving its max_clients turns already");
		json_object_put(client);
		json_object_put(body);
		return;
	}
	model = json_get_str(client, "model");
	memset(&opts, 0, sizeof(opts));
	opts.client_model = model;
	opts.created = now_wall_usec() / USEC_PER_SEC;
	opts.include_usage = r == &chat_route && chat_include_usage(client);
	opts.max_aggregate = sv->cfg.max_client_buffer;
	snprintf(seed, sizeof(seed), "%016" PRIx64, sv->next_rid ^ (uint64_t)now_wall_usec());
	opts.id_seed = seed;

	if (model != NULL)
		json_object_object_add(body, "model", json_object_new_string(
		    modelmap_resolve(current_model_map(), sv->cfg.models, model)));
	/* the turn carries the Responses request as text, as that route's do */
	doc = xmalloc(sizeof(*doc));
	text = json_object_to_json_string_length(body,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (jdoc_parse(doc, text, len, err, sizeof(err)) == -1) {
		/* json-c wrote it; only a number it cannot print would do */
		snprintf(msg, sizeof(msg), "the request cannot be translated: %s", err);
		route_error(http, r, 400, "invalid_body", msg);
		free(doc);
		json_object_put(client);
		json_object_put(body);
		return;
	}
	f = xcalloc(1, sizeof(*f));
	f->r = r;
	f->st = r->stream_new(&opts);
	/* the conversation comes from the client's own model name, so a new
	 * model_map does not split it */
	if ((v = evhttp_find_header(evhttp_request_get_input_headers(http),
	    "x-claude-code-session-id")) != NULL &&
	    (conv = conversation_key(v, strlen(v))) != NULL)
		source = "x-claude-code-session-id";
	else
		source = conversation_of(http, doc, model, &conv);
	t = turn_new(http, ops, f, doc, json_get_bool(body, "stream", false));
	json_object_put(client);
	json_object_put(body);
	turn_set_conversation(t, conv, source);
	turn_start(t);
}

void
chat_handle(struct evhttp_request *http)
{
	handle(http, &chat_route, &chat_ops);
}

void
messages_handle(struct evhttp_request *http)
{
	handle(http, &messages_route, &messages_ops);
}

void
messages_count_tokens(struct evhttp_request *http)
{
	struct xlate_error xerr;
	struct json_object *client, *o;
	char *eb;

	if ((client = read_body(http, &messages_route)) == NULL)
		return;
	memset(&xerr, 0, sizeof(xerr));
	if ((o = anthropic_count_tokens(client, &xerr)) == NULL) {
		eb = anthropic_error_body(xerr.status, xerr.message);
		http_send_json(http, xerr.status, eb);
		free(eb);
	} else {
		http_send_json(http, 200, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	}
	json_object_put(client);
}
