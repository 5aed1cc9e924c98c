/*
 * Client WebSockets (wsclient.h): adoption, framing, the held turn,
 * pairing with a pooled upstream connection, and every way a session
 * ends.  One struct wsclient per adopted socket; the lws wsi finds it
 * through its opaque user data.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jscan.h"
#include "jsonutil.h"
#include "log.h"
#include "msgcodec.h"
#include "relay.h"
#include "upframe.h"
#include "wsclient.h"

/* Silence (no frame, no pong) after which a client is dead: this many
 * halves of the ping interval, as for upstream connections. */
#define WSCLIENT_LIVENESS_X2	5
/* Frames written per WRITEABLE callback while the socket takes them. */
#define WSCLIENT_WRITE_BURST	64

struct txframe {
	struct txframe	*next;
	size_t		 len;
	uint8_t		 buf[];		/* LWS_PRE + len */
};

struct wsclient {
	struct worker	*w;
	uint64_t	 wsid;
	struct lws	*wsi;
	uint64_t	 key_hash;
	char		*entry;
	size_t		 max_message;
	bool		 open;		/* the upgrade was answered */
	bool		 ended;		/* the socket is gone */

	uint64_t	 paired;	/* pooled connection holding our last response */

	/* the turn: held from MSG_WS_TURN until its end */
	bool		 turn_open;
	uint64_t	 rid;		/* once the supervisor started it */
	struct jdoc *held;		/* its response.create, checked */

	/* input */
	uint8_t		*rx;
	size_t		 rxlen, rxcap;
	bool		 rx_binary, rx_over;
	usec_t		 last_heard;

	/* output */
	struct txframe	*txq, **txq_tail;
	size_t		 txbytes;
	bool		 ping_due;
	int		 close_code;	/* close once the queue is out; 0: open */
	char		 close_reason[120];
	int		 after_code;	/* close after the turn; 0: no */
	char		 after_reason[120];

	struct ctimer	 t_ping;	/* in the worker's heap (ctimer.h) */
};

static void	close_now(struct wsclient *, int, const char *);
static void	send_error(struct wsclient *, int, const char *, const char *,
		    const char *, ...) __attribute__((format(printf, 5, 6)));

static const char *
pfx(const struct wsclient *c, char *buf, size_t len)
{
	snprintf(buf, len, "ws=%08llx acct=%.4s conv=%04llx",
	    (unsigned long long)c->wsid, c->entry,
	    (unsigned long long)(c->key_hash >> 48));
	return buf;
}

/* ---- output --------------------------------------------------------- */

static void
txq_clear(struct wsclient *c)
{
	struct txframe *f;

	while ((f = c->txq) != NULL) {
		c->txq = f->next;
		free(f);
	}
	c->txq_tail = &c->txq;
	c->txbytes = 0;
}

static void
want_write(struct wsclient *c)
{
	if (c->wsi != NULL && c->open && !c->ended)
		lws_callback_on_writable(c->wsi);
}

/* One frame written at once, from a scratch buffer with lws's headroom. */
static int
direct_write(struct wsclient *c, const void *data, size_t len)
{
	struct worker *w = c->w;
	int n;

	if (LWS_PRE + len > w->ws_scratch_len) {
		w->ws_scratch_len = LWS_PRE + len + 4096;
		w->ws_scratch = xrealloc(w->ws_scratch, w->ws_scratch_len);
	}
	memcpy(w->ws_scratch + LWS_PRE, data, len);
	n = lws_write(c->wsi, w->ws_scratch + LWS_PRE, len, LWS_WRITE_TEXT);
	if (n < 0) {
		txq_clear(c);
		close_now(c, WS_CLOSE_GOING_AWAY, "write failed");
		return -1;
	}
	w->frames_relayed++;
	if (w->ws_scratch_len > 256 * 1024) {
		/* a big frame need not stay allocated */
		free(w->ws_scratch);
		w->ws_scratch = NULL;
		w->ws_scratch_len = 0;
	}
	return 0;
}

