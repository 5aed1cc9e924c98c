/*
 * The turn lifecycle: one client request, from the front-end that parsed
 * it to the worker's final message, owned by this module alone.
 *
 * A front-end (a route: /v1/responses today) translates the client's
 * request into a Responses body and a conversation, then hands the turn
 * here; it gets the output back through its turn_ops and never sees
 * accounts, workers, retries or the pool.  Every state change goes
 * through one function, and each state has its own list, so the janitor,
 * token-refresh wake-ups, worker deaths and shutdown walk only the turns
 * they concern.
 *
 *	QUEUED ------> DISPATCHED ------> STREAMING ------> (freed)
 *	  ^  (worker up)  |    (first output)      (DONE)
 *	  |               |
 *	  |               +--> BACKOFF --(timer)--> re-bound, DISPATCHED
 *	  |               +--> WAIT_TOKEN --(refresh)--> re-bound, DISPATCHED
 *	  +-- (worker died before output)
 *
 * Retry rule (codexpoold(8)): before the first byte reaches the client, a
 * retryable failure (overloaded, 500, 502, 503, refused or reset
 * connection, a worker that died) is retried on a fresh connection and an
 * account-scoped one (429, 402, 403, 401 after a refresh) on another
 * account, at most TURN_MAX_ATTEMPTS attempts within TURN_RETRY_BUDGET,
 * with jittered backoff, honouring Retry-After within that budget.  Then
 * the client gets the last error.  Never after the first byte.
 */
#ifndef CODEXPOOL_TURN_H
#define CODEXPOOL_TURN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <json-c/json.h>

#include "poolmap.h"
#include "resume.h"
#include "util.h"

#define TURN_MAX_ATTEMPTS	3
#define TURN_RETRY_BUDGET	(3 * USEC_PER_SEC)
#define TURN_RETRY_BASE		(100 * USEC_PER_MSEC)

struct account;
struct turn;
struct msg;
struct wsession;

enum turn_state {
	TURN_NEW,		/* set up by its front-end, not yet started */
	TURN_QUEUED,		/* waiting for its worker to come (back) up */
	TURN_WAIT_TOKEN,	/* waiting for its account's token refresh after a 401 */
	TURN_BACKOFF,		/* waiting to retry after a retryable failure */
	TURN_DISPATCHED,	/* REQ_START sent, nothing relayed yet */
	TURN_STREAMING,		/* output started: the client has bytes */
	TURN_NSTATES
};

/* An error that ends a turn before any output: an error reply. */
struct turn_error {
	int		 status;
	const char	*type;		/* OpenAI error type; NULL: from the status */
	const char	*code;
	const char	*message;	/* ours, when there is no upstream body */
	const char	*body;		/* the upstream error JSON, or NULL */
	size_t		 len;
	int64_t		 retry_after;	/* seconds; -1: none */
	bool		 client_closed;	/* the worker closed the client's socket */
};

/*
 * What a route does with a turn's output.  start is called once, at the
 * first output frame; event for every frame after it; then exactly one of
 * finish (the turn started) or fail (it did not).  keepalive may be NULL
 * (an SSE comment is sent).  finish's code and message say why a stream
 * broke (outcome DONE_STREAM_ERROR).  free releases the route's state.
 * reconnect (client WebSockets only, else NULL) replaces a move to another
 * account: the client is asked to reconnect, and the turn ends.
 */
struct turn_ops {
	const char	*route;
	void		(*start)(struct turn *t);
	void		(*event)(struct turn *t, const char *type, const char *frame, size_t len);
	void		(*finish)(struct turn *t, int outcome, const char *code,
			    const char *message);
	void		(*fail)(struct turn *t, const struct turn_error *e);
	void		(*keepalive)(struct turn *t);
	void		(*reconnect)(struct turn *t, const char *why);
	void		(*free)(struct turn *t);
};

/* The HTTP client of a turn (client.c). */
struct client {
	struct evhttp_request	*http;		/* NULL once the client is gone */
	struct evhttp_connection *evcon;
	bool			 gone;
	struct event		*ev_gone;	/* watches for a client gone before the reply */
	usec_t			 last_write;
	usec_t			 backlog_since;	/* unread output above max_client_buffer since */
};

