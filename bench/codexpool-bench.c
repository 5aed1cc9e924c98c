/*
 * codexpool-bench: the demo and the benchmarks, on loopback.
 *
 *   codexpool-bench demo
 *	starts codexpool-sim and codexpoold, drives a five-turn conversation
 *	through the daemon, prints each turn's cache use and then
 *	`codexpoolctl status`.
 *
 *   codexpool-bench cache [-c CONVS] [-t TURNS] [-b BACKENDS] [-k KIB]
 *	C conversations x T turns of stateless clients (full history every
 *	turn) three ways: through the daemon with the pool on, with it off,
 *	and straight to the simulator on one connection per conversation
 *	(the ideal).  Reports mean and p10 of cached/input for turns >= 2,
 *	upstream connections opened, time to first byte, and the latency the
 *	daemon adds per relayed event.
 *
 *   codexpool-bench latency [-c CONVS] [-t TURNS] [-j CONCURRENCY]
 *			     [-i TOKENS] [-f FIRST_MS] [-d DELTA_MS] [-n DELTAS]
 *			     [-g GAP_MS] [-C CLIENTS] [-r]
 *	The same streamed workload, in one run, through the daemon and
 *	straight to the simulator over HTTP/SSE, driven by stock HTTP
 *	clients (bench/clients: Node's fetch and http module, Python's
 *	http.client) so it sees what real clients see, delayed ACKs
 *	included.  Reports time to first event, per-event relay latency
 *	(arrival minus the simulator's sim_sent_us), turn time, turns with
 *	an inter-event gap of GAP_MS or more, and daemon minus direct.
 *	Each client runs the direct pass first (-r: the daemon's).
 *
 *   codexpool-bench routes [-c CONVS] [-t TURNS] [-b BACKENDS] [-i TOKENS]
 *			    [-p REPLY_BYTES] [-R responses,chat,messages]
 *	Stateless clients (full history every turn, ~TOKENS of instructions)
 *	on /v1/responses, /v1/chat/completions and /v1/messages, each once
 *	with implicit_resume = yes and once with no (a fresh simulator and
 *	daemon each).  Reports the cached share (turns >= 2), upstream
 *	connections, and the bytes of response.create the simulator received
 *	per turn, and the ratio of bytes without and with implicit resume.
 *	-p pads every answer to REPLY_BYTES (the simulator's --reply-bytes).
 *
 *   codexpool-bench ws [-c CONVS] [-t TURNS] [-j CONCURRENCY] [-k KIB]
 *			[-d DELTA_MS] [-n DELTAS]
 *	Codex-CLI-shaped WebSocket clients (one socket per conversation,
 *	turn 1 in full, then previous_response_id and only the new item), in
 *	one run straight to the simulator and through the daemon's client
 *	WebSocket.  Reports the cached share (turns >= 2), upstream
 *	connections opened, time to the first output event and per-event
 *	relay latency of output events (arrival minus sim_sent_us), p50 and
 *	p99, and daemon minus direct.
 *
 *   codexpool-bench soak [-d SECONDS] [-c CONVS] [-k KILL_EVERY] [-T DEADLINE]
 *			  [-a ACCOUNTS] [-w WORKERS] [-A CONN_AGE] [-P PSS_SLACK_MB]
 *			  [-s SEED] [-R responses,chat,messages]
 *	The fault soak with an oracle (bench/soak.c): concurrent
 *	conversations on every route with faults injected at random, every
 *	turn checked; exit status 1 on any violation.
 *
 * Everything it starts lives in a private temp dir and is stopped at exit.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "rig.h"
#include "scale.h"
#include "soak.h"
#include "testlib.h"

#define WAIT_MS	30000

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* The rig (bench/rig.c) with the two workers every mode here assumes. */
static void
start(struct rig *s, const char *sim_args, const char *conf_extra)
{
	char conf[2048];

	snprintf(conf, sizeof(conf), "workers = 2\n%s", conf_extra ? conf_extra : "");
	rig_start(s, NULL, false, sim_args, conf);
}

static long long
sim_connections(struct rig *s)
{
	json_object *st = tl_sim_state(&s->sim), *v;
	long long n = -1;

	if (st && json_object_object_get_ex(st, "connections_total", &v))
		n = json_object_get_int64(v);
	json_object_put(st);
	return n;
}

/* ---- one turn of a stateless client ----------------------------------- */

struct turn_result {
	double	ratio;		/* cached / input */
	double	ttfb;		/* seconds to the first event */
	double	total;		/* seconds to the end of the stream */
	int	events;
};

/* Through the daemon: a streamed POST, history appended with the reply. */
static int
turn_http(struct rig *s, json_object *history, const char *instructions,
    const char *key, struct turn_result *tr)
{
	struct tl_req r = { .instructions = instructions, .prompt_cache_key = key,
	    .input = history, .stream = 1 };
	struct tl_stream *st;
	struct tl_usage u;
	char *body = tl_req_http(&r), *ev = NULL, *data = NULL, *sse = NULL;
	size_t ssel = 0;
	double t0 = now_s();
	int rc;

	memset(tr, 0, sizeof(*tr));
	st = tl_stream_open(NULL, "127.0.0.1", s->port, "POST", "/v1/responses", NULL,
	    body, strlen(body));
	free(body);
	if (st == NULL || tl_stream_status(st) != 200) {
		if (st)
			tl_stream_close(st, 0);
		return -1;
	}
	while ((rc = tl_stream_read_event(st, &ev, &data, WAIT_MS)) == 1) {
		size_t dl = strlen(data), el = ev ? strlen(ev) : 0;
		if (tr->events++ == 0)
			tr->ttfb = now_s() - t0;
		sse = realloc(sse, ssel + el + dl + 32);
		ssel += (size_t)sprintf(sse + ssel, "event: %s\ndata: %s\n\n", ev ? ev : "", data);
		free(ev);
		free(data);
		ev = data = NULL;
	}
	tr->total = now_s() - t0;
	tl_stream_close(st, 0);
	if (sse == NULL)
		return -1;
	json_object *done = tl_sse_completed(sse);
	if (done == NULL || tl_usage_of(done, &u) != 0) {
		json_object_put(done);
		free(sse);
		return -1;
	}
	tr->ratio = u.input_tokens ? (double)u.cached_tokens / (double)u.input_tokens : 0;
	json_object_put(done);
	tl_history_add_sse(history, sse);
	free(sse);
	return 0;
}

/* Straight to the simulator over the conversation's own WebSocket. */
static int
turn_ws(struct tl_ws *ws, json_object *history, const char *instructions,
    const char *key, struct turn_result *tr)
{
	struct tl_req r = { .instructions = instructions, .prompt_cache_key = key,
	    .input = history };
	struct tl_usage u;
	enum tl_ws_why why;
	char *req = tl_req_ws(&r), *text;
	json_object *frames = json_object_new_array(), *done;
	double t0 = now_s();

	memset(tr, 0, sizeof(*tr));
	if (tl_ws_send_text(ws, req, strlen(req)) != 0) {
		free(req);
		json_object_put(frames);
		return -1;
	}
	free(req);
	while ((text = tl_ws_recv_text(ws, WAIT_MS, &why)) != NULL) {
		json_object *f = json_tokener_parse(text);
		const char *type;
		free(text);
		if (f == NULL)
			continue;
		if (tr->events++ == 0)
			tr->ttfb = now_s() - t0;
		type = json_object_get_string(json_object_object_get(f, "type"));
		json_object_array_add(frames, f);
		if (type && (strcmp(type, "response.completed") == 0 ||
		    strcmp(type, "response.failed") == 0 || strcmp(type, "error") == 0))
			break;
	}
	tr->total = now_s() - t0;
	done = tl_frames_find(frames, "response.completed");
	if (done == NULL || tl_usage_of(done, &u) != 0) {
		json_object_put(frames);
		return -1;
	}
	tr->ratio = u.input_tokens ? (double)u.cached_tokens / (double)u.input_tokens : 0;
	tl_history_add_output(history, frames);
	json_object_put(frames);
	return 0;
}

