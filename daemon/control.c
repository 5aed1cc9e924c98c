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
 * Only root and the daemon's own user may connect (SO_PEERCRED).
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

#include "jsonutil.h"
#include "log.h"
#include "msgtypes.h"
#include "store.h"
#include "supervisor.h"

#define CTL_PROTO_VERSION	1
#define CTL_MAX_CLIENTS		64
#define CTL_MAX_LINE		(256 * 1024)	/* account add carries an auth.json */
#define CTL_MAX_ARGS		16

struct ctl_client {
	struct bufferevent	*bev;
	uid_t			 uid;
	bool			 discarding;	/* the rest of an over-long line */
};

/* What a command writes: either text or a JSON object, never both. */
struct ctl_out {
	struct evbuffer		*text;
	struct json_object	*json;		/* set when --json */
	bool			 failed;
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
static int nclients;
static gid_t control_gid = (gid_t)-1;	/* control_group, if set */

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

static uint64_t
dispatches(void)
{
	const struct sv_stats *s = &sv->stats;

	return s->decisions[DEC_REUSE] + s->decisions[DEC_NEW] +
	    s->decisions[DEC_BYPASS] + s->decisions[DEC_RETRY_STALE];
}

static void
cmd_status(struct ctl_out *o, int argc, char **argv)
{
	const struct sv_stats *s = &sv->stats;
	int busy, open = pm_count(&sv->pool, &busy), i;
	char name[64];

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
	kv_u64(o, "worker_restarts", s->worker_restarts);
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

static void
cmd_show_workers(struct ctl_out *o, int argc, char **argv)
{
	struct json_object *rows = o->json ? json_object_new_array() : NULL;
	int i, conns[SV_MAX_WORKERS] = { 0 }, busy[SV_MAX_WORKERS] = { 0 };
	size_t it = 0;
	void *v;

	while ((v = idmap_next(&sv->pool.conns, &it)) != NULL) {
		struct pm_conn *c = v;
		if (c->slot >= 0 && c->slot < SV_MAX_WORKERS) {
			conns[c->slot]++;
			busy[c->slot] += c->busy;
		}
	}
	if (!rows)
		evbuffer_add_printf(o->text, "# slot pid state uptime restarts requests "
		    "reuse new bypass retry_stale conns busy\n");
	for (i = 0; i < sv->nslots; i++) {
		const struct worker_slot *w = &sv->slots[i];
		uint64_t up = w->pid ? (uint64_t)((now_mono_usec() - w->started_at) / USEC_PER_SEC) : 0;
		if (rows) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "slot", json_object_new_int(i));
			json_object_object_add(r, "pid", json_object_new_int((int)w->pid));
			json_object_object_add(r, "state", json_object_new_string(
			    w->draining && w->state == SLOT_UP ? "draining" : slot_state_name(w->state)));
			json_object_object_add(r, "uptime", json_object_new_int64((int64_t)up));
			json_object_object_add(r, "restarts", json_object_new_int((int)w->restarts));
			json_object_object_add(r, "requests", json_object_new_int64((int64_t)w->requests));
			json_object_object_add(r, "reuse", json_object_new_int64((int64_t)w->decisions[DEC_REUSE]));
			json_object_object_add(r, "new", json_object_new_int64((int64_t)w->decisions[DEC_NEW]));
			json_object_object_add(r, "bypass", json_object_new_int64((int64_t)w->decisions[DEC_BYPASS]));
			json_object_object_add(r, "retry_stale", json_object_new_int64((int64_t)w->decisions[DEC_RETRY_STALE]));
			json_object_object_add(r, "conns", json_object_new_int(conns[i]));
			json_object_object_add(r, "busy", json_object_new_int(busy[i]));
			json_object_array_add(rows, r);
		} else {
			evbuffer_add_printf(o->text, "%d %d %s %" PRIu64 " %u %" PRIu64 " %" PRIu64
			    " %" PRIu64 " %" PRIu64 " %" PRIu64 " %d %d\n", i, (int)w->pid,
			    w->draining && w->state == SLOT_UP ? "draining" : slot_state_name(w->state),
			    up, w->restarts, w->requests,
			    w->decisions[DEC_REUSE], w->decisions[DEC_NEW],
			    w->decisions[DEC_BYPASS], w->decisions[DEC_RETRY_STALE],
			    conns[i], busy[i]);
		}
	}
	if (rows)
		json_object_object_add(o->json, "workers", rows);
}

