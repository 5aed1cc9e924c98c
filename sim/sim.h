/*
 * codexpool-sim: a simulated Codex upstream gateway.
 *
 * One process, one libwebsockets context, one listener that serves the
 * Responses WebSocket, the token endpoint and the /sim/ control endpoints.
 * struct sim holds everything the protocol logic needs; the lws glue in
 * ws.c, http.c and main.c is kept apart so the logic (libsim.a) can be
 * unit-tested without sockets.
 */
#ifndef SIM_SIM_H
#define SIM_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "cache.h"
#include "faults.h"
#include "records.h"
#include "util.h"

#define SIM_DEFAULT_BACKENDS		8
#define SIM_DEFAULT_TOKEN_TTL		3600
#define SIM_DEFAULT_MAX_CONN_AGE	3600
#define SIM_DEFAULT_DELTAS		8
#define SIM_DEFAULT_MAX_MESSAGE		(64u << 20)	/* WS message */
#define SIM_DEFAULT_MAX_BODY		(1u << 20)	/* HTTP POST body */
#define SIM_MAX_BACKENDS		1024
#define SIM_MAX_DELTAS			10000
#define SIM_DEFAULT_MODEL		"gpt-5.4"
#define SIM_REPLY_PREFIX		"sim reply to: "
#define SIM_REPLY_QUOTE_CHARS		40
#define SIM_CLOSE_IDLE_DELAY_MS		100
#define SIM_MAX_DELAY_MS		600000
#define SIM_NAME_MAX			64	/* function names */

struct sim_opts {
	char		 listen_host[256];	/* "" = any address */
	int		 listen_port;
	const char	*port_file;
	const char	*tls_cert;
	const char	*tls_key;
	const char	*auth_dir;
	int		 backends;
	uint64_t	 seed;
	int		 have_seed;
	int		 accounts;
	long		 token_ttl;		/* seconds */
	long		 max_conn_age;		/* seconds; 0 = no cap */
	int		 deltas;
	int		 delta_delay_ms;
	int		 first_event_ms;	/* pause before the first event */
	struct sim_fault fault;			/* global fault, FAULT_NONE if unset */
	int		 verbose;
	size_t		 max_message;
	size_t		 max_body;
	size_t		 cache_entries;		/* per backend */
	size_t		 reply_bytes;		/* pad replies to this size (0: no padding) */
	int		 procs;			/* service processes (--procs) */
};

struct sim {
	struct sim_opts		 o;
	struct sim_auth		 auth;
	struct prompt_cache	**backends;
	struct fault_queue	 faults;
	struct sim_records	 rec;
	uint64_t		 rng;		/* backend choice */
	uint64_t		 run_id;	/* makes response ids unique across runs */
	uint64_t		 next_conn_id;
	uint64_t		 next_resp;
};

/* One client connection's protocol state (the WS transport owns it). */
struct sim_session {
	uint64_t	 conn_id;
	int		 backend;
	char		 account[64];
	usec_t		 opened;		/* monotonic time of the handshake */
	int		 busy;			/* a response is being sent */
	int		 sse;			/* HTTP/SSE: no codex.rate_limits event,
						   a body without "type" */
	/* The newest completed response: only it can be continued. */
	char		 last_resp_id[64];
	char		*last_prompt;		/* canonical prompt + its output */
	size_t		 last_prompt_len;
};

enum step_kind {
	STEP_FRAME,		/* send data as one text frame */
	STEP_CLOSE,		/* close with close_code */
	STEP_RESET,		/* abort with a TCP RST */
	STEP_IDLE,		/* the response is over; accept the next one */
	STEP_STALL,		/* stop reading, send nothing, never close */
};

struct plan_step {
	struct plan_step *next;
	enum step_kind	 kind;
	int		 delay_ms;	/* wait before this step */
	int		 close_code;
	char		*data;		/* STEP_FRAME: JSON text */
	size_t		 len;
};

/*
 * Per-request knobs, from the body's "sim" object (both transports) and,
 * on HTTP, x-sim-* headers (which win).  -1 / "" = the command line's.
 */
struct sim_knobs {
	int		 first_event_ms;
	int		 delta_delay_ms;
	int		 deltas;
	int		 reasoning;		/* 1: a reasoning item first */
	char		 function_call[SIM_NAME_MAX + 1];
};

/* What to do in answer to one client message. */
struct plan {
	struct plan_step *head;
	struct plan_step *tail;
	int		 urgent;	/* send at once, even mid-response */
};

void	sim_opts_defaults(struct sim_opts *o);
int	sim_init(struct sim *sim, const struct sim_opts *o, char *err, size_t errlen);
void	sim_free(struct sim *sim);

/* Seeded choice in [0, n). */
int	sim_rand_below(struct sim *sim, int n);
uint64_t sim_new_conn_id(struct sim *sim);

void	session_init(struct sim_session *s, uint64_t conn_id, int backend,
	    const char *account);
void	session_free(struct sim_session *s);

/* Answers one client WebSocket message; always fills plan (protocol
 * errors become error frames).  The caller runs the steps in order. */
void	sim_respond(struct sim *sim, struct sim_session *s, const char *msg,
	    size_t len, struct plan *plan);
/* The same with knobs from outside the body (HTTP headers; may be NULL). */
void	sim_respond_knobs(struct sim *sim, struct sim_session *s, const char *msg,
	    size_t len, const struct sim_knobs *knobs, struct plan *plan);
void	sim_knobs_init(struct sim_knobs *k);
/* Sets knob name ("first_event_ms", "delta_delay_ms", "deltas",
 * "reasoning", "function_call") from its text value; -1 if the name or
 * the value is bad. */
int	sim_knob_set(struct sim_knobs *k, const char *name, const char *value);

/*
 * Every frame carries the simulator's send time: the caller writes the
 * frame without its closing brace, then this suffix, ',"sim_sent_us":N}'
 * (N = CLOCK_REALTIME microseconds at the write).  Returns the suffix
 * length, or 0 when data is not a JSON object (sent unchanged).
 */
#define SIM_STAMP_MAX	40
size_t	sim_stamp_suffix(const char *data, size_t len, char *buf, size_t size);

void	plan_free(struct plan *plan);
/* Removes and returns the first step (caller frees it with step_free). */
struct plan_step *plan_pop(struct plan *plan);
void	plan_append(struct plan *dst, struct plan *src);
void	step_free(struct plan_step *st);

/* A WebSocket error frame: {"type":"error","status":..,"error":{..}}. */
char	*sim_error_frame(int status, const char *type, const char *code,
	    const char *message, const char *param);

/* The JSON of GET /sim/state, malloc'd. */
char	*sim_state_json(struct sim *sim, size_t *len);

#endif
