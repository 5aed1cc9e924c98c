/*
 * One turn (MSG_REQ_START .. exactly one MSG_REQ_DONE or MSG_REQ_ERROR):
 * dispatch through the pool, the stale-reuse and factory-error retries,
 * frame classification, and every final answer to the supervisor.
 */
#ifndef CODEXPOOL_RELAY_H
#define CODEXPOOL_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream.h"
#include "worker_int.h"

/* Buffered early metadata before the response starts. */
#define RELAY_EARLY_MAX_FRAMES	64
#define RELAY_EARLY_MAX_BYTES	(4u * 1024 * 1024)

/* How a frame is treated (reference-proxy-behaviour.md 1.6/1.7). */
enum frame_class {
	FC_RATE_LIMITS = 1,	/* codex.rate_limits: never relayed */
	FC_EARLY,		/* metadata that does not start the response */
	FC_ERROR,		/* classified error (status set) */
	FC_CONN_LIMIT,		/* websocket_connection_limit_reached */
	FC_OTHER,		/* starts the response */
};

struct frame_info {
	enum frame_class cls;
	bool		 terminal;	/* completed, failed, incomplete, error */
	bool		 completed;	/* response.completed */
	int		 http_status;	/* FC_ERROR, FC_CONN_LIMIT */
	char		 code[64];	/* lower-cased error code, if any */
	char		 response_id[128];
	uint64_t	 input_tokens;
	uint64_t	 cached_tokens;
	uint64_t	 output_tokens;
};

/* Classify one upstream message (any bytes; non-JSON is FC_OTHER).  An
 * error frame is FC_ERROR when its code is in the table, or when its
 * status is a 5xx. */
void	relay_classify(const void *data, size_t len, struct frame_info *fi);
/* The same answer from a whole json-c parse: what relay_classify()'s
 * shortcuts must agree with (the unit test compares the two). */
void	relay_classify_parsed(const void *data, size_t len,
	    struct frame_info *fi);
/* The error-code table: HTTP status for an exact, lower-case code, or 0. */
int	relay_error_status(const char *code);
/* The MSG_REQ_ERROR flags of an upstream status: ERR_F_ACCOUNT for
 * 401/402/403/429, ERR_F_RETRYABLE for 5xx. */
int	relay_error_flags(int status);

/* Supervisor messages. */
void	relay_req_start(struct worker *w, const struct msg *m);
void	relay_req_cancel(struct worker *w, uint64_t rid);
/* Shutdown grace is over (or the worker must stop): finish every turn. */
void	relay_fail_all(struct worker *w, const char *why);
/* Free every request without answering (the channel is gone). */
void	relay_free_all(struct worker *w);

/* What upstream.c calls about the turns on its connections (worker.c
 * hands them to it: upstream.c does not know this file). */
extern const struct upconn_hooks relay_upconn_hooks;

#endif
