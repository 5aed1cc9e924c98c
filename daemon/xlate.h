/*
 * Translations between the client APIs codexpoold serves and the Responses
 * API the Codex backend speaks:
 *
 *	POST /v1/chat/completions	xlate_chat.c
 *	POST /v1/messages		xlate_anthropic.c (and count_tokens)
 *
 * Pure modules: no I/O, no clock, no supervisor state, so they are unit
 * tested alone (tests/check_xlate.c).  The caller owns the HTTP side:
 *
 *   1. body = chat_request_to_responses(client_json, &err): a new Responses
 *      request, or NULL with err (send err.status and
 *      chat_xlate_error_body(&err)).  Its "model" is still the client's:
 *      set it to modelmap_resolve(map, cfg.models, model) and keep the
 *      client's name for the answer.  "stream" says which answer to give;
 *      "instructions", "input" and "prompt_cache_key" feed identity as for
 *      /v1/responses.
 *   2. st = chat_stream_new(&opts); for every upstream event of the turn
 *      (codex.rate_limits and other unknown types are ignored),
 *      chat_stream_event(st, type, frame, len, emit, arg); then
 *      chat_stream_end(st, abort_reason, emit, arg).  For stream:true, emit
 *      writes each client SSE event; for stream:false pass emit = NULL and
 *      take chat_stream_result(st, &status) at the end.
 *      Nothing is emitted before the first content, so an upstream error
 *      that comes first (chat_stream_started() is false) can still become
 *      a plain HTTP error: chat_stream_end(st, NULL, NULL, NULL), then
 *      chat_stream_result() gives the status and the error body.
 *   3. chat_stream_free(st).
 *
 * The Anthropic side has the same shape (anthropic_*).
 *
 * Ownership follows json-c: returned json objects are new (caller puts),
 * arguments are borrowed.  Returned char * are malloc'd (caller frees).
 */
#ifndef CODEXPOOL_XLATE_H
#define CODEXPOOL_XLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

/* A request the route refuses, or an upstream failure, as the client sees it. */
struct xlate_error {
	int		 status;	/* HTTP status, 400 for bad input */
	const char	*type;		/* route's error type ("invalid_request_error") */
	const char	*code;		/* OpenAI "code" or NULL */
	const char	*param;		/* offending request field or NULL (static) */
	char		 message[256];
};

/*
 * One client SSE event.  event is the SSE "event:" name (Anthropic) or
 * NULL (chat, data only); data is the "data:" payload, not NUL-terminated
 * in general.  The caller frames it ("event: E\ndata: D\n\n") and writes
 * it.  A non-zero return stops the translation: the translator returns -1.
 */
typedef int (*xlate_emit_fn)(void *arg, const char *event, const char *data, size_t len);

/* Options of a stream translator (either route). */
struct xlate_stream_opts {
	const char	*client_model;	/* the model the client asked for, echoed back */
	const char	*id_seed;	/* id suffix: "chatcmpl-<seed>", "msg_<seed>" */
	int64_t		 created;	/* unix seconds for chat's "created" */
	bool		 include_usage;	/* chat: stream_options.include_usage */
	size_t		 max_aggregate;	/* bytes kept for the non-stream result;
					 * 0 = XLATE_DEFAULT_AGGREGATE */
};

#define XLATE_DEFAULT_AGGREGATE	(16u * 1024 * 1024)
#define XLATE_MAX_TOOL_CALLS	1024	/* per response; more is an upstream error */

/* ---- /v1/chat/completions (xlate_chat.c) ---- */

struct chat_stream;

/* Chat request -> Responses request, or NULL with err (status 400). */
struct json_object *chat_request_to_responses(struct json_object *chat,
	    struct xlate_error *err);
/* stream_options.include_usage of a chat request. */
bool	chat_include_usage(struct json_object *chat);
/* Fields accepted and not forwarded (the backend ignores them), NULL-ended. */
extern const char *const chat_ignored_fields[];

struct chat_stream *chat_stream_new(const struct xlate_stream_opts *opts);
/* Feed one upstream event (type = its "type", frame = its JSON text).
 * 0, or -1 when emit failed or the frame is not JSON (ignored). */
int	chat_stream_event(struct chat_stream *st, const char *type,
	    const char *frame, size_t len, xlate_emit_fn emit, void *arg);