/* ---- demo ---------------------------------------------------------------- */

static int
cmd_demo(void)
{
	static const char *questions[] = {
		"What does codexpool do?",
		"Why does a new WebSocket per turn lose the prompt cache?",
		"How many connections does this conversation use?",
		"What happens when the connection is busy?",
		"And when the upstream closes it?",
	};
	struct rig s;
	struct turn_result tr;
	json_object *history = json_object_new_array();
	char *instructions = tl_text(16, 1);
	int i;

	printf("starting codexpool-sim (8 simulated backends) and codexpoold (2 workers)...\n");
	start(&s, "--backends 8 --accounts 1 --delta-delay-ms 20", NULL);
	printf("codexpoold listens on 127.0.0.1:%d, simulator on 127.0.0.1:%d\n\n",
	    s.port, s.sim.port);
	printf("a stateless client sends its full history every turn (prompt_cache_key demo-conversation):\n");
	for (i = 0; i < 5; i++) {
		json_object_array_add(history, tl_msg("user", questions[i]));
		if (turn_http(&s, history, instructions, "demo-conversation", &tr) != 0)
			die("turn %d failed; see %s", i + 1, s.log);
		printf("  turn %d: %-58s cached %5.1f%% of input, first byte after %4.0f ms\n",
		    i + 1, questions[i], tr.ratio * 100, tr.ttfb * 1000);
	}
	printf("\nupstream WebSocket connections opened for 5 turns: %lld\n\n", sim_connections(&s));
	printf("$ codexpoolctl status\n");
	rig_ctl(&s, 1, NULL, "status", NULL);
	printf("$ codexpoolctl show pools\n");
	rig_ctl(&s, 1, NULL, "show", "pools");
	rig_stop(&s);
	json_object_put(history);
	free(instructions);
	return 0;
}

/* ---- cache benchmark -------------------------------------------------- */

struct mode_result {
	const char	*name;
	double		 mean, p10;	/* cached/input, turns >= 2 */
	long long	 connections;
	double		 ttfb_mean;	/* seconds */
	double		 total_mean;	/* seconds per turn */
	double		 events_mean;
};

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
summarize(struct mode_result *m, double *ratios, int n, double ttfb, double total,
    double events, int turns)
{
	double sum = 0;
	int i;

	for (i = 0; i < n; i++)
		sum += ratios[i];
	qsort(ratios, (size_t)n, sizeof(double), cmp_double);
	m->mean = n ? sum / n : 0;
	m->p10 = n ? ratios[n / 10] : 0;
	m->ttfb_mean = ttfb / turns;
	m->total_mean = total / turns;
	m->events_mean = events / turns;
}

static void
run_mode(struct mode_result *m, const char *mode, int convs, int turns, int backends, int kib)
{
	char simargs[128], key[64];
	struct rig s;
	struct turn_result tr;
	json_object **hist = calloc((size_t)convs, sizeof(*hist));
	struct tl_ws **ws = calloc((size_t)convs, sizeof(*ws));
	double *ratios = calloc((size_t)(convs * turns), sizeof(double));
	double ttfb = 0, total = 0, events = 0;
	char **instr = calloc((size_t)convs, sizeof(char *));
	int c, t, n = 0;
	bool direct = strcmp(mode, "direct") == 0;

	snprintf(simargs, sizeof(simargs), "--backends %d --accounts 1 --seed 42", backends);
	start(&s, simargs, strcmp(mode, "pool off") == 0 ? "ws_pool_enabled = no" : NULL);
	m->name = mode;
	for (c = 0; c < convs; c++) {
		hist[c] = json_object_new_array();
		instr[c] = tl_text((size_t)kib, (unsigned)c + 100);
		if (direct) {
			struct tl_account a;
			char *hdr;
			int status = 0;
			tl_sim_account(&s.sim, 1, &a);
			hdr = tl_auth_headers(&a);
			ws[c] = tl_ws_connect("127.0.0.1", s.sim.port, "/backend-api/codex/responses",
			    hdr, NULL, &status);
			free(hdr);
			tl_account_free(&a);
			if (ws[c] == NULL)
				die("direct connect refused (%d)", status);
		}
	}
	/* Interleave conversations turn by turn, as concurrent users would. */
	for (t = 0; t < turns; t++) {
		for (c = 0; c < convs; c++) {
			char q[64];
			snprintf(key, sizeof(key), "bench-conv-%d", c);
			snprintf(q, sizeof(q), "question %d of conversation %d", t + 1, c);
			json_object_array_add(hist[c], tl_msg("user", q));
			if ((direct ? turn_ws(ws[c], hist[c], instr[c], key, &tr) :
			    turn_http(&s, hist[c], instr[c], key, &tr)) != 0)
				die("%s: turn %d of conversation %d failed; see %s", mode, t + 1, c, s.log);
			if (t >= 1)
				ratios[n++] = tr.ratio;
			ttfb += tr.ttfb;
			total += tr.total;
			events += tr.events;
		}
	}
	summarize(m, ratios, n, ttfb, total, events, convs * turns);
	m->connections = sim_connections(&s);
	for (c = 0; c < convs; c++) {
		if (ws[c])
			tl_ws_close(ws[c]);
		json_object_put(hist[c]);
		free(instr[c]);
	}
	rig_stop(&s);
	free(hist);
	free(ws);
	free(ratios);
	free(instr);
}

static int
cmd_cache(int argc, char **argv)
{
	int convs = 8, turns = 6, backends = 8, kib = 16, ch, i;
	struct mode_result m[3];
	static const char *modes[3] = { "pool on", "pool off", "direct" };

	optind = 1;
	while ((ch = getopt(argc, argv, "c:t:b:k:")) != -1) {
		switch (ch) {
		case 'c': convs = atoi(optarg); break;
		case 't': turns = atoi(optarg); break;
		case 'b': backends = atoi(optarg); break;
		case 'k': kib = atoi(optarg); break;
		default: die("usage: codexpool-bench cache [-c CONVS] [-t TURNS] [-b BACKENDS] [-k KIB]");
		}
	}
	if (convs < 1 || turns < 2 || backends < 1 || kib < 1)
		die("need at least 1 conversation, 2 turns, 1 backend, 1 KiB");
	for (i = 0; i < 3; i++)
		run_mode(&m[i], modes[i], convs, turns, backends, kib);
	printf("%d conversations x %d turns, %d simulated backends, %d KiB instructions\n\n",
	    convs, turns, backends, kib);
	printf("| mode | cached/input mean (turns >= 2) | p10 | upstream connections | "
	    "time to first event (ms) | turn time (ms) | events/turn |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (i = 0; i < 3; i++)
		printf("| %s | %.3f | %.3f | %lld | %.2f | %.2f | %.1f |\n", m[i].name, m[i].mean,
		    m[i].p10, m[i].connections, m[i].ttfb_mean * 1000, m[i].total_mean * 1000,
		    m[i].events_mean);
	printf("\nadded latency per relayed event, pool on minus direct: %.1f us\n",
	    (m[0].total_mean - m[2].total_mean) / m[0].events_mean * 1e6);
	return 0;
}

/* ---- latency benchmark ------------------------------------------------ */

#ifndef BENCH_SRCDIR
#define BENCH_SRCDIR	"."
#endif

/* Goals for what the daemon adds over the direct path, in microseconds. */
#define GOAL_TTFT_P50	500
#define GOAL_TTFT_P99	2000
#define GOAL_RELAY_P50	100
#define GOAL_RELAY_P99	1000

struct client_def {
	const char	*name;		/* for -C and the tables */
	const char	*interp;	/* run through PATH */
	const char	*script;	/* under bench/clients/ */
	const char	*api;		/* the script's "api" */
};

static const struct client_def clients[] = {
	{ "node-fetch",	"node",		"latency.mjs",	"fetch" },
	{ "node-http",	"node",		"latency.mjs",	"http" },
	{ "python",	"python3",	"latency.py",	NULL },
};

struct lat_opts {
	int	convs, turns, concurrency, tokens;
	int	first_ms, delta_ms, deltas, gap_ms;
	int	daemon_first;		/* -r: run the daemon's pass first */
	char	clients[128];
};

/* A growing array of samples, in microseconds. */
struct samples {
	double	*v;
	size_t	 n, cap;
};

static void
samples_add(struct samples *s, double x)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		if ((s->v = realloc(s->v, s->cap * sizeof(*s->v))) == NULL)
			die("out of memory");
	}
	s->v[s->n++] = x;
}

