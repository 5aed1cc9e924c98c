#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "msgtypes.h"
#include "poolmap.h"

void
pm_init(struct poolmap *pm, int cap)
{
	memset(pm, 0, sizeof(*pm));
	idmap_init(&pm->conns);
	idmap_init(&pm->by_key);
	idmap_init(&pm->by_response);
	idmap_init(&pm->accounts);
	idmap_init(&pm->pending);
	pm->cap = cap;
}

static void
conn_free(struct pm_conn *c)
{
	free(c->last_response);
	free(c);
}

void
pm_free(struct poolmap *pm)
{
	size_t i = 0;
	void *v;

	while ((v = idmap_next(&pm->conns, &i)) != NULL)
		conn_free(v);
	i = 0;
	while ((v = idmap_next(&pm->accounts, &i)) != NULL)
		free(v);
	idmap_free(&pm->conns);
	idmap_free(&pm->by_key);
	idmap_free(&pm->by_response);
	idmap_free(&pm->accounts);
	idmap_free(&pm->pending);
}

void
pm_set_cap(struct poolmap *pm, int cap)
{
	pm->cap = cap;
}

void
pm_set_max_age(struct poolmap *pm, usec_t max_age)
{
	pm->max_age = max_age;
}

static uint64_t
nonzero(uint64_t h)
{
	return h ? h : 1;
}

struct pm_account *
pm_account(struct poolmap *pm, const char *entry)
{
	uint64_t h = nonzero(hash64_str(entry));
	struct pm_account *a = idmap_get(&pm->accounts, h);

	if (a == NULL) {
		a = xcalloc(1, sizeof(*a));
		strlcpy_safe(a->entry, entry, sizeof(a->entry));
		TAILQ_INIT(&a->conns);
		idmap_put(&pm->accounts, h, a);
	}
	return a;
}

/* Stop counting c against its account's cap and stop routing to it. */
static void
conn_mark_closing(struct poolmap *pm, struct pm_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->acct->live--;
	if (idmap_get(&pm->by_key, c->key_hash) == c)
		idmap_del(&pm->by_key, c->key_hash);
}

static int
pending_of(struct poolmap *pm, uint64_t key_hash)
{
	return (int)(uintptr_t)idmap_get(&pm->pending, key_hash);
}

static void
pending_add(struct poolmap *pm, uint64_t key_hash, int d)
{
	int n = pending_of(pm, key_hash) + d;

	if (key_hash == 0)
		return;
	if (n <= 0)
		idmap_del(&pm->pending, key_hash);
	else
		idmap_put(&pm->pending, key_hash, (void *)(uintptr_t)n);
}

static void
grant_reserve(struct poolmap *pm, struct pm_account *a, struct pm_grant *g)
{
	a->reserved++;
	pending_add(pm, g->key_hash, 1);
	g->reserved = true;
}

void
pm_acquire(struct poolmap *pm, const char *entry, uint64_t key_hash, bool fresh,
    usec_t now, struct pm_grant *g, struct pm_conn **evict)
{
	struct pm_account *a = pm_account(pm, entry);
	struct pm_conn *c;

	memset(g, 0, sizeof(*g));
	g->key_hash = key_hash;
	*evict = NULL;
	if (key_hash != 0 && (c = idmap_get(&pm->by_key, key_hash)) != NULL) {
		if (c->busy)
			return;		/* the worker bypasses: one response per connection */
		if (!fresh && (pm->max_age <= 0 || now - c->created <= pm->max_age)) {
			c->busy = true;	/* claimed: not an LRU victim now */
			g->claimed = c->id;
			return;
		}
		/* expired, or a retry that must not reuse it: the worker replaces it */
		conn_mark_closing(pm, c);
	}
	if (key_hash != 0 && pending_of(pm, key_hash) > 0)
		return;		/* its new connection is already on the way */
	if (a->live + a->reserved < pm->cap) {
		grant_reserve(pm, a, g);
		return;
	}
	/* At the cap: close the least recently used idle connection rather
	 * than sending this conversation one-shot for its whole life. */
	TAILQ_FOREACH(c, &a->conns, lru) {
		if (!c->busy && !c->closing && c->up) {
			conn_mark_closing(pm, c);
			a->lru_evictions++;
			pm->lru_evictions++;
			grant_reserve(pm, a, g);
			*evict = c;
			return;
		}
	}
}

