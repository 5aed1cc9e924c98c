/*
 * OAuth token refresh over libevent's HTTP client.  See oauth.h.
 *
 * Life of a request: parse and vet the URL, build the TLS context (both
 * can refuse at once, before any I/O), resolve the host with evdns
 * (cancellable, unlike a bufferevent's own lookup), connect to the
 * numeric address with evhttp over a plain or OpenSSL bufferevent, and
 * hand the answer to the caller from a deferred event.  Nothing is freed
 * inside a libevent callback that would touch it afterwards: the
 * connection is torn down from our own events only.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "jsonutil.h"
#include "log.h"
#include "oauth.h"
#include "util.h"

#define OAUTH_URL_MAX		2048
#define OAUTH_TOKEN_MAX		(64 * 1024)
#define OAUTH_HEADERS_MAX	(32 * 1024)

struct oauth_req {
	struct event_base	*base;
	struct evdns_base	*dns;
	char			*host;		/* as in the URL (no brackets) */
	char			*host_header;
	char			*path;		/* path and query */
	int			 port;
	bool			 tls;
	char			 addr[INET6_ADDRSTRLEN];	/* what we connect to */
	SSL_CTX			*ctx;
	char			*body;		/* holds the refresh token */
	size_t			 bodylen;
	usec_t			 timeout;

	struct evdns_getaddrinfo_request *dns_req;
	bool			 in_dns;	/* lookup callback still to come */
	struct evhttp_connection *evcon;
	struct event		*ev_timeout;
	struct event		*ev_finish;

	bool			 done;		/* res is final, ev_finish armed */
	bool			 cancelled;	/* only waiting for the lookup callback */
	int			 http_error;	/* enum evhttp_request_error + 1; 0 none */
	char			 tls_error[200];

	struct oauth_result	 res;
	oauth_done_cb		 cb;
	void			*arg;
};

static int ssl_ex_index = -1;
static int live_requests;

static void req_free(struct oauth_req *);
static void start_connect(struct oauth_req *);

const char *
oauth_outcome_name(enum oauth_outcome o)
{
	switch (o) {
	case OAUTH_OK:
		return "ok";
	case OAUTH_PERMANENT:
		return "permanent";
	case OAUTH_TRANSIENT:
		return "transient";
	}
	return "?";
}

/* ---- results ---- */

void
oauth_result_clear(struct oauth_result *res)
{
	freezero_str(res->access_token);
	freezero_str(res->refresh_token);
	freezero_str(res->id_token);
	memset(res, 0, sizeof(*res));
	res->expires_in = -1;
}

static void result_set(struct oauth_result *, enum oauth_outcome, const char *, ...)
	    __attribute__((format(printf, 3, 4)));

static void
result_set(struct oauth_result *res, enum oauth_outcome outcome, const char *fmt, ...)
{
	va_list ap;

	res->outcome = outcome;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
	/* a server could echo what we sent; make sure no token survives */
	log_redact(res->message, sizeof(res->message));
}

