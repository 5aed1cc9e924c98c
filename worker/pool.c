/*
 * Upstream connection pool: the dispatch decision, the state machine,
 * eviction and expiry.  Pure logic; see pool.h.
 */
#include "config.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"

static const char *const state_names[CONN_NSTATES] = {
	"connecting", "idle", "busy", "closing", "dead",
};

/* allowed[from][to] */
static const bool allowed[CONN_NSTATES][CONN_NSTATES] = {
	/*               CONN  IDLE   BUSY   CLOS   DEAD */
	[CONN_CONNECTING] = { false, true,  true,  true,  true },
	[CONN_IDLE]       = { false, false, true,  true,  true },
	[CONN_BUSY]       = { false, true,  false, true,  true },
	[CONN_CLOSING]    = { false, false, false, false, true },
	[CONN_DEAD]       = { false, false, false, false, false },
};

const char *
wpool_state_name(enum conn_state s)
{
	return (s >= 0 && s < CONN_NSTATES) ? state_names[s] : "?";
}

void
wpool_init(struct pool *p, int slot, uint32_t pid, const struct pool_hooks *hooks,
    void *hook_arg)
{
	memset(p, 0, sizeof(*p));
	p->slot = slot;
	p->pid = pid;
	p->enabled = true;
	idmap_init(&p->by_key);
	idmap_init(&p->by_id);
	if (hooks != NULL)
		p->hooks = *hooks;
	p->hook_arg = hook_arg;
}

static void
conn_free(struct pool_conn *c)
{
	free(c->entry);
	free(c);
}

void
wpool_free(struct pool *p)
{
	struct pool_conn *c, *next;

	for (c = p->head; c != NULL; c = next) {
		next = c->next;
		conn_free(c);
	}
	p->head = p->tail = NULL;
	p->nconns = 0;
	idmap_free(&p->by_key);
	idmap_free(&p->by_id);
}

uint64_t
wpool_next_id(struct pool *p)
{
	if (++p->seq == 0)	/* wrapped after 2^32 connections: skip 0 */
		p->seq = 1;
	return ((uint64_t)(p->slot & 0xff) << 56) |
	    ((uint64_t)(p->pid & 0xffffff) << 32) | p->seq;
}

int
wpool_set_state(struct pool *p, struct pool_conn *c, enum conn_state s)
{
	if (c->state == s)
		return 0;
	if (!allowed[c->state][s]) {
		log_warnx("conn %016llx: refused move %s -> %s",
		    (unsigned long long)c->id, wpool_state_name(c->state),
		    wpool_state_name(s));
		return -1;
	}
	p->nstate[c->state]--;
	p->nstate[s]++;
	if (!c->pooled && s == CONN_DEAD)
		p->noneshot--;
	c->state = s;
	return 0;
}

void
wpool_set_max_age(struct pool *p, usec_t max_age)
{
	p->max_age = max_age > 0 ? max_age : 0;
}

void
wpool_set_liveness(struct pool *p, usec_t liveness)
{
	p->liveness = liveness > 0 ? liveness : 0;
}

bool
wpool_conn_expired(const struct pool *p, const struct pool_conn *c, usec_t now)
{
	return p->max_age > 0 && now - c->created_at >= p->max_age;
}

/* No frame and no pong for longer than the liveness window. */
static bool
conn_silent(const struct pool *p, const struct pool_conn *c, usec_t now)
{
	return p->liveness > 0 && c->state == CONN_IDLE &&
	    now - c->last_activity > p->liveness;
}

static struct pool_conn *
conn_new(struct pool *p, uint64_t rid, uint64_t key_hash, const char *entry,
    bool pooled, usec_t now)
{
	struct pool_conn *c = xcalloc(1, sizeof(*c));

	c->id = wpool_next_id(p);
	c->key_hash = key_hash;
	c->entry = xstrdup(entry != NULL ? entry : "");
	c->created_at = now;
	c->last_activity = now;
	c->pooled = pooled;
	c->state = CONN_CONNECTING;
	c->cur_rid = rid;
	p->nstate[CONN_CONNECTING]++;

	c->next = p->head;
	if (p->head != NULL)
		p->head->prev = c;
	else
		p->tail = c;
	p->head = c;
	p->nconns++;

	if (pooled) {
		idmap_put(&p->by_key, key_hash, c);
		idmap_put(&p->by_id, c->id, c);
		c->in_pool = true;
		p->st.conns_opened++;
	} else {
		p->st.oneshot_opened++;
		p->noneshot++;
	}
	return c;
}

