/*
 * HTTP endpoints on the simulator's listener: Responses over HTTP/SSE,
 * the OAuth token endpoint, the model list, and the /sim/ control and
 * introspection endpoints.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "jsonutil.h"
#include "log.h"
#include "lws_glue.h"
#include "pace.h"
#include "prompt.h"

#define HTTP_CHUNK	(64 * 1024)

struct http_txn {
	char		 path[256];
	int		 post;
	struct sbuf	 body;
	char		*resp;
	size_t		 resp_len;
	size_t		 resp_off;
	/* POST .../responses: a streamed answer */
	struct sim_session sess;
	struct pacer	 pace;
	int		 streaming;
	unsigned char	*head;		/* response head, sent with the first event */
	size_t		 head_len;
	struct http_txn	*next;		/* every live transaction, so a */
	struct http_txn	*prev;		/* shutdown can free the leftovers */
};

static struct http_txn *txns;

static void
txn_destroy(struct http_txn *t, int context_alive)
{
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		txns = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	pacer_free(&t->pace, context_alive);
	session_free(&t->sess);
	free(t->head);
	sbuf_free(&t->body);
	freezero_str(t->resp);
	free(t);
}

static void
txn_free(struct sim_pss *pss)
{
	if (pss->http == NULL)
		return;
	txn_destroy(pss->http, 1);
	pss->http = NULL;
}

static struct http_txn *
txn_new(struct sim_pss *pss, struct lws *wsi, size_t max_body)
{
	struct http_txn *t = xcalloc(1, sizeof(*t));

	sbuf_init(&t->body, max_body);
	pacer_init(&t->pace, wsi);
	t->next = txns;
	if (txns != NULL)
		txns->prev = t;
	txns = t;
	pss->http = t;
	return t;
}

void
http_shutdown(void)
{
	/* After the context is gone: the timers are gone with it. */
	while (txns != NULL)
		txn_destroy(txns, 0);
}

static const char *
reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return status < 500 ? "Client Error" : "Server Error";
}

/*
 * The head is written by hand: during the upgrade check lws has not yet
 * recorded the request's HTTP version and would answer "HTTP/1.0", which
 * WebSocket clients such as tungstenite reject before reading the status.
 */
int
http_reply_now(struct lws *wsi, int status, const char *body)
{
	size_t blen = strlen(body);
	unsigned char *buf;
	int n, rv = 0;

	buf = xmalloc(LWS_PRE + 512 + blen);
	n = snprintf((char *)buf + LWS_PRE, 512, "HTTP/1.1 %d %s\r\n"
	    "content-type: application/json\r\n"
	    "content-length: %zu\r\n"
	    "cache-control: no-store\r\n"
	    "connection: close\r\n\r\n", status, reason_phrase(status), blen);
	memcpy(buf + LWS_PRE + n, body, blen);
	if (lws_write(wsi, buf + LWS_PRE, (size_t)n + blen, LWS_WRITE_HTTP_FINAL) !=
	    (int)((size_t)n + blen))
		rv = -1;
	free(buf);
	return rv;
}

/* Adds each string member of headers (may be NULL) as a header. */
static int
add_json_headers(struct lws *wsi, struct json_object *headers,
    unsigned char **p, unsigned char *end)
{
	char name[128];
	const char *v;

	if (headers == NULL || !json_object_is_type(headers, json_type_object))
		return 0;
	json_object_object_foreach(headers, key, val) {
		if (!json_object_is_type(val, json_type_string) ||
		    (size_t)snprintf(name, sizeof(name), "%s:", key) >= sizeof(name))
			continue;
		v = json_object_get_string(val);
		if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
		    (const unsigned char *)v, (int)strlen(v), p, end))
			return -1;
	}
	return 0;
}

/* Starts a response: headers now, the body from HTTP_WRITEABLE.  Takes
 * ownership of body; headers (may be NULL) is borrowed. */
static int
http_send_hdrs(struct lws *wsi, struct sim_pss *pss, int status, char *body,
    struct json_object *headers)
{
	unsigned char hdr[LWS_PRE + 2048], *start = hdr + LWS_PRE, *p = start;
	struct http_txn *t;
	size_t blen = strlen(body);

	t = pss->http != NULL ? pss->http : txn_new(pss, wsi, 0);
	t->resp = body;
	t->resp_len = blen;
	t->resp_off = 0;
	if (lws_add_http_common_headers(wsi, (unsigned int)status,
	    "application/json", blen, &p, hdr + sizeof(hdr)) ||
	    lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
	    (const unsigned char *)"no-store", 8, &p, hdr + sizeof(hdr)) ||
	    add_json_headers(wsi, headers, &p, hdr + sizeof(hdr)) ||
	    lws_finalize_write_http_header(wsi, start, &p, hdr + sizeof(hdr)))
		return -1;
	lws_callback_on_writable(wsi);
	return 0;
}

