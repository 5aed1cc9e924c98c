/*
 * A worker process: one shard of the upstream WebSocket pool.
 *
 * Everything runs in one libwebsockets 4.1.6 loop: the supervisor
 * channel (a socketpair end adopted as a RAW_FILE descriptor, because
 * then we do the reads ourselves and could take passed fds), the
 * upstream client connections, and every timer (lws_sul).  Nothing
 * blocks: no DNS (the supervisor sends numeric addresses), no disk
 * after start-up, no sleeping.
 *
 * The worker stops when the supervisor says so (MSG_SHUTDOWN: finish the
 * running turns within the grace period) or at once when the channel
 * reaches EOF (the supervisor is gone: nobody would read our answers).
 *
 * The loop is libuv's (epoll), ours, driven by lws' evlib_uv plugin:
 * lws' own poll() loop walks every descriptor on every wakeup, which
 * made a turn cost O(connections).  Why libuv and not libev (lws 4.1.6,
 * lib/event-libs/): both glues re-arm their one timer for the lws_sul
 * list only in that timer's callback and in an idle callback started
 * after every descriptor event.  libev's idle callback does
 * ev_timer_set() + ev_timer_start() on a timer that may still be active,
 * and ev_timer_start() on an active watcher does nothing, so a sul
 * earlier than the armed one waited for it (the 4 s late connect
 * failure).  libuv's uv_timer_start() re-arms an active timer.  So every
 * sul, ours or lws' own, fires on time as long as it is scheduled from
 * inside an lws callback (descriptor, sul or idle) -- all our code runs
 * there -- or before the first uv_run() (the idle handler starts armed).
 * The exception is WSI_DESTROY, which runs in a libuv close callback (lws
 * closes handles asynchronously on libuv): upstream.c wakes the loop with
 * lws_cancel_service() there, a descriptor event.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"
#include "msgcodec.h"
#include "relay.h"
#include "upstream.h"
#include "worker.h"
#include "worker_int.h"
#include "wsclient.h"

#define WORKER_FD_LIMIT		65536
#define WORKER_EXIT_FLUSH_MS	2000
/* uv_run(NOWAIT) rounds for lws' asynchronous handle closes at exit */
#define WORKER_CLOSE_ROUNDS	10000

static void
lws_log_emit(int level, const char *line)
{
	char buf[512];
	size_t n;

	snprintf(buf, sizeof(buf), "%s", line);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (level & LLL_ERR)
		log_warnx("lws: %s", buf);
	else
		log_info("lws: %s", buf);
}

/* ---- sending to the supervisor ---------------------------------------- */

/* Append raw bytes (msg.h has no public raw add). */
static void
msgbuf_append(struct msgbuf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;

		while (cap < b->len + n)
			cap *= 2;
		b->buf = xrealloc(b->buf, cap);
		b->cap = cap;
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
}

static void
defer_msg(struct worker *w, uint32_t type, uint64_t rid, const struct msgbuf *b)
{
	struct deferred_msg *d = xcalloc(1, sizeof(*d));

	d->type = type;
	d->rid = rid;
	msgbuf_init(&d->body);
	if (b != NULL && b->len > 0)
		msgbuf_append(&d->body, b->buf, b->len);
	*w->deferred_tail = d;
	w->deferred_tail = &d->next;
}

/* Leave the loop: it may be about to sleep in epoll_wait(), so wake it
 * (lws' event pipe: a descriptor event, after which lws re-arms its timer). */
static void
worker_stop(struct worker *w, int code)
{
	if (!w->stop)
		w->exit_code = code;
	w->stop = true;
	if (w->ctx != NULL)
		lws_cancel_service(w->ctx);
}

static void
chan_gone(struct worker *w, const char *why)
{
	if (w->chan_dead)
		return;
	log_warnx("supervisor channel: %s; stopping", why);
	w->chan_dead = true;
	worker_stop(w, 0);
}

