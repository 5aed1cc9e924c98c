/*
 * The control socket: a line protocol on a Unix stream socket, for
 * codexpoolctl, socat and scripts.
 *
 *	server: "codexpool <protocol version>"		(greeting, once)
 *	client: one command per line
 *	server: answer lines, then an empty line
 *
 * Status-like answers are "key: value" lines; lists are tables whose
 * first line starts with "#" and names the columns (columns are only
 * ever appended).  A failure is a single "error: <reason>" line.  Any
 * command takes --json.  Commands are matched by unambiguous prefixes.
 * Only root, the daemon's own user and control_group may connect
 * (SO_PEERCRED, SO_PEERGROUPS).
 *
 * Every client is bounded: a line is at most CTL_MAX_LINE, its unread
 * answers at most about CTL_MAX_OUTPUT (then its input waits), an idle
 * one is closed after control_idle_timeout, and past CTL_MAX_CLIENTS the
 * one idle longest makes room.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "apikeys.h"
#include "ctltable.h"
#include "jsonutil.h"
#include "log.h"
#include "msgcodec.h"
#include "msgtypes.h"
#include "store.h"
#include "front_ws.h"
#include "supervisor.h"

#define CTL_PROTO_VERSION	1
#define CTL_MAX_CLIENTS		64	/* more: the one idle longest is closed */
#define CTL_MAX_LINE		(256 * 1024)	/* account add carries an auth.json */
#define CTL_MAX_ARGS		16
#define CTL_MAX_OUTPUT		(256 * 1024)	/* unread answers above this: stop reading */
#define CTL_STATS_WAIT		(500 * USEC_PER_MSEC)	/* for the workers' counters */

/* The workers' own counters for one answer (MSG_STATS_REQ / MSG_STATS). */
struct wstats {
	uint64_t		 rid;
	int			 nslots;
	int			 waiting;	/* replies still expected */
	bool			 asked[SV_MAX_WORKERS];
	bool			 answered[SV_MAX_WORKERS];
	uint64_t		*val;		/* nslots x NWCOUNTERS */
	struct event		*ev_deadline;
};

struct ctl_client {
	struct bufferevent	*bev;
	uid_t			 uid;
	bool			 discarding;	/* the rest of an over-long line */
	bool			 output_full;	/* not reading: too many unread answers */
	bool			 read_eof;	/* sent everything: answer it, then close */
	usec_t			 last_active;	/* input read or output taken */
	struct event		*ev_idle;
	char			*suspended;	/* a command waiting for the workers' counters */
	struct wstats		*ws;
	TAILQ_ENTRY(ctl_client)	 link;
};
TAILQ_HEAD(ctl_client_list, ctl_client);

/* What a command writes: either text or a JSON object, never both. */
struct ctl_out {
	struct evbuffer		*text;
	struct json_object	*json;		/* set when --json */
	bool			 failed;
	const struct wstats	*ws;		/* the workers' counters, when asked for */
	bool			 want_ws;	/* the command asks for them: run it again */
};

typedef void ctl_fn(struct ctl_out *, int argc, char **argv);

struct ctl_cmd {
	const char	*words[3];	/* keywords, NULL-terminated */
	int		 nargs;		/* arguments after the keywords */
	int		 maxargs;	/* 0: exactly nargs */
	const char	*usage;		/* also the help text */
	ctl_fn		*fn;
};

static struct evconnlistener *listener;
static struct ctl_client_list clients = TAILQ_HEAD_INITIALIZER(clients);
static int nclients;
static uint64_t next_stats_rid;
static gid_t control_gid = (gid_t)-1;	/* control_group, if set */

