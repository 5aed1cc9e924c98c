/*
 * The accounts: the store (SQLite, supervisor only) and its in-memory
 * copy, choice of an account per conversation with affinity, token
 * refresh, rate-limit locks and usage counters.
 *
 * Rules that keep account data safe:
 *  - the store is written before memory, and a rotated refresh token is
 *    committed durably before anything uses it;
 *  - every change of an account's state closes its pooled connections
 *    (a refreshed token, a lock, a ban, disabling, removal);
 *  - tokens never reach a log line or a control answer.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "apikeys.h"
#include "hash.h"
#include "idmap.h"
#include "jsonutil.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "oauth.h"
#include "store.h"
#include "supervisor.h"

#define AUTH_FILE_MAX		(1024 * 1024)
#define FLUSH_INTERVAL_SEC	5
#define REFRESH_TIMEOUT		(30 * USEC_PER_SEC)
#define REFRESH_RETRY_MIN	30		/* s, doubling per failure */
#define REFRESH_RETRY_MAX	900
#define REFRESH_NO_EXP		(8 * 24 * 3600)	/* no exp claim: as the CLI does */

static int64_t
now_unix(void)
{
	return (int64_t)time(NULL);
}

const char *
account_status_name(const struct account *a)
{
	return store_status_name((enum store_status)a->status);
}

