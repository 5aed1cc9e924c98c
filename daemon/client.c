/*
 * The HTTP client of a turn: headers committed at the first output, SSE
 * chunks, a final reply, keepalives, and the judgement of a client that
 * reads too slowly.  Knows libevent's evhttp; knows nothing of workers.
 */
#include "config.h"

#include <sys/socket.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "render.h"
#include "supervisor.h"
#include "turn.h"

#define SLOW_CLIENT_GRACE (10 * USEC_PER_SEC)	/* backlog above max_client_buffer this long: drop */
#define SLOW_CLIENT_HARD 4			/* backlog above 4 x max_client_buffer: drop at once */

static void
on_reply_flushed(struct evhttp_request *http, void *arg)
{
	http_reply_done(http);
	if (sv->replies_flushing > 0)
		sv->replies_flushing--;
	if (sv->shutting_down)
		shutdown_maybe_done();
}

/* Count a final reply until libevent has written it, so a stopping
 * daemon does not cut off the end of a response. */
static void
track_final_reply(struct evhttp_request *http)
{
	evhttp_request_set_on_complete_cb(http, on_reply_flushed, NULL);
	sv->replies_flushing++;
}

/*
 * Until the reply starts, libevent reads nothing from the client, so it
 * would not see a client that left.  A read event on the socket watches
 * for it (recv with MSG_PEEK: nothing is consumed); once the reply
 * starts, libevent's own close detection takes over.
 */
static void
stop_watch(struct turn *t)
{
	if (t->cl.ev_gone != NULL)
		event_free(t->cl.ev_gone);
	t->cl.ev_gone = NULL;
}

static void on_close(struct evhttp_connection *evcon, void *arg);

static void
on_client_readable(evutil_socket_t fd, short what, void *arg)
{
	struct turn *t = arg;
	struct evhttp_connection *evcon = t->cl.evcon;
	char c;
	ssize_t n;

	n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	stop_watch(t);
	if (n > 0 || evcon == NULL)
		return;		/* a pipelined request: cannot tell, stop watching */
	log_info("rid=%08" PRIx64 ": client closed its connection before the reply",
	    t->rid);
	http_conn_set_hook(evcon, NULL, NULL);
	on_close(evcon, t);		/* may free t */
	evhttp_connection_free(evcon);
}

