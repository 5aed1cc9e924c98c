/*
 * Simulator state: options, backends, sessions, introspection.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonutil.h"
#include "sim.h"

void
sim_opts_defaults(struct sim_opts *o)
{
	memset(o, 0, sizeof(*o));
	strlcpy_safe(o->listen_host, "127.0.0.1", sizeof(o->listen_host));
	o->listen_port = 0;
	o->backends = SIM_DEFAULT_BACKENDS;
	o->accounts = 0;
	o->token_ttl = SIM_DEFAULT_TOKEN_TTL;
	o->max_conn_age = SIM_DEFAULT_MAX_CONN_AGE;
	o->deltas = SIM_DEFAULT_DELTAS;
	o->delta_delay_ms = 0;
	o->fault.kind = FAULT_NONE;
	o->max_message = SIM_DEFAULT_MAX_MESSAGE;
	o->max_body = SIM_DEFAULT_MAX_BODY;
	o->cache_entries = CACHE_DEFAULT_ENTRIES;
}

static uint64_t
splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int
sim_rand_below(struct sim *sim, int n)
{
	if (n <= 1)
		return 0;
	/* The modulo bias is far below anything a test could notice. */
	return (int)(splitmix64(&sim->rng) % (uint64_t)n);
}

uint64_t
sim_new_conn_id(struct sim *sim)
{
	return ++sim->next_conn_id;
}

int
sim_init(struct sim *sim, const struct sim_opts *o, char *err, size_t errlen)
{
	int i;

	memset(sim, 0, sizeof(*sim));
	sim->o = *o;
	if (o->have_seed)
		sim->rng = o->seed;
	else
		sim_random_bytes(&sim->rng, sizeof(sim->rng));
	sim_random_bytes(&sim->run_id, sizeof(sim->run_id));
	if (sim_auth_init(&sim->auth, o->accounts, o->token_ttl) < 0) {
		snprintf(err, errlen, "cannot create %d accounts", o->accounts);
		return -1;
	}
	sim->backends = xcalloc((size_t)o->backends, sizeof(*sim->backends));
	for (i = 0; i < o->backends; i++) {
		sim->backends[i] = prompt_cache_new(o->cache_entries);
		if (sim->backends[i] == NULL) {
			snprintf(err, errlen, "out of memory for backend caches");
			return -1;
		}
	}
	fault_queue_clear(&sim->faults);
	records_init(&sim->rec);
	return 0;
}

void
sim_free(struct sim *sim)
{
	int i;

	if (sim->backends != NULL) {
		for (i = 0; i < sim->o.backends; i++)
			prompt_cache_free(sim->backends[i]);
		free(sim->backends);
	}
	sim_auth_free(&sim->auth);
	if (sim->rec.handshakes.items != NULL)
		records_free(&sim->rec);
	memset(sim, 0, sizeof(*sim));
}

void
session_init(struct sim_session *s, uint64_t conn_id, int backend,
    const char *account)
{
	memset(s, 0, sizeof(*s));
	s->conn_id = conn_id;
	s->backend = backend;
	strlcpy_safe(s->account, account ? account : "", sizeof(s->account));
	s->opened = now_mono_usec();
}

void
session_free(struct sim_session *s)
{
	free(s->last_prompt);
	s->last_prompt = NULL;
	s->last_prompt_len = 0;
}

char *
sim_state_json(struct sim *sim, size_t *len)
{
	struct json_object *o, *b, *accts, *a;
	char *s;
	int i;

	o = records_state(&sim->rec);
	b = json_object_new_array();
	for (i = 0; i < sim->o.backends; i++) {
		struct json_object *e = json_object_new_object();

		json_object_object_add(e, "entries", json_object_new_int64(
		    (int64_t)prompt_cache_entries(sim->backends[i])));
		json_object_object_add(e, "evictions", json_object_new_int64(
		    (int64_t)prompt_cache_evictions(sim->backends[i])));
		json_object_array_add(b, e);
	}
	json_object_object_add(o, "backends", b);
	accts = json_object_new_array();
	for (i = 0; i < sim->auth.n; i++) {
		a = json_object_new_object();
		json_object_object_add(a, "index",
		    json_object_new_int(sim->auth.accounts[i].index));
		json_object_object_add(a, "account_id",
		    json_object_new_string(sim->auth.accounts[i].id));
		json_object_object_add(a, "refreshes",
		    json_object_new_int64(sim->auth.accounts[i].refreshes));
		json_object_array_add(accts, a);
	}
	json_object_object_add(o, "accounts", accts);
	json_object_object_add(o, "pending_faults",
	    json_object_new_int(sim->faults.n));
	s = xstrdup(json_plain(o, len));
	json_object_put(o);
	return s;
}