/* Nearest-rank percentile (p in 0..100); NAN when empty.  Sorts. */
static double
pct(struct samples *s, double p)
{
	size_t k;

	if (s->n == 0)
		return NAN;
	qsort(s->v, s->n, sizeof(double), cmp_double);
	k = (size_t)ceil(p / 100.0 * (double)s->n);
	return s->v[k > 0 ? k - 1 : 0];
}

struct path_stats {
	struct samples	 ttft, ttft_first, relay, total;
	int		 turns, errors, gap_turns;
	char		 first_error[160];
	double		 ttft50, ttft99, relay50, relay99, total50, total99, first50;
};

static void
stats_free(struct path_stats *p)
{
	free(p->ttft.v);
	free(p->ttft_first.v);
	free(p->relay.v);
	free(p->total.v);
}

static void
stats_collect(struct path_stats *p, json_object *turns, int gap_us)
{
	size_t i, j, n = json_object_array_length(turns);

	memset(p, 0, sizeof(*p));
	for (i = 0; i < n; i++) {
		json_object *t = json_object_array_get_idx(turns, i), *v, *relay;
		int status = 0, turn = 0;

		p->turns++;
		if (json_object_object_get_ex(t, "status", &v))
			status = json_object_get_int(v);
		if (json_object_object_get_ex(t, "turn", &v))
			turn = json_object_get_int(v);
		if (status != 200 || (json_object_object_get_ex(t, "error", &v) &&
		    json_object_get_type(v) == json_type_string)) {
			if (p->errors++ == 0)
				snprintf(p->first_error, sizeof(p->first_error),
				    "HTTP %d: %s", status, json_object_get_type(v) ==
				    json_type_string ? json_object_get_string(v) : "");
			continue;
		}
		/* Turn 1 opens the daemon's upstream connection: its first
		 * event is shown apart from the steady state. */
		v = json_object_object_get(t, "ttft_us");
		samples_add(turn == 0 ? &p->ttft_first : &p->ttft, json_object_get_double(v));
		if (turn > 0)
			samples_add(&p->total, json_object_get_double(
			    json_object_object_get(t, "total_us")));
		if (json_object_get_int64(json_object_object_get(t, "max_gap_us")) >= gap_us)
			p->gap_turns++;
		relay = json_object_object_get(t, "relay_us");
		for (j = 0; relay && j < json_object_array_length(relay); j++)
			samples_add(&p->relay, json_object_get_double(
			    json_object_array_get_idx(relay, j)));
	}
	p->ttft50 = pct(&p->ttft, 50);
	p->ttft99 = pct(&p->ttft, 99);
	p->relay50 = pct(&p->relay, 50);
	p->relay99 = pct(&p->relay, 99);
	p->total50 = pct(&p->total, 50);
	p->total99 = pct(&p->total, 99);
	p->first50 = pct(&p->ttft_first, 50);
}

static json_object *
target(const char *name, const char *url, json_object *headers)
{
	json_object *t = json_object_new_object();

	json_object_object_add(t, "name", json_object_new_string(name));
	json_object_object_add(t, "url", json_object_new_string(url));
	json_object_object_add(t, "headers", headers ? headers : json_object_new_object());
	return t;
}

/* The client's config, 0600 (it holds the simulator's bearer token). */
static void
write_client_config(struct rig *s, const struct lat_opts *o,
    const struct client_def *c, const char *path)
{
	json_object *cfg = json_object_new_object(), *targets, *h, *direct, *daemon;
	struct tl_account a;
	char url[256], *bearer;
	const char *text;

	if (tl_sim_account(&s->sim, 1, &a) != 0)
		die("cannot read the simulator's account");
	targets = json_object_new_array();
	h = json_object_new_object();
	if ((bearer = malloc(strlen(a.access_token) + 8)) == NULL)
		die("out of memory");
	sprintf(bearer, "Bearer %s", a.access_token);
	json_object_object_add(h, "authorization", json_object_new_string(bearer));
	free(bearer);
	json_object_object_add(h, "chatgpt-account-id", json_object_new_string(a.account_id));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/backend-api/codex/responses",
	    s->sim.port);
	direct = target("direct", url, h);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/responses", s->port);
	daemon = target("daemon", url, NULL);
	json_object_array_add(targets, o->daemon_first ? daemon : direct);
	json_object_array_add(targets, o->daemon_first ? direct : daemon);
	json_object_object_add(cfg, "targets", targets);
	if (c->api)
		json_object_object_add(cfg, "api", json_object_new_string(c->api));
	json_object_object_add(cfg, "conversations", json_object_new_int(o->convs));
	json_object_object_add(cfg, "turns", json_object_new_int(o->turns));
	json_object_object_add(cfg, "concurrency", json_object_new_int(o->concurrency));
	json_object_object_add(cfg, "instructions_bytes", json_object_new_int(o->tokens * 4));
	json_object_object_add(cfg, "timeout_ms", json_object_new_int(WAIT_MS));
	json_object_object_add(cfg, "warmup_turns", json_object_new_int(2));
	/* spread the starts over one turn's pacing */
	json_object_object_add(cfg, "stagger_ms", json_object_new_int(
	    (o->first_ms + o->deltas * o->delta_ms) / o->concurrency));
	text = json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN);
	if (tl_write_file(path, text, strlen(text), 0600) != 0)
		die("cannot write %s", path);
	json_object_put(cfg);
	tl_account_free(&a);
}

static const char *
srcdir(void)
{
	const char *d = getenv("CODEXPOOL_SRCDIR");

	return d && *d ? d : BENCH_SRCDIR;
}

