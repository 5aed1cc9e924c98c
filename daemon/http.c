/*
 * The client-facing HTTP listener: routes, limits, and error bodies.
 * Everything a client gets back on failure is an OpenAI-style error
 * object with a matching HTTP status.
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "apikeys.h"
#include "front_ws.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "render.h"
#include "supervisor.h"

static struct evhttp_bound_socket *listener;

/*
 * Client connections.  libevent 2.1 has no hook at accept, so each new
 * connection is seen twice: evhttp_set_bevcb() is called while libevent
 * sets it up (we create its bufferevent and keep a reference), and a
 * deferred event, run in the same loop iteration before any I/O on it,
 * finds its evhttp_connection through the bufferevent's callback argument
 * and adopts it: counted, refused over max_client_connections, given the
 * idle and request timeouts, and its close callback (the one place that
 * uncounts it, and calls the hook of the turn it serves, client.c).
 */
#define HTTP_LONG_TIMEOUT	600		/* seconds: a turn's reads and writes */
#define ACCEPT_PAUSE_USEC	(250 * USEC_PER_MSEC)
#define FD_RESERVE_MIN		128		/* fds kept for the store, workers, DNS, refresh */

struct http_conn {
	struct evhttp_connection *evcon;
	int			 fd;
	struct event		*ev_deadline;	/* the request must be in by then */
	void			(*hook)(struct evhttp_connection *, void *);
	void			*hook_arg;
};

static struct http_conn	**conns;	/* by fd */
static size_t		 nconns_slots;
static int		 nconns;
static int		 conn_cap_derived;
static struct bufferevent **adopting;	/* created, not yet adopted */
static size_t		 nadopting, adopting_size;
static struct event	*ev_adopt, *ev_accept_resume;
static struct log_ratelimit accept_rl = LOG_RATELIMIT_INIT(10 * USEC_PER_SEC);
static struct log_ratelimit refuse_rl = LOG_RATELIMIT_INIT(10 * USEC_PER_SEC);