static int
queue_frame(struct wsclient *c, const void *data, size_t len)
{
	struct txframe *f;
	char p[96];

	if (c->ended || c->close_code != 0)
		return -1;
	if (c->txbytes + len > WSCLIENT_TXQ_LIMIT) {
		olog(LOG_LVL_WARN, pfx(c, p, sizeof(p)), "client is not reading: "
		    "%zu bytes queued; closing it", c->txbytes);
		txq_clear(c);
		close_now(c, WS_CLOSE_POLICY, "client too slow: output queue full");
		return -1;
	}
	if (c->txq == NULL && c->open && !c->ping_due && c->wsi != NULL &&
	    !lws_send_pipe_choked(c->wsi)) {
		/* the socket takes it now: no trip through the poll loop (a
		 * short write stays buffered inside lws, which flushes it
		 * before any WRITEABLE of ours) */
		if (direct_write(c, data, len) == 0)
			return 0;
		return -1;
	}
	f = xmalloc(sizeof(*f) + LWS_PRE + len);
	f->next = NULL;
	f->len = len;
	memcpy(f->buf + LWS_PRE, data, len);
	*c->txq_tail = f;
	c->txq_tail = &f->next;
	c->txbytes += len;
	want_write(c);
	return 0;
}

/* {"type":"error","status":N,"error":{...}}: the Codex CLI ignores an
 * error event without a status. */
static void
send_error(struct wsclient *c, int status, const char *type, const char *code,
    const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	struct json_object *e = json_object_new_object();
	char msg[512];
	const char *text;
	size_t len;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(msg));
	json_object_object_add(o, "type", json_object_new_string("error"));
	json_object_object_add(o, "status", json_object_new_int(status));
	json_object_object_add(o, "error", e);
	text = json_plain(o, &len);
	queue_frame(c, text, len);
	json_object_put(o);
}

/* Close once what is queued is out (the queue is cleared first when the
 * client cannot take it anyway). */
static void
close_now(struct wsclient *c, int code, const char *reason)
{
	char p[96];

	if (c->ended || c->close_code != 0)
		return;
	olog(LOG_LVL_INFO, pfx(c, p, sizeof(p)), "closing the client WebSocket "
	    "with %d: %s", code, reason);
	c->close_code = code;
	strlcpy_safe(c->close_reason, reason, sizeof(c->close_reason));
	if (!c->open) {
		/* the upgrade is not answered yet: nothing to say */
		if (c->wsi != NULL)
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
			    LWS_TO_KILL_ASYNC);
		return;
	}
	want_write(c);
}

/* Close now if idle, else when the current turn is over. */
static void
close_after_turn(struct wsclient *c, int code, const char *reason)
{
	if (!c->turn_open) {
		close_now(c, code, reason);
		return;
	}
	if (c->after_code == 0) {
		c->after_code = code;
		strlcpy_safe(c->after_reason, reason, sizeof(c->after_reason));
	}
}

static int
on_writeable(struct wsclient *c)
{
	uint8_t ping[LWS_PRE + 8];
	struct txframe *f;
	int n, burst = 0;

	if (c->ping_due) {
		c->ping_due = false;
		if (lws_write(c->wsi, ping + LWS_PRE, 0, LWS_WRITE_PING) < 0)
			return -1;
	}
	while ((f = c->txq) != NULL && burst++ < WSCLIENT_WRITE_BURST &&
	    !lws_send_pipe_choked(c->wsi)) {
		c->txq = f->next;
		if (c->txq == NULL)
			c->txq_tail = &c->txq;
		c->txbytes -= f->len;
		n = lws_write(c->wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT);
		free(f);
		if (n < 0)
			return -1;
		c->w->frames_relayed++;
	}
	if (c->txq != NULL) {
		lws_callback_on_writable(c->wsi);
		return 0;
	}
	if (c->close_code != 0) {
		(void)worker_ws_close(c->wsi, c->close_code, c->close_reason);
		return -1;
	}
	return 0;
}

/* ---- pairing -------------------------------------------------------- */

static void
unpair(struct wsclient *c)
{
	if (c->paired != 0 && idmap_get(&c->w->client_pairs, c->paired) == c)
		idmap_del(&c->w->client_pairs, c->paired);
	c->paired = 0;
}

/* c's last response now lives on conn; a session that had it loses it. */
static void
pair(struct wsclient *c, uint64_t conn)
{
	struct wsclient *old;

	if (c->paired == conn)
		return;
	unpair(c);
	if ((old = idmap_get(&c->w->client_pairs, conn)) != NULL) {
		old->paired = 0;
		idmap_del(&c->w->client_pairs, conn);
		close_after_turn(old, WS_CLOSE_RECONNECT, "another session of "
		    "this conversation continued on its upstream connection; "
		    "reconnect");
	}
	idmap_put(&c->w->client_pairs, conn, c);
	c->paired = conn;
}