struct pool_conn *
wpool_oneshot(struct pool *p, uint64_t rid, uint64_t key_hash, const char *entry,
    usec_t now)
{
	return conn_new(p, rid, key_hash, entry, false, now);
}

static void
leave_pool(struct pool *p, struct pool_conn *c, const char *reason)
{
	if (!c->in_pool)
		return;
	if (idmap_get(&p->by_key, c->key_hash) == c)
		idmap_del(&p->by_key, c->key_hash);
	idmap_del(&p->by_id, c->id);
	c->in_pool = false;
	p->st.conns_closed++;
	if (p->hooks.left != NULL)
		p->hooks.left(p->hook_arg, c, reason);
}

void
wpool_close(struct pool *p, struct pool_conn *c, const char *reason)
{
	if (c->state == CONN_CLOSING || c->state == CONN_DEAD)
		return;
	leave_pool(p, c, reason);
	c->cur_rid = 0;
	wpool_set_state(p, c, CONN_CLOSING);
	if (p->hooks.close != NULL)
		p->hooks.close(p->hook_arg, c, reason);
}

void
wpool_retire(struct pool *p, struct pool_conn *c, const char *reason)
{
	if (c->state == CONN_CLOSING || c->state == CONN_DEAD)
		return;
	if (c->cur_rid != 0) {
		/* serving a turn (or connecting for one): finish it first */
		c->pending_close = true;
		leave_pool(p, c, reason);
		return;
	}
	wpool_close(p, c, reason);
}

void
wpool_lost(struct pool *p, struct pool_conn *c, const char *reason)
{
	if (c->state == CONN_DEAD)
		return;
	leave_pool(p, c, reason);
	c->cur_rid = 0;
	wpool_set_state(p, c, CONN_DEAD);
}

void
wpool_conn_free(struct pool *p, struct pool_conn *c)
{
	if (c->state != CONN_DEAD)
		wpool_lost(p, c, "freed");
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		p->head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		p->tail = c->prev;
	p->nconns--;
	p->nstate[CONN_DEAD]--;
	conn_free(c);
}

void
wpool_established(struct pool *p, struct pool_conn *c, usec_t now)
{
	c->last_activity = now;
	if (c->state == CONN_CONNECTING)
		wpool_set_state(p, c, c->cur_rid != 0 ? CONN_BUSY : CONN_IDLE);
}

void
wpool_activity(struct pool_conn *c, usec_t now)
{
	c->last_activity = now;
}

bool
wpool_turn_done(struct pool *p, struct pool_conn *c, usec_t now)
{
	if (c->state != CONN_BUSY)
		return false;
	c->cur_rid = 0;
	c->turns++;
	c->last_activity = now;
	if (!c->pooled) {
		wpool_close(p, c, "one-shot done");
		return false;
	}
	if (c->pending_close || !c->in_pool) {
		wpool_close(p, c, "pending close after turn");
		return false;
	}
	wpool_set_state(p, c, CONN_IDLE);
	return true;
}

static void
acquire(struct pool *p, struct pool_conn *c, uint64_t rid)
{
	c->cur_rid = rid;
	wpool_set_state(p, c, CONN_BUSY);
}

static void
refuse(struct pool *p, struct pool_decision *d, int status, const char *code,
    const char *message)
{
	p->st.continue_errors++;
	d->verdict = PV_ERROR;
	d->http_status = status;
	d->code = code;
	d->message = message;
}

static void
bypass(struct pool *p, struct pool_decision *d, int reason)
{
	p->st.bypass[reason]++;
	d->verdict = PV_BYPASS;
	d->reason = reason;
}

