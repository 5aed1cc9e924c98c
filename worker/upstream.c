/*
 * Upstream WebSocket connections (libwebsockets 4.1.6 client side).
 *
 * Life of a struct upconn:
 *
 *	upconn_open -> lws_client_connect_via_info (numeric address,
 *	    host = the upstream name for Host, SNI and the certificate check)
 *	APPEND_HANDSHAKE_HEADER: the header table below
 *	ESTABLISHED: join the pool (MSG_CONN_UP), start pings and the
 *	    liveness deadline, write the turn
 *	RECEIVE: assemble a message, hand it to the turn's owner (relay.c,
 *	    through w->uphooks: this file does not know relay.c)
 *	CONNECTION_ERROR / CLIENT_CLOSED / WSI_DESTROY / a timer: "lost"
 *
 * Every ending becomes one "lost" event handled from a zero-delay timer,
 * never from inside lws_client_connect_via_info() (which may call us
 * back before it returns) and never twice.  The struct is freed only
 * once lws has destroyed the wsi, because lws may still call us for it.
 *
 * Name resolution: the worker never resolves.  Without a proxy the
 * address is one of the supervisor's numeric addresses (round robin);
 * with an HTTP CONNECT proxy lws connects to the proxy's numeric address
 * and asks it to CONNECT to the upstream name, so the proxy resolves.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "log.h"
#include "msgcodec.h"
#include "upstream.h"
#include "wsframe.h"

/* The most one write hands the socket (see upconn_protocols). */
#define UPSTREAM_TX_PACKET	(64 * 1024)
#define OPENAI_BETA_WS	"responses_websockets=2026-02-06"
#define UA_PLATFORM	"(Debian 12; x86_64)"

/*
 * The handshake headers, in one table so they can follow CLI releases
 * (upstream-protocol.md 2.2 and the 0.169.0 addendum).  Names carry the
 * trailing colon lws_add_http_header_by_name() wants.  An empty value
 * leaves the header out.
 */
enum hs_val {
	HV_BEARER,
	HV_ACCOUNT,
	HV_BETA,
	HV_ORIGINATOR,
	HV_VERSION,
	HV_SESSION,
	HV_WINDOW,
	HV_USER_AGENT,
};

static const struct hs_header {
	const char	*name;
	enum hs_val	 val;
} hs_headers[] = {
	{ "authorization:",		HV_BEARER },
	{ "chatgpt-account-id:",	HV_ACCOUNT },
	{ "openai-beta:",		HV_BETA },
	{ "originator:",		HV_ORIGINATOR },
	{ "version:",			HV_VERSION },
	{ "session-id:",		HV_SESSION },
	{ "x-client-request-id:",	HV_SESSION },
	{ "x-codex-window-id:",		HV_WINDOW },
	{ "user-agent:",		HV_USER_AGENT },
};

/* Client-forwarded headers we pass on: these prefixes, minus the table. */
static const char *const fwd_prefixes[] = { "x-codex-", "x-openai-", NULL };

/*
 * Our own pings and liveness (ctimer) watch the connection; lws' default
 * validity check (a ping after 300 s) would put one more timer per
 * connection in its sorted list and re-insert it on traffic.
 */
static const lws_retry_bo_t no_lws_validity = {
	.secs_since_valid_ping = 0,
	.secs_since_valid_hangup = 0,
};

static void lost_cb(lws_sorted_usec_list_t *sul);
static void live_cb(struct ctimer *t);
static void gc_cb(lws_sorted_usec_list_t *sul);
static void upconn_free(struct upconn *uc);

const char *
up_fail_name(enum up_fail f)
{
	switch (f) {
	case UF_NONE:		return "none";
	case UF_CONNECT:	return "connect failed";
	case UF_HS_TIMEOUT:	return "handshake timeout";
	case UF_HTTP_STATUS:	return "handshake refused";
	case UF_CLOSED:		return "closed by upstream";
	case UF_LIVENESS:	return "liveness timeout";
	case UF_PROTOCOL:	return "message too large";
	case UF_START_TIMEOUT:	return "response start timeout";
	case UF_CONN_LIMIT:	return "server connection limit";
	case UF_KILLED:		return "killed";
	}
	return "?";
}

void
upconn_describe(const struct upconn *uc, char *buf, size_t len)
{
	snprintf(buf, len, "%s: %s", up_fail_name(uc->fail), uc->why);
}

