/*
 * codexpool-bench's performance and scale modes (docs/BENCHMARKS.md):
 *
 *   codexpool-bench cpu [-c CONVS] [-t TURNS] [-i TOKENS] [-B BUILDDIR]
 *	C conversations x T turns of stateless streamed clients (full history
 *	every turn, ~TOKENS of instructions), interleaved; reports the CPU
 *	time each daemon process (supervisor, workers) and the simulator
 *	spent per turn.  CODEXPOOL_BENCH_WRAP="valgrind --tool=callgrind ..."
 *	runs the daemon under that command (the profile in BENCHMARKS.md).
 *
 *   codexpool-bench memory [-n 0,1000,2000] [-T] [-B BUILDDIR]
 *	Opens N idle pooled conversations (one turn each) and reports the
 *	PSS of the supervisor and the workers, and the PSS per conversation
 *	against N = the first count.  -T: the upstream is wss:// (the
 *	simulator serves TLS).  -B: the same run with the daemon of BUILDDIR
 *	first (the previous build), then this one.
 *
 *   codexpool-bench scale [-n 20,2000,19000] [-r RATE] [-m TURNS] [-i TOKENS]
 *			   [-w WORKERS] [-P SIM_PROCS] [-j OPENERS]
 *	Opens N pooled conversations (OPENERS clients in parallel), then runs
 *	M more turns on randomly chosen ones at RATE turns/s; reports errors,
 *	CPU per turn of the daemon and the simulator in the steady phase (ws
 *	pings included) and RSS/PSS at the end.  The simulator gets --procs
 *	SIM_PROCS (default: one per 15,000 connections).
 *
 *   codexpool-bench rss [-c CONVS] [-t TURNS] [-i TOKENS] [-w WORKERS]
 *	The daemon's RSS and PSS (all processes) idle after start, then the
 *	peak (100 ms samples) while CONVS conversations stream T turns each
 *	concurrently with ~TOKENS of instructions (#13: <= 12 / 48 MiB).
 *
 *   codexpool-bench stream [-j STREAMS] [-s SECONDS] [-k DELTAS] [-d DELAY_MS]
 *	J concurrent clients each streaming turns back to back (K deltas
 *	DELAY_MS apart), for S seconds, once straight to the simulator over
 *	HTTP/SSE and once through the daemon: events/s and CPU per 1000
 *	events of the daemon and of the simulator.
 *
 * Everything runs on loopback in a private temp dir.  In every mode,
 * CODEXPOOL_BENCH_CONF="key = value\n..." adds lines to the daemon's
 * configuration (e.g. "ws_ping_interval = 600s" to keep pings out of a
 * scale run), and CODEXPOOL_BENCH_WRAP runs the daemon under a command.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rig.h"
#include "scale.h"
#include "testlib.h"

#define TURN_WAIT_MS	60000
#define MAX_PROCS	64
#define MAX_COUNTS	16

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- processes: CPU and memory from /proc ------------------------------ */

/* The daemon's processes: the supervisor first, then its workers. */
static int
daemon_pids(pid_t sup, pid_t *out, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	char path[64], buf[512], *p;
	int n = 0;
	FILE *f;

	out[n++] = sup;
	while (d != NULL && (de = readdir(d)) != NULL && n < max) {
		pid_t pid = (pid_t)atoi(de->d_name), ppid;

		if (pid <= 0 || pid == sup)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) != NULL && (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == sup)
			out[n++] = pid;
		fclose(f);
	}
	if (d != NULL)
		closedir(d);
	return n;
}

/* CPU time of every thread of pid so far, in ns (schedstat: no tick rounding). */
static long long
cpu_ns(pid_t pid)
{
	char path[320];
	struct dirent *de;
	long long sum = 0, v;
	DIR *d;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid,
		    de->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fscanf(f, "%lld", &v) == 1)
			sum += v;
		fclose(f);
	}
	closedir(d);
	return sum;
}

/* VmRSS of pid in KiB (/proc/PID/status), -1 if unreadable. */
static long
rss_kib(pid_t pid)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* CPU ns of pid and its children (the simulator with --procs). */
static long long
tree_cpu_ns(pid_t pid)
{
	pid_t pids[MAX_PROCS];
	long long sum = 0;
	int i, n = daemon_pids(pid, pids, MAX_PROCS);

	for (i = 0; i < n; i++)
		sum += cpu_ns(pids[i]);
	return sum;
}

/* RSS and PSS (KiB) summed over pid and its children. */
static void
tree_mem(pid_t pid, long *rss, long *pss)
{
	pid_t pids[MAX_PROCS];
	int i, n = daemon_pids(pid, pids, MAX_PROCS);

	*rss = *pss = 0;
	for (i = 0; i < n; i++) {
		*rss += rss_kib(pids[i]);
		*pss += tl_pss_kib(pids[i]);
	}
}

