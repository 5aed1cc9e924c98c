/*
 * Client WebSockets on /v1/responses (and /responses,
 * /backend-api/codex/responses): the Codex CLI's own transport.
 *
 * The supervisor checks the upgrade like any request (API key, limits),
 * finds the conversation in its headers, picks the account, and hands the
 * socket with the upgrade request to the worker that holds the
 * conversation's pooled upstream connection (MSG_WS_ADOPT); the worker
 * answers the upgrade and relays frames both ways (worker/wsclient.c).
 * Frames never pass through here.  Each response.create the client sends
 * comes back as MSG_WS_TURN and runs as a turn of the lifecycle (turn.h)
 * with this front-end: accounts, token refresh, retries, the decision log
 * and the counters treat it like an HTTP turn; only its output goes
 * straight from the worker to the client.
 *
 * A session is pinned to its account and worker.  When a turn would have
 * to move to another account, the session closes with 1012 instead, so
 * the client reconnects (and lands on the new account); the error reaches
 * the client only when no other account could serve it.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "apikeys.h"
#include "front_ws.h"
#include "hash.h"
#include "jsonutil.h"
#include "log.h"
#include "msgcodec.h"
#include "supervisor.h"
#include "turn.h"

/* The upgrade request we rebuild for the worker's HTTP parser, and bytes
 * the client sent after it, are bounded. */
#define WS_HEAD_MAX	(16 * 1024)

/* Client headers that travel to the upstream handshake unchanged (the
 * list front_responses.c forwards for HTTP). */
static const char *forwarded_headers[] = {
	"x-codex-turn-metadata",
	"x-codex-beta-features",
	"x-openai-subagent",
	"x-codex-parent-thread-id",
	"x-responsesapi-include-timing-metrics",
	NULL
};

static struct idmap sessions;	/* wsid -> struct wsession */
static int nsessions;

void
ws_init(void)
{
	idmap_init(&sessions);
}

int
ws_session_count(void)
{
	return nsessions;
}

int
clients_in_use(void)
{
	return sv->inflight + nsessions;
}

static void
session_free(struct wsession *s)
{
	idmap_del(&sessions, s->wsid);
	nsessions--;
	convlog_ws_client(&sv->convs, s->conv_hash, s->entry, s->slot, -1, now_mono_usec());
	free(s->conv);
	free(s->fwd);
	free(s);
}

/* Freed once the socket is gone and its turn, if any, is over. */
static void
session_release(struct wsession *s)
{
	if (s->gone && s->turn == NULL)
		session_free(s);
}

/* ---- the turn's front-end ------------------------------------------ */

static void
ws_reply(struct turn *t, uint32_t close_code, const char *reason,
    const char *frame, size_t len)
{
	struct wsession *s = t->ws;
	struct msgbuf b;

	if (s == NULL || s->gone)
		return;
	msgbuf_init(&b);
	m_ws_reply_encode(&b, &(struct m_ws_reply){ .turn_rid = t->rid,
	    .close_code = close_code, .close_reason = reason, .frame = frame,
	    .frame_len = len });
	workers_send(s->slot, MSG_WS_REPLY, s->wsid, &b);
	msgbuf_free(&b);
}

static void
ws_start(struct turn *t)
{
	(void)t;	/* the worker streams to the client itself */
}

static void
ws_event(struct turn *t, const char *type, const char *frame, size_t len)
{
	(void)t; (void)type; (void)frame; (void)len;	/* never: no MSG_REQ_EVENT */
}

static void
ws_finish(struct turn *t, int outcome, const char *code, const char *message)
{
	/* The worker ended the stream (an error event and 1011 when it broke);
	 * a stream the supervisor ends (a dead worker) lost its socket too. */
	(void)t; (void)outcome; (void)code; (void)message;
}

/*
 * The error event for a turn that failed before output.  An upstream
 * error frame goes as it came; anything else is wrapped with a status,
 * without which the Codex CLI ignores an error event.
 */
