/*
 * codexpool-bench soak: many concurrent conversations through codexpoold
 * against codexpool-sim for a fixed time, with a fault injected into a
 * random share of the turns, and an oracle that checks every turn.
 *
 * Each conversation is a thread running a stateless client (full history
 * every turn) of /v1/responses, /v1/chat/completions or /v1/messages.  Every
 * turn's user text starts with a stamp unique to it ("@T0000002a@"); the
 * simulator echoes the first 40 characters of that text, so a complete
 * answer carries its own stamp.  A fault is a "[[sim:KIND]]" marker in the
 * same text (upstream faults, one chosen turn each) or something the
 * client does (reads slowly, leaves mid-stream or before the answer); the
 * main thread also kill -9s a random worker every -k seconds and resets
 * the accounts the 401 and 429 faults lock.
 *
 * The oracle: every turn ends exactly once, within its deadline, with a
 * complete answer carrying its own stamp or a clear error (an HTTP error
 * with an OpenAI- or Anthropic-style body, or a failure event with an
 * error message, then the end of the stream); no text of another turn
 * ever shows up.  After
 * the soak: the simulator's open connections equal the daemon's
 * pooled_open, every account is still there and active, and once the pool
 * is evicted the fd count and PSS of the daemon and its workers are back
 * near their baseline.  Any violation makes the exit status 1.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rig.h"
#include "soak.h"
#include "testlib.h"

#define CTL_WAIT_MS	30000
#define QUIESCE_MS	30000	/* for the end checks to settle */
#define CONV_TURNS	10	/* turns before a conversation starts afresh */
#define SLOW_READ_MS	30	/* a slow reader's pause per event */
#define SLOW_DELTAS	64	/* and the deltas it asks for */
#define MAX_TEXT	(1 << 20)
#define MAX_NOTES	20	/* violations described in full */

/* ---- what is injected ------------------------------------------------- */

enum fault {
	F_NONE,
	F_CLOSE_BEFORE_FIRST,
	F_CLOSE_MID_STREAM,
	F_RESET,
	F_STALL,
	F_TOKEN_EXPIRED,
	F_USAGE_LIMIT,
	F_OVERLOADED,
	F_SERVER_ERROR,
	F_CONN_LIMIT,
	F_SLOW_START,
	F_CLOSE_IDLE,
	F_SLOW_READER,		/* client: reads one event per SLOW_READ_MS */
	F_ABORT_STREAM,		/* client: RST after the first delta */
	F_ABORT_WAITING,	/* client: RST while the answer is awaited */
	F_COUNT
};

static const struct fault_def {
	const char	*name;
	const char	*marker;	/* "[[sim:...]]" in the user text, or NULL */
	int		 weight;
} fault_defs[F_COUNT] = {
	[F_NONE] =		{ "none",		NULL,			52 },
	[F_CLOSE_BEFORE_FIRST] ={ "close_before_first",	"close_before_first",	4 },
	[F_CLOSE_MID_STREAM] =	{ "close_mid_stream",	"close_mid_stream",	4 },
	[F_RESET] =		{ "reset",		"reset",		4 },
	[F_STALL] =		{ "stall",		"stall",		2 },
	[F_TOKEN_EXPIRED] =	{ "401",		"token_expired",	3 },
	[F_USAGE_LIMIT] =	{ "429",		"usage_limit",		2 },
	[F_OVERLOADED] =	{ "overloaded",		"overloaded",		4 },
	[F_SERVER_ERROR] =	{ "server_error",	"server_error",		4 },
	[F_CONN_LIMIT] =	{ "conn_limit",		"conn_limit",		4 },
	[F_SLOW_START] =	{ "slow_start",		"slow_start=1500",	3 },
	[F_CLOSE_IDLE] =	{ "close_idle",		"close_idle",		4 },
	[F_SLOW_READER] =	{ "slow_reader",	NULL,			3 },
	[F_ABORT_STREAM] =	{ "abort_mid_stream",	NULL,			4 },
	/* slow_start, so the client leaves before the first frame */
	[F_ABORT_WAITING] =	{ "abort_waiting",	"slow_start=3000",	3 },
};

/* ---- the client APIs ---------------------------------------------------- */

enum route { R_RESPONSES, R_CHAT, R_MESSAGES, R_COUNT };

static const struct route_def {
	const char	*name;
	const char	*path;
	const char	*model;
} route_defs[R_COUNT] = {
	[R_RESPONSES] =	{ "responses",	"/v1/responses",	"gpt-5.4" },
	[R_CHAT] =	{ "chat",	"/v1/chat/completions",	"gpt-5.4" },
	[R_MESSAGES] =	{ "messages",	"/v1/messages",		"claude-opus-5-5" },
};

/* ---- how a turn ended --------------------------------------------------- */

enum outcome {
	O_COMPLETED,		/* a complete response with its own stamp */
	O_FAILED,		/* 200, then response.failed / error event */
	O_HTTP_ERROR,		/* an HTTP error with an OpenAI-style body */
	O_ABORTED,		/* the client left, as planned */
	/* violations */
	O_HANG,			/* no end within the turn's deadline */
	O_TRUNCATED,		/* the stream broke: no terminal event or final chunk */
	O_AFTER_TERMINAL,	/* an event after the terminal one */
	O_STAMP,		/* completed without its own stamp */
	O_FOREIGN,		/* text of another turn */
	O_BAD_ERROR,		/* an error without an OpenAI-style body */
	O_NO_ANSWER,		/* connection refused or closed without a response */
	O_COUNT
};

#define O_FIRST_VIOLATION	O_HANG

static const char *const outcome_names[O_COUNT] = {
	[O_COMPLETED] = "completed",
	[O_FAILED] = "failed_event",
	[O_HTTP_ERROR] = "http_error",
	[O_ABORTED] = "client_left",
	[O_HANG] = "HANG",
	[O_TRUNCATED] = "TRUNCATED",
	[O_AFTER_TERMINAL] = "AFTER_TERMINAL",
	[O_STAMP] = "STAMP_MISMATCH",
	[O_FOREIGN] = "FOREIGN_FRAMES",
	[O_BAD_ERROR] = "UNCLEAR_ERROR",
	[O_NO_ANSWER] = "NO_ANSWER",
};

/* ---- the run ---------------------------------------------------------- */