static void
loadavg(char *buf, size_t size)
{
	FILE *f = fopen("/proc/loadavg", "r");

	snprintf(buf, size, "?");
	if (f != NULL) {
		if (fgets(buf, (int)size, f) != NULL)
			buf[strcspn(buf, " ")] = '\0';	/* the 1-minute figure */
		fclose(f);
	}
}

/* ---- the rig: simulator + daemon ---------------------------------------- */

/* "name: N" in `codexpoolctl status`, summed over its lines; -1 if absent. */
static long long
status_sum(struct rig *r, const char *name)
{
	char *text, *p, key[64];
	long long sum = -1;

	if (rig_ctl(r, false, &text, "status", NULL) != 0)
		return -1;
	snprintf(key, sizeof(key), "%s", name);
	for (p = text; (p = strstr(p, key)) != NULL; p += strlen(key)) {
		char *q = p + strlen(key);

		while (*q == ':' || *q == ' ' || *q == '=')
			q++;
		if (*q >= '0' && *q <= '9')
			sum = (sum < 0 ? 0 : sum) + atoll(q);
	}
	free(text);
	return sum;
}

struct usage_snap {
	int		 n;
	pid_t		 pid[MAX_PROCS];
	long long	 ns[MAX_PROCS];
	long long	 sim_ns;
};

static void
snap(struct rig *r, struct usage_snap *u)
{
	int i;

	u->n = daemon_pids(r->daemon, u->pid, MAX_PROCS);
	for (i = 0; i < u->n; i++)
		u->ns[i] = cpu_ns(u->pid[i]);
	u->sim_ns = tree_cpu_ns(r->sim.pid);
}

/* CPU ns since a: the supervisor, the workers together, the simulator. */
static void
delta(const struct usage_snap *a, const struct usage_snap *b, long long *sup,
    long long *workers, long long *sim)
{
	int i, j;

	*sup = b->ns[0] - a->ns[0];
	*workers = 0;
	for (i = 1; i < b->n; i++)
		for (j = 1; j < a->n; j++)
			if (a->pid[j] == b->pid[i])
				*workers += b->ns[i] - a->ns[j];
	*sim = b->sim_ns - a->sim_ns;
}

/* ---- turns ---------------------------------------------------------------- */

/* One non-streamed turn: input is one user message; 0 if it answered 200. */
static int
turn_small(struct rig *r, const char *instructions, const char *key, const char *q)
{
	json_object *input = json_object_new_array();
	struct tl_req rq = { .instructions = instructions, .prompt_cache_key = key,
	    .input = input };
	struct tl_response resp;
	char *body;
	int rc;

	json_object_array_add(input, tl_msg("user", q));
	body = tl_req_http(&rq);
	json_object_put(input);
	rc = tl_http("127.0.0.1", r->port, "POST", "/v1/responses", NULL, body,
	    strlen(body), &resp);
	free(body);
	if (rc != 0)
		return -1;
	rc = resp.status == 200 ? 0 : -1;
	if (rc != 0)
		fprintf(stderr, "codexpool-bench: HTTP %d: %.200s\n", resp.status,
		    resp.body ? resp.body : "");
	tl_response_free(&resp);
	return rc;
}

/* One streamed turn of a stateless client, history extended with the reply. */
static int
turn_stream(struct rig *r, json_object *history, const char *instructions,
    const char *key)
{
	struct tl_req rq = { .instructions = instructions, .prompt_cache_key = key,
	    .input = history, .stream = 1 };
	struct tl_stream *st;
	char *body = tl_req_http(&rq), *ev = NULL, *data = NULL, *sse = NULL;
	size_t ssel = 0;
	int rc;

	st = tl_stream_open(NULL, "127.0.0.1", r->port, "POST", "/v1/responses", NULL,
	    body, strlen(body));
	free(body);
	if (st == NULL || tl_stream_status(st) != 200) {
		if (st != NULL)
			tl_stream_close(st, 0);
		return -1;
	}
	while ((rc = tl_stream_read_event(st, &ev, &data, TURN_WAIT_MS)) == 1) {
		size_t dl = strlen(data), el = ev ? strlen(ev) : 0;

		if ((sse = realloc(sse, ssel + el + dl + 32)) == NULL)
			die("out of memory");
		ssel += (size_t)sprintf(sse + ssel, "event: %s\ndata: %s\n\n", ev ? ev : "",
		    data);
		free(ev);
		free(data);
		ev = data = NULL;
	}
	tl_stream_close(st, 0);
	if (sse == NULL)
		return -1;
	rc = tl_history_add_sse(history, sse) > 0 ? 0 : -1;
	free(sse);
	return rc;
}

/* ~tokens x 4 bytes of text, different per seed. */
static char *
instructions_of(int tokens, unsigned seed)
{
	char *t = tl_text((size_t)tokens * 4 / 1024 + 1, seed);

	t[(size_t)tokens * 4] = '\0';
	return t;
}

