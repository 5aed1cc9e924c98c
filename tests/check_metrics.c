/*
 * Prometheus metrics: the text format writer (HELP/TYPE, escaping,
 * cumulative histogram buckets), then GET /metrics on the real daemon:
 * turn, token and histogram counters move by what the turns did, pool
 * decisions match `codexpoolctl status`, API keys guard /metrics on the
 * API listener, and metrics_listen serves it on a listener of its own.
 * The exposition text is parsed, strictly, by the small parser below.
 */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "e2e.h"
#include "metrics.h"

/* ---- a tiny exposition parser ---------------------------------------- */

#define MAX_LABELS	8

struct sample {
	char	 name[128];
	int	 nlabels;
	char	 key[MAX_LABELS][64];
	char	 val[MAX_LABELS][256];
	double	 value;
};

struct scrape {
	struct sample	*s;
	int		 n;
};

static int
name_char(int c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	    (!first && c >= '0' && c <= '9');
}

/* The family a sample belongs to: histograms add _bucket, _sum, _count. */
static int
family_declared(const char *types, const char *name)
{
	static const char *const suffixes[] = { "", "_bucket", "_sum", "_count" };
	char want[200];
	size_t i, n = strlen(name);

	for (i = 0; i < 4; i++) {
		size_t sl = strlen(suffixes[i]);
		if (sl > n || strcmp(name + n - sl, suffixes[i]) != 0)
			continue;
		snprintf(want, sizeof(want), "\n# TYPE %.*s %s", (int)(n - sl), name,
		    i == 0 ? "" : "histogram");
		if (strstr(types, want) != NULL)
			return 1;
	}
	return 0;
}

/*
 * Parses text into samples; -1 (with why) on any line that is not
 * "# HELP name text", "# TYPE name type" or a sample of a family whose
 * HELP and TYPE came before it.
 */
static int
parse_exposition(const char *text, struct scrape *sc, char *why, size_t whylen)
{
	char *types = calloc(1, strlen(text) + 2);
	const char *p = text, *eol;
	int rc = -1;

	types[0] = '\n';
	sc->s = NULL;
	sc->n = 0;
	for (; *p != '\0'; p = *eol ? eol + 1 : eol) {
		struct sample smp;
		const char *q;
		char *end, num[64];
		size_t n;

		eol = strchr(p, '\n');
		if (eol == NULL) {
			snprintf(why, whylen, "no newline at the end");
			goto out;
		}
		if (strncmp(p, "# HELP ", 7) == 0)
			continue;
		if (strncmp(p, "# TYPE ", 7) == 0) {
			char fam[128], help[160];
			q = p + 7;
			n = strcspn(q, " ");
			snprintf(fam, sizeof(fam), "%.*s", (int)n, q);
			snprintf(help, sizeof(help), "# HELP %s ", fam);
			if (strstr(text, help) == NULL || strstr(text, help) > p) {
				snprintf(why, whylen, "no HELP before TYPE of %s", fam);
				goto out;
			}
			q += n + 1;
			if (strncmp(q, "counter\n", 8) && strncmp(q, "gauge\n", 6) &&
			    strncmp(q, "histogram\n", 10)) {
				snprintf(why, whylen, "bad type: %.*s", (int)(eol - p), p);
				goto out;
			}
			/* "\n# TYPE fam", then the type, for family_declared() */
			strncat(types, p, (size_t)(eol - p));
			strcat(types, "\n");
			/* a counter or gauge also matches the bare "# TYPE name " */
			continue;
		}
		memset(&smp, 0, sizeof(smp));
		for (q = p, n = 0; name_char((unsigned char)*q, q == p); q++)
			if (n < sizeof(smp.name) - 1)
				smp.name[n++] = *q;
		if (n == 0) {
			snprintf(why, whylen, "bad line: %.*s", (int)(eol - p), p);
			goto out;
		}
		if (*q == '{') {
			q++;
			while (*q != '}') {
				char *k, *v;
				if (smp.nlabels == MAX_LABELS)
					goto bad;
				k = smp.key[smp.nlabels];
				v = smp.val[smp.nlabels];
				for (n = 0; name_char((unsigned char)*q, n == 0); q++)
					if (n < 63)
						k[n++] = *q;
				if (n == 0 || q[0] != '=' || q[1] != '"')
					goto bad;
				for (q += 2, n = 0; *q != '"'; q++) {
					char c = *q;
					if (c == '\n' || c == '\0')
						goto bad;
					if (c == '\\') {
						q++;
						if (*q == 'n')
							c = '\n';
						else if (*q == '\\' || *q == '"')
							c = *q;
						else
							goto bad;
					}
					if (n < 255)
						v[n++] = c;
				}
				q++;
				smp.nlabels++;
				if (*q == ',')
					q++;
				else if (*q != '}')
					goto bad;
			}
			q++;
		}
		if (*q++ != ' ')
			goto bad;
		n = (size_t)(eol - q);
		if (n == 0 || n >= sizeof(num))
			goto bad;
		memcpy(num, q, n);
		num[n] = '\0';
		if (strcmp(num, "+Inf") == 0)
			smp.value = INFINITY;
		else {
			smp.value = strtod(num, &end);
			if (*end != '\0')
				goto bad;
		}
		if (!family_declared(types, smp.name)) {
			snprintf(why, whylen, "sample %s before its HELP and TYPE", smp.name);
			goto out;
		}
		sc->s = realloc(sc->s, (size_t)(sc->n + 1) * sizeof(*sc->s));
		sc->s[sc->n++] = smp;
		continue;
bad:
		snprintf(why, whylen, "malformed sample: %.*s", (int)(eol - p), p);
		goto out;
	}
	rc = 0;
out:
	free(types);
	return rc;
}

