#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "convlog.h"
#include "msgtypes.h"

/* Below this share of cached input a turn counts as a miss. */
#define HIT_RATIO	0.5

void
convlog_init(struct convlog *cl)
{
	idmap_init(&cl->by_key);
	TAILQ_INIT(&cl->lru);
	cl->count = 0;
}

void
convlog_free(struct convlog *cl)
{
	struct conv_rec *c;

	while ((c = TAILQ_FIRST(&cl->lru)) != NULL) {
		TAILQ_REMOVE(&cl->lru, c, lru);
		free(c);
	}
	idmap_free(&cl->by_key);
	cl->count = 0;
}

const char *
convlog_miss_reason(uint32_t turn, int decision, int reason, uint64_t input,
    uint64_t cached, bool moved)
{
	if (input == 0 || (double)cached >= HIT_RATIO * (double)input)
		return NULL;
	if (turn == 1)
		return "first turn";
	if (moved)
		return "account moved";
	switch (decision) {
	case DEC_NEW:
		return "new connection (the previous one closed or expired)";
	case DEC_RETRY_STALE:
		return "stale connection, retried on a new one";
	case DEC_BYPASS:
		switch (reason) {
		case BYP_BUSY:
			return "bypass(busy): another turn held the connection";
		case BYP_CAP:
			return "bypass(cap): account at ws_pool_max_per_account";
		case BYP_DISABLED:
			return "bypass(disabled): pool off";
		case BYP_NO_KEY:
			return "bypass(no_key)";
		case BYP_FACTORY_ERROR:
			return "bypass(factory_error): pooled connection failed to open";
		default:
			return "bypass";
		}
	case DEC_REUSE:
		return "same connection: the prompt prefix changed";
	}
	return "unknown";
}

/* The conversation's record, created (evicting the least recent) if new,
 * and made the most recent. */
static struct conv_rec *
rec_touch(struct convlog *cl, uint64_t key_hash, const char *entry)
{
	struct conv_rec *c = idmap_get(&cl->by_key, key_hash);

	if (c == NULL) {
		if (cl->count >= CONVLOG_MAX_CONVS) {
			struct conv_rec *old = TAILQ_FIRST(&cl->lru);
			TAILQ_REMOVE(&cl->lru, old, lru);
			idmap_del(&cl->by_key, old->key_hash);
			cl->count--;
			free(old);
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL)
			return NULL;
		c->key_hash = key_hash;
		strncpy(c->entry, entry, sizeof(c->entry) - 1);
		idmap_put(&cl->by_key, key_hash, c);
		cl->count++;
	} else {
		TAILQ_REMOVE(&cl->lru, c, lru);
		c->moved = strcmp(c->entry, entry) != 0;
		strncpy(c->entry, entry, sizeof(c->entry) - 1);
	}
	TAILQ_INSERT_TAIL(&cl->lru, c, lru);
	return c;
}

void
convlog_ws_client(struct convlog *cl, uint64_t key_hash, const char *entry, int slot,
    int delta, usec_t now)
{
	struct conv_rec *c;

	if (key_hash == 0)
		return;
	if (delta < 0) {
		/* a closing client does not bring a forgotten record back */
		if ((c = idmap_get(&cl->by_key, key_hash)) != NULL && c->ws_clients > 0)
			c->ws_clients--;
		return;
	}
	if ((c = rec_touch(cl, key_hash, entry)) == NULL)
		return;
	c->slot = slot;
	c->last_active = now;
	c->ws_clients++;
}

void
convlog_turn(struct convlog *cl, uint64_t key_hash, const char *entry, int slot,
    int decision, int reason, uint64_t input, uint64_t cached,
    const struct conv_who *who, usec_t now)
{
	struct conv_rec *c;
	struct conv_turn *t;

	if (key_hash == 0 || (c = rec_touch(cl, key_hash, entry)) == NULL)
		return;
	c->slot = slot;
	c->last_active = now;
	c->turns++;
	t = &c->ring[(c->turns - 1) % CONVLOG_TURNS];
	t->n = c->turns;
	t->decision = decision;
	t->reason = reason;
	t->input = input;
	t->cached = cached;
	t->miss = convlog_miss_reason(c->turns, decision, reason, input, cached, c->moved);
	t->resumed = who != NULL && who->resumed;
	if (who != NULL) {
		strlcpy_safe(c->route, who->route ? who->route : "", sizeof(c->route));
		strlcpy_safe(c->key_label, who->key_label ? who->key_label : "",
		    sizeof(c->key_label));
		if (who->resumed)
			c->resumed++;
	}
}