/* Must-deliver messages refused by a full queue, in order. */
static void
flush_deferred(struct worker *w)
{
	struct deferred_msg *d;
	int rc;

	while ((d = w->deferred) != NULL && !w->chan_dead) {
		rc = msgchan_send(w->chan, d->type, d->rid, d->body.buf,
		    d->body.len, -1);
		if (rc == MSGCHAN_FULL)
			break;
		if (rc != MSGCHAN_OK)
			chan_gone(w, "write failed");
		w->deferred = d->next;
		if (w->deferred == NULL)
			w->deferred_tail = &w->deferred;
		msgbuf_free(&d->body);
		free(d);
	}
}

static void
free_deferred(struct worker *w)
{
	struct deferred_msg *d;

	while ((d = w->deferred) != NULL) {
		w->deferred = d->next;
		msgbuf_free(&d->body);
		free(d);
	}
	w->deferred_tail = &w->deferred;
}

static void
chan_rearm(lws_sorted_usec_list_t *sul)
{
	struct worker *w = lws_container_of(sul, struct worker, sul_chan_rearm);

	if (!w->chan_dead && w->chan_wsi != NULL)
		lws_callback_on_writable(w->chan_wsi);
}

void
worker_chan_kick(struct worker *w)
{
	size_t pending;

	if (w->chan_dead)
		return;
	pending = msgchan_pending(w->chan);
	if (w->flush_at_turn_end && w->deferred == NULL &&
	    pending < MSGCHAN_CORK_MAX) {
		/* corked: the end of this loop turn writes it (main loop) */
	} else if ((pending > 0 || w->deferred != NULL) && w->chan_wsi != NULL) {
		if (w->in_chan_writeable)
			lws_sul_schedule(w->ctx, 0, &w->sul_chan_rearm, chan_rearm, 1);
		else
			lws_callback_on_writable(w->chan_wsi);
	}
	if (!w->rx_paused && pending > WORKER_CHAN_HIGH) {
		log_info("supervisor channel above %u bytes: pausing upstream "
		    "reads", (unsigned)WORKER_CHAN_HIGH);
		w->rx_paused = true;
		w->rx_pauses++;
		upconn_set_rx(w, false);
	}
}

/*
 * Send one message.  final: it must not be lost (decisions, finals,
 * connection up/down); when the queue is full it waits in the deferred
 * list.  Other messages (events) report MSGCHAN_FULL to the caller,
 * which fails its turn instead of dropping data silently.
 */
int
worker_send(struct worker *w, uint32_t type, uint64_t rid, struct msgbuf *b,
    bool final)
{
	int rc;

	if (w->chan_dead)
		return MSGCHAN_ERROR;
	if (!final && w->deferred != NULL) {
		/* must-deliver messages are waiting: nothing may overtake them */
		w->chan_full++;
		return MSGCHAN_FULL;
	}
	if (final && w->deferred != NULL) {
		defer_msg(w, type, rid, b);	/* keep their order */
		worker_chan_kick(w);
		return MSGCHAN_OK;
	}
	if (b != NULL)
		rc = msgchan_send_buf(w->chan, type, rid, b);
	else
		rc = msgchan_send(w->chan, type, rid, NULL, 0, -1);
	if (rc == MSGCHAN_FULL) {
		w->chan_full++;
		if (final) {
			defer_msg(w, type, rid, b);
			rc = MSGCHAN_OK;
		}
	} else if (rc == MSGCHAN_ERROR || rc == MSGCHAN_EOF) {
		chan_gone(w, errno == EPIPE ? "supervisor gone" : "write failed");
	}
	worker_chan_kick(w);
	return rc;
}

/*
 * Send the close frame ourselves, then the caller returns -1.  Not
 * lws_close_reason(): Debian's lws 4.1.6 is built with _DEBUG, and then on
 * the libuv loop service.c closes a wsi a second time right after a
 * callback asked for the close ("close_and_handled uv repeat test"), which
 * kills it before lws has written the close frame it queued.
 * lws_write() takes a close frame as type 4 (LWS_WRITE_CLOSE, private to
 * lws: lib/roles/ws/private-lib-roles-ws.h).
 */