static const char *
label_of(const struct sample *s, const char *key)
{
	int i;

	for (i = 0; i < s->nlabels; i++)
		if (strcmp(s->key[i], key) == 0)
			return s->val[i];
	return NULL;
}

/* The sum of the samples of name whose labels include the pairs given
 * (name, value, ..., NULL); *found the number of them. */
static double
msum_n(const struct scrape *sc, int *found, const char *name, va_list ap)
{
	const char *want[2 * MAX_LABELS + 1];
	double sum = 0;
	int i, j, nw = 0;

	while ((want[nw] = va_arg(ap, const char *)) != NULL && nw < 2 * MAX_LABELS)
		nw++;
	*found = 0;
	for (i = 0; i < sc->n; i++) {
		if (strcmp(sc->s[i].name, name) != 0)
			continue;
		for (j = 0; j < nw; j += 2) {
			const char *v = label_of(&sc->s[i], want[j]);
			if (v == NULL || strcmp(v, want[j + 1]) != 0)
				break;
		}
		if (j < nw)
			continue;
		sum += sc->s[i].value;
		(*found)++;
	}
	return sum;
}

static double
msum(const struct scrape *sc, const char *name, ...)
{
	va_list ap;
	double v;
	int found;

	va_start(ap, name);
	v = msum_n(sc, &found, name, ap);
	va_end(ap);
	return v;
}

static int
mcount(const struct scrape *sc, const char *name, ...)
{
	va_list ap;
	int found;

	va_start(ap, name);
	(void)msum_n(sc, &found, name, ap);
	va_end(ap);
	return found;
}

/* Histogram series of name with label key=val: buckets rise, +Inf = _count. */
static void
check_histogram(const struct scrape *sc, const char *name, const char *key, const char *val)
{
	char bucket[160], count[160];
	double prev = 0, inf = -1;
	int i, nb = 0;

	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	snprintf(count, sizeof(count), "%s_count", name);
	for (i = 0; i < sc->n; i++) {
		const char *v = label_of(&sc->s[i], key), *le;
		if (strcmp(sc->s[i].name, bucket) != 0 || v == NULL || strcmp(v, val) != 0)
			continue;
		le = label_of(&sc->s[i], "le");
		ck_assert_ptr_nonnull(le);
		ck_assert_msg(sc->s[i].value >= prev, "%s buckets not cumulative", name);
		prev = sc->s[i].value;
		nb++;
		if (strcmp(le, "+Inf") == 0)
			inf = sc->s[i].value;
	}
	ck_assert_int_eq(nb, MH_NBUCKETS + 1);
	ck_assert(inf == prev);
	ck_assert(inf == msum(sc, count, key, val, NULL));
}

static void
scrape_free(struct scrape *sc)
{
	free(sc->s);
	sc->s = NULL;
	sc->n = 0;
}

