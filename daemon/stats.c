#include "config.h"

#include <string.h>

#include "stats.h"

void
usage_window_reset(struct usage_window *w)
{
	int i;

	memset(w, 0, sizeof(*w));
	for (i = 0; i < STATS_BUCKETS; i++)
		w->bucket_start[i] = -1;
}

void
usage_window_add(struct usage_window *w, usec_t now, uint64_t input, uint64_t cached)
{
	int64_t b = now / STATS_BUCKET_USEC;
	int i = (int)(b % STATS_BUCKETS);

	if (w->bucket_start[i] != b) {		/* a bucket from an older lap */
		w->bucket_start[i] = b;
		w->input[i] = 0;
		w->cached[i] = 0;
	}
	w->input[i] += input;
	w->cached[i] += cached;
}

void
usage_window_sum(const struct usage_window *w, usec_t now, uint64_t *input, uint64_t *cached)
{
	int64_t b = now / STATS_BUCKET_USEC;
	int i;

	*input = *cached = 0;
	for (i = 0; i < STATS_BUCKETS; i++) {
		if (w->bucket_start[i] < 0 || b - w->bucket_start[i] >= STATS_BUCKETS)
			continue;
		*input += w->input[i];
		*cached += w->cached[i];
	}
}
