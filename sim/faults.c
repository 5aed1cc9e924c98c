/*
 * Fault names, markers and the run-time fault queue.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

static const char *const kind_names[FAULT_KIND_COUNT] = {
	[FAULT_NONE] = "none",
	[FAULT_CLOSE_BEFORE_FIRST] = "close_before_first",
	[FAULT_CLOSE_MID_STREAM] = "close_mid_stream",
	[FAULT_RESET] = "reset",
	[FAULT_USAGE_LIMIT] = "usage_limit",
	[FAULT_TOKEN_EXPIRED] = "token_expired",
	[FAULT_OVERLOADED] = "overloaded",
	[FAULT_SERVER_ERROR] = "server_error",
	[FAULT_STALL] = "stall",
	[FAULT_SLOW_START] = "slow_start",
	[FAULT_CLOSE_IDLE] = "close_idle",
	[FAULT_REJECT_HANDSHAKE] = "reject_handshake",
	[FAULT_CONN_LIMIT] = "conn_limit",
};

const char *
fault_kind_name(enum fault_kind kind)
{
	if ((int)kind < 0 || kind >= FAULT_KIND_COUNT)
		return "unknown";
	return kind_names[kind];
}

static int
parse_arg(const char *s, long min, long max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

int
fault_parse(const char *s, struct sim_fault *out)
{
	const char *eq;
	size_t namelen;
	int k;

	if (s == NULL)
		return -1;
	eq = strchr(s, '=');
	namelen = eq ? (size_t)(eq - s) : strlen(s);
	for (k = 0; k < FAULT_KIND_COUNT; k++) {
		if (strlen(kind_names[k]) == namelen &&
		    strncmp(kind_names[k], s, namelen) == 0)
			break;
	}
	if (k == FAULT_KIND_COUNT)
		return -1;
	out->kind = (enum fault_kind)k;
	out->arg = 0;
	switch (out->kind) {
	case FAULT_SLOW_START:
		/* The delay is required: a slow start of nothing is a typo. */
		if (eq == NULL)
			return -1;
		return parse_arg(eq + 1, 0, 3600 * 1000, &out->arg);
	case FAULT_REJECT_HANDSHAKE:
		out->arg = 503;
		if (eq == NULL)
			return 0;
		return parse_arg(eq + 1, 400, 599, &out->arg);
	default:
		return eq == NULL ? 0 : -1;
	}
}

void
fault_format(const struct sim_fault *f, char *buf, size_t size)
{
	if (f->kind == FAULT_SLOW_START || f->kind == FAULT_REJECT_HANDSHAKE)
		snprintf(buf, size, "%s=%d", fault_kind_name(f->kind), f->arg);
	else
		snprintf(buf, size, "%s", fault_kind_name(f->kind));
}

int
fault_from_marker(const char *text, struct sim_fault *out)
{
	const char *p, *end;
	char spec[64];
	size_t len;

	if (text == NULL || (p = strstr(text, "[[sim:")) == NULL)
		return 0;
	p += 6;
	end = strstr(p, "]]");
	if (end == NULL)
		return -1;
	len = (size_t)(end - p);
	if (len == 0 || len >= sizeof(spec))
		return -1;
	memcpy(spec, p, len);
	spec[len] = '\0';
	if (fault_parse(spec, out) < 0 || out->kind == FAULT_NONE ||
	    out->kind == FAULT_REJECT_HANDSHAKE)
		return -1;
	return 1;
}

void
fault_queue_clear(struct fault_queue *q)
{
	memset(q, 0, sizeof(*q));
}

int
fault_queue_push(struct fault_queue *q, const struct sim_fault *f, long count)
{
	if (count <= 0 || f->kind == FAULT_NONE)
		return -1;
	if (f->kind == FAULT_REJECT_HANDSHAKE) {
		q->reject_count = count;
		q->reject_status = f->arg;
		return 0;
	}
	if (q->n >= FAULT_QUEUE_MAX)
		return -1;
	q->entries[q->n].fault = *f;
	q->entries[q->n].count = count;
	q->n++;
	return 0;
}

int
fault_queue_take(struct fault_queue *q, struct sim_fault *out)
{
	if (q->n == 0)
		return 0;
	*out = q->entries[0].fault;
	if (--q->entries[0].count == 0) {
		memmove(&q->entries[0], &q->entries[1],
		    (size_t)(q->n - 1) * sizeof(q->entries[0]));
		q->n--;
	}
	return 1;
}

int
fault_queue_take_reject(struct fault_queue *q)
{
	if (q->reject_count <= 0)
		return 0;
	q->reject_count--;
	return q->reject_status;
}