static int
parse_counts(const char *arg, int *v, int max)
{
	char buf[256], *tok, *save = NULL;
	int n = 0;

	snprintf(buf, sizeof(buf), "%s", arg);
	for (tok = strtok_r(buf, ",", &save); tok != NULL && n < max;
	    tok = strtok_r(NULL, ",", &save))
		v[n++] = atoi(tok);
	return n;
}

/* ---- cpu: where a turn's CPU goes ----------------------------------------- */

/* Under callgrind, the profile counts the steady state only. */
static void
zero_profile(struct rig *r)
{
	const char *wrap = getenv("CODEXPOOL_BENCH_WRAP");
	pid_t pids[MAX_PROCS];
	char cmd[64];
	int i, n;

	if (wrap == NULL || strstr(wrap, "callgrind") == NULL)
		return;
	n = daemon_pids(r->daemon, pids, MAX_PROCS);
	for (i = 0; i < n; i++) {
		snprintf(cmd, sizeof(cmd), "callgrind_control -z %d >/dev/null", (int)pids[i]);
		if (system(cmd) != 0)
			fprintf(stderr, "codexpool-bench: %s failed\n", cmd);
	}
}

int
cmd_cpu(int argc, char **argv)
{
	int convs = 20, turns = 8, tokens = 7000, ch, c, t, i;
	const char *builddir = NULL;
	struct usage_snap a, b;
	long long sup, workers, sim;
	json_object **hist;
	char **instr, key[64], q[96], conf[96], load[32];
	struct rig r;
	double t0;

	optind = 1;
	while ((ch = getopt(argc, argv, "c:t:i:B:")) != -1) {
		switch (ch) {
		case 'c': convs = atoi(optarg); break;
		case 't': turns = atoi(optarg); break;
		case 'i': tokens = atoi(optarg); break;
		case 'B': builddir = optarg; break;
		default: die("usage: codexpool-bench cpu [-c CONVS] [-t TURNS] [-i TOKENS] "
		    "[-B BUILDDIR]");
		}
	}
	if (convs < 1 || convs > 10000 || turns < 2 || tokens < 1 || tokens > 200000)
		die("need 1..10000 conversations, 2 turns, 1..200000 tokens");
	hist = calloc((size_t)convs, sizeof(*hist));
	instr = calloc((size_t)convs, sizeof(*instr));
	if (hist == NULL || instr == NULL)
		die("out of memory");
	snprintf(conf, sizeof(conf), "workers = 2\nws_pool_max_per_account = %d",
	    convs > 8 ? convs : 8);
	rig_start(&r, builddir, false, "--backends 1 --accounts 1 --seed 42", conf);
	for (c = 0; c < convs; c++) {
		hist[c] = json_object_new_array();
		instr[c] = instructions_of(tokens, (unsigned)c + 100);
	}
	/* Turn 1 of each opens its connection: the steady state is turns >= 2. */
	snap(&r, &a);
	t0 = now_s();
	for (t = 0; t < turns; t++) {
		if (t == 1) {
			zero_profile(&r);
			snap(&r, &a);
			t0 = now_s();
		}
		for (c = 0; c < convs; c++) {
			snprintf(key, sizeof(key), "bench-cpu-%d", c);
			snprintf(q, sizeof(q), "question %d of conversation %d", t + 1, c);
			json_object_array_add(hist[c], tl_msg("user", q));
			if (turn_stream(&r, hist[c], instr[c], key) != 0)
				die("turn %d of conversation %d failed; see %s", t + 1, c, r.log);
		}
	}
	snap(&r, &b);
	delta(&a, &b, &sup, &workers, &sim);
	loadavg(load, sizeof(load));
	t = convs * (turns - 1);
	printf("%d conversations x %d turns, ~%d tokens of instructions, full history, "
	    "stream:true; turns 2..%d: %d turns in %.2f s; load average %s\n\n",
	    convs, turns, tokens, turns, t, now_s() - t0, load);
	printf("| process | CPU per turn (ms) |\n|---|---|\n");
	printf("| supervisor | %.3f |\n| workers | %.3f |\n| daemon total | %.3f |\n"
	    "| simulator | %.3f |\n", sup / 1e6 / t, workers / 1e6 / t,
	    (sup + workers) / 1e6 / t, sim / 1e6 / t);
	rig_stop(&r);
	for (i = 0; i < convs; i++) {
		json_object_put(hist[i]);
		free(instr[i]);
	}
	free(hist);
	free(instr);
	return 0;
}

/* ---- memory: PSS per idle pooled conversation ------------------------------ */

static long
rig_pss(struct rig *r, long *sup)
{
	pid_t pids[MAX_PROCS];
	long sum = 0, v;
	int i, n = daemon_pids(r->daemon, pids, MAX_PROCS);

	for (i = 0; i < n; i++) {
		if ((v = tl_pss_kib(pids[i])) < 0)
			die("cannot read the PSS of %d", (int)pids[i]);
		if (i == 0)
			*sup = v;
		sum += v;
	}
	return sum;
}