struct soak_opts {
	int	duration;	/* -d seconds */
	int	convs;		/* -c concurrent conversations */
	int	kill_every;	/* -k seconds between worker kills; 0: none */
	int	deadline;	/* -T seconds a turn may take */
	int	accounts;	/* -a */
	int	workers;	/* -w */
	int	conn_age;	/* -A the simulator's --max-conn-age */
	int	pss_slack_mb;	/* -P allowed PSS growth */
	unsigned seed;		/* -s */
};

struct soak {
	struct soak_opts o;
	struct rig	 rig;		/* the simulator and the daemon */
	char		 ctlout[800];
	char		*instructions;
	volatile int	 stop;
	volatile int	 accounts_dirty;	/* a 401/429 fault ended: reset locks */

	pthread_mutex_t	 mu;
	unsigned	 next_stamp;
	long long	 turns;
	long long	 injected[F_COUNT];
	long long	 matrix[F_COUNT][O_COUNT];
	long long	 by_route[R_COUNT][O_COUNT];
	int		 routes[R_COUNT];	/* -R, in order */
	int		 nroutes;
	long long	 statuses[600];
	struct {
		char		what[64];	/* "503 no_account" */
		long long	n;
	}		 codes[32];
	int		 ncodes;
	long long	 kills, account_resets;
	int		 nnotes;
	char		 notes[MAX_NOTES][320];
	long long	 end_violations;
};

static void
note(struct soak *sk, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&sk->mu);
	if (sk->nnotes < MAX_NOTES) {
		va_start(ap, fmt);
		vsnprintf(sk->notes[sk->nnotes++], sizeof(sk->notes[0]), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&sk->mu);
}

static void
fail_end(struct soak *sk, const char *fmt, ...)
{
	va_list ap;

	sk->end_violations++;
	printf("VIOLATION: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static void
soak_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "codexpool-bench soak: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	tl_kill_all();
	exit(1);
}

/* ---- codexpoolctl ------------------------------------------------------ */

/* codexpoolctl --json WORDS; the answer parsed, or NULL. */
static json_object *
ctl_json(struct soak *sk, const char *a1, const char *a2, const char *a3)
{
	char *bin = tl_program("ctl/codexpoolctl"), *text;
	char *argv[] = { bin, "-s", sk->rig.ctl, "--json", (char *)a1, (char *)a2,
	    (char *)a3, NULL };
	json_object *o = NULL;

	unlink(sk->ctlout);
	if (tl_run(sk->ctlout, argv, CTL_WAIT_MS) == 0 &&
	    (text = tl_read_file(sk->ctlout, NULL)) != NULL) {
		o = json_tokener_parse(text);
		free(text);
	}
	free(bin);
	return o;
}

static long long
jnum(json_object *o, const char *key)
{
	json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v))
		return -1;
	return json_object_get_int64(v);
}