static int
http_send(struct lws *wsi, struct sim_pss *pss, int status, char *body)
{
	return http_send_hdrs(wsi, pss, status, body, NULL);
}

static int
http_send_error(struct lws *wsi, struct sim_pss *pss, int status,
    const char *type, const char *code, const char *message)
{
	return http_send(wsi, pss, status, json_error_body(message, type, code));
}

/* The end of a streamed answer: the last chunk, then keep-alive. */
static int
sse_finish(struct lws *wsi, struct sim_pss *pss)
{
	struct http_txn *t = pss->http;
	unsigned char *buf = xmalloc(LWS_PRE + t->head_len + 8);
	size_t n = t->head_len + 5;
	int w;

	/* (a response without events still needs its head) */
	if (t->head != NULL)
		memcpy(buf + LWS_PRE, t->head, t->head_len);
	memcpy(buf + LWS_PRE + t->head_len, "0\r\n\r\n", 5);
	w = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP_FINAL);
	free(buf);
	if (w < 0 || (size_t)w != n)
		return -1;
	txn_free(pss);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Runs the streamed answer's next step when it is due. */
static int
sse_writeable(struct lws *wsi, struct sim_pss *pss)
{
	struct http_txn *t = pss->http;
	struct plan_step *st;
	int rv = 0;

	if ((st = pacer_due(&t->pace)) == NULL)
		return 0;
	switch (st->kind) {
	case STEP_FRAME:
		rv = send_sse_frame(wsi, t->head, t->head_len, st->data, st->len);
		free(t->head);
		t->head = NULL;
		t->head_len = 0;
		break;
	case STEP_IDLE:
		step_free(st);
		return sse_finish(wsi, pss);
	case STEP_CLOSE:
		/* Mid-stream: the connection ends without the last chunk. */
		log_info("conn=%llu (sse) closing mid-stream",
		    (unsigned long long)t->sess.conn_id);
		rv = -1;
		break;
	case STEP_RESET:
		log_info("conn=%llu (sse) resetting (RST)",
		    (unsigned long long)t->sess.conn_id);
		abort_with_rst(wsi);
		rv = -1;
		break;
	case STEP_STALL:
		break;
	}
	step_free(st);
	if (rv < 0)
		return -1;
	pacer_kick(&t->pace);
	return 0;
}

