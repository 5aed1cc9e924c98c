/*
 * Client WebSockets: a client's own WebSocket on /v1/responses (the Codex
 * CLI's transport), handed over by the supervisor with its socket and
 * paired here with the conversation's pooled upstream connection.
 *
 * The supervisor checks the upgrade (key, conversation, account) and
 * passes the socket (MSG_WS_ADOPT); lws answers the upgrade on a server
 * vhost that never listens.  Each response.create the client sends is
 * held here and announced (MSG_WS_TURN); the supervisor runs it as a turn
 * like any other (MSG_REQ_START with the session's wsid), and relay.c
 * writes the upstream frames straight to this socket: frames never cross
 * the channel.
 *
 * Pairing: a session's last response lives on one pooled connection (its
 * "paired" connection), so the client's previous_response_id works
 * natively there.  When that connection leaves the pool, or a turn of the
 * session ran on a one-shot connection, the session closes with 1012
 * once its turn is over: the client reconnects and sends its full input,
 * as it does when the real backend closes.
 *
 * Close codes: 1000 normal, 1001 shutdown, 1003 binary frame, 1008 slow
 * client (output over WSCLIENT_TXQ_LIMIT) or a dead client (no pong),
 * 1009 message over max_message, 1011 upstream failure mid-response,
 * 1012 reconnect (account change, connection gone, one-shot turn).
 */
#ifndef CODEXPOOL_WSCLIENT_H
#define CODEXPOOL_WSCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker_int.h"

/* Output queued for a client that does not read: dropped above this. */
#define WSCLIENT_TXQ_LIMIT	(16u * 1024 * 1024)

#define WS_CLOSE_NORMAL		1000
#define WS_CLOSE_GOING_AWAY	1001
#define WS_CLOSE_UNSUPPORTED	1003
#define WS_CLOSE_POLICY		1008
#define WS_CLOSE_TOO_BIG	1009
#define WS_CLOSE_INTERNAL	1011
#define WS_CLOSE_RECONNECT	1012

struct wsclient;

/* The server vhost for adopted clients; 0 or -1. */
int	wsclient_init(struct worker *w);

/* Supervisor messages. */
void	wsclient_adopt(struct worker *w, const struct msg *m);	/* takes m->fd */
void	wsclient_reply(struct worker *w, const struct msg *m);
void	wsclient_close_msg(struct worker *w, const struct msg *m);

struct wsclient *wsclient_find(struct worker *w, uint64_t wsid);

/*
 * relay.c: the turn rid starts (or retries) on c: the held
 * response.create with the account's ids (upframe.h), model replaced
 * when model is not "", or NULL when c holds none.  *continues is set
 * when it carries previous_response_id; *owner is then the paired
 * connection (0 if none).  NULL too when c is closing.
 */
char	*wsclient_take_frame(struct wsclient *c, uint64_t rid, const char *upconv,
	    const char *installation_id, const char *model, size_t *len,
	    bool *continues, uint64_t *owner);
/* One upstream frame for the client; -1 if the client was dropped. */
int	wsclient_send(struct wsclient *c, const void *data, size_t len);
/*
 * The turn's stream is over (relay.c sent MSG_REQ_DONE).  kept_conn: the
 * pooled connection that now holds the response (0: none, e.g. a
 * one-shot); a DONE_STREAM_ERROR sends an error event and closes 1011.
 */
void	wsclient_turn_done(struct wsclient *c, int outcome, uint64_t kept_conn,
	    const char *message);
/* A turn of c was refused by the pool: close so the client reconnects. */
void	wsclient_reconnect(struct wsclient *c, const char *why);

/* upstream.c: a pooled connection left the pool. */
void	wsclient_conn_left(struct worker *w, uint64_t conn_id);
/* Shutdown: idle clients close now (1001), busy ones after their turn. */
void	wsclient_shutdown(struct worker *w);
/* Exit: forget every client (after lws_context_destroy). */
void	wsclient_free_all(struct worker *w);

#endif