struct turn {
	uint64_t		 rid;
	enum turn_state		 state;
	TAILQ_ENTRY(turn)	 link;		/* the list of its state */
	const struct turn_ops	*ops;
	void			*front;		/* the route's state */
	struct client		 cl;
	bool			 stream;
	bool			 cancel_sent;
	bool			 counted;	/* in sv->inflight (HTTP turns) */
	/* a client WebSocket's turn (front_ws.c): its response.create stays
	 * in the worker, which streams the output to the client itself */
	struct wsession		*ws;

	/* what goes upstream; dropped once output started */
	struct jdoc		*body;		/* a Responses request, checked */
	char			*fwd_headers;	/* "name\0value\0..." passed upstream */
	size_t			 fwd_len;
	int			 nfwd;

	/* the conversation */
	char			*conv;		/* NULL: none */
	const char		*conv_source;
	uint64_t		 conv_hash;	/* for show conversations */
	char			 conv_tag[9];
	char			 key_label[64];	/* the client API key's label, "" if none */

	/* the account and the pool */
	struct account		*acct;
	struct account		*tried[TURN_MAX_ATTEMPTS + 5];
	int			 ntried;
	bool			 moved;		/* not on its affinity account */
	bool			 reasoning_dropped;
	bool			 refreshed;	/* retried once after a token refresh */
	uint64_t		 owner_conn;	/* continuation: the connection that owns it */
	int			 slot;		/* -1: unbound */
	uint64_t		 key_hash;	/* 0: no conversation */
	uint32_t		 flags;		/* REQ_F_* */
	struct pm_grant		 grant;		/* held from dispatch to decision */
	char			*prev_id;	/* previous_response_id, NULL if none */
	char			 upconv[40];	/* prompt_cache_key sent upstream, "" none */
	char			*frame;
	size_t			 framelen;
	uint64_t		 conn_id;	/* pooled connection serving it */
	int			 decision;
	int			 reason;

	/* implicit resume (resume.h) */
	struct resume_chain	 chain;		/* the conversation after this turn */
	int			 resume_skip;	/* input items the connection has */
	char			*resume_prev;	/* its last response: non-NULL when resuming */
	bool			 resume_off;	/* a resume failed: send the full body */

	/* attempts */
	int			 attempts;	/* REQ_STARTs sent */
	bool			 fresh;		/* next attempt must not reuse */
	struct event		*ev_retry;
	struct turn_error	 last;		/* the error the client gets if retries run out */
	char			*last_code, *last_message, *last_body;

	usec_t			 started_at;
};
TAILQ_HEAD(turn_list, turn);

/* Module setup; lists and the janitor. */
void	turn_init(void);
void	turn_janitor_start(void);
void	turn_janitor_stop(void);
void	turn_free_all(void);		/* at exit: answer what is left */

/*
 * A front-end's new turn for an HTTP client.  The turn takes body (a
 * malloc'd, checked Responses request whose root is an object).  Then
 * turn_set_conversation() and turn_start().
 */
struct turn *turn_new(struct evhttp_request *http, const struct turn_ops *ops, void *front,
	    struct jdoc *body, bool stream);
void	turn_set_conversation(struct turn *t, char *conv, const char *source);
void	turn_forward_header(struct turn *t, const char *name, const char *value);
/* Route and dispatch it; the turn may be answered and freed before this
 * returns. */
void	turn_start(struct turn *t);

/* The worker slot of a pool key (consistent hashing, drain aware). */
int	turn_slot_for_key(uint64_t key_hash);

/* Workers. */
void	turn_on_worker_msg(int slot, const struct msg *m);
void	turn_worker_died(int slot);
void	turn_worker_ready(int slot);
int	turn_count(enum turn_state s);
int	turn_total(void);

/* Accounts: the listener accounts.c calls on a state change. */
void	turn_on_account_event(struct account *a, int event);
/* client.c: the client closed its connection. */
void	turn_client_left(struct turn *t);

/* client.c: the HTTP side of a turn */
void	client_attach(struct turn *t, struct evhttp_request *http);
void	client_detach(struct turn *t);
void	client_start_stream(struct turn *t, const char *content_type);
void	client_write(struct turn *t, struct evbuffer *buf);	/* may drop a slow client */
void	client_end_stream(struct turn *t);
void	client_reply(struct turn *t, int status, const char *content_type,
	    const char *body, size_t len, int64_t retry_after);
void	client_keepalive(struct turn *t);
bool	client_check_slow(struct turn *t);	/* true: dropped */

#endif