#define WS_WRITE_CLOSE	4

int
worker_ws_close(struct lws *wsi, int code, const char *reason)
{
	uint8_t buf[LWS_PRE + 125];	/* a control frame's payload limit */
	size_t n = strlen(reason);

	if (n > 123)
		n = 123;
	buf[LWS_PRE] = (uint8_t)(code >> 8);
	buf[LWS_PRE + 1] = (uint8_t)code;
	memcpy(buf + LWS_PRE + 2, reason, n);
	return lws_write(wsi, buf + LWS_PRE, n + 2,
	    (enum lws_write_protocol)WS_WRITE_CLOSE) < 0 ? -1 : 0;
}

/* ---- supervisor messages ---------------------------------------------- */

static void
cfg_free(struct wcfg *c)
{
	free(c->host);
	free(c->path);
	free(c->ca_file);
	free(c->proxy_host);
	free(c->originator);
	free(c->client_version);
	memset(c, 0, sizeof(*c));
}

static char *
dup_nonempty(const char *s)
{
	return (s != NULL && *s != '\0') ? xstrdup(s) : NULL;
}

static bool
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Durations arrive as u64 microseconds; anything past INT64_MAX is "off". */
static usec_t
usec_of(uint64_t v)
{
	return v > (uint64_t)INT64_MAX ? 0 : (usec_t)v;
}

static void
handle_config(struct worker *w, const struct msg *m)
{
	struct m_config p;
	struct wcfg c;
	bool rebuild;

	if (m_config_decode(m, &p) == -1) {
		log_warnx("malformed MSG_CONFIG ignored");
		return;
	}
	memset(&c, 0, sizeof(c));
	c.host = dup_nonempty(p.upstream_host);
	c.port = p.upstream_port <= 65535 ? (int)p.upstream_port : 0;
	c.path = dup_nonempty(p.upstream_path);
	c.tls = p.tls;
	c.ca_file = dup_nonempty(p.ca_file);
	c.proxy_host = dup_nonempty(p.proxy_host);
	c.proxy_port = p.proxy_port <= 65535 ? (int)p.proxy_port : 0;
	c.pool_enabled = p.pool_enabled;
	c.max_age = usec_of(p.max_age_us);
	c.ping_interval = usec_of(p.ping_interval_us);
	c.handshake_timeout = usec_of(p.handshake_timeout_us);
	c.start_timeout = usec_of(p.response_start_timeout_us);
	c.originator = dup_nonempty(p.originator);
	c.client_version = dup_nonempty(p.client_version);
	if (c.host == NULL || c.port <= 0 || c.port > 65535 || c.path == NULL ||
	    c.path[0] != '/' || (c.proxy_host != NULL &&
	    (c.proxy_port <= 0 || c.proxy_port > 65535))) {
		log_warnx("MSG_CONFIG with a bad upstream (host %s port %d "
		    "path %s) ignored", c.host ? c.host : "-", c.port,
		    c.path ? c.path : "-");
		cfg_free(&c);
		return;
	}

	if (c.ca_file != NULL && access(c.ca_file, R_OK) != 0)
		log_warn("ca_file %s is not readable; TLS handshakes will fail",
		    c.ca_file);
	rebuild = !w->configured || c.tls != w->cfg.tls ||
	    !str_eq(c.ca_file, w->cfg.ca_file) ||
	    !str_eq(c.proxy_host, w->cfg.proxy_host) ||
	    c.proxy_port != w->cfg.proxy_port;
	cfg_free(&w->cfg);
	w->cfg = c;

	wpool_set_max_age(&w->pool, c.max_age);
	wpool_set_liveness(&w->pool, upstream_liveness_window(c.ping_interval));
	if (!w->configured || c.pool_enabled != w->pool.enabled)
		wpool_set_enabled(&w->pool, c.pool_enabled);
	if (upconn_apply_config(w, rebuild) != 0)
		log_warnx("upstream settings not applied; new connections "
		    "keep the previous ones");
	if (!w->configured)
		log_info("configured: upstream %s:%d%s tls=%s proxy=%s pool=%s",
		    c.host, c.port, c.path, c.tls ? "yes" : "no",
		    c.proxy_host ? c.proxy_host : "none",
		    c.pool_enabled ? "on" : "off");
	w->configured = true;
}