static void	out_error(struct ctl_out *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static void
out_error(struct ctl_out *o, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o->failed = true;
	if (o->json) {
		json_object_object_add(o->json, "error", json_object_new_string(msg));
		return;
	}
	evbuffer_drain(o->text, evbuffer_get_length(o->text));
	evbuffer_add_printf(o->text, "error: %s\n", msg);
}

static void
kv_u64(struct ctl_out *o, const char *k, uint64_t v)
{
	if (o->json)
		json_object_object_add(o->json, k, json_object_new_int64((int64_t)v));
	else
		evbuffer_add_printf(o->text, "%s: %" PRIu64 "\n", k, v);
}

static void
kv_str(struct ctl_out *o, const char *k, const char *v)
{
	if (o->json)
		json_object_object_add(o->json, k, json_object_new_string(v));
	else
		evbuffer_add_printf(o->text, "%s: %s\n", k, v);
}

static void
kv_ratio(struct ctl_out *o, const char *k, uint64_t num, uint64_t den)
{
	double r = den ? (double)num / (double)den : 0.0;

	if (o->json)
		json_object_object_add(o->json, k, json_object_new_double(r));
	else
		evbuffer_add_printf(o->text, "%s: %.3f\n", k, r);
}

/* Where a table writes: the text buffer, or NULL in JSON mode. */
static struct evbuffer *
table_text(struct ctl_out *o)
{
	return o->json ? NULL : o->text;
}

static uint64_t
dispatches(void)
{
	const struct sv_stats *s = &sv->stats;

	return s->decisions[DEC_REUSE] + s->decisions[DEC_NEW] +
	    s->decisions[DEC_BYPASS] + s->decisions[DEC_RETRY_STALE];
}

static void	control_counters(struct ctl_out *);
static void	worker_counter_sums(struct ctl_out *);

static void
cmd_status(struct ctl_out *o, int argc, char **argv)
{
	const struct sv_stats *s = &sv->stats;
	int busy, open = pm_count(&sv->pool, &busy), i;
	char name[64];

	if (o->ws == NULL) {
		o->want_ws = true;
		return;
	}
	kv_str(o, "version", PACKAGE_VERSION);
	kv_u64(o, "uptime", (uint64_t)((now_mono_usec() - sv->started_at) / USEC_PER_SEC));
	kv_str(o, "listen", sv->listen_addr);
	kv_u64(o, "workers", (uint64_t)sv->nslots);
	kv_str(o, "pool", sv->pool_enabled ? "enabled" : "disabled");
	kv_u64(o, "requests_total", s->requests);
	kv_u64(o, "requests_inflight", (uint64_t)sv->inflight);
	kv_u64(o, "requests_failed", s->requests_failed);
	kv_u64(o, "pooled_open", (uint64_t)open);
	kv_u64(o, "pooled_busy", (uint64_t)busy);
	for (i = DEC_REUSE; i <= DEC_RETRY_STALE; i++) {
		snprintf(name, sizeof(name), "decisions_%s", decision_name(i));
		kv_u64(o, name, s->decisions[i]);
	}
	for (i = BYP_BUSY; i <= BYP_EXPIRED; i++) {
		snprintf(name, sizeof(name), "bypass_%s", bypass_reason_name(i));
		kv_u64(o, name, s->bypass[i]);
	}
	kv_u64(o, "lru_evictions", sv->pool.lru_evictions);
	kv_ratio(o, "pool_reuse_rate", s->decisions[DEC_REUSE], dispatches());
	kv_u64(o, "input_tokens", s->input_tokens);
	kv_u64(o, "cached_tokens", s->cached_tokens);
	kv_ratio(o, "prompt_cache_hit_rate", s->cached_tokens, s->input_tokens);
	{
		uint64_t in5, cached5;
		usage_window_sum(&sv->recent, now_mono_usec(), &in5, &cached5);
		kv_u64(o, "input_tokens_5m", in5);
		kv_u64(o, "cached_tokens_5m", cached5);
		kv_ratio(o, "prompt_cache_hit_rate_5m", cached5, in5);
	}
	kv_u64(o, "client_aborts", s->client_aborts);
	kv_u64(o, "client_connections", (uint64_t)http_conn_count());
	kv_u64(o, "client_connections_refused", s->client_conns_refused);
	kv_u64(o, "worker_restarts", s->worker_restarts);
	kv_u64(o, "retries", s->retries);
	kv_u64(o, "retried_on_respawn", s->retried_on_respawn);
	kv_u64(o, "account_moves", s->account_moves);
	kv_u64(o, "resumed", s->resumed);
	kv_u64(o, "resume_fallbacks", s->resume_fallbacks);
	kv_u64(o, "upstream_bytes", s->upstream_bytes);
	kv_u64(o, "ws_clients", (uint64_t)ws_session_count());
	kv_u64(o, "ws_upgrades", s->ws_upgrades);
	kv_u64(o, "ws_turns", s->ws_turns);
	kv_u64(o, "ws_reconnects", s->ws_reconnects);
	control_counters(o);
	worker_counter_sums(o);
}

static const char *
slot_state_name(enum slot_state st)
{
	switch (st) {
	case SLOT_DOWN: return "down";
	case SLOT_STARTING: return "starting";
	case SLOT_UP: return "up";
	case SLOT_STOPPING: return "stopping";
	}
	return "?";
}

/*
 * show workers: the supervisor's view of each slot, then the worker's own
 * counters (MSG_STATS; "-" / null when the worker did not answer).  The
 * counter columns are named as the worker names its counters.
 */
static const struct ctl_column worker_cols[] = {
	COL("slot", CT_INT), COL("pid", CT_INT), COL("state", CT_STR), COL("uptime", CT_UINT),
	COL("restarts", CT_UINT), COL("requests", CT_UINT), COL("reuse", CT_UINT),
	COL("new", CT_UINT), COL("bypass", CT_UINT), COL("retry_stale", CT_UINT),
	COL("conns", CT_INT), COL("busy", CT_INT),
#define WCOUNTERS_FROM	12
	COL("sockets", CT_UINT), COL("conns_opened", CT_UINT), COL("conns_closed", CT_UINT),
	COL("oneshot_opened", CT_UINT), COL("liveness_kills", CT_UINT), COL("expired", CT_UINT),
	COL("evicted", CT_UINT), COL("stream_errors", CT_UINT), COL("continue_refused", CT_UINT),
	COL("frames_relayed", CT_UINT), COL("bytes_relayed", CT_UINT), COL("chan_full", CT_UINT),
	COL("rx_pauses", CT_UINT),
};
#define NWCOUNTERS	(sizeof(worker_cols) / sizeof(worker_cols[0]) - WCOUNTERS_FROM)

static const uint64_t *
wcounters(const struct wstats *ws, int slot)
{
	if (ws == NULL || slot >= ws->nslots || !ws->answered[slot])
		return NULL;
	return ws->val + (size_t)slot * NWCOUNTERS;
}

/* status: each worker counter summed over the workers that answered. */
static void
worker_counter_sums(struct ctl_out *o)
{
	uint64_t sum[NWCOUNTERS] = { 0 };
	const uint64_t *v;
	char name[64];
	size_t k;
	int i, n = 0;

	for (i = 0; i < sv->nslots; i++) {
		if ((v = wcounters(o->ws, i)) == NULL)
			continue;
		n++;
		for (k = 0; k < NWCOUNTERS; k++)
			sum[k] += v[k];
	}
	kv_u64(o, "workers_reporting", (uint64_t)n);
	for (k = 0; k < NWCOUNTERS; k++) {
		snprintf(name, sizeof(name), "worker_%s", worker_cols[WCOUNTERS_FROM + k].name);
		kv_u64(o, name, sum[k]);
	}
}

static void
cmd_show_workers(struct ctl_out *o, int argc, char **argv)
{
	struct ctl_table t;
	int i, conns[SV_MAX_WORKERS] = { 0 }, busy[SV_MAX_WORKERS] = { 0 };
	const uint64_t *wc;
	size_t it = 0, k;
	void *v;

	if (o->ws == NULL) {
		o->want_ws = true;
		return;
	}
	while ((v = idmap_next(&sv->pool.conns, &it)) != NULL) {
		struct pm_conn *c = v;
		if (c->slot >= 0 && c->slot < SV_MAX_WORKERS) {
			conns[c->slot]++;
			busy[c->slot] += c->busy;
		}
	}
	CTL_TABLE_BEGIN(&t, worker_cols, table_text(o));
	for (i = 0; i < sv->nslots; i++) {
		const struct worker_slot *w = &sv->slots[i];
		ctl_row_begin(&t);
		ctl_cell_int(&t, i);
		ctl_cell_int(&t, w->pid);
		ctl_cell_str(&t, w->draining && w->state == SLOT_UP ? "draining" :
		    slot_state_name(w->state));
		ctl_cell_uint(&t, w->pid ? (uint64_t)((now_mono_usec() - w->started_at) /
		    USEC_PER_SEC) : 0);
		ctl_cell_uint(&t, w->restarts);
		ctl_cell_uint(&t, w->requests);
		ctl_cell_uint(&t, w->decisions[DEC_REUSE]);
		ctl_cell_uint(&t, w->decisions[DEC_NEW]);
		ctl_cell_uint(&t, w->decisions[DEC_BYPASS]);
		ctl_cell_uint(&t, w->decisions[DEC_RETRY_STALE]);
		ctl_cell_int(&t, conns[i]);
		ctl_cell_int(&t, busy[i]);
		wc = wcounters(o->ws, i);
		for (k = 0; k < NWCOUNTERS; k++) {
			if (wc != NULL)
				ctl_cell_uint(&t, wc[k]);
			else
				ctl_cell_none(&t);
		}
		ctl_row_end(&t);
	}
	ctl_table_end(&t, o->json, "workers");
}

static const struct ctl_column pool_cols[] = {
	COL("conn", CT_STR), COL("key", CT_STR), COL("worker", CT_INT), COL("account", CT_STR),
	COL("state", CT_STR), COL("age", CT_UINT), COL("turns", CT_UINT),
	COL("last_decision", CT_STR), COL("cached", CT_UINT), COL("input", CT_UINT),
};

static void
cmd_show_pools(struct ctl_out *o, int argc, char **argv)
{
	struct ctl_table t;
	usec_t now = now_mono_usec();
	size_t it = 0;
	void *v;

	CTL_TABLE_BEGIN(&t, pool_cols, table_text(o));
	while ((v = idmap_next(&sv->pool.conns, &it)) != NULL) {
		const struct pm_conn *c = v;
		char conn[24], key[24];
		snprintf(conn, sizeof(conn), "%016" PRIx64, c->id);
		snprintf(key, sizeof(key), "%016" PRIx64, c->key_hash);
		ctl_row_begin(&t);
		ctl_cell_str(&t, conn);
		ctl_cell_str(&t, key);
		ctl_cell_int(&t, c->slot);
		ctl_cell_str(&t, c->acct->entry);
		ctl_cell_str(&t, c->closing ? "closing" : !c->up ? "connecting" :
		    c->busy ? "busy" : "idle");
		ctl_cell_uint(&t, (uint64_t)((now - c->created) / USEC_PER_SEC));
		ctl_cell_uint(&t, c->turns);
		ctl_cell_str(&t, c->last_decision ? decision_name(c->last_decision) : "-");
		ctl_cell_uint(&t, c->last_cached);
		ctl_cell_uint(&t, c->last_input);
		ctl_row_end(&t);
	}
	ctl_table_end(&t, o->json, "pools");
}

/* An account by entry id, label or ChatGPT account id; an error if none. */
static struct account *
find_account(struct ctl_out *o, const char *what)
{
	struct account *a = accounts_find(what);

	if (a == NULL)
		out_error(o, "no account '%s' (give an entry id, a label or a ChatGPT account id)", what);
	return a;
}

static void
cmd_evict(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = find_account(o, argv[0]);
	int n;

	if (a == NULL)
		return;
	n = sv_evict_account(a->entry);
	log_info("control: evicted %d pooled connection(s) of account %s", n, a->entry);
	kv_str(o, "evicted", a->entry);
	kv_u64(o, "connections", (uint64_t)n);
}

static void
cmd_pool_enable(struct ctl_out *o, int argc, char **argv)
{
	if (!sv->pool_enabled)
		log_info("control: pool enabled");
	sv_set_pool_enabled(true);
	kv_str(o, "pool", "enabled");
}

static void
cmd_pool_disable(struct ctl_out *o, int argc, char **argv)
{
	if (sv->pool_enabled)
		log_info("control: pool disabled; idle connections close now, busy ones after their turn");
	sv_set_pool_enabled(false);
	kv_str(o, "pool", "disabled");
}

static void
cmd_reload(struct ctl_out *o, int argc, char **argv)
{
	char report[4096];
	char *line, *save = NULL;
	struct json_object *rows = o->json ? json_object_new_array() : NULL;

	if (config_reload(report, sizeof(report)) == -1) {
		json_object_put(rows);
		out_error(o, "reload failed, nothing changed: %s", report);
		return;
	}
	kv_str(o, "reloaded", sv->config_path);
	for (line = strtok_r(report, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (rows)
			json_object_array_add(rows, json_object_new_string(line));
		else
			evbuffer_add_printf(o->text, "%s\n", line);
	}
	if (rows)
		json_object_object_add(o->json, "changes", rows);
}

static const struct ctl_column config_cols[] = {
	COL("key", CT_STR), COL("value", CT_STR), COL("origin", CT_STR), COL("reloadable", CT_BOOL),
};

static void
cmd_config(struct ctl_out *o, int argc, char **argv)
{
	struct ctl_table t;
	const struct cfg_key *k;
	char val[512];
	int i;

	CTL_TABLE_BEGIN(&t, config_cols, table_text(o));
	for (k = codexpool_cfg_keys, i = 0; k->name != NULL; k++, i++) {
		cfg_format(&sv->cfgset, k, val, sizeof(val));
		ctl_row_begin(&t);
		ctl_cell_str(&t, k->name);
		ctl_cell_str(&t, val);
		ctl_cell_str(&t, sv->cfgset.origin[i].where);
		ctl_cell_bool(&t, k->flags & CFG_RELOADABLE);
		ctl_row_end(&t);
	}
	ctl_table_end(&t, o->json, "config");
}

static void
cmd_drain(struct ctl_out *o, int argc, char **argv)
{
	char *end;
	long slot = strtol(argv[0], &end, 10);

	if (*argv[0] == '\0' || *end != '\0' || slot < 0 || slot >= sv->nslots) {
		out_error(o, "no worker '%s' (workers are 0..%d)", argv[0], sv->nslots - 1);
		return;
	}
	if (workers_drain((int)slot) == -1) {
		out_error(o, "worker %ld is not running", slot);
		return;
	}
	kv_u64(o, "draining", (uint64_t)slot);
	kv_u64(o, "turns_running", (uint64_t)workers_slot_inflight((int)slot));
}

static void
cmd_stats_reset(struct ctl_out *o, int argc, char **argv)
{
	int i;

	memset(&sv->stats, 0, sizeof(sv->stats));
	usage_window_reset(&sv->recent);
	sv->pool.lru_evictions = 0;
	for (i = 0; i < sv->nslots; i++) {
		sv->slots[i].requests = 0;
		memset(sv->slots[i].decisions, 0, sizeof(sv->slots[i].decisions));
	}
	log_info("control: counters reset");
	kv_str(o, "stats", "reset");
}

static const struct ctl_column conversation_cols[] = {
	COL("conv", CT_STR), COL("account", CT_STR), COL("worker", CT_INT), COL("turns", CT_UINT),
	COL("idle", CT_UINT), COL("route", CT_STR), COL("key", CT_STR), COL("resumed", CT_UINT),
	COL("ws", CT_UINT),
	/* free text with blanks: always the last column */
	COL_H("recent", CT_CUSTOM, "recent_turns(n:decision:cached/input[:miss])"),
};

/* A conversation's recent turns: "n:decision:cached/input[:miss],..." and as JSON. */
static void
recent_turns(const struct conv_rec *c, struct evbuffer *text, struct json_object *turns)
{
	uint32_t first = c->turns > CONVLOG_TURNS ? c->turns - CONVLOG_TURNS + 1 : 1, n;

	for (n = first; n <= c->turns; n++) {
		const struct conv_turn *t = &c->ring[(n - 1) % CONVLOG_TURNS];
		const char *dec = t->decision ? decision_name(t->decision) : "-";
		struct json_object *tj;

		if (text != NULL) {
			evbuffer_add_printf(text, "%s%u:%s:%" PRIu64 "/%" PRIu64 "%s%s",
			    n > first ? "," : "", t->n, t->decision == DEC_BYPASS ?
			    bypass_reason_name(t->reason) : dec, t->cached, t->input,
			    t->miss ? ":" : "", t->miss ? t->miss : "");
			continue;
		}
		tj = json_object_new_object();
		json_object_object_add(tj, "turn", json_object_new_int((int)t->n));
		json_object_object_add(tj, "decision", json_object_new_string(dec));
		if (t->decision == DEC_BYPASS)
			json_object_object_add(tj, "bypass", json_object_new_string(
			    bypass_reason_name(t->reason)));
		json_object_object_add(tj, "cached", json_object_new_int64((int64_t)t->cached));
		json_object_object_add(tj, "input", json_object_new_int64((int64_t)t->input));
		if (t->miss)
			json_object_object_add(tj, "miss", json_object_new_string(t->miss));
		json_object_array_add(turns, tj);
	}
}

static void
cmd_show_conversations(struct ctl_out *o, int argc, char **argv)
{
	struct ctl_table t;
	const struct conv_rec *c;
	struct evbuffer *recent = evbuffer_new();
	usec_t now = now_mono_usec();

	CTL_TABLE_BEGIN(&t, conversation_cols, table_text(o));
	TAILQ_FOREACH_REVERSE(c, &sv->convs.lru, conv_rec_list, lru) {
		struct json_object *turns = o->json ? json_object_new_array() : NULL;
		char conv[24];

		snprintf(conv, sizeof(conv), "%016" PRIx64, c->key_hash);
		ctl_row_begin(&t);
		ctl_cell_str(&t, conv);
		ctl_cell_str(&t, c->entry);
		ctl_cell_int(&t, c->slot);
		ctl_cell_uint(&t, c->turns);
		ctl_cell_uint(&t, (uint64_t)((now - c->last_active) / USEC_PER_SEC));
		ctl_cell_str(&t, c->route[0] ? c->route : "-");
		ctl_cell_str(&t, c->key_label[0] ? c->key_label : "-");
		ctl_cell_uint(&t, c->resumed);
		ctl_cell_uint(&t, c->ws_clients);
		evbuffer_drain(recent, evbuffer_get_length(recent));
		recent_turns(c, o->json ? NULL : recent, turns);
		evbuffer_add(recent, "", 1);
		ctl_cell_custom(&t, (const char *)evbuffer_pullup(recent, -1), turns);
		ctl_row_end(&t);
	}
	ctl_table_end(&t, o->json, "conversations");
	evbuffer_free(recent);
}

/* Seconds from now to a unix time, 0 if past or unset. */
static int64_t
secs_until(int64_t t)
{
	int64_t d = t - (int64_t)time(NULL);

	return t > 0 && d > 0 ? d : 0;
}

/* "primary%/secondary%" from the last codex.rate_limits windows. */
static void
quota_summary(const struct account *a, char *buf, size_t len)
{
	struct json_object *q = NULL, *p, *sdw;
	char err[64];

	snprintf(buf, len, "-");
	if (a->quota_json == NULL ||
	    (q = json_parse_buf(a->quota_json, strlen(a->quota_json), err, sizeof(err))) == NULL)
		return;
	p = json_get_path(q, "primary.used_percent");
	sdw = json_get_path(q, "secondary.used_percent");
	snprintf(buf, len, "%.0f%%/%.0f%%", p ? json_object_get_double(p) : 0.0,
	    sdw ? json_object_get_double(sdw) : 0.0);
	json_object_put(q);
}

static const struct ctl_column account_cols[] = {
	COL("entry", CT_STR), COL("label", CT_STR), COL("account_id", CT_STR), COL("status", CT_STR),
	COL("locked_for", CT_INT), COL("token_expires_in", CT_INT), COL("plan", CT_STR),
	COL("quota", CT_CUSTOM), COL("inflight", CT_INT), COL("pooled", CT_INT),
	COL("requests", CT_UINT), COL("input_tokens", CT_UINT), COL("cached_tokens", CT_UINT),
	COL("reason", CT_STR),
};

static void
cmd_account_list(struct ctl_out *o, int argc, char **argv)
{
	struct ctl_table t;
	struct account *a;
	char quota[64];

	CTL_TABLE_BEGIN(&t, account_cols, table_text(o));
	TAILQ_FOREACH(a, &sv->accounts, link) {
		struct pm_account *pa = pm_account(&sv->pool, a->entry);
		quota_summary(a, quota, sizeof(quota));
		account_usable(a);	/* ends an expired lock */
		ctl_row_begin(&t);
		ctl_cell_str(&t, a->entry);
		ctl_cell_str(&t, a->label);
		ctl_cell_str(&t, a->account_id);
		ctl_cell_str(&t, account_status_name(a));
		ctl_cell_int(&t, secs_until(a->locked_until));
		ctl_cell_int(&t, secs_until(a->access_expires));
		ctl_cell_str(&t, a->plan);
		ctl_cell_custom(&t, quota, o->json && a->quota_json ?
		    json_tokener_parse(a->quota_json) : NULL);
		ctl_cell_int(&t, a->inflight);
		ctl_cell_int(&t, pa->live);
		ctl_cell_uint(&t, a->requests + (uint64_t)a->d_requests);
		ctl_cell_uint(&t, a->input_tokens + (uint64_t)a->d_input);
		ctl_cell_uint(&t, a->cached_tokens + (uint64_t)a->d_cached);
		ctl_cell_str(&t, a->reason);
		ctl_row_end(&t);
	}
	ctl_table_end(&t, o->json, "accounts");
}

static void
report_added(struct ctl_out *o, int rc, struct account *a, const char *err)
{
	if (rc < 0) {
		out_error(o, "%s", err);
		return;
	}
	if (rc == 1) {
		out_error(o, "%s", err);
		return;
	}
	kv_str(o, "added", a->entry);
	kv_str(o, "account_id", a->account_id);
}

/* account add auth-json <base64url of the file> [label] */
static void
cmd_account_add_json(struct ctl_out *o, int argc, char **argv)
{
	size_t len = strlen(argv[0]);
	uint8_t *json = xmalloc(len + 1);
	struct account *a = NULL;
	char err[512];
	int n, rc;

	n = b64url_decode(argv[0], len, json, len + 1);
	if (n < 0) {
		free(json);
		out_error(o, "the auth.json must be sent base64url-encoded (codexpoolctl does that)");
		return;
	}
	rc = account_add_auth_json((const char *)json, (size_t)n, argc > 1 ? argv[1] : NULL,
	    &a, err, sizeof(err));
	explicit_bzero(json, len + 1);
	free(json);
	report_added(o, rc, a, err);
}

/* account add tokens <access> <refresh> [label] */
static void
cmd_account_add_tokens(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = NULL;
	char err[512];
	int rc;

	rc = account_add(argv[0], argv[1], NULL, NULL, argc > 2 ? argv[2] : NULL, &a,
	    err, sizeof(err));
	report_added(o, rc, a, err);
}

static void
cmd_account_disable(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = find_account(o, argv[0]);

	if (a == NULL)
		return;
	account_set_status(a, ST_DISABLED, "disabled by the operator");
	kv_str(o, "disabled", a->entry);
}

static void
cmd_account_enable(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = find_account(o, argv[0]);

	if (a == NULL)
		return;
	if (a->status != ST_DISABLED) {
		out_error(o, "account %s is %s, not disabled (use 'account reset' to clear a lock)",
		    a->entry, account_status_name(a));
		return;
	}
	account_reset(a);
	kv_str(o, "enabled", a->entry);
}

static void
cmd_account_reset(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = find_account(o, argv[0]);

	if (a == NULL)
		return;
	account_reset(a);
	kv_str(o, "reset", a->entry);
	kv_str(o, "status", account_status_name(a));
}

static void
cmd_account_refresh(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = find_account(o, argv[0]);

	if (a == NULL)
		return;
	if (account_refresh(a, "requested by the operator") == -1) {
		out_error(o, "cannot refresh account %s (no refresh token, or a bad token_url)", a->entry);
		return;
	}
	kv_str(o, "refreshing", a->entry);
}

static void
cmd_account_remove(struct ctl_out *o, int argc, char **argv)
{
	struct account *a = find_account(o, argv[0]);
	char entry[ENTRY_LEN];

	if (a == NULL)
		return;
	strlcpy_safe(entry, a->entry, sizeof(entry));
	if (account_remove(a) == -1) {
		out_error(o, "cannot remove account %s: %s", entry, store_errmsg(sv->store));
		return;
	}
	kv_str(o, "removed", entry);
}

/* The key commands live in apikeys.c; this adapts their output. */
static void
run_keys(struct ctl_out *o, apikeys_ctl_fn *fn, int argc, char **argv)
{
	char err[512];

	if (fn(o->json ? NULL : o->text, o->json, argc, argv, err, sizeof(err)) == -1)
		out_error(o, "%s", err);
}

static void cmd_key_add(struct ctl_out *o, int c, char **v) { run_keys(o, apikeys_ctl_add, c, v); }
static void cmd_key_list(struct ctl_out *o, int c, char **v) { run_keys(o, apikeys_ctl_list, c, v); }
static void cmd_key_remove(struct ctl_out *o, int c, char **v) { run_keys(o, apikeys_ctl_remove, c, v); }

static void cmd_help(struct ctl_out *, int, char **);

static const struct ctl_cmd commands[] = {
	{ { "status" },			0, 0, "status: counters, pool reuse rate, prompt-cache hit rate", cmd_status },
	{ { "show", "workers" },	0, 0, "show workers: one row per worker process", cmd_show_workers },
	{ { "show", "pools" },		0, 0, "show pools: one row per pooled upstream connection", cmd_show_pools },
	{ { "show", "conversations" },	0, 0, "show conversations: recent conversations, each turn's decision and cache use, and why a turn missed", cmd_show_conversations },
	{ { "drain" },			1, 0, "drain <worker>: no new conversations for a worker; restart it when its turns are done", cmd_drain },
	{ { "stats", "reset" },		0, 0, "stats reset: zero the counters", cmd_stats_reset },
	{ { "evict" },			1, 0, "evict <entry>: close an account's pooled connections (busy ones after their turn)", cmd_evict },
	{ { "pool", "enable" },		0, 0, "pool enable: pool upstream connections again", cmd_pool_enable },
	{ { "pool", "disable" },	0, 0, "pool disable: one-shot connections only; pooled ones close", cmd_pool_disable },
	{ { "reload" },			0, 0, "reload: re-read the configuration; reloadable keys apply at once", cmd_reload },
	{ { "config" },			0, 0, "config: the effective configuration, each key with its origin", cmd_config },
	{ { "account", "list" },	0, 0, "account list: accounts with status, locks, token expiry, quota, load (never a token)", cmd_account_list },
	{ { "show", "accounts" },	0, 0, "show accounts: the same as account list", cmd_account_list },
	{ { "account", "add", "auth-json" }, 1, 2, "account add auth-json <base64url> [label]: add the account of a Codex auth.json (codexpoolctl account add --auth-json FILE)", cmd_account_add_json },
	{ { "account", "add", "tokens" }, 2, 3, "account add tokens <access> <refresh> [label]: add an account by its tokens", cmd_account_add_tokens },
	{ { "account", "disable" },	1, 0, "account disable <entry>: stop using an account; its pooled connections close", cmd_account_disable },
	{ { "account", "enable" },	1, 0, "account enable <entry>: use a disabled account again", cmd_account_enable },
	{ { "account", "remove" },	1, 0, "account remove <entry>: forget an account and its tokens", cmd_account_remove },
	{ { "account", "reset" },	1, 0, "account reset <entry>: clear a rate-limit lock or an error state", cmd_account_reset },
	{ { "account", "refresh" },	1, 0, "account refresh <entry>: refresh the access token now", cmd_account_refresh },
	{ { "key", "add" },		1, 0, "key add <label>: make a client API key; it is printed once, only its hash is kept", cmd_key_add },
	{ { "key", "list" },		0, 0, "key list: client API keys with creation, last use and usage (never a key)", cmd_key_list },
	{ { "key", "remove" },		1, 0, "key remove <label>: revoke a client API key at once", cmd_key_remove },
	{ { "help" },			0, 0, "help: list the commands", cmd_help },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
cmd_help(struct ctl_out *o, int argc, char **argv)
{
	struct json_object *rows = o->json ? json_object_new_array() : NULL;
	size_t i;

	for (i = 0; i < NCOMMANDS; i++) {
		if (rows)
			json_object_array_add(rows, json_object_new_string(commands[i].usage));
		else
			evbuffer_add_printf(o->text, "%s\n", commands[i].usage);
	}
	if (rows)
		json_object_object_add(o->json, "commands", rows);
}

static int
word_matches(const char *typed, const char *word)
{
	return strncmp(word, typed, strlen(typed)) == 0;
}

static int
nwords(const struct ctl_cmd *c)
{
	int n = 0;

	while (n < 3 && c->words[n] != NULL)
		n++;
	return n;
}

/* Does the command's keyword list start with what was typed (prefixes)? */
static int
typed_matches(const struct ctl_cmd *c, int argc, char **argv, int upto, int *exact)
{
	int k;

	*exact = 1;
	for (k = 0; k < upto; k++) {
		if (k >= argc || c->words[k] == NULL || !word_matches(argv[k], c->words[k]))
			return 0;
		if (strcmp(argv[k], c->words[k]) != 0)
			*exact = 0;
	}
	return 1;
}

/* Why nothing matched: the first word that fits no command, and what would. */
static void
explain_no_match(struct ctl_out *o, int argc, char **argv)
{
	char choices[512];
	size_t i, j;
	int depth, exact;

	for (depth = 0; depth < 3; depth++) {
		const char *seen[NCOMMANDS];
		size_t nseen = 0;
		int any = 0;
		choices[0] = '\0';
		for (i = 0; i < NCOMMANDS; i++) {
			const struct ctl_cmd *c = &commands[i];
			if (depth >= nwords(c) || !typed_matches(c, argc, argv, depth, &exact))
				continue;
			for (j = 0; j < nseen && strcmp(seen[j], c->words[depth]) != 0; j++)
				;
			if (j == nseen) {
				seen[nseen++] = c->words[depth];
				snprintf(choices + strlen(choices), sizeof(choices) - strlen(choices),
				    "%s%s", nseen > 1 ? ", " : "", c->words[depth]);
			}
			if (depth < argc && word_matches(argv[depth], c->words[depth]))
				any = 1;
		}
		if (nseen == 0)
			break;
		if (depth >= argc) {
			out_error(o, "incomplete command; possibilities are: %s", choices);
			return;
		}
		if (!any) {
			out_error(o, "unknown word '%s'; possibilities are: %s", argv[depth], choices);
			return;
		}
	}
	out_error(o, "unknown command; try 'help'");
}

/* Match typed words against the table: keywords by unambiguous prefix. */
/*
 * Typed words become keywords level by level: a word must be a keyword or
 * the prefix of exactly one keyword of the commands still in the running
 * ("st" is status or stats: ambiguous).  Replaces argv words with the
 * full keywords; -1 (and an error) if a word is ambiguous.
 */
static int
resolve_keywords(struct ctl_out *o, int argc, char **argv)
{
	bool alive[NCOMMANDS];
	size_t i, j;
	int depth;

	for (i = 0; i < NCOMMANDS; i++)
		alive[i] = true;
	for (depth = 0; depth < argc && depth < 3; depth++) {
		const char *kw[NCOMMANDS], *pick = NULL;
		size_t nkw = 0;

		for (i = 0; i < NCOMMANDS; i++) {
			const char *w;
			if (!alive[i] || depth >= nwords(&commands[i]))
				continue;
			w = commands[i].words[depth];
			if (strcmp(argv[depth], w) == 0)
				pick = w;
			else if (!word_matches(argv[depth], w))
				continue;
			for (j = 0; j < nkw && strcmp(kw[j], w) != 0; j++)
				;
			if (j == nkw)
				kw[nkw++] = w;
		}
		if (pick == NULL && nkw == 0)
			break;
		if (pick == NULL && nkw > 1) {
			char choices[512] = "";
			for (j = 0; j < nkw; j++)
				snprintf(choices + strlen(choices), sizeof(choices) - strlen(choices),
				    "%s%s", j ? ", " : "", kw[j]);
			out_error(o, "ambiguous word '%s'; possibilities are: %s", argv[depth], choices);
			return -1;
		}
		if (pick == NULL)
			pick = kw[0];
		argv[depth] = (char *)pick;
		for (i = 0; i < NCOMMANDS; i++)
			if (alive[i] && depth < nwords(&commands[i]) &&
			    strcmp(commands[i].words[depth], pick) != 0)
				alive[i] = false;
	}
	return 0;
}

/* The command typed words name, with the right number of arguments, or
 * NULL and an error. */
static const struct ctl_cmd *
match_command(struct ctl_out *o, int argc, char **argv)
{
	const struct ctl_cmd *cands[NCOMMANDS], *exact_match = NULL;
	size_t i;
	int n = 0, nexact = 0, exact;

	if (resolve_keywords(o, argc, argv) == -1)
		return NULL;

	for (i = 0; i < NCOMMANDS; i++) {
		if (!typed_matches(&commands[i], argc, argv, nwords(&commands[i]), &exact))
			continue;
		cands[n++] = &commands[i];
		if (exact) {
			exact_match = &commands[i];
			nexact++;
		}
	}
	if (n == 0) {
		explain_no_match(o, argc, argv);
		return NULL;
	}
	if (n > 1) {
		if (nexact != 1) {
			char choices[512] = "";
			for (i = 0; i < (size_t)n; i++)
				snprintf(choices + strlen(choices), sizeof(choices) - strlen(choices),
				    "%s'%s'", i ? ", " : "", cands[i]->usage);
			out_error(o, "ambiguous command; possibilities are: %s", choices);
			return NULL;
		}
		cands[0] = exact_match;
	}
	if (argc - nwords(cands[0]) < cands[0]->nargs ||
	    argc - nwords(cands[0]) > (cands[0]->maxargs ? cands[0]->maxargs : cands[0]->nargs)) {
		out_error(o, "usage: %s", cands[0]->usage);
		return NULL;
	}
	return cands[0];
}

/* A line's words, --json taken out; -1 when there are too many. */
static int
split_words(char *line, char **argv, bool *json)
{
	char *tok, *save = NULL;
	int argc = 0;

	for (tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
		if (strcmp(tok, "--json") == 0) {
			*json = true;
			continue;
		}
		if (argc == CTL_MAX_ARGS)
			return -1;
		argv[argc++] = tok;
	}
	return argc;
}

/*
 * The pure part of a control line, for the fuzzer (fuzz/fuzz_control.c):
 * split it (in place) and find its command, without running it.  The
 * command's usage line, or NULL with err set ("" for a blank line).
 */
const char *
control_parse_line(char *line, char *err, size_t errlen)
{
	struct ctl_out o = { .text = evbuffer_new() };
	const struct ctl_cmd *c = NULL;
	char *argv[CTL_MAX_ARGS];
	bool json = false;
	size_t n;
	int argc;

	if ((argc = split_words(line, argv, &json)) == -1)
		out_error(&o, "too many words");
	else if (argc == 0 && json)
		out_error(&o, "empty command; try 'help'");
	else if (argc > 0)
		c = match_command(&o, argc, argv);
	n = evbuffer_get_length(o.text);
	if (n >= errlen)
		n = errlen - 1;
	evbuffer_copyout(o.text, err, n);
	err[n] = '\0';
	evbuffer_free(o.text);
	return c ? c->usage : NULL;
}

static void
run_command(struct ctl_out *o, int argc, char **argv)
{
	const struct ctl_cmd *c = match_command(o, argc, argv);

	if (c != NULL)
		c->fn(o, argc - nwords(c), argv + nwords(c));
}

/* ---- the workers' counters for an answer --------------------------------- */

static void	wstats_done(evutil_socket_t, short, void *);

static void
wstats_free(struct wstats *ws)
{
	if (ws == NULL)
		return;
	if (ws->ev_deadline)
		event_free(ws->ev_deadline);
	free(ws->val);
	free(ws);
}

/*
 * Ask every running worker for its counters.  The answer waits until all
 * have replied or CTL_STATS_WAIT has passed, whichever is first; the event
 * loop goes on meanwhile.  waiting is 0 if no worker could be asked: the
 * answer goes at once, every worker without counters.
 */
static struct wstats *
wstats_ask(struct ctl_client *cl)
{
	struct wstats *ws = xcalloc(1, sizeof(*ws));
	struct timeval tv = { 0, CTL_STATS_WAIT };
	int i;

	ws->rid = ++next_stats_rid;
	ws->nslots = sv->nslots;
	ws->val = xcalloc((size_t)ws->nslots ? (size_t)ws->nslots : 1, NWCOUNTERS * sizeof(uint64_t));
	for (i = 0; i < ws->nslots; i++) {
		if (sv->slots[i].state != SLOT_UP || sv->slots[i].chan == NULL)
			continue;
		if (workers_send(i, MSG_STATS_REQ, ws->rid, NULL) != MSGCHAN_OK)
			continue;
		ws->asked[i] = true;
		ws->waiting++;
	}
	if (ws->waiting == 0)
		return ws;
	ws->ev_deadline = evtimer_new(sv->base, wstats_done, cl);
	evtimer_add(ws->ev_deadline, &tv);
	return ws;
}

void
control_on_worker_stats(int slot, const struct msg *m)
{
	struct ctl_client *cl;
	struct wstats *ws = NULL;
	struct m_stats st;
	uint64_t *val;
	uint32_t i;
	size_t k;

	TAILQ_FOREACH(cl, &clients, link)
		if (cl->ws != NULL && cl->ws->rid == m->hdr.rid) {
			ws = cl->ws;
			break;
		}
	/* late (after the deadline), or for a client that has gone */
	if (ws == NULL || slot < 0 || slot >= ws->nslots || !ws->asked[slot] ||
	    ws->answered[slot])
		return;
	val = ws->val + (size_t)slot * NWCOUNTERS;
	if (m_stats_decode(m, &st) == 0) {
		for (i = 0; i < st.nstats; i++)
			for (k = 0; k < NWCOUNTERS; k++)
				if (strcmp(st.stats[i].name, worker_cols[WCOUNTERS_FROM + k].name) == 0)
					val[k] = st.stats[i].value;
		ws->answered[slot] = true;
	} else {
		log_warnx("worker %d: malformed counters", slot);
	}
	ws->asked[slot] = false;
	if (--ws->waiting == 0)
		wstats_done(-1, 0, cl);
}

/* ---- control clients ----------------------------------------------------- */

static void	process_input(struct ctl_client *);

/* The command line again, from its resolved words, to run it once more. */
static char *
join_words(int argc, char **argv, bool json)
{
	size_t len = 16;
	char *line;
	int i;

	for (i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	line = xcalloc(1, len);
	for (i = 0; i < argc; i++) {
		if (i > 0)
			strcat(line, " ");
		strcat(line, argv[i]);
	}
	if (json)
		strcat(line, " --json");
	return line;
}

/*
 * Run one command line and queue its answer.  A command that needs the
 * workers' counters (ws NULL) asks for them: the client is suspended, and
 * the line runs again when they are in.
 */
static void
handle_line(struct ctl_client *cl, char *line, const struct wstats *ws)
{
	struct evbuffer *out = bufferevent_get_output(cl->bev);
	struct ctl_out o = { .text = evbuffer_new(), .ws = ws };
	char *argv[CTL_MAX_ARGS];
	int argc;
	bool json = false;

	if ((argc = split_words(line, argv, &json)) == -1) {
		out_error(&o, "too many words");
		goto send;
	}
	if (argc == 0 && !json)
		goto send_nothing;
	if (json)
		o.json = json_object_new_object();
	if (argc == 0)
		out_error(&o, "empty command; try 'help'");
	else
		run_command(&o, argc, argv);
	if (o.want_ws && ws == NULL) {
		struct wstats *asked;
		char *again = join_words(argc, argv, json);

		json_object_put(o.json);
		evbuffer_free(o.text);
		asked = wstats_ask(cl);
		if (asked->waiting == 0) {
			/* no worker to ask: answer at once, every worker without counters */
			handle_line(cl, again, asked);
			free(again);
			wstats_free(asked);
			return;
		}
		cl->ws = asked;
		cl->suspended = again;
		return;
	}
send:
	if (o.json) {
		size_t len;
		const char *t = json_object_to_json_string_length(o.json, JSON_C_TO_STRING_PLAIN, &len);
		evbuffer_add(out, t, len);
		evbuffer_add(out, "\n", 1);
		json_object_put(o.json);
	} else {
		evbuffer_add_buffer(out, o.text);
	}
	evbuffer_add(out, "\n", 1);	/* the empty line ends every answer */
send_nothing:
	evbuffer_free(o.text);
}

/* The workers answered, or the deadline passed: answer, then read on. */
static void
wstats_done(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_client *cl = arg;
	struct wstats *ws = cl->ws;
	char *line = cl->suspended;

	cl->ws = NULL;
	cl->suspended = NULL;
	if (ws->waiting > 0)
		log_debug("control: %d worker(s) did not send their counters in time", ws->waiting);
	handle_line(cl, line, ws);
	free(line);
	wstats_free(ws);
	cl->last_active = now_mono_usec();
	process_input(cl);
}

static void
client_free(struct ctl_client *cl)
{
	TAILQ_REMOVE(&clients, cl, link);
	bufferevent_free(cl->bev);
	event_free(cl->ev_idle);
	wstats_free(cl->ws);
	free(cl->suspended);
	free(cl);
	nclients--;
}

/*
 * Answer the complete lines that have arrived, in order, while the
 * client is not suspended and reads its answers: past CTL_MAX_OUTPUT of
 * unread answers, its input is left alone (and not read from the socket)
 * until the output has drained, so a client that sends without reading
 * costs at most that much memory.
 */
static void
process_input(struct ctl_client *cl)
{
	struct evbuffer *in = bufferevent_get_input(cl->bev);
	struct evbuffer *out = bufferevent_get_output(cl->bev);
	struct evbuffer_ptr nl;
	char *line;
	size_t n;

	for (;;) {
		if (cl->suspended != NULL)
			break;
		if (evbuffer_get_length(out) > CTL_MAX_OUTPUT) {
			cl->output_full = true;
			break;
		}
		if (cl->discarding) {
			nl = evbuffer_search(in, "\n", 1, NULL);
			if (nl.pos < 0) {
				evbuffer_drain(in, evbuffer_get_length(in));
				break;
			}
			evbuffer_drain(in, (size_t)nl.pos + 1);
			cl->discarding = false;
		}
		if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) == NULL)
			break;
		if (n > CTL_MAX_LINE)
			evbuffer_add_printf(out, "error: line too long\n\n");
		else
			handle_line(cl, line, NULL);
		free(line);
	}
	if (cl->suspended != NULL || cl->output_full || cl->read_eof) {
		bufferevent_disable(cl->bev, EV_READ);
		return;
	}
	if (evbuffer_get_length(in) > CTL_MAX_LINE) {
		evbuffer_add_printf(out, "error: line too long\n\n");
		evbuffer_drain(in, evbuffer_get_length(in));
		cl->discarding = true;
	}
	bufferevent_enable(cl->bev, EV_READ);
}

/* The client has closed its side, and has all its answers. */
static bool
client_done(struct ctl_client *cl)
{
	return cl->read_eof && cl->suspended == NULL && !cl->output_full &&
	    evbuffer_get_length(bufferevent_get_output(cl->bev)) == 0;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cl = arg;

	cl->last_active = now_mono_usec();
	process_input(cl);
}

/* The output drained below the low-water mark: read on if we had stopped. */
static void
on_write(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cl = arg;

	if (cl->output_full) {
		cl->output_full = false;
		process_input(cl);
	}
	if (client_done(cl))
		client_free(cl);
}

/* The client took some of its answers: it is not idle. */
static void
on_output_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct ctl_client *cl = arg;

	if (info->n_deleted > 0)
		cl->last_active = now_mono_usec();
}

/*
 * An error ends the client.  EOF ends only its input: the commands it
 * sent before (`printf 'status\n' | socat - UNIX-CONNECT:...`) are still
 * answered, and it is closed when the answers are out.
 */
static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_client *cl = arg;

	if (what & BEV_EVENT_ERROR) {
		client_free(cl);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		cl->read_eof = true;
		process_input(cl);
		if (client_done(cl))
			client_free(cl);
	}
}