static void
start_watch(struct turn *t)
{
	struct bufferevent *bev;
	evutil_socket_t fd;

	if (t->cl.evcon == NULL ||
	    (bev = evhttp_connection_get_bufferevent(t->cl.evcon)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0)
		return;
	t->cl.ev_gone = event_new(sv->base, fd, EV_READ | EV_PERSIST, on_client_readable, t);
	if (t->cl.ev_gone != NULL)
		event_add(t->cl.ev_gone, NULL);
}

static void
on_close(struct evhttp_connection *evcon, void *arg)
{
	struct turn *t = arg;

	stop_watch(t);

	/*
	 * A client that leaves before we finished replying: libevent detaches
	 * the unfinished request from its connection and leaves it to us to
	 * free.  A request still attached is freed with the connection.
	 */
	if (t->cl.http != NULL && evhttp_request_get_connection(t->cl.http) == NULL)
		evhttp_request_free(t->cl.http);
	t->cl.http = NULL;
	t->cl.evcon = NULL;
	t->cl.gone = true;
	turn_client_left(t);
}

void
client_attach(struct turn *t, struct evhttp_request *http)
{
	t->cl.http = http;
	t->cl.evcon = evhttp_request_get_connection(http);
	if (t->cl.evcon != NULL) {
		http_conn_set_hook(t->cl.evcon, on_close, t);
		start_watch(t);
	}
}

void
client_detach(struct turn *t)
{
	stop_watch(t);
	if (t->cl.evcon != NULL)
		http_conn_set_hook(t->cl.evcon, NULL, NULL);
	t->cl.evcon = NULL;
	t->cl.http = NULL;
}

void
client_start_stream(struct turn *t, const char *content_type)
{
	struct evkeyvalq *h;
	char rid[32];

	if (t->cl.http == NULL)
		return;
	stop_watch(t);
	h = evhttp_request_get_output_headers(t->cl.http);
	evhttp_add_header(h, "Content-Type", content_type);
	evhttp_add_header(h, "Cache-Control", "no-cache");
	snprintf(rid, sizeof(rid), "%08" PRIx64, t->rid);
	evhttp_add_header(h, "x-codexpool-request-id", rid);
	evhttp_send_reply_start(t->cl.http, 200, "OK");
	t->cl.last_write = now_mono_usec();
}

/*
 * A client is too slow when it leaves more than max_client_buffer unread
 * for SLOW_CLIENT_GRACE, or more than SLOW_CLIENT_HARD times that at any
 * moment.  The grace lets a burst of large frames through to a client that
 * reads; the hard limit bounds memory for one that does not.
 */
static bool
too_slow(struct turn *t)
{
	struct bufferevent *bev;
	size_t backlog;
	usec_t now;

	if (t->cl.evcon == NULL ||
	    (bev = evhttp_connection_get_bufferevent(t->cl.evcon)) == NULL)
		return false;
	backlog = evbuffer_get_length(bufferevent_get_output(bev));
	if (backlog <= sv->cfg.max_client_buffer) {
		t->cl.backlog_since = 0;
		return false;
	}
	if (backlog > SLOW_CLIENT_HARD * sv->cfg.max_client_buffer)
		return true;
	now = now_mono_usec();
	if (t->cl.backlog_since == 0)
		t->cl.backlog_since = now;
	return now - t->cl.backlog_since > SLOW_CLIENT_GRACE;
}

bool
client_check_slow(struct turn *t)
{
	struct evhttp_connection *evcon = t->cl.evcon;

	if (evcon == NULL || !too_slow(t))
		return false;
	log_warnx("rid=%08" PRIx64 ": client reads too slowly (more than "
	    "max_client_buffer queued): dropping it", t->rid);
	http_conn_set_hook(evcon, NULL, NULL);
	on_close(evcon, t);
	evhttp_connection_free(evcon);
	return true;
}

void
client_write(struct turn *t, struct evbuffer *buf)
{
	if (t->cl.http == NULL)
		return;
	/* Judge the backlog before adding to it: one large frame is fine,
	 * a client that leaves max_client_buffer unread is not. */
	if (client_check_slow(t))
		return;
	evhttp_send_reply_chunk(t->cl.http, buf);
	t->cl.last_write = now_mono_usec();
}

void
client_end_stream(struct turn *t)
{
	if (t->cl.http == NULL)
		return;
	stop_watch(t);
	track_final_reply(t->cl.http);
	evhttp_send_reply_end(t->cl.http);
}

void
client_reply(struct turn *t, int status, const char *content_type, const char *body,
    size_t len, int64_t retry_after)
{
	struct evbuffer *out;
	char ra[32];

	if (t->cl.http == NULL)
		return;
	stop_watch(t);
	out = evbuffer_new();
	evbuffer_add(out, body, len);
	evhttp_add_header(evhttp_request_get_output_headers(t->cl.http),
	    "Content-Type", content_type);
	if (retry_after >= 0) {
		snprintf(ra, sizeof(ra), "%lld", (long long)retry_after);
		evhttp_add_header(evhttp_request_get_output_headers(t->cl.http),
		    "Retry-After", ra);
	}
	track_final_reply(t->cl.http);
	evhttp_send_reply(t->cl.http, status, render_reason_phrase(status), out);
	evbuffer_free(out);
}

void
client_keepalive(struct turn *t)
{
	struct evbuffer *buf;

	if (t->cl.http == NULL)
		return;
	buf = evbuffer_new();
	evbuffer_add(buf, ": keepalive\n\n", 13);
	client_write(t, buf);
	evbuffer_free(buf);
}
