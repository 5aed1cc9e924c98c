/*
 * The metrics families, their few counters of their own, and the
 * optional metrics_listen listener.  Everything else is read at scrape
 * time from the counters `codexpoolctl status` and `show workers` show.
 */
#include "config.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "metrics.h"
#include "msgtypes.h"
#include "store.h"
#include "front_ws.h"
#include "supervisor.h"

/* Turn outcomes, a fixed list: the label set stays bounded. */
enum {
	OUT_COMPLETED,		/* response.completed relayed */
	OUT_FAILED,		/* a terminal upstream error event relayed */
	OUT_STREAM_ERROR,	/* the stream broke after it started */
	OUT_ERROR,		/* an error reply before any output */
	OUT_CLIENT_GONE,	/* the client left first */
	OUT_N
};
static const char *const outcome_names[OUT_N] = {
	"completed", "failed", "stream_error", "error", "client_gone",
};

struct route_stats {
	char		 name[32];
	uint64_t	 turns[OUT_N];
	struct mhist	 ttft;
	struct mhist	 duration;
};

struct acct_stats {
	char		 name[64];
	uint64_t	 in[METRICS_MAX_ROUTES];
	uint64_t	 cached[METRICS_MAX_ROUTES];
	uint64_t	 out[METRICS_MAX_ROUTES];
};

static struct route_stats routes[METRICS_MAX_ROUTES];
static int nroutes;
static struct acct_stats accts[METRICS_MAX_ACCOUNTS];
static int naccts;
static uint64_t refreshes_ok, refreshes_failed;

static struct evhttp *mhttp;

/* The route's row; the last row is shared once the table is full. */
static int
route_index(const char *route)
{
	int i;

	if (route == NULL)
		route = "unknown";
	for (i = 0; i < nroutes; i++)
		if (strcmp(routes[i].name, route) == 0)
			return i;
	if (nroutes == METRICS_MAX_ROUTES)
		return METRICS_MAX_ROUTES - 1;
	snprintf(routes[nroutes].name, sizeof(routes[nroutes].name), "%s",
	    nroutes == METRICS_MAX_ROUTES - 1 ? "other" : route);
	return nroutes++;
}

static struct acct_stats *
acct_row(const char *name)
{
	int i;

	for (i = 0; i < naccts; i++)
		if (strcmp(accts[i].name, name) == 0)
			return &accts[i];
	if (naccts == METRICS_MAX_ACCOUNTS)
		return &accts[METRICS_MAX_ACCOUNTS - 1];
	snprintf(accts[naccts].name, sizeof(accts[naccts].name), "%s",
	    naccts == METRICS_MAX_ACCOUNTS - 1 ? "other" : name);
	return &accts[naccts++];
}

static const char *
account_name(const struct account *a)
{
	return a->label != NULL && *a->label ? a->label : a->entry;
}

void
metrics_turn_started(const char *route, usec_t ttft)
{
	mhist_observe(&routes[route_index(route)].ttft, (double)ttft / USEC_PER_SEC);
}

void
metrics_turn_end(const char *route, int status, const char *what, usec_t duration,
    uint64_t in, uint64_t cached, uint64_t out, const struct account *a)
{
	int r = route_index(route), o;
	struct acct_stats *as;

	if (status == 499)
		o = OUT_CLIENT_GONE;
	else if (status != 200)
		o = OUT_ERROR;
	else if (what != NULL && strcmp(what, "completed") == 0)
		o = OUT_COMPLETED;
	else if (what != NULL && strcmp(what, "failed") == 0)
		o = OUT_FAILED;
	else
		o = OUT_STREAM_ERROR;
	routes[r].turns[o]++;
	mhist_observe(&routes[r].duration, (double)duration / USEC_PER_SEC);
	if (a == NULL || (in == 0 && cached == 0 && out == 0))
		return;
	as = acct_row(account_name(a));
	as->in[r] += in;
	as->cached[r] += cached;
	as->out[r] += out;
}

void
metrics_token_refresh(bool ok)
{
	if (ok)
		refreshes_ok++;
	else
		refreshes_failed++;
}

/* ---- families ------------------------------------------------------- */

static void
u64_family(struct evbuffer *b, const char *name, const char *type, const char *help,
    uint64_t v)
{
	mw_family(b, name, type, help);
	mw_u64(b, name, NULL, v);
}