/* Runs one client; returns its parsed result, or NULL (with a note). */
static json_object *
run_client(struct rig *s, const struct lat_opts *o, const struct client_def *c)
{
	char cfg[800], out[800], log[800], script[1024];
	char *argv[] = { (char *)c->interp, script, cfg, out, NULL };
	json_object *res;
	int rc;

	snprintf(script, sizeof(script), "%s/bench/clients/%s", srcdir(), c->script);
	if (access(script, R_OK) != 0)
		die("cannot read %s (set CODEXPOOL_SRCDIR to the source tree)", script);
	snprintf(cfg, sizeof(cfg), "%s/%s.json", s->dir, c->name);
	snprintf(out, sizeof(out), "%s/%s.result.json", s->dir, c->name);
	snprintf(log, sizeof(log), "%s/%s.log", s->dir, c->name);
	write_client_config(s, o, c, cfg);
	rc = tl_run(log, argv, 30 * 60 * 1000);
	if (rc == 127) {
		printf("(%s skipped: %s is not installed)\n", c->name, c->interp);
		return NULL;
	}
	res = rc == 0 ? json_object_from_file(out) : NULL;
	if (res == NULL) {
		char *text = tl_read_file(log, NULL);

		fprintf(stderr, "codexpool-bench: client %s failed (exit %d):\n%s\n",
		    c->name, rc, text ? text : "");
		free(text);
	}
	return res;
}

static json_object *
result_turns(json_object *res, const char *target_name)
{
	json_object *results = json_object_object_get(res, "results");
	size_t i;

	for (i = 0; results && i < json_object_array_length(results); i++) {
		json_object *r = json_object_array_get_idx(results, i);
		const char *n = json_object_get_string(json_object_object_get(r, "target"));

		if (n && strcmp(n, target_name) == 0)
			return json_object_object_get(r, "turns");
	}
	return NULL;
}

static const char *
verdict(double added, double goal)
{
	return isnan(added) ? "n/a" : added <= goal ? "ok" : "MISSED";
}

static int
cmd_latency(int argc, char **argv)
{
	struct lat_opts o = { .convs = 20, .turns = 8, .concurrency = 10,
	    .tokens = 7000, .first_ms = 50, .delta_ms = 5, .deltas = 8,
	    .gap_ms = 30, .clients = "node-fetch,node-http,python" };
	struct path_stats st[sizeof(clients) / sizeof(clients[0])][2];
	json_object *res[sizeof(clients) / sizeof(clients[0])] = { NULL };
	static const char *paths[2] = { "direct", "daemon" };
	char simargs[256];
	struct rig s;
	size_t i;
	int ch, k, ran = 0, errors = 0, missed = 0;

	optind = 1;
	while ((ch = getopt(argc, argv, "c:t:j:i:f:d:n:g:C:r")) != -1) {
		switch (ch) {
		case 'c': o.convs = atoi(optarg); break;
		case 't': o.turns = atoi(optarg); break;
		case 'j': o.concurrency = atoi(optarg); break;
		case 'i': o.tokens = atoi(optarg); break;
		case 'f': o.first_ms = atoi(optarg); break;
		case 'd': o.delta_ms = atoi(optarg); break;
		case 'n': o.deltas = atoi(optarg); break;
		case 'g': o.gap_ms = atoi(optarg); break;
		case 'C': snprintf(o.clients, sizeof(o.clients), "%s", optarg); break;
		case 'r': o.daemon_first = 1; break;
		default:
			die("usage: codexpool-bench latency [-c CONVS] [-t TURNS] "
			    "[-j CONCURRENCY] [-i TOKENS] [-f FIRST_MS] [-d DELTA_MS] "
			    "[-n DELTAS] [-g GAP_MS] [-C node-fetch,node-http,python] [-r]");
		}
	}
	if (o.convs < 1 || o.turns < 2 || o.concurrency < 1 || o.tokens < 0 ||
	    o.tokens > 200000 || o.first_ms < 0 || o.delta_ms < 0 || o.deltas < 1 ||
	    o.gap_ms < 1)
		die("need at least 1 conversation, 2 turns, concurrency 1, 1 delta, "
		    "a gap of 1 ms, at most 200000 tokens, no negative delays");
	if (o.delta_ms >= o.gap_ms)
		die("-d %d: the pacing itself would count as a gap of -g %d ms",
		    o.delta_ms, o.gap_ms);

	/* One backend: the direct path's requests, each a new connection to
	 * the load balancer, see the same warm cache as the daemon's. */
	snprintf(simargs, sizeof(simargs), "--backends 1 --accounts 1 --seed 42 "
	    "--first-event-ms %d --delta-delay-ms %d --deltas %d",
	    o.first_ms, o.delta_ms, o.deltas);
	start(&s, simargs, NULL);
	printf("%d conversations x %d turns, concurrency %d, ~%d tokens of instructions, "
	    "stream:true, full history every turn\n"
	    "simulator pacing: first event after %d ms, %d deltas %d ms apart; "
	    "each client: %s pass first\n\n", o.convs, o.turns, o.concurrency,
	    o.tokens, o.first_ms, o.deltas, o.delta_ms,
	    o.daemon_first ? "daemon" : "direct");
	for (i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
		char list[130], *tok, *save = NULL;
		int wanted = 0;

		snprintf(list, sizeof(list), "%s", o.clients);
		for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			if (strcmp(tok, clients[i].name) == 0)
				wanted = 1;
		if (!wanted)
			continue;
		if ((res[i] = run_client(&s, &o, &clients[i])) == NULL)
			continue;
		for (k = 0; k < 2; k++) {
			json_object *turns = result_turns(res[i], paths[k]);
			if (turns == NULL)
				die("client %s reported nothing for %s", clients[i].name, paths[k]);
			stats_collect(&st[i][k], turns, o.gap_ms * 1000);
			errors += st[i][k].errors;
			if (st[i][k].errors)
				fprintf(stderr, "codexpool-bench: %s, %s: %d failed turns, "
				    "the first: %s\n", clients[i].name, paths[k],
				    st[i][k].errors, st[i][k].first_error);
		}
		ran++;
	}
	rig_stop(&s);
	if (ran == 0)
		die("no client ran (-C %s)", o.clients);

	printf("| client | path | turns (errors) | TTFT p50 | TTFT p99 | "
	    "relay/event p50 | relay/event p99 | turn p50 | turn p99 | "
	    "turns with a gap >= %d ms |\n", o.gap_ms);
	printf("|---|---|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
		if (res[i] == NULL)
			continue;
		for (k = 0; k < 2; k++) {
			struct path_stats *p = &st[i][k];
			printf("| %s | %s | %d (%d) | %.2f ms | %.2f ms | %.3f ms | %.3f ms | "
			    "%.1f ms | %.1f ms | %d |\n", clients[i].name, paths[k],
			    p->turns, p->errors, p->ttft50 / 1000, p->ttft99 / 1000,
			    p->relay50 / 1000, p->relay99 / 1000, p->total50 / 1000,
			    p->total99 / 1000, p->gap_turns);
		}
	}
	printf("\nTTFT and turn time: turns 2..%d (turn 1 opens the daemon's upstream "
	    "connection); relay and gaps: every turn.\n\n", o.turns);
	printf("| client | added TTFT p50 (goal <= %.1f ms) | added TTFT p99 (<= %.1f ms) | "
	    "added relay p50 (<= %.1f ms) | added relay p99 (<= %.1f ms) | "
	    "first-turn TTFT p50 direct / daemon |\n", GOAL_TTFT_P50 / 1000.0,
	    GOAL_TTFT_P99 / 1000.0, GOAL_RELAY_P50 / 1000.0, GOAL_RELAY_P99 / 1000.0);
	printf("|---|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
		struct path_stats *d, *x;
		double a[4];
		const char *v[4];
		int m;

		if (res[i] == NULL)
			continue;
		d = &st[i][0];
		x = &st[i][1];
		a[0] = x->ttft50 - d->ttft50;
		a[1] = x->ttft99 - d->ttft99;
		a[2] = x->relay50 - d->relay50;
		a[3] = x->relay99 - d->relay99;
		v[0] = verdict(a[0], GOAL_TTFT_P50);
		v[1] = verdict(a[1], GOAL_TTFT_P99);
		v[2] = verdict(a[2], GOAL_RELAY_P50);
		v[3] = verdict(a[3], GOAL_RELAY_P99);
		for (m = 0; m < 4; m++)
			if (strcmp(v[m], "ok") != 0)
				missed++;
		printf("| %s | %+.2f ms %s | %+.2f ms %s | %+.3f ms %s | %+.3f ms %s | "
		    "%.1f / %.1f ms |\n", clients[i].name, a[0] / 1000, v[0], a[1] / 1000,
		    v[1], a[2] / 1000, v[2], a[3] / 1000, v[3], d->first50 / 1000,
		    x->first50 / 1000);
	}
	printf("\n%s; %d failed turns\n", missed ? "some goals MISSED" : "all goals met",
	    errors);
	for (i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
		if (res[i] == NULL)
			continue;
		for (k = 0; k < 2; k++)
			stats_free(&st[i][k]);
		json_object_put(res[i]);
	}
	return errors ? 1 : 0;
}

