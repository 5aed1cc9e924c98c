/*
 * store-bench: latency of the account store's hot calls on a file with
 * 1000 accounts.  Prints p50 / p99 / worst in microseconds.
 *
 *   store-bench [DIR]     (default: a fresh dir under $TMPDIR or /tmp)
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "util.h"

#define NACCOUNTS	1000

struct series {
	const char	*name;
	usec_t		*v;
	size_t		 n;
};

static int
cmp_usec(const void *a, const void *b)
{
	usec_t x = *(const usec_t *)a, y = *(const usec_t *)b;

	return x < y ? -1 : x > y;
}

static void
report(struct series *s)
{
	size_t p50, p99;

	qsort(s->v, s->n, sizeof(s->v[0]), cmp_usec);
	p50 = s->n / 2;
	p99 = (s->n * 99) / 100;
	if (p99 >= s->n)
		p99 = s->n - 1;
	printf("%-34s %7zu %9lld %9lld %9lld\n", s->name, s->n,
	    (long long)s->v[p50], (long long)s->v[p99], (long long)s->v[s->n - 1]);
}

static void
die(struct store *st, const char *what)
{
	fprintf(stderr, "store-bench: %s: %s\n", what, st ? store_errmsg(st) : "");
	exit(1);
}

int
main(int argc, char *argv[])
{
	char dir[PATH_MAX], path[PATH_MAX + 32], err[512], conv[64], at[80], rt[80];
	char (*entries)[STORE_ENTRY_LEN];
	struct series s;
	struct store_account a;
	struct store *st;
	const char *base;
	bool own_dir = false;
	usec_t t0, *v;
	size_t i, j, n;
	int64_t now = 1700000000;

	log_init("store-bench", 1, LOG_LVL_WARN);
	if (argc > 1)
		snprintf(dir, sizeof(dir), "%s", argv[1]);
	else {
		base = getenv("TMPDIR");
		snprintf(dir, sizeof(dir), "%s/store-bench.XXXXXX",
		    base && *base ? base : "/tmp");
		if (mkdtemp(dir) == NULL) {
			perror("mkdtemp");
			return 1;
		}
		own_dir = true;
	}
	snprintf(path, sizeof(path), "%s/accounts.db", dir);
	if ((st = store_open(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "store-bench: %s\n", err);
		return 1;
	}
	entries = xcalloc(NACCOUNTS, sizeof(*entries));
	if (store_begin(st) != 0)
		die(st, "begin");
	for (i = 0; i < NACCOUNTS; i++) {
		memset(&a, 0, sizeof(a));
		snprintf(conv, sizeof(conv), "acct-%05zu", i);
		snprintf(at, sizeof(at), "access-%05zu-%064d", i, 0);
		snprintf(rt, sizeof(rt), "refresh-%05zu", i);
		a.account_id = conv;
		a.access_token = at;
		a.refresh_token = rt;
		/* each durable insert commits the batch: fine for setup */
		if (store_account_insert(st, &a) != 0)
			die(st, "insert");
		memcpy(entries[i], a.entry, STORE_ENTRY_LEN);
	}
	if (store_commit(st) != 0)
		die(st, "commit");
	v = xcalloc(20000, sizeof(*v));

	printf("store-bench: %d accounts in %s (WAL; synchronous NORMAL, FULL for durable writes)\n",
	    NACCOUNTS, path);
	printf("%-34s %7s %9s %9s %9s\n", "operation (usec)", "n", "p50", "p99", "max");

	n = 500;
	for (i = 0; i < n; i++) {
		snprintf(rt, sizeof(rt), "refresh-rotated-%05zu", i);
		t0 = now_mono_usec();
		if (store_account_set_tokens(st, entries[i % NACCOUNTS], at, rt, NULL,
		    now + 3600, now) != 0)
			die(st, "set_tokens");
		v[i] = now_mono_usec() - t0;
	}
	s = (struct series){ "set_tokens (durable, fsync)", v, n };
	report(&s);

	n = 5000;
	for (i = 0; i < n; i++) {
		t0 = now_mono_usec();
		if (store_usage_add(st, entries[i % NACCOUNTS], 1, 1000, 800, 20, now) != 0)
			die(st, "usage_add");
		v[i] = now_mono_usec() - t0;
	}
	s = (struct series){ "usage_add (single, autocommit)", v, n };
	report(&s);

	n = 500;
	for (i = 0; i < n; i++) {
		t0 = now_mono_usec();
		if (store_begin(st) != 0)
			die(st, "begin");
		for (j = 0; j < 100; j++)
			if (store_usage_add(st, entries[(i * 100 + j) % NACCOUNTS], 1, 1000,
			    800, 20, now) != 0)
				die(st, "usage_add");
		if (store_commit(st) != 0)
			die(st, "commit");
		v[i] = now_mono_usec() - t0;
	}
	s = (struct series){ "usage_add x100 (one batch)", v, n };
	report(&s);

	n = 20000;
	for (i = 0; i < n; i++) {
		snprintf(conv, sizeof(conv), "%016zx%016zx", i * 2654435761u, i);
		t0 = now_mono_usec();
		if (store_affinity_put(st, conv, entries[i % NACCOUNTS], now) != 0)
			die(st, "affinity_put");
		v[i] = now_mono_usec() - t0;
	}
	s = (struct series){ "affinity_put (autocommit)", v, n };
	report(&s);

	for (i = 0; i < n; i++) {
		char got[STORE_ENTRY_LEN];

		snprintf(conv, sizeof(conv), "%016zx%016zx", ((i * 7919) % n) * 2654435761u,
		    (i * 7919) % n);
		t0 = now_mono_usec();
		if (store_affinity_get(st, conv, now, 3600, got) != 0)
			die(st, "affinity_get");
		v[i] = now_mono_usec() - t0;
	}
	s = (struct series){ "affinity_get (hit)", v, n };
	report(&s);

	free(v);
	free(entries);
	store_close(st);
	if (own_dir) {
		unlink(path);
		snprintf(path, sizeof(path), "%s/accounts.db-wal", dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/accounts.db-shm", dir);
		unlink(path);
		rmdir(dir);
	}
	return 0;
}
