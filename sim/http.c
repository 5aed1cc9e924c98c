/*
 * HTTP endpoints on the simulator's listener: the OAuth token endpoint,
 * the model list, and the /sim/ control and introspection endpoints.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonutil.h"
#include "log.h"
#include "lws_glue.h"
#include "prompt.h"

#define HTTP_CHUNK	(64 * 1024)

struct http_txn {
	char		 path[256];
	int		 post;
	struct sbuf	 body;
	char		*resp;
	size_t		 resp_len;
	size_t		 resp_off;
};

static void
txn_free(struct sim_pss *pss)
{
	struct http_txn *t = pss->http;

	if (t == NULL)
		return;
	sbuf_free(&t->body);
	freezero_str(t->resp);
	free(t);
	pss->http = NULL;
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

/* Starts a response: headers now, the body from HTTP_WRITEABLE.  Takes
 * ownership of body. */
static int
http_send(struct lws *wsi, struct sim_pss *pss, int status, char *body)
{
	unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start;
	struct http_txn *t;
	size_t blen = strlen(body);

	if (pss->http == NULL) {
		pss->http = xcalloc(1, sizeof(*pss->http));
		sbuf_init(&pss->http->body, 0);
	}
	t = pss->http;
	t->resp = body;
	t->resp_len = blen;
	t->resp_off = 0;
	if (lws_add_http_common_headers(wsi, (unsigned int)status,
	    "application/json", blen, &p, hdr + sizeof(hdr)) ||
	    lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
	    (const unsigned char *)"no-store", 8, &p, hdr + sizeof(hdr)) ||
	    lws_finalize_write_http_header(wsi, start, &p, hdr + sizeof(hdr)))
		return -1;
	lws_callback_on_writable(wsi);
	return 0;
}

static int
http_send_error(struct lws *wsi, struct sim_pss *pss, int status,
    const char *type, const char *code, const char *message)
{
	return http_send(wsi, pss, status, json_error_body(message, type, code));
}

static int
on_writeable(struct lws *wsi, struct sim_pss *pss)
{
	struct http_txn *t = pss->http;
	unsigned char *buf;
	size_t n;
	int final, w;

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
			return http_send_error(wsi, pss, 501, "invalid_request_error",
			    "not_implemented",
			    "The simulator serves Responses over WebSocket only.");
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
		t = pss->http = xcalloc(1, sizeof(*t));
		sbuf_init(&t->body, g_sim->o.max_body);
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