/* Opens conversations [from, to) with one turn each. */
static void
open_convs(struct rig *r, const char *tag, const char *instructions, int from, int to)
{
	char key[64];
	int c;

	for (c = from; c < to; c++) {
		snprintf(key, sizeof(key), "%s-%d", tag, c);
		if (turn_small(r, instructions, key, "hello") != 0)
			die("opening conversation %d failed; see %s", c, r->log);
	}
}

/*
 * Opens conversations [0, n) with `openers` clients in parallel (client j
 * takes j, j + openers, ...); returns how many turns failed.  The clients
 * are forked processes: die() must not run there (it kills the rig).
 */
static int
open_convs_parallel(struct rig *r, const char *tag, const char *instructions,
    int n, int openers)
{
	int fds[2], j, errors = 0, status, e;
	pid_t pids[MAX_PROCS];
	char key[64];

	if (openers <= 1) {
		open_convs(r, tag, instructions, 0, n);
		return 0;
	}
	if (pipe(fds) == -1)
		die("pipe: %s", strerror(errno));
	for (j = 0; j < openers; j++) {
		if ((pids[j] = fork()) == -1)
			die("fork: %s", strerror(errno));
		if (pids[j] == 0) {
			int c, failed = 0;

			close(fds[0]);
			for (c = j; c < n; c += openers) {
				snprintf(key, sizeof(key), "%s-%d", tag, c);
				if (turn_small(r, instructions, key, "hello") != 0)
					failed++;
			}
			if (write(fds[1], &failed, sizeof(failed)) != (ssize_t)sizeof(failed))
				_exit(1);
			_exit(0);
		}
	}
	close(fds[1]);
	for (j = 0; j < openers; j++)
		if (read(fds[0], &e, sizeof(e)) == (ssize_t)sizeof(e))
			errors += e;
	close(fds[0]);
	for (j = 0; j < openers; j++)	/* not wait(): the sim and daemon are children too */
		(void)waitpid(pids[j], &status, 0);
	return errors;
}

/* Waits until the daemon reports n pooled connections open and idle. */
static void
wait_idle(struct rig *r, int n)
{
	int64_t end = tl_now_ms() + TURN_WAIT_MS;
	long long open = -1;

	while (tl_now_ms() < end) {
		open = status_sum(r, "pooled_open");
		if (open >= n && status_sum(r, "pooled_busy") == 0)
			break;
		tl_msleep(200);
	}
	if (open < n)
		die("%lld pooled connections open, not %d; see %s", open, n, r->log);
	tl_msleep(11000);	/* the workers sweep (and trim) every 10 s */
}

static void
memory_pass(const char *label, const char *builddir, bool tls, const int *counts,
    int ncounts)
{
	char conf[128], load[32];
	char *instr = instructions_of(100, 1);
	long sup = 0, sum, sup0 = 0, sum0 = 0;
	struct rig r;
	int i, have = 0, max = 0;

	for (i = 0; i < ncounts; i++)
		if (counts[i] > max)
			max = counts[i];
	snprintf(conf, sizeof(conf), "workers = 2\nws_pool_max_per_account = %d\n"
	    "max_clients = 1024", max > 8 ? max : 8);
	rig_start(&r, builddir, tls, "--backends 1 --accounts 1", conf);
	for (i = 0; i < ncounts; i++) {
		open_convs(&r, "bench-mem", instr, have, counts[i]);
		have = counts[i] > have ? counts[i] : have;
		wait_idle(&r, have);
		sum = rig_pss(&r, &sup);
		if (i == 0) {
			sum0 = sum;
			sup0 = sup;
		}
		loadavg(load, sizeof(load));
		printf("| %s | %s | %d | %ld | %ld | %ld | %s |\n", label,
		    tls ? "wss" : "ws", have, sum, sup, sum - sup, load);
		if (have > counts[0])
			printf("| %s | per conversation | | %.1f | %.1f | %.1f | |\n", label,
			    (double)(sum - sum0) / (have - counts[0]),
			    (double)(sup - sup0) / (have - counts[0]),
			    (double)((sum - sup) - (sum0 - sup0)) / (have - counts[0]));
	}
	rig_stop(&r);
	free(instr);
}

int
cmd_memory(int argc, char **argv)
{
	int counts[MAX_COUNTS] = { 0, 1000, 2000 }, ncounts = 3, ch;
	const char *base = NULL;
	bool tls = false;

	optind = 1;
	while ((ch = getopt(argc, argv, "n:TB:")) != -1) {
		switch (ch) {
		case 'n': ncounts = parse_counts(optarg, counts, MAX_COUNTS); break;
		case 'T': tls = true; break;
		case 'B': base = optarg; break;
		default: die("usage: codexpool-bench memory [-n 0,1000,2000] [-T] [-B BUILDDIR]");
		}
	}
	if (ncounts < 2)
		die("need at least two counts");
	printf("PSS in KiB of codexpoold (2 workers), N idle pooled conversations, one account\n\n");
	printf("| build | upstream | N | PSS all | supervisor | workers | load |\n"
	    "|---|---|---|---|---|---|---|\n");
	if (base != NULL) {
		char *cur = getenv("CODEXPOOL_BUILDDIR") ? strdup(getenv("CODEXPOOL_BUILDDIR")) :
		    NULL;
		memory_pass("previous", base, tls, counts, ncounts);
		if (cur != NULL)
			setenv("CODEXPOOL_BUILDDIR", cur, 1);
		else
			unsetenv("CODEXPOOL_BUILDDIR");
		free(cur);
	}
	memory_pass("this", NULL, tls, counts, ncounts);
	return 0;
}