static void
set_fail(struct upconn *uc, enum up_fail kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_fail(struct upconn *uc, enum up_fail kind, const char *fmt, ...)
{
	va_list ap;

	if (uc->fail != UF_NONE)
		return;		/* the first cause wins */
	uc->fail = kind;
	va_start(ap, fmt);
	vsnprintf(uc->why, sizeof(uc->why), fmt, ap);
	va_end(ap);
}

static void
mark_lost(struct upconn *uc)
{
	if (uc->lost)
		return;
	uc->lost = true;
	if (uc->fail == UF_NONE)
		set_fail(uc, UF_CLOSED, "connection ended");
	lws_sul_schedule(uc->w->ctx, 0, &uc->sul_lost, lost_cb, 1);
}

/* ---- the pool's hooks ------------------------------------------------ */

void
upconn_pool_left(void *arg, struct pool_conn *c, const char *reason)
{
	struct worker *w = arg;
	struct msgbuf b;

	if (!c->pooled || w->stop)
		return;
	log_info("conn=%016llx acct=%.4s conv=%04llx left the pool after %u "
	    "turns: %s", (unsigned long long)c->id, c->entry,
	    (unsigned long long)(c->key_hash >> 48), c->turns, reason);
	msgbuf_init(&b);
	m_conn_down_encode(&b, &(struct m_conn_down){ .conn_id = c->id,
	    .entry = c->entry, .reason = reason });
	worker_send(w, MSG_CONN_DOWN, 0, &b, true);
	msgbuf_free(&b);
}

static void
upconn_close(struct upconn *uc, const char *reason)
{
	if (uc->lost)
		return;
	set_fail(uc, UF_KILLED, "%s", reason);
	strlcpy_safe(uc->close_reason, reason, sizeof(uc->close_reason));
	if (uc->wsi == NULL)
		return;
	if (uc->established) {
		/* a Close frame with code 1000, written from WRITEABLE */
		uc->close_pending = true;
		if (uc->rx_off) {
			lws_rx_flow_control(uc->wsi, 1);
			uc->rx_off = false;
		}
		lws_callback_on_writable(uc->wsi);
		lws_set_timeout(uc->wsi, PENDING_TIMEOUT_USER_OK,
		    UPSTREAM_CLOSE_GRACE_SECS);
	} else
		lws_set_timeout(uc->wsi, PENDING_TIMEOUT_USER_OK,
		    LWS_TO_KILL_ASYNC);
}

void
upconn_pool_close(void *arg, struct pool_conn *c, const char *reason)
{
	struct worker *w = arg;
	struct upconn *uc = c->io;

	if (uc == NULL)
		return;
	if (uc->req != NULL) {
		/* the pool only closes idle connections; be safe anyway */
		set_fail(uc, UF_KILLED, "%s", reason);
		w->uphooks->attempt_failed(uc->req, uc);
	}
	upconn_close(uc, reason);
}

/* ---- opening --------------------------------------------------------- */

static bool
is_numeric_address(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool
header_name_ok(const char *name)
{
	size_t i, k;
	const char *p;

	if (*name == '\0' || strlen(name) > 64)
		return false;
	for (p = name; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    *p == '-'))
			return false;
	for (k = 0; fwd_prefixes[k] != NULL; k++)
		if (strncmp(name, fwd_prefixes[k], strlen(fwd_prefixes[k])) == 0)
			break;
	if (fwd_prefixes[k] == NULL)
		return false;
	for (i = 0; i < sizeof(hs_headers) / sizeof(hs_headers[0]); i++)
		if (strncmp(hs_headers[i].name, name, strlen(name)) == 0 &&
		    hs_headers[i].name[strlen(name)] == ':')
			return false;
	return true;
}

static bool
header_value_ok(const char *v)
{
	const unsigned char *p;

	if (strlen(v) > 8192)
		return false;
	for (p = (const unsigned char *)v; *p != '\0'; p++)
		if (*p < 0x20 && *p != '\t')
			return false;	/* no CR/LF injection */
	return true;
}

static void
copy_ident(struct upconn *uc, const struct hs_ident *id)
{
	size_t i, n = 0;

	uc->access_token = xstrdup(id->access_token ? id->access_token : "");
	uc->account_id = xstrdup(id->account_id ? id->account_id : "");
	uc->session_id = xstrdup(id->session_id ? id->session_id : "");
	if (id->nheaders == 0)
		return;
	uc->hdr_names = xcalloc(id->nheaders, sizeof(char *));
	uc->hdr_values = xcalloc(id->nheaders, sizeof(char *));
	for (i = 0; i < id->nheaders; i++) {
		if (!header_name_ok(id->names[i]) ||
		    !header_value_ok(id->values[i])) {
			log_debug("dropping forwarded header '%.64s'",
			    id->names[i]);
			continue;
		}
		uc->hdr_names[n] = xstrdup(id->names[i]);
		uc->hdr_values[n] = xstrdup(id->values[i]);
		n++;
	}
	uc->nhdrs = n;
}

static void
hs_timeout_cb(lws_sorted_usec_list_t *sul)
{
	struct upconn *uc = lws_container_of(sul, struct upconn, sul_hs);

	if (uc->established || uc->lost)
		return;
	upconn_fail(uc, UF_HS_TIMEOUT, "no answer within %lld ms",
	    (long long)(uc->w->cfg.handshake_timeout / USEC_PER_MSEC));
}

static struct upvhost *
current_vhost(struct worker *w)
{
	return (w->vhosts != NULL && w->vhosts->current) ? w->vhosts : NULL;
}

struct upconn *
upconn_open(struct worker *w, struct pool_conn *pc, const struct hs_ident *id)
{
	struct lws_client_connect_info i;
	struct upconn *uc = xcalloc(1, sizeof(*uc));
	struct upvhost *uv;
	const char *address = NULL;
	struct lws *wsi;

	uc->w = w;
	uc->pc = pc;
	pc->io = uc;
	copy_ident(uc, id);
	uc->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = uc;
	w->conns = uc;
	w->nconns++;

	uv = current_vhost(w);
	if (w->cfg.proxy_host != NULL)
		address = w->cfg.host;		/* CONNECT by name: the proxy resolves */
	else if (w->naddrs > 0)
		address = w->addrs[w->addr_rr++ % w->naddrs];
	else if (w->cfg.host != NULL && is_numeric_address(w->cfg.host))
		address = w->cfg.host;

	if (uv == NULL || address == NULL) {
		set_fail(uc, UF_CONNECT, "%s",
		    uv == NULL ? "no usable upstream settings" :
		    "no resolved address for the upstream host");
		uc->freed_wsi = true;
		mark_lost(uc);
		return uc;
	}
	uc->uv = uv;
	uv->refs++;

	memset(&i, 0, sizeof(i));
	i.context = w->ctx;
	i.vhost = uv->vh;
	i.address = address;
	i.port = w->cfg.port;
	i.path = w->cfg.path;
	i.host = w->cfg.host;		/* Host header, SNI, certificate name */
	/* a redirect would carry the token elsewhere: never follow one */
	i.ssl_connection = (w->cfg.tls ? LCCSCF_USE_SSL : 0) |
	    LCCSCF_HTTP_NO_FOLLOW_REDIRECT;
	i.alpn = "http/1.1";		/* a WebSocket upgrade needs HTTP/1.1 */
	i.local_protocol_name = upconn_protocols[0].name;
	i.ietf_version_or_minus_one = -1;
	i.opaque_user_data = uc;
	i.retry_and_idle_policy = &no_lws_validity;

	lws_sul_schedule(w->ctx, 0, &uc->sul_hs, hs_timeout_cb,
	    w->cfg.handshake_timeout > 0 ? w->cfg.handshake_timeout :
	    15 * USEC_PER_SEC);

	wsi = lws_client_connect_via_info(&i);
	if (wsi == NULL) {
		/* lws scrubbed it (it may have told us already) */
		uc->wsi = NULL;
		uc->freed_wsi = true;
		set_fail(uc, UF_CONNECT, "connect to %s:%d failed", address,
		    w->cfg.port);
		mark_lost(uc);
		return uc;
	}
	if (!uc->freed_wsi)
		uc->wsi = wsi;
	return uc;
}

void
upconn_send_turn(struct upconn *uc)
{
	if (uc->req == NULL)
		return;
	uc->send_pending = true;
	if (!uc->established)
		return;		/* on_established sends it */
	uc->w->uphooks->turn_armed(uc->req);
	if (uc->wsi != NULL)
		lws_callback_on_writable(uc->wsi);
}

void
upconn_fail(struct upconn *uc, enum up_fail kind, const char *fmt, ...)
{
	struct worker *w = uc->w;
	va_list ap;

	if (uc->lost)
		return;		/* the lost handler deals with it */
	if (uc->fail == UF_NONE) {
		uc->fail = kind;
		va_start(ap, fmt);
		vsnprintf(uc->why, sizeof(uc->why), fmt, ap);
		va_end(ap);
	}
	if (uc->req != NULL)
		w->uphooks->attempt_failed(uc->req, uc);
	if (uc->pc != NULL) {
		char what[256];

		upconn_describe(uc, what, sizeof(what));
		wpool_close(&w->pool, uc->pc, what);
	} else
		upconn_close(uc, up_fail_name(kind));
}

/* ---- established connections --------------------------------------- */

usec_t
upstream_liveness_window(usec_t ping_interval)
{
	return ping_interval > 0 ? ping_interval * UPSTREAM_LIVENESS_X2 / 2 : 0;
}

usec_t
upstream_liveness_left(usec_t now, usec_t last_activity, usec_t ping_interval)
{
	usec_t deadline = last_activity +
	    upstream_liveness_window(ping_interval);

	return now < deadline ? deadline - now : 0;
}

static void
ping_cb(struct ctimer *t)
{
	struct upconn *uc = lws_container_of(t, struct upconn, t_ping);
	struct worker *w = uc->w;
	usec_t ping = w->cfg.ping_interval;

	if (w->stop || !uc->established || uc->lost || uc->wsi == NULL || ping <= 0)
		return;
	uc->ping_pending = true;
	lws_callback_on_writable(uc->wsi);
	ctimer_schedule(&w->ctimers, w->ctx, &uc->t_ping, ping_cb, ping);
}

/*
 * Fires at the liveness deadline (not at the next ping, which would make
 * it three intervals): dead if nothing arrived since, else it moves to
 * the new deadline.
 */
static void
live_cb(struct ctimer *t)
{
	struct upconn *uc = lws_container_of(t, struct upconn, t_live);
	struct worker *w = uc->w;
	usec_t now = now_mono_usec(), ping = w->cfg.ping_interval, left;

	if (w->stop || !uc->established || uc->lost || uc->wsi == NULL ||
	    ping <= 0 || uc->pc == NULL)
		return;
	if (uc->rx_off) {
		/* reads paused for backpressure: silence proves nothing
		 * (resuming counts as activity) */
		ctimer_schedule(&w->ctimers, w->ctx, &uc->t_live, live_cb,
		    upstream_liveness_window(ping));
		return;
	}
	left = upstream_liveness_left(now, uc->pc->last_activity, ping);
	if (left > 0) {
		ctimer_schedule(&w->ctimers, w->ctx, &uc->t_live, live_cb, left);
		return;
	}
	w->pool.st.liveness_kills++;
	upconn_fail(uc, UF_LIVENESS, "no frame and no pong for %lld ms",
	    (long long)((now - uc->pc->last_activity) / USEC_PER_MSEC));
}

static void
on_established(struct upconn *uc)
{
	struct worker *w = uc->w;
	struct pool_conn *pc = uc->pc;
	struct msgbuf b;

	lws_sul_cancel(&uc->sul_hs);
	uc->established = true;
	wpool_established(&w->pool, pc, now_mono_usec());
	if (pc->pooled && pc->in_pool) {
		msgbuf_init(&b);
		m_conn_up_encode(&b, &(struct m_conn_up){ .conn_id = pc->id,
		    .key_hash = pc->key_hash, .entry = pc->entry });
		worker_send(w, MSG_CONN_UP, 0, &b, true);
		msgbuf_free(&b);
	}
	log_debug("conn=%016llx established (%s)", (unsigned long long)pc->id,
	    pc->pooled ? "pooled" : "one-shot");
	if (w->cfg.ping_interval > 0) {
		ctimer_schedule(&w->ctimers, w->ctx, &uc->t_ping, ping_cb,
		    w->cfg.ping_interval);
		ctimer_schedule(&w->ctimers, w->ctx, &uc->t_live, live_cb,
		    upstream_liveness_window(w->cfg.ping_interval));
	}
	if (w->rx_paused) {
		lws_rx_flow_control(uc->wsi, 0);
		uc->rx_off = true;
	}
	if (uc->req != NULL)
		upconn_send_turn(uc);
	else if (pc->state == CONN_CLOSING)
		upconn_close(uc, uc->close_reason);
}

static int
write_frame(struct upconn *uc, struct lws *wsi)
{
	size_t len;
	const uint8_t *frame = uc->w->uphooks->frame(uc->req, &len);
	uint8_t *buf, key[4];
	size_t total;
	int n;

	/*
	 * The frame is framed and masked here, eight bytes at a time, into a
	 * copy (a retry on another connection still has the original), and
	 * written as LWS_WRITE_HTTP.  lws 4.1.6 sends that on a ws
	 * connection as it is (rops_write_role_protocol_ws "send_raw" ->
	 * lws_issue_raw, through SSL_write under TLS); what the socket does
	 * not take goes on the wsi's buflist_out, which every later write
	 * (ours, lws' pings, pongs and close) queues behind and POLLOUT
	 * drains first, so frames never interleave.  No extension is
	 * negotiated, so nothing else would have touched the payload.
	 */
	if (wsframe_mask_key(key) < 0) {
		set_fail(uc, UF_CLOSED, "no random bytes for the frame mask");
		return -1;
	}
	buf = xmalloc(LWS_PRE + wsframe_header_len(len) + len);
	total = wsframe_build(buf + LWS_PRE, WSFRAME_OP_TEXT, frame, len, key);
	n = lws_write(wsi, buf + LWS_PRE, total, LWS_WRITE_HTTP);
	free(buf);
	if (n < 0 || (size_t)n < total) {
		set_fail(uc, UF_CLOSED, "write failed");
		return -1;
	}
	uc->send_pending = false;
	return 0;
}

static int
on_writeable(struct upconn *uc, struct lws *wsi)
{
	uint8_t ping[LWS_PRE + 4];

	if (uc->close_pending) {
		const char *r = uc->close_reason[0] ? uc->close_reason : "bye";

		(void)worker_ws_close(wsi, LWS_CLOSE_STATUS_NORMAL, r);
		return -1;
	}
	if (uc->send_pending && uc->req != NULL) {
		if (write_frame(uc, wsi) < 0)
			return -1;
		if (uc->ping_pending)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (uc->ping_pending) {
		uc->ping_pending = false;
		if (lws_write(wsi, ping + LWS_PRE, 0, LWS_WRITE_PING) < 0) {
			set_fail(uc, UF_CLOSED, "ping write failed");
			return -1;
		}
	}
	return 0;
}

static int
on_receive(struct upconn *uc, struct lws *wsi, const void *in, size_t len)
{
	struct worker *w = uc->w;
	size_t need;

	if (uc->pc != NULL)
		wpool_activity(uc->pc, now_mono_usec());
	if (uc->close_pending || uc->lost)
		return 0;
	if (uc->rxlen == 0 && lws_is_final_fragment(wsi)) {
		/* the common case, a whole message: no copy, no buffer */
		if (uc->req != NULL)
			w->uphooks->message(uc->req, uc, in, len);
		return 0;
	}
	need = uc->rxlen + len;
	if (need > UPSTREAM_MAX_MESSAGE) {
		uc->rxlen = 0;
		upconn_fail(uc, UF_PROTOCOL,
		    "a message larger than %u bytes",
		    (unsigned)UPSTREAM_MAX_MESSAGE);
		return 0;
	}
	if (need > uc->rxcap) {
		size_t cap = uc->rxcap ? uc->rxcap : 4096;

		while (cap < need)
			cap *= 2;
		if (cap > UPSTREAM_MAX_MESSAGE)
			cap = UPSTREAM_MAX_MESSAGE;
		uc->rx = xrealloc(uc->rx, cap);
		uc->rxcap = cap;
	}
	if (len > 0)
		memcpy(uc->rx + uc->rxlen, in, len);
	uc->rxlen = need;
	if (!lws_is_final_fragment(wsi))
		return 0;

	need = uc->rxlen;
	uc->rxlen = 0;
	if (uc->req != NULL)
		w->uphooks->message(uc->req, uc, uc->rx, need);
	/* frames between turns are dropped: they belong to nobody */

	if (uc->req == NULL || uc->rxcap > 1024 * 1024) {
		/* an idle connection keeps no buffer, a busy one no big one */
		free(uc->rx);
		uc->rx = NULL;
		uc->rxcap = 0;
	}
	return 0;
}

static void
on_connection_error(struct upconn *uc, struct lws *wsi, const char *in,
    size_t len)
{
	int status = lws_http_client_http_response(wsi);
	char msg[128];

	snprintf(msg, sizeof(msg), "%.*s", (int)(len < 120 ? len : 120),
	    in != NULL ? in : "");
	if (len == 0 && in != NULL)
		snprintf(msg, sizeof(msg), "%s", in);
	if (status >= 300 && status <= 599 && status != 101) {
		uc->hs_status = status;
		set_fail(uc, UF_HTTP_STATUS, "HTTP %d", status);
	} else
		set_fail(uc, UF_CONNECT, "%s",
		    msg[0] ? msg : "unknown error");
}

/* ---- handshake headers ---------------------------------------------- */

static char *
hs_value(const struct upconn *uc, enum hs_val v)
{
	const struct wcfg *cfg = &uc->w->cfg;
	const char *orig = cfg->originator ? cfg->originator : "";
	const char *ver = cfg->client_version ? cfg->client_version : "";
	char *s = NULL;
	size_t n;

	switch (v) {
	case HV_BEARER:
		if (*uc->access_token == '\0')
			return NULL;
		n = strlen(uc->access_token) + 8;
		s = xmalloc(n);
		snprintf(s, n, "Bearer %s", uc->access_token);
		return s;
	case HV_ACCOUNT:
		return *uc->account_id ? xstrdup(uc->account_id) : NULL;
	case HV_BETA:
		return xstrdup(OPENAI_BETA_WS);
	case HV_ORIGINATOR:
		return *orig ? xstrdup(orig) : NULL;
	case HV_VERSION:
		return *ver ? xstrdup(ver) : NULL;
	case HV_SESSION:
		return *uc->session_id ? xstrdup(uc->session_id) : NULL;
	case HV_WINDOW:
		if (*uc->session_id == '\0')
			return NULL;
		n = strlen(uc->session_id) + 3;
		s = xmalloc(n);
		snprintf(s, n, "%s:0", uc->session_id);
		return s;
	case HV_USER_AGENT:
		if (*orig == '\0')
			return NULL;
		n = strlen(orig) + strlen(ver) + sizeof(UA_PLATFORM) + 3;
		s = xmalloc(n);
		snprintf(s, n, "%s/%s %s", orig, ver, UA_PLATFORM);
		return s;
	}
	return NULL;
}

static int
add_header(struct lws *wsi, const char *name, const char *value,
    unsigned char **p, unsigned char *end)
{
	return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
	    (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Called with lws's header buffer; a header that does not fit fails the
 * handshake (better than a request without its token). */
static int
add_handshake_headers(struct upconn *uc, struct lws *wsi, void *in, size_t len)
{
	unsigned char **p = in, *end = *p + len;
	char name[80];
	size_t i;
	int rc;

	for (i = 0; i < sizeof(hs_headers) / sizeof(hs_headers[0]); i++) {
		char *v = hs_value(uc, hs_headers[i].val);

		if (v == NULL)
			continue;
		rc = add_header(wsi, hs_headers[i].name, v, p, end);
		freezero_str(v);
		if (rc != 0)
			goto full;
	}
	for (i = 0; i < uc->nhdrs; i++) {
		snprintf(name, sizeof(name), "%s:", uc->hdr_names[i]);
		if (add_header(wsi, name, uc->hdr_values[i], p, end) != 0)
			goto full;
	}
	return 0;
full:
	set_fail(uc, UF_CONNECT, "handshake headers do not fit (%zu bytes "
	    "available)", len);
	return -1;
}

/*
 * An idle pooled connection should cost little: OpenSSL drops its read and
 * write buffers (~34 KiB) whenever they are empty, and libwebsockets'
 * per-connection receive buffer is small (a bigger event arrives in
 * fragments, which on_receive joins anyway).
 */
static void
release_tls_buffers(struct lws *wsi)
{
	SSL *ssl = lws_get_ssl(wsi);

	if (ssl != NULL)
		SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
}

static int
upstream_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct upconn *uc = lws_get_opaque_user_data(wsi);
	struct worker *w;

	(void)user;
	if (uc == NULL)
		return 0;
	w = uc->w;
	if (uc->wsi == NULL && !uc->freed_wsi)
		uc->wsi = wsi;	/* callbacks can precede the connect's return */

	if (w->stop) {
		/* tearing down: no more protocol work, just let go */
		if (reason == LWS_CALLBACK_WSI_DESTROY) {
			lws_set_opaque_user_data(wsi, NULL);
			uc->wsi = NULL;
			uc->freed_wsi = true;
			upconn_free(uc);
		}
		return 0;
	}

	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		return add_handshake_headers(uc, wsi, in, len);

	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		release_tls_buffers(wsi);
		on_established(uc);
		break;

	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return on_writeable(uc, wsi);

	case LWS_CALLBACK_CLIENT_RECEIVE:
		return on_receive(uc, wsi, in, len);

	case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
		if (uc->pc != NULL)
			wpool_activity(uc->pc, now_mono_usec());
		break;

	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (len >= 2 && in != NULL) {
			const unsigned char *p = in;
			int code = (p[0] << 8) | p[1];

			set_fail(uc, UF_CLOSED, "code=%d%s%.*s",
			    code, len > 2 ? " reason=" : "",
			    (int)(len > 2 ? (len - 2 > 100 ? 100 : len - 2) : 0),
			    (const char *)p + 2);
		} else
			set_fail(uc, UF_CLOSED, "code=1005 (no status)");
		break;

	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		on_connection_error(uc, wsi, in, len);
		mark_lost(uc);
		break;

	case LWS_CALLBACK_CLIENT_CLOSED:
		set_fail(uc, UF_CLOSED, "code=1006 (no close frame)");
		mark_lost(uc);
		break;

	case LWS_CALLBACK_WSI_DESTROY:
		lws_set_opaque_user_data(wsi, NULL);
		uc->wsi = NULL;
		uc->freed_wsi = true;
		if (!uc->established)
			set_fail(uc, UF_CONNECT, "closed before the handshake "
			    "completed");
		mark_lost(uc);
		if (uc->lost_handled)
			upconn_free(uc);
		/* on the libuv loop this runs in a handle's close callback, after
		 * which lws does not look at its timers: wake it (worker.c) */
		lws_cancel_service(w->ctx);
		break;

	default:
		break;
	}
	return 0;
}

const struct lws_protocols upconn_protocols[] = {
	{
		.name = "codexpool-upstream",
		.callback = upstream_cb,
		.per_session_data_size = 0,
		.rx_buffer_size = UPSTREAM_RX_BUFFER,
		/* lws_issue_raw() sends at most this (else rx_buffer_size) per
		 * call and copies the rest to buflist_out for later POLLOUTs:
		 * let a whole request frame go in one write */
		.tx_packet_size = UPSTREAM_TX_PACKET,
	},
	{ .name = NULL },
};

/* ---- endings ---------------------------------------------------------- */

static void
lost_cb(lws_sorted_usec_list_t *sul)
{
	struct upconn *uc = lws_container_of(sul, struct upconn, sul_lost);
	struct worker *w = uc->w;

	uc->lost_handled = true;
	lws_sul_cancel(&uc->sul_hs);
	ctimer_cancel(&uc->w->ctimers, &uc->t_ping);
	ctimer_cancel(&uc->w->ctimers, &uc->t_live);
	if (uc->pc != NULL) {
		char what[256];

		upconn_describe(uc, what, sizeof(what));
		log_debug("conn=%016llx gone: %s", (unsigned long long)uc->pc->id,
		    what);
		wpool_lost(&w->pool, uc->pc, what);
	}
	if (uc->req != NULL)
		w->uphooks->attempt_failed(uc->req, uc);
	if (uc->freed_wsi)
		upconn_free(uc);
}

static void
upconn_free(struct upconn *uc)
{
	struct worker *w = uc->w;

	lws_sul_cancel(&uc->sul_hs);
	ctimer_cancel(&uc->w->ctimers, &uc->t_ping);
	ctimer_cancel(&uc->w->ctimers, &uc->t_live);
	lws_sul_cancel(&uc->sul_lost);
	if (uc->prev != NULL)
		uc->prev->next = uc->next;
	else
		w->conns = uc->next;
	if (uc->next != NULL)
		uc->next->prev = uc->prev;
	w->nconns--;
	if (uc->uv != NULL && uc->uv->refs > 0 && --uc->uv->refs == 0 &&
	    !uc->uv->current && !w->stop)
		lws_sul_schedule(w->ctx, 0, &w->sul_gc, gc_cb, 1);
	if (uc->pc != NULL) {
		uc->pc->io = NULL;
		wpool_conn_free(&w->pool, uc->pc);
		uc->pc = NULL;
	}
	freezero_str(uc->access_token);
	free(uc->account_id);
	free(uc->session_id);
	while (uc->nhdrs > 0) {
		uc->nhdrs--;
		free(uc->hdr_names[uc->nhdrs]);
		free(uc->hdr_values[uc->nhdrs]);
	}
	free(uc->hdr_names);
	free(uc->hdr_values);
	free(uc->rx);
	free(uc);
	if (!w->stop)
		worker_check_done(w);
}

void
upconn_free_all(struct worker *w)
{
	while (w->conns != NULL)
		upconn_free(w->conns);
}

void
upconn_set_rx(struct worker *w, bool on)
{
	struct upconn *uc;
	usec_t now = now_mono_usec();

	for (uc = w->conns; uc != NULL; uc = uc->next) {
		if (!uc->established || uc->lost || uc->wsi == NULL ||
		    uc->close_pending)
			continue;
		if (on == !uc->rx_off)
			continue;
		lws_rx_flow_control(uc->wsi, on ? 1 : 0);
		uc->rx_off = !on;
		if (on && uc->pc != NULL)
			wpool_activity(uc->pc, now);	/* paused time is not silence */
	}
}

/* ---- vhosts (client TLS trust and proxy) ------------------------------ */

int
upconn_apply_config(struct worker *w, bool rebuild)
{
	struct lws_context_creation_info info;
	struct upvhost *uv, *o;
	char proxy[300];

	if (!rebuild && current_vhost(w) != NULL)
		return 0;
	uv = xcalloc(1, sizeof(*uv));
	snprintf(uv->name, sizeof(uv->name), "upstream-%u", ++w->vhost_gen);

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = upconn_protocols;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.vhost_name = uv->name;	/* lws keeps the pointer */
	info.client_ssl_ca_filepath = w->cfg.ca_file;
	if (w->cfg.proxy_host != NULL) {
		if (strchr(w->cfg.proxy_host, ':') != NULL)
			snprintf(proxy, sizeof(proxy), "[%s]:%d",
			    w->cfg.proxy_host, w->cfg.proxy_port);
		else
			snprintf(proxy, sizeof(proxy), "%s:%d",
			    w->cfg.proxy_host, w->cfg.proxy_port);
		info.http_proxy_address = proxy;
		info.http_proxy_port = (unsigned)w->cfg.proxy_port;
	}
	uv->vh = lws_create_vhost(w->ctx, &info);
	if (uv->vh == NULL) {
		log_warnx("cannot create the upstream vhost (ca_file %s)",
		    w->cfg.ca_file ? w->cfg.ca_file : "system");
		free(uv);
		return -1;
	}
	uv->current = true;
	for (o = w->vhosts; o != NULL; o = o->next)
		o->current = false;
	uv->next = w->vhosts;
	w->vhosts = uv;
	return 0;
}

/* Destroy vhosts no connection uses any more (from a timer, never from
 * inside a callback of one of their connections). */
void
upconn_vhost_gc(struct worker *w)
{
	struct upvhost **pp = &w->vhosts, *uv;

	while ((uv = *pp) != NULL) {
		if (!uv->current && uv->refs == 0) {
			log_debug("dropping vhost %s", uv->name);
			*pp = uv->next;
			lws_vhost_destroy(uv->vh);
			free(uv);
			continue;
		}
		pp = &uv->next;
	}
}

static void
gc_cb(lws_sorted_usec_list_t *sul)
{
	upconn_vhost_gc(lws_container_of(sul, struct worker, sul_gc));
}

/* Exit: the context (and with it every vhost) is gone already. */
void
upconn_vhosts_free(struct worker *w)
{
	struct upvhost *uv;

	while ((uv = w->vhosts) != NULL) {
		w->vhosts = uv->next;
		free(uv);
	}
}