void
send_error(struct evhttp_request *http, int status, const char *type,
    const char *code, const char *fmt, ...)
{
	char msg[1024];
	char *body;
	va_list ap;

	if (http == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	body = json_error_body(msg, type, code);
	http_send_json(http, status, body);
	free(body);
}

void
http_send_json(struct evhttp_request *http, int status, const char *json)
{
	struct evbuffer *out = evbuffer_new();

	evbuffer_add(out, json, strlen(json));
	evhttp_add_header(evhttp_request_get_output_headers(http),
	    "Content-Type", "application/json");
	evhttp_send_reply(http, status, render_reason_phrase(status), out);
	evbuffer_free(out);
}

static void
handle_models(struct evhttp_request *http)
{
	struct json_object *root = json_object_new_object();
	struct json_object *data = json_object_new_array();
	char *list = xstrdup(sv->cfg.models ? sv->cfg.models : ""), *id, *save = NULL;

	for (id = strtok_r(list, ", ", &save); id; id = strtok_r(NULL, ", ", &save)) {
		struct json_object *m = json_object_new_object();
		json_object_object_add(m, "id", json_object_new_string(id));
		json_object_object_add(m, "object", json_object_new_string("model"));
		json_object_object_add(m, "owned_by", json_object_new_string("openai"));
		json_object_array_add(data, m);
	}
	free(list);
	json_object_object_add(root, "object", json_object_new_string("list"));
	json_object_object_add(root, "data", data);
	http_send_json(http, 200, json_plain(root, NULL));
	json_object_put(root);
}

/*
 * Streamed replies are many small writes; with Nagle's algorithm on, each
 * one after the first waits for the client's delayed ACK (40 ms on
 * Linux).  libevent 2.1 gives no hook at accept, so the socket is set here,
 * once per request (cheap, and idempotent on a kept-alive connection).
 */
static void
set_nodelay(struct evhttp_request *http)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(http);
	struct bufferevent *bev;
	evutil_socket_t fd;
	int one = 1;

	if (evcon == NULL || (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0)
		return;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int
http_conn_cap(void)
{
	return sv->cfg.max_client_connections > 0 ? sv->cfg.max_client_connections :
	    conn_cap_derived;
}

int
http_conn_count(void)
{
	return nconns;
}

static void
usec_to_tv(usec_t u, struct timeval *tv)
{
	tv->tv_sec = (time_t)(u / USEC_PER_SEC);
	tv->tv_usec = (suseconds_t)(u % USEC_PER_SEC);
}

static struct http_conn *
conn_of(struct evhttp_connection *evcon)
{
	struct bufferevent *bev;
	evutil_socket_t fd;

	if (evcon == NULL || (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0 || (size_t)fd >= nconns_slots ||
	    conns[fd] == NULL || conns[fd]->evcon != evcon)
		return NULL;
	return conns[fd];
}

/* Idle: waiting for (the rest of) a request.  A quiet client is dropped
 * after client_idle_timeout, a slow one after client_request_timeout. */
static void
conn_set_idle(struct http_conn *c)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
	struct timeval rd, wr = { HTTP_LONG_TIMEOUT, 0 }, dl;

	usec_to_tv(sv->cfg.client_idle_timeout, &rd);
	bufferevent_set_timeouts(bev, &rd, &wr);
	usec_to_tv(sv->cfg.client_request_timeout, &dl);
	evtimer_add(c->ev_deadline, &dl);
}

/* Busy: a request is in; a turn may be silent for minutes. */
static void
conn_set_busy(struct http_conn *c)
{
	evhttp_connection_set_timeout(c->evcon, HTTP_LONG_TIMEOUT);
	evtimer_del(c->ev_deadline);
}

static void
on_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct http_conn *c = arg;

	if (c->hook != NULL)
		c->hook(evcon, c->hook_arg);
	if (c->fd >= 0 && (size_t)c->fd < nconns_slots && conns[c->fd] == c)
		conns[c->fd] = NULL;
	event_free(c->ev_deadline);
	free(c);
	nconns--;
}

static void
on_conn_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn *c = arg;

	log_debug("client connection fd %d: no complete request within "
	    "client_request_timeout: closing it", c->fd);
	evhttp_connection_free(c->evcon);	/* on_conn_closed frees c */
}

void
http_conn_set_hook(struct evhttp_connection *evcon,
    void (*hook)(struct evhttp_connection *, void *), void *arg)
{
	struct http_conn *c = conn_of(evcon);

	if (c == NULL) {
		/* not adopted (cannot happen): libevent's own slot */
		evhttp_connection_set_closecb(evcon, hook, arg);
		return;
	}
	c->hook = hook;
	c->hook_arg = arg;
}

/* The reply to a request went out: the connection waits for the next. */
void
http_reply_done(struct evhttp_request *http)
{
	struct http_conn *c = conn_of(evhttp_request_get_connection(http));

	if (c != NULL)
		conn_set_idle(c);
}

static void
on_plain_reply_done(struct evhttp_request *http, void *arg)
{
	http_reply_done(http);
}

/* Over the cap: a 503 written straight to the socket, then closed.  A
 * client that had already sent its request may see a reset instead. */
