/*
 * Worker slots: spawn, talk to, reap and respawn the worker processes.
 *
 * Each slot has one socketpair.  A worker is this binary re-executed with
 * -W <slot> and the channel on fd 3, so it starts from a clean address
 * space.  A worker that dies is reaped, its cause logged, and a new one is
 * started in the same slot after a backoff; the conversations hashed to
 * the slot come back to it, which keeps the consistent hash stable.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "msgcodec.h"
#include "front_ws.h"
#include "supervisor.h"
#include "turn.h"

#define BACKOFF_MIN	(100 * USEC_PER_MSEC)
#define BACKOFF_MAX	(10 * USEC_PER_SEC)
#define STABLE_AFTER	(30 * USEC_PER_SEC)	/* a worker up this long resets the backoff */

static void	on_chan_read(evutil_socket_t, short, void *);
static void	on_chan_write(evutil_socket_t, short, void *);
static void	on_respawn(evutil_socket_t, short, void *);

static void
chan_want_write(struct worker_slot *w)
{
	if (w->chan && msgchan_pending(w->chan) > 0)
		event_add(w->ev_write, NULL);
}

int
workers_send(int slot, uint32_t type, uint64_t rid, const struct msgbuf *b)
{
	struct worker_slot *w = &sv->slots[slot];
	int rc;

	if (w->chan == NULL)
		return MSGCHAN_EOF;
	rc = b ? msgchan_send_buf(w->chan, type, rid, b) :
	    msgchan_send(w->chan, type, rid, NULL, 0, -1);
	if (rc == MSGCHAN_FULL)
		log_warnx("worker %d: channel queue full, dropped %s", slot, msg_type_name(type));
	chan_want_write(w);
	return rc;
}

int
workers_send_fd(int slot, uint32_t type, uint64_t rid, const struct msgbuf *b, int fd)
{
	struct worker_slot *w = &sv->slots[slot];
	int rc;

	if (w->chan == NULL)
		return MSGCHAN_EOF;
	if (b->failed)
		return MSGCHAN_FULL;
	rc = msgchan_send(w->chan, type, rid, b->buf, b->len, fd);
	if (rc == MSGCHAN_FULL)
		log_warnx("worker %d: channel queue full, dropped %s", slot, msg_type_name(type));
	chan_want_write(w);
	return rc;
}

void
workers_broadcast(uint32_t type, const struct msgbuf *b)
{
	int i;

	for (i = 0; i < sv->nslots; i++)
		workers_send(i, type, 0, b);
}

void
workers_send_config(int slot)
{
	const struct codexpool_config *c = &sv->cfg;
	struct m_config mc = {
		.upstream_host = sv->up.host,
		.upstream_port = (uint32_t)sv->up.port,
		.upstream_path = sv->up.path,
		.tls = sv->up.tls,
		.ca_file = c->upstream_ca_file,
		.proxy_host = sv->up.proxy_host ? sv->up.proxy_addr : "",
		.proxy_port = (uint32_t)sv->up.proxy_port,
		.pool_enabled = sv->pool_enabled,
		.max_age_us = (uint64_t)c->ws_pool_max_age,
		.ping_interval_us = (uint64_t)c->ws_ping_interval,
		.handshake_timeout_us = (uint64_t)c->handshake_timeout,
		.response_start_timeout_us = (uint64_t)c->response_start_timeout,
		.originator = c->originator,
		.client_version = c->client_version,
	};
	struct msgbuf b;

	msgbuf_init(&b);
	m_config_encode(&b, &mc);
	workers_send(slot, MSG_CONFIG, 0, &b);
	msgbuf_free(&b);
}

void
workers_send_addrs(int slot)
{
	struct m_upstream_addrs ma;
	struct msgbuf b;
	int i;

	if (sv->up.naddrs == 0)
		return;
	for (i = 0; i < sv->up.naddrs && i < M_MAX_ADDRS; i++)
		ma.addrs[i] = sv->up.addrs[i];
	ma.naddrs = (uint32_t)i;
	msgbuf_init(&b);
	m_upstream_addrs_encode(&b, &ma);
	workers_send(slot, MSG_UPSTREAM_ADDRS, 0, &b);
	msgbuf_free(&b);
}

