/*
 * The upstream connection pool of one worker, as pure logic.
 *
 * No sockets and no libwebsockets here: the pool decides, keeps the
 * indexes and the counters, and asks its owner (upstream.c, or a unit
 * test) to act through two hooks.  Every connection, pooled or
 * one-shot, has a pool_conn; only pooled ones are indexed by key and id.
 *
 * States (one set_state for all moves):
 *
 *	CONNECTING --> BUSY <--> IDLE
 *	     |          |         |
 *	     +----------+---------+--> CLOSING --> DEAD
 *	     +----------+---------+-------------> DEAD   (lost: closed by peer,
 *	                                                   transport error)
 *
 * A pooled connection "leaves the pool" (hook left) when it is closed,
 * dies, expires, is evicted or disabled; from then on no request finds
 * it.  A busy one that must go is marked pending_close, leaves the pool
 * at once and is closed (hook close) when its turn ends.
 *
 * Connection ids are unique across workers and respawns:
 *	bits 63..56  worker slot (low 8 bits)
 *	bits 55..32  process id (low 24 bits; Linux pid_max is at most 2^22)
 *	bits 31..0   per-process sequence, starting at 1
 * so two workers never mint the same id, a respawned worker (new pid)
 * never repeats its predecessor's, and an id is never 0.
 */
#ifndef CODEXPOOL_POOL_H
#define CODEXPOOL_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "idmap.h"
#include "msgtypes.h"
#include "util.h"

enum conn_state {
	CONN_CONNECTING = 0,
	CONN_IDLE,
	CONN_BUSY,
	CONN_CLOSING,
	CONN_DEAD,
	CONN_NSTATES
};

struct pool_conn {
	uint64_t	 id;
	uint64_t	 key_hash;	/* 0 for a one-shot without key */
	char		*entry;		/* account entry id */
	usec_t		 created_at;
	usec_t		 last_activity;	/* last frame or pong */
	uint32_t	 turns;		/* completed turns, for logs */
	bool		 pending_close;	/* close after the current turn */
	bool		 pooled;	/* a pool member (false: one-shot) */
	bool		 in_pool;	/* still indexed by key and id */
	enum conn_state	 state;
	uint64_t	 cur_rid;	/* request being served, 0 if none */
	void		*io;		/* the owner's object (upstream.c) */
	struct pool_conn *prev, *next;	/* every connection not yet freed */
};

struct pool_stats {
	uint64_t	dispatch_reuse;
	uint64_t	dispatch_new;
	uint64_t	bypass[BYP_EXPIRED + 1];	/* by enum bypass_reason */
	uint64_t	retry_stale;
	uint64_t	fresh_closed;		/* idle connections closed for REQ_F_FRESH */
	uint64_t	continue_errors;	/* continuation refused (owner gone/busy) */
	uint64_t	conns_opened;		/* pooled connections created */
	uint64_t	conns_closed;		/* pooled connections that left the pool */
	uint64_t	oneshot_opened;
	uint64_t	liveness_kills;
	uint64_t	expired;
	uint64_t	evicted;
};

struct pool;

struct pool_hooks {
	/* A pooled connection left the pool (tell the supervisor). */
	void	(*left)(void *arg, struct pool_conn *c, const char *reason);
	/* Close this connection now; it is in CLOSING and serves no turn. */
	void	(*close)(void *arg, struct pool_conn *c, const char *reason);
};

struct pool {
	int		 slot;
	uint32_t	 pid;
	uint32_t	 seq;
	bool		 enabled;
	usec_t		 max_age;	/* 0: no limit */
	usec_t		 liveness;	/* silence after which a connection is dead; 0: off */
	struct idmap	 by_key;	/* key_hash -> pooled connection */
	struct idmap	 by_id;		/* conn id -> pooled connection */
	struct pool_conn *head;		/* all connections, newest first */
	struct pool_conn *tail;		/* the oldest: where expiry starts */
	size_t		 nconns;
	size_t		 nstate[CONN_NSTATES];
	size_t		 noneshot;	/* one-shot connections not yet DEAD */
	uint64_t	 trimmed_at;	/* turns + closes when the heap was last trimmed */
	struct pool_stats st;
	struct pool_hooks hooks;
	void		*hook_arg;
};