static char *
dup_or_null(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

static void
replace_str(char **dst, const char *src)
{
	free(*dst);
	*dst = dup_or_null(src);
}

static void
replace_secret(char **dst, const char *src)
{
	freezero_str(*dst);
	*dst = dup_or_null(src);
}

static void	schedule_refresh(struct account *a, int64_t at);
static void	on_refresh_timer(evutil_socket_t, short, void *);

static struct account *
account_from_row(const struct store_account *sa)
{
	struct account *a = xcalloc(1, sizeof(*a));

	strlcpy_safe(a->entry, sa->entry, sizeof(a->entry));
	a->label = dup_or_null(sa->label);
	a->account_id = xstrdup(sa->account_id);
	a->access_token = dup_or_null(sa->access_token);
	a->refresh_token = dup_or_null(sa->refresh_token);
	a->id_token = dup_or_null(sa->id_token);
	a->access_expires = sa->access_expires;
	a->status = sa->status;
	a->reason = dup_or_null(sa->status_reason);
	a->locked_until = sa->rate_limited_until;
	a->plan = dup_or_null(sa->plan);
	a->quota_json = dup_or_null(sa->quota_json);
	strlcpy_safe(a->installation_id, sa->installation_id, sizeof(a->installation_id));
	a->requests = (uint64_t)sa->requests;
	a->input_tokens = (uint64_t)sa->input_tokens;
	a->cached_tokens = (uint64_t)sa->cached_tokens;
	a->output_tokens = (uint64_t)sa->output_tokens;
	a->last_used = sa->last_used;
	a->ev_refresh = evtimer_new(sv->base, on_refresh_timer, a);
	return a;
}

static void
account_free(struct account *a)
{
	if (a->refresh)
		oauth_cancel(a->refresh);
	if (a->ev_refresh)
		event_free(a->ev_refresh);
	free(a->label);
	free(a->account_id);
	freezero_str(a->access_token);
	freezero_str(a->refresh_token);
	freezero_str(a->id_token);
	free(a->reason);
	free(a->plan);
	free(a->quota_json);
	free(a->rl_frame);
	free(a);
}

struct account *
accounts_by_entry(const char *entry)
{
	struct account *a;

	TAILQ_FOREACH(a, &sv->accounts, link)
		if (strcmp(a->entry, entry) == 0)
			return a;
	return NULL;
}

struct account *
accounts_find(const char *text)
{
	struct account *a;

	TAILQ_FOREACH(a, &sv->accounts, link)
		if (strcmp(a->entry, text) == 0 || strcmp(a->account_id, text) == 0 ||
		    (a->label && strcmp(a->label, text) == 0))
			return a;
	return NULL;
}

/* ---- state changes ---------------------------------------------------- */

static void (*listener)(struct account *, int);

/* The turn lifecycle listens; accounts.c knows nothing of turns. */
void
accounts_set_listener(void (*fn)(struct account *a, int event))
{
	listener = fn;
}

static void
notify(struct account *a, int event)
{
	if (event == ACCT_EV_REFRESHED || event == ACCT_EV_REFRESH_FAILED)
		metrics_token_refresh(event == ACCT_EV_REFRESHED);
	if (listener != NULL)
		listener(a, event);
}

/* Writes a status to the store, then memory; closes the pooled connections. */
static void
set_status(struct account *a, int status, const char *reason, int64_t until)
{
	if (store_account_set_status(sv->store, a->entry, (enum store_status)status,
	    reason, until, now_unix()) != 0)
		log_warnx("account %s: cannot store status %s: %s", a->entry,
		    store_status_name((enum store_status)status), store_errmsg(sv->store));
	a->status = status;
	replace_str(&a->reason, reason);
	a->locked_until = until;
	if (status != ST_ACTIVE)
		sv_evict_account(a->entry);
}

void
account_set_status(struct account *a, int status, const char *reason)
{
	log_info("account %s: %s%s%s", a->entry, store_status_name((enum store_status)status),
	    reason ? ": " : "", reason ? reason : "");
	set_status(a, status, reason, 0);
}

void
account_lock(struct account *a, int64_t until, const char *reason)
{
	if (until <= now_unix())
		until = now_unix() + sv->cfg.rate_limit_lock / USEC_PER_SEC;
	if (a->status == ST_RATE_LIMITED && a->locked_until >= until)
		return;
	log_info("account %s: rate limited until %" PRId64 " (%" PRId64 "s): %s", a->entry,
	    until, until - now_unix(), reason);
	set_status(a, ST_RATE_LIMITED, reason, until);
}

void
account_reset(struct account *a)
{
	log_info("account %s: reset to active (was %s)", a->entry, account_status_name(a));
	set_status(a, ST_ACTIVE, NULL, 0);
	a->refresh_failures = 0;
}

bool
account_usable(struct account *a)
{
	if (a->status == ST_RATE_LIMITED && a->locked_until <= now_unix()) {
		log_info("account %s: rate-limit lock ended", a->entry);
		set_status(a, ST_ACTIVE, NULL, 0);
	}
	return a->status == ST_ACTIVE && a->access_token != NULL;
}

void
accounts_why_none(char *buf, size_t len, int64_t *first_unlock)
{
	int counts[ST_NSTATUS] = { 0 };
	struct account *a;
	size_t off;
	int i;

	*first_unlock = 0;
	TAILQ_FOREACH(a, &sv->accounts, link) {
		if (a->status >= 0 && a->status < ST_NSTATUS)
			counts[a->status]++;
		if (a->status == ST_RATE_LIMITED &&
		    (*first_unlock == 0 || a->locked_until < *first_unlock))
			*first_unlock = a->locked_until;
	}
	if (sv->naccounts == 0) {
		snprintf(buf, len, "no account is configured; add one with "
		    "'codexpoolctl account add --auth-json FILE'");
		return;
	}
	off = (size_t)snprintf(buf, len, "no usable account:");
	for (i = 0; i < ST_NSTATUS && off < len; i++)
		if (counts[i])
			off += (size_t)snprintf(buf + off, len - off, " %d %s", counts[i],
			    store_status_name((enum store_status)i));
	if (*first_unlock && off < len)
		snprintf(buf + off, len - off, "; the first rate-limit lock ends in %" PRId64 "s",
		    *first_unlock - now_unix());
}

/* ---- choosing an account ---------------------------------------------- */

/*
 * Affinity writes wait in memory and reach the store with the usage
 * counters every few seconds, so a turn never waits for SQLite to write;
 * lookups see the pending ones first.
 */
struct pending_affinity {
	char		*conv;
	char		 entry[ENTRY_LEN];
	int64_t		 at;
};

static struct idmap pending_affinity;	/* hash64(conv) -> pending_affinity */

static void
affinity_put(const char *conv, const char *entry, int64_t now)
{
	uint64_t h = hash64_str(conv);
	struct pending_affinity *p = idmap_get(&pending_affinity, h);

	if (p != NULL && strcmp(p->conv, conv) != 0) {
		/* a hash collision: write the older one now */
		store_affinity_put(sv->store, p->conv, p->entry, p->at);
		free(p->conv);
		p->conv = xstrdup(conv);
	} else if (p == NULL) {
		p = xcalloc(1, sizeof(*p));
		p->conv = xstrdup(conv);
		idmap_put(&pending_affinity, h, p);
	}
	strlcpy_safe(p->entry, entry, sizeof(p->entry));
	p->at = now;
}

static int
affinity_get(const char *conv, int64_t now, char entry[STORE_ENTRY_LEN])
{
	struct pending_affinity *p = idmap_get(&pending_affinity, hash64_str(conv));

	if (p != NULL && strcmp(p->conv, conv) == 0) {
		strlcpy_safe(entry, p->entry, STORE_ENTRY_LEN);
		return 0;
	}
	return store_affinity_get(sv->store, conv, now, sv->cfg.affinity_ttl / USEC_PER_SEC, entry);
}

/* Inside the flush transaction. */
static void
affinity_flush(void)
{
	struct pending_affinity *p;
	size_t i = 0;

	while ((p = idmap_next(&pending_affinity, &i)) != NULL) {
		if (store_affinity_put(sv->store, p->conv, p->entry, p->at) != 0)
			log_warnx("cannot store affinity: %s", store_errmsg(sv->store));
		free(p->conv);
		free(p);
	}
	idmap_free(&pending_affinity);
	idmap_init(&pending_affinity);
}

static bool
excluded(struct account *a, struct account *const *ex, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (ex[i] == a)
			return true;
	return false;
}

struct account *
accounts_pick(const char *conv, struct account *const *exclude, int nexclude, bool *moved)
{
	struct account *a, *best = NULL, *sticky = NULL;
	char entry[STORE_ENTRY_LEN];
	int64_t now = now_unix();

	*moved = false;
	if (conv != NULL && affinity_get(conv, now, entry) == 0)
		sticky = accounts_by_entry(entry);
	if (sticky && !excluded(sticky, exclude, nexclude) && account_usable(sticky))
		best = sticky;
	if (best == NULL) {
		/* least loaded: turns in flight, then requests served, then idle longest */
		TAILQ_FOREACH(a, &sv->accounts, link) {
			if (excluded(a, exclude, nexclude) || !account_usable(a))
				continue;
			if (best == NULL || a->inflight < best->inflight ||
			    (a->inflight == best->inflight &&
			    (a->requests + (uint64_t)a->d_requests < best->requests + (uint64_t)best->d_requests ||
			    (a->requests + (uint64_t)a->d_requests == best->requests + (uint64_t)best->d_requests &&
			    a->last_used < best->last_used))))
				best = a;
		}
		*moved = sticky != NULL && best != NULL;
	}
	if (best != NULL && conv != NULL)
		affinity_put(conv, best->entry, now);
	return best;
}

void
account_usage(struct account *a, uint64_t in, uint64_t cached, uint64_t out)
{
	a->d_requests++;
	a->d_input += (int64_t)in;
	a->d_cached += (int64_t)cached;
	a->d_output += (int64_t)out;
	a->last_used = now_unix();
}

/* Usage counters go to the store in one transaction every few seconds. */
static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct account *a;
	int64_t now = now_unix();
	bool any = false;

	if (pending_affinity.count > 0) {
		if (store_begin(sv->store) != 0)
			return;
		any = true;
		affinity_flush();
	}
	TAILQ_FOREACH(a, &sv->accounts, link) {
		if (a->d_requests == 0)
			continue;
		if (!any && store_begin(sv->store) != 0)
			return;
		any = true;
		if (store_usage_add(sv->store, a->entry, a->d_requests, a->d_input, a->d_cached,
		    a->d_output, now) != 0) {
			log_warnx("account %s: cannot store usage: %s", a->entry, store_errmsg(sv->store));
			continue;
		}
		a->requests += (uint64_t)a->d_requests;
		a->input_tokens += (uint64_t)a->d_input;
		a->cached_tokens += (uint64_t)a->d_cached;
		a->output_tokens += (uint64_t)a->d_output;
		a->d_requests = a->d_input = a->d_cached = a->d_output = 0;
	}
	if (apikeys_dirty()) {
		if (!any && store_begin(sv->store) != 0)
			return;
		any = true;
		apikeys_flush(sv->store);
	}
	if (any && store_commit(sv->store) != 0)
		log_warnx("cannot store usage: %s", store_errmsg(sv->store));
	if (fd == -2)
		return;		/* the final flush at exit */
	store_affinity_sweep(sv->store, now, sv->cfg.affinity_ttl / USEC_PER_SEC, NULL);
}