void
wsclient_conn_left(struct worker *w, uint64_t conn_id)
{
	struct wsclient *c = idmap_get(&w->client_pairs, conn_id);

	if (c == NULL)
		return;
	idmap_del(&w->client_pairs, conn_id);
	c->paired = 0;
	close_after_turn(c, WS_CLOSE_RECONNECT, "its upstream connection closed; "
	    "reconnect to continue");
}

/* ---- the turn ------------------------------------------------------- */

static void
held_free(struct wsclient *c)
{
	if (c->held != NULL) {
		jdoc_free(c->held);
		free(c->held);
		c->held = NULL;
	}
}

static void
turn_clear(struct wsclient *c)
{
	c->turn_open = false;
	c->rid = 0;
	held_free(c);
}

static void
turn_over(struct wsclient *c)
{
	turn_clear(c);
	if (c->after_code != 0)
		close_now(c, c->after_code, c->after_reason);
}

char *
wsclient_take_frame(struct wsclient *c, uint64_t rid, const char *upconv,
    const char *installation_id, const char *model, size_t *len,
    bool *continues, uint64_t *owner)
{
	int prev;

	if (c->held == NULL || !c->turn_open || c->ended || c->close_code != 0)
		return NULL;
	c->rid = rid;
	prev = jdoc_member(c->held, 0, "previous_response_id");
	*continues = jdoc_is(c->held, prev, JT_STRING) && !jdoc_str_eq(c->held, prev, "");
	*owner = c->paired;
	return upframe_build(c->held, &(struct upframe_ids){
	    .upstream_conv = upconv, .installation_id = installation_id,
	    .model = model }, len);
}

int
wsclient_send(struct wsclient *c, const void *data, size_t len)
{
	if (queue_frame(c, data, len) == -1)
		return -1;
	c->w->bytes_relayed += len;
	return 0;
}

void
wsclient_turn_done(struct wsclient *c, int outcome, uint64_t kept_conn,
    const char *message)
{
	if (c->ended)
		return;
	if (outcome == DONE_STREAM_ERROR) {
		turn_clear(c);
		unpair(c);
		send_error(c, 502, "server_error", "stream_disconnected", "%s",
		    message != NULL && *message ? message :
		    "the upstream stream ended before response.completed");
		close_now(c, WS_CLOSE_INTERNAL, "upstream failed mid-response");
		return;
	}
	if (outcome == DONE_COMPLETED) {
		if (kept_conn != 0)
			pair(c, kept_conn);
		else {
			/* the response id died with its connection */
			unpair(c);
			close_after_turn(c, WS_CLOSE_RECONNECT, "the response ran on "
			    "a one-shot upstream connection; reconnect to continue");
		}
	}
	turn_over(c);
}

void
wsclient_reconnect(struct wsclient *c, const char *why)
{
	if (c->ended)
		return;
	turn_clear(c);
	unpair(c);
	close_now(c, WS_CLOSE_RECONNECT, why);
}