/* What a request asks for (the fields of MSG_REQ_START that matter). */
struct pool_req {
	uint64_t	 rid;
	uint64_t	 key_hash;
	const char	*entry;
	uint32_t	 flags;		/* REQ_F_* */
	uint64_t	 owner_conn;	/* REQ_F_CONTINUE */
};

enum pool_verdict {
	PV_REUSE = 1,	/* conn is ours, now BUSY */
	PV_NEW,		/* conn was created for us, CONNECTING, indexed */
	PV_BYPASS,	/* use a one-shot connection; reason says why */
	PV_ERROR,	/* refuse the turn (continuations only) */
};

struct pool_decision {
	enum pool_verdict verdict;
	int		 reason;	/* BYP_* for PV_BYPASS */
	struct pool_conn *conn;		/* PV_REUSE, PV_NEW */
	int		 http_status;	/* PV_ERROR */
	const char	*code;		/* PV_ERROR */
	const char	*message;	/* PV_ERROR */
};

void	wpool_init(struct pool *p, int slot, uint32_t pid,
	    const struct pool_hooks *hooks, void *hook_arg);
/* Frees every pool_conn without calling hooks (process exit). */
void	wpool_free(struct pool *p);

uint64_t wpool_next_id(struct pool *p);
const char *wpool_state_name(enum conn_state s);
/* Move c to state s; refuses (returns -1) a move the diagram forbids. */
int	wpool_set_state(struct pool *p, struct pool_conn *c, enum conn_state s);

void	wpool_set_max_age(struct pool *p, usec_t max_age);
void	wpool_set_liveness(struct pool *p, usec_t liveness);
/* Disabling retires every pooled connection (idle now, busy after the turn). */
void	wpool_set_enabled(struct pool *p, bool enabled);

bool	wpool_conn_expired(const struct pool *p, const struct pool_conn *c, usec_t now);

/* The dispatch decision; see the table in pool.c. */
void	wpool_decide(struct pool *p, const struct pool_req *r, usec_t now,
	    struct pool_decision *d);

/* A one-shot connection for request rid, CONNECTING, not indexed. */
struct pool_conn *wpool_oneshot(struct pool *p, uint64_t rid, uint64_t key_hash,
	    const char *entry, usec_t now);

/* The handshake completed: CONNECTING -> BUSY (turn attached) or IDLE. */
void	wpool_established(struct pool *p, struct pool_conn *c, usec_t now);
/* Any frame or pong arrived. */
void	wpool_activity(struct pool_conn *c, usec_t now);

/*
 * The turn on c ended (terminal frame, or an early error that leaves the
 * connection usable).  Returns true if c stays in the pool, idle; false
 * if it was closed (pending close, or a one-shot).
 */
bool	wpool_turn_done(struct pool *p, struct pool_conn *c, usec_t now);

/* Close c now whatever it is doing (cancel, protocol error, liveness). */
void	wpool_close(struct pool *p, struct pool_conn *c, const char *reason);
/* Close c gracefully: idle now, busy after its turn. */
void	wpool_retire(struct pool *p, struct pool_conn *c, const char *reason);
/* The socket is gone (peer close, transport error): leave the pool, DEAD. */
void	wpool_lost(struct pool *p, struct pool_conn *c, const char *reason);
/* Forget c entirely (the owner dropped its socket); c must be DEAD. */
void	wpool_conn_free(struct pool *p, struct pool_conn *c);

struct pool_conn *wpool_find_id(const struct pool *p, uint64_t id);
struct pool_conn *wpool_find_key(const struct pool *p, uint64_t key_hash);

/* Retire every pooled connection of an account; returns how many. */
size_t	wpool_evict_entry(struct pool *p, const char *entry);
/* Retire one pooled connection by id; 0 if found, -1 if not. */
int	wpool_close_id(struct pool *p, uint64_t id, const char *reason);
/*
 * Periodic: retire expired connections (idle now, busy after the turn);
 * O(expired), not O(connections).  Once a burst is over (nothing busy or
 * connecting, turns or closes since last time) it returns freed heap to
 * the kernel.
 */
size_t	wpool_sweep(struct pool *p, usec_t now);
/* Retire every pooled connection (shutdown). */
void	wpool_retire_all(struct pool *p, const char *reason);

size_t	wpool_count_pooled(const struct pool *p);	/* in the pool */
size_t	wpool_count_state(const struct pool *p, enum conn_state s);
size_t	wpool_count_oneshot(const struct pool *p);	/* one-shot, not yet DEAD */

#endif