static const char *
jstr(json_object *o, const char *key)
{
	json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static long long
status_num(struct soak *sk, const char *key)
{
	json_object *st = ctl_json(sk, "status", NULL, NULL);
	long long n = jnum(st, key);

	json_object_put(st);
	return n;
}

static long long
sim_open(struct soak *sk)
{
	json_object *st = tl_sim_state(&sk->rig.sim);
	long long n = jnum(st, "connections_open");

	json_object_put(st);
	return n;
}

/* The pids of the workers that are up; returns how many. */
static int
worker_pids(struct soak *sk, pid_t *pids, int max)
{
	json_object *w = ctl_json(sk, "show", "workers", NULL), *arr, *e;
	const char *state;
	int i, n = 0;

	if (w != NULL && json_object_object_get_ex(w, "workers", &arr)) {
		for (i = 0; i < (int)json_object_array_length(arr) && n < max; i++) {
			e = json_object_array_get_idx(arr, i);
			state = jstr(e, "state");
			if (state != NULL && strcmp(state, "up") == 0 && jnum(e, "pid") > 0)
				pids[n++] = (pid_t)jnum(e, "pid");
		}
	}
	json_object_put(w);
	return n;
}

/*
 * Accounts: how many are listed, how many are active; with reset, every
 * one locked or in error (not one refreshing) is reset, as an operator
 * would after the soak's own 401 and 429 faults.
 */
static int
accounts_check(struct soak *sk, int reset, int *active)
{
	json_object *a = ctl_json(sk, "show", "accounts", NULL), *arr, *e;
	const char *status, *entry;
	int i, n = -1;

	*active = 0;
	if (a != NULL && json_object_object_get_ex(a, "accounts", &arr)) {
		n = (int)json_object_array_length(arr);
		for (i = 0; i < n; i++) {
			e = json_object_array_get_idx(arr, i);
			status = jstr(e, "status");
			entry = jstr(e, "entry");
			if (status != NULL && strcmp(status, "active") == 0)
				(*active)++;
			else if (reset && status != NULL && entry != NULL &&
			    strcmp(status, "refreshing") != 0) {
				json_object_put(ctl_json(sk, "account", "reset", entry));
				sk->account_resets++;
			}
		}
	}
	json_object_put(a);
	return n;
}

static void
evict_all(struct soak *sk)
{
	json_object *a = ctl_json(sk, "show", "accounts", NULL), *arr;
	const char *entry;
	int i;

	if (a != NULL && json_object_object_get_ex(a, "accounts", &arr))
		for (i = 0; i < (int)json_object_array_length(arr); i++)
			if ((entry = jstr(json_object_array_get_idx(arr, i), "entry")) != NULL)
				json_object_put(ctl_json(sk, "evict", entry, NULL));
	json_object_put(a);
}

/* ---- /proc ---------------------------------------------------------- */



struct usage {
	int	fds;		/* supervisor + workers */
	long	pss_kb;
	long	sup_pss_kb;	/* the supervisor alone */
	int	nworkers;
};

static int
measure(struct soak *sk, struct usage *u)
{
	pid_t pids[64];
	int i, n = worker_pids(sk, pids, 64), f;
	long p;

	memset(u, 0, sizeof(*u));
	u->nworkers = n;
	if ((u->fds = tl_fd_count(sk->rig.daemon)) < 0 || (u->pss_kb = tl_pss_kib(sk->rig.daemon)) < 0)
		return -1;
	u->sup_pss_kb = u->pss_kb;
	for (i = 0; i < n; i++) {
		if ((f = tl_fd_count(pids[i])) < 0 || (p = tl_pss_kib(pids[i])) < 0)
			return -1;
		u->fds += f;
		u->pss_kb += p;
	}
	return 0;
}

/* ---- setup ---------------------------------------------------------- */

static void
soak_start(struct soak *sk)
{
	char sim_args[256], conf[256], auth[700], label[32], asan[512];
	int i;

	/* Under ASan a small quarantine, and free memory given back, so PSS
	 * says something about leaks; harmless without ASan.  The daemon
	 * and the simulator inherit it. */
	snprintf(asan, sizeof(asan), "%s:quarantine_size_mb=16:"
	    "allocator_release_to_os_interval_ms=500", getenv("ASAN_OPTIONS") ?
	    getenv("ASAN_OPTIONS") : "detect_leaks=1:abort_on_error=1");
	setenv("ASAN_OPTIONS", asan, 1);
	setenv("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1", 1);
	snprintf(sim_args, sizeof(sim_args), "--accounts %d --max-conn-age %d --seed %u",
	    sk->o.accounts, sk->o.conn_age, sk->o.seed);
	/* A 4 s ping makes a stalled upstream dead after 10 s, not 62.5 s. */
	snprintf(conf, sizeof(conf), "workers = %d\nws_ping_interval = 4s\n",
	    sk->o.workers);
	rig_start(&sk->rig, NULL, false, sim_args, conf);
	snprintf(sk->ctlout, sizeof(sk->ctlout), "%s/ctl.out", sk->rig.dir);
	for (i = 2; i <= sk->o.accounts; i++) {
		char *cbin = tl_program("ctl/codexpoolctl");
		char *cargv[] = { cbin, "-s", sk->rig.ctl, "account", "add", "--auth-json",
		    auth, "--label", label, NULL };

		tl_sim_auth_path(&sk->rig.sim, i, auth, sizeof(auth));
		snprintf(label, sizeof(label), "soak%d", i);
		if (tl_run(sk->ctlout, cargv, CTL_WAIT_MS) != 0)
			soak_die("cannot add account %d", i);
		free(cbin);
	}
	sk->instructions = tl_text(2, sk->o.seed);
}

/* ---- one turn --------------------------------------------------------- */

struct conv {
	int		 id;
	enum route	 route;
	int		 gen;
	int		 turns;
	char		 key[64];
	json_object	*history;
	unsigned	 rnd;
};

static void
conv_reset(const struct soak *sk, struct conv *c)
{
	json_object_put(c->history);
	c->history = json_object_new_array();
	c->gen++;
	c->route = (enum route)sk->routes[(c->id + c->gen) % sk->nroutes];
	c->turns = 0;
	snprintf(c->key, sizeof(c->key), "soak-%d-%d", c->id, c->gen);
}

static enum fault
pick_fault(struct conv *c)
{
	int total = 0, f, r;

	for (f = 0; f < F_COUNT; f++)
		total += fault_defs[f].weight;
	r = (int)(rand_r(&c->rnd) % (unsigned)total);
	for (f = 0; f < F_COUNT; f++) {
		if (r < fault_defs[f].weight)
			return (enum fault)f;
		r -= fault_defs[f].weight;
	}
	return F_NONE;
}

struct text {
	char	*p;
	size_t	 len;
};

static void
text_add(struct text *t, const char *s)
{
	size_t n = strlen(s);

	if (t->len + n > MAX_TEXT)
		return;
	t->p = realloc(t->p, t->len + n + 1);
	memcpy(t->p + t->len, s, n + 1);
	t->len += n;
}

/*
 * Every stamp in text is ours: 1; a stamp of another turn: 0.
 * Stamps are "@T" + 8 hex digits + "@".
 */
static int
only_own_stamps(const char *text, const char *stamp)
{
	const char *p = text;
	int i;

	while (p != NULL && (p = strstr(p, "@T")) != NULL) {
		for (i = 0; i < 8 && isxdigit((unsigned char)p[2 + i]); i++)
			;
		if (i == 8 && p[10] == '@' && strncmp(p, stamp, 11) != 0)
			return 0;
		p += 2;
	}
	return 1;
}

/* The text of every output_text part of a response's output. */
static void
response_text(json_object *resp, struct text *t)
{
	json_object *out, *item, *content, *part;
	const char *s;
	size_t i, j;

	if (resp == NULL || !json_object_object_get_ex(resp, "output", &out) ||
	    !json_object_is_type(out, json_type_array))
		return;
	for (i = 0; i < json_object_array_length(out); i++) {
		item = json_object_array_get_idx(out, i);
		if (!json_object_object_get_ex(item, "content", &content) ||
		    !json_object_is_type(content, json_type_array))
			continue;
		for (j = 0; j < json_object_array_length(content); j++) {
			part = json_object_array_get_idx(content, j);
			if ((s = jstr(part, "text")) != NULL)
				text_add(t, s);
		}
	}
}

/* {"role":role,"content":text}: a chat or messages history entry. */
static json_object *
plain_msg(const char *role, const char *text)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string(text));
	return m;
}

/*
 * A completed turn joins the history as its API's client resends it: the
 * user message, then the output items (responses) or the answer's text.
 */
static void
history_add(struct conv *c, const char *text, json_object *answer)
{
	json_object *out, *item, *resp = answer;
	size_t i;

	if (c->route != R_RESPONSES) {
		json_object_array_add(c->history, plain_msg("user", text));
		json_object_array_add(c->history, plain_msg("assistant",
		    json_object_get_string(answer)));
		return;
	}
	json_object_array_add(c->history, tl_msg("user", text));
	if (!json_object_object_get_ex(resp, "output", &out) ||
	    !json_object_is_type(out, json_type_array))
		return;
	for (i = 0; i < json_object_array_length(out); i++) {
		item = NULL;
		if (json_object_deep_copy(json_object_array_get_idx(out, i), &item,
		    NULL) != 0 || item == NULL)
			continue;
		json_object_object_del(item, "id");
		json_object_object_del(item, "status");
		json_object_array_add(c->history, item);
	}
}

/* Counts an error by status and code (or type): "503 no_account". */
static void
tally_error(struct soak *sk, int status, const char *code)
{
	char what[64];
	int i;

	snprintf(what, sizeof(what), "%d %s", status, code ? code : "-");
	pthread_mutex_lock(&sk->mu);
	for (i = 0; i < sk->ncodes && strcmp(sk->codes[i].what, what) != 0; i++)
		;
	if (i == sk->ncodes && sk->ncodes < (int)(sizeof(sk->codes) / sizeof(sk->codes[0])))
		strcpy(sk->codes[sk->ncodes++].what, what);
	if (i < sk->ncodes)
		sk->codes[i].n++;
	pthread_mutex_unlock(&sk->mu);
}

/*
 * An error object {"message":"..",..} (an HTTP error body's "error", or
 * an error event's): 1, and it is tallied under status and its code.
 */
