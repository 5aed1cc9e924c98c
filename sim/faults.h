/*
 * Fault injection.  A fault is picked per response.create from, in this
 * order: a "[[sim:KIND]]" marker in the last user text of the input, the
 * run-time queue filled by POST /sim/fault, the global --fault.  The
 * handshake fault reject_handshake has its own counter.
 */
#ifndef SIM_FAULTS_H
#define SIM_FAULTS_H

#include <stddef.h>

enum fault_kind {
	FAULT_NONE = 0,
	FAULT_CLOSE_BEFORE_FIRST,	/* close 1011 before any frame */
	FAULT_CLOSE_MID_STREAM,		/* close 1011 after created + 2 deltas */
	FAULT_RESET,			/* TCP RST before any frame */
	FAULT_USAGE_LIMIT,		/* error frame 429 usage_limit_reached */
	FAULT_TOKEN_EXPIRED,		/* error frame 401 token_expired */
	FAULT_OVERLOADED,		/* error frame 503 server_is_overloaded */
	FAULT_SERVER_ERROR,		/* response.failed server_error */
	FAULT_STALL,			/* silence; stop reading (no pongs) */
	FAULT_SLOW_START,		/* arg ms before the first frame */
	FAULT_CLOSE_IDLE,		/* complete, then close while idle */
	FAULT_REJECT_HANDSHAKE,		/* refuse the upgrade with status arg */
	FAULT_CONN_LIMIT,		/* error 400 websocket_connection_limit_reached */
	FAULT_KIND_COUNT
};

struct sim_fault {
	enum fault_kind	kind;
	int		arg;		/* slow_start: ms; reject_handshake: status */
};

/* "close_mid_stream", "slow_start=250", "reject_handshake=503".
 * 0 on success, -1 for an unknown kind or a bad argument. */
int	fault_parse(const char *s, struct sim_fault *out);
const char *fault_kind_name(enum fault_kind kind);
/* "slow_start=250"; "none" for FAULT_NONE. */
void	fault_format(const struct sim_fault *f, char *buf, size_t size);

/* Looks for "[[sim:KIND]]" in text: 1 found (out set), 0 none,
 * -1 a marker with an unknown kind. */
int	fault_from_marker(const char *text, struct sim_fault *out);

#define FAULT_QUEUE_MAX	64

/* Run-time faults: entries are used in order, each for count requests. */
struct fault_queue {
	struct {
		struct sim_fault fault;
		long		 count;
	}	entries[FAULT_QUEUE_MAX];
	int	n;
	long	reject_count;		/* upgrades still to refuse */
	int	reject_status;
};

void	fault_queue_clear(struct fault_queue *q);
/* 0 on success, -1 when the queue is full or the fault is invalid. */
int	fault_queue_push(struct fault_queue *q, const struct sim_fault *f, long count);
/* Takes one use of the first entry; 1 if a fault was taken. */
int	fault_queue_take(struct fault_queue *q, struct sim_fault *out);
/* Takes one handshake rejection; returns its status or 0. */
int	fault_queue_take_reject(struct fault_queue *q);

#endif