/* ---- per-route benchmark: implicit resume on and off ------------------ */

enum route { ROUTE_RESPONSES, ROUTE_CHAT, ROUTE_MESSAGES, ROUTE_COUNT };

static const char *route_names[ROUTE_COUNT] = { "responses", "chat", "messages" };

/* A value at a dotted path ("usage.prompt_tokens", "choices.0.message"). */
static json_object *
jget(json_object *o, const char *path)
{
	char buf[128], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
		if (json_object_is_type(o, json_type_array))
			o = json_object_array_get_idx(o, (size_t)atoi(tok));
		else if (!json_object_object_get_ex(o, tok, &o))
			o = NULL;
	}
	return o;
}

static long long
jget_num(json_object *o, const char *path)
{
	json_object *v = jget(o, path);

	return v ? (long long)json_object_get_int64(v) : -1;
}

static json_object *
text_msg(const char *role, const char *text)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string(text));
	return m;
}

/*
 * One non-streamed turn of a stateless client on route: the full history
 * (history already ends with the new user message) and the system text,
 * as each API carries them; the answer is appended to history as the
 * client would resend it.  *ratio is cached / prompt tokens.
 */
static int
route_turn(struct rig *s, enum route rt, int conv, json_object *history,
    const char *system, double *ratio)
{
	static const char *paths[ROUTE_COUNT] = { "/v1/responses", "/v1/chat/completions",
	    "/v1/messages" };
	json_object *req = json_object_new_object(), *ans, *out, *all;
	struct tl_response r;
	char key[64], headers[160];
	const char *body, *text;
	long long in, cached;
	size_t i;
	int rc = -1;

	snprintf(key, sizeof(key), "bench-route-%d", conv);
	headers[0] = '\0';
	switch (rt) {
	case ROUTE_RESPONSES:	/* as the Codex CLI: instructions and a cache key */
		json_object_object_add(req, "model", json_object_new_string("gpt-5.4"));
		json_object_object_add(req, "instructions", json_object_new_string(system));
		json_object_object_add(req, "prompt_cache_key", json_object_new_string(key));
		json_object_object_add(req, "input", json_object_get(history));
		break;
	case ROUTE_CHAT:	/* the system message leads; no session header */
		all = json_object_new_array();
		json_object_array_add(all, text_msg("system", system));
		for (i = 0; i < json_object_array_length(history); i++)
			json_object_array_add(all, json_object_get(
			    json_object_array_get_idx(history, i)));
		json_object_object_add(req, "model", json_object_new_string("gpt-5.4"));
		json_object_object_add(req, "messages", all);
		break;
	case ROUTE_MESSAGES:	/* as Claude Code: its session header */
		json_object_object_add(req, "model", json_object_new_string("claude-opus-5-5"));
		json_object_object_add(req, "max_tokens", json_object_new_int(4096));
		json_object_object_add(req, "system", json_object_new_string(system));
		json_object_object_add(req, "messages", json_object_get(history));
		snprintf(headers, sizeof(headers), "x-claude-code-session-id: %s\r\n"
		    "anthropic-version: 2023-06-01\r\n", key);
		break;
	default:
		abort();
	}
	body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	if (tl_http("127.0.0.1", s->port, "POST", paths[rt], headers[0] ? headers : NULL,
	    body, strlen(body), &r) != 0) {
		json_object_put(req);
		return -1;
	}
	json_object_put(req);
	if (r.status != 200 || (ans = tl_response_json(&r)) == NULL) {
		fprintf(stderr, "codexpool-bench: %s: HTTP %d: %.300s\n", route_names[rt],
		    r.status, r.body ? r.body : "");
		tl_response_free(&r);
		return -1;
	}
	tl_response_free(&r);
	switch (rt) {
	case ROUTE_RESPONSES:
		in = jget_num(ans, "usage.input_tokens");
		cached = jget_num(ans, "usage.input_tokens_details.cached_tokens");
		if ((out = jget(ans, "output")) == NULL)
			break;
		for (i = 0; i < json_object_array_length(out); i++) {
			json_object *item = NULL;

			json_object_deep_copy(json_object_array_get_idx(out, i), &item, NULL);
			json_object_object_del(item, "id");
			json_object_object_del(item, "status");
			json_object_array_add(history, item);
		}
		*ratio = in > 0 ? (double)cached / (double)in : 0;
		rc = 0;
		break;
	case ROUTE_CHAT:
		in = jget_num(ans, "usage.prompt_tokens");
		cached = jget_num(ans, "usage.prompt_tokens_details.cached_tokens");
		if ((text = json_object_get_string(jget(ans, "choices.0.message.content"))) == NULL)
			break;
		json_object_array_add(history, text_msg("assistant", text));
		*ratio = in > 0 ? (double)cached / (double)in : 0;
		rc = 0;
		break;
	case ROUTE_MESSAGES:
		/* Anthropic's input_tokens are the uncached ones */
		in = jget_num(ans, "usage.input_tokens");
		cached = jget_num(ans, "usage.cache_read_input_tokens");
		if ((text = json_object_get_string(jget(ans, "content.0.text"))) == NULL)
			break;
		json_object_array_add(history, text_msg("assistant", text));
		*ratio = in + cached > 0 ? (double)cached / (double)(in + cached) : 0;
		rc = 0;
		break;
	default:
		break;
	}
	json_object_put(ans);
	return rc;
}

struct route_result {
	double		 mean, p10;		/* cached share, turns >= 2 */
	long long	 connections;
	long long	 requests, resumed;	/* seen by the simulator */
	long long	 bytes, bytes_first;	/* all turns, turn 1 */
	long long	 instr_bytes;		/* of bytes: the instructions */
	long long	 instr_first;		/* of bytes_first */
};

/* What the simulator saw: its counters and request records. */
static void
route_sim_totals(struct rig *s, struct route_result *m)
{
	json_object *st = tl_sim_state(&s->sim), *reqs;
	size_t i;

	if (st == NULL)
		die("cannot read /sim/state");
	m->connections = jget_num(st, "connections_total");
	m->bytes = jget_num(st, "request_bytes_total");
	m->requests = jget_num(st, "requests_total");
	reqs = jget(st, "requests");
	for (i = 0; reqs && i < json_object_array_length(reqs); i++) {
		json_object *rq = json_object_array_get_idx(reqs, i), *v;

		if (json_object_object_get_ex(rq, "previous_response_id", &v) &&
		    json_object_is_type(v, json_type_string))
			m->resumed++;
		m->instr_bytes += jget_num(rq, "instructions_bytes");
	}
	json_object_put(st);
}