static int
clear_error_obj(struct soak *sk, int status, json_object *e)
{
	const char *code;

	if (e == NULL || !json_object_is_type(e, json_type_object) ||
	    jstr(e, "message") == NULL)
		return 0;
	code = jstr(e, "code") ? jstr(e, "code") : jstr(e, "type");
	tally_error(sk, status, code);
	return 1;
}

static int
clear_error(struct soak *sk, int status, const char *body)
{
	json_object *o = body ? json_tokener_parse(body) : NULL, *e = NULL;
	int ok;

	if (o != NULL)
		json_object_object_get_ex(o, "error", &e);
	ok = clear_error_obj(sk, status, e);
	json_object_put(o);
	return ok;
}

static int
remaining_ms(int64_t deadline)
{
	int64_t left = deadline - tl_now_ms();

	return left > 1 ? (int)left : 1;
}

/*
 * The checks of a complete answer: its final text (the response object's
 * on /v1/responses, else NULL: the streamed deltas are all there is) and
 * the deltas.  O_COMPLETED or the violation.
 */
static enum outcome
check_completed(json_object *resp, const struct text *deltas, const char *stamp,
    char *why, size_t whylen)
{
	struct text t = { 0 };
	enum outcome o = O_COMPLETED;

	if (resp != NULL)
		response_text(resp, &t);
	else if (deltas->p != NULL)
		text_add(&t, deltas->p);
	if (t.p == NULL || strstr(t.p, stamp) == NULL) {
		snprintf(why, whylen, "completed text lacks %s: \"%.80s\"", stamp,
		    t.p ? t.p : "");
		o = O_STAMP;
	} else if (!only_own_stamps(t.p, stamp) ||
	    (deltas->p != NULL && !only_own_stamps(deltas->p, stamp))) {
		snprintf(why, whylen, "text of another turn in %s: \"%.80s\"", stamp, t.p);
		o = O_FOREIGN;
	} else if (deltas->p != NULL && strcmp(deltas->p, t.p) != 0) {
		snprintf(why, whylen, "deltas differ from the completed text (%s)", stamp);
		o = O_STAMP;
	}
	free(t.p);
	return o;
}

static const char *
event_type(const char *ev, json_object *data)
{
	if (ev != NULL && strcmp(ev, "message") != 0)
		return ev;
	return jstr(data, "type");
}

static int
is_terminal(const char *type)
{
	return type != NULL && (strcmp(type, "response.completed") == 0 ||
	    strcmp(type, "response.failed") == 0 ||
	    strcmp(type, "response.incomplete") == 0 || strcmp(type, "error") == 0);
}

/* The request body of a turn on the conversation's route; headers too. */
static json_object *
turn_body(struct soak *sk, struct conv *c, enum fault f, int stream, const char *text,
    char *headers, size_t hlen)
{
	json_object *body = json_object_new_object(), *input, *sim;
	size_t i;

	headers[0] = '\0';
	input = json_object_new_array();
	if (c->route == R_CHAT)
		json_object_array_add(input, plain_msg("system", sk->instructions));
	for (i = 0; i < json_object_array_length(c->history); i++)
		json_object_array_add(input,
		    json_object_get(json_object_array_get_idx(c->history, i)));
	json_object_array_add(input, c->route == R_RESPONSES ? tl_msg("user", text) :
	    plain_msg("user", text));
	json_object_object_add(body, "model",
	    json_object_new_string(route_defs[c->route].model));
	switch (c->route) {
	case R_RESPONSES:	/* as the Codex CLI: instructions and a cache key */
		json_object_object_add(body, "instructions",
		    json_object_new_string(sk->instructions));
		json_object_object_add(body, "prompt_cache_key", json_object_new_string(c->key));
		json_object_object_add(body, "input", input);
		if (f == F_SLOW_READER) {
			sim = json_object_new_object();
			json_object_object_add(sim, "deltas", json_object_new_int(SLOW_DELTAS));
			json_object_object_add(body, "sim", sim);
		}
		break;
	case R_CHAT:		/* the system message leads; a session header */
		json_object_object_add(body, "messages", input);
		snprintf(headers, hlen, "session_id: %s\r\n", c->key);
		break;
	default:		/* as Claude Code: its session header */
		json_object_object_add(body, "max_tokens", json_object_new_int(4096));
		json_object_object_add(body, "system", json_object_new_string(sk->instructions));
		json_object_object_add(body, "messages", input);
		snprintf(headers, hlen, "x-claude-code-session-id: %s\r\n"
		    "anthropic-version: 2023-06-01\r\n", c->key);
		break;
	}
	json_object_object_add(body, "stream", json_object_new_boolean(stream));
	return body;
}

/* The text of a non-streamed chat or messages answer, into t. */
static void
plain_answer_text(enum route rt, json_object *ans, struct text *t)
{
	json_object *v, *arr;
	size_t i;

	if (rt == R_CHAT) {
		if (json_object_object_get_ex(ans, "choices", &arr) &&
		    json_object_is_type(arr, json_type_array) &&
		    (v = json_object_array_get_idx(arr, 0)) != NULL &&
		    json_object_object_get_ex(v, "message", &v) && jstr(v, "content"))
			text_add(t, jstr(v, "content"));
		return;
	}
	if (json_object_object_get_ex(ans, "content", &arr) &&
	    json_object_is_type(arr, json_type_array))
		for (i = 0; i < json_object_array_length(arr); i++)
			if ((v = json_object_array_get_idx(arr, i)) != NULL && jstr(v, "text"))
				text_add(t, jstr(v, "text"));
}

enum ev_kind { EV_OTHER, EV_DELTA, EV_DONE, EV_FAIL };

/*
 * One streamed event of a route: a text delta (*delta borrowed from
 * data), the successful end (responses: response.completed; chat: [DONE];
 * messages: message_stop), a failure (*err: its error object), or other.
 */