static int
spawn(struct worker_slot *w)
{
	char slotarg[16];
	char *argv[8];
	int sp[2], argc = 0;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == -1) {
		log_warn("worker %d: socketpair", w->index);
		return -1;
	}
	snprintf(slotarg, sizeof(slotarg), "%d", w->index);
	argv[argc++] = "codexpoold";
	argv[argc++] = "-W";
	argv[argc++] = slotarg;
	argv[argc++] = "-d";
	argv[argc++] = sv->cfg.log_level;
	if (sv->foreground)
		argv[argc++] = "-f";
	argv[argc] = NULL;

	switch (pid = fork()) {
	case -1:
		log_warn("worker %d: fork", w->index);
		close(sp[0]);
		close(sp[1]);
		return -1;
	case 0:
		/* fd 3 is the channel; nothing else of the supervisor leaks in. */
		if (dup2(sp[1], 3) == -1)
			_exit(127);
		close_range(4, ~0U, 0);
		signal(SIGPIPE, SIG_DFL);
		execv(sv->self_exe, argv);
		_exit(127);
	}
	close(sp[1]);
	w->pid = pid;
	w->state = SLOT_STARTING;
	w->started_at = now_mono_usec();
	w->chan = msgchan_new(sp[0]);
	w->ev_read = event_new(sv->base, sp[0], EV_READ | EV_PERSIST, on_chan_read, w);
	w->ev_write = event_new(sv->base, sp[0], EV_WRITE | EV_PERSIST, on_chan_write, w);
	event_add(w->ev_read, NULL);
	/* The worker reads these before anything else we queue. */
	workers_send_config(w->index);
	workers_send_addrs(w->index);
	log_debug("worker %d: started pid %d", w->index, (int)pid);
	return 0;
}

int
workers_start(void)
{
	int i, n = sv->cfg.workers;

	if (n <= 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (int)cpus : 1;
	}
	if (n > SV_MAX_WORKERS)
		n = SV_MAX_WORKERS;
	sv->nslots = n;
	for (i = 0; i < n; i++) {
		struct worker_slot *w = &sv->slots[i];
		w->index = i;
		w->backoff = BACKOFF_MIN;
		w->ev_respawn = evtimer_new(sv->base, on_respawn, w);
		if (spawn(w) == -1)
			return -1;
	}
	return 0;
}

/* The channel is gone (EOF, error, or the process was reaped). */
static void
slot_lost(struct worker_slot *w)
{
	if (w->chan == NULL)
		return;
	event_free(w->ev_read);
	event_free(w->ev_write);
	w->ev_read = w->ev_write = NULL;
	msgchan_free(w->chan);
	w->chan = NULL;
	pm_slot_gone(&sv->pool, w->index);
	ws_worker_died(w->index);	/* first: its client sockets died with it */
	turn_worker_died(w->index);
}

static void
on_respawn(evutil_socket_t fd, short what, void *arg)
{
	struct worker_slot *w = arg;

	if (sv->shutting_down || w->pid != 0)
		return;
	if (spawn(w) == -1) {
		struct timeval tv = { 1, 0 };
		evtimer_add(w->ev_respawn, &tv);
		return;
	}
	w->restarts++;
	sv->stats.worker_restarts++;
	/* Turns that were waiting for this slot go out on the new worker. */
	turn_worker_ready(w->index);
}

static void
handle_msg(struct worker_slot *w, const struct msg *m)
{
	union {
		struct m_hello		hello;
		struct m_conn_up	up;
		struct m_conn_down	down;
		struct m_rate_limits	rl;
	} p;

	switch (m->hdr.type) {
	case MSG_HELLO: {
		if (m_hello_decode(m, &p.hello) == -1 ||
		    p.hello.proto_version != MSG_PROTO_VERSION) {
			log_warnx("worker %d: speaks protocol %u, we speak %u; stopping it",
			    w->index, p.hello.proto_version, MSG_PROTO_VERSION);
			kill(w->pid, SIGTERM);
			return;
		}
		w->state = sv->shutting_down ? SLOT_STOPPING : SLOT_UP;
		log_debug("worker %d: up (pid %d)", w->index, (int)w->pid);
		break;
	}
	case MSG_CONN_UP:
		if (m_conn_up_decode(m, &p.up) == 0)
			pm_conn_up(&sv->pool, p.up.conn_id, p.up.key_hash, p.up.entry,
			    w->index, now_mono_usec());
		break;
	case MSG_CONN_DOWN:
		if (m_conn_down_decode(m, &p.down) == 0)
			pm_conn_down(&sv->pool, p.down.conn_id);
		break;
	case MSG_RATE_LIMITS:
		if (m_rate_limits_decode(m, &p.rl) == 0)
			accounts_on_rate_limits(p.rl.entry, p.rl.frame, p.rl.frame_len);
		break;
	case MSG_STATS:
		control_on_worker_stats(w->index, m);	/* show workers, status */
		break;
	case MSG_WS_TURN:
	case MSG_WS_GONE:
		ws_on_worker_msg(w->index, m);
		break;
	default:
		turn_on_worker_msg(w->index, m);
		break;
	}
}

