/*
 * Prometheus metrics: GET /metrics in the text exposition format 0.0.4.
 *
 * No registry: a scrape appends each family to an evbuffer, reading the
 * supervisor's existing counters (pool decisions, workers, accounts) at
 * that moment.  Only what no counter keeps lives here: turns by route and
 * outcome, tokens by account and route, the TTFT and turn-duration
 * histograms, token refreshes.  The turn lifecycle feeds those through
 * metrics_turn_started() and metrics_turn_end().  Label sets are bounded:
 * routes are fixed, outcomes are a fixed list, accounts are few (past
 * METRICS_MAX_ACCOUNTS they share the label "other").
 *
 * The writer (metrics_text.c) depends on nothing but libevent, for the
 * unit test.
 */
#ifndef CODEXPOOL_METRICS_H
#define CODEXPOOL_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "util.h"

#define METRICS_MAX_ROUTES	8
#define METRICS_MAX_ACCOUNTS	64

/* ---- the writer (metrics_text.c) ------------------------------------- */

/* Histogram upper bounds in seconds; +Inf is implicit. */
#define MH_NBUCKETS		14
extern const double metrics_buckets[MH_NBUCKETS];

struct mhist {
	uint64_t	 bucket[MH_NBUCKETS];	/* per bucket, not cumulative */
	uint64_t	 count;
	double		 sum;			/* seconds */
};

void	mhist_observe(struct mhist *h, double seconds);

/* "# HELP" and "# TYPE" of a family (type: counter, gauge, histogram). */
void	mw_family(struct evbuffer *b, const char *name, const char *type,
	    const char *help);
/*
 * One sample.  labels: name, value, name, value, ..., NULL (may be NULL
 * itself); values are escaped (backslash, double quote, newline).
 */
void	mw_u64(struct evbuffer *b, const char *name, const char *const *labels,
	    uint64_t v);
void	mw_double(struct evbuffer *b, const char *name, const char *const *labels,
	    double v);
/* name_bucket (cumulative, le="..." added to labels, +Inf last), _sum, _count. */
void	mw_histogram(struct evbuffer *b, const char *name, const char *const *labels,
	    const struct mhist *h);
/* A label value, escaped per the format. */
void	mw_escape(struct evbuffer *b, const char *v);

/* ---- the daemon side (metrics.c) ------------------------------------- */

/* The first output of a turn reached its route: ttft since its arrival. */
void	metrics_turn_started(const char *route, usec_t ttft);
struct account;
/*
 * A turn ended.  status: the HTTP status it got (200 once output began;
 * 499 the client left); what: the outcome's name ("completed", "failed")
 * or an error code; a: its account, NULL if it never had one (tokens are
 * counted under its label, or its entry without one).
 */
void	metrics_turn_end(const char *route, int status, const char *what, usec_t duration,
	    uint64_t in, uint64_t cached, uint64_t out, const struct account *a);
void	metrics_token_refresh(bool ok);

/* Appends every family. */
void	metrics_render(struct evbuffer *b);
/* GET /metrics on whichever listener serves it. */
void	metrics_handle(struct evhttp_request *http);

/* The separate metrics_listen listener (/metrics and /health); no-op when
 * unset.  0, or -1 (logged). */
int	metrics_listen_start(void);
void	metrics_listen_free(void);
/* Whether the API listener serves /metrics (metrics_listen unset). */
bool	metrics_on_api(void);

#endif