/* ---- token refresh -------------------------------------------------------- */

static int64_t
refresh_due(const struct account *a)
{
	int64_t margin = sv->cfg.token_refresh_margin / USEC_PER_SEC;

	if (a->access_expires > 0)
		return a->access_expires - margin;
	return (a->refreshed_at ? a->refreshed_at : now_unix()) + REFRESH_NO_EXP;
}

static void
schedule_refresh(struct account *a, int64_t at)
{
	struct timeval tv;
	int64_t wait = at - now_unix();

	if (a->refresh_token == NULL || a->ev_refresh == NULL)
		return;
	if (wait < 1)
		wait = 1;
	if (wait > 24 * 3600)
		wait = 24 * 3600;	/* look again daily: the margin may change */
	tv.tv_sec = (time_t)wait;
	tv.tv_usec = 0;
	evtimer_add(a->ev_refresh, &tv);
}

static void
on_refresh_timer(evutil_socket_t fd, short what, void *arg)
{
	struct account *a = arg;

	if (a->status == ST_DISABLED || a->status == ST_BANNED || a->status == ST_EXPIRED)
		return;
	if (now_unix() < refresh_due(a)) {
		schedule_refresh(a, refresh_due(a));
		return;
	}
	account_refresh(a, "access token expires soon");
}