static void
handle_addrs(struct worker *w, const struct msg *m)
{
	struct m_upstream_addrs p;
	char **v = NULL;
	uint32_t i, n;

	if (m_upstream_addrs_decode(m, &p) == -1) {
		log_warnx("malformed MSG_UPSTREAM_ADDRS ignored");
		return;
	}
	n = p.naddrs;
	if (n > 0)
		v = xcalloc(n, sizeof(*v));
	for (i = 0; i < n; i++)
		v[i] = xstrdup(p.addrs[i]);
	for (i = 0; i < w->naddrs; i++)
		free(w->addrs[i]);
	free(w->addrs);
	w->addrs = v;
	w->naddrs = n;
	w->addr_rr = 0;
}

/* A counter; M_MAX_STATS is well above what send_stats() lists. */
static void
stat_put(struct m_stats *items, const char *name, uint64_t v)
{
	if (!m_stats_add(items, name, v))
		log_warnx("stat %s dropped: more than %d counters", name,
		    M_MAX_STATS);
}

static void
send_stats(struct worker *w, uint64_t rid)
{
	const struct pool *p = &w->pool;
	const struct pool_stats *st = &p->st;
	struct m_stats *items = xcalloc(1, sizeof(*items));
	struct msgbuf b;

	stat_put(items, "conns_open", wpool_count_pooled(p));
	stat_put(items, "conns_busy", wpool_count_state(p, CONN_BUSY));
	stat_put(items, "conns_idle", wpool_count_state(p, CONN_IDLE));
	stat_put(items, "conns_connecting",
	    wpool_count_state(p, CONN_CONNECTING));
	stat_put(items, "conns_closing", wpool_count_state(p, CONN_CLOSING));
	stat_put(items, "oneshot_open", wpool_count_oneshot(p));
	stat_put(items, "sockets", w->nconns);
	stat_put(items, "requests_inflight", w->reqs.count);
	stat_put(items, "requests_total", w->requests_total);
	stat_put(items, "requests_failed", w->requests_failed);
	stat_put(items, "stream_errors", w->stream_errors);
	stat_put(items, "dispatch_reuse", st->dispatch_reuse);
	stat_put(items, "dispatch_new", st->dispatch_new);
	stat_put(items, "bypass_busy", st->bypass[BYP_BUSY]);
	stat_put(items, "bypass_cap", st->bypass[BYP_CAP]);
	stat_put(items, "bypass_dead", st->bypass[BYP_DEAD]);
	stat_put(items, "bypass_disabled", st->bypass[BYP_DISABLED]);
	stat_put(items, "bypass_no_key", st->bypass[BYP_NO_KEY]);
	stat_put(items, "bypass_factory_error",
	    st->bypass[BYP_FACTORY_ERROR]);
	stat_put(items, "bypass_expired", st->bypass[BYP_EXPIRED]);
	stat_put(items, "retry_stale", st->retry_stale);
	stat_put(items, "fresh_closed", st->fresh_closed);
	stat_put(items, "continue_refused", st->continue_errors);
	stat_put(items, "conns_opened", st->conns_opened);
	stat_put(items, "conns_closed", st->conns_closed);
	stat_put(items, "oneshot_opened", st->oneshot_opened);
	stat_put(items, "liveness_kills", st->liveness_kills);
	stat_put(items, "expired", st->expired);
	stat_put(items, "evicted", st->evicted);
	stat_put(items, "frames_relayed", w->frames_relayed);
	stat_put(items, "bytes_relayed", w->bytes_relayed);
	stat_put(items, "chan_pending", msgchan_pending(w->chan));
	stat_put(items, "chan_full", w->chan_full);
	stat_put(items, "rx_paused", w->rx_paused);
	stat_put(items, "rx_pauses", w->rx_pauses);
	stat_put(items, "pool_enabled", p->enabled);
	stat_put(items, "ws_clients", w->clients.count);
	stat_put(items, "ws_clients_total", w->ws_adopted);
	stat_put(items, "ws_turns", w->ws_turns);

	msgbuf_init(&b);
	m_stats_encode(&b, items);
	worker_send(w, MSG_STATS, rid, &b, true);
	msgbuf_free(&b);
	free(items);
}