static usec_t
idle_timeout(void)
{
	return sv->cfg.control_idle_timeout > 0 ? sv->cfg.control_idle_timeout : 60 * USEC_PER_SEC;
}

static void
arm_idle(struct ctl_client *cl, usec_t after)
{
	struct timeval tv = { after / USEC_PER_SEC, after % USEC_PER_SEC };

	evtimer_add(cl->ev_idle, &tv);
}

/*
 * Idle: nothing read from the client and none of its answers taken for
 * control_idle_timeout.  The timer is lazy: activity only moves
 * last_active, and the timer re-arms itself for the rest of the time.
 */
static void
on_idle(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_client *cl = arg;
	usec_t idle = now_mono_usec() - cl->last_active, limit = idle_timeout();

	if (idle < limit || cl->suspended != NULL) {
		arm_idle(cl, idle < limit ? limit - idle : limit);
		return;
	}
	log_info("control: closed a connection of uid %d idle for %llds", (int)cl->uid,
	    (long long)(idle / USEC_PER_SEC));
	client_free(cl);
}

/*
 * Make room for one more client: close the one idle longest (never one
 * waiting for the workers' counters).  A leak of idle connections, or a
 * flood of them, cannot lock the operator out.  -1 if none can go.
 */
static int
close_idlest(void)
{
	struct ctl_client *cl, *idlest = NULL;

	TAILQ_FOREACH(cl, &clients, link)
		if (cl->suspended == NULL && (idlest == NULL || cl->last_active < idlest->last_active))
			idlest = cl;
	if (idlest == NULL)
		return -1;
	log_info("control: %d connections: closed the one idle longest (uid %d, %llds) to "
	    "admit a new one", nclients, (int)idlest->uid,
	    (long long)((now_mono_usec() - idlest->last_active) / USEC_PER_SEC));
	client_free(idlest);
	return 0;
}