/* ---- scale: CPU per turn as the pooled conversations grow ------------------- */

struct scale_opts {
	int	 rate;
	int	 turns;
	int	 tokens;
	int	 workers;
	int	 sim_procs;	/* 0: one per SIM_CONNS_PER_PROC connections */
	int	 openers;
};

/* A simulator process holds at most RLIMIT_NOFILE (20,000 here) sockets,
 * and lws' poll() loop slows with each: 15,000 per process at most. */
#define SIM_CONNS_PER_PROC	15000

static void
scale_pass(int n, const struct scale_opts *so)
{
	char conf[512], key[64], q[64], load[32], simargs[128];
	char *instr = instructions_of(so->tokens, 3);
	struct usage_snap a, b;
	long long sup, wk, sim;
	long rss[3], pss[3], v;
	pid_t pids[MAX_PROCS];
	int i, errors = 0, open_errors, procs, np;
	double t0, t1, open_s;
	struct rig r;

	procs = so->sim_procs > 0 ? so->sim_procs :
	    (n + SIM_CONNS_PER_PROC - 1) / SIM_CONNS_PER_PROC;
	if (procs < 1)
		procs = 1;
	snprintf(simargs, sizeof(simargs), "--backends 1 --accounts 1 --procs %d",
	    procs);
	snprintf(conf, sizeof(conf), "workers = %d\nws_pool_max_per_account = %d\n",
	    so->workers, n > 8 ? n : 8);
	rig_start(&r, NULL, false, simargs, conf);
	t0 = now_s();
	open_errors = open_convs_parallel(&r, "bench-scale", instr, n, so->openers);
	open_s = now_s() - t0;
	wait_idle(&r, n - open_errors);
	srandom(42);
	zero_profile(&r);
	snap(&r, &a);
	t0 = now_s();
	for (i = 0; i < so->turns; i++) {
		double due = t0 + (double)i / so->rate, wait = due - now_s();

		if (wait > 0)
			usleep((useconds_t)(wait * 1e6));
		snprintf(key, sizeof(key), "bench-scale-%ld", random() % n);
		snprintf(q, sizeof(q), "turn %d", i);
		if (turn_small(&r, instr, key, q) != 0)
			errors++;
	}
	t1 = now_s();
	snap(&r, &b);
	delta(&a, &b, &sup, &wk, &sim);
	loadavg(load, sizeof(load));
	/* Memory at the end: supervisor, workers, simulator (all procs). */
	np = daemon_pids(r.daemon, pids, MAX_PROCS);
	memset(rss, 0, sizeof(rss));
	memset(pss, 0, sizeof(pss));
	for (i = 0; i < np; i++) {
		rss[i ? 1 : 0] += (v = rss_kib(pids[i])) > 0 ? v : 0;
		pss[i ? 1 : 0] += (v = tl_pss_kib(pids[i])) > 0 ? v : 0;
	}
	tree_mem(r.sim.pid, &rss[2], &pss[2]);
	printf("| %d | %d | %d | %.1f | %d | %d | %.0f | %d | %.3f | %.3f | %.3f | %.3f "
	    "| %lld | %ld / %ld | %ld / %ld | %ld / %ld | %s |\n", n, so->workers, procs,
	    open_s, open_errors, so->turns, so->turns / (t1 - t0), errors,
	    sup / 1e6 / so->turns, wk / 1e6 / so->turns, (sup + wk) / 1e6 / so->turns,
	    sim / 1e6 / so->turns, status_sum(&r, "pooled_open"), rss[0] / 1024,
	    pss[0] / 1024, rss[1] / 1024, pss[1] / 1024, rss[2] / 1024, pss[2] / 1024,
	    load);
	rig_stop(&r);
	free(instr);
}

/* Raises our RLIMIT_NOFILE to the hard limit: the simulator inherits it. */
static unsigned long long
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	return (unsigned long long)rl.rlim_cur;
}

