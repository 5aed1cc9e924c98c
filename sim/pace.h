/*
 * Paced sending of a response plan on one lws connection: each step waits
 * its delay_ms after the previous one was sent (lws_sul timers, never
 * blocking), then the connection gets a WRITEABLE callback.  Shared by the
 * WebSocket (ws.c) and HTTP/SSE (http.c) transports.
 */
#ifndef SIM_PACE_H
#define SIM_PACE_H

#include "lws_glue.h"

struct pacer {
	struct lws		*wsi;
	struct plan		 script;
	usec_t			 not_before;	/* when script.head may run */
	int			 armed;		/* not_before is for script.head */
	lws_sorted_usec_list_t	 sul;
};

void	pacer_init(struct pacer *p, struct lws *wsi);
/* Arranges the WRITEABLE callback for the head step: now, or when its
 * delay has passed.  Nothing when the script is empty. */
void	pacer_kick(struct pacer *p);
/* In WRITEABLE: the head step if it is due (the caller runs it, frees it
 * and kicks again), else NULL (and the timer is re-armed). */
struct plan_step *pacer_due(struct pacer *p);
/* Cancels the timer (only while the lws context lives) and frees the
 * script. */
void	pacer_free(struct pacer *p, int context_alive);

/*
 * Writes one frame, stamped with sim_sent_us, as a WebSocket text message
 * (LWS_WRITE_TEXT) or an SSE event in an HTTP chunk (event: TYPE, data:
 * JSON), after resp_head (rhl bytes, may be 0: the HTTP response head
 * still to send).  One lws_write per frame.  0 on success.
 */
int	send_ws_frame(struct lws *wsi, const char *data, size_t len);
int	send_sse_frame(struct lws *wsi, const unsigned char *resp_head, size_t rhl,
	    const char *data, size_t len);

/* Aborts the connection with a TCP RST (see pace.c). */
void	abort_with_rst(struct lws *wsi);

#endif
