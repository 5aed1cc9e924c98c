/*
 * Timers of many connections: one binary min-heap per worker behind a
 * single lws_sul.  libwebsockets keeps its scheduled events in one sorted
 * linked list and inserts by walking it, so two timers per pooled
 * connection made every insertion (each ping, each turn's own timer)
 * cost O(pooled connections); here it is O(log n), and lws' list holds
 * one entry for all of them.
 */
#ifndef CODEXPOOL_CTIMER_H
#define CODEXPOOL_CTIMER_H

#include <stddef.h>

#include <libwebsockets.h>

#include "util.h"

struct ctimer {
	usec_t		 due;		/* now_mono_usec() clock */
	size_t		 slot;		/* heap index + 1; 0: not scheduled */
	void		(*cb)(struct ctimer *);
};

struct ctimers {
	struct ctimer	**v;
	size_t		 n, cap;
	lws_sorted_usec_list_t sul;
	struct lws_context *ctx;
	usec_t		 armed;		/* when sul fires; 0: not armed */
};

/* (Re)schedules t to run cb after delay; a zeroed ctimers is ready. */
void	ctimer_schedule(struct ctimers *h, struct lws_context *ctx, struct ctimer *t,
	    void (*cb)(struct ctimer *), usec_t delay);
/* Never calls into lws (safe after the context is gone); frees the heap
 * when the last timer leaves it. */
void	ctimer_cancel(struct ctimers *h, struct ctimer *t);
/* Runs every timer due at now; returns the delay to the next, 0 if none.
 * (The sul callback; exposed for tests.) */
usec_t	ctimers_run(struct ctimers *h, usec_t now);

#endif