static char *
error_frame(const struct turn_error *e, size_t *len)
{
	struct json_object *o = NULL, *f, *err;
	const char *text;
	char jerr[64], *out;

	if (e->body != NULL && e->len > 0)
		o = json_parse_buf(e->body, e->len, jerr, sizeof(jerr));
	if (o != NULL && json_object_is_type(o, json_type_object) &&
	    json_get_str(o, "type") != NULL &&
	    strcmp(json_get_str(o, "type"), "error") == 0 &&
	    json_object_object_get_ex(o, "status", NULL)) {
		text = json_plain(o, len);
		out = xstrdup(text);
		json_object_put(o);
		return out;
	}
	f = json_object_new_object();
	json_object_object_add(f, "type", json_object_new_string("error"));
	json_object_object_add(f, "status", json_object_new_int(e->status));
	if (o != NULL && (err = json_get_obj(o, "error")) != NULL)
		json_object_object_add(f, "error", json_object_get(err));
	else {
		err = json_object_new_object();
		json_object_object_add(err, "type", json_object_new_string(
		    e->type ? e->type : e->status >= 500 ? "server_error" :
		    "invalid_request_error"));
		json_object_object_add(err, "code", json_object_new_string(
		    e->code ? e->code : "error"));
		json_object_object_add(err, "message", json_object_new_string(
		    e->message ? e->message : "the request failed"));
		json_object_object_add(f, "error", err);
	}
	json_object_put(o);
	text = json_plain(f, len);
	out = xstrdup(text);
	json_object_put(f);
	return out;
}

static void
ws_fail(struct turn *t, const struct turn_error *e)
{
	char *frame;
	size_t len;

	if (e->client_closed)
		return;		/* the worker is closing the socket already */
	frame = error_frame(e, &len);
	ws_reply(t, 0, "", frame, len);
	free(frame);
}

static void
ws_reconnect(struct turn *t, const char *why)
{
	sv->stats.ws_reconnects++;
	ws_reply(t, 1012, why, NULL, 0);
}

static void
ws_turn_free(struct turn *t)
{
	struct wsession *s = t->ws;

	if (s == NULL)
		return;
	if (s->turn == t)
		s->turn = NULL;
	t->ws = NULL;
	session_release(s);
}

static const struct turn_ops ws_ops = {
	.route = "responses-ws",
	.start = ws_start,
	.event = ws_event,
	.finish = ws_finish,
	.fail = ws_fail,
	.reconnect = ws_reconnect,
	.free = ws_turn_free,
};

/* ---- the upgrade ---------------------------------------------------- */

static bool
header_has_token(const char *v, const char *token)
{
	size_t n = strlen(token);

	while (v != NULL && *v != '\0') {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		if (strncasecmp(v, token, n) == 0 &&
		    (v[n] == '\0' || v[n] == ',' || v[n] == ' ' || v[n] == '\t'))
			return true;
		v = strchr(v, ',');
	}
	return false;
}

bool
ws_is_upgrade(struct evhttp_request *http)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);

	return header_has_token(evhttp_find_header(h, "Upgrade"), "websocket");
}

static void
refuse(struct evhttp_request *http, int status, const char *type, const char *code,
    const char *msg, int retry_after)
{
	char *body = json_error_body(msg, type, code);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(http);
	char ra[24];

	if (retry_after > 0) {
		snprintf(ra, sizeof(ra), "%d", retry_after);
		evhttp_add_header(oh, "Retry-After", ra);
	}
	http_send_json(http, status, body);
	free(body);
}

/* A header value fit to copy into a request head: no CR or LF. */
static bool
header_clean(const char *v)
{
	return v != NULL && strpbrk(v, "\r\n") == NULL && strlen(v) < 1024;
}

/*
 * The request the worker's parser sees: only what the upgrade needs
 * (identity and keys stay here; the account's own go upstream).
 */
static void
build_head(struct evbuffer *out, struct evhttp_request *http, const char *key)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	const char *host = evhttp_find_header(h, "Host");

	evbuffer_add_printf(out, "GET /v1/responses HTTP/1.1\r\nHost: %s\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
	    "Sec-WebSocket-Version: 13\r\n\r\n",
	    header_clean(host) ? host : "codexpool", key);
}

