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
 * Everything it starts lives in a private temp dir and is stopped at exit.
 */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS	30000

struct setup {
	char		*dir;
	struct tl_sim	 sim;
	pid_t		 daemon;
	int		 port;
	char		 ctl[700];
	char		 conf[700];
	char		 log[700];
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "codexpool-bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	tl_kill_all();
	exit(1);
}

static int
ctl(struct setup *s, int print, const char *a1, const char *a2)
{
	char *bin = tl_program("ctl/codexpoolctl"), out[800], *text;
	char *argv[] = { bin, "-s", s->ctl, (char *)a1, (char *)a2, NULL };
	int rc;

	snprintf(out, sizeof(out), "%s/ctl.out", s->dir);
	unlink(out);
	rc = tl_run(out, argv, WAIT_MS);
	if (print && (text = tl_read_file(out, NULL)) != NULL) {
		fputs(text, stdout);
		free(text);
	}
	free(bin);
	return rc;
}

static void
start(struct setup *s, const char *sim_args, const char *conf_extra)
{
	char conf[4096], auth[700], out[800], *text, *p;
	char *bin = tl_program("daemon/codexpoold");
	char *argv[] = { bin, "-f", "-c", s->conf, NULL };
	int64_t end;

	memset(s, 0, sizeof(*s));
	if ((s->dir = tl_tmpdir()) == NULL)
		die("cannot make a temp dir");
	if (tl_sim_start(&s->sim, s->dir, sim_args) != 0)
		die("cannot start codexpool-sim (is it built? run from the build dir or set CODEXPOOL_BUILDDIR)");
	tl_sim_auth_path(&s->sim, 1, auth, sizeof(auth));
	snprintf(s->conf, sizeof(s->conf), "%s/codexpool.conf", s->dir);
	snprintf(s->ctl, sizeof(s->ctl), "%s/ctl.sock", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/daemon.log", s->dir);
	snprintf(conf, sizeof(conf),
	    "listen = 127.0.0.1:0\nworkers = 2\n"
	    "upstream_url = ws://127.0.0.1:%d/backend-api/codex/responses\n"
	    "auth_file = %s\ncontrol_socket = %s\ndata_dir = %s\nlog_level = warn\n%s\n",
	    s->sim.port, auth, s->ctl, s->dir, conf_extra ? conf_extra : "");
	tl_write_file(s->conf, conf, strlen(conf), 0600);
	s->daemon = tl_spawn(s->log, argv);
	free(bin);
	snprintf(out, sizeof(out), "%s/ctl.out", s->dir);
	end = tl_now_ms() + WAIT_MS;
	while (s->port == 0 && tl_now_ms() < end) {
		if (access(s->ctl, F_OK) == 0 && ctl(s, 0, "status", NULL) == 0 &&
		    (text = tl_read_file(out, NULL)) != NULL) {
			if ((p = strstr(text, "listen: 127.0.0.1:")) != NULL)
				s->port = atoi(p + strlen("listen: 127.0.0.1:"));
			free(text);
		}
		if (s->port == 0) {
			if (!tl_alive(s->daemon))
				die("codexpoold did not start; see %s", s->log);
			tl_msleep(50);
		}
	}
	if (s->port == 0)
		die("codexpoold did not answer on %s", s->ctl);
}

static void
stop(struct setup *s)
{
	if (s->daemon > 0)
		tl_stop(s->daemon, SIGTERM, WAIT_MS);
	tl_sim_stop(&s->sim);
	tl_rmrf(s->dir);
	free(s->dir);
}

static long long
sim_connections(struct setup *s)
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
turn_http(struct setup *s, json_object *history, const char *instructions,
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
	struct setup s;
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
	ctl(&s, 1, "status", NULL);
	printf("$ codexpoolctl show pools\n");
	ctl(&s, 1, "show", "pools");
	stop(&s);
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
	struct setup s;
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
	stop(&s);
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

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "demo") == 0)
		return cmd_demo();
	if (argc >= 2 && strcmp(argv[1], "cache") == 0)
		return cmd_cache(argc - 1, argv + 1);
	fprintf(stderr, "usage: codexpool-bench demo | cache [-c CONVS] [-t TURNS] [-b BACKENDS] [-k KIB]\n");
	return 2;
}