static void
cmd_show_pools(struct ctl_out *o, int argc, char **argv)
{
	struct json_object *rows = o->json ? json_object_new_array() : NULL;
	usec_t now = now_mono_usec();
	size_t it = 0;
	void *v;

	if (!rows)
		evbuffer_add_printf(o->text, "# conn key worker account state age turns "
		    "last_decision cached input\n");
	while ((v = idmap_next(&sv->pool.conns, &it)) != NULL) {
		const struct pm_conn *c = v;
		const char *state = c->closing ? "closing" : !c->up ? "connecting" :
		    c->busy ? "busy" : "idle";
		char conn[24], key[24];
		uint64_t age = (uint64_t)((now - c->created) / USEC_PER_SEC);
		snprintf(conn, sizeof(conn), "%016" PRIx64, c->id);
		snprintf(key, sizeof(key), "%016" PRIx64, c->key_hash);
		if (rows) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "conn", json_object_new_string(conn));
			json_object_object_add(r, "key", json_object_new_string(key));
			json_object_object_add(r, "worker", json_object_new_int(c->slot));
			json_object_object_add(r, "account", json_object_new_string(c->acct->entry));
			json_object_object_add(r, "state", json_object_new_string(state));
			json_object_object_add(r, "age", json_object_new_int64((int64_t)age));
			json_object_object_add(r, "turns", json_object_new_int64(c->turns));
			json_object_object_add(r, "last_decision", json_object_new_string(
			    c->last_decision ? decision_name(c->last_decision) : "-"));
			json_object_object_add(r, "cached", json_object_new_int64((int64_t)c->last_cached));
			json_object_object_add(r, "input", json_object_new_int64((int64_t)c->last_input));
			json_object_array_add(rows, r);
		} else {
			evbuffer_add_printf(o->text, "%s %s %d %s %s %" PRIu64 " %u %s %" PRIu64
			    " %" PRIu64 "\n", conn, key, c->slot, c->acct->entry, state, age,
			    c->turns, c->last_decision ? decision_name(c->last_decision) : "-",
			    c->last_cached, c->last_input);
		}
	}
	if (rows)
		json_object_object_add(o->json, "pools", rows);
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

static void
cmd_config(struct ctl_out *o, int argc, char **argv)
{
	struct json_object *rows = o->json ? json_object_new_array() : NULL;
	const struct cfg_key *k;
	char val[512];
	int i;

	if (!rows)
		evbuffer_add_printf(o->text, "# key value origin reloadable\n");
	for (k = codexpool_cfg_keys, i = 0; k->name != NULL; k++, i++) {
		cfg_format(&sv->cfgset, k, val, sizeof(val));
		if (rows) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "key", json_object_new_string(k->name));
			json_object_object_add(r, "value", json_object_new_string(val));
			json_object_object_add(r, "origin", json_object_new_string(sv->cfgset.origin[i].where));
			json_object_object_add(r, "reloadable", json_object_new_boolean(k->flags & CFG_RELOADABLE));
			json_object_array_add(rows, r);
		} else {
			evbuffer_add_printf(o->text, "%s %s %s %s\n", k->name, val[0] ? val : "-",
			    sv->cfgset.origin[i].where, (k->flags & CFG_RELOADABLE) ? "yes" : "no");
		}
	}
	if (rows)
		json_object_object_add(o->json, "config", rows);
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