int
cmd_scale(int argc, char **argv)
{
	int counts[MAX_COUNTS] = { 20, 2000, 19000 }, ncounts = 3, ch, i;
	struct scale_opts so = { .rate = 200, .turns = 2000, .tokens = 1500,
	    .workers = 2, .sim_procs = 0, .openers = 1 };
	unsigned long long nofile;

	optind = 1;
	while ((ch = getopt(argc, argv, "n:r:m:i:w:P:j:")) != -1) {
		switch (ch) {
		case 'n': ncounts = parse_counts(optarg, counts, MAX_COUNTS); break;
		case 'r': so.rate = atoi(optarg); break;
		case 'm': so.turns = atoi(optarg); break;
		case 'i': so.tokens = atoi(optarg); break;
		case 'w': so.workers = atoi(optarg); break;
		case 'P': so.sim_procs = atoi(optarg); break;
		case 'j': so.openers = atoi(optarg); break;
		default: die("usage: codexpool-bench scale [-n 20,2000,19000] [-r RATE] "
		    "[-m TURNS] [-i TOKENS] [-w WORKERS] [-P SIM_PROCS] [-j OPENERS]");
		}
	}
	if (ncounts < 1 || so.rate < 1 || so.turns < 1 || so.tokens < 1 ||
	    so.workers < 1 || so.sim_procs < 0 || so.sim_procs > 64 ||
	    so.openers < 1 || so.openers > MAX_PROCS)
		die("bad arguments");
	nofile = raise_nofile();
	printf("N pooled conversations (one turn each, opened by %d clients), then %d "
	    "turns at %d/s on random ones, ~%d tokens of instructions, stream:false, "
	    "RLIMIT_NOFILE %llu; CPU ms per steady turn; RSS / PSS MiB at the end\n\n",
	    so.openers, so.turns, so.rate, so.tokens, nofile);
	printf("| N | workers | sim procs | opening N (s) | open errors | turns | turns/s "
	    "| errors | supervisor ms/turn | workers ms/turn | daemon ms/turn | "
	    "sim ms/turn | pooled after | supervisor RSS / PSS | workers RSS / PSS | "
	    "sim RSS / PSS | load |\n"
	    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < ncounts; i++)
		scale_pass(counts[i], &so);
	return 0;
}

/* ---- rss: the daemon's memory, idle and under 200 streams ------------------ */

struct mem_sample {
	long	 rss;		/* KiB, all daemon processes */
	long	 pss;
	long	 sup_rss;
	long	 workers_rss;
};

static void
daemon_mem(struct rig *r, struct mem_sample *m)
{
	pid_t pids[MAX_PROCS];
	int i, n = daemon_pids(r->daemon, pids, MAX_PROCS);
	long v, p;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < n; i++) {
		v = rss_kib(pids[i]);
		p = tl_pss_kib(pids[i]);
		if (v < 0 || p < 0)
			continue;	/* a worker that just ended */
		m->rss += v;
		m->pss += p;
		if (i == 0)
			m->sup_rss = v;
		else
			m->workers_rss += v;
	}
}

/* One client: T streamed turns of one conversation (full history). */
static void
rss_client(struct rig *r, int id, int turns, int tokens, int fd)
{
	json_object *hist = json_object_new_array();
	char *instr = instructions_of(tokens, (unsigned)id + 1000), key[64], q[64];
	int t, counts[2] = { 0, 0 };

	snprintf(key, sizeof(key), "bench-rss-%d", id);
	for (t = 0; t < turns; t++) {
		snprintf(q, sizeof(q), "question %d of conversation %d", t + 1, id);
		json_object_array_add(hist, tl_msg("user", q));
		if (turn_stream(r, hist, instr, key) == 0)
			counts[0]++;
		else
			counts[1]++;
	}
	if (write(fd, counts, sizeof(counts)) != (ssize_t)sizeof(counts))
		_exit(1);
	_exit(0);
}

