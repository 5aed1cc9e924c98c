/*
 * The libwebsockets side of the simulator: one protocol serves both the
 * HTTP endpoints (http.c) and the Responses WebSocket (ws.c).
 */
#ifndef SIM_LWS_GLUE_H
#define SIM_LWS_GLUE_H

#include <libwebsockets.h>

#include "sim.h"

struct ws_conn;
struct http_txn;

/* Per-connection user space of the one protocol; zeroed by lws. */
struct sim_pss {
	struct ws_conn	*ws;
	struct http_txn	*http;
};

extern struct sim		*g_sim;
extern struct lws_context	*g_ctx;

int	ws_confirm_upgrade(struct lws *wsi, struct sim_pss *pss, const char *upgrade);
int	ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
	    struct sim_pss *pss, void *in, size_t len);
void	ws_shutdown(void);

int	http_callback(struct lws *wsi, enum lws_callback_reasons reason,
	    struct sim_pss *pss, void *in, size_t len);

/* Writes a complete HTTP response (status, JSON body) at once; small
 * bodies only.  Returns what the callback should return. */
int	http_reply_now(struct lws *wsi, int status, const char *body);

/* Copies the path of the request (no query string) into buf. */
void	req_path(struct lws *wsi, char *buf, size_t size);
int	path_ends_with(const char *path, const char *suffix);
/* A request header's value, malloc'd, or NULL: a known one by token, a
 * custom one by name (without the colon). */
char	*hdr_dup(struct lws *wsi, enum lws_token_indexes t);
char	*custom_dup(struct lws *wsi, const char *name);

void	http_shutdown(void);

#endif