static void
on_refresh_done(const struct oauth_result *res, void *arg)
{
	struct account *a = arg;
	int64_t exp;

	a->refresh = NULL;
	if (res->outcome == OAUTH_OK && res->access_token != NULL) {
		exp = jwt_exp(res->access_token);
		if (exp <= 0 && res->expires_in > 0)
			exp = now_unix() + res->expires_in;
		/* The rotated pair is durable before anything uses it. */
		if (store_account_set_tokens(sv->store, a->entry, res->access_token,
		    res->refresh_token, res->id_token, exp > 0 ? exp : 0, now_unix()) != 0) {
			log_warnx("account %s: refreshed token NOT stored (%s); keeping the old one",
			    a->entry, store_errmsg(sv->store));
			schedule_refresh(a, now_unix() + REFRESH_RETRY_MIN);
			if (a->status == ST_REFRESHING)
				set_status(a, ST_ACTIVE, NULL, 0);
			notify(a, ACCT_EV_REFRESH_FAILED);
			return;
		}
		replace_secret(&a->access_token, res->access_token);
		if (res->refresh_token)
			replace_secret(&a->refresh_token, res->refresh_token);
		if (res->id_token)
			replace_secret(&a->id_token, res->id_token);
		a->access_expires = exp > 0 ? exp : 0;
		a->refreshed_at = now_unix();
		a->refresh_failures = 0;
		log_info("account %s: token refreshed, valid for %" PRId64 "s", a->entry,
		    exp > 0 ? exp - now_unix() : -1);
		if (a->status == ST_REFRESHING)
			set_status(a, ST_ACTIVE, NULL, 0);
		/* Pooled connections carry the old token in their handshake. */
		sv_evict_account(a->entry);
		schedule_refresh(a, refresh_due(a));
		notify(a, ACCT_EV_REFRESHED);
		return;
	}
	if (res->outcome == OAUTH_PERMANENT) {
		char why[128];
		snprintf(why, sizeof(why), "refresh failed: %s",
		    res->error_code[0] ? res->error_code : "refresh token rejected");
		log_warnx("account %s: %s (%s); the account needs a new login", a->entry, why,
		    res->message);
		set_status(a, ST_EXPIRED, why, 0);
		notify(a, ACCT_EV_REFRESH_FAILED);
		return;
	}
	a->refresh_failures++;
	{
		int64_t wait = REFRESH_RETRY_MIN << (a->refresh_failures > 5 ? 5 : a->refresh_failures - 1);
		if (wait > REFRESH_RETRY_MAX)
			wait = REFRESH_RETRY_MAX;
		log_warnx("account %s: token refresh failed (%s), retrying in %" PRId64 "s",
		    a->entry, res->message, wait);
		schedule_refresh(a, now_unix() + wait);
		/* Not stuck in 'refreshing' through the backoff: the token may
		 * still work, and a turn that meets a 401 tries again. */
		if (a->status == ST_REFRESHING)
			set_status(a, ST_ACTIVE, NULL, 0);
	}
	notify(a, ACCT_EV_REFRESH_FAILED);
}