void
pm_release(struct poolmap *pm, const char *entry, struct pm_grant *g)
{
	struct pm_account *a;
	struct pm_conn *c;

	if (g->reserved) {
		a = pm_account(pm, entry);
		if (a->reserved > 0)
			a->reserved--;
		pending_add(pm, g->key_hash, -1);
	}
	if (g->claimed != 0 && (c = pm_find(pm, g->claimed)) != NULL)
		c->busy = false;
	g->reserved = false;
	g->claimed = 0;
}

int
pm_slot_of(const struct poolmap *pm, uint64_t key_hash)
{
	struct pm_conn *c;

	if (key_hash == 0 || (c = idmap_get(&pm->by_key, key_hash)) == NULL)
		return -1;
	return c->slot;
}

void
pm_set_chain(struct poolmap *pm, uint64_t conn_id, const struct resume_chain *chain)
{
	struct pm_conn *c = pm_find(pm, conn_id);

	if (c != NULL)
		c->chain = *chain;
}

void
pm_set_conversation(struct poolmap *pm, uint64_t conn_id, uint64_t conv_hash,
    const char *upconv)
{
	struct pm_conn *c = pm_find(pm, conn_id);

	if (c == NULL)
		return;
	c->conv_hash = conv_hash;
	strlcpy_safe(c->upconv, upconv ? upconv : "", sizeof(c->upconv));
}

static struct pm_conn *
conn_new(struct poolmap *pm, uint64_t conn_id, uint64_t key_hash,
    struct pm_account *a, int slot, usec_t now)
{
	struct pm_conn *c = xcalloc(1, sizeof(*c));

	c->id = conn_id;
	c->key_hash = key_hash;
	c->slot = slot;
	c->acct = a;
	c->created = now;
	c->last_used = now;
	TAILQ_INSERT_TAIL(&a->conns, c, lru);
	a->live++;
	idmap_put(&pm->conns, conn_id, c);
	if (key_hash != 0)
		idmap_put(&pm->by_key, key_hash, c);
	return c;
}

static void
conn_touch(struct pm_conn *c, usec_t now)
{
	c->last_used = now;
	TAILQ_REMOVE(&c->acct->conns, c, lru);
	TAILQ_INSERT_TAIL(&c->acct->conns, c, lru);
}

void
pm_decision(struct poolmap *pm, const char *entry, struct pm_grant *g, int decision,
    uint64_t conn_id, int slot, usec_t now)
{
	struct pm_account *a = pm_account(pm, entry);
	uint64_t claimed = g->claimed;
	struct pm_conn *c;

	if (decision == DEC_REUSE && conn_id == claimed)
		g->claimed = 0;		/* the claim became the turn's connection */
	pm_release(pm, entry, g);
	if (conn_id == 0 || (decision != DEC_NEW && decision != DEC_REUSE))
		return;
	if ((c = pm_find(pm, conn_id)) == NULL) {
		if (decision != DEC_NEW)
			return;
		c = conn_new(pm, conn_id, g->key_hash, a, slot, now);
	}
	c->busy = true;
	c->last_decision = decision;
	if (decision == DEC_REUSE)
		conn_touch(c, now);
}

void
pm_conn_up(struct poolmap *pm, uint64_t conn_id, uint64_t key_hash,
    const char *entry, int slot, usec_t now)
{
	struct pm_conn *c = pm_find(pm, conn_id);

	if (c == NULL)
		c = conn_new(pm, conn_id, key_hash, pm_account(pm, entry), slot, now);
	c->up = true;
}