/* status: the control socket's own load. */
static void
control_counters(struct ctl_out *o)
{
	struct ctl_client *cl;
	uint64_t queued = 0, full = 0;

	TAILQ_FOREACH(cl, &clients, link) {
		queued += evbuffer_get_length(bufferevent_get_output(cl->bev));
		full += cl->output_full;
	}
	kv_u64(o, "control_clients", (uint64_t)nclients);
	kv_u64(o, "control_output_full", full);
	kv_u64(o, "control_queued_bytes", queued);
}

/*
 * Is the peer in control_group: by its primary gid, or by a supplementary
 * group.  The supplementary groups are the ones the kernel recorded at
 * connect() (SO_PEERGROUPS, Linux 4.13): the same set the socket file's
 * mode was checked against, with no race on the pid and no lookup that
 * can block.  getgrouplist() on the uid's passwd entry would ask NSS
 * (files, LDAP, ...) from inside the event loop, and would miss a group
 * the process holds but /etc/group does not list (or the reverse).  On a
 * kernel without SO_PEERGROUPS: the Groups: line of /proc/PID/status, a
 * read of procfs that does not block either.
 */
static bool
peer_in_group(int fd, const struct ucred *cred, gid_t gid)
{
	gid_t small[64], *groups = small;
	socklen_t len = sizeof(small);
	bool found = false;
	size_t i;

	if (cred->gid == gid)
		return true;
#ifdef SO_PEERGROUPS
	int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);

	if (rc == -1 && errno == ERANGE && len > sizeof(small)) {
		groups = xmalloc(len);
		rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
	}
	if (rc == 0)
		for (i = 0; i < len / sizeof(gid_t) && !found; i++)
			found = groups[i] == gid;
	if (groups != small)
		free(groups);
	if (rc == 0 || errno != ENOPROTOOPT)
		return found;