int
account_refresh(struct account *a, const char *why)
{
	const char *ca = sv->cfg.token_ca_file ? sv->cfg.token_ca_file : sv->cfg.upstream_ca_file;
	char err[256];

	if (a->refresh != NULL)
		return 0;	/* one writer per account: join the refresh in flight */
	if (a->refresh_token == NULL) {
		log_warnx("account %s: cannot refresh (%s): no refresh token", a->entry, why);
		return -1;
	}
	log_info("account %s: refreshing the access token (%s)", a->entry, why);
	a->refresh = oauth_refresh(sv->base, sv->dns, sv->cfg.token_url, ca, a->refresh_token,
	    REFRESH_TIMEOUT, on_refresh_done, a, err, sizeof(err));
	if (a->refresh == NULL) {
		log_warnx("account %s: cannot refresh: %s", a->entry, err);
		return -1;
	}
	return 0;
}

/* ---- adding and removing -------------------------------------------------- */

int
account_add(const char *access, const char *refresh, const char *id_token,
    const char *account_id, const char *label, struct account **out, char *err, size_t errlen)
{
	struct store_account sa;
	struct account *a;
	char claim[STORE_ID_MAX];

	*out = NULL;
	if (access == NULL || *access == '\0') {
		snprintf(err, errlen, "an access token is required");
		return -1;
	}
	if ((account_id == NULL || *account_id == '\0') &&
	    jwt_account_id(access, claim, sizeof(claim)) == 0)
		account_id = claim;
	if ((account_id == NULL || *account_id == '\0') && id_token &&
	    jwt_account_id(id_token, claim, sizeof(claim)) == 0)
		account_id = claim;
	if (account_id == NULL || *account_id == '\0') {
		snprintf(err, errlen, "no ChatGPT account id: give tokens.account_id or a token "
		    "with the chatgpt_account_id claim");
		return -1;
	}
	if ((a = accounts_find(account_id)) != NULL) {
		snprintf(err, errlen, "account %s is already there as %s", account_id, a->entry);
		*out = a;
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.account_id = (char *)account_id;
	sa.label = (char *)(label && *label ? label : NULL);
	sa.access_token = (char *)access;
	sa.refresh_token = (char *)(refresh && *refresh ? refresh : NULL);
	sa.id_token = (char *)(id_token && *id_token ? id_token : NULL);
	sa.access_expires = jwt_exp(access) > 0 ? jwt_exp(access) : 0;
	sa.status = ST_ACTIVE;
	if (store_account_insert(sv->store, &sa) != 0) {
		snprintf(err, errlen, "%s", store_errmsg(sv->store));
		return -1;
	}
	a = account_from_row(&sa);
	TAILQ_INSERT_TAIL(&sv->accounts, a, link);
	sv->naccounts++;
	schedule_refresh(a, refresh_due(a));
	log_info("account %s added (%s)", a->entry, a->label ? a->label : "no label");
	*out = a;
	return 0;
}

int
account_add_auth_json(const char *json, size_t len, const char *label,
    struct account **out, char *err, size_t errlen)
{
	struct json_object *root, *tokens;
	char perr[128];
	int rc;

	if ((root = json_parse_buf(json, len, perr, sizeof(perr))) == NULL) {
		snprintf(err, errlen, "not a valid auth.json: %s", perr);
		return -1;
	}
	tokens = json_get_obj(root, "tokens");
	if (tokens == NULL) {
		snprintf(err, errlen, "not a Codex auth.json: no \"tokens\" object");
		json_object_put(root);
		return -1;
	}
	rc = account_add(json_get_str(tokens, "access_token"), json_get_str(tokens, "refresh_token"),
	    json_get_str(tokens, "id_token"), json_get_str(tokens, "account_id"), label, out,
	    err, errlen);
	json_object_put(root);
	return rc;
}

int
account_remove(struct account *a)
{
	sv_evict_account(a->entry);
	if (store_account_remove(sv->store, a->entry) != 0) {
		log_warnx("account %s: cannot remove: %s", a->entry, store_errmsg(sv->store));
		return -1;
	}
	log_info("account %s removed", a->entry);
	TAILQ_REMOVE(&sv->accounts, a, link);
	sv->naccounts--;
	notify(a, ACCT_EV_REMOVED);	/* turns waiting on it move or fail */
	a->removed = true;
	if (a->refresh != NULL) {
		oauth_cancel(a->refresh);
		a->refresh = NULL;
	}
	evtimer_del(a->ev_refresh);
	/* Turns still running on it hold a pointer: the last one frees it. */
	if (a->inflight > 0)
		TAILQ_INSERT_TAIL(&sv->removed_accounts, a, link);
	else
		account_free(a);
	return 0;
}

void
account_release(struct account *a)
{
	if (a->inflight > 0)
		a->inflight--;
	if (a->removed && a->inflight == 0) {
		TAILQ_REMOVE(&sv->removed_accounts, a, link);
		account_free(a);
	}
}

/* ---- rate-limit events -------------------------------------------------- */

static bool
window_full(struct json_object *w, int64_t *reset_at)
{
	struct json_object *v;
	double used;

	if (w == NULL || !json_object_object_get_ex(w, "used_percent", &v))
		return false;
	used = json_object_get_double(v);
	*reset_at = json_get_int(w, "reset_at", 0);
	return used >= 100.0;
}

/* A codex.rate_limits frame: keep the windows; a full one with a future
 * reset locks the account now rather than after a failed turn. */
#define RL_FRAME_MAX	16384

void
accounts_on_rate_limits(const char *entry, const char *frame, size_t len)
{
	struct account *a = accounts_by_entry(entry);
	struct json_object *o, *rl;
	const char *plan;
	int64_t reset = 0;
	char err[64];
	bool full = false;

	if (a == NULL)
		return;
	if (a->rl_frame != NULL && a->rl_frame_len == len &&
	    memcmp(a->rl_frame, frame, len) == 0)
		return;
	free(a->rl_frame);
	a->rl_frame = NULL;
	if ((o = json_parse_buf(frame, len, err, sizeof(err))) == NULL)
		return;
	if ((rl = json_get_obj(o, "rate_limits")) != NULL) {
		const char *text = json_plain(rl, NULL);
		if (a->quota_json == NULL || strcmp(a->quota_json, text) != 0) {
			replace_str(&a->quota_json, text);
			store_account_set_quota(sv->store, a->entry, text, now_unix());
		}
		if (window_full(json_get_obj(rl, "primary"), &reset) ||
		    window_full(json_get_obj(rl, "secondary"), &reset)) {
			if (reset > now_unix())
				account_lock(a, reset, "a usage window is at 100%");
			full = true;
		}
	}
	if (!full && len <= RL_FRAME_MAX) {
		a->rl_frame = xmalloc(len);
		memcpy(a->rl_frame, frame, len);
		a->rl_frame_len = len;
	}
	if ((plan = json_get_str(o, "plan_type")) != NULL &&
	    (a->plan == NULL || strcmp(a->plan, plan) != 0)) {
		replace_str(&a->plan, plan);
		store_account_set_plan(sv->store, a->entry, plan, now_unix());
	}
	json_object_put(o);
}

/* One window from x-codex-<which>-used-percent / -window-minutes / -reset-at. */
static struct json_object *
window_from_headers(struct json_object *h, const char *which)
{
	char name[64];
	const char *v;
	struct json_object *w;

	snprintf(name, sizeof(name), "x-codex-%s-used-percent", which);
	if ((v = json_get_str(h, name)) == NULL)
		return NULL;
	w = json_object_new_object();
	json_object_object_add(w, "used_percent", json_object_new_double(strtod(v, NULL)));
	snprintf(name, sizeof(name), "x-codex-%s-window-minutes", which);
	if ((v = json_get_str(h, name)) != NULL)
		json_object_object_add(w, "window_minutes", json_object_new_int64(strtoll(v, NULL, 10)));
	snprintf(name, sizeof(name), "x-codex-%s-reset-at", which);
	if ((v = json_get_str(h, name)) != NULL)
		json_object_object_add(w, "reset_at", json_object_new_int64(strtoll(v, NULL, 10)));
	return w;
}

/*
 * The x-codex-* rate-limit headers an upstream error carries (in its
 * "headers" object) update the quota view like a codex.rate_limits event.
 */
void
accounts_on_rate_limit_headers(struct account *a, struct json_object *headers)
{
	struct json_object *rl, *p, *sec;
	const char *text;
	int64_t reset = 0;

	if (a == NULL || headers == NULL)
		return;
	p = window_from_headers(headers, "primary");
	sec = window_from_headers(headers, "secondary");
	if (p == NULL && sec == NULL)
		return;
	/* the windows change here: the next frame is read again */
	free(a->rl_frame);
	a->rl_frame = NULL;
	rl = json_object_new_object();
	if (p)
		json_object_object_add(rl, "primary", p);
	if (sec)
		json_object_object_add(rl, "secondary", sec);
	text = json_plain(rl, NULL);
	replace_str(&a->quota_json, text);
	store_account_set_quota(sv->store, a->entry, text, now_unix());
	if ((window_full(p, &reset) || window_full(sec, &reset)) && reset > now_unix())
		account_lock(a, reset, "a usage window is at 100%");
	json_object_put(rl);
}

/* ---- start and stop ------------------------------------------------------ */

static char *
read_small_file(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	if (fstat(fd, &st) == -1 || st.st_size > AUTH_FILE_MAX) {
		close(fd);
		errno = EFBIG;
		return NULL;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		log_warnx("%s is readable by others (mode %03o); it holds tokens, chmod 600 it",
		    path, (unsigned)(st.st_mode & 0777));
	buf = xmalloc((size_t)st.st_size + 1);
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

int
accounts_load(void)
{
	struct store_account *rows = NULL;
	struct timeval tv = { FLUSH_INTERVAL_SEC, 0 };
	char path[4096], err[512];
	size_t n = 0, i;

	TAILQ_INIT(&sv->accounts);
	TAILQ_INIT(&sv->removed_accounts);
	snprintf(path, sizeof(path), "%s/codexpool.db", sv->cfg.data_dir);
	if ((sv->store = store_open(path, err, sizeof(err))) == NULL) {
		log_warnx("account store %s: %s", path, err);
		return -1;
	}
	if (store_account_list(sv->store, &rows, &n) != 0) {
		log_warnx("account store %s: %s", path, store_errmsg(sv->store));
		return -1;
	}
	for (i = 0; i < n; i++) {
		struct account *a = account_from_row(&rows[i]);
		TAILQ_INSERT_TAIL(&sv->accounts, a, link);
		sv->naccounts++;
		schedule_refresh(a, refresh_due(a));
	}
	store_account_list_free(rows, n);

	if (sv->cfg.auth_file != NULL) {
		struct account *a;
		size_t len;
		char *text = read_small_file(sv->cfg.auth_file, &len);
		if (text == NULL) {
			log_warn("cannot read auth_file %s", sv->cfg.auth_file);
			return -1;
		}
		int rc = account_add_auth_json(text, len, NULL, &a, err, sizeof(err));
		freezero_str(text);
		if (rc < 0) {
			log_warnx("auth_file %s: %s", sv->cfg.auth_file, err);
			return -1;
		}
		if (rc == 1)
			log_debug("auth_file %s: account already in the store as %s",
			    sv->cfg.auth_file, a->entry);
		else if (a->label == NULL) {
			store_account_set_label(sv->store, a->entry, "auth_file", now_unix());
			a->label = xstrdup("auth_file");
		}
	}
	if (sv->naccounts == 0)
		log_warnx("no accounts: requests get 503 until one is added "
		    "(codexpoolctl account add --auth-json FILE)");
	else
		log_info("%d account(s) in %s", sv->naccounts, path);
	sv->ev_flush = event_new(sv->base, -1, EV_PERSIST, on_flush, NULL);
	event_add(sv->ev_flush, &tv);
	return 0;
}

void
accounts_free(void)
{
	struct account *a;

	if (sv == NULL)
		return;
	if (sv->store != NULL)
		on_flush(-2, 0, NULL);
	if (sv->ev_flush)
		event_free(sv->ev_flush);
	sv->ev_flush = NULL;
	while ((a = TAILQ_FIRST(&sv->accounts)) != NULL) {
		TAILQ_REMOVE(&sv->accounts, a, link);
		account_free(a);
	}
	while ((a = TAILQ_FIRST(&sv->removed_accounts)) != NULL) {
		TAILQ_REMOVE(&sv->removed_accounts, a, link);
		account_free(a);
	}
	sv->naccounts = 0;
	if (sv->store)
		store_close(sv->store);
	sv->store = NULL;
}