void
pm_conn_down(struct poolmap *pm, uint64_t conn_id)
{
	struct pm_conn *c = idmap_del(&pm->conns, conn_id);

	if (c == NULL)
		return;
	conn_mark_closing(pm, c);
	if (c->last_response != NULL)
		idmap_del(&pm->by_response, nonzero(hash64_str(c->last_response)));
	TAILQ_REMOVE(&c->acct->conns, c, lru);
	conn_free(c);
}

void
pm_turn_end(struct poolmap *pm, uint64_t conn_id, const char *response_id,
    uint64_t input, uint64_t cached, usec_t now)
{
	struct pm_conn *c = pm_find(pm, conn_id);

	if (c == NULL)
		return;
	c->busy = false;
	conn_touch(c, now);
	if (response_id == NULL || *response_id == '\0')
		return;
	c->turns++;
	c->last_input = input;
	c->last_cached = cached;
	/* Only the newest response of a connection can be continued. */
	if (c->last_response != NULL) {
		idmap_del(&pm->by_response, nonzero(hash64_str(c->last_response)));
		free(c->last_response);
	}
	c->last_response = xstrdup(response_id);
	idmap_put(&pm->by_response, nonzero(hash64_str(response_id)), c);
}

int
pm_evict_account(struct poolmap *pm, const char *entry)
{
	struct pm_account *a = pm_account(pm, entry);
	struct pm_conn *c;
	int n = 0;

	TAILQ_FOREACH(c, &a->conns, lru) {
		if (!c->closing) {
			conn_mark_closing(pm, c);
			n++;
		}
	}
	return n;
}

int
pm_close_all(struct poolmap *pm)
{
	size_t i = 0;
	void *v;
	int n = 0;

	while ((v = idmap_next(&pm->conns, &i)) != NULL) {
		struct pm_conn *c = v;
		if (!c->closing) {
			conn_mark_closing(pm, c);
			n++;
		}
	}
	return n;
}

void
pm_slot_gone(struct poolmap *pm, int slot)
{
	size_t i = 0;
	uint64_t id;
	void *v;
	uint64_t *dead = NULL;
	size_t ndead = 0, cap = 0;

	while ((v = idmap_next(&pm->conns, &i)) != NULL) {
		if (((struct pm_conn *)v)->slot != slot)
			continue;
		id = ((struct pm_conn *)v)->id;
		if (ndead == cap) {
			cap = cap ? cap * 2 : 16;
			dead = xrealloc(dead, cap * sizeof(*dead));
		}
		dead[ndead++] = id;
	}
	for (i = 0; i < ndead; i++)
		pm_conn_down(pm, dead[i]);
	free(dead);
}

struct pm_conn *
pm_find(const struct poolmap *pm, uint64_t conn_id)
{
	return idmap_get(&pm->conns, conn_id);
}

struct pm_conn *
pm_owner(const struct poolmap *pm, const char *response_id)
{
	struct pm_conn *c;

	if (response_id == NULL || *response_id == '\0')
		return NULL;
	c = idmap_get(&pm->by_response, nonzero(hash64_str(response_id)));
	if (c == NULL || c->last_response == NULL ||
	    strcmp(c->last_response, response_id) != 0)
		return NULL;
	return c;
}

void
pm_forget_response(struct poolmap *pm, const char *response_id)
{
	struct pm_conn *c = pm_owner(pm, response_id);

	if (c == NULL)
		return;
	idmap_del(&pm->by_response, nonzero(hash64_str(response_id)));
	free(c->last_response);
	c->last_response = NULL;
}

int
pm_count(const struct poolmap *pm, int *busy)
{
	size_t i = 0;
	void *v;
	int n = 0, b = 0;

	while ((v = idmap_next(&pm->conns, &i)) != NULL) {
		struct pm_conn *c = v;
		n++;
		if (c->busy)
			b++;
	}
	if (busy)
		*busy = b;
	return n;
}