static void
cmd_show_conversations(struct ctl_out *o, int argc, char **argv)
{
	struct json_object *rows = o->json ? json_object_new_array() : NULL;
	const struct conv_rec *c;
	usec_t now = now_mono_usec();

	if (!rows)
		evbuffer_add_printf(o->text, "# conv account worker turns idle "
		    "recent_turns(n:decision:cached/input[:miss])\n");
	TAILQ_FOREACH_REVERSE(c, &sv->convs.lru, conv_rec_list, lru) {
		uint32_t first = c->turns > CONVLOG_TURNS ? c->turns - CONVLOG_TURNS + 1 : 1, n;
		char conv[24];
		struct json_object *turns = rows ? json_object_new_array() : NULL;
		uint64_t idle = (uint64_t)((now - c->last_active) / USEC_PER_SEC);

		snprintf(conv, sizeof(conv), "%016" PRIx64, c->key_hash);
		if (!rows)
			evbuffer_add_printf(o->text, "%s %s %d %u %" PRIu64 " ", conv, c->entry,
			    c->slot, c->turns, idle);
		for (n = first; n <= c->turns; n++) {
			const struct conv_turn *t = &c->ring[(n - 1) % CONVLOG_TURNS];
			const char *dec = t->decision == DEC_BYPASS ? bypass_reason_name(t->reason) :
			    t->decision ? decision_name(t->decision) : "-";
			if (turns) {
				struct json_object *tj = json_object_new_object();
				json_object_object_add(tj, "turn", json_object_new_int((int)t->n));
				json_object_object_add(tj, "decision", json_object_new_string(
				    t->decision ? decision_name(t->decision) : "-"));
				if (t->decision == DEC_BYPASS)
					json_object_object_add(tj, "bypass", json_object_new_string(
					    bypass_reason_name(t->reason)));
				json_object_object_add(tj, "cached", json_object_new_int64((int64_t)t->cached));
				json_object_object_add(tj, "input", json_object_new_int64((int64_t)t->input));
				if (t->miss)
					json_object_object_add(tj, "miss", json_object_new_string(t->miss));
				json_object_array_add(turns, tj);
			} else {
				evbuffer_add_printf(o->text, "%s%u:%s:%" PRIu64 "/%" PRIu64 "%s%s",
				    n > first ? "," : "", t->n, dec, t->cached, t->input,
				    t->miss ? ":" : "", t->miss ? t->miss : "");
			}
		}
		if (rows) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "conv", json_object_new_string(conv));
			json_object_object_add(r, "account", json_object_new_string(c->entry));
			json_object_object_add(r, "worker", json_object_new_int(c->slot));
			json_object_object_add(r, "turns", json_object_new_int((int)c->turns));
			json_object_object_add(r, "idle", json_object_new_int64((int64_t)idle));
			json_object_object_add(r, "recent", turns);
			json_object_array_add(rows, r);
		} else {
			evbuffer_add_printf(o->text, "\n");
		}
	}
	if (rows)
		json_object_object_add(o->json, "conversations", rows);
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