void
ws_upgrade(struct evhttp_request *http)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	const char *key = evhttp_find_header(h, "Sec-WebSocket-Key");
	const char *ver = evhttp_find_header(h, "Sec-WebSocket-Version");
	const struct apikey *k = apikey_current();
	struct account *acct;
	struct wsession *s;
	struct evbuffer *head;
	struct msgbuf b;
	char *conv = NULL, keybuf[600], err[256], msg[320];
	const char *source, *v;
	uint64_t key_hash, wsid;
	int64_t unlock;
	bool moved;
	int slot, fd, i, rc;
	size_t used = 0;

	if (!sv->cfg.client_websockets) {
		evhttp_add_header(evhttp_request_get_output_headers(http), "Upgrade", "");
		refuse(http, 426, "invalid_request_error", "websockets_disabled",
		    "client WebSockets are off here (client_websockets = no): "
		    "POST /v1/responses instead", 0);
		return;
	}
	if (ver == NULL || strcmp(ver, "13") != 0) {
		evhttp_add_header(evhttp_request_get_output_headers(http),
		    "Sec-WebSocket-Version", "13");
		refuse(http, 426, "invalid_request_error", "unsupported_websocket_version",
		    "only WebSocket version 13 is supported", 0);
		return;
	}
	if (key == NULL || strlen(key) != 24 || !header_clean(key) ||
	    !header_has_token(evhttp_find_header(h, "Connection"), "upgrade")) {
		refuse(http, 400, "invalid_request_error", "invalid_upgrade",
		    "a WebSocket upgrade needs Connection: Upgrade and a 24-character "
		    "Sec-WebSocket-Key", 0);
		return;
	}
	if (sv->shutting_down) {
		refuse(http, 503, "server_error", "shutting_down",
		    "codexpool is shutting down", 1);
		return;
	}
	if (clients_in_use() >= sv->cfg.max_clients) {
		snprintf(msg, sizeof(msg), "codexpool is serving %d turns and client "
		    "WebSockets already (max_clients)", clients_in_use());
		refuse(http, 503, "server_error", "too_many_requests", msg, 1);
		return;
	}

	wsid = sv->next_rid++;
	if ((source = conversation_of_headers(http, &conv)) == NULL) {
		/* no identity: the session is its own conversation */
		snprintf(keybuf, sizeof(keybuf), "ws_%016llx", (unsigned long long)wsid);
		conv = xstrdup(keybuf);
		source = "websocket session";
	}
	if ((acct = accounts_pick(conv, NULL, 0, &moved)) == NULL) {
		accounts_why_none(err, sizeof(err), &unlock);
		refuse(http, 503, "server_error", "no_account", err, unlock > 0 ?
		    (int)(unlock - now_wall_usec() / USEC_PER_SEC) : 0);
		free(conv);
		return;
	}
	snprintf(keybuf, sizeof(keybuf), "%s:%s", acct->entry, conv);
	if ((key_hash = hash64_str(keybuf)) == 0)
		key_hash = 1;
	slot = turn_slot_for_key(key_hash);
	if (sv->slots[slot].chan == NULL || sv->slots[slot].state != SLOT_UP) {
		refuse(http, 503, "server_error", "worker_unavailable",
		    "the worker for this conversation is restarting; retry", 1);
		free(conv);
		return;
	}

	head = evbuffer_new();
	build_head(head, http, key);
	fd = http_steal_socket(http, head, WS_HEAD_MAX);
	if (fd < 0) {
		/* answered (or dropped) by http.c */
		evbuffer_free(head);
		free(conv);
		return;
	}
	msgbuf_init(&b);
	m_ws_adopt_encode(&b, &(struct m_ws_adopt){ .key_hash = key_hash,
	    .entry = acct->entry,
	    .max_message = sv->cfg.max_body_size > UINT32_MAX ? UINT32_MAX :
		(uint32_t)sv->cfg.max_body_size,
	    .head = evbuffer_pullup(head, -1), .head_len = evbuffer_get_length(head) });
	rc = workers_send_fd(slot, MSG_WS_ADOPT, wsid, &b, fd);
	msgbuf_free(&b);
	evbuffer_free(head);
	close(fd);	/* the worker has its own copy */
	if (rc != MSGCHAN_OK) {
		log_warnx("ws=%08llx: worker %d cannot take the client socket",
		    (unsigned long long)wsid, slot);
		free(conv);
		return;
	}

	s = xcalloc(1, sizeof(*s));
	s->wsid = wsid;
	s->slot = slot;
	strlcpy_safe(s->entry, acct->entry, sizeof(s->entry));
	s->conv = conv;
	s->conv_source = source;
	s->conv_hash = hash64_str(conv);
	s->key_hash = key_hash;
	if (k != NULL)
		strlcpy_safe(s->key_label, k->label, sizeof(s->key_label));
	for (i = 0; forwarded_headers[i]; i++) {
		if ((v = evhttp_find_header(h, forwarded_headers[i])) == NULL ||
		    !header_clean(v))
			continue;
		size_t nl = strlen(forwarded_headers[i]) + 1, vl = strlen(v) + 1;
		s->fwd = xrealloc(s->fwd, used + nl + vl);
		memcpy(s->fwd + used, forwarded_headers[i], nl);
		memcpy(s->fwd + used + nl, v, vl);
		used += nl + vl;
		s->nfwd++;
	}
	s->created = now_mono_usec();
	idmap_put(&sessions, wsid, s);
	nsessions++;
	sv->stats.ws_upgrades++;
	convlog_ws_client(&sv->convs, s->conv_hash, s->entry, slot, +1, s->created);
	olog(LOG_LVL_INFO, NULL, "ws=%08llx client WebSocket to worker %d acct=%.4s "
	    "conv=%04llx conv_from=%s%s%s", (unsigned long long)wsid, slot, acct->entry,
	    (unsigned long long)(key_hash >> 48), source, s->key_label[0] ? " key=" : "",
	    s->key_label);
}