/* The turn is over.  abort_reason NULL = the upstream stream ended
 * normally; otherwise why it broke (an error unless a terminal event was
 * already seen).  Emits the finish chunk, the usage chunk (include_usage)
 * and [DONE], or the error chunk.  0 or -1 (emit failed). */
int	chat_stream_end(struct chat_stream *st, const char *abort_reason,
	    xlate_emit_fn emit, void *arg);
/* After chat_stream_end: the chat.completion (status 200) or an error body. */
struct json_object *chat_stream_result(struct chat_stream *st, int *status);
/* Did the client get any event yet?  (Output starts at the first content.) */
bool	chat_stream_started(const struct chat_stream *st);
void	chat_stream_free(struct chat_stream *st);

/* {"error":{"message","type","param","code"}}; type follows the status. */
char	*chat_error_body(int status, const char *code, const char *message);
char	*chat_xlate_error_body(const struct xlate_error *err);

/* ---- /v1/messages (xlate_anthropic.c) ---- */

struct anthropic_stream;

/* Anthropic request -> Responses request, or NULL with err (status 400). */
struct json_object *anthropic_request_to_responses(struct json_object *msg,
	    struct xlate_error *err);
/* The session part of metadata.user_id ("user_<h>_account_<a>_session_<uuid>"
 * or a JSON string with "session_id"), malloc'd, or NULL.  The translated
 * body also carries it as prompt_cache_key. */
char	*anthropic_session_of(struct json_object *msg);
/* POST /v1/messages/count_tokens: {"input_tokens": N}, or NULL with err. */
struct json_object *anthropic_count_tokens(struct json_object *msg,
	    struct xlate_error *err);
extern const char *const anthropic_ignored_fields[];

struct anthropic_stream *anthropic_stream_new(const struct xlate_stream_opts *opts);
int	anthropic_stream_event(struct anthropic_stream *st, const char *type,
	    const char *frame, size_t len, xlate_emit_fn emit, void *arg);
int	anthropic_stream_end(struct anthropic_stream *st, const char *abort_reason,
	    xlate_emit_fn emit, void *arg);
struct json_object *anthropic_stream_result(struct anthropic_stream *st, int *status);
bool	anthropic_stream_started(const struct anthropic_stream *st);
void	anthropic_stream_free(struct anthropic_stream *st);
/* The keepalive event: "event: ping", data {"type":"ping"}. */
int	anthropic_ping(xlate_emit_fn emit, void *arg);

/* {"type":"error","error":{"type","message"}}; type follows the status. */
char	*anthropic_error_body(int status, const char *message);
const char *anthropic_error_type(int status);

/* ---- shared (xlate.c) ---- */

void	xlate_error_set(struct xlate_error *err, int status, const char *param,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Token counts of a response.completed / response.incomplete. */
struct xlate_usage {
	int64_t	input, cached, output, reasoning;
	bool	seen;
};
void	xlate_usage_from(struct xlate_usage *u, struct json_object *response);

/* An upstream error ("error" frame or response.failed): HTTP status
 * (the frame's "status" if any, else by code), code and message. */
struct xlate_upstream_error {
	int	status;
	char	code[64];
	char	message[256];
};
void	xlate_upstream_error_from(struct xlate_upstream_error *ue,
	    struct json_object *frame);

/* A growable byte buffer with a hard limit. */
struct xlate_buf {
	char	*data;
	size_t	 len, cap, limit;
	bool	 overflow;	/* an append was refused: the limit was reached */
};
void	xlate_buf_add(struct xlate_buf *b, const char *s, size_t n);
void	xlate_buf_free(struct xlate_buf *b);

/* Serialise o (plain, no slash escapes) and hand it to emit; puts o. */
int	xlate_emit_json(xlate_emit_fn emit, void *arg, const char *event,
	    struct json_object *o);
struct json_object *xlate_str(const char *s);	/* json string, "" for NULL */
/* prefix + seed ("0" when NULL), malloc'd: a response id for the client. */
char	*xlate_id(const char *prefix, const char *seed);
/* {"type": type, key: text}: one content part. */
struct json_object *xlate_part(const char *type, const char *key, const char *text);
/* {"type":"message","role": role,"content": content} (takes content). */
struct json_object *xlate_message(const char *role, struct json_object *content);

#endif