/*
 * A continuation (previous_response_id) may only run on the connection
 * that completed that response: never a new one, never a one-shot.
 */
static void
decide_continue(struct pool *p, const struct pool_req *r, usec_t now,
    struct pool_decision *d)
{
	struct pool_conn *c = idmap_get(&p->by_id, r->owner_conn);

	if (c == NULL || !c->in_pool || c->pending_close ||
	    c->state == CONN_CLOSING || c->state == CONN_DEAD ||
	    strcmp(c->entry, r->entry != NULL ? r->entry : "") != 0 ||
	    conn_silent(p, c, now)) {
		if (c != NULL && conn_silent(p, c, now)) {
			p->st.liveness_kills++;
			wpool_close(p, c, "liveness timeout");
		}
		refuse(p, d, 400, "previous_response_not_found",
		    "the upstream connection that owns previous_response_id "
		    "is gone; resend the full input without "
		    "previous_response_id");
		return;
	}
	if (wpool_conn_expired(p, c, now)) {
		p->st.expired++;
		wpool_retire(p, c, "max age");
		refuse(p, d, 400, "previous_response_not_found",
		    "the upstream connection that owns previous_response_id "
		    "reached its maximum age and was closed; resend the full "
		    "input without previous_response_id");
		return;
	}
	if (c->state != CONN_IDLE) {
		refuse(p, d, 409, "conversation_busy",
		    "another turn of this conversation is still running on "
		    "the upstream connection that owns previous_response_id; "
		    "retry when it has finished");
		return;
	}
	acquire(p, c, r->rid);
	p->st.dispatch_reuse++;
	d->verdict = PV_REUSE;
	d->conn = c;
}

/*
 * The decision table, first match wins:
 *
 *	continuation          owner idle -> REUSE; owner gone/dead/other
 *	                      account -> 400; owner expired -> close it, 400;
 *	                      owner busy/connecting -> 409
 *	pool disabled         BYPASS(disabled)
 *	no key / not pooled   BYPASS(no_key)
 *	key's conn dead or
 *	  silent              close it, then miss (reason dead)
 *	key's conn expired    retire it (busy: after its turn), miss (expired)
 *	key's conn idle,
 *	  REQ_F_FRESH         close it (a retry must not land on it), miss
 *	key's conn idle       REUSE
 *	key's conn busy,
 *	  connecting          BYPASS(busy)
 *	miss with GRANT       NEW (indexed at once, so a concurrent turn on
 *	                      the same key sees it busy)
 *	miss                  BYPASS(cap), or the dead/expired reason
 */
void
wpool_decide(struct pool *p, const struct pool_req *r, usec_t now,
    struct pool_decision *d)
{
	struct pool_conn *c;
	int miss = BYP_CAP;

	memset(d, 0, sizeof(*d));

	if (r->flags & REQ_F_CONTINUE) {
		decide_continue(p, r, now, d);
		return;
	}
	if (!p->enabled) {
		bypass(p, d, BYP_DISABLED);
		return;
	}
	if (r->key_hash == 0 || !(r->flags & REQ_F_POOLED) ||
	    r->entry == NULL || *r->entry == '\0') {
		bypass(p, d, BYP_NO_KEY);
		return;
	}

	c = idmap_get(&p->by_key, r->key_hash);
	if (c != NULL && strcmp(c->entry, r->entry) != 0) {
		/* a 64-bit key collision across accounts: leave it alone */
		bypass(p, d, BYP_BUSY);
		return;
	}
	if (c != NULL) {
		if (c->state == CONN_DEAD || c->state == CONN_CLOSING) {
			leave_pool(p, c, "dead");	/* defensive: not indexed normally */
			miss = BYP_DEAD;
		} else if (conn_silent(p, c, now)) {
			p->st.liveness_kills++;
			wpool_close(p, c, "liveness timeout");
			miss = BYP_DEAD;
		} else if (wpool_conn_expired(p, c, now)) {
			p->st.expired++;
			wpool_retire(p, c, "max age");
			miss = BYP_EXPIRED;
		} else if (c->state == CONN_IDLE && (r->flags & REQ_F_FRESH)) {
			p->st.fresh_closed++;
			wpool_close(p, c, "fresh connection for a retry");
		} else if (c->state == CONN_IDLE) {
			acquire(p, c, r->rid);
			p->st.dispatch_reuse++;
			d->verdict = PV_REUSE;
			d->conn = c;
			return;
		} else {
			bypass(p, d, BYP_BUSY);
			return;
		}
	}

