/*
 * Client WebSockets, the supervisor's half (front_ws.c): the upgrade, the
 * sessions, and the front-end their turns run with.  The worker's half is
 * worker/wsclient.c.
 */
#ifndef CODEXPOOL_FRONT_WS_H
#define CODEXPOOL_FRONT_WS_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/http.h>

#include "util.h"

struct msg;
struct turn;

/* One client WebSocket, from its upgrade until its socket is gone and its
 * last turn is over. */
struct wsession {
	uint64_t	 wsid;
	int		 slot;		/* the worker holding the socket */
	char		 entry[17];	/* its account */
	char		*conv;
	const char	*conv_source;
	uint64_t	 conv_hash;
	uint64_t	 key_hash;	/* entry:conv */
	char		 key_label[64];
	char		*fwd;		/* forwarded headers: "name\0value\0..." */
	int		 nfwd;
	struct turn	*turn;		/* the one running, or NULL */
	uint64_t	 turns;
	usec_t		 created;
	bool		 gone;		/* the socket is closed */
};

void	ws_init(void);
void	ws_free_all(void);
int	ws_session_count(void);
/* HTTP turns in flight plus client WebSockets open: what max_clients bounds. */
int	clients_in_use(void);

/* http.c: a GET with Upgrade: websocket on a Responses path. */
bool	ws_is_upgrade(struct evhttp_request *http);
void	ws_upgrade(struct evhttp_request *http);

/* workers.c: MSG_WS_TURN, MSG_WS_GONE; a worker that died. */
void	ws_on_worker_msg(int slot, const struct msg *m);
void	ws_worker_died(int slot);

/* poolact.c: an account changed state: its sessions close after their turn. */
void	ws_close_account(const char *entry, const char *why);

#endif