static void
render_totals(struct evbuffer *b)
{
	const struct sv_stats *s = &sv->stats;

	mw_family(b, "codexpool_start_time_seconds", "gauge",
	    "when codexpoold started, unix seconds");
	mw_u64(b, "codexpool_start_time_seconds", NULL, (uint64_t)((now_wall_usec() -
	    (now_mono_usec() - sv->started_at)) / USEC_PER_SEC));
	u64_family(b, "codexpool_requests_total", "counter",
	    "client turns dispatched to a worker", s->requests);
	u64_family(b, "codexpool_requests_failed_total", "counter",
	    "client turns that did not complete", s->requests_failed);
	u64_family(b, "codexpool_client_aborts_total", "counter",
	    "clients that closed their connection before the end of their turn",
	    s->client_aborts);
	u64_family(b, "codexpool_retries_total", "counter",
	    "retryable failures sent again before any output", s->retries);
	u64_family(b, "codexpool_retried_on_respawn_total", "counter",
	    "turns sent again because their worker died before any output",
	    s->retried_on_respawn);
	u64_family(b, "codexpool_account_moves_total", "counter",
	    "turns moved off their affinity account", s->account_moves);
	u64_family(b, "codexpool_resumed_turns_total", "counter",
	    "turns sent upstream as an implicit resume", s->resumed);
	u64_family(b, "codexpool_resume_fallbacks_total", "counter",
	    "implicit resumes refused and sent again in full", s->resume_fallbacks);
	u64_family(b, "codexpool_upstream_request_bytes_total", "counter",
	    "response.create bytes sent upstream", s->upstream_bytes);
	u64_family(b, "codexpool_client_websockets", "gauge",
	    "client WebSockets open (handed to workers)", (uint64_t)ws_session_count());
	u64_family(b, "codexpool_client_websocket_upgrades_total", "counter",
	    "client WebSocket upgrades accepted", s->ws_upgrades);
	u64_family(b, "codexpool_client_websocket_reconnects_total", "counter",
	    "client WebSockets asked to reconnect (account change)", s->ws_reconnects);
	u64_family(b, "codexpool_client_connections", "gauge",
	    "client connections open on the API listener", (uint64_t)http_conn_count());
	u64_family(b, "codexpool_client_connections_refused_total", "counter",
	    "client connections refused over max_client_connections",
	    s->client_conns_refused);
	u64_family(b, "codexpool_turns_in_flight", "gauge",
	    "client turns in flight", (uint64_t)(sv->inflight > 0 ? sv->inflight : 0));
}

static void
render_pool(struct evbuffer *b)
{
	const struct sv_stats *s = &sv->stats;
	const char *l[3] = { "decision", NULL, NULL };
	int i;

	mw_family(b, "codexpool_pool_decisions_total", "counter",
	    "upstream connection decisions of the workers, by decision");
	for (i = DEC_REUSE; i <= DEC_RETRY_STALE; i++) {
		l[1] = decision_name(i);
		mw_u64(b, "codexpool_pool_decisions_total", l, s->decisions[i]);
	}
	l[0] = "reason";
	mw_family(b, "codexpool_pool_bypass_total", "counter",
	    "one-shot (bypass) decisions, by reason");
	for (i = BYP_BUSY; i <= BYP_EXPIRED; i++) {
		l[1] = bypass_reason_name(i);
		mw_u64(b, "codexpool_pool_bypass_total", l, s->bypass[i]);
	}
}

static void
render_turns(struct evbuffer *b)
{
	const char *l[5] = { "route", NULL, "outcome", NULL, NULL };
	int r, o;

	mw_family(b, "codexpool_turns_total", "counter",
	    "client turns ended, by route and outcome");
	for (r = 0; r < nroutes; r++)
		for (o = 0; o < OUT_N; o++) {
			l[1] = routes[r].name;
			l[3] = outcome_names[o];
			mw_u64(b, "codexpool_turns_total", l, routes[r].turns[o]);
		}
	l[2] = NULL;
	mw_family(b, "codexpool_ttft_seconds", "histogram",
	    "time from a turn's arrival to its first output, by route");
	for (r = 0; r < nroutes; r++) {
		l[1] = routes[r].name;
		mw_histogram(b, "codexpool_ttft_seconds", l, &routes[r].ttft);
	}
	mw_family(b, "codexpool_turn_duration_seconds", "histogram",
	    "time from a turn's arrival to its end, by route");
	for (r = 0; r < nroutes; r++) {
		l[1] = routes[r].name;
		mw_histogram(b, "codexpool_turn_duration_seconds", l, &routes[r].duration);
	}
}