static void
run_route(struct route_result *m, enum route rt, int resume, int convs, int turns,
    int backends, int tokens, int reply_bytes)
{
	char simargs[128], conf[96], q[96];
	struct rig s;
	json_object **hist = calloc((size_t)convs, sizeof(*hist));
	double *ratios = calloc((size_t)(convs * turns), sizeof(double)), r, sum = 0;
	char **instr = calloc((size_t)convs, sizeof(char *));
	struct route_result first;
	int c, t, n = 0;

	if (hist == NULL || ratios == NULL || instr == NULL)
		die("out of memory");
	memset(m, 0, sizeof(*m));
	snprintf(simargs, sizeof(simargs), "--backends %d --accounts 1 --seed 42 "
	    "--reply-bytes %d", backends, reply_bytes);
	/* one account holds every conversation: room for all of them (the
	 * default of 8 would evict one on every turn of 20 interleaved) */
	snprintf(conf, sizeof(conf), "implicit_resume = %s\nws_pool_max_per_account = %d",
	    resume ? "yes" : "no", convs > 8 ? convs : 8);
	start(&s, simargs, conf);
	for (c = 0; c < convs; c++) {
		hist[c] = json_object_new_array();
		/* tokens x 4 bytes of instructions, different per conversation */
		instr[c] = tl_text((size_t)tokens * 4 / 1024 + 1, (unsigned)c + 100);
		instr[c][(size_t)tokens * 4] = '\0';
	}
	/* Interleave conversations turn by turn, as concurrent users would. */
	for (t = 0; t < turns; t++) {
		for (c = 0; c < convs; c++) {
			snprintf(q, sizeof(q), "question %d of conversation %d: what next?", t + 1, c);
			json_object_array_add(hist[c], rt == ROUTE_RESPONSES ?
			    tl_msg("user", q) : text_msg("user", q));
			if (route_turn(&s, rt, c, hist[c], instr[c], &r) != 0)
				die("%s, implicit_resume %s: turn %d of conversation %d failed; see %s",
				    route_names[rt], resume ? "yes" : "no", t + 1, c, s.log);
			if (t >= 1) {
				ratios[n++] = r;
				sum += r;
			}
		}
		if (t == 0) {
			memset(&first, 0, sizeof(first));
			route_sim_totals(&s, &first);
			m->bytes_first = first.bytes;
			m->instr_first = first.instr_bytes;
		}
	}
	route_sim_totals(&s, m);
	qsort(ratios, (size_t)n, sizeof(double), cmp_double);
	m->mean = n ? sum / n : 0;
	m->p10 = n ? ratios[n / 10] : 0;
	for (c = 0; c < convs; c++) {
		json_object_put(hist[c]);
		free(instr[c]);
	}
	rig_stop(&s);
	free(hist);
	free(ratios);
	free(instr);
}

static const char *
optarg_num(int n)
{
	static char buf[32];

	snprintf(buf, sizeof(buf), "%d", n);
	return buf;
}

static int
cmd_routes(int argc, char **argv)
{
	int convs = 20, turns = 8, backends = 8, tokens = 7000, reply_bytes = 0, ch, k, resume;
	struct route_result m[ROUTE_COUNT][2];
	bool want[ROUTE_COUNT] = { true, true, true };
	char list[64], *tok, *save = NULL;

	optind = 1;
	while ((ch = getopt(argc, argv, "c:t:b:i:p:R:")) != -1) {
		switch (ch) {
		case 'c': convs = atoi(optarg); break;
		case 't': turns = atoi(optarg); break;
		case 'b': backends = atoi(optarg); break;
		case 'i': tokens = atoi(optarg); break;
		case 'p': reply_bytes = atoi(optarg); break;
		case 'R':
			memset(want, 0, sizeof(want));
			snprintf(list, sizeof(list), "%s", optarg);
			for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				for (k = 0; k < ROUTE_COUNT; k++)
					if (strcmp(tok, route_names[k]) == 0)
						want[k] = true;
			}
			break;
		default:
			die("usage: codexpool-bench routes [-c CONVS] [-t TURNS] [-b BACKENDS] "
			    "[-i TOKENS] [-p REPLY_BYTES] [-R responses,chat,messages]");
		}
	}
	if (convs < 1 || convs > 1000 || turns < 2 || turns > 100 || backends < 1 ||
	    tokens < 1 || tokens > 200000 || convs * turns > 10000 || reply_bytes < 0 ||
	    reply_bytes > 1000000)
		die("need 1..1000 conversations, 2..100 turns (at most 10000 turns in all, "
		    "the simulator's record ring), 1 backend, 1..200000 tokens, "
		    "0..1000000 reply bytes");
	for (k = 0; k < ROUTE_COUNT; k++)
		for (resume = 1; want[k] && resume >= 0; resume--)
			run_route(&m[k][!resume], (enum route)k, resume, convs, turns,
			    backends, tokens, reply_bytes);
	printf("%d conversations x %d turns per route, stateless clients (full history, "
	    "stream:false), ~%d tokens of instructions/system text, replies of %s bytes, "
	    "%d simulated backends, one account, ws_pool_max_per_account = %d\n\n",
	    convs, turns, tokens, reply_bytes ? optarg_num(reply_bytes) : "~60",
	    backends, convs > 8 ? convs : 8);
	printf("| route | implicit_resume | cached share mean (turns >= 2) | p10 | "
	    "upstream connections | requests with previous_response_id | "
	    "upstream bytes/turn | turn 1 | turns >= 2 | instructions share of bytes |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|\n");
	for (k = 0; k < ROUTE_COUNT; k++) {
		for (resume = 1; want[k] && resume >= 0; resume--) {
			struct route_result *x = &m[k][!resume];
			printf("| %s | %s | %.3f | %.3f | %lld | %lld / %lld | %lld | %lld | %lld | "
			    "%.0f%% |\n", route_names[k], resume ? "yes" : "no", x->mean, x->p10,
			    x->connections, x->resumed, x->requests,
			    x->bytes / (convs * turns), x->bytes_first / convs,
			    (x->bytes - x->bytes_first) / (convs * (turns - 1)),
			    x->bytes ? 100.0 * (double)x->instr_bytes / (double)x->bytes : 0);
		}
	}
	/* What implicit resume can shrink: everything but the instructions,
	 * which go upstream every turn either way. */
	printf("\n| route | upstream bytes, no / yes: all turns | turns >= 2 | "
	    "without instructions, bytes/turn >= 2: no / yes | ratio |\n|---|---|---|---|---|\n");
	for (k = 0; k < ROUTE_COUNT; k++) {
		struct route_result *y = &m[k][0], *n = &m[k][1];
		double ny, nn;

		if (!want[k])
			continue;
		nn = (double)(n->bytes - n->bytes_first - (n->instr_bytes - n->instr_first)) /
		    (convs * (turns - 1));
		ny = (double)(y->bytes - y->bytes_first - (y->instr_bytes - y->instr_first)) /
		    (convs * (turns - 1));
		printf("| %s | %.2fx | %.2fx | %.0f / %.0f | %.2fx |\n", route_names[k],
		    (double)n->bytes / (double)y->bytes,
		    (double)(n->bytes - n->bytes_first) / (double)(y->bytes - y->bytes_first),
		    nn, ny, ny > 0 ? nn / ny : 0);
	}
	return 0;
}

