/*
 * What the simulator saw, for GET /sim/state: counters, the last
 * handshakes (headers, bearer redacted) and the last requests.  Both
 * record lists are rings, so memory stays bounded however long it runs.
 */
#ifndef SIM_RECORDS_H
#define SIM_RECORDS_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#define REC_HANDSHAKES_MAX	256
#define REC_REQUESTS_MAX	10000

struct rec_ring {
	struct json_object **items;
	size_t	cap;
	size_t	next;		/* slot of the next add */
	size_t	count;
};

struct sim_records {
	struct rec_ring	handshakes;
	struct rec_ring	requests;
	uint64_t	connections_total;
	uint64_t	connections_open;
	uint64_t	refreshes;
	uint64_t	handshakes_total;
	uint64_t	handshakes_rejected;
	uint64_t	requests_total;
	uint64_t	request_bytes_total;	/* bytes of every request message */
	struct json_object *open_by_account;	/* account -> open count */
	struct json_object *total_by_account;	/* account -> opened since reset */
};

void	records_init(struct sim_records *r);
void	records_free(struct sim_records *r);
/* Clears counters and lists; open connections stay counted as open. */
void	records_reset(struct sim_records *r);

/* Both take ownership of rec. */
void	records_add_handshake(struct sim_records *r, struct json_object *rec);
void	records_add_request(struct sim_records *r, struct json_object *rec);

void	records_conn_open(struct sim_records *r, const char *account);
void	records_conn_close(struct sim_records *r, const char *account);

/* A new object with counters and both lists, oldest first. */
struct json_object *records_state(const struct sim_records *r);

#endif