static int
on_writeable(struct lws *wsi, struct sim_pss *pss)
{
	struct http_txn *t = pss->http;
	unsigned char *buf;
	size_t n;
	int final, w;

	if (t != NULL && t->streaming)
		return sse_writeable(wsi, pss);
	if (t == NULL || t->resp == NULL)
		return 0;
	n = t->resp_len - t->resp_off;
	if (n > HTTP_CHUNK)
		n = HTTP_CHUNK;
	final = t->resp_off + n == t->resp_len;
	buf = xmalloc(LWS_PRE + n + 1);
	memcpy(buf + LWS_PRE, t->resp + t->resp_off, n);
	w = lws_write(wsi, buf + LWS_PRE, n,
	    final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
	free(buf);
	if (w < 0 || (size_t)w < n)
		return -1;
	t->resp_off += n;
	if (!final) {
		lws_callback_on_writable(wsi);
		return 0;
	}
	txn_free(pss);
	if (lws_http_transaction_completed(wsi))
		return -1;
	return 0;
}

/* x-sim-* request headers: the knobs of sim_knob_set. */
static const struct {
	const char	*header;
	const char	*knob;
} knob_headers[] = {
	{ "x-sim-first-event-ms",	"first_event_ms" },
	{ "x-sim-delta-delay-ms",	"delta_delay_ms" },
	{ "x-sim-deltas",		"deltas" },
	{ "x-sim-reasoning",		"reasoning" },
	{ "x-sim-function-call",	"function_call" },
};

static int
header_knobs(struct lws *wsi, struct sim_knobs *k, const char **bad)
{
	size_t i;
	char *v;
	int rc;

	sim_knobs_init(k);
	for (i = 0; i < sizeof(knob_headers) / sizeof(knob_headers[0]); i++) {
		if ((v = custom_dup(wsi, knob_headers[i].header)) == NULL)
			continue;
		rc = sim_knob_set(k, knob_headers[i].knob, v);
		free(v);
		if (rc < 0) {
			*bad = knob_headers[i].header;
			return -1;
		}
	}
	return 0;
}

/* The rate limits that the WebSocket sends as codex.rate_limits. */
static int
rate_limit_headers(struct lws *wsi, unsigned char **p, unsigned char *end)
{
	struct json_object *h = json_object_new_object();
	long now = (long)time(NULL);
	char buf[32];
	int rc;

	json_object_object_add(h, "x-codex-primary-used-percent",
	    json_object_new_string("12.0"));
	json_object_object_add(h, "x-codex-primary-window-minutes",
	    json_object_new_string("300"));
	snprintf(buf, sizeof(buf), "%ld", now + 3 * 3600);
	json_object_object_add(h, "x-codex-primary-reset-at", json_object_new_string(buf));
	json_object_object_add(h, "x-codex-secondary-used-percent",
	    json_object_new_string("3.0"));
	json_object_object_add(h, "x-codex-secondary-window-minutes",
	    json_object_new_string("10080"));
	snprintf(buf, sizeof(buf), "%ld", now + 5 * 86400);
	json_object_object_add(h, "x-codex-secondary-reset-at", json_object_new_string(buf));
	rc = add_json_headers(wsi, h, p, end);
	json_object_put(h);
	return rc;
}

/* An error frame first in the plan becomes the HTTP status, with its
 * error object as the body and its "headers" as headers. */
static int
send_error_frame(struct lws *wsi, struct sim_pss *pss, const char *frame, size_t len)
{
	struct json_object *f, *out, *e;
	char err[64];
	int64_t status;
	int rv;

	f = json_parse_buf(frame, len, err, sizeof(err));
	status = f ? json_get_int(f, "status", 500) : 500;
	if (status < 400 || status > 599)
		status = 500;
	out = json_object_new_object();
	e = f ? json_get_obj(f, "error") : NULL;
	json_object_object_add(out, "error", e ? json_object_get(e) : NULL);
	rv = http_send_hdrs(wsi, pss, (int)status, xstrdup(json_plain(out, NULL)),
	    f ? json_get_obj(f, "headers") : NULL);
	json_object_put(out);
	json_object_put(f);
	return rv;
}

static int
is_error_frame(const struct plan_step *st)
{
	static const char prefix[] = "{\"type\":\"error\"";

	return st->kind == STEP_FRAME && st->len >= sizeof(prefix) - 1 &&
	    memcmp(st->data, prefix, sizeof(prefix) - 1) == 0;
}

/*
 * POST .../responses: the same checks (bearer token, account id) and the
 * same answer as a response.create on the WebSocket, each event one SSE
 * block in its own chunk and write.  Every request is a new connection to
 * the load balancer: a random backend, no previous_response_id.
 */
static int
responses_endpoint(struct lws *wsi, struct sim_pss *pss, const char *body, size_t len)
{
	unsigned char hdr[LWS_PRE + 2048], *start = hdr + LWS_PRE, *p = start,
	    *end = hdr + sizeof(hdr);
	struct http_txn *t = pss->http;
	struct sim_account *acct = NULL;
	struct sim_knobs knobs;
	struct plan plan;
	struct plan_step *st;
	enum auth_verdict v;
	const char *bad = NULL;
	char *authz, *account_hdr, msg[128];

	authz = hdr_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
	account_hdr = custom_dup(wsi, "chatgpt-account-id");
	v = sim_auth_check(&g_sim->auth, authz, account_hdr, &acct);
	freezero_str(authz);
	free(account_hdr);
	if (v != AUTH_OK) {
		log_info("responses over HTTP refused: %s", auth_verdict_code(v));
		return http_send_error(wsi, pss, 401, "invalid_request_error",
		    auth_verdict_code(v), auth_verdict_message(v));
	}
	if (header_knobs(wsi, &knobs, &bad) < 0) {
		snprintf(msg, sizeof(msg), "Invalid value in header %s (see "
		    "codexpool-sim(1)).", bad);
		return http_send_error(wsi, pss, 400, "invalid_request_error",
		    "invalid_sim_option", msg);
	}
	session_init(&t->sess, sim_new_conn_id(g_sim),
	    sim_rand_below(g_sim, g_sim->o.backends), acct->id);
	t->sess.sse = 1;
	sim_respond_knobs(g_sim, &t->sess, body, len, &knobs, &plan);
	st = plan.head;
	if (st != NULL && is_error_frame(st)) {
		int rv = send_error_frame(wsi, pss, st->data, st->len);

		plan_free(&plan);
		return rv;
	}
	if (st != NULL && (st->kind == STEP_CLOSE || st->kind == STEP_RESET)) {
		log_info("conn=%llu (sse) %s before any event",
		    (unsigned long long)t->sess.conn_id,
		    st->kind == STEP_RESET ? "resetting" : "closing");
		if (st->kind == STEP_RESET)
			abort_with_rst(wsi);
		plan_free(&plan);
		return -1;
	}
	/* The head goes out with the first event, in the same write, as
	 * codexpoold sends its own: TTFT through either compares alike. */
	if (lws_add_http_header_status(wsi, 200, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
	    (const unsigned char *)"text/event-stream", 17, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
	    (const unsigned char *)"no-cache", 8, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
	    (const unsigned char *)"chunked", 7, &p, end) ||
	    rate_limit_headers(wsi, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end)) {
		plan_free(&plan);
		return -1;
	}
	t->head_len = (size_t)(p - start);
	t->head = xmalloc(t->head_len);
	memcpy(t->head, start, t->head_len);
	/* A paced answer may take longer than lws's usual timeouts. */
	lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
	t->streaming = 1;
	plan_append(&t->pace.script, &plan);
	pacer_kick(&t->pace);
	return 0;
}

static char *
ok_body(void)
{
	return xstrdup("{\"ok\":true}");
}

static int
token_endpoint(struct lws *wsi, struct sim_pss *pss, const char *body, size_t len)
{
	struct json_object *req, *resp;
	struct sim_account *a = NULL;
	enum refresh_result r;
	const char *grant, *client, *rt;
	char err[128], *out;

	req = json_parse_buf(body, len, err, sizeof(err));
	if (req == NULL || !json_object_is_type(req, json_type_object)) {
		json_object_put(req);
		return http_send_error(wsi, pss, 400, "invalid_request",
		    "invalid_request", "The token request body must be a JSON object.");
	}
	grant = json_get_str(req, "grant_type");
	client = json_get_str(req, "client_id");
	rt = json_get_str(req, "refresh_token");
	if (grant == NULL || strcmp(grant, "refresh_token") != 0) {
		json_object_put(req);
		return http_send_error(wsi, pss, 400, "invalid_request",
		    "unsupported_grant_type", "Only grant_type refresh_token is supported.");
	}
	if (client == NULL || strcmp(client, SIM_CLIENT_ID) != 0) {
		json_object_put(req);
		return http_send_error(wsi, pss, 401, "invalid_request",
		    "invalid_client", "Unknown client_id.");
	}
	r = sim_auth_refresh(&g_sim->auth, rt, &a);
	json_object_put(req);
	if (r == REFRESH_REUSED) {
		log_info("token refresh refused: reused refresh token of %s", a->id);
		return http_send_error(wsi, pss, 401, "invalid_request_error",
		    "refresh_token_reused",
		    "Your refresh token has already been used to generate a new "
		    "access token. Please try signing in again.");
	}
	if (r != REFRESH_OK) {
		log_info("token refresh refused: unknown refresh token");
		return http_send_error(wsi, pss, 401, "invalid_request_error",
		    "invalid_grant", "The refresh token is invalid or unknown.");
	}
	g_sim->rec.refreshes++;
	resp = json_object_new_object();
	json_object_object_add(resp, "access_token",
	    json_object_new_string(a->access_token));
	json_object_object_add(resp, "refresh_token",
	    json_object_new_string(a->refresh_token));
	json_object_object_add(resp, "id_token", json_object_new_string(a->id_token));
	json_object_object_add(resp, "token_type", json_object_new_string("Bearer"));
	json_object_object_add(resp, "expires_in", json_object_new_int64(g_sim->auth.ttl));
	json_object_object_add(resp, "scope",
	    json_object_new_string("openid profile email offline_access"));
	out = xstrdup(json_plain(resp, NULL));
	json_object_put(resp);
	log_info("token refresh for account %s (refresh #%ld)", a->id, a->refreshes);
	return http_send(wsi, pss, 200, out);
}

static int
fault_endpoint(struct lws *wsi, struct sim_pss *pss, const char *body, size_t len)
{
	struct json_object *req;
	struct sim_fault f;
	const char *kind;
	char err[128], spec[96], *out;
	int64_t count, ms, status;

	req = json_parse_buf(body, len, err, sizeof(err));
	kind = req ? json_get_str(req, "kind") : NULL;
	if (kind == NULL) {
		json_object_put(req);
		return http_send_error(wsi, pss, 400, "invalid_request_error",
		    "invalid_request", "Expected {\"kind\":\"KIND\",\"count\":N}.");
	}
	if (strcmp(kind, "clear") == 0 || strcmp(kind, "none") == 0) {
		fault_queue_clear(&g_sim->faults);
		json_object_put(req);
		log_info("run-time faults cleared");
		return http_send(wsi, pss, 200, ok_body());
	}
	count = json_get_int(req, "count", 1);
	ms = json_get_int(req, "ms", -1);
	status = json_get_int(req, "status", -1);
	if (ms >= 0 && strchr(kind, '=') == NULL)
		snprintf(spec, sizeof(spec), "%.60s=%lld", kind, (long long)ms);
	else if (status >= 0 && strchr(kind, '=') == NULL)
		snprintf(spec, sizeof(spec), "%.60s=%lld", kind, (long long)status);
	else
		snprintf(spec, sizeof(spec), "%.90s", kind);
	json_object_put(req);
	if (fault_parse(spec, &f) < 0 || f.kind == FAULT_NONE || count < 1 ||
	    count > 1000000)
		return http_send_error(wsi, pss, 400, "invalid_request_error",
		    "invalid_fault", "Unknown fault kind, bad argument or bad count.");
	if (fault_queue_push(&g_sim->faults, &f, (long)count) < 0)
		return http_send_error(wsi, pss, 400, "invalid_request_error",
		    "fault_queue_full", "Too many pending faults.");
	fault_format(&f, spec, sizeof(spec));
	log_info("run-time fault %s armed for %lld", spec, (long long)count);
	out = xmalloc(64);
	snprintf(out, 64, "{\"ok\":true,\"pending\":%d}", g_sim->faults.n);
	return http_send(wsi, pss, 200, out);
}

static int
route(struct lws *wsi, struct sim_pss *pss, const char *body, size_t len)
{
	struct http_txn *t = pss->http;
	const char *path = t->path;

	if (t->post) {
		if (path_ends_with(path, "/oauth/token"))
			return token_endpoint(wsi, pss, body, len);
		if (strcmp(path, "/sim/fault") == 0)
			return fault_endpoint(wsi, pss, body, len);
		if (strcmp(path, "/sim/reset") == 0) {
			records_reset(&g_sim->rec);
			log_info("records reset");
			return http_send(wsi, pss, 200, ok_body());
		}
		if (path_ends_with(path, "/responses"))
			return responses_endpoint(wsi, pss, body, len);
	} else {
		if (strcmp(path, "/sim/state") == 0)
			return http_send(wsi, pss, 200, sim_state_json(g_sim, NULL));
		if (strcmp(path, "/sim/health") == 0)
			return http_send(wsi, pss, 200, ok_body());
		if (path_ends_with(path, "/models"))
			return http_send(wsi, pss, 200, xstrdup("{\"models\":[]}"));
		if (path_ends_with(path, "/responses"))
			return http_send_error(wsi, pss, 426, "invalid_request_error",
			    "upgrade_required", "Use a WebSocket upgrade on this path.");
	}
	return http_send_error(wsi, pss, 404, "invalid_request_error", "not_found",
	    "No such endpoint.");
}

int
http_callback(struct lws *wsi, enum lws_callback_reasons reason,
    struct sim_pss *pss, void *in, size_t len)
{
	struct http_txn *t;
	char clen[32];
	long long cl;

	switch (reason) {
	case LWS_CALLBACK_HTTP:
		txn_free(pss);
		t = txn_new(pss, wsi, g_sim->o.max_body);
		req_path(wsi, t->path, sizeof(t->path));
		t->post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
		if (!t->post && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
			return http_send_error(wsi, pss, 405, "invalid_request_error",
			    "method_not_allowed", "Only GET and POST are served.");
		if (t->post) {
			/* Without a body lws never reports BODY_COMPLETION. */
			cl = -1;
			if (lws_hdr_copy(wsi, clen, sizeof(clen),
			    WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
				cl = atoll(clen);
			if (cl == 0)
				return route(wsi, pss, "", 0);
			return 0;
		}
		return route(wsi, pss, NULL, 0);
	case LWS_CALLBACK_HTTP_BODY:
		if (pss->http != NULL)
			sbuf_add(&pss->http->body, in, len);	/* overflow is noted */
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		t = pss->http;
		if (t == NULL)
			return -1;
		if (t->body.overflow) {
			char msg[96];

			snprintf(msg, sizeof(msg), "Request body larger than %zu bytes.",
			    g_sim->o.max_body);
			sbuf_free(&t->body);
			return http_send_error(wsi, pss, 413, "invalid_request_error",
			    "body_too_large", msg);
		}
		return route(wsi, pss, t->body.buf ? t->body.buf : "", t->body.len);
	case LWS_CALLBACK_HTTP_WRITEABLE:
		return on_writeable(wsi, pss);
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		txn_free(pss);
		return 0;
	default:
		return 0;
	}
}
