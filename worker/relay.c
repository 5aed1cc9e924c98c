/*
 * Turns: from MSG_REQ_START to exactly one final answer.
 *
 * The invariant the supervisor relies on: every MSG_REQ_START gets
 * exactly one MSG_REQ_DONE or MSG_REQ_ERROR, whatever happens (cancel,
 * shutdown, any failure), and before it at least one MSG_REQ_DECISION
 * unless the turn was refused before any dispatch.  Every final goes
 * through finish_error() or finish_done(), which free the request, so a
 * second final cannot happen.
 *
 * Attempts (reference-proxy-behaviour.md 1.12, 2.5, 2.6):
 *	REUSE   an idle pooled connection; if it fails before the first
 *	        output frame it was stale: RETRY_STALE, one one-shot attempt
 *	        (continuations fail closed instead: the response id dies
 *	        with the connection)
 *	NEW     a new pooled connection; if its handshake fails (refused,
 *	        reset, timed out, or a 5xx answer to the upgrade, e.g. from
 *	        a load balancer): BYPASS(factory_error), one one-shot
 *	        attempt; 401/402/403/429 (the account) and other statuses
 *	        are final
 *	BYPASS  a one-shot connection; its failure is final
 *	RETRY   the one extra one-shot attempt; its outcome is final
 *
 * A final error says whether another attempt may succeed (ERR_F_RETRYABLE:
 * every 5xx, refused or reset connections, timeouts, the connection
 * limit) and whether the account is at fault (ERR_F_ACCOUNT); the
 * supervisor retries a retryable one with REQ_F_FRESH.
 *
 * A request and its connection are joined in req_join() and cut in
 * req_cut() only; upstream.c reaches this file only through
 * relay_upconn_hooks.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "jsonutil.h"
#include "log.h"
#include "msgcodec.h"
#include "relay.h"
#include "upstream.h"
#include "wsclient.h"

enum attempt {
	ATT_NONE = 0,
	ATT_REUSE,
	ATT_NEW,
	ATT_BYPASS,
	ATT_RETRY,
};

struct early_frame {
	uint8_t		*data;
	size_t		 len;
	struct early_frame *next;
};

struct request {
	struct worker	*w;
	uint64_t	 rid;
	uint64_t	 key_hash;
	char		*entry;
	char		*account_id;
	char		*access_token;
	char		*session_id;
	uint32_t	 flags;
	uint32_t	 attempt;	/* the supervisor's, 1-based, for logs */
	uint64_t	 owner_conn;
	size_t		 nhdrs;
	char		**hdr_names;
	char		**hdr_values;
	uint8_t		*frame;
	size_t		 frame_len;
	struct wsclient	*client;	/* a client WebSocket's turn: output goes there */

	struct upconn	*uc;		/* current attempt */
	enum attempt	 att;
	uint64_t	 att_conn;	/* pooled connection of the attempt */
	bool		 started;	/* MSG_REQ_STARTED sent */

	struct early_frame *early, **early_tail;
	size_t		 nearly;
	size_t		 early_bytes;

	uint8_t		*limit_body;	/* connection-limit frame, kept for the error */
	size_t		 limit_len;

	lws_sorted_usec_list_t sul_start;
};

/*
 * The error-code table (reference-proxy-behaviour.md 1.7).  Exact,
 * lower-case matches only: soft_rate_limit_warning is not a 429.
 */
static const struct {
	const char	*code;
	int		 status;
} error_table[] = {
	{ "usage_limit_reached",		429 },
	{ "rate_limit_exceeded",		429 },
	{ "rate_limit_reached",			429 },
	{ "quota_exhausted",			402 },
	{ "payment_required",			402 },
	{ "unauthorized",			401 },
	{ "token_invalid",			401 },
	{ "token_expired",			401 },
	{ "account_deactivated",		401 },
	{ "forbidden",				403 },
	{ "account_banned",			403 },
	{ "banned",				403 },
	{ "previous_response_not_found",	400 },
	{ "websocket_connection_limit_reached",	503 },
	{ "server_is_overloaded",		503 },
	{ "server_error",			500 },
};

/* Frames that may come before the output without starting it. */
static const char *const early_types[] = {
	"response.created",
	"response.in_progress",
	"response.metadata",
	"codex.response.metadata",
	NULL,
};

static const char *const terminal_types[] = {
	"response.completed",
	"response.failed",
	"response.incomplete",
	"error",
	NULL,
};