#endif
	{
		char path[64], line[4096];
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/status", (int)cred->pid);
		if ((f = fopen(path, "re")) == NULL)
			return false;
		while (!found && fgets(line, sizeof(line), f) != NULL) {
			char *p, *end;
			if (strncmp(line, "Groups:", 7) != 0)
				continue;
			for (p = line + 7; !found; p = end) {
				unsigned long g = strtoul(p, &end, 10);
				if (end == p)
					break;
				found = (gid_t)g == gid;
			}
		}
		fclose(f);
	}
	return found;
}

static void
refuse(int fd, const char *why)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "codexpool %d\nerror: %s\n\n", CTL_PROTO_VERSION, why);

	if (write(fd, msg, (size_t)n) < 0)
		(void)0;
	close(fd);
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int socklen, void *arg)
{
	struct ucred cred = { .uid = (uid_t)-1 };
	socklen_t cl_len = sizeof(cred);
	struct ctl_client *cl;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl_len) == -1 ||
	    (cred.uid != 0 && cred.uid != geteuid() &&
	    (control_gid == (gid_t)-1 || !peer_in_group(fd, &cred, control_gid)))) {
		log_warnx("control: refused a connection from uid %d", (int)cred.uid);
		refuse(fd, "permission denied");
		return;
	}
	if (nclients >= CTL_MAX_CLIENTS && close_idlest() == -1) {
		refuse(fd, "too many control connections");
		return;
	}
	cl = xcalloc(1, sizeof(*cl));
	cl->uid = cred.uid;
	cl->last_active = now_mono_usec();
	cl->bev = bufferevent_socket_new(sv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	cl->ev_idle = evtimer_new(sv->base, on_idle, cl);
	bufferevent_setcb(cl->bev, on_read, on_write, on_event, cl);
	/* on_write when the unread answers are down to half the limit */
	bufferevent_setwatermark(cl->bev, EV_WRITE, CTL_MAX_OUTPUT / 2, 0);
	evbuffer_add_cb(bufferevent_get_output(cl->bev), on_output_drained, cl);
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(cl->bev), "codexpool %d\n", CTL_PROTO_VERSION);
	arm_idle(cl, idle_timeout());
	TAILQ_INSERT_TAIL(&clients, cl, link);
	nclients++;
}