/* ---- client WebSocket benchmark -------------------------------------- */

struct ws_pass {
	const char	*name;
	bool		 direct;
	struct rig	*s;
	int		 convs, turns, jobs, kib, deltas, delta_ms;
	pthread_mutex_t	 mu;
	double		*relay_us;	/* every event */
	size_t		 nrelay, relay_cap;
	double		*ttft_us;	/* every turn */
	size_t		 nttft;
	double		*ratios;	/* turns >= 2 */
	size_t		 nratio;
	int		 failures;
	long long	 connections;
};

struct ws_job {
	struct ws_pass	*p;
	int		 first;		/* conversations first, first + jobs, ... */
};

static double
wall_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec * 1e6 + (double)tv.tv_usec;
}

static struct tl_ws *
ws_pass_connect(struct ws_pass *p, int c)
{
	char hdr[512], *auth;
	struct tl_account a;
	struct tl_ws *ws;
	int status = 0;

	if (p->direct) {
		tl_sim_account(&p->s->sim, 1, &a);
		auth = tl_auth_headers(&a);
		tl_account_free(&a);
		ws = tl_ws_connect("127.0.0.1", p->s->sim.port, "/backend-api/codex/responses",
		    auth, NULL, &status);
		free(auth);
	} else {
		snprintf(hdr, sizeof(hdr), "session_id: bench-ws-%d\r\n"
		    "openai-beta: responses_websockets=2026-02-06\r\n", c);
		ws = tl_ws_connect("127.0.0.1", p->s->port, "/v1/responses", hdr, NULL, &status);
	}
	return ws;
}

/* One turn: send, then read to response.completed, timing every event. */
static int
ws_pass_turn(struct ws_pass *p, struct tl_ws *ws, const char *req, double *ratio,
    char **resp_id, double *relay, size_t *nrelay, size_t relay_max, double *ttft)
{
	double t0 = wall_us(), now;
	enum tl_ws_why why;
	struct tl_usage u;
	json_object *f, *v;
	const char *type;
	char *text;
	int events = 0, rc = -1;

	if (tl_ws_send_text(ws, req, strlen(req)) != 0)
		return -1;
	while ((text = tl_ws_recv_text(ws, WAIT_MS, &why)) != NULL) {
		now = wall_us();
		f = json_tokener_parse(text);
		free(text);
		if (f == NULL)
			continue;
		type = json_object_get_string(json_object_object_get(f, "type"));
		/* Output only: the daemon holds response.created/in_progress
		 * until the first output frame (so a failure before it can
		 * still be retried), and the simulator's rate limits are
		 * not relayed. */
		if (type != NULL && (strcmp(type, "response.created") == 0 ||
		    strcmp(type, "response.in_progress") == 0 ||
		    strcmp(type, "codex.rate_limits") == 0)) {
			json_object_put(f);
			continue;
		}
		if (events++ == 0)
			*ttft = now - t0;
		if (json_object_object_get_ex(f, "sim_sent_us", &v) && *nrelay < relay_max)
			relay[(*nrelay)++] = now - (double)json_object_get_int64(v);
		if (type != NULL && strcmp(type, "response.completed") == 0) {
			if (tl_usage_of(f, &u) == 0 && tl_response_id(f) != NULL) {
				*ratio = u.input_tokens ? (double)u.cached_tokens /
				    (double)u.input_tokens : 0;
				free(*resp_id);
				*resp_id = strdup(tl_response_id(f));
				rc = 0;
			}
			json_object_put(f);
			break;
		}
		if (type != NULL && (strcmp(type, "error") == 0 ||
		    strcmp(type, "response.failed") == 0)) {
			json_object_put(f);
			break;
		}
		json_object_put(f);
	}
	(void)p;
	return rc;
}

static void *
ws_pass_worker(void *arg)
{
	struct ws_job *j = arg;
	struct ws_pass *p = j->p;
	size_t relay_max = (size_t)(p->deltas + 16) * (size_t)p->turns;
	double *relay = calloc(relay_max, sizeof(double)), ratio, ttft;
	double *ttfts = calloc((size_t)p->turns, sizeof(double));
	double *ratios = calloc((size_t)p->turns, sizeof(double));
	int c, t;

	for (c = j->first; c < p->convs; c += p->jobs) {
		char *instr = tl_text((size_t)p->kib, (unsigned)c + (p->direct ? 500 : 900));
		struct tl_ws *ws = ws_pass_connect(p, c);
		char *resp_id = NULL, sim[96], q[80], *req;
		size_t nrelay = 0, nratio = 0, nttft = 0;
		json_object *o, *in;
		struct tl_req r;
		int failed = 0;

		if (ws == NULL) {
			pthread_mutex_lock(&p->mu);
			p->failures += p->turns;
			pthread_mutex_unlock(&p->mu);
			free(instr);
			continue;
		}
		snprintf(sim, sizeof(sim), "{\"deltas\":%d,\"delta_delay_ms\":%d}",
		    p->deltas, p->delta_ms);
		for (t = 0; t < p->turns && !failed; t++) {
			memset(&r, 0, sizeof(r));
			in = json_object_new_array();
			snprintf(q, sizeof(q), "question %d of conversation %d", t + 1, c);
			json_object_array_add(in, tl_msg("user", q));
			r.instructions = instr;
			r.input = in;
			r.previous_response_id = resp_id;	/* NULL on turn 1: in full */
			req = tl_req_ws(&r);
			o = json_tokener_parse(req);
			json_object_object_add(o, "sim", json_tokener_parse(sim));
			free(req);
			req = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
			json_object_put(o);
			json_object_put(in);
			if (ws_pass_turn(p, ws, req, &ratio, &resp_id, relay, &nrelay,
			    relay_max, &ttft) != 0)
				failed = 1;
			else {
				ttfts[nttft++] = ttft;
				if (t >= 1)
					ratios[nratio++] = ratio;
			}
			free(req);
		}
		tl_ws_close(ws);
		pthread_mutex_lock(&p->mu);
		p->failures += failed;
		if (p->nrelay + nrelay > p->relay_cap) {
			p->relay_cap = (p->nrelay + nrelay) * 2;
			p->relay_us = realloc(p->relay_us, p->relay_cap * sizeof(double));
		}
		memcpy(p->relay_us + p->nrelay, relay, nrelay * sizeof(double));
		p->nrelay += nrelay;
		memcpy(p->ttft_us + p->nttft, ttfts, nttft * sizeof(double));
		p->nttft += nttft;
		memcpy(p->ratios + p->nratio, ratios, nratio * sizeof(double));
		p->nratio += nratio;
		pthread_mutex_unlock(&p->mu);
		free(resp_id);
		free(instr);
	}
	free(relay);
	free(ttfts);
	free(ratios);
	return NULL;
}

static void
ws_pass_run(struct ws_pass *p)
{
	pthread_t *th = calloc((size_t)p->jobs, sizeof(*th));
	struct ws_job *jobs = calloc((size_t)p->jobs, sizeof(*jobs));
	long long before = sim_connections(p->s);
	int i;

	pthread_mutex_init(&p->mu, NULL);
	p->ttft_us = calloc((size_t)(p->convs * p->turns), sizeof(double));
	p->ratios = calloc((size_t)(p->convs * p->turns), sizeof(double));
	for (i = 0; i < p->jobs; i++) {
		jobs[i].p = p;
		jobs[i].first = i;
		pthread_create(&th[i], NULL, ws_pass_worker, &jobs[i]);
	}
	for (i = 0; i < p->jobs; i++)
		pthread_join(th[i], NULL);
	p->connections = sim_connections(p->s) - before;
	pthread_mutex_destroy(&p->mu);
	free(th);
	free(jobs);
}

