/*
 * State shared by the worker's files (worker.c, upstream.c, relay.c).
 * Not part of the worker's interface: that is worker.h.
 */
#ifndef CODEXPOOL_WORKER_INT_H
#define CODEXPOOL_WORKER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <libwebsockets.h>

#include "ctimer.h"
#include "idmap.h"
#include "msg.h"
#include "pool.h"
#include "util.h"

/* Channel output: stop reading upstream above HIGH, resume below LOW. */
#define WORKER_CHAN_HIGH	(16u * 1024 * 1024)
#define WORKER_CHAN_LOW		(4u * 1024 * 1024)
/* Hard bound of queued output; a frame may be up to MSG_MAX_PAYLOAD. */
#define WORKER_CHAN_LIMIT	(WORKER_CHAN_HIGH + MSG_MAX_PAYLOAD + 1024 * 1024)
/* Finals refused by a full channel wait here (tiny, one per request). */
#define WORKER_SWEEP_USEC	(10 * USEC_PER_SEC)

/* MSG_CONFIG, decoded. */
struct wcfg {
	char		*host;
	int		 port;
	char		*path;
	bool		 tls;
	char		*ca_file;	/* NULL: system CAs */
	char		*proxy_host;	/* NULL: direct */
	int		 proxy_port;
	bool		 pool_enabled;
	usec_t		 max_age;
	usec_t		 ping_interval;
	usec_t		 handshake_timeout;
	usec_t		 start_timeout;
	char		*originator;
	char		*client_version;
};

/*
 * Client TLS trust and the HTTP proxy are per vhost in lws 4.1.6, so a
 * reload that changes them makes a new vhost; connections keep the one
 * they were opened on, and an old vhost goes when its last one closes.
 */
struct upvhost {
	struct lws_vhost *vh;
	char		 name[32];	/* lws keeps a pointer to it */
	unsigned	 refs;		/* connections opened on it */
	bool		 current;
	struct upvhost	*next;
};

/* A final message the full channel refused; sent when it drains. */
struct deferred_msg {
	uint32_t	 type;
	uint64_t	 rid;
	struct msgbuf	 body;
	struct deferred_msg *next;
};

struct upconn;
struct upconn_hooks;
struct request;
struct wsclient;

struct worker {
	int		 slot;
	pid_t		 pid;
	struct lws_context *ctx;
	struct ctimers	 ctimers;	/* the upstream connections' ping and liveness */
	struct lws_vhost *chan_vh;
	struct lws	*chan_wsi;
	struct msgchan	*chan;
	bool		 chan_dead;	/* EOF or error: nobody to talk to */

	struct wcfg	 cfg;
	bool		 configured;
	char		**addrs;	/* numeric upstream addresses */
	size_t		 naddrs;
	size_t		 addr_rr;
	struct upvhost	*vhosts;	/* newest (current) first */
	unsigned	 vhost_gen;

	struct pool	 pool;
	struct idmap	 reqs;		/* rid -> struct request */
	const struct upconn_hooks *uphooks;	/* relay.c, for upstream.c */
	struct upconn	*conns;		/* every upstream connection */
	size_t		 nconns;

	/* client WebSockets (wsclient.c) */
	struct lws_vhost *client_vh;
	struct idmap	 clients;	/* wsid -> struct wsclient */
	struct idmap	 client_pairs;	/* pooled conn id -> the session paired with it */
	struct wsclient	*adopting;	/* being adopted: lws may call back at once */
	uint8_t		*ws_scratch;	/* a frame with lws's headroom, written at once */
	size_t		 ws_scratch_len;
	uint64_t	 ws_adopted;
	uint64_t	 ws_turns;

	bool		 rx_paused;	/* backpressure: upstream reads stopped */
	struct deferred_msg *deferred, **deferred_tail;

	bool		 shutting_down;
	bool		 stop;
	int		 exit_code;
	lws_sorted_usec_list_t sul_sweep;
	lws_sorted_usec_list_t sul_grace;
	lws_sorted_usec_list_t sul_gc;	/* drop unused old vhosts */
	/* lws 4.1.6 clears a raw file's POLLOUT after its WRITEABLE callback
	 * returns, so a re-arm made inside it is lost: re-arm from a timer. */
	lws_sorted_usec_list_t sul_chan_rearm;
	bool		 in_chan_writeable;
	bool		 flush_at_turn_end;	/* in a main loop turn: corked */

	/* counters that are not the pool's */
	uint64_t	 frames_relayed;
	uint64_t	 bytes_relayed;
	uint64_t	 requests_total;
	uint64_t	 requests_failed;	/* answered with MSG_REQ_ERROR */
	uint64_t	 stream_errors;
	uint64_t	 chan_full;
	uint64_t	 rx_pauses;
};

/* worker.c: the supervisor channel */
int	worker_send(struct worker *w, uint32_t type, uint64_t rid,
	    struct msgbuf *b, bool final);
void	worker_check_done(struct worker *w);
void	worker_chan_kick(struct worker *w);
/* worker.c: a WebSocket close frame, sent from a WRITEABLE callback that
 * then returns -1 (instead of lws_close_reason(); see worker.c) */
int	worker_ws_close(struct lws *wsi, int code, const char *reason);

#endif