int
control_start(void)
{
	const char *path = sv->cfg.control_socket;
	struct sockaddr_un sun;
	mode_t old;
	int fd;

	if (path == NULL)
		return 0;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_warnx("control_socket path is too long: %s", path);
		return -1;
	}
	strlcpy_safe(sun.sun_path, path, sizeof(sun.sun_path));
	/* Refuse to steal the socket of a running daemon. */
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) != -1) {
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(fd);
			log_warnx("control socket %s is in use: is another codexpoold running?", path);
			return -1;
		}
		close(fd);
	}
	unlink(path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) == -1) {
		log_warn("control socket");
		return -1;
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		log_warn("cannot bind control socket %s", path);
		close(fd);
		return -1;
	}
	umask(old);
	chmod(path, 0600);
	if (sv->cfg.control_group != NULL) {
		struct group *gr = getgrnam(sv->cfg.control_group);
		if (gr == NULL) {
			log_warnx("control_group '%s' does not exist", sv->cfg.control_group);
			close(fd);
			return -1;
		}
		control_gid = gr->gr_gid;
		if (chown(path, (uid_t)-1, gr->gr_gid) == -1 || chmod(path, 0660) == -1)
			log_warn("cannot give the control socket to group %s", sv->cfg.control_group);
	}
	listener = evconnlistener_new(sv->base, on_accept, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, fd);
	if (listener == NULL) {
		log_warn("control socket listen");
		close(fd);
		return -1;
	}
	return 0;
}

/*
 * The first call (a stop signal) only stops accepting: connected clients
 * are still answered while running turns finish.  The next (at exit)
 * closes them.
 */
void
control_stop(void)
{
	static bool stopped;
	struct ctl_client *cl;

	if (stopped)
		while ((cl = TAILQ_FIRST(&clients)) != NULL)
			client_free(cl);
	stopped = true;
	if (listener == NULL)
		return;
	evconnlistener_free(listener);
	listener = NULL;
	if (sv->cfg.control_socket)
		unlink(sv->cfg.control_socket);
}
