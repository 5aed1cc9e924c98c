/*
 * Client API keys: the store functions on their own, then the real
 * daemon against the simulator.  Anonymous use while no key exists,
 * key add / list / remove, 401 with an OpenAI-style body for a missing
 * or wrong key, Bearer and x-api-key, /health left open, keys that
 * survive a restart, a store file and logs that never hold a key, an
 * upstream that never sees one, and the refusal to serve a public
 * listen address without keys.
 */
#include "config.h"

#include <check.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "e2e.h"
#include "store.h"

#define SECRET_MAX	128

/* ---- helpers -------------------------------------------------------- */

/* One non-streamed turn on a fresh conversation; the HTTP status. */
static int
turn(struct e2e *e, const char *headers, const char *pck, struct tl_response *keep)
{
	json_object *input = json_object_new_array();
	struct tl_response r;
	char *body;
	int status;

	json_object_array_add(input, tl_msg("user", "hello"));
	body = tl_responses_body("gpt-5.4", NULL, pck, 0, input);
	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", "/v1/responses", headers,
	    body, strlen(body), &r), 0);
	free(body);
	json_object_put(input);
	status = r.status;
	if (keep != NULL)
		*keep = r;
	else
		tl_response_free(&r);
	return status;
}

static int
get(struct e2e *e, const char *path, const char *headers)
{
	struct tl_response r;
	int status;

	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "GET", path, headers, NULL, 0, &r), 0);
	status = r.status;
	tl_response_free(&r);
	return status;
}

/* The 401 body is {"error":{"message":...,"type":"invalid_request_error","code":"invalid_api_key"}}. */
static void
assert_401_shape(const struct tl_response *r)
{
	json_object *o = tl_response_json(r), *err, *v;

	ck_assert_int_eq(r->status, 401);
	ck_assert_msg(o != NULL, "401 body is not JSON: %s", r->body);
	ck_assert(json_object_object_get_ex(o, "error", &err));
	ck_assert(json_object_object_get_ex(err, "message", &v));
	ck_assert_int_gt(strlen(json_object_get_string(v)), 0);
	ck_assert(json_object_object_get_ex(err, "type", &v));
	ck_assert_str_eq(json_object_get_string(v), "invalid_request_error");
	ck_assert(json_object_object_get_ex(err, "code", &v));
	ck_assert_str_eq(json_object_get_string(v), "invalid_api_key");
	json_object_put(o);
}