int
cmd_rss(int argc, char **argv)
{
	int convs = 200, turns = 3, tokens = 7000, workers = 2, ch, i, ok = 0, bad = 0;
	int fds[2], counts[2], status, running, samples = 0, nprocs;
	struct mem_sample idle, m, peak;
	char simargs[160], conf[160], load[32];
	pid_t *pids, dp[MAX_PROCS];
	struct rig r;
	double t0;

	optind = 1;
	while ((ch = getopt(argc, argv, "c:t:i:w:")) != -1) {
		switch (ch) {
		case 'c': convs = atoi(optarg); break;
		case 't': turns = atoi(optarg); break;
		case 'i': tokens = atoi(optarg); break;
		case 'w': workers = atoi(optarg); break;
		default: die("usage: codexpool-bench rss [-c CONVS] [-t TURNS] [-i TOKENS] "
		    "[-w WORKERS]");
		}
	}
	if (convs < 1 || convs > 1000 || turns < 1 || tokens < 1 || tokens > 200000 ||
	    workers < 1 || workers > 16)
		die("need 1..1000 conversations, 1 turn, 1..200000 tokens, 1..16 workers");
	raise_nofile();
	/* Streams long enough that all of them overlap: 32 deltas 10 ms apart. */
	snprintf(simargs, sizeof(simargs), "--backends 1 --accounts 1 --deltas 32 "
	    "--delta-delay-ms 10");
	snprintf(conf, sizeof(conf), "workers = %d\nws_pool_max_per_account = %d\n"
	    "max_clients = 1024\n", workers, convs > 8 ? convs : 8);
	rig_start(&r, NULL, false, simargs, conf);
	/* Idle: every worker up, nothing served yet. */
	for (i = 0; i < 100 && daemon_pids(r.daemon, dp, MAX_PROCS) < 1 + workers; i++)
		tl_msleep(100);
	tl_msleep(2000);
	daemon_mem(&r, &idle);
	nprocs = daemon_pids(r.daemon, dp, MAX_PROCS);

	if ((pids = calloc((size_t)convs, sizeof(*pids))) == NULL || pipe(fds) == -1)
		die("out of memory or pipes");
	peak = idle;
	t0 = now_s();
	for (i = 0; i < convs; i++) {
		if ((pids[i] = fork()) == -1)
			die("fork: %s", strerror(errno));
		if (pids[i] == 0) {
			close(fds[0]);
			rss_client(&r, i, turns, tokens, fds[1]);
		}
	}
	close(fds[1]);
	/* Sample every 100 ms until every client is done. */
	for (running = convs; running > 0; ) {
		for (i = 0; i < convs; i++)
			if (pids[i] > 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
				pids[i] = -1;
				running--;
			}
		daemon_mem(&r, &m);
		samples++;
		if (m.rss > peak.rss)
			peak.rss = m.rss;
		if (m.pss > peak.pss)
			peak.pss = m.pss;
		if (m.sup_rss > peak.sup_rss)
			peak.sup_rss = m.sup_rss;
		if (m.workers_rss > peak.workers_rss)
			peak.workers_rss = m.workers_rss;
		if (running > 0)
			tl_msleep(100);
	}
	for (i = 0; i < convs; i++)
		if (read(fds[0], counts, sizeof(counts)) == (ssize_t)sizeof(counts)) {
			ok += counts[0];
			bad += counts[1];
		}
	close(fds[0]);
	loadavg(load, sizeof(load));
	printf("codexpoold, %d workers (%d processes), one account; idle = 2 s after "
	    "start; then %d concurrent conversations x %d streamed turns (full history, "
	    "~%d tokens of instructions each, 32 deltas 10 ms apart), RSS and PSS "
	    "summed over the processes every 100 ms (%d samples, %.1f s); %d turns "
	    "ok, %d failed; load average %s\n\n", workers, nprocs, convs, turns, tokens,
	    samples, now_s() - t0, ok, bad, load);
	printf("| phase | RSS all (MiB) | PSS all (MiB) | supervisor RSS (MiB) | "
	    "workers RSS (MiB) | goal (RSS all) |\n|---|---|---|---|---|---|\n");
	printf("| idle | %.1f | %.1f | %.1f | %.1f | <= 12 |\n", idle.rss / 1024.0,
	    idle.pss / 1024.0, idle.sup_rss / 1024.0, idle.workers_rss / 1024.0);
	printf("| peak, %d streams | %.1f | %.1f | %.1f | %.1f | <= 48 |\n", convs,
	    peak.rss / 1024.0, peak.pss / 1024.0, peak.sup_rss / 1024.0,
	    peak.workers_rss / 1024.0);
	printf("\n(peaks are per column: the supervisor's and the workers' need not "
	    "fall in the same sample)\n");
	if (getenv("CODEXPOOL_BENCH_SMAPS") != NULL) {
		char cmd[128];

		nprocs = daemon_pids(r.daemon, dp, MAX_PROCS);
		for (i = 0; i < nprocs; i++) {
			snprintf(cmd, sizeof(cmd), "cp /proc/%d/smaps %s/smaps.%d",
			    (int)dp[i], getenv("CODEXPOOL_BENCH_SMAPS"), i);
			if (system(cmd) != 0)
				fprintf(stderr, "codexpool-bench: %s failed\n", cmd);
		}
	}
	free(pids);
	rig_stop(&r);
	return 0;
}

/* ---- stream: relayed events per second ------------------------------------ */

struct stream_target {
	int		 port;
	const char	*path;
	char		*headers;	/* NULL for the daemon */
};

/* One client: streamed turns back to back until `until`; writes events,
 * turns, errors to fd. */
static void
stream_client(const struct stream_target *tg, int id, double until, int fd)
{
	long long counts[3] = { 0, 0, 0 };
	char key[64], *body, *ev = NULL, *data = NULL;
	json_object *input = json_object_new_array();
	struct tl_req rq = { .prompt_cache_key = key, .input = input, .stream = 1 };
	struct tl_stream *st;
	int rc;

	snprintf(key, sizeof(key), "bench-stream-%d", id);
	json_object_array_add(input, tl_msg("user", "stream please"));
	body = tl_req_http(&rq);
	while (now_s() < until) {
		st = tl_stream_open(NULL, "127.0.0.1", tg->port, "POST", tg->path,
		    tg->headers, body, strlen(body));
		if (st == NULL || tl_stream_status(st) != 200) {
			counts[2]++;
			if (st != NULL)
				tl_stream_close(st, 0);
			usleep(10000);
			continue;
		}
		while ((rc = tl_stream_read_event(st, &ev, &data, TURN_WAIT_MS)) == 1) {
			counts[0]++;
			free(ev);
			free(data);
			ev = data = NULL;
		}
		if (rc < 0)
			counts[2]++;
		counts[1]++;
		tl_stream_close(st, 0);
	}
	free(body);
	json_object_put(input);
	if (write(fd, counts, sizeof(counts)) != (ssize_t)sizeof(counts))
		_exit(1);
	_exit(0);
}