/* A complete text message from the client. */
static void
on_message(struct wsclient *c)
{
	struct worker *w = c->w;
	struct jdoc *o = xmalloc(sizeof(*o));
	struct m_ws_turn t;
	struct msgbuf b;
	char err[160], *type = NULL, *model = NULL, *prev = NULL;
	int input;

	if (jdoc_parse(o, (const char *)c->rx, c->rxlen, err, sizeof(err)) == -1 ||
	    !jdoc_is(o, 0, JT_OBJECT)) {
		send_error(c, 400, "invalid_request_error", "invalid_json",
		    "the message is not a JSON object: %s", o->ntok ? "not an object" : err);
		goto refused;
	}
	type = jdoc_get_strdup(o, 0, "type");
	if (type == NULL || strcmp(type, "response.create") != 0) {
		send_error(c, 400, "invalid_request_error", "unsupported_event",
		    "codexpool accepts response.create messages only, not '%.60s'",
		    type ? type : "(no type)");
		goto refused;
	}
	if (w->shutting_down) {
		send_error(c, 503, "server_error", "shutting_down",
		    "codexpool is shutting down; reconnect");
		close_now(c, WS_CLOSE_GOING_AWAY, "codexpool is shutting down");
		goto refused;
	}
	if (c->turn_open) {
		send_error(c, 409, "invalid_request_error", "response_in_progress",
		    "a response is already in progress on this WebSocket; wait for "
		    "its response.completed");
		goto refused;
	}
	if ((model = jdoc_get_strdup(o, 0, "model")) == NULL) {
		send_error(c, 400, "invalid_request_error", "missing_model",
		    "'model' is required and must be a string");
		goto refused;
	}
	input = jdoc_member(o, 0, "input");
	if (!jdoc_is(o, input, JT_ARRAY) && !jdoc_is(o, input, JT_STRING)) {
		send_error(c, 400, "invalid_request_error", "invalid_input",
		    "'input' is required and must be a string or an array of items");
		goto refused;
	}
	prev = jdoc_get_strdup(o, 0, "previous_response_id");
	c->held = o;
	c->turn_open = true;
	c->rid = 0;
	memset(&t, 0, sizeof(t));
	t.model = model;
	t.previous_response_id = prev != NULL ? prev : "";
	t.generate = jdoc_bool(o, jdoc_member(o, 0, "generate"), true);
	t.frame_len = (uint32_t)c->rxlen;
	msgbuf_init(&b);
	m_ws_turn_encode(&b, &t);
	worker_send(w, MSG_WS_TURN, c->wsid, &b, true);
	msgbuf_free(&b);
	w->ws_turns++;
	free(type);
	free(model);
	free(prev);
	return;
refused:
	jdoc_free(o);
	free(o);
	free(type);
	free(model);
}

static void
rx_reset(struct wsclient *c)
{
	c->rxlen = 0;
	c->rx_binary = false;
	c->rx_over = false;
}

static void
on_receive(struct wsclient *c, const void *in, size_t len)
{
	size_t cap;

	c->last_heard = now_mono_usec();
	if (lws_frame_is_binary(c->wsi))
		c->rx_binary = true;
	if (!c->rx_over && c->rxlen + len > c->max_message) {
		c->rx_over = true;
		free(c->rx);
		c->rx = NULL;
		c->rxcap = c->rxlen = 0;
	}
	if (!c->rx_over && len > 0) {
		if (c->rxlen + len > c->rxcap) {
			cap = c->rxcap ? c->rxcap : 4096;
			while (cap < c->rxlen + len)
				cap *= 2;
			c->rx = xrealloc(c->rx, cap);
			c->rxcap = cap;
		}
		memcpy(c->rx + c->rxlen, in, len);
		c->rxlen += len;
	}
	if (!lws_is_final_fragment(c->wsi) || lws_remaining_packet_payload(c->wsi) > 0)
		return;
	if (c->close_code != 0)
		;	/* closing: nothing more is taken */
	else if (c->rx_over) {
		send_error(c, 400, "invalid_request_error", "message_too_large",
		    "the message is larger than %zu bytes", c->max_message);
		close_now(c, WS_CLOSE_TOO_BIG, "message too large");
	} else if (c->rx_binary) {
		send_error(c, 400, "invalid_request_error", "binary_not_supported",
		    "binary messages are not supported; send JSON text");
		close_now(c, WS_CLOSE_UNSUPPORTED, "binary messages are not supported");
	} else
		on_message(c);
	rx_reset(c);
	/* a big first message need not stay allocated for the session */
	if (c->rxcap > 64 * 1024) {
		free(c->rx);
		c->rx = NULL;
		c->rxcap = 0;
	}
}

/* ---- liveness ------------------------------------------------------- */

static void
ping_cb(struct ctimer *t)
{
	struct wsclient *c = lws_container_of(t, struct wsclient, t_ping);
	struct worker *w = c->w;
	usec_t every = w->cfg.ping_interval, now = now_mono_usec();

	if (every == 0 || c->ended || c->close_code != 0)
		return;
	if (now - c->last_heard > every * WSCLIENT_LIVENESS_X2 / 2) {
		/* no pong: a vanished peer; its turn is cancelled at close */
		txq_clear(c);
		close_now(c, WS_CLOSE_GOING_AWAY, "client silent: no pong");
		if (c->wsi != NULL)
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, 5);
		return;
	}
	c->ping_due = true;
	want_write(c);
	ctimer_schedule(&w->ctimers, w->ctx, &c->t_ping, ping_cb, every);
}