static char *
buf_text(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

/* ---- the writer -------------------------------------------------------- */

START_TEST(test_metrics__writer_help_type_and_escaping)
{
	struct evbuffer *b = evbuffer_new();
	const char *l[] = { "account", "a\"b\\c\nd", "route", "chat", NULL };
	struct scrape sc;
	char why[200], *text;

	mw_family(b, "codexpool_x_total", "counter", "a help\nline with \\");
	mw_u64(b, "codexpool_x_total", l, 42);
	mw_family(b, "codexpool_y", "gauge", "plain");
	mw_u64(b, "codexpool_y", NULL, 7);
	text = buf_text(b);
	ck_assert_str_eq(text,
	    "# HELP codexpool_x_total a help\\nline with \\\\\n"
	    "# TYPE codexpool_x_total counter\n"
	    "codexpool_x_total{account=\"a\\\"b\\\\c\\nd\",route=\"chat\"} 42\n"
	    "# HELP codexpool_y plain\n"
	    "# TYPE codexpool_y gauge\n"
	    "codexpool_y 7\n");
	ck_assert_msg(parse_exposition(text, &sc, why, sizeof(why)) == 0, "%s", why);
	ck_assert_int_eq(sc.n, 2);
	ck_assert_str_eq(label_of(&sc.s[0], "account"), "a\"b\\c\nd");
	ck_assert(msum(&sc, "codexpool_x_total", "route", "chat", NULL) == 42);
	ck_assert(msum(&sc, "codexpool_y", NULL) == 7);
	scrape_free(&sc);
	free(text);

	/* the parser refuses a sample without its family's TYPE */
	ck_assert_int_eq(parse_exposition("codexpool_z 1\n", &sc, why, sizeof(why)), -1);
	scrape_free(&sc);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_metrics__histogram_buckets_are_cumulative)
{
	struct evbuffer *b = evbuffer_new();
	const char *l[] = { "route", "responses", NULL };
	struct mhist h;
	struct scrape sc;
	char why[200], *text;

	memset(&h, 0, sizeof(h));
	mhist_observe(&h, 0.001);	/* le 0.005 */
	mhist_observe(&h, 0.3);		/* le 0.5 */
	mhist_observe(&h, 0.5);		/* le 0.5: upper bounds are inclusive */
	mhist_observe(&h, 100);		/* +Inf only */
	mw_family(b, "codexpool_t_seconds", "histogram", "h");
	mw_histogram(b, "codexpool_t_seconds", l, &h);
	text = buf_text(b);
	ck_assert_ptr_nonnull(strstr(text,
	    "codexpool_t_seconds_bucket{route=\"responses\",le=\"0.005\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(text,
	    "codexpool_t_seconds_bucket{route=\"responses\",le=\"0.25\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(text,
	    "codexpool_t_seconds_bucket{route=\"responses\",le=\"0.5\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(text,
	    "codexpool_t_seconds_bucket{route=\"responses\",le=\"60\"} 3\n"
	    "codexpool_t_seconds_bucket{route=\"responses\",le=\"+Inf\"} 4\n"
	    "codexpool_t_seconds_sum{route=\"responses\"} 100.801\n"
	    "codexpool_t_seconds_count{route=\"responses\"} 4\n"));
	ck_assert_msg(parse_exposition(text, &sc, why, sizeof(why)) == 0, "%s", why);
	check_histogram(&sc, "codexpool_t_seconds", "route", "responses");
	scrape_free(&sc);
	free(text);
	evbuffer_free(b);
}
END_TEST

/* ---- the daemon -------------------------------------------------------- */

/* GET /metrics on port: the status; a parsed scrape when 200. */
static int
scrape_at(int port, const char *headers, struct scrape *sc)
{
	struct tl_response r;
	char why[256], *ct;
	int status;

	ck_assert_int_eq(tl_http("127.0.0.1", port, "GET", "/metrics", headers, NULL, 0, &r), 0);
	status = r.status;
	if (getenv("METRICS_DUMP") != NULL && r.body != NULL)
		fprintf(stderr, "%s", r.body);	/* to read a scrape by eye */
	memset(sc, 0, sizeof(*sc));
	if (status == 200) {
		ct = tl_header_get(r.headers, "Content-Type");
		ck_assert_ptr_nonnull(ct);
		ck_assert_msg(strncmp(ct, "text/plain; version=0.0.4", 25) == 0, "%s", ct);
		free(ct);
		ck_assert_msg(parse_exposition(r.body, sc, why, sizeof(why)) == 0,
		    "bad exposition: %s", why);
	}
	tl_response_free(&r);
	return status;
}

/* A chat message with plain text content. */
static json_object *
chat_msg(const char *role, const char *text)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string(text));
	return m;
}