static void
grace_cb(lws_sorted_usec_list_t *sul)
{
	struct worker *w = lws_container_of(sul, struct worker, sul_grace);
	struct upconn *uc, *next;

	log_info("shutdown grace over: %zu turns and %zu connections left",
	    (size_t)w->reqs.count, w->nconns);
	relay_fail_all(w, "worker shutting down: grace period over");
	for (uc = w->conns; uc != NULL; uc = next) {
		next = uc->next;
		if (uc->pc != NULL)
			wpool_close(&w->pool, uc->pc, "shutdown");
	}
	worker_stop(w, 0);
}

void
worker_check_done(struct worker *w)
{
	if (w->shutting_down && !w->stop && w->reqs.count == 0 &&
	    w->conns == NULL && w->clients.count == 0) {
		log_info("shutdown complete");
		worker_stop(w, 0);
	}
}

static void
handle_shutdown(struct worker *w, const struct msg *m)
{
	struct m_shutdown p;
	uint64_t grace;

	if (m_shutdown_decode(m, &p) == -1) {
		log_warnx("malformed MSG_SHUTDOWN: stopping without grace");
		p.grace_us = 0;
	}
	grace = p.grace_us > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX :
	    p.grace_us;
	if (w->shutting_down)
		return;
	w->shutting_down = true;
	log_info("shutting down: %zu turns running, grace %llu ms",
	    (size_t)w->reqs.count, (unsigned long long)(grace / 1000));
	wsclient_shutdown(w);	/* first: 1001, not the 1012 of a retired connection */
	wpool_retire_all(&w->pool, "shutdown");
	lws_sul_schedule(w->ctx, 0, &w->sul_grace, grace_cb,
	    grace > 0 ? (lws_usec_t)grace : 1);
	worker_check_done(w);
}

static void
malformed(const struct msg *m)
{
	log_warnx("malformed %s (%u bytes) ignored", msg_type_name(m->hdr.type),
	    m->hdr.len);
}

static void
handle_msg(struct worker *w, const struct msg *m)
{
	struct m_evict ev;
	struct m_conn_close cc;
	struct m_pool_enable pe;

	switch (m->hdr.type) {
	case MSG_CONFIG:
		handle_config(w, m);
		break;
	case MSG_UPSTREAM_ADDRS:
		handle_addrs(w, m);
		break;
	case MSG_REQ_START:
		relay_req_start(w, m);
		break;
	case MSG_REQ_CANCEL:
		if (m_req_cancel_decode(m) == -1)
			malformed(m);
		else
			relay_req_cancel(w, m->hdr.rid);
		break;
	case MSG_EVICT:
		if (m_evict_decode(m, &ev) == -1)
			malformed(m);
		else
			log_info("evict acct=%.4s: %zu connections", ev.entry,
			    wpool_evict_entry(&w->pool, ev.entry));
		break;
	case MSG_CONN_CLOSE:
		if (m_conn_close_decode(m, &cc) == -1)
			malformed(m);
		else
			wpool_close_id(&w->pool, cc.conn_id, *cc.reason != '\0' ?
			    cc.reason : "closed by supervisor");
		break;
	case MSG_POOL_ENABLE:
		if (m_pool_enable_decode(m, &pe) == -1)
			malformed(m);
		else {
			log_info("pool %s", pe.enabled ? "enabled" : "disabled");
			wpool_set_enabled(&w->pool, pe.enabled);
		}
		break;
	case MSG_STATS_REQ:
		if (m_stats_req_decode(m) == -1)
			malformed(m);
		else
			send_stats(w, m->hdr.rid);
		break;
	case MSG_SHUTDOWN:
		handle_shutdown(w, m);
		break;
	case MSG_WS_ADOPT:
		wsclient_adopt(w, m);
		break;
	case MSG_WS_REPLY:
		wsclient_reply(w, m);
		break;
	case MSG_WS_CLOSE:
		wsclient_close_msg(w, m);
		break;
	default:
		log_warnx("unexpected message %s (%u) ignored",
		    msg_type_name(m->hdr.type), m->hdr.type);
		break;
	}
}