/* ---- life and death ------------------------------------------------- */

static void
client_free(struct wsclient *c)
{
	ctimer_cancel(&c->w->ctimers, &c->t_ping);
	txq_clear(c);
	held_free(c);
	free(c->rx);
	free(c->entry);
	free(c);
}

/*
 * The socket is gone, for whatever reason: the supervisor hears first (so
 * the turn's final finds its client gone), then a running turn is
 * cancelled (its connection evicted: the abandoned response's tail must
 * never reach another turn).
 */
static void
client_ended(struct wsclient *c, const char *why)
{
	struct worker *w = c->w;
	struct msgbuf b;
	uint64_t rid = c->rid;
	char p[96];

	if (c->ended)
		return;
	c->ended = true;
	if (c->wsi != NULL)
		lws_set_opaque_user_data(c->wsi, NULL);
	c->wsi = NULL;
	if (!w->stop) {
		olog(LOG_LVL_INFO, pfx(c, p, sizeof(p)), "client WebSocket ended: %s "
		    "(close %d)", why, c->close_code);
		msgbuf_init(&b);
		m_ws_gone_encode(&b, &(struct m_ws_gone){
		    .code = (uint32_t)c->close_code, .reason = why });
		worker_send(w, MSG_WS_GONE, c->wsid, &b, true);
		msgbuf_free(&b);
		if (c->turn_open && rid != 0)
			relay_req_cancel(w, rid);
	}
	unpair(c);
	idmap_del(&w->clients, c->wsid);
	if (w->adopting != c)
		client_free(c);
	worker_check_done(w);
}

static int
client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct worker *w = lws_context_user(lws_get_context(wsi));
	struct wsclient *c = lws_get_opaque_user_data(wsi);
	const uint8_t *cp = in;
	char p[96];

	if (c == NULL && w->adopting != NULL && !w->adopting->ended &&
	    reason != LWS_CALLBACK_WSI_DESTROY) {
		/* the upgrade is being served inside lws_adopt_*() */
		c = w->adopting;
		c->wsi = wsi;
		lws_set_opaque_user_data(wsi, c);
	}
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		return -1;	/* the supervisor hands over upgrades only */
	case LWS_CALLBACK_ESTABLISHED:
		if (c == NULL || c->ended)
			return -1;
		c->open = true;
		c->last_heard = now_mono_usec();
		if (w->cfg.ping_interval > 0)
			ctimer_schedule(&w->ctimers, w->ctx, &c->t_ping, ping_cb,
			    w->cfg.ping_interval);
		olog(LOG_LVL_INFO, pfx(c, p, sizeof(p)), "client WebSocket open");
		if (c->close_code != 0)
			want_write(c);
		return 0;
	case LWS_CALLBACK_RECEIVE:
		if (c == NULL || c->ended)
			return -1;
		on_receive(c, in, len);
		return 0;
	case LWS_CALLBACK_RECEIVE_PONG:
		if (c != NULL)
			c->last_heard = now_mono_usec();
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		if (c == NULL || c->ended)
			return 0;
		return on_writeable(c);
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (c != NULL && c->close_code == 0 && len >= 2)
			c->close_code = (cp[0] << 8) | cp[1];
		return 0;
	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_WSI_DESTROY:
		if (c != NULL)
			client_ended(c, reason == LWS_CALLBACK_CLOSED ? "closed" :
			    c->open ? "socket closed" : "upgrade failed");
		return 0;
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

static const struct lws_protocols client_protocols[] = {
	/* The Codex CLI asks for no subprotocol: its upgrade lands on
	 * protocol 0.  rx_buffer_size: the fragment size we are handed. */
	{ .name = "codexpool-client", .callback = client_cb,
	  .rx_buffer_size = 64 * 1024 },
	{ .name = NULL },
};

int
wsclient_init(struct worker *w)
{
	struct lws_context_creation_info info;

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	info.protocols = client_protocols;
	info.vhost_name = "clients";
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
	w->client_vh = lws_create_vhost(w->ctx, &info);
	return w->client_vh != NULL ? 0 : -1;
}