/* Copies printable ASCII of s into out; the rest becomes '?'. */
static void
copy_printable(char *out, size_t outsize, const char *s)
{
	size_t i;

	if (outsize == 0)
		return;
	for (i = 0; s != NULL && s[i] != '\0' && i + 1 < outsize; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[i] = '\0';
}

static bool
permanent_code(const char *code)
{
	static const char *const dead[] = {
		"refresh_token_reused",
		"refresh_token_expired",
		"refresh_token_invalidated",
		"invalid_grant",
	};
	size_t i;

	for (i = 0; i < sizeof(dead) / sizeof(dead[0]); i++)
		if (strcmp(code, dead[i]) == 0)
			return true;
	return false;
}

/* A token from the answer: a non-empty string of sane size, or NULL. */
static char *
token_dup(struct json_object *root, const char *key)
{
	const char *v = json_get_str(root, key);
	size_t n;

	if (v == NULL || (n = strlen(v)) == 0 || n > OAUTH_TOKEN_MAX)
		return NULL;
	return xstrdup(v);
}

void
oauth_parse_response(int status, const char *body, size_t len, struct oauth_result *res)
{
	struct json_object *root, *err_obj;
	const char *code = NULL, *msg = NULL;
	char jerr[128], detail[160];

	oauth_result_clear(res);
	res->http_status = status;
	root = body != NULL && len > 0 ? json_parse_buf(body, len, jerr, sizeof(jerr)) : NULL;
	if (root != NULL && !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		root = NULL;
	}

	if (status >= 200 && status < 300) {
		if (root == NULL) {
			result_set(res, OAUTH_TRANSIENT, "token endpoint answered HTTP %d "
			    "with a body that is not a JSON object", status);
			return;
		}
		res->access_token = token_dup(root, "access_token");
		if (res->access_token == NULL) {
			json_object_put(root);
			result_set(res, OAUTH_TRANSIENT, "token endpoint answered HTTP %d "
			    "without an access_token", status);
			return;
		}
		res->refresh_token = token_dup(root, "refresh_token");
		res->id_token = token_dup(root, "id_token");
		res->expires_in = json_get_int(root, "expires_in", -1);
		json_object_put(root);
		result_set(res, OAUTH_OK, "tokens refreshed%s",
		    res->refresh_token ? " (refresh token rotated)" : "");
		return;
	}

	/* The code is in error.code, a string "error", or a top-level "code". */
	if (root != NULL) {
		err_obj = json_get_obj(root, "error");
		if (err_obj != NULL) {
			code = json_get_str(err_obj, "code");
			msg = json_get_str(err_obj, "message");
		} else if ((code = json_get_str(root, "error")) != NULL)
			msg = json_get_str(root, "error_description");
		if (code == NULL)
			code = json_get_str(root, "code");
		if (msg == NULL)
			msg = json_get_str(root, "message");
		if (msg == NULL)
			msg = json_get_str(root, "error_description");
	}
	copy_printable(res->error_code, sizeof(res->error_code), code);
	copy_printable(detail, sizeof(detail), msg);
	if (root == NULL)
		snprintf(detail, sizeof(detail), "body is not JSON");
	json_object_put(root);

	if ((status == 400 || status == 401) && permanent_code(res->error_code))
		result_set(res, OAUTH_PERMANENT, "refresh token rejected (HTTP %d %s): %s",
		    status, res->error_code, detail);
	else
		result_set(res, OAUTH_TRANSIENT, "token endpoint answered HTTP %d%s%s: %s",
		    status, res->error_code[0] ? " " : "", res->error_code, detail);
}

/* ---- URL checks ---- */

struct target {
	char	*host;		/* brackets stripped */
	char	*path;		/* path?query */
	int	 port;
	bool	 tls;
	bool	 numeric;
};

static void
target_free(struct target *t)
{
	free(t->host);
	free(t->path);
	memset(t, 0, sizeof(*t));
}

static bool
is_numeric(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static bool
is_loopback(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

static int
parse_target(const char *url, struct target *t, char *err, size_t errlen)
{
	struct evhttp_uri *uri;
	const char *scheme, *host, *path, *query;
	size_t n;
	int port;

	memset(t, 0, sizeof(*t));
	if (url == NULL || (n = strlen(url)) == 0 || n > OAUTH_URL_MAX) {
		snprintf(err, errlen, "token URL is empty or longer than %d bytes", OAUTH_URL_MAX);
		return -1;
	}
	if ((uri = evhttp_uri_parse_with_flags(url, 0)) == NULL) {
		snprintf(err, errlen, "token URL is not a valid URL");
		return -1;
	}
	scheme = evhttp_uri_get_scheme(uri);
	host = evhttp_uri_get_host(uri);
	if (scheme == NULL || (strcasecmp(scheme, "https") != 0 &&
	    strcasecmp(scheme, "http") != 0)) {
		snprintf(err, errlen, "token URL must start with https:// (or http:// "
		    "for a loopback address)");
		goto fail;
	}
	if (host == NULL || *host == '\0') {
		snprintf(err, errlen, "token URL has no host");
		goto fail;
	}
	if (evhttp_uri_get_userinfo(uri) != NULL) {
		snprintf(err, errlen, "token URL must not carry credentials");
		goto fail;
	}
	t->tls = strcasecmp(scheme, "https") == 0;
	n = strlen(host);
	if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
		t->host = xstrdup(host + 1);
		t->host[n - 2] = '\0';
	} else
		t->host = xstrdup(host);
	port = evhttp_uri_get_port(uri);
	t->port = port > 0 ? port : (t->tls ? 443 : 80);
	if (port == 0 || port > 65535) {
		snprintf(err, errlen, "token URL has a bad port");
		goto fail;
	}
	t->numeric = is_numeric(t->host);
	if (!t->tls && !is_loopback(t->host)) {
		snprintf(err, errlen, "refusing plain http:// to %s: tokens travel in "
		    "clear only to a loopback address (127.0.0.0/8, ::1, localhost); "
		    "use https://", t->host);
		goto fail;
	}
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (path == NULL || *path == '\0')
		path = "/";
	n = strlen(path) + (query ? strlen(query) + 1 : 0) + 1;
	t->path = xmalloc(n);
	snprintf(t->path, n, "%s%s%s", path, query ? "?" : "", query ? query : "");
	evhttp_uri_free(uri);
	return 0;
fail:
	evhttp_uri_free(uri);
	target_free(t);
	return -1;
}

int
oauth_check_url(const char *token_url, char *err, size_t errlen)
{
	struct target t;

	if (parse_target(token_url ? token_url : OAUTH_DEFAULT_TOKEN_URL, &t, err,
	    errlen) != 0)
		return -1;
	target_free(&t);
	return 0;
}

/* ---- TLS ---- */

/* Keeps the first verification failure so the caller learns why. */
static int
verify_cb(int ok, X509_STORE_CTX *xctx)
{
	struct oauth_req *o;
	SSL *ssl;
	int e;

	if (ok)
		return 1;
	ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	o = ssl ? SSL_get_ex_data(ssl, ssl_ex_index) : NULL;
	if (o != NULL && o->tls_error[0] == '\0') {
		e = X509_STORE_CTX_get_error(xctx);
		snprintf(o->tls_error, sizeof(o->tls_error),
		    "certificate verification failed: %s (depth %d)",
		    X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(xctx));
	}
	return 0;
}

static void
openssl_reason(char *out, size_t outsize)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(out, outsize, "unknown OpenSSL error");
	else
		ERR_error_string_n(e, out, outsize);
	ERR_clear_error();
}

static SSL_CTX *
make_ctx(const char *ca_file, char *err, size_t errlen)
{
	char why[200];
	SSL_CTX *ctx;

	if (ssl_ex_index < 0 &&
	    (ssl_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL)) < 0) {
		snprintf(err, errlen, "TLS setup failed (no ex_data index)");
		return NULL;
	}
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		openssl_reason(why, sizeof(why));
		snprintf(err, errlen, "TLS setup failed: %s", why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	if (ca_file != NULL) {
		if (access(ca_file, R_OK) != 0) {
			snprintf(err, errlen, "CA file %s: %s", ca_file, strerror(errno));
			SSL_CTX_free(ctx);
			return NULL;
		}
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			openssl_reason(why, sizeof(why));
			snprintf(err, errlen, "CA file %s: no usable certificate: %s",
			    ca_file, why);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		openssl_reason(why, sizeof(why));
		snprintf(err, errlen, "cannot load the system CA certificates: %s", why);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* An SSL for host: SNI for names, and the name or address to verify. */
static SSL *
make_ssl(struct oauth_req *o)
{
	X509_VERIFY_PARAM *param;
	SSL *ssl;

	if ((ssl = SSL_new(o->ctx)) == NULL)
		return NULL;
	SSL_set_ex_data(ssl, ssl_ex_index, o);
	param = SSL_get0_param(ssl);
	X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (is_numeric(o->host)) {
		/* SNI carries names only (RFC 6066) */
		if (X509_VERIFY_PARAM_set1_ip_asc(param, o->host) != 1)
			goto fail;
	} else {
		if (SSL_set_tlsext_host_name(ssl, o->host) != 1 ||
		    X509_VERIFY_PARAM_set1_host(param, o->host, 0) != 1)
			goto fail;
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

/* ---- completion ---- */

/* Records the outcome once and lets ev_finish deliver it. */
static void
complete(struct oauth_req *o)
{
	if (o->done)
		return;
	o->done = true;
	if (o->ev_timeout != NULL)
		event_del(o->ev_timeout);
	event_active(o->ev_finish, EV_TIMEOUT, 0);
}

static void fail(struct oauth_req *, const char *, ...) __attribute__((format(printf, 2, 3)));

static void
fail(struct oauth_req *o, const char *fmt, ...)
{
	va_list ap;

	if (o->done)
		return;
	oauth_result_clear(&o->res);
	o->res.outcome = OAUTH_TRANSIENT;
	va_start(ap, fmt);
	vsnprintf(o->res.message, sizeof(o->res.message), fmt, ap);
	va_end(ap);
	log_redact(o->res.message, sizeof(o->res.message));
	complete(o);
}

/* Stops all network activity; the lookup, if any, ends in its callback. */
static void
teardown(struct oauth_req *o)
{
	if (o->evcon != NULL) {
		evhttp_connection_free(o->evcon);	/* frees its request too */
		o->evcon = NULL;
	}
	if (o->in_dns && o->dns_req != NULL && !o->cancelled) {
		evdns_getaddrinfo_cancel(o->dns_req);
		o->dns_req = NULL;
	}
	if (o->ev_timeout != NULL)
		event_del(o->ev_timeout);
	if (o->ev_finish != NULL)
		event_del(o->ev_finish);
}

/* Frees now, or, while a lookup callback is owed, when it comes. */
static void
release(struct oauth_req *o)
{
	teardown(o);
	if (o->in_dns) {
		o->cancelled = true;
		return;
	}
	req_free(o);
}

static void
on_finish(evutil_socket_t fd, short what, void *arg)
{
	struct oauth_req *o = arg;

	teardown(o);
	if (o->res.outcome == OAUTH_OK)
		olog(LOG_LVL_DEBUG, "oauth", "refresh via %s: ok (HTTP %d)", o->host,
		    o->res.http_status);
	o->cb(&o->res, o->arg);
	release(o);
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct oauth_req *o = arg;

	/* the connection goes now, so no late answer can race the result */
	if (o->evcon != NULL) {
		evhttp_connection_free(o->evcon);
		o->evcon = NULL;
	}
	fail(o, "no answer from the token endpoint %s:%d within %lld ms", o->host, o->port,
	    (long long)(o->timeout / USEC_PER_MSEC));
}

static const char *
http_error_name(int e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "timed out";
	case EVREQ_HTTP_EOF:
		return "connection closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "malformed HTTP response";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "I/O error";
	case EVREQ_HTTP_REQUEST_CANCEL:
		return "cancelled";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "response too large";
	}
	return "failed";
}

/* Called by evhttp before the request callback when a request fails. */
static void
on_http_error(enum evhttp_request_error e, void *arg)
{
	struct oauth_req *o = arg;

	o->http_error = (int)e + 1;
}

/* No HTTP answer: say as precisely as we can why. */
static void
fail_no_answer(struct oauth_req *o)
{
	struct bufferevent *bev;
	unsigned long e = 0;
	char why[200];

	if (o->tls_error[0] != '\0') {
		fail(o, "TLS with %s:%d refused: %s", o->host, o->port, o->tls_error);
		return;
	}
	if (o->tls && o->evcon != NULL &&
	    (bev = evhttp_connection_get_bufferevent(o->evcon)) != NULL)
		e = bufferevent_get_openssl_error(bev);
	/* libevent stores a bare SSL_get_error() code (no library) for I/O errors */
	if (e != 0 && ERR_GET_LIB(e) != 0) {
		ERR_error_string_n(e, why, sizeof(why));
		fail(o, "TLS handshake with %s:%d failed: %s", o->host, o->port, why);
		return;
	}
	if (e != 0) {
		fail(o, "could not connect to the token endpoint %s:%d (%s), or it closed "
		    "the connection during the TLS handshake", o->host, o->port, o->addr);
		return;
	}
	if (o->http_error != 0) {
		fail(o, "token endpoint %s:%d: %s", o->host, o->port,
		    http_error_name(o->http_error - 1));
		return;
	}
	/*
	 * evhttp reports a failed connect with the request and no error
	 * code, and its cleanup has overwritten errno by then.
	 */
	fail(o, "could not connect to the token endpoint %s:%d (%s): refused or "
	    "unreachable", o->host, o->port, o->addr);
}

static void
on_response(struct evhttp_request *hreq, void *arg)
{
	struct oauth_req *o = arg;
	struct evbuffer *in;
	const char *body;
	size_t len;
	int status;

	if (o->done)
		return;
	status = hreq ? evhttp_request_get_response_code(hreq) : 0;
	if (status <= 0) {
		fail_no_answer(o);
		return;
	}
	in = evhttp_request_get_input_buffer(hreq);
	len = evbuffer_get_length(in);
	if (len > OAUTH_BODY_MAX) {
		fail(o, "token endpoint answered HTTP %d with a body over %d bytes", status,
		    OAUTH_BODY_MAX);
		return;
	}
	body = len ? (const char *)evbuffer_pullup(in, (ev_ssize_t)len) : "";
	oauth_parse_response(status, body, len, &o->res);
	/* the body held the new tokens: do not leave them in the buffer */
	if (len > 0) {
		explicit_bzero((void *)body, len);
		evbuffer_drain(in, len);
	}
	complete(o);
}

/* ---- connecting ---- */

static void
start_connect(struct oauth_req *o)
{
	struct evhttp_request *hreq;
	struct evkeyvalq *h;
	struct bufferevent *bev;
	struct timeval tv;
	char clen[32];
	SSL *ssl = NULL;
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;

	if (o->tls) {
		if ((ssl = make_ssl(o)) == NULL) {
			fail(o, "TLS setup for %s failed", o->host);
			return;
		}
		bev = bufferevent_openssl_socket_new(o->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, opts);
		if (bev == NULL)
			SSL_free(ssl);
		else
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else
		bev = bufferevent_socket_new(o->base, -1, opts);
	if (bev == NULL) {
		fail(o, "cannot create a connection to %s", o->host);
		return;
	}
	/* numeric address and no DNS base: evhttp never resolves anything */
	o->evcon = evhttp_connection_base_bufferevent_new(o->base, NULL, bev, o->addr,
	    (unsigned short)o->port);
	if (o->evcon == NULL) {
		bufferevent_free(bev);
		fail(o, "cannot create a connection to %s", o->host);
		return;
	}
	evhttp_connection_set_retries(o->evcon, 0);
	evhttp_connection_set_max_body_size(o->evcon, OAUTH_BODY_MAX);
	evhttp_connection_set_max_headers_size(o->evcon, OAUTH_HEADERS_MAX);
	tv.tv_sec = (time_t)(o->timeout / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(o->timeout % USEC_PER_SEC);
	evhttp_connection_set_timeout_tv(o->evcon, &tv);

	if ((hreq = evhttp_request_new(on_response, o)) == NULL) {
		fail(o, "out of memory");
		return;
	}
	evhttp_request_set_error_cb(hreq, on_http_error);
	h = evhttp_request_get_output_headers(hreq);
	snprintf(clen, sizeof(clen), "%zu", o->bodylen);
	evhttp_add_header(h, "Host", o->host_header);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Accept", "application/json");
	evhttp_add_header(h, "User-Agent", PACKAGE_NAME "/" PACKAGE_VERSION);
	evhttp_add_header(h, "Connection", "close");
	evhttp_add_header(h, "Content-Length", clen);
	evbuffer_add(evhttp_request_get_output_buffer(hreq), o->body, o->bodylen);
	/*
	 * A failure to even start connecting is reported through
	 * on_response from inside this call; a -1 means the request was
	 * taken off the connection without being freed.
	 */
	if (evhttp_make_request(o->evcon, hreq, EVHTTP_REQ_POST, o->path) != 0) {
		evhttp_request_free(hreq);
		fail(o, "cannot start a request to %s", o->host);
	}
}

/* Prefers IPv4: many hosts have no IPv6 route. */
static const struct evutil_addrinfo *
pick_addr(const struct evutil_addrinfo *ai)
{
	const struct evutil_addrinfo *p;

	for (p = ai; p != NULL; p = p->ai_next)
		if (p->ai_family == AF_INET)
			return p;
	for (p = ai; p != NULL; p = p->ai_next)
		if (p->ai_family == AF_INET6)
			return p;
	return NULL;
}

static void
on_resolved(int result, struct evutil_addrinfo *ai, void *arg)
{
	struct oauth_req *o = arg;
	const struct evutil_addrinfo *p;
	const void *a;

	o->in_dns = false;
	o->dns_req = NULL;
	if (o->cancelled) {
		if (ai != NULL)
			evutil_freeaddrinfo(ai);
		req_free(o);
		return;
	}
	if (result != 0 || (p = pick_addr(ai)) == NULL) {
		fail(o, "cannot resolve %s: %s", o->host,
		    result ? evutil_gai_strerror(result) : "no IPv4 or IPv6 address");
		if (ai != NULL)
			evutil_freeaddrinfo(ai);
		return;
	}
	if (p->ai_family == AF_INET)
		a = &((const struct sockaddr_in *)p->ai_addr)->sin_addr;
	else
		a = &((const struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
	evutil_inet_ntop(p->ai_family, a, o->addr, sizeof(o->addr));
	evutil_freeaddrinfo(ai);
	if (!o->done)
		start_connect(o);
}

static void
req_free(struct oauth_req *o)
{
	if (o == NULL)
		return;
	if (o->ev_timeout != NULL)
		event_free(o->ev_timeout);
	if (o->ev_finish != NULL)
		event_free(o->ev_finish);
	if (o->ctx != NULL)
		SSL_CTX_free(o->ctx);
	oauth_result_clear(&o->res);
	if (o->body != NULL) {
		explicit_bzero(o->body, o->bodylen);
		free(o->body);
	}
	free(o->host);
	free(o->host_header);
	free(o->path);
	free(o);
	live_requests--;
}

int
oauth_pending(void)
{
	return live_requests;
}

/*
 * The request body, built by hand so the only copy of the refresh token
 * is this buffer, which req_free wipes.
 */
static char *
make_body(const char *refresh_token, size_t *len)
{
	static const char head[] = "{\"client_id\":\"" OAUTH_CLIENT_ID "\","
	    "\"grant_type\":\"refresh_token\",\"refresh_token\":\"";
	static const char tail[] = "\"}";
	const unsigned char *p;
	size_t n = 0, cap;
	char *out;

	cap = sizeof(head) + 6 * strlen(refresh_token) + sizeof(tail);
	out = xmalloc(cap);
	memcpy(out, head, sizeof(head) - 1);
	n = sizeof(head) - 1;
	for (p = (const unsigned char *)refresh_token; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\') {
			out[n++] = '\\';
			out[n++] = (char)*p;
		} else if (*p < 0x20) {
			snprintf(out + n, cap - n, "\\u%04x", *p);
			n += 6;
		} else
			out[n++] = (char)*p;
	}
	memcpy(out + n, tail, sizeof(tail));
	n += sizeof(tail) - 1;
	*len = n;
	return out;
}

struct oauth_req *
oauth_refresh(struct event_base *base, struct evdns_base *dns, const char *token_url,
    const char *ca_file, const char *refresh_token, usec_t timeout, oauth_done_cb cb,
    void *arg, char *err, size_t errlen)
{
	struct evutil_addrinfo hints;
	struct evdns_getaddrinfo_request *r;
	struct oauth_req *o;
	struct target t;
	struct timeval tv;
	char portstr[8];
	size_t n;

	if (base == NULL || cb == NULL) {
		snprintf(err, errlen, "oauth_refresh: no event base or callback");
		return NULL;
	}
	if (refresh_token == NULL || (n = strlen(refresh_token)) == 0 || n > OAUTH_TOKEN_MAX) {
		snprintf(err, errlen, "no usable refresh token");
		return NULL;
	}
	if (timeout <= 0) {
		snprintf(err, errlen, "refresh timeout must be positive");
		return NULL;
	}
	if (parse_target(token_url ? token_url : OAUTH_DEFAULT_TOKEN_URL, &t, err,
	    errlen) != 0)
		return NULL;
	/* localhost is always the loopback address: no lookup to trust */
	if (!t.numeric && strcasecmp(t.host, "localhost") != 0 && dns == NULL) {
		snprintf(err, errlen, "token URL host %s needs a DNS resolver", t.host);
		target_free(&t);
		return NULL;
	}

	o = xcalloc(1, sizeof(*o));
	live_requests++;
	o->base = base;
	o->dns = dns;
	o->host = t.host;
	o->path = t.path;
	o->port = t.port;
	o->tls = t.tls;
	o->timeout = timeout;
	o->cb = cb;
	o->arg = arg;
	o->res.expires_in = -1;
	n = strlen(o->host) + 16;
	o->host_header = xmalloc(n);
	snprintf(o->host_header, n, "%s%s%s", strchr(o->host, ':') ? "[" : "", o->host,
	    strchr(o->host, ':') ? "]" : "");
	if (o->port != (o->tls ? 443 : 80)) {
		size_t used = strlen(o->host_header);

		snprintf(o->host_header + used, n - used, ":%d", o->port);
	}
	if (o->tls && (o->ctx = make_ctx(ca_file, err, errlen)) == NULL) {
		req_free(o);
		return NULL;
	}
	o->body = make_body(refresh_token, &o->bodylen);
	o->ev_timeout = evtimer_new(base, on_timeout, o);
	o->ev_finish = event_new(base, -1, 0, on_finish, o);
	if (o->ev_timeout == NULL || o->ev_finish == NULL) {
		snprintf(err, errlen, "out of memory");
		req_free(o);
		return NULL;
	}
	tv.tv_sec = (time_t)(timeout / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(timeout % USEC_PER_SEC);
	evtimer_add(o->ev_timeout, &tv);

	if (t.numeric || strcasecmp(o->host, "localhost") == 0) {
		strlcpy_safe(o->addr, t.numeric ? o->host : "127.0.0.1", sizeof(o->addr));
		start_connect(o);
		return o;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	snprintf(portstr, sizeof(portstr), "%d", o->port);
	o->in_dns = true;
	/* the callback may run before this returns (cached or hosts-file answers) */
	r = evdns_getaddrinfo(dns, o->host, portstr, &hints, on_resolved, o);
	if (o->in_dns)
		o->dns_req = r;
	return o;
}

void
oauth_cancel(struct oauth_req *o)
{
	if (o == NULL)
		return;
	release(o);
}
