/*
 * Connection timers: a binary min-heap driven by one lws_sul (ctimer.h).
 */
#include "config.h"

#include <stdlib.h>

#include "ctimer.h"

static void
place(struct ctimers *h, size_t i, struct ctimer *t)
{
	h->v[i] = t;
	t->slot = i + 1;
}

static void
sift_up(struct ctimers *h, size_t i)
{
	struct ctimer *t = h->v[i];

	while (i > 0 && h->v[(i - 1) / 2]->due > t->due) {
		place(h, i, h->v[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	place(h, i, t);
}

static void
sift_down(struct ctimers *h, size_t i)
{
	struct ctimer *t = h->v[i];
	size_t c;

	while ((c = 2 * i + 1) < h->n) {
		if (c + 1 < h->n && h->v[c + 1]->due < h->v[c]->due)
			c++;
		if (h->v[c]->due >= t->due)
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, t);
}

static void
remove_at(struct ctimers *h, size_t i)
{
	struct ctimer *last;

	h->v[i]->slot = 0;
	last = h->v[--h->n];
	if (i < h->n) {
		place(h, i, last);
		if (i > 0 && h->v[(i - 1) / 2]->due > last->due)
			sift_up(h, i);
		else
			sift_down(h, i);
	}
	if (h->n == 0) {
		free(h->v);
		h->v = NULL;
		h->cap = 0;
	}
}

static void
sul_cb(lws_sorted_usec_list_t *sul)
{
	struct ctimers *h = lws_container_of(sul, struct ctimers, sul);
	usec_t now = now_mono_usec(), next;

	h->armed = 0;
	next = ctimers_run(h, now);
	/* a callback may have armed it already, possibly later than next */
	if (next > 0 && (h->armed == 0 || now + next < h->armed)) {
		h->armed = now + next;
		lws_sul_schedule(h->ctx, 0, &h->sul, sul_cb, next);
	}
}

usec_t
ctimers_run(struct ctimers *h, usec_t now)
{
	struct ctimer *t;

	while (h->n > 0 && h->v[0]->due <= now) {
		t = h->v[0];
		remove_at(h, 0);
		t->cb(t);	/* may schedule or cancel timers, this one too */
	}
	return h->n > 0 ? h->v[0]->due - now : 0;
}

void
ctimer_schedule(struct ctimers *h, struct lws_context *ctx, struct ctimer *t,
    void (*cb)(struct ctimer *), usec_t delay)
{
	usec_t now = now_mono_usec();

	if (t->slot != 0)
		remove_at(h, t->slot - 1);
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
	}
	t->due = now + (delay > 0 ? delay : 0);
	t->cb = cb;
	h->v[h->n++] = t;
	sift_up(h, h->n - 1);
	h->ctx = ctx;
	/* the sul only ever moves earlier here; a later minimum is found
	 * when it fires */
	if (h->armed == 0 || t->due < h->armed) {
		h->armed = t->due;
		lws_sul_schedule(ctx, 0, &h->sul, sul_cb, t->due - now);
	}
}

void
ctimer_cancel(struct ctimers *h, struct ctimer *t)
{
	if (t->slot != 0)
		remove_at(h, t->slot - 1);
}