static void
chan_read(struct worker *w)
{
	struct msg m;
	int rc, n;

	rc = msgchan_read(w->chan);
	while (!w->stop && (n = msgchan_next(w->chan, &m)) == 1) {
		if (m.fd >= 0 && m.hdr.type != MSG_WS_ADOPT) {
			close(m.fd);	/* only a client socket comes with one */
			m.fd = -1;
		}
		handle_msg(w, &m);
	}
	if (w->stop)
		return;
	if (n < 0) {
		log_warnx("supervisor channel: malformed frame");
		w->chan_dead = true;
		worker_stop(w, 1);
		return;
	}
	if (rc == MSGCHAN_EOF)
		chan_gone(w, "EOF (supervisor gone)");
	else if (rc == MSGCHAN_ERROR || rc == MSGCHAN_PROTO)
		chan_gone(w, "read error");
}

static void
chan_write(struct worker *w)
{
	int rc;

	rc = msgchan_flush(w->chan);
	if (rc == MSGCHAN_ERROR || rc == MSGCHAN_EOF) {
		chan_gone(w, "write failed");
		return;
	}
	if (msgchan_pending(w->chan) < WORKER_CHAN_LOW) {
		flush_deferred(w);
		if (w->rx_paused && msgchan_pending(w->chan) < WORKER_CHAN_LOW) {
			log_info("supervisor channel drained: resuming "
			    "upstream reads");
			w->rx_paused = false;
			upconn_set_rx(w, true);
		}
	}
	worker_chan_kick(w);
}

static int
chan_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct worker *w = lws_context_user(lws_get_context(wsi));

	(void)user;
	(void)in;
	(void)len;
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		if (!w->stop)
			chan_read(w);
		break;
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		if (!w->stop) {
			w->in_chan_writeable = true;
			chan_write(w);
			w->in_chan_writeable = false;
		}
		break;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		w->chan_wsi = NULL;
		if (!w->stop)
			chan_gone(w, "closed");
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols chan_protocols[] = {
	{ .name = "codexpool-chan", .callback = chan_cb },
	{ .name = NULL },
};

static void
sweep_cb(lws_sorted_usec_list_t *sul)
{
	struct worker *w = lws_container_of(sul, struct worker, sul_sweep);

	wpool_sweep(&w->pool, now_mono_usec());
	upconn_vhost_gc(w);
	lws_sul_schedule(w->ctx, 0, &w->sul_sweep, sweep_cb, WORKER_SWEEP_USEC);
}

/* Bounded: the loop is over, a stuck supervisor must not keep us. */
static void
final_flush(struct worker *w)
{
	usec_t deadline = now_mono_usec() + WORKER_EXIT_FLUSH_MS * USEC_PER_MSEC;
	struct pollfd pfd;

	while (!w->chan_dead && (msgchan_pending(w->chan) > 0 ||
	    w->deferred != NULL) && now_mono_usec() < deadline) {
		if (msgchan_flush(w->chan) < 0)
			break;
		flush_deferred(w);
		if (msgchan_pending(w->chan) == 0 && w->deferred == NULL)
			break;
		pfd.fd = msgchan_fd(w->chan);
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			break;
	}
}

static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	/* lws sizes its fd tables by the soft limit: enough for thousands
	 * of connections, not a million-entry table */
	rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > WORKER_FD_LIMIT)
	    ? WORKER_FD_LIMIT : rl.rlim_max;
	(void)setrlimit(RLIMIT_NOFILE, &rl);
}