static enum ev_kind
classify(enum route rt, const char *ev, const char *d, json_object *data,
    const char **delta, json_object **err)
{
	const char *type = event_type(ev, data);
	json_object *v = NULL, *arr;

	*delta = NULL;
	*err = NULL;
	switch (rt) {
	case R_RESPONSES:
		if (type != NULL && strcmp(type, "response.output_text.delta") == 0) {
			*delta = jstr(data, "delta");
			return EV_DELTA;
		}
		if (type != NULL && strcmp(type, "response.completed") == 0)
			return EV_DONE;
		if (!is_terminal(type))
			return EV_OTHER;
		/* response.failed has response.error; error events carry the
		 * error themselves or under "error" */
		if (json_object_object_get_ex(data, "response", &v))
			json_object_object_get_ex(v, "error", err);
		else if (!json_object_object_get_ex(data, "error", err))
			*err = data;
		return EV_FAIL;
	case R_CHAT:
		if (d != NULL && strcmp(d, "[DONE]") == 0)
			return EV_DONE;
		if (json_object_object_get_ex(data, "error", err))
			return EV_FAIL;
		if (json_object_object_get_ex(data, "choices", &arr) &&
		    json_object_is_type(arr, json_type_array) &&
		    (v = json_object_array_get_idx(arr, 0)) != NULL &&
		    json_object_object_get_ex(v, "delta", &v) &&
		    (*delta = jstr(v, "content")) != NULL)
			return EV_DELTA;
		return EV_OTHER;
	default:
		if (type != NULL && strcmp(type, "message_stop") == 0)
			return EV_DONE;
		if (type != NULL && strcmp(type, "error") == 0) {
			json_object_object_get_ex(data, "error", err);
			return EV_FAIL;
		}
		if (type != NULL && strcmp(type, "content_block_delta") == 0 &&
		    json_object_object_get_ex(data, "delta", &v) &&
		    (*delta = jstr(v, "text")) != NULL)
			return EV_DELTA;
		return EV_OTHER;
	}
}

/*
 * One turn.  *answer, for a complete one: the response object on
 * /v1/responses, else the answer's text as a JSON string.
 */
static enum outcome
run_turn(struct soak *sk, struct conv *c, enum fault f, int stream, int *status,
    json_object **completed, const char *stamp, const char *text,
    char *why, size_t whylen)
{
	struct tl_conn_opts opts = { 0 };
	int64_t deadline = tl_now_ms() + (int64_t)sk->o.deadline * 1000;
	json_object *body, *data, *resp, *err;
	struct text deltas = { 0 };
	struct tl_response r;
	struct tl_stream *s;
	enum outcome o = O_TRUNCATED;
	enum ev_kind kind;
	const char *b, *delta;
	char *ev, *d, headers[256];
	int rc, terminal = 0, ndeltas = 0;

	*status = 0;
	*completed = NULL;
	body = turn_body(sk, c, f, stream, text, headers, sizeof(headers));
	b = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	opts.timeout_ms = sk->o.deadline * 1000;
	s = tl_stream_send(&opts, "127.0.0.1", sk->rig.port, "POST",
	    route_defs[c->route].path, headers, b, strlen(b));
	json_object_put(body);
	if (s == NULL) {
		snprintf(why, whylen, "%s: cannot connect or send", stamp);
		return O_NO_ANSWER;
	}
	if (f == F_ABORT_WAITING) {
		tl_msleep(200 + (int)(rand_r(&c->rnd) % 1500));
		tl_stream_close(s, 1);
		return O_ABORTED;
	}
	if (tl_stream_head(s) < 0) {
		tl_stream_close(s, 0);
		if (tl_now_ms() >= deadline) {
			snprintf(why, whylen, "%s: no response head within %d s", stamp,
			    sk->o.deadline);
			return O_HANG;
		}
		snprintf(why, whylen, "%s: connection closed without a response", stamp);
		return O_NO_ANSWER;
	}
	*status = tl_stream_status(s);
	if (*status != 200 || !stream) {
		if (tl_stream_finish(s, &r) < 0) {
			snprintf(why, whylen, "%s: HTTP %d body broken", stamp, *status);
			return tl_now_ms() >= deadline ? O_HANG : O_TRUNCATED;
		}
		if (*status != 200) {
			o = clear_error(sk, *status, r.body) ? O_HTTP_ERROR : O_BAD_ERROR;
			if (o == O_BAD_ERROR)
				snprintf(why, whylen, "%s: HTTP %d with body \"%.100s\"",
				    stamp, *status, r.body);
		} else if (c->route == R_RESPONSES) {
			resp = tl_response_json(&r);
			o = check_completed(resp, &deltas, stamp, why, whylen);
			if (o == O_COMPLETED)
				*completed = resp;
			else
				json_object_put(resp);
		} else {
			resp = tl_response_json(&r);
			plain_answer_text(c->route, resp, &deltas);
			json_object_put(resp);
			o = check_completed(NULL, &deltas, stamp, why, whylen);
			if (o == O_COMPLETED)
				*completed = json_object_new_string(deltas.p);
			free(deltas.p);
		}
		tl_response_free(&r);
		return o;
	}
	while ((rc = tl_stream_read_event(s, &ev, &d, remaining_ms(deadline))) == 1) {
		data = json_tokener_parse(d);
		kind = classify(c->route, ev, d, data, &delta, &err);
		if (terminal) {
			snprintf(why, whylen, "%s: \"%.60s\" after the terminal event",
			    stamp, d ? d : "");
			o = O_AFTER_TERMINAL;
			terminal = 2;
		} else if (kind == EV_DELTA) {
			if (delta != NULL)
				text_add(&deltas, delta);
			ndeltas++;
		} else if (kind == EV_DONE) {
			json_object *rs = NULL;

			terminal = 1;
			if (c->route == R_RESPONSES)
				json_object_object_get_ex(data, "response", &rs);
			o = check_completed(rs, &deltas, stamp, why, whylen);
			if (o == O_COMPLETED)
				*completed = c->route == R_RESPONSES ? json_object_get(rs) :
				    json_object_new_string(deltas.p);
		} else if (kind == EV_FAIL) {
			terminal = 1;
			o = O_FAILED;
			if (!clear_error_obj(sk, 200, err)) {
				snprintf(why, whylen, "%s: failure event without an error "
				    "message: \"%.80s\"", stamp, d ? d : "");
				o = O_BAD_ERROR;
			}
			if (o == O_FAILED && deltas.p != NULL &&
			    !only_own_stamps(deltas.p, stamp)) {
				snprintf(why, whylen, "text of another turn before %s's "
				    "failure: \"%.80s\"", stamp, deltas.p);
				o = O_FOREIGN;
			}
		}
		json_object_put(data);
		free(ev);
		free(d);
		if (terminal == 2)
			break;
		if (f == F_ABORT_STREAM && ndeltas > 0 && !terminal) {
			tl_stream_close(s, 1);
			free(deltas.p);
			return O_ABORTED;
		}
		if (f == F_SLOW_READER)
			tl_msleep(SLOW_READ_MS);
	}
	tl_stream_close(s, 0);
	free(deltas.p);
	if (terminal == 2)
		return o;
	if (rc < 0 && tl_now_ms() >= deadline) {
		snprintf(why, whylen, "%s: no end within %d s (%s)", stamp, sk->o.deadline,
		    terminal ? "after its terminal event" : "no terminal event");
		json_object_put(*completed);
		*completed = NULL;
		return O_HANG;
	}
	if (rc < 0 || !terminal) {
		snprintf(why, whylen, "%s: stream ended %s", stamp, terminal ?
		    "without its final chunk" : rc < 0 ? "broken, no terminal event" :
		    "without a terminal event");
		json_object_put(*completed);
		*completed = NULL;
		return O_TRUNCATED;
	}
	return o;
}