static void
stream_pass(struct rig *r, const char *label, const struct stream_target *tg,
    int streams, int seconds)
{
	long long counts[3], events = 0, turns = 0, errors = 0, sup, wk, sim;
	struct usage_snap a, b;
	int fds[2], i, status;
	double t0, t1, until;
	char load[32];
	pid_t *pids = calloc((size_t)streams, sizeof(*pids));

	if (pipe(fds) == -1)
		die("pipe: %s", strerror(errno));
	snap(r, &a);
	t0 = now_s();
	until = t0 + seconds;
	if (pids == NULL)
		die("out of memory");
	for (i = 0; i < streams; i++) {
		if ((pids[i] = fork()) == -1)
			die("fork: %s", strerror(errno));
		if (pids[i] == 0) {
			close(fds[0]);
			stream_client(tg, i, until, fds[1]);
		}
	}
	close(fds[1]);
	for (i = 0; i < streams; i++) {
		if (read(fds[0], counts, sizeof(counts)) != (ssize_t)sizeof(counts))
			break;
		events += counts[0];
		turns += counts[1];
		errors += counts[2];
	}
	for (i = 0; i < streams; i++)	/* not wait(): the sim and daemon are children too */
		(void)waitpid(pids[i], &status, 0);
	free(pids);
	t1 = now_s();
	snap(r, &b);
	close(fds[0]);
	delta(&a, &b, &sup, &wk, &sim);
	if (tg->headers != NULL)
		sup = wk = 0;	/* the daemon idled */
	loadavg(load, sizeof(load));
	printf("| %s | %d | %lld | %lld | %.0f | %.1f | %.1f | %.1f | %s |\n", label,
	    streams, turns, errors, events / (t1 - t0),
	    events ? (sup + wk) / 1e6 / events * 1000 : 0,
	    events ? sim / 1e6 / events * 1000 : 0,
	    (double)turns / (t1 - t0), load);
}

int
cmd_stream(int argc, char **argv)
{
	int streams = 64, seconds = 10, deltas = 64, delay = 1, ch;
	char simargs[160], conf[96];
	struct stream_target daemon_tg, direct_tg;
	struct tl_account acct;
	struct rig r;

	optind = 1;
	while ((ch = getopt(argc, argv, "j:s:k:d:")) != -1) {
		switch (ch) {
		case 'j': streams = atoi(optarg); break;
		case 's': seconds = atoi(optarg); break;
		case 'k': deltas = atoi(optarg); break;
		case 'd': delay = atoi(optarg); break;
		default: die("usage: codexpool-bench stream [-j STREAMS] [-s SECONDS] "
		    "[-k DELTAS] [-d DELAY_MS]");
		}
	}
	if (streams < 1 || streams > 1000 || seconds < 1 || deltas < 1 || delay < 0)
		die("need 1..1000 streams, 1 second, 1 delta");
	snprintf(simargs, sizeof(simargs), "--backends 1 --accounts 1 --deltas %d "
	    "--delta-delay-ms %d", deltas, delay);
	snprintf(conf, sizeof(conf), "workers = 2\nws_pool_max_per_account = %d\n",
	    streams > 8 ? streams : 8);
	rig_start(&r, NULL, false, simargs, conf);
	if (tl_sim_account(&r.sim, 1, &acct) != 0)
		die("cannot read the simulator's account");
	direct_tg.port = r.sim.port;
	direct_tg.path = "/backend-api/codex/responses";
	direct_tg.headers = tl_auth_headers(&acct);
	daemon_tg.port = r.port;
	daemon_tg.path = "/v1/responses";
	daemon_tg.headers = NULL;
	printf("%d concurrent streams, turns back to back for %d s, %d deltas %d ms apart "
	    "per turn; CPU of the daemon (supervisor + workers) and of the simulator\n\n",
	    streams, seconds, deltas, delay);
	printf("| path | streams | turns | errors | events/s | daemon CPU ms per 1000 events | "
	    "simulator CPU ms per 1000 events | turns/s | load |\n"
	    "|---|---|---|---|---|---|---|---|---|\n");
	stream_pass(&r, "direct", &direct_tg, streams, seconds);
	stream_pass(&r, "daemon", &daemon_tg, streams, seconds);
	free(direct_tg.headers);
	tl_account_free(&acct);
	rig_stop(&r);
	return 0;
}