/* ---- worker messages ------------------------------------------------ */

static void
on_ws_turn(struct wsession *s, const struct msg *m)
{
	struct m_ws_turn p;
	struct turn *t;
	const char *n;
	int i;

	if (m_ws_turn_decode(m, &p) == -1) {
		log_warnx("ws=%08llx: malformed MSG_WS_TURN", (unsigned long long)s->wsid);
		return;
	}
	if (s->turn != NULL || s->gone) {
		log_warnx("ws=%08llx: a second turn while one runs; ignored",
		    (unsigned long long)s->wsid);
		return;
	}
	t = turn_new(NULL, &ws_ops, NULL, NULL, false);
	t->ws = s;
	s->turn = t;
	s->turns++;
	strlcpy_safe(t->key_label, s->key_label, sizeof(t->key_label));
	turn_set_conversation(t, xstrdup(s->conv), s->conv_source);
	if (*p.previous_response_id != '\0') {
		t->prev_id = xstrdup(p.previous_response_id);
		t->conv_source = "previous_response_id";
	}
	t->framelen = p.frame_len;
	for (n = s->fwd, i = 0; i < s->nfwd; i++) {
		const char *val = n + strlen(n) + 1;

		turn_forward_header(t, n, val);
		n = val + strlen(val) + 1;
	}
	sv->stats.ws_turns++;
	turn_start(t);
}

/* The socket is gone: a turn not yet sent upstream ends here; one the
 * worker runs is cancelled there (it evicts the connection) and its final
 * message frees it. */
static void
on_ws_gone(struct wsession *s, const struct msg *m)
{
	struct m_ws_gone p;
	struct turn *t = s->turn;

	if (m_ws_gone_decode(m, &p) == -1)
		memset(&p, 0, sizeof(p));
	if (s->gone)
		return;
	s->gone = true;
	log_debug("ws=%08llx client WebSocket gone (close %u): %s",
	    (unsigned long long)s->wsid, p.code, p.reason ? p.reason : "");
	if (t != NULL) {
		t->cl.gone = true;
		t->cancel_sent = true;	/* the worker cancels on its own */
		turn_client_left(t);
	}
	session_release(s);
}

void
ws_on_worker_msg(int slot, const struct msg *m)
{
	struct wsession *s = idmap_get(&sessions, m->hdr.rid);

	if (s == NULL || s->slot != slot)
		return;
	if (m->hdr.type == MSG_WS_TURN)
		on_ws_turn(s, m);
	else if (m->hdr.type == MSG_WS_GONE)
		on_ws_gone(s, m);
}

/* A worker died: its client sockets died with it. */
void
ws_worker_died(int slot)
{
	struct wsession *s, **v;
	size_t cur = 0, n = 0, i;

	if (nsessions == 0)
		return;
	v = xcalloc((size_t)nsessions, sizeof(*v));
	while ((s = idmap_next(&sessions, &cur)) != NULL && n < (size_t)nsessions)
		if (s->slot == slot && !s->gone)
			v[n++] = s;
	for (i = 0; i < n; i++) {
		s = v[i];
		s->gone = true;
		if (s->turn != NULL)
			s->turn->cl.gone = true;	/* turn_worker_died frees it */
		session_release(s);
	}
	free(v);
}

/* Close every client WebSocket of an account (it changed state): after
 * the current turn, with 1012, so the clients reconnect elsewhere. */
void
ws_close_account(const char *entry, const char *why)
{
	struct wsession *s;
	struct msgbuf b;
	size_t cur = 0;

	msgbuf_init(&b);
	m_ws_close_encode(&b, &(struct m_ws_close){ .code = 1012, .reason = why });
	while ((s = idmap_next(&sessions, &cur)) != NULL)
		if (!s->gone && strcmp(s->entry, entry) == 0)
			workers_send(s->slot, MSG_WS_CLOSE, s->wsid, &b);
	msgbuf_free(&b);
}

void
ws_free_all(void)
{
	struct wsession *s;
	size_t cur = 0;

	while ((s = idmap_next(&sessions, &cur)) != NULL) {
		if (s->turn != NULL)
			s->turn->ws = NULL;
		free(s->conv);
		free(s->fwd);
		free(s);
	}
	idmap_free(&sessions);
	nsessions = 0;
}
