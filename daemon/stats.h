/*
 * Token usage over a sliding window (the last five minutes by default),
 * in ten-second buckets, for the recent prompt-cache hit rate in `status`.
 */
#ifndef CODEXPOOL_STATS_H
#define CODEXPOOL_STATS_H

#include <stdint.h>

#include "util.h"

#define STATS_BUCKET_USEC	(10 * USEC_PER_SEC)
#define STATS_BUCKETS		30		/* 30 x 10 s = 5 min */

struct usage_window {
	int64_t		 bucket_start[STATS_BUCKETS];	/* bucket number, for staleness */
	uint64_t	 input[STATS_BUCKETS];
	uint64_t	 cached[STATS_BUCKETS];
};

void	usage_window_reset(struct usage_window *w);
void	usage_window_add(struct usage_window *w, usec_t now, uint64_t input, uint64_t cached);
void	usage_window_sum(const struct usage_window *w, usec_t now, uint64_t *input, uint64_t *cached);

#endif