static void
cancel_timers(struct worker *w)
{
	struct upconn *uc;

	lws_sul_cancel(&w->sul_sweep);
	lws_sul_cancel(&w->sul_grace);
	lws_sul_cancel(&w->sul_gc);
	lws_sul_cancel(&w->sul_chan_rearm);
	for (uc = w->conns; uc != NULL; uc = uc->next) {
		lws_sul_cancel(&uc->sul_hs);
		lws_sul_cancel(&uc->sul_lost);
	}
}

/* A pooled connection left the pool: the supervisor hears (upstream.c),
 * and a client WebSocket paired with it must reconnect (wsclient.c). */
static void
pool_left(void *arg, struct pool_conn *c, const char *reason)
{
	upconn_pool_left(arg, c, reason);
	wsclient_conn_left(arg, c->id);
}

/*
 * lws 4.1.6 on a foreign libuv loop closes its handles asynchronously: the
 * first lws_context_destroy() starts closing every wsi, the loop runs the
 * close callbacks (our WSI_DESTROY ones among them) and lws then closes
 * its idle and timer handles; the second call frees the context.
 */
static void
destroy_context(struct worker *w, uv_loop_t *loop)
{
	int i;

	lws_context_destroy(w->ctx);
	for (i = 0; i < WORKER_CLOSE_ROUNDS; i++)
		if (uv_run(loop, UV_RUN_NOWAIT) == 0)
			break;
	if (i == WORKER_CLOSE_ROUNDS)
		log_warnx("libwebsockets left handles open at exit");
	lws_context_destroy(w->ctx);
	w->ctx = NULL;
	if (uv_loop_close(loop) != 0)
		log_warnx("event loop not closed: handles still open");
	/* libuv's process-wide state (its signal lock pipe); the worker
	 * process ends after this and uses libuv no more */
	uv_library_shutdown();
}

