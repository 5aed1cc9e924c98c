/*
 * The Prometheus text exposition format 0.0.4, written straight into an
 * evbuffer: families, samples, histograms, escaped label values.
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

const double metrics_buckets[MH_NBUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60,
};

void
mhist_observe(struct mhist *h, double seconds)
{
	int i;

	if (!(seconds >= 0))
		seconds = 0;	/* NaN or a clock step back */
	for (i = 0; i < MH_NBUCKETS; i++)
		if (seconds <= metrics_buckets[i]) {
			h->bucket[i]++;
			break;
		}
	h->count++;		/* past the last bucket: +Inf only */
	h->sum += seconds;
}

void
mw_escape(struct evbuffer *b, const char *v)
{
	for (; *v != '\0'; v++) {
		switch (*v) {
		case '\\':
			evbuffer_add(b, "\\\\", 2);
			break;
		case '"':
			evbuffer_add(b, "\\\"", 2);
			break;
		case '\n':
			evbuffer_add(b, "\\n", 2);
			break;
		default:
			evbuffer_add(b, v, 1);
			break;
		}
	}
}

/* HELP text escapes only backslash and newline. */
static void
escape_help(struct evbuffer *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			evbuffer_add(b, "\\\\", 2);
		else if (*v == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, v, 1);
	}
}

void
mw_family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s ", name);
	escape_help(b, help);
	evbuffer_add_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* name{a="x",b="y"[,le="..."]} */
static void
series(struct evbuffer *b, const char *name, const char *suffix,
    const char *const *labels, const char *le)
{
	int n = 0;

	evbuffer_add_printf(b, "%s%s", name, suffix);
	for (; labels != NULL && labels[0] != NULL; labels += 2, n++) {
		evbuffer_add_printf(b, "%s%s=\"", n ? "," : "{", labels[0]);
		mw_escape(b, labels[1] ? labels[1] : "");
		evbuffer_add(b, "\"", 1);
	}
	if (le != NULL)
		evbuffer_add_printf(b, "%sle=\"%s\"", n++ ? "," : "{", le);
	if (n)
		evbuffer_add(b, "}", 1);
	evbuffer_add(b, " ", 1);
}

void
mw_u64(struct evbuffer *b, const char *name, const char *const *labels, uint64_t v)
{
	series(b, name, "", labels, NULL);
	evbuffer_add_printf(b, "%" PRIu64 "\n", v);
}

static void
add_double(struct evbuffer *b, double v)
{
	if (isnan(v))
		evbuffer_add_printf(b, "NaN\n");
	else if (isinf(v))
		evbuffer_add_printf(b, "%sInf\n", v > 0 ? "+" : "-");
	else
		evbuffer_add_printf(b, "%.15g\n", v);
}

void
mw_double(struct evbuffer *b, const char *name, const char *const *labels, double v)
{
	series(b, name, "", labels, NULL);
	add_double(b, v);
}

void
mw_histogram(struct evbuffer *b, const char *name, const char *const *labels,
    const struct mhist *h)
{
	uint64_t cum = 0;
	char le[32];
	int i;

	for (i = 0; i < MH_NBUCKETS; i++) {
		cum += h->bucket[i];
		snprintf(le, sizeof(le), "%g", metrics_buckets[i]);
		series(b, name, "_bucket", labels, le);
		evbuffer_add_printf(b, "%" PRIu64 "\n", cum);
	}
	series(b, name, "_bucket", labels, "+Inf");
	evbuffer_add_printf(b, "%" PRIu64 "\n", h->count);
	series(b, name, "_sum", labels, NULL);
	add_double(b, h->sum);
	series(b, name, "_count", labels, NULL);
	evbuffer_add_printf(b, "%" PRIu64 "\n", h->count);
}