static void *
conv_thread(void *arg)
{
	struct soak *sk = arg;
	struct conv c = { 0 };
	json_object *completed;
	enum outcome o;
	enum fault f;
	unsigned stampno;
	char stamp[16], text[160], why[300];
	int stream, status;
	static int next_id;

	pthread_mutex_lock(&sk->mu);
	c.id = next_id++;
	pthread_mutex_unlock(&sk->mu);
	c.rnd = sk->o.seed * 7919u + (unsigned)c.id;
	conv_reset(sk, &c);
	while (!sk->stop) {
		f = pick_fault(&c);
		stream = f == F_SLOW_READER || f == F_ABORT_STREAM ||
		    rand_r(&c.rnd) % 5 != 0;
		pthread_mutex_lock(&sk->mu);
		stampno = ++sk->next_stamp;
		sk->injected[f]++;
		pthread_mutex_unlock(&sk->mu);
		snprintf(stamp, sizeof(stamp), "@T%08x@", stampno);
		if (fault_defs[f].marker != NULL)
			snprintf(text, sizeof(text), "%s c%d t%d [[sim:%s]] go on", stamp,
			    c.id, c.turns, fault_defs[f].marker);
		else
			snprintf(text, sizeof(text), "%s c%d t%d go on", stamp, c.id, c.turns);
		why[0] = '\0';
		o = run_turn(sk, &c, f, stream, &status, &completed, stamp, text, why,
		    sizeof(why));
		if (completed != NULL)
			history_add(&c, text, completed);
		json_object_put(completed);
		pthread_mutex_lock(&sk->mu);
		sk->turns++;
		sk->matrix[f][o]++;
		sk->by_route[c.route][o]++;
		if (status > 0 && status < 600)
			sk->statuses[status]++;
		pthread_mutex_unlock(&sk->mu);
		if (f == F_TOKEN_EXPIRED || f == F_USAGE_LIMIT || status == 429 ||
		    status == 503)
			sk->accounts_dirty = 1;
		/* A polite client backs off after "try later". */
		if (status == 429 || status == 503)
			tl_msleep(100 + (int)(rand_r(&c.rnd) % 200));
		if (o >= O_FIRST_VIOLATION)
			note(sk, "%s [%s, fault %s, %s]: %s", outcome_names[o],
			    route_defs[c.route].name, fault_defs[f].name,
			    stream ? "stream" : "non-stream", why);
		if (++c.turns >= CONV_TURNS)
			conv_reset(sk, &c);
	}
	json_object_put(c.history);
	return NULL;
}

/* ---- the report ------------------------------------------------------- */

static long long
violations(struct soak *sk)
{
	long long n = sk->end_violations;
	int f, o;

	for (f = 0; f < F_COUNT; f++)
		for (o = O_FIRST_VIOLATION; o < O_COUNT; o++)
			n += sk->matrix[f][o];
	return n;
}

static void
report(struct soak *sk, double secs)
{
	long long col[O_COUNT] = { 0 };
	int f, o, s;

	printf("\nturns: %lld in %.0f s (%.1f/s), %lld with a fault injected, "
	    "%lld worker kills, %lld account resets\n", sk->turns, secs,
	    secs > 0 ? (double)sk->turns / secs : 0.0,
	    sk->turns - sk->injected[F_NONE], sk->kills, sk->account_resets);
	printf("\n%-20s %8s", "fault \\ outcome", "turns");
	for (o = 0; o < O_COUNT; o++)
		printf(" %*s", o < O_FIRST_VIOLATION ? 12 : (int)strlen(outcome_names[o]),
		    outcome_names[o]);
	printf("\n");
	for (f = 0; f < F_COUNT; f++) {
		long long row = 0;

		for (o = 0; o < O_COUNT; o++) {
			row += sk->matrix[f][o];
			col[o] += sk->matrix[f][o];
		}
		printf("%-20s %8lld", fault_defs[f].name, row);
		for (o = 0; o < O_COUNT; o++)
			printf(" %*lld", o < O_FIRST_VIOLATION ? 12 : (int)strlen(outcome_names[o]),
			    sk->matrix[f][o]);
		printf("\n");
	}
	printf("%-20s %8lld", "all", sk->turns);
	for (o = 0; o < O_COUNT; o++)
		printf(" %*lld", o < O_FIRST_VIOLATION ? 12 : (int)strlen(outcome_names[o]),
		    col[o]);
	printf("\n");
	for (f = 0; f < sk->nroutes; f++) {
		long long row = 0;
		int rt = sk->routes[f];

		for (o = 0; o < O_COUNT; o++)
			row += sk->by_route[rt][o];
		printf("%-20s %8lld", route_defs[rt].name, row);
		for (o = 0; o < O_COUNT; o++)
			printf(" %*lld", o < O_FIRST_VIOLATION ? 12 : (int)strlen(outcome_names[o]),
			    sk->by_route[rt][o]);
		printf("\n");
	}
	printf("\nHTTP statuses:");
	for (s = 0; s < 600; s++)
		if (sk->statuses[s] > 0)
			printf(" %d:%lld", s, sk->statuses[s]);
	printf("\nerrors (status, code; 200: a failure event in the stream):\n");
	for (s = 0; s < sk->ncodes; s++)
		printf("  %-48s %lld\n", sk->codes[s].what, sk->codes[s].n);
	for (s = 0; s < sk->nnotes; s++)
		printf("VIOLATION: %s\n", sk->notes[s]);
}

/* ---- the end checks ---------------------------------------------------- */

/* Polls until the simulator's open connections equal pooled_open. */
static int
wait_pool_matches(struct soak *sk, long long *simn, long long *pooled)
{
	int64_t end = tl_now_ms() + QUIESCE_MS;

	for (;;) {
		*pooled = status_num(sk, "pooled_open");
		*simn = sim_open(sk);
		if (*pooled >= 0 && *simn == *pooled)
			return 0;
		if (tl_now_ms() >= end)
			return -1;
		tl_msleep(200);
	}
}