int
worker_main(int slot, int chan_fd)
{
	static const struct pool_hooks hooks = {
		.left = pool_left,
		.close = upconn_pool_close,
	};
	struct lws_context_creation_info info;
	lws_sock_file_fd_type fd;
	uv_loop_t loop;
	void *foreign_loops[1] = { &loop };
	struct worker w;
	struct msgbuf b;
	char name[32];
	size_t i;
	int lfd, rc;

	memset(&w, 0, sizeof(w));
	snprintf(name, sizeof(name), "worker %d", slot);
	log_set_procname(name);

	/* the supervisor stops us with MSG_SHUTDOWN; SIGTERM stays fatal */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	/* lws would pick a proxy from the environment; ours is in the config */
	unsetenv("http_proxy");
	raise_fd_limit();
	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);

	w.slot = slot;
	w.pid = getpid();
	w.exit_code = 0;
	w.deferred_tail = &w.deferred;
	idmap_init(&w.reqs);
	idmap_init(&w.clients);
	idmap_init(&w.client_pairs);
	w.uphooks = &relay_upconn_hooks;
	wpool_init(&w.pool, slot, (uint32_t)w.pid, &hooks, &w);

	if ((w.chan = msgchan_new(chan_fd)) == NULL) {
		log_warnx("cannot use the supervisor channel (fd %d)", chan_fd);
		wpool_free(&w.pool);
		return 1;
	}
	msgchan_set_wq_limit(w.chan, WORKER_CHAN_LIMIT);

	if (uv_loop_init(&loop) != 0) {
		log_warnx("cannot create the event loop");
		msgchan_free(w.chan);
		wpool_free(&w.pool);
		return 1;
	}
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
	    LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_LIBUV;
	info.foreign_loops = foreign_loops;
	info.user = &w;
	info.pt_serv_buf_size = 32 * 1024;	/* the handshake: token + headers */
	info.max_http_header_data = 16 * 1024;	/* upgrade response headers */
	info.timeout_secs = 60;		/* our own timers come first */
	w.ctx = lws_create_context(&info);
	/* lws' evlib_uv plugin put its idle and timer handles on our loop */
	if (w.ctx == NULL || !uv_loop_alive(&loop)) {
		log_warnx("cannot create the libwebsockets context on the libuv "
		    "loop: is lws' libuv plugin (libwebsockets-evlib_uv.so, "
		    "Debian package libwebsockets-evlib-uv) installed?");
		if (w.ctx != NULL)
			destroy_context(&w, &loop);
		else {
			(void)uv_loop_close(&loop);
			uv_library_shutdown();
		}
		msgchan_free(w.chan);
		wpool_free(&w.pool);
		return 1;
	}
	log_info("event loop: libuv %s (epoll) through lws' evlib_uv plugin",
	    uv_version_string());

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = chan_protocols;
	info.vhost_name = "supervisor";
	w.chan_vh = lws_create_vhost(w.ctx, &info);
	/* lws owns (and closes) its own descriptor of the channel */
	lfd = w.chan_vh != NULL ?
	    fcntl(msgchan_fd(w.chan), F_DUPFD_CLOEXEC, 0) : -1;
	if (lfd >= 0) {
		fd.filefd = lfd;
		w.chan_wsi = lws_adopt_descriptor_vhost(w.chan_vh,
		    LWS_ADOPT_RAW_FILE_DESC, fd, chan_protocols[0].name, NULL);
		if (w.chan_wsi == NULL)
			close(lfd);
	}
	if (w.chan_wsi != NULL && wsclient_init(&w) != 0)
		log_warnx("cannot create the client WebSocket vhost: client "
		    "WebSockets will be refused");
	if (w.chan_wsi == NULL) {
		log_warnx("cannot adopt the supervisor channel");
		w.exit_code = 1;
		w.stop = true;
	}

	if (!w.stop) {
		msgbuf_init(&b);
		m_hello_encode(&b, &(struct m_hello){
		    .proto_version = MSG_PROTO_VERSION, .slot = (uint32_t)slot,
		    .pid = (uint32_t)w.pid });
		worker_send(&w, MSG_HELLO, 0, &b, true);
		msgbuf_free(&b);
		lws_sul_schedule(w.ctx, 0, &w.sul_sweep, sweep_cb,
		    WORKER_SWEEP_USEC);
		log_info("started (pid %d)", (int)w.pid);
	}

	/*
	 * The channel is corked: what a loop turn sends to the supervisor
	 * (the events of one upstream read, say) goes in one write at the
	 * turn's end, so both processes make one syscall and one wakeup
	 * for them, not one each.
	 */
	msgchan_cork(w.chan, true);
	while (!w.stop) {
		w.flush_at_turn_end = true;
		rc = uv_run(&loop, UV_RUN_ONCE);
		w.flush_at_turn_end = false;
		if (!w.chan_dead && msgchan_pending(w.chan) > 0)
			chan_write(&w);
		if (rc == 0 && !uv_loop_alive(&loop)) {
			log_warnx("event loop has nothing left to wait for");
			w.exit_code = 1;
			break;
		}
	}
	msgchan_cork(w.chan, false);

	/* ---- teardown ---- */
	w.stop = true;
	if (!w.chan_dead && w.reqs.count > 0) {
		/* a broken loop with turns running: still answer them */
		w.stop = false;
		relay_fail_all(&w, "worker stopping");
		w.stop = true;
	}
	final_flush(&w);
	relay_free_all(&w);
	cancel_timers(&w);
	destroy_context(&w, &loop);
	upconn_free_all(&w);
	upconn_vhosts_free(&w);
	wsclient_free_all(&w);
	wpool_free(&w.pool);
	idmap_free(&w.reqs);
	cfg_free(&w.cfg);
	for (i = 0; i < w.naddrs; i++)
		free(w.addrs[i]);
	free(w.addrs);
	free_deferred(&w);
	msgchan_free(w.chan);
	log_info("exiting (%d)", w.exit_code);
	return w.exit_code;
}