static struct tl_usage
chat_turn(struct e2e *e, json_object *messages, const char *text)
{
	json_object *req = json_object_new_object(), *ans, *u, *v, *d;
	struct tl_usage usage;
	struct tl_response r;
	const char *body;

	memset(&usage, 0, sizeof(usage));
	json_object_array_add(messages, chat_msg("user", text));
	json_object_object_add(req, "model", json_object_new_string("gpt-5.4"));
	json_object_object_add(req, "messages", json_object_get(messages));
	body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", "/v1/chat/completions", NULL,
	    body, strlen(body), &r), 0);
	ck_assert_int_eq(r.status, 200);
	ans = tl_response_json(&r);
	ck_assert_ptr_nonnull(ans);
	ck_assert(json_object_object_get_ex(ans, "usage", &u));
	ck_assert(json_object_object_get_ex(u, "prompt_tokens", &v));
	usage.input_tokens = json_object_get_int64(v);
	if (json_object_object_get_ex(u, "prompt_tokens_details", &d) &&
	    json_object_object_get_ex(d, "cached_tokens", &v))
		usage.cached_tokens = json_object_get_int64(v);
	json_object_array_add(messages, chat_msg("assistant", "ok"));
	json_object_put(ans);
	json_object_put(req);
	tl_response_free(&r);
	return usage;
}