static bool
in_list(const char *s, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

int
relay_error_status(const char *code)
{
	size_t i;

	if (code == NULL)
		return 0;
	for (i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
		if (strcmp(code, error_table[i].code) == 0)
			return error_table[i].status;
	return 0;
}

static uint64_t
get_u64_path(struct json_object *o, const char *path)
{
	struct json_object *v = json_get_path(o, path);
	int64_t n;

	if (v == NULL || !json_object_is_type(v, json_type_int))
		return 0;
	n = json_object_get_int64(v);
	return n > 0 ? (uint64_t)n : 0;
}

/*
 * An error frame whose code is not in the table but whose status is a 5xx
 * (a 502 from a gateway, an unknown overload code) is a server failure:
 * classified, so it fails the turn as retryable before anything is
 * relayed.  Other unknown codes are relayed as they are.
 */
static int
server_status(struct json_object *o)
{
	struct json_object *v = json_get_path(o, "status");
	int64_t n;

	if (v == NULL)
		v = json_get_path(o, "status_code");
	if (v == NULL || !json_object_is_type(v, json_type_int))
		return 0;
	n = json_object_get_int64(v);
	return n >= 500 && n <= 599 ? (int)n : 0;
}

/* What the type alone says. */
static void
classify_type(const char *type, struct frame_info *fi)
{
	if (strcmp(type, "codex.rate_limits") == 0)
		fi->cls = FC_RATE_LIMITS;
	else if (in_list(type, early_types))
		fi->cls = FC_EARLY;
	fi->terminal = in_list(type, terminal_types);
	fi->completed = strcmp(type, "response.completed") == 0;
}

void
relay_classify_parsed(const void *data, size_t len, struct frame_info *fi)
{
	struct json_object *o, *err = NULL, *v;
	const char *type, *code, *id;
	char jerr[128];
	size_t i;

	memset(fi, 0, sizeof(*fi));
	fi->cls = FC_OTHER;
	o = json_parse_buf(data, len, jerr, sizeof(jerr));
	if (o == NULL)
		return;		/* not JSON: relayed as it is, starts the response */
	if (!json_object_is_type(o, json_type_object) ||
	    (type = json_get_str(o, "type")) == NULL) {
		json_object_put(o);
		return;
	}

	classify_type(type, fi);

	if (strcmp(type, "error") == 0 || strcmp(type, "response.failed") == 0) {
		err = json_get_obj(o, "error");
		if (err == NULL && strcmp(type, "response.failed") == 0 &&
		    (v = json_get_path(o, "response.error")) != NULL &&
		    json_object_is_type(v, json_type_object))
			err = v;
	}
	if (err != NULL) {
		code = json_get_str(err, "code");
		if (code == NULL)
			code = json_get_str(err, "type");
		if (code != NULL) {
			for (i = 0; code[i] != '\0' && i < sizeof(fi->code) - 1; i++)
				fi->code[i] = (char)tolower((unsigned char)code[i]);
			fi->code[i] = '\0';
			if (code[i] != '\0')
				fi->code[0] = '\0';	/* too long to be one of ours */
		}
		fi->http_status = relay_error_status(fi->code);
		if (strcmp(fi->code, "websocket_connection_limit_reached") == 0)
			fi->cls = FC_CONN_LIMIT;
		else if (fi->http_status != 0)
			fi->cls = FC_ERROR;
	}
	if (fi->http_status == 0 && strcmp(type, "error") == 0 &&
	    (fi->http_status = server_status(o)) != 0)
		fi->cls = FC_ERROR;

	v = json_get_path(o, "response.id");
	id = (v != NULL && json_object_is_type(v, json_type_string)) ?
	    json_object_get_string(v) : json_get_str(o, "response_id");
	if (id != NULL && strlen(id) < sizeof(fi->response_id))
		strlcpy_safe(fi->response_id, id, sizeof(fi->response_id));
	fi->input_tokens = get_u64_path(o, "response.usage.input_tokens");
	fi->cached_tokens = get_u64_path(o,
	    "response.usage.input_tokens_details.cached_tokens");
	fi->output_tokens = get_u64_path(o, "response.usage.output_tokens");
	json_object_put(o);
}

/* A number as get_u64_path() reads it: a positive JSON integer, else 0.
 * false for one json-c might read otherwise (more than 18 digits). */
static bool
scanned_u64(const struct jdoc *d, int i, uint64_t *out)
{
	const char *p;
	size_t len, k;

	*out = 0;
	if (!jdoc_is(d, i, JT_NUMBER))
		return true;		/* absent, or not a number */
	p = jdoc_raw(d, i, &len);
	if (len > 18)
		return false;
	if (memchr(p, '.', len) || memchr(p, 'e', len) || memchr(p, 'E', len) ||
	    *p == '-')
		return true;		/* a double, or negative: 0 */
	for (k = 0; k < len; k++)
		*out = *out * 10 + (uint64_t)(p[k] - '0');
	return true;
}

/*
 * The frames around the output (response.created, .in_progress,
 * .completed, rate limits) echo the whole response, ~28 KB of
 * instructions included, and need four numbers and an id: read them from
 * the scanner's index (common/jscan.c) rather than a json-c tree.  false:
 * parse it after all (json-c, laxer, has the last word).
 */
static bool
classify_scanned(const char *type, const void *data, size_t len,
    struct frame_info *fi)
{
	struct jdoc d;
	char *id;
	int v;
	bool ok;

	if (jdoc_scan(&d, data, len, NULL, 0) == -1)
		return false;
	/* the type json_lead_type() read must be the one json-c keeps */
	ok = jdoc_is(&d, 0, JT_OBJECT) &&
	    jdoc_str_eq(&d, jdoc_member(&d, 0, "type"), type) &&
	    scanned_u64(&d, jdoc_path(&d, 0, "response.usage.input_tokens"),
	    &fi->input_tokens) &&
	    scanned_u64(&d, jdoc_path(&d, 0,
	    "response.usage.input_tokens_details.cached_tokens"), &fi->cached_tokens) &&
	    scanned_u64(&d, jdoc_path(&d, 0, "response.usage.output_tokens"),
	    &fi->output_tokens);
	if (ok) {
		v = jdoc_path(&d, 0, "response.id");
		if (!jdoc_is(&d, v, JT_STRING))
			v = jdoc_member(&d, 0, "response_id");
		if ((id = jdoc_strdup(&d, v)) != NULL && strlen(id) < sizeof(fi->response_id))
			strlcpy_safe(fi->response_id, id, sizeof(fi->response_id));
		free(id);
		classify_type(type, fi);
	} else {
		fi->input_tokens = fi->cached_tokens = fi->output_tokens = 0;
	}
	jdoc_free(&d);
	return ok;
}

void
relay_classify(const void *data, size_t len, struct frame_info *fi)
{
	char lead[64];

	memset(fi, 0, sizeof(*fi));
	fi->cls = FC_OTHER;
	if (json_lead_type(data, len, lead, sizeof(lead))) {
		/* Most frames are deltas: output that neither starts nor
		 * ends the response in any special way needs no look. */
		if (strcmp(lead, "codex.rate_limits") != 0 &&
		    strcmp(lead, "error") != 0 && !in_list(lead, early_types) &&
		    !in_list(lead, terminal_types))
			return;
		/* errors (rare, small) take the parse below */
		if (strcmp(lead, "error") != 0 &&
		    strcmp(lead, "response.failed") != 0 &&
		    classify_scanned(lead, data, len, fi))
			return;
	}
	relay_classify_parsed(data, len, fi);
}

int
relay_error_flags(int status)
{
	int flags = 0;

	if (status == 401 || status == 402 || status == 403 || status == 429)
		flags |= ERR_F_ACCOUNT;
	if (status >= 500 && status <= 599)
		flags |= ERR_F_RETRYABLE;
	return flags;
}

/* ---- requests --------------------------------------------------------- */

static const uint8_t *
turn_frame(const struct request *req, size_t *len)
{
	*len = req->frame_len;
	return req->frame;
}

/* The one place a request and a connection are joined... */
static void
req_join(struct request *req, struct upconn *uc)
{
	req->uc = uc;
	uc->req = req;
}

/* ...and the one place they are cut (the response-start timer goes too). */
static void
req_cut(struct request *req)
{
	struct upconn *uc = req->uc;

	lws_sul_cancel(&req->sul_start);
	req->uc = NULL;
	if (uc != NULL && uc->req == req) {
		uc->req = NULL;
		uc->send_pending = false;
	}
}

static void
early_clear(struct request *req)
{
	struct early_frame *f;

	while ((f = req->early) != NULL) {
		req->early = f->next;
		free(f->data);
		free(f);
	}
	req->early_tail = &req->early;
	req->nearly = 0;
	req->early_bytes = 0;
}

static void
req_free(struct request *req)
{
	struct worker *w = req->w;
	size_t i;

	idmap_del(&w->reqs, req->rid);
	req_cut(req);
	early_clear(req);
	free(req->entry);
	free(req->account_id);
	freezero_str(req->access_token);
	free(req->session_id);
	for (i = 0; i < req->nhdrs; i++) {
		free(req->hdr_names[i]);
		free(req->hdr_values[i]);
	}
	free(req->hdr_names);
	free(req->hdr_values);
	free(req->frame);
	free(req->limit_body);
	free(req);
	worker_check_done(w);
}

/* The request's log prefix: rid, the supervisor's attempt, first 4 of
 * the account, conversation. */
static void
req_prefix(const struct request *req, char *buf, size_t len)
{
	snprintf(buf, len, "rid=%08llx#%u acct=%.4s conv=%04llx",
	    (unsigned long long)req->rid, req->attempt, req->entry,
	    (unsigned long long)(req->key_hash >> 48));
}

static void
send_decision(struct request *req, int decision, int reason, uint64_t conn_id)
{
	struct worker *w = req->w;
	char pfx[96], what[64];
	struct msgbuf b;

	switch (decision) {
	case DEC_REUSE:
		snprintf(what, sizeof(what), "reuse:%016llx",
		    (unsigned long long)conn_id);
		break;
	case DEC_NEW:
		snprintf(what, sizeof(what), "new:%016llx",
		    (unsigned long long)conn_id);
		break;
	case DEC_RETRY_STALE:
		snprintf(what, sizeof(what), "retry-after-stale-reuse:%016llx",
		    (unsigned long long)conn_id);
		break;
	default:
		snprintf(what, sizeof(what), "bypass(%s)",
		    bypass_reason_name(reason));
		break;
	}
	req_prefix(req, pfx, sizeof(pfx));
	olog(LOG_LVL_INFO, pfx, "ws=%s", what);

	msgbuf_init(&b);
	m_req_decision_encode(&b, &(struct m_req_decision){
	    .decision = (uint8_t)decision, .reason = (uint8_t)reason,
	    .conn_id = conn_id });
	worker_send(w, MSG_REQ_DECISION, req->rid, &b, true);
	msgbuf_free(&b);
}

static void
finish_error(struct request *req, int status, int flags, const char *code,
    const void *body, size_t body_len)
{
	struct worker *w = req->w;
	struct msgbuf b;
	char pfx[96];

	req_prefix(req, pfx, sizeof(pfx));
	olog(LOG_LVL_INFO, pfx, "error %d %s", status, code);
	w->requests_failed++;
	msgbuf_init(&b);
	m_req_error_encode(&b, &(struct m_req_error){
	    .http_status = (uint32_t)status, .flags = (uint8_t)flags,
	    .code = code, .body = body, .body_len = body_len });
	worker_send(w, MSG_REQ_ERROR, req->rid, &b, true);
	msgbuf_free(&b);
	req_free(req);
}

/* An error answer with an OpenAI-style body we write ourselves. */
static void
finish_error_msg(struct request *req, int status, int flags, const char *code,
    const char *type, const char *message)
{
	char *body = json_error_body(message, type, code);

	finish_error(req, status, flags, code, body, strlen(body));
	free(body);
}

static void
finish_done(struct request *req, int outcome, const char *message,
    const struct frame_info *fi, uint64_t conn_id)
{
	struct worker *w = req->w;
	struct msgbuf b;
	char pfx[96];

	req_prefix(req, pfx, sizeof(pfx));
	if (outcome == DONE_STREAM_ERROR) {
		w->stream_errors++;
		olog(LOG_LVL_INFO, pfx, "stream error: %s", message);
	} else
		olog(LOG_LVL_DEBUG, pfx, "done %s", done_outcome_name(outcome));
	msgbuf_init(&b);
	m_req_done_encode(&b, &(struct m_req_done){
	    .outcome = (uint8_t)outcome, .message = message,
	    .response_id = fi != NULL ? fi->response_id : "",
	    .input_tokens = fi != NULL ? fi->input_tokens : 0,
	    .cached_tokens = fi != NULL ? fi->cached_tokens : 0,
	    .output_tokens = fi != NULL ? fi->output_tokens : 0,
	    .conn_id = conn_id });
	worker_send(w, MSG_REQ_DONE, req->rid, &b, true);
	msgbuf_free(&b);
	if (req->client != NULL)
		wsclient_turn_done(req->client, outcome, conn_id, message);
	req_free(req);
}

static void
ident_of(const struct request *req, struct hs_ident *id)
{
	id->access_token = req->access_token;
	id->account_id = req->account_id;
	id->session_id = req->session_id;
	id->nheaders = req->nhdrs;
	id->names = req->hdr_names;
	id->values = req->hdr_values;
}

static void
attempt_reset(struct request *req)
{
	req_cut(req);
	req->att_conn = 0;
	early_clear(req);
	free(req->limit_body);
	req->limit_body = NULL;
	req->limit_len = 0;
}

static void
open_oneshot(struct request *req, enum attempt att)
{
	struct worker *w = req->w;
	struct pool_conn *pc;
	struct hs_ident id;

	attempt_reset(req);
	req->att = att;
	pc = wpool_oneshot(&w->pool, req->rid, req->key_hash, req->entry,
	    now_mono_usec());
	ident_of(req, &id);
	req_join(req, upconn_open(w, pc, &id));
}

static void
dispatch(struct request *req)
{
	struct worker *w = req->w;
	struct pool_decision d;
	struct pool_req pr;
	struct hs_ident id;

	memset(&pr, 0, sizeof(pr));
	pr.rid = req->rid;
	pr.key_hash = req->key_hash;
	pr.entry = req->entry;
	pr.flags = req->flags;
	pr.owner_conn = req->owner_conn;
	wpool_decide(&w->pool, &pr, now_mono_usec(), &d);

	switch (d.verdict) {
	case PV_ERROR:
		if (req->client != NULL) {
			/* the client's previous_response_id is not on a
			 * connection it may use: it reconnects and resends */
			wsclient_reconnect(req->client, "previous_response_id is not "
			    "on this session's upstream connection; reconnect");
			finish_error_msg(req, 409, ERR_F_CLIENT_CLOSED, "ws_reconnect",
			    "invalid_request_error", d.message);
			return;
		}
		finish_error_msg(req, d.http_status, 0, d.code,
		    "invalid_request_error", d.message);
		return;
	case PV_REUSE:
		send_decision(req, DEC_REUSE, BYP_NONE, d.conn->id);
		req->att = ATT_REUSE;
		req->att_conn = d.conn->id;
		req_join(req, d.conn->io);
		upconn_send_turn(req->uc);
		return;
	case PV_NEW:
		send_decision(req, DEC_NEW, BYP_NONE, d.conn->id);
		req->att = ATT_NEW;
		req->att_conn = d.conn->id;
		ident_of(req, &id);
		req_join(req, upconn_open(w, d.conn, &id));
		return;
	case PV_BYPASS:
		send_decision(req, DEC_BYPASS, d.reason, 0);
		open_oneshot(req, ATT_BYPASS);
		return;
	}
}

/* Parse MSG_REQ_START into a request; NULL (and *why, *status) when
 * malformed or its client WebSocket is gone. */
static struct request *
parse_start(struct worker *w, const struct msg *m, const char **why, int *status)
{
	struct m_req_start *p = xcalloc(1, sizeof(*p));
	struct wsclient *client = NULL;
	struct request *req;
	uint64_t owner = 0;
	bool continues = false;
	uint8_t *frame = NULL;
	size_t frame_len = 0;
	uint32_t i;

	*status = 500;
	if (m_req_start_decode(m, p) == -1) {
		*why = "malformed MSG_REQ_START";
		free(p);
		return NULL;
	}
	if (p->wsid != 0) {
		if ((client = wsclient_find(w, p->wsid)) == NULL) {
			*why = "the client WebSocket is gone";
			*status = 499;
			free(p);
			return NULL;
		}
		frame = (uint8_t *)wsclient_take_frame(client, m->hdr.rid,
		    p->session_id, p->installation_id, p->model, &frame_len,
		    &continues, &owner);
		if (frame == NULL) {
			/* closing, or its turn already ended */
			*why = "the client WebSocket has no turn to start";
			*status = 499;
			free(p);
			return NULL;
		}
	} else if (p->frame_len == 0) {
		*why = "empty response.create frame";
		free(p);
		return NULL;
	}
	req = xcalloc(1, sizeof(*req));
	req->w = w;
	req->rid = m->hdr.rid;
	req->early_tail = &req->early;
	req->key_hash = p->key_hash;
	req->entry = xstrdup(p->entry);
	req->account_id = xstrdup(p->account_id);
	req->access_token = xstrdup(p->access_token);
	req->session_id = xstrdup(p->session_id);
	req->flags = p->flags;
	req->attempt = p->attempt;
	req->owner_conn = p->owner_conn;
	if (p->nheaders > 0) {
		req->hdr_names = xcalloc(p->nheaders, sizeof(char *));
		req->hdr_values = xcalloc(p->nheaders, sizeof(char *));
		for (i = 0; i < p->nheaders; i++) {
			req->hdr_names[i] = xstrdup(p->headers[i].name);
			req->hdr_values[i] = xstrdup(p->headers[i].value);
		}
		req->nhdrs = p->nheaders;
	}
	if (client != NULL) {
		req->client = client;
		req->frame = frame;
		req->frame_len = frame_len;
		if (continues) {
			/* the client continues natively: only the connection that
			 * holds its last response can serve it */
			req->flags |= REQ_F_CONTINUE;
			req->owner_conn = owner;
		}
	} else {
		req->frame = xmalloc(p->frame_len);
		memcpy(req->frame, p->frame, p->frame_len);
		req->frame_len = p->frame_len;
	}
	free(p);
	return req;
}

/* Answer a turn we could not even build a request for. */
static void
refuse_rid(struct worker *w, uint64_t rid, int status, int flags,
    const char *code, const char *message)
{
	char *body = json_error_body(message, "server_error", code);
	struct msgbuf b;

	log_warnx("rid=%08llx refused: %s", (unsigned long long)rid, message);
	w->requests_failed++;
	msgbuf_init(&b);
	m_req_error_encode(&b, &(struct m_req_error){
	    .http_status = (uint32_t)status, .flags = (uint8_t)flags,
	    .code = code, .body = body, .body_len = strlen(body) });
	worker_send(w, MSG_REQ_ERROR, rid, &b, true);
	msgbuf_free(&b);
	free(body);
}

void
relay_req_start(struct worker *w, const struct msg *m)
{
	struct request *req;
	const char *why = NULL;
	int status;

	w->requests_total++;
	if (idmap_get(&w->reqs, m->hdr.rid) != NULL) {
		/* answering would give the running turn a second final */
		log_warnx("rid=%08llx: duplicate MSG_REQ_START ignored",
		    (unsigned long long)m->hdr.rid);
		return;
	}
	if (w->shutting_down) {
		refuse_rid(w, m->hdr.rid, 503, ERR_F_RETRYABLE, "shutting_down",
		    "the worker is shutting down");
		return;
	}
	if (!w->configured) {
		refuse_rid(w, m->hdr.rid, 503, ERR_F_RETRYABLE,
		    "worker_not_ready", "the worker has no configuration yet");
		return;
	}
	if ((req = parse_start(w, m, &why, &status)) == NULL) {
		refuse_rid(w, m->hdr.rid, status, 0, status == 499 ? "client_gone" :
		    "worker_protocol_error", why);
		return;
	}
	idmap_put(&w->reqs, req->rid, req);
	dispatch(req);
}

/* ---- events from the connection --------------------------------------- */

static void
start_timeout_cb(lws_sorted_usec_list_t *sul)
{
	struct request *req = lws_container_of(sul, struct request, sul_start);

	if (req->started || req->uc == NULL)
		return;
	upconn_fail(req->uc, UF_START_TIMEOUT, "no response within %lld ms",
	    (long long)(req->w->cfg.start_timeout / USEC_PER_MSEC));
}

static void
turn_armed(struct request *req)
{
	struct worker *w = req->w;

	if (w->cfg.start_timeout > 0 && !req->started)
		lws_sul_schedule(w->ctx, 0, &req->sul_start, start_timeout_cb,
		    w->cfg.start_timeout);
}

static int
send_event(struct request *req, const void *data, size_t len)
{
	struct worker *w = req->w;
	struct msgbuf b;
	int rc;

	if (req->client != NULL)
		/* frames of a client WebSocket never cross the channel */
		return wsclient_send(req->client, data, len) == 0 ? MSGCHAN_OK :
		    MSGCHAN_FULL;
	msgbuf_init(&b);
	m_req_event_encode(&b, &(struct m_req_event){ .frame = data,
	    .frame_len = len });
	rc = worker_send(w, MSG_REQ_EVENT, req->rid, &b, false);
	msgbuf_free(&b);
	if (rc == MSGCHAN_OK) {
		w->frames_relayed++;
		w->bytes_relayed += len;
	}
	return rc;
}

/* The first output frame: commit, then flush the early frames in order. */
static int
start_response(struct request *req)
{
	struct worker *w = req->w;
	struct early_frame *f;
	int rc;

	lws_sul_cancel(&req->sul_start);
	req->started = true;
	rc = worker_send(w, MSG_REQ_STARTED, req->rid, NULL, false);
	for (f = req->early; f != NULL && rc == MSGCHAN_OK; f = f->next)
		rc = send_event(req, f->data, f->len);
	early_clear(req);
	return rc;
}

static void
classified_error(struct request *req, struct upconn *uc,
    const struct frame_info *fi, const uint8_t *data, size_t len)
{
	struct worker *w = req->w;
	struct pool_conn *pc = uc->pc;
	int status = fi->http_status;

	req_cut(req);
	finish_error(req, status, relay_error_flags(status),
	    fi->code[0] != '\0' ? fi->code : "upstream_error", data, len);
	/* the connection itself is fine: back to idle (one-shots close) */
	wpool_turn_done(&w->pool, pc, now_mono_usec());
}

static void
on_message(struct request *req, struct upconn *uc, const uint8_t *data,
    size_t len)
{
	struct worker *w = req->w;
	struct pool_conn *pc = uc->pc;
	struct frame_info fi;
	struct early_frame *f;
	uint64_t conn_id;
	struct msgbuf b;

	relay_classify(data, len, &fi);

	if (fi.cls == FC_RATE_LIMITS) {
		msgbuf_init(&b);
		m_rate_limits_encode(&b, &(struct m_rate_limits){
		    .entry = req->entry, .frame = data, .frame_len = len });
		worker_send(w, MSG_RATE_LIMITS, req->rid, &b, false);
		msgbuf_free(&b);
		return;
	}

	if (!req->started) {
		if (fi.cls == FC_EARLY && req->nearly < RELAY_EARLY_MAX_FRAMES &&
		    req->early_bytes + len <= RELAY_EARLY_MAX_BYTES) {
			f = xcalloc(1, sizeof(*f));
			f->data = xmalloc(len ? len : 1);
			memcpy(f->data, data, len);
			f->len = len;
			*req->early_tail = f;
			req->early_tail = &f->next;
			req->nearly++;
			req->early_bytes += len;
			return;
		}
		if (fi.cls == FC_ERROR) {
			classified_error(req, uc, &fi, data, len);
			return;
		}
		if (fi.cls == FC_CONN_LIMIT) {
			/* kill the connection; attempt_failed decides */
			req->limit_body = xmalloc(len ? len : 1);
			memcpy(req->limit_body, data, len);
			req->limit_len = len;
			upconn_fail(uc, UF_CONN_LIMIT,
			    "websocket_connection_limit_reached");
			return;
		}
		if (start_response(req) != MSGCHAN_OK) {
			upconn_fail(uc, UF_KILLED, req->client != NULL ?
			    "client output queue full" : "worker output queue full");
			return;
		}
	}

	if (send_event(req, data, len) != MSGCHAN_OK) {
		upconn_fail(uc, UF_KILLED, req->client != NULL ?
		    "client output queue full" : "worker output queue full");
		return;
	}
	if (!fi.terminal)
		return;

	/* a completed response on a connection that stays in the pool is
	 * owned by it: the next turn may continue it there */
	conn_id = (fi.completed && pc->pooled && pc->in_pool &&
	    !pc->pending_close) ? pc->id : 0;
	req_cut(req);
	finish_done(req, fi.completed ? DONE_COMPLETED : DONE_FAILED, "", &fi,
	    conn_id);
	wpool_turn_done(&w->pool, pc, now_mono_usec());
}

static void
finish_http_status(struct request *req, int status)
{
	char msg[160];
	const char *code;

	if (status < 400 || status > 599) {
		snprintf(msg, sizeof(msg), "the upstream answered the WebSocket "
		    "upgrade with an unexpected HTTP %d", status);
		finish_error_msg(req, 502, ERR_F_RETRYABLE,
		    "upstream_unexpected_status", "upstream_error", msg);
		return;
	}
	switch (status) {
	case 401: code = "unauthorized"; break;
	case 402: code = "payment_required"; break;
	case 403: code = "forbidden"; break;
	case 429: code = "rate_limit_exceeded"; break;
	default: code = status >= 500 ? "upstream_unavailable" :
		    "upstream_http_error"; break;
	}
	snprintf(msg, sizeof(msg), "the upstream refused the WebSocket "
	    "upgrade with HTTP %d", status);
	finish_error_msg(req, status, relay_error_flags(status), code,
	    "upstream_error", msg);
}

static void
finish_unavailable(struct request *req, const struct upconn *uc)
{
	char msg[400], what[256];

	upconn_describe(uc, what, sizeof(what));
	snprintf(msg, sizeof(msg), "the upstream connection failed before "
	    "the response started: %s", what);
	finish_error_msg(req, 502, ERR_F_RETRYABLE, "upstream_unavailable",
	    "upstream_error", msg);
}

static void
finish_conn_limit(struct request *req)
{
	if (req->limit_body != NULL) {
		uint8_t *body = req->limit_body;
		size_t len = req->limit_len;

		req->limit_body = NULL;
		finish_error(req, 503, ERR_F_RETRYABLE,
		    "websocket_connection_limit_reached", body, len);
		free(body);
		return;
	}
	finish_error_msg(req, 503, ERR_F_RETRYABLE,
	    "websocket_connection_limit_reached", "upstream_error",
	    "the upstream connection limit was reached");
}

/* A handshake that failed for a reason a one-shot may not share. */
static bool
factory_error(const struct upconn *uc)
{
	if (uc->established)
		return false;
	switch (uc->fail) {
	case UF_CONNECT:
	case UF_HS_TIMEOUT:
	case UF_CLOSED:
		return true;
	case UF_HTTP_STATUS:
		return uc->hs_status >= 500 && uc->hs_status <= 599;
	default:
		return false;
	}
}

static void
attempt_failed(struct request *req, struct upconn *uc)
{
	struct worker *w = req->w;
	char msg[512], what[256];

	req_cut(req);

	upconn_describe(uc, what, sizeof(what));
	if (req->started) {
		/* bytes reached the client: never replay, report */
		if (uc->fail == UF_CLOSED)
			snprintf(msg, sizeof(msg), "upstream closed before "
			    "response.completed: %s", uc->why);
		else if (uc->fail == UF_KILLED)
			snprintf(msg, sizeof(msg), "%s", uc->why);
		else
			snprintf(msg, sizeof(msg), "upstream connection lost "
			    "before response.completed: %s", what);
		finish_done(req, DONE_STREAM_ERROR, msg, NULL, 0);
		return;
	}

	switch (req->att) {
	case ATT_REUSE:
		if (req->flags & REQ_F_CONTINUE) {
			if (uc->fail == UF_CONN_LIMIT) {
				finish_conn_limit(req);
				return;
			}
			snprintf(msg, sizeof(msg), "the upstream connection that "
			    "owns previous_response_id was lost before the "
			    "response started (%s); resend the full input "
			    "without previous_response_id", what);
			finish_error_msg(req, 502, 0, "upstream_connection_lost",
			    "upstream_error", msg);
			return;
		}
		/* a stale pooled connection: one more try, on a fresh one */
		w->pool.st.retry_stale++;
		send_decision(req, DEC_RETRY_STALE, BYP_NONE, req->att_conn);
		open_oneshot(req, ATT_RETRY);
		return;

	case ATT_NEW:
		if (factory_error(uc)) {
			w->pool.st.bypass[BYP_FACTORY_ERROR]++;
			send_decision(req, DEC_BYPASS, BYP_FACTORY_ERROR, 0);
			open_oneshot(req, ATT_RETRY);
			return;
		}
		break;

	case ATT_BYPASS:
	case ATT_RETRY:
	case ATT_NONE:
		break;
	}
	if (uc->fail == UF_HTTP_STATUS)
		finish_http_status(req, uc->hs_status);
	else if (uc->fail == UF_CONN_LIMIT)
		finish_conn_limit(req);
	else
		finish_unavailable(req, uc);
}

/* ---- supervisor-driven endings ---------------------------------------- */

/* Stop the turn's connection: a pooled one is evicted, because frames of
 * the abandoned response could otherwise reach the next turn. */
static void
abandon_conn(struct request *req, const char *reason)
{
	struct worker *w = req->w;
	struct upconn *uc = req->uc;

	req_cut(req);
	if (uc == NULL)
		return;
	if (uc->pc != NULL)
		wpool_close(&w->pool, uc->pc, reason);
}

void
relay_req_cancel(struct worker *w, uint64_t rid)
{
	struct request *req = idmap_get(&w->reqs, rid);

	if (req == NULL)
		return;		/* already answered */
	abandon_conn(req, "cancelled");
	if (req->started)
		finish_done(req, DONE_STREAM_ERROR, "cancelled: the client "
		    "went away", NULL, 0);
	else
		finish_error_msg(req, 499, 0, "client_cancelled",
		    "invalid_request_error", "cancelled: the client went away");
}

static size_t
collect_reqs(struct worker *w, struct request ***out)
{
	struct request **v, *req;
	size_t cur = 0, n = 0;

	*out = NULL;
	if (w->reqs.count == 0)
		return 0;
	v = xcalloc(w->reqs.count, sizeof(*v));
	while ((req = idmap_next(&w->reqs, &cur)) != NULL && n < w->reqs.count)
		v[n++] = req;
	*out = v;
	return n;
}

void
relay_fail_all(struct worker *w, const char *why)
{
	struct request **v;
	size_t i, n;

	n = collect_reqs(w, &v);
	for (i = 0; i < n; i++) {
		struct request *req = v[i];

		abandon_conn(req, why);
		if (req->started)
			finish_done(req, DONE_STREAM_ERROR, why, NULL, 0);
		else
			finish_error_msg(req, 503, ERR_F_RETRYABLE,
			    "shutting_down", "server_error", why);
	}
	free(v);
}

void
relay_free_all(struct worker *w)
{
	struct request **v;
	size_t i, n;

	n = collect_reqs(w, &v);
	for (i = 0; i < n; i++)
		req_free(v[i]);
	free(v);
}

const struct upconn_hooks relay_upconn_hooks = {
	.turn_armed = turn_armed,
	.message = on_message,
	.attempt_failed = attempt_failed,
	.frame = turn_frame,
};
