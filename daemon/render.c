#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "msgtypes.h"
#include "render.h"
#include "util.h"

void
render_sse(struct evbuffer *out, const char *type, const char *data, size_t len)
{
	/* three adds, not a printf: this runs for every event of every turn */
	if (type != NULL && type[0]) {
		evbuffer_add(out, "event: ", 7);
		evbuffer_add(out, type, strlen(type));
		evbuffer_add(out, "\n", 1);
	}
	evbuffer_add(out, "data: ", 6);
	evbuffer_add(out, data, len);
	evbuffer_add(out, "\n\n", 2);
}

size_t
render_frame_type(const char *frame, size_t len, char *out, size_t outlen)
{
	struct json_object *o;
	const char *t;
	char err[64];

	if (json_lead_type(frame, len, out, outlen))
		return strlen(out);
	out[0] = '\0';
	o = json_parse_buf(frame, len, err, sizeof(err));
	if ((t = json_get_str(o, "type")) != NULL)
		strlcpy_safe(out, t, outlen);
	json_object_put(o);
	return strlen(out);
}

static char *
dup_text(struct json_object *o, size_t *len)
{
	const char *text = json_object_to_json_string_length(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
	char *out = xmalloc(*len + 1);

	memcpy(out, text, *len + 1);
	return out;
}

char *
render_failed_event(const char *code, const char *message, size_t *len)
{
	struct json_object *ev = json_object_new_object();
	struct json_object *resp = json_object_new_object();
	struct json_object *err = json_object_new_object();
	char *out;

	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(message));
	json_object_object_add(resp, "status", json_object_new_string("failed"));
	json_object_object_add(resp, "error", err);
	json_object_object_add(ev, "type", json_object_new_string("response.failed"));
	json_object_object_add(ev, "response", resp);
	out = dup_text(ev, len);
	json_object_put(ev);
	return out;
}

void
render_agg_init(struct render_agg *a, size_t limit)
{
	memset(a, 0, sizeof(*a));
	a->limit = limit;
}

void
render_agg_free(struct render_agg *a)
{
	json_object_put(a->output);
	json_object_put(a->final);
	a->output = a->final = NULL;
}

static bool
agg_keeps(const char *type)
{
	static const char *kept[] = { "response.output_item.done", "response.completed",
	    "response.failed", "response.incomplete", "error", NULL };
	int i;

	for (i = 0; kept[i]; i++)
		if (strcmp(type, kept[i]) == 0)
			return true;
	return false;
}

void
render_agg_event(struct render_agg *a, const char *type, const char *frame, size_t len)
{
	struct json_object *o, *item, *resp;
	char err[128];

	if (!agg_keeps(type))
		return;
	a->bytes += len;
	if (a->bytes > a->limit)
		return;		/* reported as too large at the end */
	if ((o = json_parse_buf(frame, len, err, sizeof(err))) == NULL)
		return;
	if (strcmp(type, "response.output_item.done") == 0) {
		if ((item = json_get_obj(o, "item")) != NULL) {
			if (a->output == NULL)
				a->output = json_object_new_array();
			json_object_array_add(a->output, json_object_get(item));
		}
	} else {
		json_object_put(a->final);
		resp = json_get_obj(o, "response");
		a->final = resp ? json_object_get(resp) : json_object_get(o);
	}
	json_object_put(o);
}

void
render_agg_result(struct render_agg *a, int outcome, const char *message,
    struct render_reply *r)
{
	struct json_object *items, *e;
	const char *m, *code;
	char buf[512];

	if (a->bytes > a->limit) {
		render_error(502, "server_error", "response_too_large",
		    "the response is larger than max_client_buffer; use stream:true", r);
		return;
	}
	if (outcome == DONE_STREAM_ERROR || a->final == NULL) {
		snprintf(buf, sizeof(buf), "upstream stream ended early: %s",
		    message && *message ? message : "no response.completed");
		render_error(502, "server_error", "stream_disconnected", buf, r);
		return;
	}
	if (outcome == DONE_FAILED) {
		e = json_get_obj(a->final, "error");
		m = e ? json_get_str(e, "message") : NULL;
		code = e ? json_get_str(e, "code") : NULL;
		render_error(502, "upstream_error", code ? code : "response_failed",
		    m ? m : "the upstream response failed", r);
		return;
	}
	/* The completed event's response may carry the items, or an empty
	 * list (or, from a broken upstream, something else: ours replace it). */
	if (a->output != NULL && json_object_is_type(a->final, json_type_object) &&
	    (!json_object_object_get_ex(a->final, "output", &items) ||
	     !json_object_is_type(items, json_type_array) ||
	     json_object_array_length(items) == 0))
		json_object_object_add(a->final, "output", json_object_get(a->output));
	r->status = 200;
	r->body = dup_text(a->final, &r->len);
}

void
render_error(int status, const char *type, const char *code, const char *message,
    struct render_reply *r)
{
	r->status = status;
	if (type == NULL)
		type = status >= 500 ? "server_error" : "invalid_request_error";
	r->body = json_error_body(message, type, code);
	r->len = strlen(r->body);
}

static struct json_object *
error_object(struct json_object *o)
{
	struct json_object *e;

	if ((e = json_get_obj(o, "error")) == NULL && json_get_obj(o, "response") != NULL)
		e = json_get_obj(json_get_obj(o, "response"), "error");
	return e;
}

/* At most a year: an upstream's number never overflows a caller's sum. */
#define RESETS_IN_MAX	(366 * 86400)

static int64_t
resets_in(struct json_object *e, int64_t now_unix)
{
	int64_t v;

	if ((v = json_get_int(e, "resets_at", 0)) > 0)
		v = v > now_unix ? v - now_unix : 0;
	else if ((v = json_get_int(e, "resets_in_seconds", 0)) <= 0)
		return -1;
	return v > RESETS_IN_MAX ? RESETS_IN_MAX : v;
}

int64_t
render_retry_after(const char *body, size_t len, int64_t now_unix)
{
	struct json_object *o, *e;
	char err[64];
	int64_t ra = -1;

	if ((o = json_parse_buf(body, len, err, sizeof(err))) == NULL)
		return -1;
	if ((e = error_object(o)) != NULL)
		ra = resets_in(e, now_unix);
	json_object_put(o);
	return ra;
}

void
render_upstream_error(int status, const char *code, const char *body, size_t len,
    int64_t now_unix, int64_t *retry_after, struct render_reply *r)
{
	struct json_object *o = NULL, *e = NULL, *wrapped;
	char err[128], msg[128];
	int64_t resets;

	if (body != NULL && len > 0)
		o = json_parse_buf(body, len, err, sizeof(err));
	if ((e = error_object(o)) == NULL) {
		snprintf(msg, sizeof(msg), "upstream error (HTTP %d)", status);
		render_error(status, NULL, code && *code ? code : NULL, msg, r);
		json_object_put(o);
		return;
	}
	if ((resets = resets_in(e, now_unix)) >= 0)
		*retry_after = resets;
	wrapped = json_object_new_object();
	json_object_object_add(wrapped, "error", json_object_get(e));
	r->status = status;
	r->body = dup_text(wrapped, &r->len);
	json_object_put(wrapped);
	json_object_put(o);
}

const char *
render_reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return status >= 500 ? "Server Error" : "Client Error";
}
