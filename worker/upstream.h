/*
 * The libwebsockets client side: one struct upconn per upstream
 * WebSocket, pooled or one-shot.  It connects, adds the handshake
 * headers, writes one response.create per turn, pings, enforces the
 * handshake and liveness timers, assembles messages and hands them to
 * relay.c, and turns every way a socket can end into one "lost" event.
 */
#ifndef CODEXPOOL_UPSTREAM_H
#define CODEXPOOL_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker_int.h"

/* Largest upstream message we assemble (leaves room for the header). */
#define UPSTREAM_MAX_MESSAGE	(MSG_MAX_PAYLOAD - 64 * 1024)
/* libwebsockets' receive buffer per upstream connection (was 64 KiB). */
#define UPSTREAM_RX_BUFFER	4096
/* How long a close may take before the socket is dropped. */
#define UPSTREAM_CLOSE_GRACE_SECS	5
/* No frame and no pong for UPSTREAM_LIVENESS_X2 / 2 (two and a half)
 * ping intervals: dead (codexpoold(8)). */
#define UPSTREAM_LIVENESS_X2	5

enum up_fail {
	UF_NONE = 0,
	UF_CONNECT,	/* refused, unreachable, TLS failure, closed before open */
	UF_HS_TIMEOUT,	/* handshake did not finish in time */
	UF_HTTP_STATUS,	/* the upgrade was answered with an HTTP status */
	UF_CLOSED,	/* closed by the peer (or the network) after open */
	UF_LIVENESS,	/* silent for too long */
	UF_PROTOCOL,	/* oversized message */
	UF_START_TIMEOUT, /* no output frame within response_start_timeout */
	UF_CONN_LIMIT,	/* first frame: websocket_connection_limit_reached */
	UF_KILLED,	/* we closed it (cancel, eviction, shutdown) */
};

/* Who the handshake speaks for; copied at connect. */
struct hs_ident {
	const char	*access_token;
	const char	*account_id;
	const char	*session_id;
	size_t		 nheaders;
	char *const	*names;
	char *const	*values;
};

struct request;

/*
 * What upstream.c tells the owner of the turns (relay.c) about the turn
 * req joined to uc.  The owner joins and cuts uc->req; upstream.c only
 * reads it.
 */
struct upconn_hooks {
	/* The turn's frame goes out now on an established connection: the
	 * response-start timer runs from here. */
	void	(*turn_armed)(struct request *req);
	/* One complete upstream message for the turn. */
	void	(*message)(struct request *req, struct upconn *uc,
		    const uint8_t *data, size_t len);
	/* uc failed while serving req; uc->fail/why/hs_status tell how.
	 * The owner cuts the turn from uc before anything else. */
	void	(*attempt_failed)(struct request *req, struct upconn *uc);
	/* The turn's response.create text (upstream.c writes from a copy:
	 * lws masks client frames in place). */
	const uint8_t *(*frame)(const struct request *req, size_t *len);
};

struct upconn {
	struct worker	*w;
	struct pool_conn *pc;
	struct lws	*wsi;
	struct upvhost	*uv;
	struct request	*req;		/* the turn being served, or NULL */

	char		*access_token;
	char		*account_id;
	char		*session_id;
	char		**hdr_names;
	char		**hdr_values;
	size_t		 nhdrs;

	bool		 established;
	bool		 send_pending;	/* req's frame waits for WRITEABLE */
	bool		 ping_pending;
	bool		 close_pending;
	bool		 rx_off;	/* lws_rx_flow_control(0) in force */
	bool		 lost;		/* the socket is over */
	bool		 lost_handled;
	bool		 freed_wsi;	/* WSI_DESTROY seen */

	enum up_fail	 fail;
	int		 hs_status;	/* HTTP status of a refused upgrade */
	char		 why[200];	/* how it ended, for messages and logs */
	char		 close_reason[64];

	lws_sorted_usec_list_t sul_hs;
	lws_sorted_usec_list_t sul_lost;
	/* in the worker's ctimer heap: lws' own timer list stays short */
	struct ctimer	 t_ping;
	struct ctimer	 t_live;	/* the liveness deadline */

	uint8_t		*rx;
	size_t		 rxlen;
	size_t		 rxcap;

	struct upconn	*prev, *next;
};

/* The pool's hooks (arg is the worker). */
void	upconn_pool_left(void *arg, struct pool_conn *c, const char *reason);
void	upconn_pool_close(void *arg, struct pool_conn *c, const char *reason);

/*
 * Open a connection for pc (whose io becomes the upconn); the caller joins
 * its turn to it at once.  Never fails synchronously: a failure arrives
 * later (from a timer) as a loss, through the attempt_failed hook.
 */
struct upconn *upconn_open(struct worker *w, struct pool_conn *pc,
	    const struct hs_ident *id);
/* The turn just joined to an established idle connection (a reuse): send
 * its frame. */
void	upconn_send_turn(struct upconn *uc);
/*
 * uc failed for a reason found above the socket (start timeout, connection
 * limit, output queue full, liveness, an oversized message): record it,
 * give its turn (if any) to the attempt_failed hook, which cuts it and
 * retries or answers it, then close the socket.  The first cause wins.
 */
void	upconn_fail(struct upconn *uc, enum up_fail kind, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/* (Re)build the current vhost from w->cfg; 0 or -1. */
int	upconn_apply_config(struct worker *w, bool tls_or_proxy_changed);
/* Destroy old vhosts that no connection uses (timer context only). */
void	upconn_vhost_gc(struct worker *w);
/* Exit: free vhost records after lws_context_destroy. */
void	upconn_vhosts_free(struct worker *w);
/* Backpressure: stop or resume reading every upstream socket. */
void	upconn_set_rx(struct worker *w, bool on);
/* Exit: drop every connection object (after lws_context_destroy). */
void	upconn_free_all(struct worker *w);

/* The silence after which a connection is dead: two and a half ping
 * intervals; 0 (never) when pings are off. */
usec_t	upstream_liveness_window(usec_t ping_interval);
/* Time left before a connection last heard from at last_activity is
 * dead; 0 when that deadline has passed. */
usec_t	upstream_liveness_left(usec_t now, usec_t last_activity,
	    usec_t ping_interval);

const char *up_fail_name(enum up_fail f);
/* "<kind>: <detail>", for messages and logs. */
void	upconn_describe(const struct upconn *uc, char *buf, size_t len);

extern const struct lws_protocols upconn_protocols[];

#endif