struct wsclient *
wsclient_find(struct worker *w, uint64_t wsid)
{
	return idmap_get(&w->clients, wsid);
}

void
wsclient_adopt(struct worker *w, const struct msg *m)
{
	struct m_ws_adopt p;
	struct wsclient *c;
	struct msgbuf b;
	struct lws *wsi;
	const char *why = NULL;

	if (m_ws_adopt_decode(m, &p) == -1)
		why = "malformed MSG_WS_ADOPT";
	else if (m->fd < 0)
		why = "MSG_WS_ADOPT without a socket";
	else if (w->client_vh == NULL)
		why = "no client vhost";
	else if (w->shutting_down)
		why = "shutting down";
	else if (idmap_get(&w->clients, m->hdr.rid) != NULL || m->hdr.rid == 0)
		why = "duplicate wsid";
	if (why != NULL) {
		log_warnx("ws=%08llx not adopted: %s", (unsigned long long)m->hdr.rid, why);
		if (m->fd >= 0)
			close(m->fd);
		msgbuf_init(&b);
		m_ws_gone_encode(&b, &(struct m_ws_gone){ .code = 0, .reason = why });
		worker_send(w, MSG_WS_GONE, m->hdr.rid, &b, true);
		msgbuf_free(&b);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->w = w;
	c->wsid = m->hdr.rid;
	c->key_hash = p.key_hash;
	c->entry = xstrdup(p.entry);
	c->max_message = p.max_message > 0 ? p.max_message : 16u * 1024 * 1024;
	c->txq_tail = &c->txq;
	c->last_heard = now_mono_usec();
	idmap_put(&w->clients, c->wsid, c);
	w->ws_adopted++;

	/* lws may serve the upgrade right here: the callback finds c */
	w->adopting = c;
	wsi = lws_adopt_socket_vhost_readbuf(w->client_vh, m->fd,
	    (const char *)p.head, p.head_len);
	w->adopting = NULL;
	if (c->ended) {
		client_free(c);		/* client_ended() left it to us */
		return;
	}
	if (wsi == NULL) {
		client_ended(c, "adoption failed");	/* lws closed the fd */
		return;
	}
	if (c->wsi == NULL) {
		c->wsi = wsi;
		lws_set_opaque_user_data(wsi, c);
	}
}

void
wsclient_reply(struct worker *w, const struct msg *m)
{
	struct wsclient *c = idmap_get(&w->clients, m->hdr.rid);
	struct m_ws_reply p;

	if (m_ws_reply_decode(m, &p) == -1) {
		log_warnx("malformed MSG_WS_REPLY ignored");
		return;
	}
	if (c == NULL || c->ended || !c->turn_open ||
	    (c->rid != 0 && c->rid != p.turn_rid))
		return;		/* that turn is over already */
	if (p.frame_len > 0)
		queue_frame(c, p.frame, p.frame_len);
	if (p.close_code != 0) {
		turn_clear(c);
		unpair(c);
		close_now(c, (int)p.close_code, *p.close_reason ? p.close_reason :
		    "closed by codexpool");
		return;
	}
	turn_over(c);
}

void
wsclient_close_msg(struct worker *w, const struct msg *m)
{
	struct wsclient *c = idmap_get(&w->clients, m->hdr.rid);
	struct m_ws_close p;

	if (m_ws_close_decode(m, &p) == -1) {
		log_warnx("malformed MSG_WS_CLOSE ignored");
		return;
	}
	if (c != NULL && !c->ended)
		close_after_turn(c, p.code >= 1000 && p.code < 5000 ? (int)p.code :
		    WS_CLOSE_RECONNECT, *p.reason ? p.reason : "closed by codexpool");
}

void
wsclient_shutdown(struct worker *w)
{
	struct wsclient *c;
	size_t cur = 0;

	while ((c = idmap_next(&w->clients, &cur)) != NULL)
		close_after_turn(c, WS_CLOSE_GOING_AWAY, "codexpool is shutting down");
}

void
wsclient_free_all(struct worker *w)
{
	struct wsclient *c;
	size_t cur = 0;

	while ((c = idmap_next(&w->clients, &cur)) != NULL)
		client_free(c);
	idmap_free(&w->clients);
	idmap_free(&w->client_pairs);
	free(w->ws_scratch);
	w->ws_scratch = NULL;
}