static void
render_tokens(struct evbuffer *b)
{
	static const struct {
		const char	*name, *help;
		size_t		 off;
	} fams[] = {
		{ "codexpool_input_tokens_total", "input tokens of turns, by account and route",
		  offsetof(struct acct_stats, in) },
		{ "codexpool_cached_tokens_total", "input tokens served from the upstream prompt cache, by account and route",
		  offsetof(struct acct_stats, cached) },
		{ "codexpool_output_tokens_total", "output tokens, by account and route",
		  offsetof(struct acct_stats, out) },
	};
	const char *l[5] = { "account", NULL, "route", NULL, NULL };
	size_t f;
	int a, r;

	for (f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
		mw_family(b, fams[f].name, "counter", fams[f].help);
		for (a = 0; a < naccts; a++)
			for (r = 0; r < nroutes; r++) {
				const uint64_t *v = (const uint64_t *)
				    ((const char *)&accts[a] + fams[f].off);
				l[1] = accts[a].name;
				l[3] = routes[r].name;
				mw_u64(b, fams[f].name, l, v[r]);
			}
	}
}

static void
render_workers(struct evbuffer *b)
{
	int open[SV_MAX_WORKERS] = { 0 }, busy[SV_MAX_WORKERS] = { 0 };
	const char *l[5] = { "worker", NULL, NULL, NULL, NULL };
	char idx[16];
	size_t it = 0;
	void *v;
	int i, d;

	while ((v = idmap_next(&sv->pool.conns, &it)) != NULL) {
		const struct pm_conn *c = v;
		if (c->slot < 0 || c->slot >= SV_MAX_WORKERS)
			continue;
		open[c->slot]++;
		if (c->busy)
			busy[c->slot]++;
	}
#define PER_WORKER(name, type, help, expr) do {				\
		mw_family(b, name, type, help);				\
		for (i = 0; i < sv->nslots; i++) {			\
			const struct worker_slot *w = &sv->slots[i];	\
			(void)w;					\
			snprintf(idx, sizeof(idx), "%d", i);		\
			l[1] = idx;					\
			mw_u64(b, name, l, (uint64_t)(expr));		\
		}							\
	} while (0)
	PER_WORKER("codexpool_upstream_connections", "gauge",
	    "pooled upstream WebSocket connections open, by worker", open[i]);
	PER_WORKER("codexpool_upstream_connections_busy", "gauge",
	    "pooled upstream connections serving a turn, by worker", busy[i]);
	PER_WORKER("codexpool_worker_up", "gauge",
	    "1 if the worker process is up", w->state == SLOT_UP);
	PER_WORKER("codexpool_worker_restarts_total", "counter",
	    "worker processes restarted after they died, by worker", w->restarts);
	PER_WORKER("codexpool_worker_requests_total", "counter",
	    "turns dispatched to the worker", w->requests);
	PER_WORKER("codexpool_worker_turns", "gauge",
	    "turns bound to the worker now", w->nturns > 0 ? w->nturns : 0);
#undef PER_WORKER
	l[2] = "decision";
	mw_family(b, "codexpool_worker_pool_decisions_total", "counter",
	    "upstream connection decisions, by worker and decision");
	for (i = 0; i < sv->nslots; i++)
		for (d = DEC_REUSE; d <= DEC_RETRY_STALE; d++) {
			snprintf(idx, sizeof(idx), "%d", i);
			l[1] = idx;
			l[3] = decision_name(d);
			mw_u64(b, "codexpool_worker_pool_decisions_total", l,
			    sv->slots[i].decisions[d]);
		}
}