static void
refuse_conn(struct evhttp_connection *evcon, evutil_socket_t fd)
{
	char body[512], msg[768];
	char *err;
	int n;

	sv->stats.client_conns_refused++;
	log_ratelimited(&refuse_rl, LOG_LVL_WARN, "%d client connections open "
	    "(max_client_connections): refusing new ones with 503", nconns);
	err = json_error_body("codexpool has its max_client_connections client "
	    "connections open; retry shortly", "server_error", "too_many_connections");
	snprintf(body, sizeof(body), "%s", err);
	free(err);
	n = snprintf(msg, sizeof(msg), "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	    "Retry-After: 1\r\nConnection: close\r\n\r\n%s", strlen(body), body);
	if (n > 0 && (size_t)n < sizeof(msg))
		(void)send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	evhttp_connection_free(evcon);
}

static void
adopt(struct bufferevent *bev)
{
	bufferevent_event_cb errcb = NULL;
	struct evhttp_connection *evcon = NULL;
	struct http_conn *c;
	evutil_socket_t fd;
	void *cbarg = NULL;

	bufferevent_getcb(bev, NULL, NULL, &errcb, &cbarg);
	fd = bufferevent_getfd(bev);
	evcon = cbarg;
	bufferevent_decref(bev);	/* libevent's own reference remains, unless freed */
	if (errcb == NULL || evcon == NULL || fd < 0)
		return;			/* libevent gave up on it already */
	if (nconns >= http_conn_cap()) {
		refuse_conn(evcon, fd);
		return;
	}
	if ((size_t)fd >= nconns_slots) {
		size_t n = nconns_slots ? nconns_slots : 256;
		while (n <= (size_t)fd)
			n *= 2;
		conns = xrealloc(conns, n * sizeof(*conns));
		memset(conns + nconns_slots, 0, (n - nconns_slots) * sizeof(*conns));
		nconns_slots = n;
	}
	c = xcalloc(1, sizeof(*c));
	c->evcon = evcon;
	c->fd = fd;
	c->ev_deadline = evtimer_new(sv->base, on_conn_deadline, c);
	conns[fd] = c;
	nconns++;
	evhttp_connection_set_closecb(evcon, on_conn_closed, c);
	conn_set_idle(c);
}

static void
on_adopt(evutil_socket_t fd, short what, void *arg)
{
	size_t i, n = nadopting;

	nadopting = 0;
	for (i = 0; i < n; i++)
		adopt(adopting[i]);
}

static struct bufferevent *
on_new_conn(struct event_base *base, void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);

	if (bev == NULL)
		return NULL;
	bufferevent_incref(bev);
	if (nadopting == adopting_size) {
		adopting_size = adopting_size ? adopting_size * 2 : 64;
		adopting = xrealloc(adopting, adopting_size * sizeof(*adopting));
	}
	adopting[nadopting++] = bev;
	event_active(ev_adopt, EV_TIMEOUT, 0);
	return bev;
}

/*
 * accept() failed for want of fds (or memory): libevent would retry at
 * once, forever, at 100% CPU.  Pause the listener instead; connections
 * wait in the backlog meanwhile.
 */
static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct timeval tv;
	int err = EVUTIL_SOCKET_ERROR();

	log_ratelimited(&accept_rl, LOG_LVL_WARN, "accept: %s (%d client connections "
	    "open): pausing accepts", evutil_socket_error_to_string(err), nconns);
	evconnlistener_disable(lev);
	usec_to_tv(ACCEPT_PAUSE_USEC, &tv);
	evtimer_add(ev_accept_resume, &tv);
}

static void
on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	if (listener != NULL)
		evconnlistener_enable(evhttp_bound_socket_get_listener(listener));
}

/* The default cap: the fd limit less a reserve for everything else the
 * supervisor opens. */
static void
derive_conn_cap(void)
{
	struct rlimit rl;
	long long cur = 1024, reserve, cap;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		cur = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 8000000 ? 8000000 :
		    (long long)rl.rlim_cur;
	reserve = FD_RESERVE_MIN + cur / 8;
	cap = cur - reserve;
	if (cap < 16)
		cap = 16;
	if (cap > 1000000)
		cap = 1000000;
	conn_cap_derived = (int)cap;
	if (sv->cfg.max_client_connections > 0 &&
	    sv->cfg.max_client_connections > cur - FD_RESERVE_MIN)
		log_warnx("max_client_connections=%d leaves fewer than %d of RLIMIT_NOFILE "
		    "%lld for the rest: accepts will pause when fds run out",
		    sv->cfg.max_client_connections, FD_RESERVE_MIN, cur);
}