START_TEST(test_metrics__turns_tokens_and_decisions)
{
	struct e2e e;
	struct scrape a, b;
	struct conv c;
	struct tl_usage u, cu;
	json_object *messages;
	int64_t resp_in = 0, resp_cached = 0, chat_in = 0, chat_cached = 0;
	static const char *const decisions[] = { "reuse", "new", "bypass", "retry_stale" };
	char key[64];
	size_t i;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(scrape_at(e.port, NULL, &a), 200);
	/* the families are there before any turn */
	ck_assert_int_eq(mcount(&a, "codexpool_pool_decisions_total", NULL), 4);
	ck_assert(msum(&a, "codexpool_worker_up", NULL) == 2);
	ck_assert(msum(&a, "codexpool_account_status", "status", "active", NULL) == 1);
	ck_assert_int_eq(mcount(&a, "codexpool_token_refreshes_total", NULL), 2);

	conv_init(&c, "metrics-conv");
	ck_assert_int_eq(conv_turn(&e, &c, "hello", 0, &u, NULL), 200);
	resp_in += u.input_tokens;
	resp_cached += u.cached_tokens;
	ck_assert_int_eq(conv_turn(&e, &c, "and then?", 1, &u, NULL), 200);
	resp_in += u.input_tokens;
	resp_cached += u.cached_tokens;
	ck_assert_int_eq(conv_turn(&e, &c, "and then?", 0, &u, NULL), 200);
	resp_in += u.input_tokens;
	resp_cached += u.cached_tokens;
	conv_free(&c);

	messages = json_object_new_array();
	json_object_array_add(messages, chat_msg("system", e.instructions));
	cu = chat_turn(&e, messages, "hello");
	chat_in += cu.input_tokens;
	chat_cached += cu.cached_tokens;
	cu = chat_turn(&e, messages, "more");
	chat_in += cu.input_tokens;
	chat_cached += cu.cached_tokens;
	json_object_put(messages);
	ck_assert(resp_in > 0 && chat_in > 0 && resp_cached > 0);

	ck_assert_int_eq(scrape_at(e.port, NULL, &b), 200);
	/* turns by route and outcome moved by exactly what ran */
	ck_assert(msum(&b, "codexpool_turns_total", "route", "responses", "outcome", "completed",
	    NULL) - msum(&a, "codexpool_turns_total", "route", "responses", "outcome",
	    "completed", NULL) == 3);
	ck_assert(msum(&b, "codexpool_turns_total", "route", "chat", "outcome", "completed",
	    NULL) - msum(&a, "codexpool_turns_total", "route", "chat", "outcome", "completed",
	    NULL) == 2);
	ck_assert(msum(&b, "codexpool_turns_total", "outcome", "error", NULL) == 0);
	/* five outcomes per route: a bounded, complete label set */
	ck_assert_int_eq(mcount(&b, "codexpool_turns_total", "route", "chat", NULL), 5);
	/* tokens, summed over accounts, as the clients were told */
	ck_assert(msum(&b, "codexpool_input_tokens_total", "route", "responses", NULL) -
	    msum(&a, "codexpool_input_tokens_total", "route", "responses", NULL) == (double)resp_in);
	ck_assert(msum(&b, "codexpool_cached_tokens_total", "route", "responses", NULL) -
	    msum(&a, "codexpool_cached_tokens_total", "route", "responses", NULL) ==
	    (double)resp_cached);
	ck_assert(msum(&b, "codexpool_input_tokens_total", "route", "chat", NULL) ==
	    (double)chat_in);
	ck_assert(msum(&b, "codexpool_cached_tokens_total", "route", "chat", NULL) ==
	    (double)chat_cached);
	/* one account: every token under its label */
	ck_assert_int_eq(mcount(&b, "codexpool_input_tokens_total", "route", "chat", NULL), 1);
	/* histograms: one observation per turn */
	ck_assert(msum(&b, "codexpool_ttft_seconds_count", "route", "responses", NULL) == 3);
	ck_assert(msum(&b, "codexpool_ttft_seconds_count", "route", "chat", NULL) == 2);
	ck_assert(msum(&b, "codexpool_turn_duration_seconds_count", "route", "responses",
	    NULL) == 3);
	ck_assert(msum(&b, "codexpool_turn_duration_seconds_count", "route", "chat", NULL) == 2);
	ck_assert(msum(&b, "codexpool_turn_duration_seconds_sum", "route", "chat", NULL) > 0);
	check_histogram(&b, "codexpool_ttft_seconds", "route", "responses");
	check_histogram(&b, "codexpool_turn_duration_seconds", "route", "chat");
	/* pool decisions are the ones codexpoolctl status counts */
	for (i = 0; i < sizeof(decisions) / sizeof(decisions[0]); i++) {
		snprintf(key, sizeof(key), "decisions_%s", decisions[i]);
		ck_assert_msg(msum(&b, "codexpool_pool_decisions_total", "decision", decisions[i],
		    NULL) == (double)status_num(&e, key), "%s", key);
	}
	ck_assert(msum(&b, "codexpool_pool_decisions_total", "decision", "reuse", NULL) >= 3);
	ck_assert(msum(&b, "codexpool_pool_decisions_total", NULL) ==
	    msum(&b, "codexpool_worker_pool_decisions_total", NULL));
	/* the two conversations hold their pooled connections, idle */
	ck_assert(msum(&b, "codexpool_upstream_connections", NULL) == 2);
	ck_assert(msum(&b, "codexpool_upstream_connections_busy", NULL) == 0);
	ck_assert(msum(&b, "codexpool_worker_requests_total", NULL) == 5);
	/* this scrape's own connection is open */
	ck_assert(msum(&b, "codexpool_client_connections", NULL) >= 1);
	ck_assert(msum(&b, "codexpool_client_connections_refused_total", NULL) == 0);
	scrape_free(&a);

	/* a usage limit before any output: an error turn, a locked account */
	ck_assert_int_eq(tl_sim_fault(&e.sim, "{\"kind\":\"usage_limit\",\"count\":1}"), 0);
	conv_init(&c, "metrics-limited");
	ck_assert_int_eq(conv_turn(&e, &c, "hello", 0, NULL, NULL), 429);
	conv_free(&c);
	ck_assert_int_eq(scrape_at(e.port, NULL, &a), 200);
	ck_assert(msum(&a, "codexpool_turns_total", "route", "responses", "outcome", "error",
	    NULL) == 1);
	ck_assert(msum(&a, "codexpool_turns_total", "outcome", "completed", NULL) ==
	    msum(&b, "codexpool_turns_total", "outcome", "completed", NULL));
	ck_assert(msum(&a, "codexpool_turn_duration_seconds_count", "route", "responses",
	    NULL) == 4);
	/* no output: no time to first output either */
	ck_assert(msum(&a, "codexpool_ttft_seconds_count", "route", "responses", NULL) == 3);
	ck_assert(msum(&a, "codexpool_account_status", "status", "rate_limited", NULL) == 1);
	ck_assert(msum(&a, "codexpool_account_status", "status", "active", NULL) == 0);
	scrape_free(&a);
	scrape_free(&b);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_metrics__api_keys_guard_metrics_on_the_api_listener)
{
	struct e2e e;
	struct scrape sc;
	char *out = NULL, *p, hdr[200];
	size_t n;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(ctl_run(&e, &out, "key add prom"), 0);
	ck_assert_ptr_nonnull(out);
	p = strstr(out, "key: ");
	ck_assert_ptr_nonnull(p);
	p += 5;
	n = strcspn(p, "\n");
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %.*s\r\n", (int)n, p);
	free(out);
	ck_assert_int_eq(scrape_at(e.port, NULL, &sc), 401);
	ck_assert_int_eq(scrape_at(e.port, hdr, &sc), 200);
	ck_assert(mcount(&sc, "codexpool_turns_total", NULL) == 0);
	scrape_free(&sc);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_metrics__metrics_listen_serves_metrics_alone)
{
	struct e2e e;
	struct scrape sc;
	struct tl_response r;
	char *log, *p;
	int port;

	e2e_start(&e, NULL, "metrics_listen = 127.0.0.1:0");
	ck_assert_int_eq(tl_wait_file_contains(e.log, "metrics on 127.0.0.1:", WAIT_MS), 0);
	log = tl_read_file(e.log, NULL);
	ck_assert_ptr_nonnull(log);
	p = strstr(log, "metrics on 127.0.0.1:");
	port = atoi(p + strlen("metrics on 127.0.0.1:"));
	free(log);
	ck_assert_int_gt(port, 0);
	ck_assert_int_ne(port, e.port);

	ck_assert_int_eq(scrape_at(port, NULL, &sc), 200);
	ck_assert_int_eq(mcount(&sc, "codexpool_pool_decisions_total", NULL), 4);
	ck_assert(msum(&sc, "codexpool_token_refreshes_total", "outcome", "ok", NULL) == 0);
	scrape_free(&sc);
	/* a token refresh is counted by its outcome */
	ck_assert_int_eq(ctl_run(&e, NULL, "account refresh auth_file"), 0);
	ck_assert_int_eq(tl_wait_file_contains(e.log, "token refreshed", WAIT_MS), 0);
	ck_assert_int_eq(scrape_at(port, NULL, &sc), 200);
	ck_assert(msum(&sc, "codexpool_token_refreshes_total", "outcome", "ok", NULL) == 1);
	ck_assert(msum(&sc, "codexpool_token_refreshes_total", "outcome", "failed", NULL) == 0);
	scrape_free(&sc);
	ck_assert_int_eq(tl_http("127.0.0.1", port, "GET", "/health", NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 200);
	tl_response_free(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", port, "POST", "/metrics", NULL, "x", 1, &r), 0);
	ck_assert_int_eq(r.status, 405);
	tl_response_free(&r);
	/* nothing else there */
	ck_assert_int_eq(tl_http("127.0.0.1", port, "GET", "/v1/models", NULL, NULL, 0, &r), 0);
	ck_assert_int_eq(r.status, 404);
	tl_response_free(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", port, "POST", "/v1/responses", NULL, "{}", 2,
	    &r), 0);
	ck_assert_int_eq(r.status, 404);
	tl_response_free(&r);
	/* and /metrics is no longer on the API listener */
	ck_assert_int_eq(scrape_at(e.port, NULL, &sc), 404);
	e2e_stop(&e);
}
END_TEST

static Suite *
make_suite_metrics(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("writer");

	tcase_add_test(tc, test_metrics__writer_help_type_and_escaping);
	tcase_add_test(tc, test_metrics__histogram_buckets_are_cumulative);
	suite_add_tcase(s, tc);
	tc = tcase_create("daemon");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_metrics__turns_tokens_and_decisions);
	tcase_add_test(tc, test_metrics__api_keys_guard_metrics_on_the_api_listener);
	tcase_add_test(tc, test_metrics__metrics_listen_serves_metrics_alone);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_metrics());
}