	if (r->flags & REQ_F_GRANT) {
		d->conn = conn_new(p, r->rid, r->key_hash, r->entry, true, now);
		p->st.dispatch_new++;
		d->verdict = PV_NEW;
		return;
	}
	bypass(p, d, miss);
}

void
wpool_set_enabled(struct pool *p, bool enabled)
{
	p->enabled = enabled;
	if (!enabled)
		wpool_retire_all(p, "pool disabled");
}

struct pool_conn *
wpool_find_id(const struct pool *p, uint64_t id)
{
	return idmap_get(&p->by_id, id);
}

struct pool_conn *
wpool_find_key(const struct pool *p, uint64_t key_hash)
{
	return idmap_get(&p->by_key, key_hash);
}

/*
 * Collect the pooled connections matching a predicate first, then act:
 * retiring edits the indexes we would otherwise be walking.
 */
static size_t
collect_pooled(struct pool *p, struct pool_conn ***out)
{
	struct pool_conn **v, *c;
	size_t n = 0;

	*out = NULL;
	if (p->by_id.count == 0)
		return 0;
	v = xcalloc(p->by_id.count, sizeof(*v));
	for (c = p->head; c != NULL; c = c->next)
		if (c->in_pool && n < p->by_id.count)
			v[n++] = c;
	*out = v;
	return n;
}

size_t
wpool_evict_entry(struct pool *p, const char *entry)
{
	struct pool_conn **v;
	size_t i, n, hit = 0;

	n = collect_pooled(p, &v);
	for (i = 0; i < n; i++) {
		if (strcmp(v[i]->entry, entry) != 0)
			continue;
		p->st.evicted++;
		wpool_retire(p, v[i], "evicted");
		hit++;
	}
	free(v);
	return hit;
}

int
wpool_close_id(struct pool *p, uint64_t id, const char *reason)
{
	struct pool_conn *c = idmap_get(&p->by_id, id);

	if (c == NULL)
		return -1;
	p->st.evicted++;
	wpool_retire(p, c, reason);
	return 0;
}

/*
 * The list is in creation order, so the expired connections are a run at
 * its tail: walk from there and stop at the first young one.  Retiring
 * never frees a connection (that waits for its socket), so prev stays
 * valid.
 */
size_t
wpool_sweep(struct pool *p, usec_t now)
{
	struct pool_conn *c, *prev;
	size_t hit = 0;
	uint64_t work;

	for (c = p->tail; c != NULL && wpool_conn_expired(p, c, now); c = prev) {
		prev = c->prev;
		if (!c->in_pool)
			continue;
		p->st.expired++;
		wpool_retire(p, c, "max age");
		hit++;
	}
	work = p->st.dispatch_reuse + p->st.dispatch_new + p->st.oneshot_opened +
	    p->st.conns_closed;
	if (work != p->trimmed_at && p->nstate[CONN_BUSY] == 0 &&
	    p->nstate[CONN_CONNECTING] == 0) {
		p->trimmed_at = work;
		malloc_trim(0);
	}
	return hit;
}

void
wpool_retire_all(struct pool *p, const char *reason)
{
	struct pool_conn **v;
	size_t i, n;

	n = collect_pooled(p, &v);
	for (i = 0; i < n; i++)
		wpool_retire(p, v[i], reason);
	free(v);
}

size_t
wpool_count_pooled(const struct pool *p)
{
	return p->by_id.count;
}

size_t
wpool_count_state(const struct pool *p, enum conn_state s)
{
	return (s >= 0 && s < CONN_NSTATES) ? p->nstate[s] : 0;
}

size_t
wpool_count_oneshot(const struct pool *p)
{
	return p->noneshot;
}