static void
end_checks(struct soak *sk, const struct usage *base, const struct usage *warm)
{
	struct usage after;
	long long simn, pooled, inflight;
	long ref;
	int64_t end;
	int listed, active;
	char *log;

	if (!tl_alive(sk->rig.daemon)) {
		fail_end(sk, "codexpoold died; see %s", sk->rig.log);
		return;
	}
	end = tl_now_ms() + QUIESCE_MS;
	while ((inflight = status_num(sk, "requests_inflight")) != 0 && tl_now_ms() < end)
		tl_msleep(200);
	if (inflight != 0)
		fail_end(sk, "requests_inflight is %lld with every client gone", inflight);

	{
		static const char *const keys[] = { "requests_total", "requests_failed",
		    "retries", "account_moves", "client_aborts", "worker_restarts",
		    "retried_on_respawn", "worker_liveness_kills", "worker_conns_opened",
		    "lru_evictions", NULL };
		json_object *st = ctl_json(sk, "status", NULL, NULL);
		int i;

		printf("codexpoold:");
		for (i = 0; keys[i] != NULL; i++)
			printf(" %s %lld", keys[i], jnum(st, keys[i]));
		printf("\n");
		json_object_put(st);
	}

	/* Leaked upstream connections: the simulator and the pool agree. */
	if (wait_pool_matches(sk, &simn, &pooled) < 0)
		fail_end(sk, "upstream connections: the simulator has %lld open, "
		    "pooled_open is %lld", simn, pooled);
	printf("upstream connections at the end: simulator %lld open, pooled_open %lld\n",
	    simn, pooled);

	/* Accounts: all listed, all active once the soak's locks are reset. */
	end = tl_now_ms() + QUIESCE_MS;
	do {
		listed = accounts_check(sk, 1, &active);
		if (listed == sk->o.accounts && active == listed)
			break;
		tl_msleep(500);
	} while (tl_now_ms() < end);
	if (listed != sk->o.accounts || active != listed)
		fail_end(sk, "accounts: %d listed of %d, %d active", listed,
		    sk->o.accounts, active);
	printf("accounts: %d listed of %d, %d active\n", listed, sk->o.accounts, active);

	/* Resources, with the pool empty as at the baseline. */
	evict_all(sk);
	end = tl_now_ms() + QUIESCE_MS;
	while ((status_num(sk, "pooled_open") != 0 || sim_open(sk) != 0) &&
	    tl_now_ms() < end)
		tl_msleep(200);
	end = tl_now_ms() + QUIESCE_MS;
	while ((measure(sk, &after) < 0 || after.fds > base->fds ||
	    after.nworkers != sk->o.workers) && tl_now_ms() < end)
		tl_msleep(200);
	printf("after eviction: simulator %lld open, pooled_open %lld; "
	    "fds %d (baseline %d) over the supervisor and %d workers\n",
	    sim_open(sk), status_num(sk, "pooled_open"), after.fds, base->fds,
	    after.nworkers);
	if (after.nworkers != sk->o.workers)
		fail_end(sk, "workers: %d up of %d after the kills", after.nworkers,
		    sk->o.workers);
	if (after.fds > base->fds)
		fail_end(sk, "fds: %d after the soak, %d at the baseline", after.fds,
		    base->fds);
	/* Memory: allocators keep what they once used, so the reference is
	 * the larger of the start and a point under load; more than that by a
	 * quarter plus the slack is growth a leak would show. */
	ref = base->pss_kb > warm->pss_kb ? base->pss_kb : warm->pss_kb;
	printf("PSS: %ld kB at the start, %ld kB under load (at a quarter of the run), "
	    "%ld kB after (supervisor alone: %ld, %ld, %ld kB)\n", base->pss_kb,
	    warm->pss_kb, after.pss_kb, base->sup_pss_kb, warm->sup_pss_kb,
	    after.sup_pss_kb);
	if (after.pss_kb > ref + ref / 4 + (long)sk->o.pss_slack_mb * 1024)
		fail_end(sk, "PSS: %ld kB after the soak, %ld kB as reference "
		    "(allowed: +25%% + %d MB)", after.pss_kb, ref, sk->o.pss_slack_mb);

	/* A clean stop, and no sanitizer report anywhere. */
	if (tl_stop(sk->rig.daemon, SIGTERM, CTL_WAIT_MS) != 0)
		fail_end(sk, "codexpoold did not exit 0 on SIGTERM; see %s", sk->rig.log);
	sk->rig.daemon = 0;
	if ((log = tl_read_file(sk->rig.log, NULL)) != NULL) {
		if (strstr(log, "Sanitizer") != NULL || strstr(log, "runtime error:") != NULL)
			fail_end(sk, "a sanitizer report in %s", sk->rig.log);
		free(log);
	}
}

/* The last n lines of a log, for a failed run's output (CI keeps no files). */
static void
print_tail(const char *path, int n)
{
	size_t len;
	char *text = tl_read_file(path, &len), *p;

	if (text == NULL)
		return;
	for (p = text + len; p > text; p--)
		if (p[-1] == '\n' && p != text + len && --n < 0)
			break;
	printf("----- the end of %s\n%s", path, p);
	free(text);
}

/* ---- main ----------------------------------------------------------- */

static void
usage(void)
{
	fprintf(stderr, "usage: codexpool-bench soak [-d SECONDS] [-c CONVS] [-k KILL_EVERY]\n"
	    "                            [-T TURN_DEADLINE] [-a ACCOUNTS] [-w WORKERS]\n"
	    "                            [-A CONN_AGE] [-P PSS_SLACK_MB] [-s SEED]\n"
	    "                            [-R responses,chat,messages]\n");
	exit(2);
}

static int
num_arg(const char *s, int min, int max)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < min || v > max)
		usage();
	return (int)v;
}

/* -R responses,chat,messages */
static void
parse_routes(struct soak *sk, const char *list)
{
	char buf[128], *p, *save = NULL;
	int r;

	snprintf(buf, sizeof(buf), "%s", list);
	sk->nroutes = 0;
	for (p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		for (r = 0; r < R_COUNT && strcmp(route_defs[r].name, p) != 0; r++)
			;
		if (r == R_COUNT || sk->nroutes == R_COUNT)
			usage();
		sk->routes[sk->nroutes++] = r;
	}
	if (sk->nroutes == 0)
		usage();
}

/* Clean turns on every route, so lazily made state is there before the
 * baseline. */