/* ---- handing a socket over (client WebSockets) ---------------------- */

static void
free_stolen(evutil_socket_t fd, short what, void *arg)
{
	evhttp_connection_free(arg);	/* on_conn_closed uncounts it */
}

/*
 * evhttp cannot let go of a socket: freeing a connection shuts it down
 * and closes it.  So the socket is first taken off libevent's poll set,
 * duplicated for the worker, and its descriptor number pointed at
 * /dev/null, which is what evhttp then shuts down (ENOTSOCK) and closes.
 * The free itself waits for the next loop turn: we are inside evhttp's
 * request callback.
 */
int
http_steal_socket(struct evhttp_request *http, struct evbuffer *head, size_t head_max)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(http);
	struct bufferevent *bev;
	struct evbuffer *in;
	struct timeval now = { 0, 0 };
	evutil_socket_t fd;
	int nfd = -1, dummy = -1;

	if (evcon == NULL || (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0)
		goto fail;
	in = bufferevent_get_input(bev);
	if (evbuffer_get_length(head) + evbuffer_get_length(in) > head_max) {
		send_error(http, 400, "invalid_request_error", "invalid_upgrade",
		    "data sent before the WebSocket upgrade was answered");
		return -1;
	}
	if ((nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0 ||
	    (dummy = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
		goto fail;
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	evbuffer_add_buffer(head, in);
	if (dup2(dummy, fd) < 0)
		goto fail;
	close(dummy);
	event_base_once(sv->base, -1, EV_TIMEOUT, free_stolen, evcon, &now);
	return nfd;
fail:
	log_warn("cannot hand a client WebSocket over");
	if (nfd >= 0)
		close(nfd);
	if (dummy >= 0)
		close(dummy);
	send_error(http, 503, "server_error", "websocket_unavailable",
	    "codexpool could not take this WebSocket (out of descriptors?); retry");
	return -1;
}

/* The API routes: POST only, each a front-end of the turn lifecycle. */
static const struct api_route {
	const char	*path;
	const char	*alias;		/* for clients given a base URL without /v1 */
	void		(*handle)(struct evhttp_request *);
} api_routes[] = {
	{ "/v1/responses", "/responses", responses_handle },
	{ "/v1/chat/completions", "/chat/completions", chat_handle },
	{ "/v1/messages", "/messages", messages_handle },
	{ "/v1/messages/count_tokens", "/messages/count_tokens", messages_count_tokens },
	{ NULL, NULL, NULL },
};

/* A whole request is in: turn timeouts, and the reply's end makes the
 * connection idle again (client.c chains it for turns). */
static void
conn_request_in(struct evhttp_request *http)
{
	struct http_conn *c = conn_of(evhttp_request_get_connection(http));

	if (c != NULL)
		conn_set_busy(c);
	evhttp_request_set_on_complete_cb(http, on_plain_reply_done, NULL);
}

static void
on_request(struct evhttp_request *http, void *arg)
{
	const struct api_route *r;
	const char *uri = evhttp_request_get_uri(http);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(http);
	char path[256];
	size_t n = strcspn(uri, "?");
	int auth_status;

	set_nodelay(http);
	conn_request_in(http);
	if (n >= sizeof(path))
		n = sizeof(path) - 1;
	memcpy(path, uri, n);
	path[n] = '\0';

	/* Every route but /health needs a client key once one exists. */
	if (strcmp(path, "/health") != 0 &&
	    apikey_check(http, &auth_status) == NULL && auth_status != 0) {
		apikey_reject(http, auth_status);
		return;
	}

	/* The Codex CLI's own transport: a WebSocket on the Responses path. */
	if (cmd == EVHTTP_REQ_GET && (strcmp(path, "/v1/responses") == 0 ||
	    strcmp(path, "/responses") == 0 ||
	    strcmp(path, "/backend-api/codex/responses") == 0) && ws_is_upgrade(http)) {
		ws_upgrade(http);
		return;
	}

	for (r = api_routes; r->path != NULL; r++) {
		if (strcmp(path, r->path) != 0 && (r->alias == NULL || strcmp(path, r->alias) != 0))
			continue;
		if (cmd != EVHTTP_REQ_POST) {
			send_error(http, 405, "invalid_request_error", "method_not_allowed",
			    "%s accepts POST only", path);
			return;
		}
		if (sv->shutting_down) {
			send_error(http, 503, "server_error", "shutting_down",
			    "codexpool is shutting down");
			return;
		}
		r->handle(http);
		return;
	}
	if (strcmp(path, "/v1/models") == 0 || strcmp(path, "/models") == 0) {
		handle_models(http);
		return;
	}
	if (strcmp(path, "/health") == 0) {
		http_send_json(http, 200, "{\"status\":\"ok\"}");
		return;
	}
	/* Behind the key check above: it names the accounts. */
	if (strcmp(path, "/metrics") == 0 && metrics_on_api()) {
		metrics_handle(http);
		return;
	}
	send_error(http, 404, "invalid_request_error", "not_found",
	    "no route for %s %s", cmd == EVHTTP_REQ_GET ? "GET" :
	    cmd == EVHTTP_REQ_POST ? "POST" : "this method on", path);
}

int
http_start(void)
{
	char host[256];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int port;
	evutil_socket_t fd;

	if (parse_hostport(sv->cfg.listen, host, sizeof(host), &port) == -1 || port < 0) {
		log_warnx("listen must be host:port, not '%s'", sv->cfg.listen);
		return -1;
	}
	derive_conn_cap();
	sv->http = evhttp_new(sv->base);
	evhttp_set_max_body_size(sv->http, (ev_ssize_t)sv->cfg.max_body_size);
	evhttp_set_max_headers_size(sv->http, 64 * 1024);
	evhttp_set_timeout(sv->http, HTTP_LONG_TIMEOUT);
	evhttp_set_bevcb(sv->http, on_new_conn, NULL);
	ev_adopt = event_new(sv->base, -1, 0, on_adopt, NULL);
	ev_accept_resume = evtimer_new(sv->base, on_accept_resume, NULL);
	evhttp_set_allowed_methods(sv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(sv->http, on_request, NULL);
	listener = evhttp_bind_socket_with_handle(sv->http, host[0] ? host : "0.0.0.0",
	    (ev_uint16_t)port);
	if (listener == NULL) {
		log_warn("cannot listen on %s", sv->cfg.listen);
		return -1;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(listener),
	    on_accept_error);
	fd = evhttp_bound_socket_get_fd(listener);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		char a[64];
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			snprintf(sv->listen_addr, sizeof(sv->listen_addr), "[%s]:%d", a, ntohs(s6->sin6_port));
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
			snprintf(sv->listen_addr, sizeof(sv->listen_addr), "%s:%d", a, ntohs(s4->sin_port));
		}
	}
	return 0;
}

void
http_stop_accepting(void)
{
	if (ev_accept_resume != NULL)
		evtimer_del(ev_accept_resume);
	if (listener != NULL) {
		evhttp_del_accept_socket(sv->http, listener);
		listener = NULL;
	}
}

void
http_free(void)
{
	if (ev_adopt != NULL)
		on_adopt(-1, 0, NULL);	/* drop our references */
	if (sv->http != NULL)
		evhttp_free(sv->http);	/* closes connections: on_conn_closed */
	sv->http = NULL;
	listener = NULL;
	if (ev_adopt != NULL)
		event_free(ev_adopt);
	if (ev_accept_resume != NULL)
		event_free(ev_accept_resume);
	ev_adopt = ev_accept_resume = NULL;
	free(adopting);
	adopting = NULL;
	nadopting = adopting_size = 0;
	free(conns);
	conns = NULL;
	nconns_slots = 0;
}