static void
on_chan_read(evutil_socket_t fd, short what, void *arg)
{
	struct worker_slot *w = arg;
	struct msg m;
	int rc, next;

	rc = msgchan_read(w->chan);
	/* Handle what arrived even if the worker then closed: its final
	 * messages (DONE/ERROR) matter.  More bytes waiting in the socket
	 * fire this event again (level-triggered). */
	while (w->chan != NULL && (next = msgchan_next(w->chan, &m)) == 1) {
		handle_msg(w, &m);
		if (m.fd >= 0)
			close(m.fd);
	}
	if (w->chan == NULL)
		return;
	if (next < 0 || rc == MSGCHAN_EOF || rc == MSGCHAN_ERROR || rc == MSGCHAN_PROTO) {
		if (!sv->shutting_down || rc != MSGCHAN_EOF)
			log_warnx("worker %d: channel %s", w->index,
			    rc == MSGCHAN_EOF ? "closed" : "broken");
		slot_lost(w);
	}
}

/* A dead worker's channel: handle every message it left, to the EOF. */
static void
chan_drain(struct worker_slot *w)
{
	struct msg m;
	int rc, handled;

	while (w->chan != NULL) {
		rc = msgchan_read(w->chan);
		handled = 0;
		while (w->chan != NULL && msgchan_next(w->chan, &m) == 1) {
			handle_msg(w, &m);
			if (m.fd >= 0)
				close(m.fd);
			handled++;
		}
		/* EOF or an error ends it; so does a read that found nothing
		 * (EAGAIN: something else still holds the worker's end). */
		if (rc != MSGCHAN_OK || handled == 0)
			break;
	}
}

static void
on_chan_write(evutil_socket_t fd, short what, void *arg)
{
	struct worker_slot *w = arg;

	if (msgchan_flush(w->chan) < 0) {
		slot_lost(w);
		return;
	}
	if (msgchan_pending(w->chan) == 0)
		event_del(w->ev_write);
}

static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d%s", WTERMSIG(status),
		    WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}

void
workers_reap(void)
{
	char cause[64];
	pid_t pid;
	int status, i;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0; i < sv->nslots; i++)
			if (sv->slots[i].pid == pid)
				break;
		if (i == sv->nslots)
			continue;
		struct worker_slot *w = &sv->slots[i];
		describe_exit(status, cause, sizeof(cause));
		w->pid = 0;
		/* Its last messages (a DONE, a CONN_DOWN) may still be in the
		 * channel: SIGCHLD can come before the read event. */
		chan_drain(w);
		slot_lost(w);
		if (sv->shutting_down) {
			log_debug("worker %d (pid %d) stopped: %s", i, (int)pid, cause);
			w->state = SLOT_DOWN;
			continue;
		}
		w->state = SLOT_DOWN;
		if (w->draining) {
			struct timeval now_tv = { 0, 0 };
			log_info("worker %d (pid %d) drained and stopped; restarting it", i, (int)pid);
			w->draining = false;
			w->backoff = BACKOFF_MIN;
			evtimer_add(w->ev_respawn, &now_tv);
			continue;
		}
		log_warnx("worker %d (pid %d) terminated: %s", i, (int)pid, cause);
		if (now_mono_usec() - w->started_at > STABLE_AFTER)
			w->backoff = BACKOFF_MIN;
		struct timeval tv = { (time_t)(w->backoff / USEC_PER_SEC),
		    (suseconds_t)(w->backoff % USEC_PER_SEC) };
		evtimer_add(w->ev_respawn, &tv);
		log_info("worker %d: respawning in %lld ms", i, (long long)(w->backoff / USEC_PER_MSEC));
		w->backoff = w->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : w->backoff * 2;
	}
	if (sv->shutting_down)
		shutdown_maybe_done();
}