static void
cmd_account_list(struct ctl_out *o, int argc, char **argv)
{
	struct json_object *rows = o->json ? json_object_new_array() : NULL;
	struct account *a;
	char quota[64];

	if (!rows)
		evbuffer_add_printf(o->text, "# entry label account_id status locked_for token_expires_in "
		    "plan quota inflight pooled requests input_tokens cached_tokens reason\n");
	TAILQ_FOREACH(a, &sv->accounts, link) {
		struct pm_account *pa = pm_account(&sv->pool, a->entry);
		uint64_t req = a->requests + (uint64_t)a->d_requests;
		uint64_t in = a->input_tokens + (uint64_t)a->d_input;
		uint64_t cached = a->cached_tokens + (uint64_t)a->d_cached;
		quota_summary(a, quota, sizeof(quota));
		account_usable(a);	/* ends an expired lock */
		if (rows) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "entry", json_object_new_string(a->entry));
			json_object_object_add(r, "label", a->label ? json_object_new_string(a->label) : NULL);
			json_object_object_add(r, "account_id", json_object_new_string(a->account_id));
			json_object_object_add(r, "status", json_object_new_string(account_status_name(a)));
			json_object_object_add(r, "reason", a->reason ? json_object_new_string(a->reason) : NULL);
			json_object_object_add(r, "locked_for", json_object_new_int64(secs_until(a->locked_until)));
			json_object_object_add(r, "token_expires_in", json_object_new_int64(secs_until(a->access_expires)));
			json_object_object_add(r, "plan", a->plan ? json_object_new_string(a->plan) : NULL);
			json_object_object_add(r, "quota", a->quota_json ?
			    json_tokener_parse(a->quota_json) : NULL);
			json_object_object_add(r, "inflight", json_object_new_int(a->inflight));
			json_object_object_add(r, "pooled", json_object_new_int(pa->live));
			json_object_object_add(r, "requests", json_object_new_int64((int64_t)req));
			json_object_object_add(r, "input_tokens", json_object_new_int64((int64_t)in));
			json_object_object_add(r, "cached_tokens", json_object_new_int64((int64_t)cached));
			json_object_array_add(rows, r);
		} else {
			evbuffer_add_printf(o->text, "%s %s %s %s %" PRId64 " %" PRId64 " %s %s %d %d %"
			    PRIu64 " %" PRIu64 " %" PRIu64 " %s\n", a->entry, a->label ? a->label : "-",
			    a->account_id, account_status_name(a), secs_until(a->locked_until),
			    secs_until(a->access_expires), a->plan ? a->plan : "-", quota,
			    a->inflight, pa->live, req, in, cached, a->reason ? a->reason : "-");
		}
	}
	if (rows)
		json_object_object_add(o->json, "accounts", rows);
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

static void
handle_line(struct ctl_client *cl, char *line)
{
	struct evbuffer *out = bufferevent_get_output(cl->bev);
	struct ctl_out o = { .text = evbuffer_new() };
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

static void
client_free(struct ctl_client *cl)
{
	bufferevent_free(cl->bev);
	free(cl);
	nclients--;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_client *cl = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr nl;
	char *line;
	size_t n;

	for (;;) {
		if (cl->discarding) {
			nl = evbuffer_search(in, "\n", 1, NULL);
			if (nl.pos < 0) {
				evbuffer_drain(in, evbuffer_get_length(in));
				return;
			}
			evbuffer_drain(in, (size_t)nl.pos + 1);
			cl->discarding = false;
		}
		if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) == NULL)
			break;
		if (n > CTL_MAX_LINE)
			evbuffer_add_printf(bufferevent_get_output(bev), "error: line too long\n\n");
		else
			handle_line(cl, line);
		free(line);
	}
	if (evbuffer_get_length(in) > CTL_MAX_LINE) {
		evbuffer_add_printf(bufferevent_get_output(bev), "error: line too long\n\n");
		evbuffer_drain(in, evbuffer_get_length(in));
		cl->discarding = true;
	}
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_free(arg);
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int socklen, void *arg)
{
	struct ucred cred;
	socklen_t cl_len = sizeof(cred);
	struct ctl_client *cl;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl_len) == -1 ||
	    (cred.uid != 0 && cred.uid != geteuid() &&
	    (control_gid == (gid_t)-1 || cred.gid != control_gid))) {
		static const char denied[] = "codexpool 1\nerror: permission denied\n\n";
		if (write(fd, denied, sizeof(denied) - 1) < 0)
			(void)0;
		log_warnx("control: refused a connection from uid %d", (int)cred.uid);
		close(fd);
		return;
	}
	if (nclients >= CTL_MAX_CLIENTS) {
		static const char busy[] = "codexpool 1\nerror: too many control connections\n\n";
		if (write(fd, busy, sizeof(busy) - 1) < 0)
			(void)0;
		close(fd);
		return;
	}
	cl = xcalloc(1, sizeof(*cl));
	cl->uid = cred.uid;
	cl->bev = bufferevent_socket_new(sv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(cl->bev, on_read, NULL, on_event, cl);
	bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(cl->bev), "codexpool %d\n", CTL_PROTO_VERSION);
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

void
control_stop(void)
{
	if (listener == NULL)
		return;
	evconnlistener_free(listener);
	listener = NULL;
	if (sv->cfg.control_socket)
		unlink(sv->cfg.control_socket);
}
