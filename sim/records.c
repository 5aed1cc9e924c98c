/*
 * Introspection records.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "records.h"
#include "util.h"

static void
ring_init(struct rec_ring *ring, size_t cap)
{
	ring->items = xcalloc(cap, sizeof(*ring->items));
	ring->cap = cap;
	ring->next = ring->count = 0;
}

static void
ring_clear(struct rec_ring *ring)
{
	size_t i;

	for (i = 0; i < ring->cap; i++) {
		json_object_put(ring->items[i]);
		ring->items[i] = NULL;
	}
	ring->next = ring->count = 0;
}

static void
ring_add(struct rec_ring *ring, struct json_object *rec)
{
	json_object_put(ring->items[ring->next]);
	ring->items[ring->next] = rec;
	ring->next = (ring->next + 1) % ring->cap;
	if (ring->count < ring->cap)
		ring->count++;
}

static struct json_object *
ring_array(const struct rec_ring *ring)
{
	struct json_object *a = json_object_new_array_ext((int)ring->count);
	size_t i, start = (ring->next + ring->cap - ring->count) % ring->cap;

	for (i = 0; i < ring->count; i++)
		json_object_array_add(a,
		    json_object_get(ring->items[(start + i) % ring->cap]));
	return a;
}

void
records_init(struct sim_records *r)
{
	memset(r, 0, sizeof(*r));
	ring_init(&r->handshakes, REC_HANDSHAKES_MAX);
	ring_init(&r->requests, REC_REQUESTS_MAX);
	r->open_by_account = json_object_new_object();
	r->total_by_account = json_object_new_object();
}

void
records_free(struct sim_records *r)
{
	ring_clear(&r->handshakes);
	ring_clear(&r->requests);
	free(r->handshakes.items);
	free(r->requests.items);
	json_object_put(r->open_by_account);
	json_object_put(r->total_by_account);
	memset(r, 0, sizeof(*r));
}

void
records_reset(struct sim_records *r)
{
	ring_clear(&r->handshakes);
	ring_clear(&r->requests);
	r->connections_total = 0;
	r->refreshes = 0;
	r->handshakes_total = 0;
	r->handshakes_rejected = 0;
	r->requests_total = 0;
	r->request_bytes_total = 0;
	json_object_put(r->total_by_account);
	r->total_by_account = json_object_new_object();
}

void
records_add_handshake(struct sim_records *r, struct json_object *rec)
{
	r->handshakes_total++;
	ring_add(&r->handshakes, rec);
}

void
records_add_request(struct sim_records *r, struct json_object *rec)
{
	r->requests_total++;
	ring_add(&r->requests, rec);
}

static void
bump(struct json_object *map, const char *key, int delta)
{
	struct json_object *v;
	int64_t n = 0;

	if (json_object_object_get_ex(map, key, &v))
		n = json_object_get_int64(v);
	n += delta;
	if (n <= 0 && delta < 0)
		json_object_object_del(map, key);
	else
		json_object_object_add(map, key, json_object_new_int64(n));
}

void
records_conn_open(struct sim_records *r, const char *account)
{
	r->connections_total++;
	r->connections_open++;
	bump(r->open_by_account, account, 1);
	bump(r->total_by_account, account, 1);
}

void
records_conn_close(struct sim_records *r, const char *account)
{
	if (r->connections_open > 0)
		r->connections_open--;
	bump(r->open_by_account, account, -1);
}

struct json_object *
records_state(const struct sim_records *r)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "connections_total",
	    json_object_new_int64((int64_t)r->connections_total));
	json_object_object_add(o, "connections_open",
	    json_object_new_int64((int64_t)r->connections_open));
	json_object_object_add(o, "connections_by_account",
	    json_object_get(r->open_by_account));
	json_object_object_add(o, "connections_total_by_account",
	    json_object_get(r->total_by_account));
	json_object_object_add(o, "refreshes",
	    json_object_new_int64((int64_t)r->refreshes));
	json_object_object_add(o, "handshakes_total",
	    json_object_new_int64((int64_t)r->handshakes_total));
	json_object_object_add(o, "handshakes_rejected",
	    json_object_new_int64((int64_t)r->handshakes_rejected));
	json_object_object_add(o, "requests_total",
	    json_object_new_int64((int64_t)r->requests_total));
	json_object_object_add(o, "request_bytes_total",
	    json_object_new_int64((int64_t)r->request_bytes_total));
	json_object_object_add(o, "handshakes", ring_array(&r->handshakes));
	json_object_object_add(o, "requests", ring_array(&r->requests));
	return o;
}