static double
quantile(double *v, size_t n, double q)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(double), cmp_double);
	return v[(size_t)((double)(n - 1) * q)];
}

static double
mean_of(const double *v, size_t n)
{
	double sum = 0;
	size_t i;

	for (i = 0; i < n; i++)
		sum += v[i];
	return n ? sum / (double)n : 0;
}

static int
cmd_ws(int argc, char **argv)
{
	struct ws_pass p[2];
	struct rig s;
	int convs = 20, turns = 8, jobs = 10, kib = 28, deltas = 16, delta_ms = 2, ch, i;
	char simargs[128];

	optind = 1;
	while ((ch = getopt(argc, argv, "c:t:j:k:d:n:")) != -1) {
		switch (ch) {
		case 'c': convs = atoi(optarg); break;
		case 't': turns = atoi(optarg); break;
		case 'j': jobs = atoi(optarg); break;
		case 'k': kib = atoi(optarg); break;
		case 'd': delta_ms = atoi(optarg); break;
		case 'n': deltas = atoi(optarg); break;
		default: die("usage: codexpool-bench ws [-c CONVS] [-t TURNS] [-j CONCURRENCY] "
		    "[-k KIB] [-d DELTA_MS] [-n DELTAS]");
		}
	}
	if (convs < 1 || turns < 2 || jobs < 1 || kib < 1 || deltas < 1 || delta_ms < 0)
		die("need at least 1 conversation, 2 turns, 1 job, 1 KiB, 1 delta");
	if (jobs > convs)
		jobs = convs;
	snprintf(simargs, sizeof(simargs), "--backends 8 --accounts 1 --seed 42");
	start(&s, simargs, "ws_pool_max_per_account = 64");
	memset(p, 0, sizeof(p));
	for (i = 0; i < 2; i++) {
		p[i].name = i == 0 ? "direct (WebSocket to the simulator)" :
		    "codexpoold (client WebSocket)";
		p[i].direct = i == 0;
		p[i].s = &s;
		p[i].convs = convs;
		p[i].turns = turns;
		p[i].jobs = jobs;
		p[i].kib = kib;
		p[i].deltas = deltas;
		p[i].delta_ms = delta_ms;
		ws_pass_run(&p[i]);
		if (p[i].failures > 0)
			die("%s: %d turns failed; see %s", p[i].name, p[i].failures, s.log);
	}
	printf("%d conversations x %d turns (turn 1 in full, then previous_response_id "
	    "and the new item), %d at a time, %d KiB instructions, %d deltas %d ms apart\n\n",
	    convs, turns, jobs, kib, deltas, delta_ms);
	printf("| path | cached/input mean (turns >= 2) | upstream connections | "
	    "first output p50 / p99 (ms) | relay per output event p50 / p99 (ms) |\n"
	    "|---|---|---|---|---|\n");
	for (i = 0; i < 2; i++)
		printf("| %s | %.3f | %lld | %.2f / %.2f | %.3f / %.3f |\n", p[i].name,
		    mean_of(p[i].ratios, p[i].nratio), p[i].connections,
		    quantile(p[i].ttft_us, p[i].nttft, 0.5) / 1000,
		    quantile(p[i].ttft_us, p[i].nttft, 0.99) / 1000,
		    quantile(p[i].relay_us, p[i].nrelay, 0.5) / 1000,
		    quantile(p[i].relay_us, p[i].nrelay, 0.99) / 1000);
	printf("\nadded by codexpoold: first output p50 %+.3f ms, p99 %+.3f ms; "
	    "relay per event p50 %+.3f ms, p99 %+.3f ms (goal <= 0.1 / 1 ms)\n",
	    (quantile(p[1].ttft_us, p[1].nttft, 0.5) - quantile(p[0].ttft_us, p[0].nttft, 0.5)) / 1000,
	    (quantile(p[1].ttft_us, p[1].nttft, 0.99) - quantile(p[0].ttft_us, p[0].nttft, 0.99)) / 1000,
	    (quantile(p[1].relay_us, p[1].nrelay, 0.5) - quantile(p[0].relay_us, p[0].nrelay, 0.5)) / 1000,
	    (quantile(p[1].relay_us, p[1].nrelay, 0.99) - quantile(p[0].relay_us, p[0].nrelay, 0.99)) / 1000);
	printf("output events timed: direct %zu, codexpoold %zu\n", p[0].nrelay, p[1].nrelay);
	for (i = 0; i < 2; i++) {
		free(p[i].relay_us);
		free(p[i].ttft_us);
		free(p[i].ratios);
	}
	rig_stop(&s);
	return 0;
}

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "demo") == 0)
		return cmd_demo();
	if (argc >= 2 && strcmp(argv[1], "cache") == 0)
		return cmd_cache(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "latency") == 0)
		return cmd_latency(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "routes") == 0)
		return cmd_routes(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "cpu") == 0)
		return cmd_cpu(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "memory") == 0)
		return cmd_memory(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "scale") == 0)
		return cmd_scale(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "rss") == 0)
		return cmd_rss(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "stream") == 0)
		return cmd_stream(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "ws") == 0)
		return cmd_ws(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "soak") == 0)
		return cmd_soak(argc - 1, argv + 1);
	fprintf(stderr, "usage: codexpool-bench demo | cache [-c CONVS] [-t TURNS] [-b BACKENDS] [-k KIB]\n"
	    "       codexpool-bench latency [-c CONVS] [-t TURNS] [-j CONCURRENCY] [-i TOKENS]\n"
	    "                               [-f FIRST_MS] [-d DELTA_MS] [-n DELTAS] [-g GAP_MS]\n"
	    "                               [-C node-fetch,node-http,python] [-r]\n"
	    "       codexpool-bench routes [-c CONVS] [-t TURNS] [-b BACKENDS] [-i TOKENS]\n"
	    "                              [-p REPLY_BYTES] [-R responses,chat,messages]\n"
	    "       codexpool-bench ws [-c CONVS] [-t TURNS] [-j CONCURRENCY] [-k KIB]\n"
	    "                          [-d DELTA_MS] [-n DELTAS]\n"
	    "       codexpool-bench cpu [-c CONVS] [-t TURNS] [-i TOKENS] [-B BUILDDIR]\n"
	    "       codexpool-bench memory [-n 0,1000,2000] [-T] [-B BUILDDIR]\n"
	    "       codexpool-bench scale [-n 20,2000,19000] [-r RATE] [-m TURNS] [-i TOKENS]\n"
	    "                             [-w WORKERS] [-P SIM_PROCS] [-j OPENERS]\n"
	    "       codexpool-bench rss [-c CONVS] [-t TURNS] [-i TOKENS] [-w WORKERS]\n"
	    "       codexpool-bench stream [-j STREAMS] [-s SECONDS] [-k DELTAS] [-d DELAY_MS]\n"
	    "       codexpool-bench soak [-d SECONDS] [-c CONVS] [-k KILL_EVERY] [-T TURN_DEADLINE]\n"
	    "                            [-a ACCOUNTS] [-w WORKERS] [-A CONN_AGE] [-P PSS_SLACK_MB] [-s SEED]\n"
	    "                            [-R responses,chat,messages]\n");
	return 2;
}
