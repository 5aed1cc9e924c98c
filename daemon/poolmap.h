/*
 * The supervisor's map of every pooled upstream connection in every worker.
 *
 * Workers own the sockets; the supervisor owns the decisions that need a
 * view across workers: the per-account cap (pooled connections plus
 * handshakes in progress, in all workers together), which idle connection
 * to close to make room for a new conversation, and which connection owns
 * a response id that a client wants to continue.  Because every turn is
 * dispatched by the supervisor, it knows which connections are busy
 * without asking; the workers report the rest (MSG_CONN_UP / MSG_CONN_DOWN).
 *
 * Pure bookkeeping: no I/O, so the tests drive it directly.
 */
#ifndef CODEXPOOL_POOLMAP_H
#define CODEXPOOL_POOLMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "idmap.h"
#include "resume.h"
#include "util.h"

#define PM_ENTRY_MAX	64

struct pm_conn;
TAILQ_HEAD(pm_conn_list, pm_conn);

struct pm_account {
	char		 entry[PM_ENTRY_MAX];
	int		 live;		/* connections counted against the cap */
	int		 reserved;	/* grants handed out, not yet used */
	struct pm_conn_list conns;	/* least recently used first */
	uint64_t	 lru_evictions;
};

struct pm_conn {
	uint64_t	 id;
	uint64_t	 key_hash;
	int		 slot;		/* worker */
	struct pm_account *acct;
	bool		 up;		/* handshake done */
	bool		 busy;		/* a turn is on it */
	bool		 closing;	/* asked to close; no longer counted */
	usec_t		 created;
	usec_t		 last_used;
	uint32_t	 turns;
	char		*last_response;	/* newest completed response id, owned */
	uint64_t	 last_input;
	uint64_t	 last_cached;
	int		 last_decision;	/* DEC_* of its latest turn */
	uint64_t	 conv_hash;	/* the conversation it serves */
	char		 upconv[40];	/* its prompt_cache_key upstream, "" none */
	struct resume_chain chain;	/* what it has sent and received, for implicit resume */
	TAILQ_ENTRY(pm_conn) lru;
};

/*
 * What a turn holds of the map between its dispatch and the worker's
 * decision: a cap slot for a new connection, or the idle connection it
 * is about to reuse (marked busy at once, so it is never chosen as the
 * least recently used victim while the turn is on its way to it).
 */
struct pm_grant {
	uint64_t	 key_hash;
	bool		 reserved;
	uint64_t	 claimed;
};

struct poolmap {
	struct idmap	 conns;		/* conn id -> pm_conn */
	struct idmap	 by_key;	/* key hash -> open, not closing pm_conn */
	struct idmap	 by_response;	/* hash64(response id) -> pm_conn */
	struct idmap	 accounts;	/* hash64(entry) -> pm_account */
	struct idmap	 pending;	/* key hash -> reservations under way (count) */
	int		 cap;		/* ws_pool_max_per_account */
	usec_t		 max_age;	/* ws_pool_max_age: older connections are not reused */
	uint64_t	 lru_evictions;
};

void	pm_init(struct poolmap *pm, int cap);
void	pm_free(struct poolmap *pm);
void	pm_set_cap(struct poolmap *pm, int cap);
void	pm_set_max_age(struct poolmap *pm, usec_t max_age);
struct pm_account *pm_account(struct poolmap *pm, const char *entry);

/*
 * A new turn for key_hash of entry is about to be dispatched.  The grant
 * says what it may do: reuse the key's idle connection (claimed), open a
 * new pooled connection (reserved), or neither (the worker reuses a
 * connection the map does not know yet, or bypasses).  A key gets one
 * reservation at a time: a second first turn of the same conversation
 * must not close another conversation's connection for nothing.  An idle
 * connection past max_age is marked closing here, as the worker will
 * close it.  When making room meant closing the account's least recently
 * used idle connection, *evict is set to it (already marked closing); the
 * caller tells its worker to close it.  fresh: the key's connection must
 * not be reused (a retry): it is not claimed.
 */
void	pm_acquire(struct poolmap *pm, const char *entry, uint64_t key_hash, bool fresh,
	    usec_t now, struct pm_grant *g, struct pm_conn **evict);
/* A grant given back unused (the turn moved, retried or failed). */
void	pm_release(struct poolmap *pm, const char *entry, struct pm_grant *g);
/* The worker's decision for a turn; it consumes the grant. */
void	pm_decision(struct poolmap *pm, const char *entry, struct pm_grant *g,
	    int decision, uint64_t conn_id, int slot, usec_t now);
/* The worker a key's live connection is on, or -1. */
int	pm_slot_of(const struct poolmap *pm, uint64_t key_hash);
/* The conversation a connection holds after a completed turn. */
void	pm_set_chain(struct poolmap *pm, uint64_t conn_id, const struct resume_chain *chain);
/* What a connection serves, for continuations that name no conversation. */
void	pm_set_conversation(struct poolmap *pm, uint64_t conn_id, uint64_t conv_hash,
	    const char *upconv);
void	pm_conn_up(struct poolmap *pm, uint64_t conn_id, uint64_t key_hash,
	    const char *entry, int slot, usec_t now);
void	pm_conn_down(struct poolmap *pm, uint64_t conn_id);
/* A turn on conn_id ended; response_id (may be NULL) becomes its newest. */
void	pm_turn_end(struct poolmap *pm, uint64_t conn_id, const char *response_id,
	    uint64_t input, uint64_t cached, usec_t now);
/* Mark every connection of entry closing (the workers close them). */
int	pm_evict_account(struct poolmap *pm, const char *entry);
/* Mark every connection closing (pool disabled). */
int	pm_close_all(struct poolmap *pm);
/* Forget every connection of a worker that died. */
void	pm_slot_gone(struct poolmap *pm, int slot);

struct pm_conn *pm_find(const struct poolmap *pm, uint64_t conn_id);
struct pm_conn *pm_owner(const struct poolmap *pm, const char *response_id);
void	pm_forget_response(struct poolmap *pm, const char *response_id);

int	pm_count(const struct poolmap *pm, int *busy);

#endif