static void
render_accounts(struct evbuffer *b)
{
	const char *l[5] = { "account", NULL, "status", NULL, NULL };
	const struct account *a;
	int s, n = 0;

	mw_family(b, "codexpool_account_status", "gauge",
	    "1 for the account's current status, 0 for the others");
	TAILQ_FOREACH(a, &sv->accounts, link) {
		if (n++ == METRICS_MAX_ACCOUNTS)
			break;
		l[1] = account_name(a);
		for (s = 0; s < ST_NSTATUS; s++) {
			l[3] = store_status_name((enum store_status)s);
			mw_u64(b, "codexpool_account_status", l, a->status == s);
		}
	}
	l[2] = NULL;
	n = 0;
	mw_family(b, "codexpool_account_turns_in_flight", "gauge",
	    "turns on the account now");
	TAILQ_FOREACH(a, &sv->accounts, link) {
		if (n++ == METRICS_MAX_ACCOUNTS)
			break;
		l[1] = account_name(a);
		mw_u64(b, "codexpool_account_turns_in_flight", l,
		    (uint64_t)(a->inflight > 0 ? a->inflight : 0));
	}
	l[0] = "outcome";
	mw_family(b, "codexpool_token_refreshes_total", "counter",
	    "OAuth access token refreshes, by outcome");
	l[1] = "ok";
	mw_u64(b, "codexpool_token_refreshes_total", l, refreshes_ok);
	l[1] = "failed";
	mw_u64(b, "codexpool_token_refreshes_total", l, refreshes_failed);
}

void
metrics_render(struct evbuffer *b)
{
	render_totals(b);
	render_pool(b);
	render_turns(b);
	render_tokens(b);
	render_workers(b);
	render_accounts(b);
}

void
metrics_handle(struct evhttp_request *http)
{
	struct evbuffer *out;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(http);

	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		send_error(http, 405, "invalid_request_error", "method_not_allowed",
		    "/metrics accepts GET only");
		return;
	}
	out = evbuffer_new();
	metrics_render(out);
	evhttp_add_header(evhttp_request_get_output_headers(http), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(http, 200, "OK", out);
	evbuffer_free(out);
}

/* ---- the metrics_listen listener ------------------------------------- */

bool
metrics_on_api(void)
{
	return sv->cfg.metrics_listen == NULL || *sv->cfg.metrics_listen == '\0';
}

static void
on_metrics_request(struct evhttp_request *http, void *arg)
{
	const char *uri = evhttp_request_get_uri(http);
	size_t n = strcspn(uri, "?");

	(void)arg;
	if (n == strlen("/metrics") && strncmp(uri, "/metrics", n) == 0) {
		metrics_handle(http);
		return;
	}
	if (n == strlen("/health") && strncmp(uri, "/health", n) == 0) {
		struct evbuffer *out = evbuffer_new();
		evbuffer_add_printf(out, "{\"status\":\"ok\"}");
		evhttp_add_header(evhttp_request_get_output_headers(http),
		    "Content-Type", "application/json");
		evhttp_send_reply(http, 200, "OK", out);
		evbuffer_free(out);
		return;
	}
	send_error(http, 404, "invalid_request_error", "not_found",
	    "this listener serves /metrics and /health only");
}

int
metrics_listen_start(void)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], a[64];
	int port;

	if (metrics_on_api())
		return 0;
	if (parse_hostport(sv->cfg.metrics_listen, host, sizeof(host), &port) == -1 ||
	    port < 0) {
		log_warnx("metrics_listen must be host:port, not '%s'", sv->cfg.metrics_listen);
		return -1;
	}
	mhttp = evhttp_new(sv->base);
	evhttp_set_max_body_size(mhttp, 4096);
	evhttp_set_max_headers_size(mhttp, 16 * 1024);
	evhttp_set_timeout(mhttp, 30);
	evhttp_set_allowed_methods(mhttp, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
	evhttp_set_gencb(mhttp, on_metrics_request, NULL);
	bs = evhttp_bind_socket_with_handle(mhttp, host[0] ? host : "0.0.0.0",
	    (ev_uint16_t)port);
	if (bs == NULL) {
		log_warn("cannot listen on metrics_listen %s", sv->cfg.metrics_listen);
		return -1;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			log_info("metrics on [%s]:%d", a, ntohs(s6->sin6_port));
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
			log_info("metrics on %s:%d", a, ntohs(s4->sin_port));
		}
	}
	return 0;
}

void
metrics_listen_free(void)
{
	if (mhttp != NULL)
		evhttp_free(mhttp);
	mhttp = NULL;
}