static void
warm_up(struct soak *sk)
{
	static const char stamp[] = "@Tffffffff@", text[] = "@Tffffffff@ warm up";
	struct conv c = { 0 };
	json_object *completed;
	char why[300];
	int r, k, i, status;

	/* per route two conversations of two turns, streamed and not */
	for (r = 0; r < sk->nroutes; r++)
		for (k = 0; k < 2; k++) {
			c.id = 1000 + 2 * r + k;
			conv_reset(sk, &c);
			c.route = (enum route)sk->routes[r];
			for (i = 0; i < 2; i++) {
				if (run_turn(sk, &c, F_NONE, i == 0, &status, &completed,
				    stamp, text, why, sizeof(why)) != O_COMPLETED)
					soak_die("warm-up turn on %s failed: %s (HTTP %d)",
					    route_defs[c.route].name, why, status);
				history_add(&c, text, completed);
				json_object_put(completed);
			}
		}
	json_object_put(c.history);
}

int
cmd_soak(int argc, char **argv)
{
	struct soak *sk = calloc(1, sizeof(*sk));
	struct usage base, warm = { 0 };
	pthread_t *th;
	pid_t pids[64];
	int64_t t0, end, next_kill, next_print, next_accounts, warm_at;
	long long bad;
	int ch, i, n, active;

	if (sk == NULL)
		return 1;
	sk->o = (struct soak_opts){ .duration = 600, .convs = 12, .kill_every = 40,
	    .deadline = 60, .accounts = 4, .workers = 2, .conn_age = 30,
	    .pss_slack_mb = 64, .seed = (unsigned)time(NULL) };
	optind = 1;
	while ((ch = getopt(argc, argv, "d:c:k:T:a:w:A:P:s:R:")) != -1) {
		switch (ch) {
		case 'd': sk->o.duration = num_arg(optarg, 1, 7 * 86400); break;
		case 'c': sk->o.convs = num_arg(optarg, 1, 256); break;
		case 'k': sk->o.kill_every = num_arg(optarg, 0, 86400); break;
		case 'T': sk->o.deadline = num_arg(optarg, 15, 3600); break;
		case 'a': sk->o.accounts = num_arg(optarg, 1, 32); break;
		case 'w': sk->o.workers = num_arg(optarg, 1, 16); break;
		case 'A': sk->o.conn_age = num_arg(optarg, 0, 86400); break;
		case 'P': sk->o.pss_slack_mb = num_arg(optarg, 0, 65536); break;
		case 's': sk->o.seed = (unsigned)num_arg(optarg, 0, 1 << 30); break;
		case 'R': parse_routes(sk, optarg); break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (sk->nroutes == 0)
		parse_routes(sk, "responses,chat,messages");
	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&sk->mu, NULL);
	srand(sk->o.seed);
	printf("soak: %d s, %d conversations, %d accounts, %d workers, a worker "
	    "kill -9 every %d s, turn deadline %d s, sim --max-conn-age %d, seed %u\n",
	    sk->o.duration, sk->o.convs, sk->o.accounts, sk->o.workers, sk->o.kill_every,
	    sk->o.deadline, sk->o.conn_age, sk->o.seed);
	soak_start(sk);
	warm_up(sk);
	evict_all(sk);
	end = tl_now_ms() + QUIESCE_MS;
	while ((status_num(sk, "pooled_open") != 0 || sim_open(sk) != 0) &&
	    tl_now_ms() < end)
		tl_msleep(100);
	if (measure(sk, &base) < 0)
		soak_die("cannot read /proc of the daemon");
	printf("baseline: fds %d, PSS %ld kB (supervisor + %d workers)\n", base.fds,
	    base.pss_kb, base.nworkers);

	th = calloc((size_t)sk->o.convs, sizeof(*th));
	for (i = 0; i < sk->o.convs; i++)
		if (pthread_create(&th[i], NULL, conv_thread, sk) != 0)
			soak_die("pthread_create failed");
	t0 = tl_now_ms();
	end = t0 + (int64_t)sk->o.duration * 1000;
	next_kill = sk->o.kill_every > 0 ? t0 + (int64_t)sk->o.kill_every * 1000 : -1;
	next_print = t0 + 10000;
	warm_at = t0 + (int64_t)sk->o.duration * 250;
	next_accounts = t0;
	while (tl_now_ms() < end) {
		tl_msleep(100);
		if (!tl_alive(sk->rig.daemon))
			break;
		/* The soak's own 401/429 faults lock accounts; an operator resets. */
		if (sk->accounts_dirty || tl_now_ms() >= next_accounts) {
			sk->accounts_dirty = 0;
			accounts_check(sk, 1, &active);
			next_accounts = tl_now_ms() + 2000;
		}
		if (next_kill > 0 && tl_now_ms() >= next_kill) {
			if ((n = worker_pids(sk, pids, 64)) > 0 &&
			    kill(pids[rand() % n], SIGKILL) == 0)
				sk->kills++;
			next_kill += (int64_t)sk->o.kill_every * 1000;
		}
		if (warm_at > 0 && tl_now_ms() >= warm_at && measure(sk, &warm) == 0)
			warm_at = 0;
		if (tl_now_ms() >= next_print) {
			pthread_mutex_lock(&sk->mu);
			bad = violations(sk);
			printf("  %3llds: %lld turns, %lld violations\n",
			    (long long)(tl_now_ms() - t0) / 1000, sk->turns, bad);
			pthread_mutex_unlock(&sk->mu);
			next_print += 10000;
		}
	}
	sk->stop = 1;
	for (i = 0; i < sk->o.convs; i++)
		pthread_join(th[i], NULL);
	free(th);
	report(sk, (double)(tl_now_ms() - t0) / 1000.0);
	printf("\n");
	end_checks(sk, &base, &warm);
	bad = violations(sk);
	printf("\noracle: %s (%lld violations)\n", bad == 0 ? "PASS" : "FAIL", bad);
	if (sk->rig.daemon > 0)
		tl_stop(sk->rig.daemon, SIGTERM, CTL_WAIT_MS);
	tl_sim_stop(&sk->rig.sim);
	if (bad == 0)
		tl_rmrf(sk->rig.dir);
	else {
		print_tail(sk->rig.log, 40);
		print_tail(sk->rig.sim.log, 20);
		printf("logs kept in %s\n", sk->rig.dir);
	}
	free(sk->rig.dir);
	free(sk->instructions);
	pthread_mutex_destroy(&sk->mu);
	free(sk);
	return bad == 0 ? 0 : 1;
}
