/*
 * The client-facing HTTP listener: routes, limits, and error bodies.
 * Everything a client gets back on failure is an OpenAI-style error
 * object with a matching HTTP status.
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "apikeys.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "render.h"
#include "supervisor.h"

static struct evhttp_bound_socket *listener;

void
send_error(struct evhttp_request *http, int status, const char *type,
    const char *code, const char *fmt, ...)
{
	struct evbuffer *out;
	char msg[1024];
	char *body;
	va_list ap;

	if (http == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	body = json_error_body(msg, type, code);
	out = evbuffer_new();
	evbuffer_add(out, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(http),
	    "Content-Type", "application/json");
	evhttp_send_reply(http, status, render_reason_phrase(status), out);
	evbuffer_free(out);
	free(body);
}

static void
send_json(struct evhttp_request *http, int status, const char *json)
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
	send_json(http, 200, json_plain(root, NULL));
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
		send_json(http, 200, "{\"status\":\"ok\"}");
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
	sv->http = evhttp_new(sv->base);
	evhttp_set_max_body_size(sv->http, (ev_ssize_t)sv->cfg.max_body_size);
	evhttp_set_max_headers_size(sv->http, 64 * 1024);
	evhttp_set_timeout(sv->http, 600);
	evhttp_set_allowed_methods(sv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(sv->http, on_request, NULL);
	listener = evhttp_bind_socket_with_handle(sv->http, host[0] ? host : "0.0.0.0",
	    (ev_uint16_t)port);
	if (listener == NULL) {
		log_warn("cannot listen on %s", sv->cfg.listen);
		return -1;
	}
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
	if (listener != NULL) {
		evhttp_del_accept_socket(sv->http, listener);
		listener = NULL;
	}
}

void
http_free(void)
{
	if (sv->http != NULL)
		evhttp_free(sv->http);
	sv->http = NULL;
	listener = NULL;
}
