/*
 * Recent conversations and what happened to each of their turns, so an
 * operator can see why a turn missed the prompt cache (`show
 * conversations`).  Bounded: the least recently active conversation is
 * forgotten first, and each keeps its last few turns.
 */
#ifndef CODEXPOOL_CONVLOG_H
#define CODEXPOOL_CONVLOG_H

#include <stdint.h>
#include <sys/queue.h>

#include "idmap.h"
#include "util.h"

#define CONVLOG_MAX_CONVS	512
#define CONVLOG_TURNS		8

struct conv_turn {
	uint32_t	 n;		/* turn number within the conversation */
	int		 decision;	/* DEC_*, 0 if it failed before dispatch */
	int		 reason;	/* BYP_* for a bypass */
	uint64_t	 input;
	uint64_t	 cached;
	bool		 resumed;	/* sent as an implicit resume */
	const char	*miss;		/* why it missed the cache, NULL if it hit */
};

/* Who a turn was for, beyond its numbers. */
struct conv_who {
	const char	*route;		/* "responses", "chat", "messages" */
	const char	*key_label;	/* the client API key's label, "" none */
	bool		 resumed;
};

struct conv_rec {
	uint64_t	 key_hash;
	char		 entry[17];
	int		 slot;
	uint32_t	 turns;
	usec_t		 last_active;
	bool		 moved;		/* served by another account than before */
	char		 route[16];	/* of its latest turn */
	char		 key_label[64];
	uint32_t	 resumed;	/* turns sent as an implicit resume */
	uint32_t	 ws_clients;	/* client WebSockets open on it now */
	struct conv_turn ring[CONVLOG_TURNS];
	TAILQ_ENTRY(conv_rec) lru;
};
TAILQ_HEAD(conv_rec_list, conv_rec);

struct convlog {
	struct idmap		 by_key;
	struct conv_rec_list	 lru;		/* most recent last */
	size_t			 count;
};

void	convlog_init(struct convlog *cl);
void	convlog_free(struct convlog *cl);
/* Record a finished turn; decision/reason are the last dispatch decision. */
void	convlog_turn(struct convlog *cl, uint64_t key_hash, const char *entry, int slot,
	    int decision, int reason, uint64_t input, uint64_t cached,
	    const struct conv_who *who, usec_t now);
/* A client WebSocket of the conversation opened (+1) or closed (-1). */
void	convlog_ws_client(struct convlog *cl, uint64_t key_hash, const char *entry,
	    int slot, int delta, usec_t now);
/* Why a turn with these numbers missed, or NULL if it hit. */
const char *convlog_miss_reason(uint32_t turn, int decision, int reason,
	    uint64_t input, uint64_t cached, bool moved);

#endif