/* `key add label`: exit 0 and the key from its "key: " line. */
static void
key_add(struct e2e *e, const char *label, char secret[SECRET_MAX])
{
	char *out = NULL, *p;
	size_t n;

	ck_assert_int_eq(ctl_run(e, &out, "key add %s", label), 0);
	ck_assert_ptr_nonnull(out);
	p = strstr(out, "key: ");
	ck_assert_msg(p != NULL, "no key line in: %s", out);
	p += 5;
	n = strcspn(p, "\n");
	ck_assert_int_lt(n, SECRET_MAX);
	memcpy(secret, p, n);
	secret[n] = '\0';
	free(out);
	/* cpk_ and 32 random bytes in base64url: 43 characters */
	ck_assert_msg(strncmp(secret, "cpk_", 4) == 0, "key %s", secret);
	ck_assert_int_eq(strlen(secret), 4 + 43);
	ck_assert_int_eq(strspn(secret + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_"), 43);
}

static void
bearer(char *buf, size_t len, const char *secret)
{
	snprintf(buf, len, "Authorization: Bearer %s\r\n", secret);
}

static void
xapikey(char *buf, size_t len, const char *secret)
{
	snprintf(buf, len, "x-api-key: %s\r\n", secret);
}

/* The "requests" counter of a key in `key list --json`; -1 if absent. */
static long long
key_requests(struct e2e *e, const char *label)
{
	char *out = NULL;
	json_object *o, *rows;
	long long n = -1;
	size_t i;

	ck_assert_int_eq(ctl_run(e, &out, "key list --json"), 0);
	o = json_tokener_parse(out);
	ck_assert_msg(o != NULL, "key list --json: %s", out);
	free(out);
	ck_assert(json_object_object_get_ex(o, "keys", &rows));
	for (i = 0; i < json_object_array_length(rows); i++) {
		json_object *r = json_object_array_get_idx(rows, i);
		if (strcmp(json_object_get_string(json_object_object_get(r, "label")), label) == 0) {
			n = json_object_get_int64(json_object_object_get(r, "requests"));
			ck_assert_int_gt(json_object_get_int64(json_object_object_get(r, "created")), 0);
		}
	}
	json_object_put(o);
	return n;
}

/* Polls the live store file (read-only) until label's requests == want. */
static int
wait_stored_requests(const char *path, const char *label, long long want)
{
	int64_t end = tl_now_ms() + WAIT_MS;
	long long got = -1;

	while (tl_now_ms() < end) {
		sqlite3 *db = NULL;
		sqlite3_stmt *st = NULL;

		if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
		    sqlite3_busy_timeout(db, 1000) == SQLITE_OK &&
		    sqlite3_prepare_v2(db, "SELECT requests FROM api_keys WHERE label = ?1",
		    -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_text(st, 1, label, -1, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW)
				got = sqlite3_column_int64(st, 0);
		}
		sqlite3_finalize(st);
		sqlite3_close(db);
		if (got == want)
			return 0;
		tl_msleep(100);
	}
	fprintf(stderr, "stored requests of %s: %lld, wanted %lld\n", label, got, want);
	return -1;
}

static int
file_has_bytes(const char *path, const void *needle, size_t n)
{
	size_t len = 0;
	char *data = tl_read_file(path, &len);
	int found;

	if (data == NULL)
		return 0;
	found = memmem(data, len, needle, n) != NULL;
	free(data);
	return found;
}

static void
sha256(const char *s, unsigned char out[32])
{
	unsigned int n = 0;

	ck_assert_int_eq(EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL), 1);
	ck_assert_int_eq(n, 32);
}

static void
assert_not_in_file(const char *path, const char *secret)
{
	ck_assert_msg(!file_has_bytes(path, secret, strlen(secret)),
	    "%s holds a client key", path);
	/* nor its random part without the prefix */
	ck_assert_msg(!file_has_bytes(path, secret + 4, strlen(secret) - 4),
	    "%s holds a client key's random part", path);
}

/* ---- a capturing upstream ------------------------------------------ */

/*
 * Accepts one upstream connection, answers the WebSocket upgrade, and
 * keeps the raw handshake and the unmasked payload of the first message:
 * exactly what the daemon sent upstream, every header included (the
 * simulator redacts Authorization and records only headers it knows).
 */
struct capture {
	int		 lfd;
	int		 port;
	pthread_t	 thread;
	char		 buf[256 * 1024];
	size_t		 len;
};

static void
cap_add(struct capture *c, const void *p, size_t n)
{
	if (n > sizeof(c->buf) - 1 - c->len)
		n = sizeof(c->buf) - 1 - c->len;
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->buf[c->len] = '\0';
}

static int
read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	ssize_t r;

	while (n > 0) {
		if ((r = read(fd, b, n)) <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static void *
capture_main(void *arg)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	struct capture *c = arg;
	struct pollfd pfd = { .fd = c->lfd, .events = POLLIN };
	struct timeval tv = { .tv_sec = 10 };
	unsigned char sha[20], accept_key[64];
	char head[16384], *k, reply[256], keybuf[128];
	size_t hl = 0;
	int fd, i;

	if (poll(&pfd, 1, WAIT_MS) != 1 || (fd = accept(c->lfd, NULL, NULL)) < 0)
		return NULL;
	close(c->lfd);		/* a second attempt is refused at once */
	c->lfd = -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (hl < sizeof(head) - 1 && read(fd, head + hl, 1) == 1) {
		hl++;
		if (hl >= 4 && memcmp(head + hl - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	head[hl] = '\0';
	cap_add(c, head, hl);
	for (k = head; (k = strchr(k, '\n')) != NULL; k++)
		if (strncasecmp(k + 1, "sec-websocket-key:", 18) == 0)
			break;
	if (k == NULL) {
		close(fd);
		return NULL;
	}
	k += 19;
	while (*k == ' ')
		k++;
	snprintf(keybuf, sizeof(keybuf), "%.*s%s", (int)strcspn(k, "\r\n"), k, guid);
	EVP_Digest(keybuf, strlen(keybuf), sha, NULL, EVP_sha1(), NULL);
	EVP_EncodeBlock(accept_key, sha, sizeof(sha));
	snprintf(reply, sizeof(reply), "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
	    accept_key);
	if (write(fd, reply, strlen(reply)) < 0)
		goto out;
	/* frames until the end of the first text message (or a close) */
	for (i = 0; i < 64; i++) {
		uint8_t h[2], ext[8], mask[4], *payload;
		uint64_t n;
		size_t j;

		if (read_full(fd, h, 2) != 0)
			break;
		n = h[1] & 0x7f;
		if (n == 126) {
			if (read_full(fd, ext, 2) != 0)
				break;
			n = (uint64_t)ext[0] << 8 | ext[1];
		} else if (n == 127) {
			if (read_full(fd, ext, 8) != 0)
				break;
			for (n = 0, j = 0; j < 8; j++)
				n = n << 8 | ext[j];
		}
		if (n > sizeof(c->buf) || ((h[1] & 0x80) && read_full(fd, mask, 4) != 0))
			break;
		payload = malloc(n + 1);
		if (payload == NULL || read_full(fd, payload, n) != 0) {
			free(payload);
			break;
		}
		for (j = 0; (h[1] & 0x80) && j < n; j++)
			payload[j] ^= mask[j % 4];
		cap_add(c, "\n", 1);
		cap_add(c, payload, n);
		free(payload);
		if ((h[0] & 0x0f) == 8 || ((h[0] & 0x80) && ((h[0] & 0x0f) == 1 ||
		    (h[0] & 0x0f) == 0)))
			break;
	}
out:
	close(fd);
	return NULL;
}

static void
capture_start(struct capture *c)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);

	memset(c, 0, sizeof(*c));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(c->lfd, 0);
	ck_assert_int_eq(bind(c->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(c->lfd, 4), 0);
	ck_assert_int_eq(getsockname(c->lfd, (struct sockaddr *)&sin, &sl), 0);
	c->port = ntohs(sin.sin_port);
	ck_assert_int_eq(pthread_create(&c->thread, NULL, capture_main, c), 0);
}

/* ---- the store on its own ------------------------------------------ */

static char tmpdir[PATH_MAX];
static char dbpath[PATH_MAX + 32];

static void
store_setup(void)
{
	char *d = tl_tmpdir();

	ck_assert_ptr_nonnull(d);
	snprintf(tmpdir, sizeof(tmpdir), "%s", d);
	free(d);
	snprintf(dbpath, sizeof(dbpath), "%s/codexpool.db", tmpdir);
}

static void
store_teardown(void)
{
	tl_rmrf(tmpdir);
}

static struct store *
open_ok(void)
{
	char err[512];
	struct store *st = store_open(dbpath, err, sizeof(err));

	ck_assert_msg(st != NULL, "store_open: %s", err);
	return st;
}

START_TEST(test_keys__store_functions)
{
	uint8_t h1[STORE_KEY_HASH_LEN], h2[STORE_KEY_HASH_LEN];
	struct store_apikey *v;
	struct store *st;
	size_t n;

	memset(h1, 0x11, sizeof(h1));
	memset(h2, 0x22, sizeof(h2));
	st = open_ok();
	ck_assert_int_eq(store_schema_version(st), STORE_SCHEMA_VERSION);
	ck_assert_int_eq(store_apikey_list(st, &v, &n), 0);
	ck_assert_int_eq(n, 0);
	ck_assert_ptr_null(v);

	ck_assert_int_eq(store_apikey_insert(st, "alice", h1, 1000), 0);
	/* a label is unique, and so is a hash */
	ck_assert_int_eq(store_apikey_insert(st, "alice", h2, 1001), -1);
	ck_assert_msg(strstr(store_errmsg(st), "alice") && strstr(store_errmsg(st), "already"),
	    "unclear error: %s", store_errmsg(st));
	ck_assert_int_eq(store_apikey_insert(st, "bob", h1, 1001), -1);
	ck_assert_int_eq(store_apikey_insert(st, "", h2, 1001), -1);
	ck_assert_int_eq(store_apikey_insert(st, "bob", h2, 1002), 0);

	/* usage adds up in a batch; last use only moves forward */
	ck_assert_int_eq(store_begin(st), 0);
	ck_assert_int_eq(store_apikey_usage_add(st, "alice", 2, 100, 40, 2000), 0);
	ck_assert_int_eq(store_apikey_usage_add(st, "alice", 1, 10, 4, 1500), 0);
	ck_assert_int_eq(store_apikey_usage_add(st, "nobody", 1, 0, 0, 1500), STORE_NOTFOUND);
	ck_assert_int_eq(store_apikey_usage_add(st, "bob", -1, 0, 0, 1500), -1);
	ck_assert_int_eq(store_commit(st), 0);
	store_close(st);

	st = open_ok();
	ck_assert_int_eq(store_apikey_list(st, &v, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_str_eq(v[0].label, "alice");
	ck_assert_int_eq(memcmp(v[0].hash, h1, sizeof(h1)), 0);
	ck_assert_int_eq(v[0].created, 1000);
	ck_assert_int_eq(v[0].requests, 3);
	ck_assert_int_eq(v[0].input_tokens, 110);
	ck_assert_int_eq(v[0].cached_tokens, 44);
	ck_assert_int_eq(v[0].last_used, 2000);
	ck_assert_str_eq(v[1].label, "bob");
	ck_assert_int_eq(v[1].requests, 0);
	ck_assert_int_eq(v[1].last_used, 0);
	store_apikey_list_free(v, n);

	ck_assert_int_eq(store_apikey_remove(st, "alice"), 0);
	ck_assert_int_eq(store_apikey_remove(st, "alice"), STORE_NOTFOUND);
	ck_assert_int_eq(store_apikey_list(st, &v, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_str_eq(v[0].label, "bob");
	store_apikey_list_free(v, n);
	store_close(st);
}
END_TEST

/* A version 1 file (before keys) gains the table and keeps its accounts. */
START_TEST(test_keys__store_migrates_v1)
{
	uint8_t h[STORE_KEY_HASH_LEN];
	struct store_apikey *v;
	struct store *st;
	sqlite3 *db;
	size_t n;

	st = open_ok();
	store_close(st);
	ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "DROP TABLE api_keys; PRAGMA user_version = 1",
	    NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	st = open_ok();
	ck_assert_int_eq(store_schema_version(st), 2);
	memset(h, 0x33, sizeof(h));
	ck_assert_int_eq(store_apikey_insert(st, "carol", h, 5), 0);
	ck_assert_int_eq(store_apikey_list(st, &v, &n), 0);
	ck_assert_int_eq(n, 1);
	store_apikey_list_free(v, n);
	store_close(st);
}
END_TEST

/* ---- the daemon ---------------------------------------------------- */

/* Rewrites the configuration: the fixture's lines, then extra. */
static void
write_conf(struct e2e *e, const char *base, const char *extra)
{
	char conf[8192];

	snprintf(conf, sizeof(conf), "%s%s\n", base, extra);
	ck_assert_int_eq(tl_write_file(e->conf, conf, strlen(conf), 0600), 0);
}

START_TEST(test_keys__anonymous_without_keys)
{
	struct e2e e;
	char *out = NULL;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(turn(&e, NULL, "anon-1", NULL), 200);
	ck_assert_int_eq(get(&e, "/v1/models", NULL), 200);
	ck_assert_int_eq(get(&e, "/health", NULL), 200);
	/* a credential nobody asked for does no harm */
	ck_assert_int_eq(turn(&e, "Authorization: Bearer cpk_whatever\r\n", "anon-2", NULL), 200);
	ck_assert_int_eq(ctl_run(&e, &out, "key list"), 0);
	ck_assert_str_eq(out, "# label created last_used requests input_tokens cached_tokens\n");
	free(out);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_keys__lifecycle)
{
	struct e2e e;
	struct tl_response r;
	char alice[SECRET_MAX], bob[SECRET_MAX], h[512], h2[512], path[800], *out = NULL;
	char wrong[SECRET_MAX], *state;
	unsigned char hash[32];
	json_object *o;
	long long before;
	int found;

	e2e_start(&e, NULL, NULL);
	key_add(&e, "alice", alice);

	/* labels are unique and plain words */
	ck_assert_int_eq(ctl_run(&e, &out, "key add alice"), 1);
	ck_assert_msg(strstr(out, "already exists"), "%s", out);
	ck_assert_msg(strstr(out, "cpk_") == NULL, "%s", out);
	free(out);
	ck_assert_int_eq(ctl_run(&e, &out, "key add bad/label"), 1);
	ck_assert_msg(strstr(out, "bad label"), "%s", out);
	free(out);
	ck_assert_int_eq(ctl_run(&e, &out, "key add %065d", 1), 1);
	ck_assert_msg(strstr(out, "bad label"), "%s", out);
	free(out);
	ck_assert_int_eq(ctl_run(&e, &out, "key add"), 1);
	free(out);
	ck_assert_int_eq(ctl_run(&e, &out, "key remove nobody"), 1);
	ck_assert_msg(strstr(out, "no key labelled 'nobody'"), "%s", out);
	free(out);

	/* list shows the key's label, never the key */
	ck_assert_int_eq(ctl_run(&e, &out, "key list"), 0);
	ck_assert_msg(strstr(out, "\nalice "), "%s", out);
	ck_assert_msg(strstr(out, alice) == NULL && strstr(out, alice + 4) == NULL, "%s", out);
	free(out);
	ck_assert_int_eq(ctl_run(&e, &out, "key list --json"), 0);
	ck_assert_msg(strstr(out, "\"alice\"") && strstr(out, alice + 4) == NULL, "%s", out);
	free(out);

	/* no key, a wrong key, a malformed header: 401, every route but /health */
	ck_assert_int_eq(turn(&e, NULL, "k-1", &r), 401);
	assert_401_shape(&r);
	tl_response_free(&r);
	ck_assert_int_eq(get(&e, "/v1/models", NULL), 401);
	ck_assert_int_eq(get(&e, "/nowhere", NULL), 401);
	ck_assert_int_eq(get(&e, "/health", NULL), 200);
	snprintf(wrong, sizeof(wrong), "%s", alice);
	wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
	bearer(h, sizeof(h), wrong);
	ck_assert_int_eq(turn(&e, h, "k-2", &r), 401);
	assert_401_shape(&r);
	tl_response_free(&r);
	xapikey(h, sizeof(h), wrong);
	ck_assert_int_eq(turn(&e, h, "k-3", NULL), 401);
	ck_assert_int_eq(turn(&e, "Authorization: Bearer\r\n", "k-4", NULL), 401);
	snprintf(h, sizeof(h), "Authorization: Basic %s\r\n", alice);
	ck_assert_int_eq(turn(&e, h, "k-5", NULL), 401);
	ck_assert_int_eq(key_requests(&e, "alice"), 0);

	/* the right key either way; a header that reaches the upstream rides along */
	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\nx-openai-subagent: keys-marker-1\r\n",
	    alice);
	ck_assert_int_eq(turn(&e, h, "k-6", NULL), 200);
	snprintf(h, sizeof(h), "x-api-key: %s\r\nx-openai-subagent: keys-marker-2\r\n", alice);
	ck_assert_int_eq(turn(&e, h, "k-7", NULL), 200);
	snprintf(h, sizeof(h), "authorization: bearer   %s  \r\n", alice);
	ck_assert_int_eq(get(&e, "/v1/models", h), 200);
	ck_assert_int_eq(get(&e, "/health", h), 200);	/* health checks are not counted */
	ck_assert_int_eq(key_requests(&e, "alice"), 3);
	/* the counters reach the store with the periodic usage write */
	snprintf(path, sizeof(path), "%s/data/codexpool.db", e.dir);
	ck_assert_msg(wait_stored_requests(path, "alice", 3) == 0,
	    "alice's requests never reached the store");

	/* what reached the upstream: the markers, never the key */
	o = tl_sim_state(&e.sim);
	ck_assert_ptr_nonnull(o);
	state = strdup(json_object_to_json_string(o));
	json_object_put(o);
	ck_assert_msg(strstr(state, "keys-marker-1") && strstr(state, "keys-marker-2"),
	    "the simulator recorded no forwarded header: %.500s", state);
	ck_assert_msg(strstr(state, alice + 4) == NULL, "the upstream saw the client key");
	ck_assert_msg(strstr(state, "cpk_") == NULL, "the upstream saw a client key");
	free(state);

	/* a second key; removing the first revokes it at once */
	key_add(&e, "bob", bob);
	ck_assert_str_ne(alice, bob);
	ck_assert_int_eq(ctl_run(&e, &out, "key remove alice"), 0);
	ck_assert_msg(strstr(out, "removed: alice"), "%s", out);
	free(out);
	bearer(h, sizeof(h), alice);
	ck_assert_int_eq(turn(&e, h, "k-8", &r), 401);
	assert_401_shape(&r);
	tl_response_free(&r);
	xapikey(h, sizeof(h), alice);
	ck_assert_int_eq(turn(&e, h, "k-9", NULL), 401);
	bearer(h2, sizeof(h2), bob);
	ck_assert_int_eq(turn(&e, h2, "k-10", NULL), 200);
	ck_assert_int_eq(key_requests(&e, "alice"), -1);
	before = key_requests(&e, "bob");
	ck_assert_int_eq(before, 1);

	/* a restart: the keys and their counters come back from the store */
	e2e_daemon_stop(&e);
	snprintf(path, sizeof(path), "%s/data/codexpool.db", e.dir);
	assert_not_in_file(path, alice);
	assert_not_in_file(path, bob);
	/* the file is the one that holds the keys: bob's hash is in it */
	sha256(bob, hash);
	found = file_has_bytes(path, hash, sizeof(hash));
	snprintf(path, sizeof(path), "%s/data/codexpool.db-wal", e.dir);
	assert_not_in_file(path, alice);
	assert_not_in_file(path, bob);
	found |= file_has_bytes(path, hash, sizeof(hash));
	ck_assert_msg(found, "no key hash in %s/data: the test reads the wrong file", e.dir);
	e2e_daemon_start(&e);
	ck_assert_int_eq(key_requests(&e, "bob"), before);
	ck_assert_int_eq(turn(&e, NULL, "k-11", NULL), 401);
	ck_assert_int_eq(turn(&e, h, "k-12", NULL), 401);		/* alice's, removed */
	ck_assert_int_eq(turn(&e, h2, "k-13", NULL), 200);
	ck_assert_int_eq(key_requests(&e, "bob"), before + 1);

	/* removing the last key on a loopback listener: anonymous again */
	ck_assert_int_eq(ctl_run(&e, &out, "key remove bob"), 0);
	ck_assert_msg(strstr(out, "no key is left"), "%s", out);
	free(out);
	ck_assert_int_eq(turn(&e, NULL, "k-14", NULL), 200);

	/* no key in any log line */
	e2e_daemon_stop(&e);
	assert_not_in_file(e.log, alice);
	assert_not_in_file(e.log, bob);
	assert_not_in_file(e.sim.log, alice);
	assert_not_in_file(e.sim.log, bob);
	e2e_stop(&e);
}
END_TEST

/*
 * The raw upstream handshake and first frame of a turn made with a key
 * (as Bearer and as x-api-key at once): the account's token, the
 * forwarded client header, the request, and no client key anywhere.
 */
START_TEST(test_keys__upstream_never_sees_the_key)
{
	struct e2e e;
	struct capture cap;
	struct tl_account acct;
	char key[SECRET_MAX], h[1024], *base, line[700];

	e2e_start(&e, NULL, NULL);
	key_add(&e, "alice", key);
	base = tl_read_file(e.conf, NULL);
	ck_assert_ptr_nonnull(base);
	e2e_daemon_stop(&e);
	capture_start(&cap);
	snprintf(line, sizeof(line), "upstream_url = ws://127.0.0.1:%d/backend-api/codex/responses",
	    cap.port);
	write_conf(&e, base, line);
	e2e_daemon_start(&e);

	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\nx-api-key: %s\r\n"
	    "x-openai-subagent: keys-marker-raw\r\n", key, key);
	turn(&e, h, "raw-1", NULL);	/* fails: the capture hangs up after one message */
	pthread_join(cap.thread, NULL);

	ck_assert_msg(strstr(cap.buf, "keys-marker-raw") != NULL,
	    "no forwarded header upstream:\n%s", cap.buf);
	ck_assert_msg(strstr(cap.buf, "response.create") != NULL,
	    "no request frame upstream:\n%s", cap.buf);
	ck_assert_int_eq(tl_sim_account(&e.sim, 1, &acct), 0);
	snprintf(h, sizeof(h), "Bearer %s", acct.access_token);
	ck_assert_msg(strstr(cap.buf, h) != NULL, "the upstream got another credential");
	tl_account_free(&acct);
	ck_assert_msg(strstr(cap.buf, key + 4) == NULL, "the upstream saw the client key");
	ck_assert_msg(strcasestr(cap.buf, "x-api-key") == NULL, "x-api-key went upstream");
	ck_assert_msg(strstr(cap.buf, "cpk_") == NULL, "a client key went upstream");
	free(base);
	e2e_stop(&e);
}
END_TEST

/* POST path with body; the status, and the 401 shape when it is 401. */
static int
post(struct e2e *e, const char *path, const char *headers, const char *body)
{
	struct tl_response r;
	int status;

	ck_assert_int_eq(tl_http("127.0.0.1", e->port, "POST", path, headers, body,
	    strlen(body), &r), 0);
	status = r.status;
	if (status == 401)
		assert_401_shape(&r);
	else if (status != 200)
		fprintf(stderr, "POST %s: %d %.300s\n", path, status, r.body);
	tl_response_free(&r);
	return status;
}

/* The translating routes are gated like /v1/responses. */
START_TEST(test_keys__every_route)
{
	static const char chat[] = "{\"model\":\"gpt-5.4\",\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"hi\"}]}";
	static const char msgs[] = "{\"model\":\"gpt-5.4\",\"max_tokens\":256,\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"hi\"}]}";
	struct e2e e;
	char key[SECRET_MAX], b[512], x[512];

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(post(&e, "/v1/chat/completions", NULL, chat), 200);
	key_add(&e, "routes", key);
	bearer(b, sizeof(b), key);
	snprintf(x, sizeof(x), "x-api-key: %s\r\nanthropic-version: 2023-06-01\r\n", key);

	ck_assert_int_eq(post(&e, "/v1/chat/completions", NULL, chat), 401);
	ck_assert_int_eq(post(&e, "/chat/completions", NULL, chat), 401);
	ck_assert_int_eq(post(&e, "/v1/messages", "anthropic-version: 2023-06-01\r\n", msgs), 401);
	ck_assert_int_eq(post(&e, "/v1/messages/count_tokens", NULL, msgs), 401);
	ck_assert_int_eq(post(&e, "/responses", NULL, "{}"), 401);
	ck_assert_int_eq(get(&e, "/models", NULL), 401);

	ck_assert_int_eq(post(&e, "/v1/chat/completions", b, chat), 200);
	ck_assert_int_eq(post(&e, "/v1/messages", x, msgs), 200);
	ck_assert_int_eq(post(&e, "/v1/messages/count_tokens", x, msgs), 200);
	ck_assert_int_eq(key_requests(&e, "routes"), 3);
	e2e_stop(&e);
}
END_TEST

/* --json: the key once in "key", and a failure is an "error" object. */
START_TEST(test_keys__json)
{
	struct e2e e;
	char *out = NULL, h[512];
	json_object *o, *v;
	const char *secret;

	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(ctl_run(&e, &out, "key add ci-bot --json"), 0);
	o = json_tokener_parse(out);
	free(out);
	ck_assert_ptr_nonnull(o);
	ck_assert(json_object_object_get_ex(o, "key", &v));
	secret = json_object_get_string(v);
	ck_assert_int_eq(strncmp(secret, "cpk_", 4), 0);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "label")), "ci-bot");
	xapikey(h, sizeof(h), secret);
	json_object_put(o);
	ck_assert_int_eq(turn(&e, h, "j-1", NULL), 200);
	ck_assert_int_eq(ctl_run(&e, &out, "key add ci-bot --json"), 1);
	ck_assert_msg(strncmp(out, "{\"error\":", 9) == 0, "%s", out);
	free(out);
	e2e_stop(&e);
}
END_TEST


START_TEST(test_keys__public_listen_needs_a_key)
{
	struct e2e e;
	char *base, *log, *daemonbin, *argv[5], *out = NULL, key[SECRET_MAX], h[512];
	int rc;
	pid_t pid;

	e2e_start(&e, NULL, NULL);
	base = tl_read_file(e.conf, NULL);
	ck_assert_ptr_nonnull(base);
	e2e_daemon_stop(&e);

	/* public, no key, no allow_anonymous: it says why and exits non-zero */
	write_conf(&e, base, "listen = 0.0.0.0:0");
	daemonbin = tl_program("daemon/codexpoold");
	argv[0] = daemonbin;
	argv[1] = "-f";
	argv[2] = "-c";
	argv[3] = e.conf;
	argv[4] = NULL;
	pid = tl_spawn(e.log, argv);
	ck_assert_int_gt(pid, 0);
	rc = tl_wait_exit(pid, WAIT_MS);
	ck_assert_msg(rc > 0, "codexpoold exited %d", rc);
	log = tl_read_file(e.log, NULL);
	ck_assert_msg(log && strstr(log, "refusing to start") && strstr(log, "allow_anonymous") &&
	    strstr(log, "codexpoolctl key add"), "unclear refusal in %s", e.log);
	free(log);
	ck_assert_msg(access(e.ctl, F_OK) != 0, "the refused daemon left its control socket");

	/* allow_anonymous = yes: it serves anyone */
	write_conf(&e, base, "listen = 0.0.0.0:0\nallow_anonymous = yes");
	e2e_daemon_start(&e);
	ck_assert_int_eq(ctl_run(&e, &out, "status"), 0);
	ck_assert_msg(strstr(out, "listen: 0.0.0.0:"), "%s", out);
	free(out);
	ck_assert_int_eq(turn(&e, NULL, "p-1", NULL), 200);
	e2e_daemon_stop(&e);

	/* a key made on loopback lets it start on the public address */
	write_conf(&e, base, "");
	e2e_daemon_start(&e);
	key_add(&e, "ops", key);
	e2e_daemon_stop(&e);
	write_conf(&e, base, "listen = 0.0.0.0:0");
	e2e_daemon_start(&e);
	ck_assert_int_eq(turn(&e, NULL, "p-2", NULL), 401);
	ck_assert_int_eq(get(&e, "/health", NULL), 200);
	bearer(h, sizeof(h), key);
	ck_assert_int_eq(turn(&e, h, "p-3", NULL), 200);
	/* and will not drop its last key there */
	ck_assert_int_eq(ctl_run(&e, &out, "key remove ops"), 1);
	ck_assert_msg(strstr(out, "last key"), "%s", out);
	free(out);
	ck_assert_int_eq(turn(&e, h, "p-4", NULL), 200);
	ck_assert_int_eq(ctl_run(&e, &out, "key add ops2"), 0);
	free(out);
	ck_assert_int_eq(ctl_run(&e, &out, "key remove ops"), 0);
	free(out);
	ck_assert_int_eq(turn(&e, h, "p-5", NULL), 401);

	free(daemonbin);
	free(base);
	e2e_stop(&e);
}
END_TEST

static Suite *
keys_suite(void)
{
	Suite *s = suite_create("keys");
	TCase *store = tcase_create("store");
	TCase *daemon = tcase_create("daemon");

	tcase_add_checked_fixture(store, store_setup, store_teardown);
	tcase_add_test(store, test_keys__store_functions);
	tcase_add_test(store, test_keys__store_migrates_v1);
	tcase_set_timeout(daemon, 120);
	tcase_add_test(daemon, test_keys__anonymous_without_keys);
	tcase_add_test(daemon, test_keys__lifecycle);
	tcase_add_test(daemon, test_keys__json);
	tcase_add_test(daemon, test_keys__every_route);
	tcase_add_test(daemon, test_keys__upstream_never_sees_the_key);
	tcase_add_test(daemon, test_keys__public_listen_needs_a_key);
	suite_add_tcase(s, store);
	suite_add_tcase(s, daemon);
	return s;
}

int
main(void)
{
	return e2e_run(keys_suite());
}