/*
 * A stop is complete when every worker has exited and every final reply
 * has been written to its client; a reply whose client stalls gets one
 * second at most.
 */
void
shutdown_maybe_done(void)
{
	static bool flushing;
	struct timeval tv = { 1, 0 };

	if (workers_running() != 0)
		return;
	if (sv->replies_flushing == 0) {
		event_base_loopexit(sv->base, NULL);
		return;
	}
	if (!flushing) {
		flushing = true;
		event_base_loopexit(sv->base, &tv);
	}
}

int
workers_running(void)
{
	int i, n = 0;

	for (i = 0; i < sv->nslots; i++)
		if (sv->slots[i].pid != 0)
			n++;
	return n;
}

static void
on_shutdown_deadline(evutil_socket_t fd, short what, void *arg)
{
	int i;

	for (i = 0; i < sv->nslots; i++)
		if (sv->slots[i].pid != 0) {
			log_warnx("worker %d (pid %d) did not stop in time; terminating it",
			    i, (int)sv->slots[i].pid);
			kill(sv->slots[i].pid, SIGKILL);
		}
	/* Reaping follows; whatever is still stuck after that is given up. */
	struct timeval tv = { 2, 0 };
	event_base_loopexit(sv->base, &tv);
}

void
workers_shutdown(usec_t grace)
{
	struct m_shutdown sd = { .grace_us = (uint64_t)grace };
	struct msgbuf b;
	struct timeval tv;
	int i;

	msgbuf_init(&b);
	m_shutdown_encode(&b, &sd);
	for (i = 0; i < sv->nslots; i++) {
		evtimer_del(sv->slots[i].ev_respawn);
		if (sv->slots[i].pid != 0) {
			sv->slots[i].state = SLOT_STOPPING;
			workers_send(i, MSG_SHUTDOWN, 0, &b);
		}
	}
	msgbuf_free(&b);
	/* Give workers a little longer than the grace to close politely. */
	grace += 2 * USEC_PER_SEC;
	tv.tv_sec = (time_t)(grace / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(grace % USEC_PER_SEC);
	if (sv->ev_shutdown_deadline == NULL)
		sv->ev_shutdown_deadline = evtimer_new(sv->base, on_shutdown_deadline, NULL);
	evtimer_add(sv->ev_shutdown_deadline, &tv);
	shutdown_maybe_done();
}

/* Stop giving a worker new conversations; restart it once its turns are done. */
int
workers_drain(int slot)
{
	struct worker_slot *w;

	if (slot < 0 || slot >= sv->nslots)
		return -1;
	w = &sv->slots[slot];
	if (w->pid == 0)
		return -1;
	if (!w->draining)
		log_info("worker %d: draining (%d turns running)", slot, workers_slot_inflight(slot));
	w->draining = true;
	workers_check_drained(slot);
	return 0;
}

int
workers_slot_inflight(int slot)
{
	return sv->slots[slot].nturns;
}

void
workers_check_drained(int slot)
{
	struct worker_slot *w = &sv->slots[slot];
	struct m_shutdown sd = { .grace_us = (uint64_t)sv->cfg.shutdown_timeout };
	struct msgbuf b;

	if (!w->draining || w->pid == 0 || w->state == SLOT_STOPPING ||
	    w->nturns > 0)
		return;
	w->state = SLOT_STOPPING;
	msgbuf_init(&b);
	m_shutdown_encode(&b, &sd);
	workers_send(slot, MSG_SHUTDOWN, 0, &b);
	msgbuf_free(&b);
}

void
workers_free(void)
{
	int i;

	for (i = 0; i < sv->nslots; i++) {
		struct worker_slot *w = &sv->slots[i];
		if (w->pid != 0) {
			int status;
			kill(w->pid, SIGKILL);
			waitpid(w->pid, &status, 0);
			w->pid = 0;
		}
		slot_lost(w);
		if (w->ev_respawn)
			event_free(w->ev_respawn);
		w->ev_respawn = NULL;
	}
}
