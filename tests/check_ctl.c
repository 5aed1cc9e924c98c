/*
 * The control plane and operations, end to end: codexpoolctl and a raw
 * socket client against a real codexpoold (with a real codexpool-sim
 * upstream), reload, drain, pool switching, the init script, pidfiles,
 * log reopening.  Each test starts its own simulator and daemon in a
 * private directory; nothing waits on a clock, every condition is polled
 * with a generous deadline.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "hash.h"

/* ---- helpers: codexpoolctl ---------------------------------------------- */

/* Starts codexpoolctl [-s sock] <words of args>; stdout+stderr to outpath. */
static pid_t
ctl_spawn(const char *sock, const char *outpath, const char *args)
{
	char line[1024], *argv[40], *tok, *save = NULL;
	char *bin = tl_program("ctl/codexpoolctl");
	int argc = 0;
	pid_t pid;

	snprintf(line, sizeof(line), "%s", args);
	argv[argc++] = bin;
	if (sock != NULL) {
		argv[argc++] = "-s";
		argv[argc++] = (char *)sock;
	}
	for (tok = strtok_r(line, " ", &save); tok && argc < 39; tok = strtok_r(NULL, " ", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	unlink(outpath);
	pid = tl_spawn(outpath, argv);
	free(bin);
	return pid;
}

/* Waits for a ctl_spawn'd codexpoolctl; its exit status, its output in *out. */
static int
ctl_wait(pid_t pid, const char *outpath, char **out)
{
	int rc = tl_wait_exit(pid, WAIT_MS);

	if (out != NULL) {
		*out = tl_read_file(outpath, NULL);
		if (*out == NULL)
			*out = strdup("");
	}
	return rc;
}

/* ctl_run, but fails the test unless the exit status is want; output kept. */
static char *
ctl_expect(struct e2e *e, int want, const char *cmd)
{
	char *out = NULL;
	int rc = ctl_run(e, &out, "%s", cmd);

	ck_assert_msg(out != NULL, "'%s': no output file", cmd);
	ck_assert_msg(rc == want, "'codexpoolctl %s' exited %d, wanted %d; output:\n%s",
	    cmd, rc, want, out);
	return out;
}

/* The value of a "key: value" line, malloc'd, or NULL. */
static char *
field(const char *text, const char *key)
{
	size_t klen = strlen(key);
	const char *p = text, *end;

	while (p != NULL && *p) {
		if (strncmp(p, key, klen) == 0 && p[klen] == ':' && p[klen + 1] == ' ') {
			p += klen + 2;
			end = strchr(p, '\n');
			return end ? strndup(p, (size_t)(end - p)) : strdup(p);
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return NULL;
}

static long long
field_num(const char *text, const char *key)
{
	char *v = field(text, key);
	long long n = v ? strtoll(v, NULL, 10) : -1;

	free(v);
	return n;
}

/* Does text have a line that starts with prefix? */
static int
has_line(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = strlen(prefix);

	while (p != NULL && *p) {
		if (strncmp(p, prefix, n) == 0)
			return 1;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return 0;
}

/* text is exactly one JSON object (and whitespace); owned by the caller. */
static json_object *
one_object(const char *text)
{
	struct json_tokener *tok = json_tokener_new();
	json_object *o = json_tokener_parse_ex(tok, text, (int)strlen(text));
	size_t end = json_tokener_get_parse_end(tok);

	json_tokener_free(tok);
	ck_assert_msg(o != NULL && json_object_is_type(o, json_type_object),
	    "not a JSON object: %.500s", text);
	for (; text[end]; end++)
		ck_assert_msg(text[end] == ' ' || text[end] == '\n',
		    "more than one JSON value in: %.500s", text);
	return o;
}

/* One row of `show workers`. */
struct wrow {
	int		slot, pid;
	char		state[16];
	long long	uptime, restarts, requests;
};

static int
show_workers(struct e2e *e, struct wrow *rows, int max)
{
	char *out = ctl_expect(e, 0, "show workers"), *line, *save = NULL;
	int n = 0;

	ck_assert_msg(out[0] == '#', "show workers has no header: %s", out);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#' || n == max)
			continue;
		if (sscanf(line, "%d %d %15s %lld %lld %lld", &rows[n].slot, &rows[n].pid,
		    rows[n].state, &rows[n].uptime, &rows[n].restarts, &rows[n].requests) == 6)
			n++;
	}
	free(out);
	return n;
}

static struct wrow
worker_row(struct e2e *e, int slot)
{
	struct wrow rows[8], none = { .slot = -1, .pid = -1 };
	int i, n = show_workers(e, rows, 8);

	for (i = 0; i < n; i++)
		if (rows[i].slot == slot)
			return rows[i];
	return none;
}

/* One row of `show pools`. */
struct prow {
	char	conn[24], key[24], account[128], state[16];
	int	worker;
};

static int
show_pools(struct e2e *e, struct prow *rows, int max)
{
	char *out = ctl_expect(e, 0, "show pools"), *line, *save = NULL;
	int n = 0;

	ck_assert_msg(out[0] == '#', "show pools has no header: %s", out);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#' || n == max)
			continue;
		if (sscanf(line, "%23s %23s %d %127s %15s", rows[n].conn, rows[n].key,
		    &rows[n].worker, rows[n].account, rows[n].state) == 5)
			n++;
	}
	free(out);
	return n;
}

/* The row of `config` for key: value and origin; 0 if found. */
static int
config_row(struct e2e *e, const char *key, char *val, size_t vlen, char *origin, size_t olen)
{
	char *out = NULL, *line, *save = NULL, k[128], v[600], o[300], r[8];
	int found = -1;

	if (ctl_run(e, &out, "config") != 0 || out == NULL) {
		free(out);
		return -1;
	}
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (sscanf(line, "%127s %599s %299s %7s", k, v, o, r) == 4 && strcmp(k, key) == 0) {
			snprintf(val, vlen, "%s", v);
			snprintf(origin, olen, "%s", o);
			found = 0;
		}
	}
	free(out);
	return found;
}

/*
 * Sets key = value in the fixture's config file: replaces the line of the
 * key, else appends one.  Returns the (1-based) line number.
 */
static int
conf_set(struct e2e *e, const char *key, const char *value)
{
	char *old = tl_read_file(e->conf, NULL), *line, *save = NULL, *buf;
	size_t cap, klen = strlen(key);
	int lineno = 0, at = 0;

	ck_assert_ptr_nonnull(old);
	cap = strlen(old) + strlen(key) + strlen(value) + 16;
	buf = calloc(1, cap);
	ck_assert_ptr_nonnull(buf);
	/* strtok_r skips empty lines, so walk by hand to keep numbering right */
	for (line = old; line != NULL && *line; line = save) {
		char *nl = strchr(line, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		lineno++;
		if (!at && strncmp(line, key, klen) == 0 &&
		    (line[klen] == ' ' || line[klen] == '=')) {
			at = lineno;
			snprintf(buf + strlen(buf), cap - strlen(buf), "%s = %s\n", key, value);
		} else {
			snprintf(buf + strlen(buf), cap - strlen(buf), "%s\n", line);
		}
	}
	if (!at) {
		at = ++lineno;
		snprintf(buf + strlen(buf), cap - strlen(buf), "%s = %s\n", key, value);
	}
	ck_assert_int_eq(tl_write_file(e->conf, buf, strlen(buf), 0600), 0);
	free(buf);
	free(old);
	return at;
}

/* The hex pool key of a conversation, as `show pools` prints it. */
static uint64_t
pool_key(const char *entry, const char *conv)
{
	char buf[300];
	uint64_t h;

	snprintf(buf, sizeof(buf), "%s:%s", entry, conv);
	h = hash64_str(buf);
	return h ? h : 1;
}

/* ---- helpers: a raw control-socket client (like socat) ---------------- */

struct raw {
	int	fd;
	char	buf[256 * 1024];
	size_t	have;
};

static int
unix_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd, saved;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static struct raw *
raw_open(const char *path)
{
	struct raw *r = calloc(1, sizeof(*r));

	ck_assert_ptr_nonnull(r);
	r->fd = unix_connect(path);
	ck_assert_msg(r->fd >= 0, "connect %s: %s", path, strerror(errno));
	return r;
}

static void
raw_close(struct raw *r)
{
	close(r->fd);
	free(r);
}

static void
raw_send(struct raw *r, const char *data, size_t len)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = write(r->fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n > 0, "write to the control socket: %s", strerror(errno));
		off += (size_t)n;
	}
}

/* Reads more; 0 at EOF, -1 on timeout or error. */
static int
raw_fill(struct raw *r, int64_t deadline)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
	ssize_t n;
	int rc;

	ck_assert_msg(r->have < sizeof(r->buf), "answer larger than %zu bytes", sizeof(r->buf));
	for (;;) {
		int64_t left = deadline - tl_now_ms();
		if (left <= 0)
			return -1;
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return -1;
		n = read(r->fd, r->buf + r->have, sizeof(r->buf) - r->have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : -1;
		r->have += (size_t)n;
		return 1;
	}
}

static char *
raw_take(struct raw *r, size_t n, size_t skip)
{
	char *s = strndup(r->buf, n);

	memmove(r->buf, r->buf + n + skip, r->have - n - skip);
	r->have -= n + skip;
	return s;
}

/* One line without its newline; NULL on EOF/timeout. */
static char *
raw_line(struct raw *r)
{
	int64_t deadline = tl_now_ms() + WAIT_MS;
	char *nl;

	for (;;) {
		if ((nl = memchr(r->buf, '\n', r->have)) != NULL)
			return raw_take(r, (size_t)(nl - r->buf), 1);
		if (raw_fill(r, deadline) <= 0)
			return NULL;
	}
}

/*
 * One answer: the lines up to the empty line that ends it, each with its
 * newline ("" is an empty answer).  NULL on EOF or timeout.
 */
static char *
raw_answer(struct raw *r)
{
	int64_t deadline = tl_now_ms() + WAIT_MS;
	char *end;

	for (;;) {
		if (r->have > 0 && r->buf[0] == '\n')
			return raw_take(r, 0, 1);
		if (r->have >= 2 && (end = memmem(r->buf, r->have, "\n\n", 2)) != NULL)
			return raw_take(r, (size_t)(end - r->buf) + 1, 1);
		if (raw_fill(r, deadline) <= 0)
			return NULL;
	}
}

/* Is anything more readable within ms?  (Used only where nothing should be.) */
static int
raw_pending(struct raw *r, int ms)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	return r->have > 0 || poll(&pfd, 1, ms) > 0;
}

/* A listening Unix socket in dir; the caller closes it. */
static int
fake_server(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	return fd;
}

static int
accept_within(int lfd, int ms)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };

	ck_assert_msg(poll(&pfd, 1, ms) == 1, "codexpoolctl never connected");
	return accept(lfd, NULL, NULL);
}

/* ---- 1. every command, text and JSON ---------------------------------- */

static const char *const status_keys[] = {
	"version", "uptime", "listen", "workers", "pool", "requests_total",
	"requests_inflight", "requests_failed", "pooled_open", "pooled_busy",
	"decisions_reuse", "decisions_new", "decisions_bypass", "decisions_retry_stale",
	"pool_reuse_rate", "prompt_cache_hit_rate", "prompt_cache_hit_rate_5m",
	"worker_restarts", NULL
};

/* Runs "cmd --json": exit 0, one object, no "error"; returned for more checks. */
static json_object *
ctl_json(struct e2e *e, const char *cmd)
{
	char line[256], *out;
	json_object *o;

	snprintf(line, sizeof(line), "%s --json", cmd);
	out = ctl_expect(e, 0, line);
	o = one_object(out);
	ck_assert_msg(!json_object_object_get_ex(o, "error", NULL), "'%s': %s", line, out);
	free(out);
	return o;
}

static void
assert_array(json_object *o, const char *key, size_t min)
{
	json_object *a;

	ck_assert_msg(json_object_object_get_ex(o, key, &a) &&
	    json_object_is_type(a, json_type_array), "no array '%s' in %s", key,
	    json_object_to_json_string(o));
	ck_assert_msg(json_object_array_length(a) >= min, "'%s' has %zu rows, wanted >= %zu",
	    key, json_object_array_length(a), min);
}

START_TEST(test_ctl__every_command_text_and_json)
{
	struct e2e e;
	struct conv c;
	struct prow pools[4];
	char *out, line[300], entry[128];
	json_object *o;
	int i;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-every");
	ck_assert_int_eq(conv_turn(&e, &c, "hello", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c, "again", 0, NULL, NULL), 200);
	ck_assert_int_eq(show_pools(&e, pools, 4), 1);
	snprintf(entry, sizeof(entry), "%s", pools[0].account);

	/* status */
	out = ctl_expect(&e, 0, "status");
	for (i = 0; status_keys[i]; i++) {
		snprintf(line, sizeof(line), "%s: ", status_keys[i]);
		ck_assert_msg(has_line(out, line), "status lacks '%s':\n%s", status_keys[i], out);
	}
	ck_assert_int_eq(field_num(out, "workers"), 2);
	ck_assert_int_eq(field_num(out, "requests_total"), 2);
	ck_assert_int_eq(field_num(out, "decisions_reuse"), 1);
	free(out);
	o = ctl_json(&e, "status");
	for (i = 0; status_keys[i]; i++)
		ck_assert_msg(json_object_object_get_ex(o, status_keys[i], NULL),
		    "status --json lacks '%s'", status_keys[i]);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "workers")), 2);
	json_object_put(o);
	/* --json before the command is the same option */
	out = ctl_expect(&e, 0, "--json status");
	json_object_put(one_object(out));
	free(out);

	/* tables: a "#" header naming the columns, then rows */
	out = ctl_expect(&e, 0, "show workers");
	ck_assert_msg(strncmp(out, "# slot pid state", 16) == 0, "%s", out);
	free(out);
	o = ctl_json(&e, "show workers");
	assert_array(o, "workers", 2);
	json_object_put(o);
	out = ctl_expect(&e, 0, "show pools");
	ck_assert_msg(strncmp(out, "# conn key worker account", 25) == 0, "%s", out);
	free(out);
	o = ctl_json(&e, "show pools");
	assert_array(o, "pools", 1);
	json_object_put(o);
	out = ctl_expect(&e, 0, "show conversations");
	ck_assert_msg(strncmp(out, "# conv account worker turns", 27) == 0, "%s", out);
	ck_assert_msg(strchr(out, '\n') != NULL && strchr(out, '\n')[1] != '\0',
	    "no conversation row: %s", out);
	free(out);
	o = ctl_json(&e, "show conversations");
	assert_array(o, "conversations", 1);
	json_object_put(o);

	/* evict */
	snprintf(line, sizeof(line), "evict %s", entry);
	out = ctl_expect(&e, 0, line);
	ck_assert_msg(has_line(out, "evicted: ") && field_num(out, "connections") == 1, "%s", out);
	free(out);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	o = ctl_json(&e, line);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "evicted")), entry);
	ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "connections")), 0);
	json_object_put(o);

	/* pool disable / enable */
	out = ctl_expect(&e, 0, "pool disable");
	ck_assert_msg(has_line(out, "pool: disabled"), "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "status");
	ck_assert_msg(has_line(out, "pool: disabled"), "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "pool enable");
	ck_assert_msg(has_line(out, "pool: enabled"), "%s", out);
	free(out);
	o = ctl_json(&e, "pool disable");
	ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "pool")), "disabled");
	json_object_put(o);
	o = ctl_json(&e, "pool enable");
	ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "pool")), "enabled");
	json_object_put(o);

	/* drain: one worker in text, the other in JSON */
	out = ctl_expect(&e, 0, "drain 0");
	ck_assert_msg(field_num(out, "draining") == 0 && has_line(out, "turns_running: "), "%s", out);
	free(out);
	o = ctl_json(&e, "drain 1");
	ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "draining")), 1);
	ck_assert_msg(json_object_object_get_ex(o, "turns_running", NULL), "no turns_running");
	json_object_put(o);

	/* reload of an unchanged file */
	out = ctl_expect(&e, 0, "reload");
	ck_assert_msg(has_line(out, "reloaded: "), "%s", out);
	ck_assert_ptr_nonnull(strstr(out, e.conf));
	free(out);
	o = ctl_json(&e, "reload");
	ck_assert_msg(json_object_object_get_ex(o, "reloaded", NULL), "no 'reloaded'");
	json_object_put(o);

	/* config */
	out = ctl_expect(&e, 0, "config");
	ck_assert_msg(strncmp(out, "# key value origin reloadable", 29) == 0, "%s", out);
	ck_assert_msg(has_line(out, "workers 2 "), "%s", out);
	free(out);
	o = ctl_json(&e, "config");
	assert_array(o, "config", 10);
	json_object_put(o);

	/* stats reset */
	out = ctl_expect(&e, 0, "stats reset");
	ck_assert_msg(has_line(out, "stats: reset"), "%s", out);
	free(out);
	o = ctl_json(&e, "stats reset");
	ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "stats")), "reset");
	json_object_put(o);

	/* help lists every command */
	out = ctl_expect(&e, 0, "help");
	{
		static const char *const cmds[] = { "status:", "show workers:", "show pools:",
		    "show conversations:", "drain <worker>:", "stats reset:", "evict <entry>:",
		    "pool enable:", "pool disable:", "reload:", "config:", "help:", NULL };
		for (i = 0; cmds[i]; i++)
			ck_assert_msg(has_line(out, cmds[i]), "help lacks '%s':\n%s", cmds[i], out);
	}
	free(out);
	o = ctl_json(&e, "help");
	assert_array(o, "commands", 12);
	json_object_put(o);

	/* both drained workers came back (stats reset zeroed worker_restarts,
	 * the per-worker restarts column counts on) */
	{
		int64_t end = tl_now_ms() + WAIT_MS;
		struct wrow w0, w1;
		for (;;) {
			w0 = worker_row(&e, 0);
			w1 = worker_row(&e, 1);
			if ((w0.restarts == 1 && w1.restarts == 1 && strcmp(w0.state, "up") == 0 &&
			    strcmp(w1.state, "up") == 0) || tl_now_ms() > end)
				break;
			tl_msleep(50);
		}
		ck_assert_msg(w0.restarts == 1 && w1.restarts == 1, "restarts %lld and %lld",
		    w0.restarts, w1.restarts);
	}
	ck_assert_int_eq(conv_turn(&e, &c, "after the drains", 0, NULL, NULL), 200);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* ---- 2. abbreviations and errors --------------------------------------- */

/* Exit 1 and every needle in the output (the reason is on stderr). */
static void
expect_refusal(struct e2e *e, const char *cmd, const char *const *needles)
{
	char *out = ctl_expect(e, 1, cmd);
	int i;

	ck_assert_msg(strncmp(out, "codexpoolctl: ", 14) == 0, "'%s': %s", cmd, out);
	for (i = 0; needles[i]; i++)
		ck_assert_msg(strstr(out, needles[i]) != NULL, "'%s': no '%s' in: %s", cmd,
		    needles[i], out);
	free(out);
}

START_TEST(test_ctl__abbreviations_and_errors)
{
	struct e2e e;
	struct wrow full[4], abbr[4];
	char *a, *b, *out;
	json_object *o;
	int n, i;

	e2e_start(&e, NULL, NULL);
	/* "sh w" is "show workers" */
	n = show_workers(&e, full, 4);
	ck_assert_int_eq(n, 2);
	a = ctl_expect(&e, 0, "sh w");
	b = ctl_expect(&e, 0, "show workers");
	ck_assert_msg(strncmp(a, b, strcspn(b, "\n")) == 0, "headers differ:\n%s\n%s", a, b);
	free(a);
	free(b);
	{
		char *line;
		a = ctl_expect(&e, 0, "sh w");
		line = strchr(a, '\n');
		for (n = 0; line && n < 4 && sscanf(line + 1, "%d %d %15s", &abbr[n].slot,
		    &abbr[n].pid, abbr[n].state) == 3; n++)
			line = strchr(line + 1, '\n');
		free(a);
	}
	ck_assert_int_eq(n, 2);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(abbr[i].slot, full[i].slot);
		ck_assert_int_eq(abbr[i].pid, full[i].pid);
	}
	out = ctl_expect(&e, 0, "sh p");
	ck_assert_msg(strncmp(out, "# conn ", 7) == 0, "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "sh c");
	ck_assert_msg(strncmp(out, "# conv ", 7) == 0, "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "statu");
	ck_assert_msg(has_line(out, "uptime: "), "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "stats r");
	ck_assert_msg(has_line(out, "stats: reset"), "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "po dis");
	ck_assert_msg(has_line(out, "pool: disabled"), "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "po en");
	ck_assert_msg(has_line(out, "pool: enabled"), "%s", out);
	free(out);
	out = ctl_expect(&e, 0, "conf");
	ck_assert_msg(out[0] == '#', "%s", out);
	free(out);

	/* ambiguous: "s r" could be status or stats reset */
	expect_refusal(&e, "s r", (const char *const[]){ "status", "stats", NULL });
	/* incomplete: the choices for the missing word */
	expect_refusal(&e, "pool", (const char *const[]){ "enable", "disable", NULL });
	expect_refusal(&e, "show", (const char *const[]){ "workers", "pools", "conversations", NULL });
	expect_refusal(&e, "stats", (const char *const[]){ "reset", NULL });
	/* unknown words list what would fit */
	expect_refusal(&e, "frobnicate", (const char *const[]){ "frobnicate", "status", "show",
	    "drain", "stats", "evict", "pool", "reload", "config", "help", NULL });
	expect_refusal(&e, "show frob", (const char *const[]){ "frob", "workers", "pools",
	    "conversations", NULL });
	/* wrong argument counts print the usage */
	expect_refusal(&e, "drain", (const char *const[]){ "usage: drain <worker>", NULL });
	expect_refusal(&e, "status now", (const char *const[]){ "usage: status", NULL });
	expect_refusal(&e, "evict a b", (const char *const[]){ "usage: evict <entry>", NULL });
	expect_refusal(&e, "pool enable now", (const char *const[]){ "usage: pool enable", NULL });
	/* bad arguments */
	expect_refusal(&e, "evict nosuchaccount", (const char *const[]){ "nosuchaccount", NULL });
	expect_refusal(&e, "drain 7", (const char *const[]){ "no worker '7'", "0..1", NULL });
	expect_refusal(&e, "drain -1", (const char *const[]){ "no worker", NULL });
	expect_refusal(&e, "drain 1x", (const char *const[]){ "no worker", NULL });
	expect_refusal(&e, "drain abc", (const char *const[]){ "no worker", NULL });
	/* a JSON failure is an object with "error", exit 1 */
	out = ctl_expect(&e, 1, "frobnicate --json");
	o = one_object(out);
	ck_assert_msg(json_object_object_get_ex(o, "error", NULL), "%s", out);
	json_object_put(o);
	free(out);
	out = ctl_expect(&e, 1, "drain 9 --json");
	o = one_object(out);
	ck_assert_msg(strstr(json_object_get_string(json_object_object_get(o, "error")),
	    "no worker") != NULL, "%s", out);
	json_object_put(o);
	free(out);
	/* none of that disturbed the daemon: the workers did not restart */
	ck_assert_int_eq(status_num(&e, "worker_restarts"), 0);
	e2e_stop(&e);
}
END_TEST

/*
 * "st" is a prefix of both "status" and "stats": an unambiguous-prefix
 * matcher must refuse it and name both.
 */
START_TEST(test_ctl__ambiguous_prefix_st)
{
	struct e2e e;

	e2e_start(&e, NULL, NULL);
	expect_refusal(&e, "st", (const char *const[]){ "status", "stats", NULL });
	expect_refusal(&e, "s", (const char *const[]){ "status", "show", "stats", NULL });
	e2e_stop(&e);
}
END_TEST

/* ---- 3. the raw protocol ----------------------------------------------- */

START_TEST(test_ctl__raw_protocol)
{
	struct e2e e;
	struct raw *r;
	char *g, *a;
	json_object *o;

	e2e_start(&e, NULL, NULL);
	r = raw_open(e.ctl);
	g = raw_line(r);
	ck_assert_ptr_nonnull(g);
	ck_assert_str_eq(g, "codexpool 1");
	free(g);

	/* several commands in one write, answers in order, each ended by an empty line */
	raw_send(r, "status\nhelp\nshow workers\n", 26);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "uptime: ") && has_line(a, "version: "), "%s", a);
	free(a);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "status:") && has_line(a, "help:"), "%s", a);
	free(a);
	a = raw_answer(r);
	ck_assert_msg(a && a[0] == '#', "%s", a);
	free(a);

	/* empty lines (also with CR or blanks) get nothing at all */
	raw_send(r, "\n\r\n   \n\t\n", 9);
	ck_assert_msg(!raw_pending(r, 300), "an empty line got an answer");
	raw_send(r, "config\n", 7);
	a = raw_answer(r);
	ck_assert_msg(a && strncmp(a, "# key ", 6) == 0, "after empty lines: %s", a);
	free(a);

	/* CRLF line ends work (telnet, some scripts) */
	raw_send(r, "status\r\n", 8);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "uptime: "), "%s", a);
	free(a);

	/* a failure is exactly one "error:" line */
	raw_send(r, "frobnicate\n", 11);
	a = raw_answer(r);
	ck_assert_msg(a && strncmp(a, "error: ", 7) == 0, "%s", a);
	ck_assert_msg(strchr(a, '\n') == a + strlen(a) - 1, "more than one line: %s", a);
	free(a);

	/* --json: one JSON line, then the empty line */
	raw_send(r, "status --json\n", 14);
	a = raw_answer(r);
	ck_assert_msg(a && a[0] == '{' && strchr(a, '\n') == a + strlen(a) - 1, "%s", a);
	o = one_object(a);
	ck_assert_msg(json_object_object_get_ex(o, "pooled_open", NULL), "%s", a);
	json_object_put(o);
	free(a);
	raw_send(r, "--json\n", 7);
	a = raw_answer(r);
	o = one_object(a);
	ck_assert_msg(json_object_object_get_ex(o, "error", NULL), "%s", a);
	json_object_put(o);
	free(a);

	/* a command split over two writes is still one command */
	raw_send(r, "sta", 3);
	ck_assert_msg(!raw_pending(r, 200), "answered half a line");
	raw_send(r, "tus\n", 4);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "uptime: "), "%s", a);
	free(a);

	/* the connection stays usable; a second client at the same time too */
	{
		struct raw *r2 = raw_open(e.ctl);
		g = raw_line(r2);
		ck_assert_str_eq(g, "codexpool 1");
		free(g);
		raw_send(r2, "help\n", 5);
		raw_send(r, "status\n", 7);
		a = raw_answer(r2);
		ck_assert_msg(a && has_line(a, "help:"), "%s", a);
		free(a);
		a = raw_answer(r);
		ck_assert_msg(a && has_line(a, "uptime: "), "%s", a);
		free(a);
		raw_close(r2);
	}
	raw_close(r);
	e2e_stop(&e);
}
END_TEST

/*
 * A line longer than the protocol's limit (256 KiB) is one error, whatever
 * it contains and however it arrives; the next command is answered
 * normally, so a client never gets out of step.
 */
#define OVERLONG	(256 * 1024)

START_TEST(test_ctl__raw_overlong_line)
{
	struct e2e e;
	struct raw *r;
	char *g, *a, *big;
	size_t n;

	e2e_start(&e, NULL, NULL);
	r = raw_open(e.ctl);
	g = raw_line(r);
	ck_assert_str_eq(g, "codexpool 1");
	free(g);

	/* a line of more than twice the limit, then a command */
	n = 2 * OVERLONG + 1000;
	big = malloc(n + 8);
	memset(big, 'x', n);
	big[n - 1] = '\n';
	memcpy(big + n, "status\n", 7);
	raw_send(r, big, n + 7);
	free(big);
	a = raw_answer(r);
	ck_assert_msg(a && strncmp(a, "error: ", 7) == 0 && strstr(a, "too long"),
	    "a %zu-byte line got: %.200s", n, a);
	free(a);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "uptime: "),
	    "one over-long line got more than one answer; the next was: %.200s", a);
	free(a);
	ck_assert_msg(!raw_pending(r, 300), "unexpected extra answer");

	/* just over the limit, and a valid command if the limit were ignored */
	n = OVERLONG + 100;
	big = malloc(n + 1);
	memset(big, ' ', n);
	memcpy(big, "status", 6);
	big[n - 1] = '\n';
	raw_send(r, big, n);
	free(big);
	a = raw_answer(r);
	ck_assert_msg(a && strncmp(a, "error: ", 7) == 0 && strstr(a, "too long"),
	    "a %zu-byte line got: %.200s", n, a);
	free(a);
	raw_send(r, "help\n", 5);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "help:"), "after the long line: %.200s", a);
	free(a);
	raw_close(r);
	e2e_stop(&e);
}
END_TEST

/* ---- 4. codexpoolctl against a wrong or missing server ----------------- */

/* Notes a failed expectation without stopping, so one run shows them all. */
static void
note(char *log, size_t len, const char *what, int rc, int want, const char *out,
    const char *n1, const char *n2)
{
	if (rc == want && (n1 == NULL || strstr(out, n1)) && (n2 == NULL || strstr(out, n2)))
		return;
	snprintf(log + strlen(log), len - strlen(log),
	    "\n- %s: exit %d (wanted %d%s%s%s%s%s): %.600s", what, rc, want,
	    n1 ? ", '" : "", n1 ? n1 : "", n1 ? "'" : "", n2 ? " and '" : "", n2 ? n2 : "", out);
	if (n2)
		strncat(log, "'", len - strlen(log) - 1);
}

START_TEST(test_ctl__wrong_protocol_and_no_daemon)
{
	char *dir = tl_tmpdir(), sock[600], outpath[700], *out, failures[8192] = "";
	int lfd, cfd, rc;
	pid_t pid;

	ck_assert_ptr_nonnull(dir);
	snprintf(sock, sizeof(sock), "%s/fake.sock", dir);
	snprintf(outpath, sizeof(outpath), "%s/ctl.out", dir);

	/* a server that speaks a newer protocol */
	lfd = fake_server(sock);
	pid = ctl_spawn(sock, outpath, "status");
	cfd = accept_within(lfd, WAIT_MS);
	ck_assert_int_ge(cfd, 0);
	ck_assert_int_eq(write(cfd, "codexpool 99\n", 13), 13);
	rc = ctl_wait(pid, outpath, &out);
	note(failures, sizeof(failures), "protocol 99", rc, 3, out, "99", "protocol");
	free(out);
	close(cfd);

	/* a server that is not codexpool at all */
	pid = ctl_spawn(sock, outpath, "status");
	cfd = accept_within(lfd, WAIT_MS);
	ck_assert_int_eq(write(cfd, "SSH-2.0-OpenSSH_9.2\r\n", 21), 21);
	rc = ctl_wait(pid, outpath, &out);
	note(failures, sizeof(failures), "not codexpool", rc, 3, out, "does not speak", NULL);
	free(out);
	close(cfd);

	/* a server that greets and hangs up without answering */
	pid = ctl_spawn(sock, outpath, "status");
	cfd = accept_within(lfd, WAIT_MS);
	ck_assert_int_eq(write(cfd, "codexpool 1\n", 12), 12);
	close(cfd);
	rc = ctl_wait(pid, outpath, &out);
	note(failures, sizeof(failures), "hang-up", rc, 3, out, "closed", NULL);
	free(out);

	/* a socket file nobody listens on any more */
	close(lfd);
	pid = ctl_spawn(sock, outpath, "status");
	rc = ctl_wait(pid, outpath, &out);
	note(failures, sizeof(failures), "dead socket", rc, 3, out, "is codexpoold running?", NULL);
	free(out);

	/* no socket file at all */
	unlink(sock);
	pid = ctl_spawn(sock, outpath, "status");
	rc = ctl_wait(pid, outpath, &out);
	note(failures, sizeof(failures), "no socket", rc, 3, out, "is codexpoold running?", sock);
	free(out);

	/* no command: usage, exit 2 */
	pid = ctl_spawn(sock, outpath, "");
	rc = ctl_wait(pid, outpath, &out);
	note(failures, sizeof(failures), "no command", rc, 2, out, "usage:", NULL);
	free(out);
	tl_rmrf(dir);
	free(dir);
	ck_assert_msg(failures[0] == '\0', "codexpoolctl:%s", failures);
}
END_TEST

/*
 * The keywords of every command the daemon's `help` lists, e.g.
 * "account add auth-json <base64url> [label]: ..." gives "account add
 * auth-json"; malloc'd strings in a NULL-terminated array.
 */
static char **
help_commands(void)
{
	struct e2e e;
	json_object *o, *cmds;
	char **list;
	size_t i, n;

	e2e_start(&e, NULL, NULL);
	o = ctl_json(&e, "help");
	cmds = json_object_object_get(o, "commands");
	n = json_object_array_length(cmds);
	ck_assert_int_ge(n, 12);
	list = calloc(n + 1, sizeof(*list));
	for (i = 0; i < n; i++) {
		const char *u = json_object_get_string(json_object_array_get_idx(cmds, i));
		char buf[256], *w, *save = NULL;
		size_t len = strcspn(u, ":");
		snprintf(buf, sizeof(buf), "%.*s", (int)len, u);
		list[i] = calloc(1, len + 1);
		for (w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
			if (w[0] == '<' || w[0] == '[')
				continue;
			if (list[i][0])
				strcat(list[i], " ");
			strcat(list[i], w);
		}
		/* codexpoolctl spells "account add auth-json|tokens" as options */
		if (strncmp(list[i], "account add ", 12) == 0)
			list[i][11] = '\0';
	}
	json_object_put(o);
	e2e_stop(&e);
	return list;
}

static void
free_list(char **list)
{
	size_t i;

	for (i = 0; list[i]; i++)
		free(list[i]);
	free(list);
}

/* Is every space-separated word of words in text? */
static int
all_words_in(const char *text, const char *words)
{
	char buf[256], *w, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", words);
	for (w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save))
		if (strstr(text, w) == NULL)
			return 0;
	return 1;
}

START_TEST(test_ctl__usage_lists_every_command)
{
	char *dir = tl_tmpdir(), outpath[700], *out, **cmds = help_commands();
	int i, rc;
	pid_t pid;

	snprintf(outpath, sizeof(outpath), "%s/usage.out", dir);
	pid = ctl_spawn(NULL, outpath, "");
	rc = ctl_wait(pid, outpath, &out);
	ck_assert_int_eq(rc, 2);
	for (i = 0; cmds[i]; i++)
		ck_assert_msg(all_words_in(out, cmds[i]),
		    "codexpoolctl's usage does not mention '%s':\n%s", cmds[i], out);
	free(out);
	free_list(cmds);
	tl_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(test_ctl__manual_lists_every_command)
{
	char path[700], *man, *line, *save = NULL, **cmds = help_commands();
	int i, documented[64] = { 0 };

	snprintf(path, sizeof(path), "%s/man/codexpoolctl.8.in", tl_srcdir());
	man = tl_read_file(path, NULL);
	ck_assert_msg(man != NULL, "cannot read %s", path);
	/* the item lines (.B, .BI, .BR), with troff's \- made plain */
	for (line = strtok_r(man, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char plain[1024];
		size_t j, k;
		if (strncmp(line, ".B", 2) != 0)
			continue;
		for (j = 0, k = 0; line[j] && k < sizeof(plain) - 1; j++)
			if (!(line[j] == '\\' && line[j + 1] == '-'))
				plain[k++] = line[j];
		plain[k] = '\0';
		for (i = 0; cmds[i] && i < 64; i++)
			if (all_words_in(plain, cmds[i]))
				documented[i] = 1;
	}
	for (i = 0; cmds[i] && i < 64; i++)
		ck_assert_msg(documented[i], "man/codexpoolctl.8.in documents no command '%s'",
		    cmds[i]);
	free(man);
	free_list(cmds);
}
END_TEST

/* ---- 5. another uid is refused ----------------------------------------- */

enum { PEER_EACCES = 10, PEER_OTHER_ERRNO, PEER_DENIED = 20, PEER_SERVED };

/*
 * In a child as uid, primary group gid and the supplementary groups
 * groups[ngroups]: connect, read to EOF; how it went as an exit code.
 */
static int
connect_as_groups(const char *path, uid_t uid, gid_t gid, const gid_t *groups, int ngroups)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char buf[4096];
		size_t have = 0;
		ssize_t n;
		int fd;

		signal(SIGPIPE, SIG_IGN);
		if (setgroups((size_t)ngroups, groups) == -1 || setgid(gid) == -1 ||
		    setuid(uid) == -1)
			_exit(99);
		fd = unix_connect(path);
		if (fd == -1)
			_exit(errno == EACCES ? PEER_EACCES : PEER_OTHER_ERRNO);
		/* if it were served, ask for something so the answer shows it */
		if (write(fd, "status\n", 7) < 0)
			(void)0;
		for (;;) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			if (poll(&pfd, 1, 10000) <= 0)
				break;
			n = read(fd, buf + have, sizeof(buf) - 1 - have);
			if (n <= 0)
				break;
			have += (size_t)n;
			if (have == sizeof(buf) - 1)
				break;
		}
		buf[have] = '\0';
		_exit(strstr(buf, "error: permission denied") && !strstr(buf, "uptime:") ?
		    PEER_DENIED : PEER_SERVED);
	}
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int
connect_as(const char *path, uid_t uid, gid_t gid)
{
	return connect_as_groups(path, uid, gid, NULL, 0);
}

/* Can anyone reach path (every parent directory searchable by others)? */
static int
traversable(const char *path)
{
	char p[700], *slash;
	struct stat st;

	snprintf(p, sizeof(p), "%s", path);
	while ((slash = strrchr(p, '/')) != NULL && slash != p) {
		*slash = '\0';
		if (stat(p, &st) == -1 || !(st.st_mode & S_IXOTH))
			return 0;
	}
	return 1;
}

START_TEST(test_ctl__other_uid_refused)
{
	struct e2e e;
	struct passwd *pw;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int rc;

	if (geteuid() != 0) {
		fprintf(stderr, "test_ctl__other_uid_refused: skipped, needs root to setuid\n");
		return;
	}
	pw = getpwnam("nobody");
	if (pw == NULL) {
		fprintf(stderr, "test_ctl__other_uid_refused: skipped, no user 'nobody'\n");
		return;
	}
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	e2e_start(&e, NULL, NULL);
	ck_assert_int_eq(stat(e.ctl, &st), 0);
	ck_assert_msg(S_ISSOCK(st.st_mode), "%s is not a socket", e.ctl);
	ck_assert_msg((st.st_mode & 07777) == 0600, "control socket mode is %o, not 600",
	    (unsigned)(st.st_mode & 07777));
	/* as installed: the file mode (or the private dir) keeps nobody out */
	rc = connect_as(e.ctl, uid, gid);
	ck_assert_msg(rc == PEER_EACCES || rc == PEER_DENIED, "uid %d was not refused (%d)",
	    (int)uid, rc);

	/* loosened by an admin: the daemon itself still refuses the uid */
	ck_assert_int_eq(chmod(e.dir, 0711), 0);
	ck_assert_int_eq(chmod(e.ctl, 0666), 0);
	rc = connect_as(e.ctl, uid, gid);
	if (traversable(e.ctl)) {
		ck_assert_msg(rc == PEER_DENIED, "with mode 0666, uid %d got %d instead of "
		    "'error: permission denied'", (int)uid, rc);
		ck_assert_int_eq(tl_wait_file_contains(e.log, "refused a connection from uid",
		    WAIT_MS), 0);
	} else {
		fprintf(stderr, "test_ctl__other_uid_refused: %s is not reachable by others; "
		    "SO_PEERCRED check not exercised\n", e.ctl);
		ck_assert(rc == PEER_EACCES || rc == PEER_DENIED);
	}
	/* codexpoolctl run by that uid says why, exit 1 */
	if (rc == PEER_DENIED) {
		char outpath[800], *out;
		int wst;
		pid_t pid;

		snprintf(outpath, sizeof(outpath), "%s/ctl-nobody.out", e.dir);
		fflush(NULL);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			char *bin = tl_program("ctl/codexpoolctl");
			int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			dup2(fd, 1);
			dup2(fd, 2);
			if (setgroups(0, NULL) == -1 || setgid(gid) == -1 || setuid(uid) == -1)
				_exit(99);
			execl(bin, bin, "-s", e.ctl, "status", (char *)NULL);
			_exit(127);
		}
		while (waitpid(pid, &wst, 0) == -1 && errno == EINTR)
			;
		out = tl_read_file(outpath, NULL);
		ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 1 && out &&
		    strstr(out, "permission denied"), "codexpoolctl as uid %d: %s %d; output: %s",
		    (int)uid, WIFEXITED(wst) ? "exit" : "signal",
		    WIFEXITED(wst) ? WEXITSTATUS(wst) : WTERMSIG(wst), out ? out : "");
		free(out);
	}
	ck_assert_int_eq(chmod(e.ctl, 0600), 0);
	ck_assert_int_eq(chmod(e.dir, 0700), 0);
	/* root is still served */
	ck_assert_int_ge(status_num(&e, "uptime"), 0);
	e2e_stop(&e);
}
END_TEST

/* control_group: its members are served, the socket is 0660 and theirs. */
START_TEST(test_ctl__control_group_members_served)
{
	struct e2e e;
	struct passwd *pw;
	struct group *gr;
	struct stat st;
	char extra[128];
	int rc;

	if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL ||
	    (gr = getgrgid(pw->pw_gid)) == NULL) {
		fprintf(stderr, "test_ctl__control_group_members_served: skipped, needs root "
		    "and the user nobody\n");
		return;
	}
	snprintf(extra, sizeof(extra), "control_group = %s", gr->gr_name);
	e2e_start(&e, NULL, extra);
	ck_assert_int_eq(stat(e.ctl, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0660);
	ck_assert_int_eq(st.st_gid, gr->gr_gid);
	ck_assert_int_eq(chmod(e.dir, 0711), 0);
	if (traversable(e.ctl)) {
		rc = connect_as(e.ctl, pw->pw_uid, pw->pw_gid);
		ck_assert_msg(rc == PEER_SERVED, "a member of %s got %d", gr->gr_name, rc);
	}
	ck_assert_int_eq(chmod(e.dir, 0700), 0);
	e2e_stop(&e);
}
END_TEST

/* A group to test control_group with: not root's, not the user's own. */
static struct group *
some_other_group(gid_t not_this)
{
	static const char *const names[] = { "users", "staff", "adm", "daemon", "operator", NULL };
	struct group *gr;
	int i;

	for (i = 0; names[i]; i++)
		if ((gr = getgrnam(names[i])) != NULL && gr->gr_gid != 0 && gr->gr_gid != not_this)
			return gr;
	return NULL;
}

/*
 * control_group also serves a user whose supplementary group (not the
 * primary one) it is, and still refuses one not in it.
 */
START_TEST(test_ctl__control_group_supplementary_member)
{
	struct e2e e;
	struct passwd *pw;
	struct group *gr;
	char extra[128];
	gid_t member;
	int rc;

	if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL ||
	    (gr = some_other_group(pw->pw_gid)) == NULL) {
		fprintf(stderr, "test_ctl__control_group_supplementary_member: skipped, needs "
		    "root, the user nobody and a group such as users\n");
		return;
	}
	member = gr->gr_gid;
	snprintf(extra, sizeof(extra), "control_group = %s", gr->gr_name);
	e2e_start(&e, NULL, extra);
	ck_assert_int_eq(chmod(e.dir, 0711), 0);
	if (!traversable(e.ctl)) {
		fprintf(stderr, "test_ctl__control_group_supplementary_member: %s is not "
		    "reachable by others; not exercised\n", e.ctl);
		ck_assert_int_eq(chmod(e.dir, 0700), 0);
		e2e_stop(&e);
		return;
	}
	/* nobody, primary group its own, supplementary group control_group */
	rc = connect_as_groups(e.ctl, pw->pw_uid, pw->pw_gid, &member, 1);
	ck_assert_msg(rc == PEER_SERVED, "a supplementary member of %s got %d", gr->gr_name, rc);
	/* not a member: the socket's mode keeps it out; loosened, the daemon does */
	rc = connect_as(e.ctl, pw->pw_uid, pw->pw_gid);
	ck_assert_msg(rc == PEER_EACCES, "a non-member got %d through mode 0660", rc);
	ck_assert_int_eq(chmod(e.ctl, 0666), 0);
	rc = connect_as(e.ctl, pw->pw_uid, pw->pw_gid);
	ck_assert_msg(rc == PEER_DENIED, "a non-member of %s got %d", gr->gr_name, rc);
	ck_assert_int_eq(chmod(e.ctl, 0660), 0);
	ck_assert_int_eq(chmod(e.dir, 0700), 0);
	e2e_stop(&e);
}
END_TEST

/* ---- 6. many ctl clients while traffic flows --------------------------- */

START_TEST(test_ctl__concurrent_clients_during_traffic)
{
	enum { NSTREAMS = 3, NCTL = 8 };
	struct e2e e;
	static const char *keys[NSTREAMS] = { "conv-busy-0", "conv-busy-1", "conv-busy-2" };
	struct conv c[NSTREAMS];
	struct tl_stream *s[NSTREAMS];
	char outpath[NCTL][800], *out;
	pid_t pid[NCTL];
	int i, completed, rc;

	/* each streamed turn lasts ~15 s: a wide window for the ctl clients */
	e2e_start(&e, "--deltas 150 --delta-delay-ms 100", NULL);
	for (i = 0; i < NSTREAMS; i++) {
		conv_init(&c[i], keys[i]);
		s[i] = open_held_stream(&e, &c[i], "a long answer please");
	}
	for (i = 0; i < NCTL; i++) {
		snprintf(outpath[i], sizeof(outpath[i]), "%s/ctl-par-%d.out", e.dir, i);
		pid[i] = ctl_spawn(e.ctl, outpath[i], i % 2 ? "status" : "--json status");
		ck_assert_int_gt(pid[i], 0);
	}
	for (i = 0; i < NCTL; i++) {
		rc = ctl_wait(pid[i], outpath[i], &out);
		ck_assert_msg(rc == 0, "ctl %d exited %d: %s", i, rc, out);
		if (i % 2) {
			ck_assert_msg(field_num(out, "requests_inflight") >= 1, "ctl %d: %s", i, out);
		} else {
			json_object *o = one_object(out);
			ck_assert_msg(json_object_get_int(json_object_object_get(o,
			    "requests_inflight")) >= 1, "ctl %d: %s", i, out);
			json_object_put(o);
		}
		free(out);
	}
	for (i = 0; i < NSTREAMS; i++) {
		ck_assert_int_eq(drain_stream(s[i], &completed), 0);
		ck_assert_msg(completed, "stream %d did not complete", i);
		tl_stream_close(s[i], 0);
		conv_free(&c[i]);
	}
	ck_assert_int_eq(wait_status(&e, "requests_inflight", 0), 0);
	ck_assert_int_eq(status_num(&e, "requests_failed"), 0);
	e2e_stop(&e);
}
END_TEST

/* ---- 7. pool disable in the middle of a stream ------------------------- */

START_TEST(test_ctl__pool_disable_mid_stream)
{
	struct e2e e;
	struct conv c;
	struct tl_stream *s;
	char *out;
	int completed;

	e2e_start(&e, "--deltas 40 --delta-delay-ms 100", NULL);
	conv_init(&c, "conv-switch");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 1);
	s = open_held_stream(&e, &c, "second, streamed");
	out = ctl_expect(&e, 0, "pool disable");
	ck_assert_msg(has_line(out, "pool: disabled"), "%s", out);
	free(out);
	/* the running turn finishes on its connection */
	ck_assert_int_eq(drain_stream(s, &completed), 0);
	ck_assert_msg(completed, "the stream did not complete after 'pool disable'");
	tl_stream_close(s, 0);
	ck_assert_int_eq(wait_status(&e, "pooled_open", 0), 0);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 1);
	/* the next turn is one-shot */
	ck_assert_int_eq(conv_turn(&e, &c, "third", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "bypass_disabled"), 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 2);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 0);
	/* enabled again: a pooled connection, then reused */
	out = ctl_expect(&e, 0, "pool enable");
	ck_assert_msg(has_line(out, "pool: enabled"), "%s", out);
	free(out);
	ck_assert_int_eq(conv_turn(&e, &c, "fourth", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "decisions_new"), 2);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 3);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);
	ck_assert_int_eq(conv_turn(&e, &c, "fifth", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 2);
	ck_assert_int_eq(sim_num(&e, "connections_total"), 3);
	ck_assert_int_eq(status_num(&e, "bypass_disabled"), 1);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* ---- 8. reload ----------------------------------------------------------- */

static int
config_shows(struct e2e *e, const char *key, const char *want)
{
	char val[600], origin[300];

	return config_row(e, key, val, sizeof(val), origin, sizeof(origin)) == 0 &&
	    strcmp(val, want) == 0;
}

START_TEST(test_ctl__reload)
{
	struct e2e e;
	struct conv c;
	char *out, val[600], origin[300], want[800], line[200];
	int cap_line, level_line, workers_line;
	long long conns, reuse;
	int64_t end;
	json_object *o;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-reload");
	ck_assert_int_eq(conv_turn(&e, &c, "before", 0, NULL, NULL), 200);
	conns = sim_num(&e, "connections_total");
	ck_assert_int_eq(conns, 1);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);

	cap_line = conf_set(&e, "ws_pool_max_per_account", "3");
	level_line = conf_set(&e, "log_level", "info");
	workers_line = conf_set(&e, "workers", "3");
	out = ctl_expect(&e, 0, "reload");
	ck_assert_msg(has_line(out, "applied: ws_pool_max_per_account = 3"), "%s", out);
	ck_assert_msg(has_line(out, "applied: log_level = info"), "%s", out);
	ck_assert_msg(strstr(out, "not applied") && strstr(out, "workers = 3") &&
	    !has_line(out, "applied: workers"), "%s", out);
	free(out);
	o = ctl_json(&e, "reload");
	ck_assert_msg(json_object_object_get_ex(o, "changes", NULL), "%s",
	    json_object_to_json_string(o));
	json_object_put(o);

	/* config: the new value with where it came from; the old one where not applied */
	ck_assert_int_eq(config_row(&e, "ws_pool_max_per_account", val, sizeof(val), origin,
	    sizeof(origin)), 0);
	ck_assert_str_eq(val, "3");
	snprintf(want, sizeof(want), "%s:%d", e.conf, cap_line);
	ck_assert_str_eq(origin, want);
	ck_assert_int_eq(config_row(&e, "log_level", val, sizeof(val), origin, sizeof(origin)), 0);
	ck_assert_str_eq(val, "info");
	snprintf(want, sizeof(want), "%s:%d", e.conf, level_line);
	ck_assert_str_eq(origin, want);
	ck_assert_int_eq(config_row(&e, "workers", val, sizeof(val), origin, sizeof(origin)), 0);
	ck_assert_str_eq(val, "2");
	ck_assert_int_eq(status_num(&e, "workers"), 2);
	(void)workers_line;

	/* pooled connections survived, and the conversation reuses its own */
	ck_assert_int_eq(sim_num(&e, "connections_total"), conns);
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);
	reuse = status_num(&e, "decisions_reuse");
	ck_assert_int_eq(conv_turn(&e, &c, "after reload", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), reuse + 1);
	ck_assert_int_eq(sim_num(&e, "connections_total"), conns);

	/* a broken file fails with file:line and changes nothing */
	conf_set(&e, "log_level", "warn");
	cap_line = conf_set(&e, "ws_pool_max_per_account", "banana");
	out = ctl_expect(&e, 1, "reload");
	snprintf(want, sizeof(want), "%s:%d", e.conf, cap_line);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in: %s", want, out);
	ck_assert_msg(strstr(out, "nothing changed") != NULL, "%s", out);
	free(out);
	ck_assert(config_shows(&e, "ws_pool_max_per_account", "3"));
	ck_assert(config_shows(&e, "log_level", "info"));
	ck_assert_int_eq(status_num(&e, "pooled_open"), 1);

	/* SIGHUP reloads too */
	conf_set(&e, "ws_pool_max_per_account", "5");
	conf_set(&e, "log_level", "info");
	ck_assert_int_eq(kill(e.daemon, SIGHUP), 0);
	end = tl_now_ms() + WAIT_MS;
	while (!config_shows(&e, "ws_pool_max_per_account", "5") && tl_now_ms() < end)
		tl_msleep(50);
	ck_assert_msg(config_shows(&e, "ws_pool_max_per_account", "5"),
	    "SIGHUP did not reload ws_pool_max_per_account");
	ck_assert(config_shows(&e, "workers", "2"));
	ck_assert_int_eq(sim_num(&e, "connections_total"), conns);
	ck_assert_int_eq(conv_turn(&e, &c, "after SIGHUP", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), reuse + 2);
	ck_assert_int_eq(sim_num(&e, "connections_total"), conns);
	/* a broken file by SIGHUP: logged with file:line, nothing changed */
	cap_line = conf_set(&e, "ws_pool_max_per_account", "-4");
	ck_assert_int_eq(kill(e.daemon, SIGHUP), 0);
	snprintf(line, sizeof(line), "codexpool.conf:%d", cap_line);
	ck_assert_int_eq(tl_wait_file_contains(e.log, line, WAIT_MS), 0);
	ck_assert(config_shows(&e, "ws_pool_max_per_account", "5"));
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* ---- 9. drain ------------------------------------------------------------ */

START_TEST(test_ctl__drain_worker)
{
	enum { NNEW = 3 };
	struct e2e e;
	struct conv x, fresh[NNEW];
	struct tl_stream *sx, *sn[NNEW];
	struct prow pools[16];
	struct wrow before, during, other_before, other_during, after;
	char *out, keys[NNEW][40], hex[24], cmd[32];
	int n, i, k, found, wn, other, completed;
	int64_t end;

	/* every turn lasts ~10 s, so the drained worker stays busy while we look */
	e2e_start(&e, "--deltas 100 --delta-delay-ms 100", NULL);
	conv_init(&x, "conv-drain-x");
	sx = open_held_stream(&e, &x, "hold the worker");
	n = show_pools(&e, pools, 16);
	ck_assert_int_eq(n, 1);
	wn = pools[0].worker;
	other = 1 - wn;
	/* the test predicts placement: check it agrees with the daemon */
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)pool_key(pools[0].account,
	    "conv-drain-x"));
	ck_assert_msg(strcmp(hex, pools[0].key) == 0, "pool key %s, computed %s", pools[0].key, hex);
	ck_assert_int_eq(jump_hash(pool_key(pools[0].account, "conv-drain-x"), 2), wn);
	before = worker_row(&e, wn);
	other_before = worker_row(&e, other);
	ck_assert_int_gt(before.pid, 0);

	snprintf(cmd, sizeof(cmd), "drain %d", wn);
	out = ctl_expect(&e, 0, cmd);
	ck_assert_msg(field_num(out, "draining") == wn, "%s", out);
	ck_assert_msg(field_num(out, "turns_running") == 1, "%s", out);
	free(out);

	/* new conversations that would hash to the draining worker go elsewhere */
	for (i = 0, k = 0; i < NNEW; k++) {
		snprintf(keys[i], sizeof(keys[i]), "conv-drain-new-%d", k);
		if (jump_hash(pool_key(pools[0].account, keys[i]), 2) == wn)
			i++;
	}
	for (i = 0; i < NNEW; i++) {
		conv_init(&fresh[i], keys[i]);
		sn[i] = open_held_stream(&e, &fresh[i], "placed while draining");
	}
	n = show_pools(&e, pools, 16);
	for (i = 0; i < NNEW; i++) {
		snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)pool_key(pools[0].account,
		    keys[i]));
		for (k = 0, found = 0; k < n; k++) {
			if (strcmp(pools[k].key, hex) != 0)
				continue;
			found = 1;
			ck_assert_msg(pools[k].worker != wn, "%s placed on draining worker %d",
			    keys[i], wn);
		}
		ck_assert_msg(found, "no pooled connection for %s", keys[i]);
	}
	during = worker_row(&e, wn);
	other_during = worker_row(&e, other);
	ck_assert_msg(during.pid == before.pid,
	    "worker %d restarted while its turn was still running", wn);
	ck_assert_int_eq(during.requests, before.requests);
	ck_assert_int_eq(other_during.requests, other_before.requests + NNEW);

	/* everything completes; the drained worker then restarts */
	ck_assert_int_eq(drain_stream(sx, &completed), 0);
	ck_assert_msg(completed, "the draining worker's turn did not complete");
	tl_stream_close(sx, 0);
	for (i = 0; i < NNEW; i++) {
		ck_assert_int_eq(drain_stream(sn[i], &completed), 0);
		ck_assert_msg(completed, "stream %d did not complete", i);
		tl_stream_close(sn[i], 0);
	}
	end = tl_now_ms() + WAIT_MS;
	for (;;) {
		after = worker_row(&e, wn);
		if ((after.pid > 0 && after.pid != before.pid && strcmp(after.state, "up") == 0) ||
		    tl_now_ms() > end)
			break;
		tl_msleep(50);
	}
	ck_assert_msg(after.pid > 0 && after.pid != before.pid, "worker %d was not restarted "
	    "(pid %d, was %d)", wn, after.pid, before.pid);
	ck_assert_str_eq(after.state, "up");
	ck_assert_int_eq(after.restarts, before.restarts + 1);
	ck_assert_int_eq(status_num(&e, "worker_restarts"), 1);
	ck_assert_int_eq(worker_row(&e, other).pid, other_before.pid);
	/* and serves again: the conversation is back on its own worker */
	ck_assert_int_eq(conv_turn(&e, &x, "after the drain", 0, NULL, NULL), 200);
	after = worker_row(&e, wn);
	ck_assert_int_ge(after.requests, 1);
	ck_assert_int_eq(status_num(&e, "requests_failed"), 0);
	conv_free(&x);
	for (i = 0; i < NNEW; i++)
		conv_free(&fresh[i]);
	e2e_stop(&e);
}
END_TEST

/* ---- 10. stats reset, show conversations ------------------------------- */

START_TEST(test_ctl__stats_reset_and_conversations)
{
	struct e2e e;
	struct conv c;
	struct wrow rows[4];
	char *out, *row, hex[24];
	json_object *o, *convs, *conv = NULL, *recent, *t;
	size_t i;
	int n, k;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-log");
	ck_assert_int_eq(conv_turn(&e, &c, "first", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c, "second", 0, NULL, NULL), 200);

	/* the conversation, its turns, and why the first one missed */
	out = ctl_expect(&e, 0, "show conversations");
	row = strchr(out, '\n');
	ck_assert_msg(row != NULL && row[1] != '\0', "no row: %s", out);
	row++;
	ck_assert_msg(strstr(row, " 1:new:0/") != NULL, "%s", out);
	ck_assert_msg(strstr(row, ":first turn") != NULL, "%s", out);
	ck_assert_msg(strstr(row, ",2:reuse:") != NULL, "%s", out);
	{
		char conv_hex[24], acct[128];
		int worker, turns;
		ck_assert_int_eq(sscanf(row, "%23s %127s %d %d", conv_hex, acct, &worker, &turns), 4);
		ck_assert_int_eq(turns, 2);
		snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)hash64_str("conv-log"));
		ck_assert_msg(strcmp(conv_hex, hex) == 0 ||
		    strcmp(conv_hex, (snprintf(hex, sizeof(hex), "%016llx",
		    (unsigned long long)pool_key(acct, "conv-log")), hex)) == 0,
		    "conversation id %s is neither hash", conv_hex);
	}
	free(out);
	o = ctl_json(&e, "show conversations");
	convs = json_object_object_get(o, "conversations");
	for (i = 0; i < json_object_array_length(convs); i++)
		if (json_object_get_int(json_object_object_get(json_object_array_get_idx(convs, i),
		    "turns")) == 2)
			conv = json_object_array_get_idx(convs, i);
	ck_assert_msg(conv != NULL, "%s", json_object_to_json_string(o));
	recent = json_object_object_get(conv, "recent");
	ck_assert_int_eq(json_object_array_length(recent), 2);
	t = json_object_array_get_idx(recent, 0);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(t, "decision")), "new");
	ck_assert_str_eq(json_object_get_string(json_object_object_get(t, "miss")), "first turn");
	ck_assert_int_eq(json_object_get_int(json_object_object_get(t, "cached")), 0);
	ck_assert_int_gt(json_object_get_int(json_object_object_get(t, "input")), 0);
	t = json_object_array_get_idx(recent, 1);
	ck_assert_str_eq(json_object_get_string(json_object_object_get(t, "decision")), "reuse");
	ck_assert_msg(!json_object_object_get_ex(t, "miss", NULL), "a cached turn has a miss: %s",
	    json_object_to_json_string(t));
	json_object_put(o);

	/* stats reset zeroes the counters */
	ck_assert_int_eq(status_num(&e, "requests_total"), 2);
	out = ctl_expect(&e, 0, "stats reset");
	free(out);
	out = ctl_expect(&e, 0, "status");
	ck_assert_int_eq(field_num(out, "requests_total"), 0);
	ck_assert_int_eq(field_num(out, "decisions_reuse"), 0);
	ck_assert_int_eq(field_num(out, "decisions_new"), 0);
	ck_assert_int_eq(field_num(out, "decisions_bypass"), 0);
	ck_assert_int_eq(field_num(out, "decisions_retry_stale"), 0);
	ck_assert_int_eq(field_num(out, "input_tokens"), 0);
	ck_assert_int_eq(field_num(out, "cached_tokens"), 0);
	ck_assert_int_eq(field_num(out, "input_tokens_5m"), 0);
	ck_assert_msg(has_line(out, "pool_reuse_rate: 0.000"), "%s", out);
	ck_assert_msg(has_line(out, "prompt_cache_hit_rate: 0.000"), "%s", out);
	ck_assert_int_eq(field_num(out, "pooled_open"), 1);	/* not a counter */
	free(out);
	n = show_workers(&e, rows, 4);
	for (k = 0; k < n; k++)
		ck_assert_int_eq(rows[k].requests, 0);
	/* and counting starts again */
	ck_assert_int_eq(conv_turn(&e, &c, "third", 0, NULL, NULL), 200);
	ck_assert_int_eq(status_num(&e, "requests_total"), 1);
	ck_assert_int_eq(status_num(&e, "decisions_reuse"), 1);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* ---- 11. the init script --------------------------------------------- */

/* A private dir for the init-script test, made and cleaned in the parent. */
static char *initd_dir;

static pid_t
read_pidfile(const char *path)
{
	char *s = tl_read_file(path, NULL);
	long pid = s ? strtol(s, NULL, 10) : 0;

	free(s);
	return (pid_t)pid;
}

/* Is pid a codexpoold started with a config in dir? */
static int
is_our_daemon(pid_t pid, const char *dir)
{
	char path[64], buf[4096];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if ((fd = open(path, O_RDONLY)) == -1)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	buf[n] = '\0';
	return strstr(buf, "codexpoold") != NULL && strstr(buf, dir) != NULL;
}

static void
initd_setup(void)
{
	initd_dir = tl_tmpdir();
}

/* Whatever the test did, no daemon is left running. */
static void
initd_teardown(void)
{
	char path[700];
	pid_t pid;
	int i;

	if (initd_dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/codexpoold.pid", initd_dir);
	pid = read_pidfile(path);
	if (pid > 0 && is_our_daemon(pid, initd_dir)) {
		fprintf(stderr, "initd teardown: stopping leftover codexpoold %d\n", (int)pid);
		kill(pid, SIGTERM);
		for (i = 0; i < 200 && is_our_daemon(pid, initd_dir); i++)
			tl_msleep(50);
		if (is_our_daemon(pid, initd_dir))
			kill(pid, SIGKILL);
	}
	tl_rmrf(initd_dir);
	free(initd_dir);
	initd_dir = NULL;
}

/*
 * Runs the built init script with env (not in its own process group, so
 * the daemon it starts is not killed with it).  Reaps `reap` too if it
 * exits meanwhile (*reaped, *reap_status).
 */
static int
run_initd(char *const env[], const char *action, const char *logfile, pid_t reap,
    int *reaped, int *reap_status)
{
	char script[700];
	int status, i, st;
	int64_t end = tl_now_ms() + 90000;
	pid_t pid, r;

	snprintf(script, sizeof(script), "%s/etc/init.d/codexpoold.sh", tl_builddir());
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		closefrom(3);
		for (i = 0; env[i]; i++)
			putenv(env[i]);
		execl(script, script, action, (char *)NULL);
		_exit(127);
	}
	for (;;) {
		if (reap > 0 && !*reaped && waitpid(reap, &st, WNOHANG) == reap) {
			*reaped = 1;
			*reap_status = st;
		}
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (tl_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			ck_abort_msg("init script '%s' did not finish", action);
		}
		tl_msleep(20);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* ASan/UBSan write <log_path>.<pid>: any dir/san.* is a report. */
static int
has_sanitizer_logs(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int found = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, "san.", 4) == 0)
			found = 1;
	closedir(d);
	return found;
}

START_TEST(test_ctl__init_script)
{
	struct tl_sim sim;
	struct tl_response resp;
	char conf[700], pidfile[700], ctlsock[700], log[700], out_log[700], auth[700];
	char text[4096], *out, *addr, *colon, outpath[800];
	char env_daemon[800], env_ctl[800], env_conf[800], env_pid[800], env_asan[900];
	char env_ubsan[900];
	char *env[8];
	int rc, port, reaped = 0, st = 0;
	pid_t pid, ctlpid;
	int64_t end;

	if (access("/sbin/start-stop-daemon", X_OK) != 0 &&
	    access("/usr/sbin/start-stop-daemon", X_OK) != 0) {
		fprintf(stderr, "test_ctl__init_script: skipped, no start-stop-daemon\n");
		return;
	}
	ck_assert_ptr_nonnull(initd_dir);
	/* orphans (the daemon) come to us, so its exit status can be checked */
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	ck_assert_int_eq(tl_sim_start(&sim, initd_dir, NULL), 0);
	tl_sim_auth_path(&sim, 1, auth, sizeof(auth));
	snprintf(conf, sizeof(conf), "%s/codexpool.conf", initd_dir);
	snprintf(pidfile, sizeof(pidfile), "%s/codexpoold.pid", initd_dir);
	snprintf(ctlsock, sizeof(ctlsock), "%s/ctl.sock", initd_dir);
	snprintf(log, sizeof(log), "%s/daemon.log", initd_dir);
	snprintf(out_log, sizeof(out_log), "%s/initd.out", initd_dir);
	snprintf(text, sizeof(text),
	    "listen = 127.0.0.1:0\n"
	    "workers = 1\n"
	    "upstream_url = ws://127.0.0.1:%d/backend-api/codex/responses\n"
	    "token_url = http://127.0.0.1:%d/oauth/token\n"
	    "auth_file = %s\n"
	    "control_socket = %s\n"
	    "data_dir = %s\n"
	    "pidfile = %s\n"
	    "log_file = %s\n"
	    "log_level = info\n"
	    "shutdown_timeout = 10s\n", sim.port, sim.port, auth, ctlsock, initd_dir, pidfile, log);
	ck_assert_int_eq(tl_write_file(conf, text, strlen(text), 0600), 0);

	snprintf(env_daemon, sizeof(env_daemon), "DAEMON=%s/daemon/codexpoold", tl_builddir());
	snprintf(env_ctl, sizeof(env_ctl), "CTL=%s/ctl/codexpoolctl", tl_builddir());
	snprintf(env_conf, sizeof(env_conf), "CONF=%s", conf);
	snprintf(env_pid, sizeof(env_pid), "PIDFILE=%s", pidfile);
	/* a daemon's stderr is /dev/null: sanitizer reports go to files */
	snprintf(env_asan, sizeof(env_asan), "ASAN_OPTIONS=detect_leaks=1:log_path=%s/san",
	    initd_dir);
	snprintf(env_ubsan, sizeof(env_ubsan), "UBSAN_OPTIONS=print_stacktrace=1:log_path=%s/san",
	    initd_dir);
	env[0] = env_daemon;
	env[1] = env_ctl;
	env[2] = env_conf;
	env[3] = env_pid;
	env[4] = env_asan;
	env[5] = env_ubsan;
	env[6] = NULL;

	/* start: the daemon detaches and writes its pidfile */
	rc = run_initd(env, "start", out_log, 0, NULL, NULL);
	ck_assert_msg(rc == 0, "start exited %d; see %s", rc, out_log);
	ck_assert_msg(tl_wait_file(pidfile, WAIT_MS) == 0, "no pidfile; see %s", log);
	pid = read_pidfile(pidfile);
	ck_assert_int_gt(pid, 0);
	ck_assert_msg(is_our_daemon(pid, initd_dir), "pid %d is not our codexpoold", (int)pid);
	ck_assert_msg(getsid(pid) != getsid(0), "the daemon did not leave our session");

	rc = run_initd(env, "status", out_log, pid, &reaped, &st);
	ck_assert_msg(rc == 0, "status exited %d; see %s", rc, out_log);
	ck_assert_int_eq(tl_file_contains(out_log, "is running"), 1);

	/* the HTTP port answers; codexpoolctl finds it */
	snprintf(outpath, sizeof(outpath), "%s/ctl.out", initd_dir);
	port = 0;
	end = tl_now_ms() + WAIT_MS;
	while (port == 0 && tl_now_ms() < end) {
		ctlpid = ctl_spawn(ctlsock, outpath, "status");
		if (ctl_wait(ctlpid, outpath, &out) == 0 && (addr = field(out, "listen")) != NULL) {
			if ((colon = strrchr(addr, ':')) != NULL)
				port = atoi(colon + 1);
			free(addr);
		}
		free(out);
		if (port == 0)
			tl_msleep(50);
	}
	ck_assert_int_gt(port, 0);
	ck_assert_int_eq(tl_http("127.0.0.1", port, "GET", "/health", NULL, NULL, 0, &resp), 0);
	ck_assert_int_eq(resp.status, 200);
	tl_response_free(&resp);

	/* reload sends SIGHUP: a changed reloadable key is applied */
	{
		char more[4200];
		snprintf(more, sizeof(more), "%sws_pool_max_per_account = 4\n", text);
		ck_assert_int_eq(tl_write_file(conf, more, strlen(more), 0600), 0);
	}
	rc = run_initd(env, "reload", out_log, pid, &reaped, &st);
	ck_assert_msg(rc == 0, "reload exited %d; see %s", rc, out_log);
	ck_assert_int_eq(tl_wait_file_contains(log, "got SIGHUP", WAIT_MS), 0);
	ck_assert_int_eq(tl_wait_file_contains(log, "configuration reloaded", WAIT_MS), 0);
	ck_assert_msg(is_our_daemon(pid, initd_dir), "the daemon died on reload");

	/* stop: the process exits cleanly and the pidfile goes */
	rc = run_initd(env, "stop", out_log, pid, &reaped, &st);
	ck_assert_msg(rc == 0, "stop exited %d; see %s", rc, out_log);
	end = tl_now_ms() + WAIT_MS;
	while (!reaped && tl_now_ms() < end) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			reaped = 1;
		else
			tl_msleep(20);
	}
	ck_assert_msg(reaped, "codexpoold %d did not exit after stop", (int)pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "codexpoold ended with status 0x%x",
	    (unsigned)st);
	ck_assert_msg(access(pidfile, F_OK) == -1, "pidfile %s left behind", pidfile);
	ck_assert_msg(access(ctlsock, F_OK) == -1, "control socket %s left behind", ctlsock);

	rc = run_initd(env, "status", out_log, 0, NULL, NULL);
	ck_assert_int_eq(rc, 3);
	ck_assert_int_eq(tl_file_contains(out_log, "is not running"), 1);
	ck_assert_msg(!has_sanitizer_logs(initd_dir), "sanitizer report in %s/san.*", initd_dir);
	ck_assert_int_eq(tl_sim_stop(&sim), 0);
}
END_TEST

/* ---- 12. daemon operations ------------------------------------------- */

/* A config for a second daemon beside the fixture's (same upstream). */
static void
write_conf2(struct e2e *e, const char *path, const char *ctlsock, const char *extra)
{
	char text[4096], auth[700], data[700];

	tl_sim_auth_path(&e->sim, 1, auth, sizeof(auth));
	snprintf(data, sizeof(data), "%s/data2", e->dir);
	mkdir(data, 0700);
	snprintf(text, sizeof(text),
	    "listen = 127.0.0.1:0\n"
	    "workers = 1\n"
	    "upstream_url = ws://127.0.0.1:%d/backend-api/codex/responses\n"
	    "token_url = http://127.0.0.1:%d/oauth/token\n"
	    "auth_file = %s\n"
	    "control_socket = %s\n"
	    "data_dir = %s\n"
	    "shutdown_timeout = 10s\n"
	    "log_level = debug\n"
	    "%s\n", e->sim.port, e->sim.port, auth, ctlsock, data, extra ? extra : "");
	ck_assert_int_eq(tl_write_file(path, text, strlen(text), 0600), 0);
}

/* codexpoold with args to completion; its exit status, its output in *out. */
static int
daemon_run(struct e2e *e, const char *a1, const char *a2, const char *a3, char **out)
{
	char *bin = tl_program("daemon/codexpoold"), outpath[800];
	char *argv[] = { bin, (char *)a1, (char *)a2, (char *)a3, NULL };
	int rc;

	snprintf(outpath, sizeof(outpath), "%s/daemon-run.out", e->dir);
	unlink(outpath);
	rc = tl_run(outpath, argv, WAIT_MS);
	*out = tl_read_file(outpath, NULL);
	if (*out == NULL)
		*out = strdup("");
	free(bin);
	return rc;
}

START_TEST(test_ctl__pidfile_and_socket_guards)
{
	struct e2e e;
	char pidfile[700], conf2[700], ctl2[700], pid2file[700], log2[700], extra[800];
	char outpath[800];
	char *out, *bin, *argv[6];
	pid_t d2, dead;
	int rc, status;
	int64_t end;

	e2e_start(&e, NULL, NULL);
	snprintf(pidfile, sizeof(pidfile), "%s/codexpoold.pid", e.dir);
	/* restart the fixture's daemon with a pidfile */
	e2e_daemon_stop(&e);
	conf_set(&e, "pidfile", pidfile);
	e2e_daemon_start(&e);
	ck_assert_int_eq(read_pidfile(pidfile), e.daemon);

	/* a second daemon with the same pidfile is refused, and names it */
	rc = daemon_run(&e, "-f", "-c", e.conf, &out);
	ck_assert_msg(rc != 0, "a second daemon on the same pidfile started: %s", out);
	ck_assert_msg(strstr(out, pidfile) != NULL, "the refusal does not name %s: %s", pidfile, out);
	free(out);
	ck_assert_int_eq(read_pidfile(pidfile), e.daemon);
	ck_assert_int_ge(status_num(&e, "uptime"), 0);

	/* a second daemon with the same control socket is refused ("in use") */
	snprintf(conf2, sizeof(conf2), "%s/second.conf", e.dir);
	write_conf2(&e, conf2, e.ctl, NULL);
	rc = daemon_run(&e, "-f", "-c", conf2, &out);
	ck_assert_msg(rc != 0, "a second daemon on the same control socket started: %s", out);
	ck_assert_msg(strstr(out, "in use") != NULL && strstr(out, e.ctl) != NULL, "%s", out);
	free(out);
	/* and the running daemon kept its socket */
	ck_assert_msg(access(e.ctl, F_OK) == 0, "the refused daemon removed %s", e.ctl);
	ck_assert_int_ge(status_num(&e, "uptime"), 0);

	/* a stale pidfile (a pid that is gone) is replaced */
	dead = fork();
	ck_assert_int_ge(dead, 0);
	if (dead == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(dead, &status, 0), dead);
	snprintf(pid2file, sizeof(pid2file), "%s/stale.pid", e.dir);
	snprintf(ctl2, sizeof(ctl2), "%s/ctl2.sock", e.dir);
	snprintf(log2, sizeof(log2), "%s/daemon2.log", e.dir);
	{
		char text[32];
		snprintf(text, sizeof(text), "%d\n", (int)dead);
		ck_assert_int_eq(tl_write_file(pid2file, text, strlen(text), 0644), 0);
	}
	snprintf(extra, sizeof(extra), "pidfile = %s", pid2file);
	write_conf2(&e, conf2, ctl2, extra);
	bin = tl_program("daemon/codexpoold");
	argv[0] = bin;
	argv[1] = "-f";
	argv[2] = "-c";
	argv[3] = conf2;
	argv[4] = NULL;
	d2 = tl_spawn(log2, argv);
	ck_assert_int_gt(d2, 0);
	end = tl_now_ms() + WAIT_MS;
	while (read_pidfile(pid2file) != d2 && tl_alive(d2) && tl_now_ms() < end)
		tl_msleep(50);
	ck_assert_msg(read_pidfile(pid2file) == d2, "stale pidfile not replaced; see %s", log2);
	end = tl_now_ms() + WAIT_MS;
	snprintf(outpath, sizeof(outpath), "%s/ctl2.out", e.dir);
	for (;;) {
		pid_t p = ctl_spawn(ctl2, outpath, "status");
		rc = ctl_wait(p, outpath, &out);
		free(out);
		if (rc == 0 || tl_now_ms() > end)
			break;
		tl_msleep(50);
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(tl_stop(d2, SIGTERM, WAIT_MS), 0);
	ck_assert_msg(access(pid2file, F_OK) == -1, "%s left behind", pid2file);
	ck_assert_int_eq(tl_file_contains(log2, "Sanitizer"), 0);
	free(bin);
	ck_assert_int_eq(read_pidfile(pidfile), e.daemon);
	e2e_stop(&e);
	ck_assert_msg(access(pidfile, F_OK) == -1, "%s left behind", pidfile);
}
END_TEST

/*
 * Started as a daemon (no -f), a start-up failure after the fork (here:
 * the control socket is in use) must still reach the caller as a non-zero
 * exit status, or the init script reports a start that did not happen.
 */
START_TEST(test_ctl__daemon_mode_reports_startup_failure)
{
	struct e2e e;
	char conf2[700], log2[700], extra[800], *out;
	int rc;

	e2e_start(&e, NULL, NULL);
	snprintf(conf2, sizeof(conf2), "%s/second.conf", e.dir);
	snprintf(log2, sizeof(log2), "%s/second.log", e.dir);
	snprintf(extra, sizeof(extra), "log_file = %s", log2);
	write_conf2(&e, conf2, e.ctl, extra);
	rc = daemon_run(&e, "-c", conf2, NULL, &out);
	/* whatever the exit status, the failed daemon says why in its log */
	ck_assert_int_eq(tl_wait_file_contains(log2, "in use", WAIT_MS), 0);
	ck_assert_msg(rc != 0, "codexpoold exited 0 although it could not start "
	    "(control socket in use); output: %s", out);
	free(out);
	ck_assert_int_ge(status_num(&e, "uptime"), 0);
	e2e_stop(&e);
}
END_TEST

START_TEST(test_ctl__check_config_and_log_reopen)
{
	struct e2e e;
	struct conv c;
	char bad[700], logfile[700], rotated[700], want[800], extra[800], *out;
	int rc;

	e2e_start(&e, NULL, NULL);
	/* -t: a good file */
	rc = daemon_run(&e, "-t", "-c", e.conf, &out);
	ck_assert_msg(rc == 0, "-t on a good file exited %d: %s", rc, out);
	ck_assert_msg(strstr(out, "ok") != NULL, "%s", out);
	free(out);
	/* -t: a bad one names file:line */
	snprintf(bad, sizeof(bad), "%s/bad.conf", e.dir);
	ck_assert_int_eq(tl_write_file(bad, "workers = 2\n# comment\nworkers = many\n", 37, 0600), 0);
	rc = daemon_run(&e, "-t", "-c", bad, &out);
	snprintf(want, sizeof(want), "%s:3", bad);
	ck_assert_msg(rc != 0, "-t on a bad file exited 0: %s", out);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in: %s", want, out);
	free(out);
	ck_assert_int_eq(tl_write_file(bad, "no_such_key = 1\n", 16, 0600), 0);
	rc = daemon_run(&e, "-t", "-c", bad, &out);
	snprintf(want, sizeof(want), "%s:1", bad);
	ck_assert_msg(rc != 0 && strstr(out, want) != NULL, "exit %d: %s", rc, out);
	free(out);
	/* -t on a missing file named with -c */
	snprintf(bad, sizeof(bad), "%s/missing.conf", e.dir);
	rc = daemon_run(&e, "-t", "-c", bad, &out);
	ck_assert_msg(rc != 0 && strstr(out, bad) != NULL, "exit %d: %s", rc, out);
	free(out);
	e2e_stop(&e);

	/* SIGUSR1 reopens log_file (after logrotate renamed it) */
	{
		char *d = tl_tmpdir();
		snprintf(logfile, sizeof(logfile), "%s/codexpoold.log", d);
		snprintf(extra, sizeof(extra), "log_file = %s", logfile);
		e2e_start(&e, NULL, extra);
		snprintf(rotated, sizeof(rotated), "%s/codexpoold.log.1", d);
		conv_init(&c, "conv-rotate");
		ck_assert_int_eq(conv_turn(&e, &c, "before", 0, NULL, NULL), 200);
		ck_assert_int_eq(tl_wait_file(logfile, WAIT_MS), 0);
		ck_assert_int_eq(rename(logfile, rotated), 0);
		ck_assert_int_eq(kill(e.daemon, SIGUSR1), 0);
		ck_assert_msg(tl_wait_file_contains(logfile, "reopened", WAIT_MS) == 0,
		    "no new %s after SIGUSR1", logfile);
		/* later lines go to the new file, none to the renamed one */
		ck_assert_int_eq(ctl_run(&e, NULL, "stats reset"), 0);
		ck_assert_int_eq(tl_wait_file_contains(logfile, "counters reset", WAIT_MS), 0);
		ck_assert_int_eq(tl_file_contains(rotated, "counters reset"), 0);
		ck_assert_int_eq(conv_turn(&e, &c, "after", 0, NULL, NULL), 200);
		conv_free(&c);
		/* SIGINT stops as gracefully as SIGTERM */
		ck_assert_int_eq(tl_stop(e.daemon, SIGINT, WAIT_MS), 0);
		e.daemon = 0;
		ck_assert_int_eq(tl_file_contains(logfile, "got signal 2"), 1);
		ck_assert_int_eq(tl_file_contains(logfile, "stopped"), 1);
		ck_assert_int_eq(tl_file_contains(e.log, "Sanitizer"), 0);
		e2e_stop(&e);
		tl_rmrf(d);
		free(d);
	}
}
END_TEST

/* ---- 12. the control socket's limits ------------------------------------ */

/* The resident memory of a process in KiB, -1 if unknown. */
static long long
vmrss_kib(pid_t pid)
{
	char path[64], *s, *p;
	long long kib = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	s = tl_read_file(path, NULL);
	if (s != NULL && (p = strstr(s, "VmRSS:")) != NULL)
		kib = strtoll(p + 6, NULL, 10);
	free(s);
	return kib;
}

/*
 * A client that sends commands and never reads its answers: the daemon
 * stops reading it once its unread answers pass the limit (256 KiB), so
 * what is queued for it, and the daemon's memory, stay bounded; everyone
 * else is still served, and the client's answers go when it does.
 */
START_TEST(test_ctl__flood_without_reading_stays_bounded)
{
	enum { FLOOD = 512 * 1024, CHUNK = 5 * 1024 };
	struct e2e e;
	struct raw *r;
	char *g, chunk[CHUNK];
	size_t sent = 0, i;
	long long rss0, rss1, queued, full = -1;

	e2e_start(&e, NULL, NULL);
	rss0 = vmrss_kib(e.daemon);
	ck_assert_int_gt(rss0, 0);
	r = raw_open(e.ctl);
	g = raw_line(r);
	ck_assert_str_eq(g, "codexpool 1");
	free(g);
	for (i = 0; i < CHUNK; i += 5)
		memcpy(chunk + i, "help\n", 5);
	ck_assert_int_eq(fcntl(r->fd, F_SETFL, O_NONBLOCK), 0);
	/* each "help" is ~2 KiB of answer: FLOOD bytes of them are ~200 MiB */
	while (sent < FLOOD) {
		struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };
		ssize_t n = write(r->fd, chunk, FLOOD - sent < CHUNK ? FLOOD - sent : CHUNK);
		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EINTR), "write: %s",
		    strerror(errno));
		/* the socket is full: has the daemon stopped reading us? */
		if ((full = status_num(&e, "control_output_full")) >= 1)
			break;
		poll(&pfd, 1, 100);
	}
	full = status_num(&e, "control_output_full");
	queued = status_num(&e, "control_queued_bytes");
	rss1 = vmrss_kib(e.daemon);
	ck_assert_msg(full == 1, "the daemon kept reading a client that reads nothing "
	    "(sent %zu bytes of commands; control_output_full %lld)", sent, full);
	ck_assert_msg(queued > 0 && queued <= 1024 * 1024,
	    "%lld bytes queued for a client that reads nothing", queued);
	ck_assert_msg(rss1 - rss0 < 64 * 1024, "the daemon grew from %lld to %lld KiB",
	    rss0, rss1);
	ck_assert_int_eq(status_num(&e, "control_clients"), 2);
	/* the client goes, and its queued answers with it */
	raw_close(r);
	ck_assert_int_eq(wait_status(&e, "control_clients", 1), 0);
	ck_assert_int_eq(status_num(&e, "control_queued_bytes"), 0);
	ck_assert_int_eq(status_num(&e, "control_output_full"), 0);
	e2e_stop(&e);
}
END_TEST

/*
 * A slow reader gets every answer, in order: pausing loses nothing; nor
 * does closing its side right after the commands (socat does that).
 */
START_TEST(test_ctl__paused_client_gets_every_answer)
{
	enum { NCMDS = 600 };
	struct e2e e;
	struct raw *r;
	char *g, *a, *cmds;
	size_t i;
	int n;

	e2e_start(&e, NULL, NULL);
	r = raw_open(e.ctl);
	g = raw_line(r);
	ck_assert_str_eq(g, "codexpool 1");
	free(g);
	/* ~1.2 MiB of answers, sent before reading any: past the limit */
	cmds = malloc(NCMDS * 5 + 8);
	for (i = 0; i < NCMDS; i++)
		memcpy(cmds + i * 5, i % 2 ? "conf\n" : "help\n", 5);
	memcpy(cmds + NCMDS * 5, "status\n", 7);
	raw_send(r, cmds, NCMDS * 5 + 7);
	free(cmds);
	ck_assert_int_eq(shutdown(r->fd, SHUT_WR), 0);
	for (n = 0; n < NCMDS; n++) {
		a = raw_answer(r);
		ck_assert_msg(a != NULL, "answer %d never came", n);
		if (n % 2)
			ck_assert_msg(strncmp(a, "# key value", 11) == 0, "answer %d: %.100s", n, a);
		else
			ck_assert_msg(has_line(a, "help:"), "answer %d: %.100s", n, a);
		free(a);
	}
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "uptime: "), "the last answer: %.200s", a);
	free(a);
	/* and then the daemon closes */
	ck_assert_msg(r->have == 0 && raw_fill(r, tl_now_ms() + WAIT_MS) == 0,
	    "no EOF after the last answer");
	raw_close(r);
	e2e_stop(&e);
}
END_TEST

/* control_idle_timeout: a client that does nothing is closed. */
START_TEST(test_ctl__idle_client_closed)
{
	struct e2e e;
	struct raw *r;
	char *g, *a, val[600], origin[300];
	int64_t deadline;
	int rc;

	e2e_start(&e, NULL, "control_idle_timeout = 1s");
	ck_assert_int_eq(config_row(&e, "control_idle_timeout", val, sizeof(val), origin,
	    sizeof(origin)), 0);
	ck_assert_str_eq(val, "1s");
	r = raw_open(e.ctl);
	g = raw_line(r);
	ck_assert_str_eq(g, "codexpool 1");
	free(g);
	raw_send(r, "status\n", 7);
	a = raw_answer(r);
	ck_assert_msg(a && has_line(a, "uptime: "), "%s", a);
	free(a);
	/* then nothing: the daemon hangs up */
	deadline = tl_now_ms() + WAIT_MS;
	while ((rc = raw_fill(r, deadline)) > 0)
		r->have = 0;
	ck_assert_msg(rc == 0, "an idle control connection was not closed");
	ck_assert_int_eq(tl_wait_file_contains(e.log, "idle for", WAIT_MS), 0);
	raw_close(r);
	ck_assert_int_ge(status_num(&e, "uptime"), 0);
	e2e_stop(&e);
}
END_TEST

/*
 * More idle connections than the daemon keeps (64): each new one closes
 * the one idle longest, so codexpoolctl still gets in.
 */
START_TEST(test_ctl__idle_flood_does_not_lock_out)
{
	enum { NIDLE = 80 };
	struct e2e e;
	struct raw *r[NIDLE];
	char *g, *a;
	int i, rc;

	e2e_start(&e, NULL, NULL);
	for (i = 0; i < NIDLE; i++) {
		r[i] = raw_open(e.ctl);
		g = raw_line(r[i]);
		ck_assert_msg(g && strcmp(g, "codexpool 1") == 0, "connection %d got: %s", i, g);
		free(g);
	}
	a = ctl_expect(&e, 0, "status");
	ck_assert_msg(has_line(a, "uptime: "), "%s", a);
	ck_assert_msg(field_num(a, "control_clients") <= 64, "%s", a);
	free(a);
	ck_assert_int_eq(tl_wait_file_contains(e.log, "closed the one idle longest", WAIT_MS), 0);
	/* the oldest went first; the newest still works */
	rc = raw_fill(r[0], tl_now_ms() + WAIT_MS);
	ck_assert_msg(rc == 0, "the connection idle longest was not closed (%d)", rc);
	raw_send(r[NIDLE - 1], "status\n", 7);
	a = raw_answer(r[NIDLE - 1]);
	ck_assert_msg(a && has_line(a, "uptime: "), "%s", a);
	free(a);
	for (i = 0; i < NIDLE; i++)
		raw_close(r[i]);
	e2e_stop(&e);
}
END_TEST

/* ---- 13. the workers' own counters -------------------------------------- */

/* The words of a text table's header (after "#"), malloc'd, n of them. */
static int
header_words(const char *text, char words[][64], int max)
{
	const char *p = text + 1, *end = strchr(text, '\n');
	int n = 0;

	while (p < end && n < max) {
		size_t len;
		while (*p == ' ')
			p++;
		len = strcspn(p, " \n");
		if (len == 0)
			break;
		snprintf(words[n++], 64, "%.*s", (int)len, p);
		p += len;
	}
	return n;
}

static const char *const worker_counters[] = {
	"sockets", "conns_opened", "conns_closed", "oneshot_opened", "liveness_kills",
	"expired", "evicted", "stream_errors", "continue_refused", "frames_relayed",
	"bytes_relayed", "chan_full", "rx_pauses", NULL
};

/*
 * The text row of slot in `show workers`: its cells by column name;
 * returns the value of column col ("" if none).
 */
static void
worker_cell(const char *text, int slot, const char *col, char *val, size_t len)
{
	char hdr[64][64], copy[8192], *line, *save = NULL, *cell, *s2;
	int nh = header_words(text, hdr, 64), k;

	val[0] = '\0';
	snprintf(copy, sizeof(copy), "%s", text);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#' || atoi(line) != slot)
			continue;
		for (k = 0, cell = strtok_r(line, " ", &s2); cell && k < nh;
		    k++, cell = strtok_r(NULL, " ", &s2))
			if (strcmp(hdr[k], col) == 0) {
				snprintf(val, len, "%s", cell);
				return;
			}
	}
}

START_TEST(test_ctl__worker_counters)
{
	struct e2e e;
	struct conv c1, c2;
	char *out, hdr[64][64], val[64];
	json_object *o, *rows, *row, *v;
	long long frames = 0;
	int i, k, nh, found;
	pid_t pid0;

	e2e_start(&e, NULL, NULL);
	conv_init(&c1, "conv-counters-1");
	conv_init(&c2, "conv-counters-2");
	ck_assert_int_eq(conv_turn(&e, &c1, "one", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c1, "two", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c2, "three", 1, NULL, NULL), 200);

	/* text: the counter columns, after the supervisor's, numbers in each row */
	out = ctl_expect(&e, 0, "show workers");
	nh = header_words(out, hdr, 64);
	for (k = 0; worker_counters[k]; k++) {
		for (i = 0, found = 0; i < nh; i++)
			found |= strcmp(hdr[i], worker_counters[k]) == 0;
		ck_assert_msg(found, "show workers has no column %s:\n%s", worker_counters[k], out);
	}
	for (i = 0; i < 2; i++)
		for (k = 0; worker_counters[k]; k++) {
			char *end;
			worker_cell(out, i, worker_counters[k], val, sizeof(val));
			ck_assert_msg(val[0] != '\0' && (strtoll(val, &end, 10), *end == '\0'),
			    "worker %d: %s is '%s':\n%s", i, worker_counters[k], val, out);
			if (strcmp(worker_counters[k], "frames_relayed") == 0)
				frames += strtoll(val, NULL, 10);
		}
	ck_assert_msg(frames > 0, "no frames relayed after three turns:\n%s", out);
	free(out);

	/* JSON: the same columns, integers */
	o = ctl_json(&e, "show workers");
	rows = json_object_object_get(o, "workers");
	ck_assert_int_eq(json_object_array_length(rows), 2);
	for (i = 0; i < 2; i++) {
		row = json_object_array_get_idx(rows, i);
		for (k = 0; worker_counters[k]; k++)
			ck_assert_msg(json_object_object_get_ex(row, worker_counters[k], &v) &&
			    json_object_is_type(v, json_type_int), "worker %d: %s in %s", i,
			    worker_counters[k], json_object_to_json_string(row));
	}
	json_object_put(o);

	/* status: the sums, and how many workers answered */
	out = ctl_expect(&e, 0, "status");
	ck_assert_int_eq(field_num(out, "workers_reporting"), 2);
	ck_assert_int_eq(field_num(out, "worker_frames_relayed"), frames);
	ck_assert_int_ge(field_num(out, "worker_conns_opened"), 2);
	for (k = 0; worker_counters[k]; k++) {
		char key[64];
		snprintf(key, sizeof(key), "worker_%s", worker_counters[k]);
		ck_assert_msg(field_num(out, key) >= 0, "status lacks %s:\n%s", key, out);
	}
	free(out);

	/* a worker that cannot answer: the others' counters, "-" / null for it */
	pid0 = worker_row(&e, 0).pid;
	ck_assert_int_gt(pid0, 0);
	ck_assert_int_eq(kill(pid0, SIGSTOP), 0);
	out = ctl_expect(&e, 0, "show workers");
	worker_cell(out, 0, "frames_relayed", val, sizeof(val));
	ck_assert_msg(strcmp(val, "-") == 0, "a stopped worker has counters:\n%s", out);
	worker_cell(out, 1, "frames_relayed", val, sizeof(val));
	ck_assert_msg(val[0] >= '0' && val[0] <= '9', "worker 1 has no counters:\n%s", out);
	free(out);
	o = ctl_json(&e, "show workers");
	rows = json_object_object_get(o, "workers");
	ck_assert_msg(json_object_object_get_ex(json_object_array_get_idx(rows, 0),
	    "frames_relayed", &v) && v == NULL, "%s", json_object_to_json_string(o));
	json_object_put(o);
	ck_assert_int_eq(status_num(&e, "workers_reporting"), 1);
	ck_assert_int_eq(kill(pid0, SIGCONT), 0);
	ck_assert_int_eq(wait_status(&e, "workers_reporting", 2), 0);
	ck_assert_int_eq(worker_row(&e, 0).pid, pid0);
	conv_free(&c1);
	conv_free(&c2);
	e2e_stop(&e);
}
END_TEST

/* ---- 14. each table: the text is the JSON ------------------------------- */

/* A JSON cell as the text table shows it; NULL for a value shown otherwise. */
static const char *
as_text(json_object *v, char *buf, size_t len)
{
	if (v == NULL)
		return "-";
	switch (json_object_get_type(v)) {
	case json_type_int:
		snprintf(buf, len, "%lld", (long long)json_object_get_int64(v));
		return buf;
	case json_type_boolean:
		return json_object_get_boolean(v) ? "yes" : "no";
	case json_type_string:
		return json_object_get_string_len(v) ? json_object_get_string(v) : "-";
	default:
		return NULL;
	}
}

/*
 * The header names the JSON keys in order, and every text cell is its
 * JSON value (columns that move with the clock are skipped).
 */
static void
assert_table_matches_json(struct e2e *e, const char *cmd, const char *key, int minrows)
{
	static const char *const clock[] = { "uptime", "age", "idle", "locked_for",
	    "token_expires_in", NULL };
	char *text = ctl_expect(e, 0, cmd), hdr[64][64], *line, *save = NULL, buf[64];
	json_object *o = ctl_json(e, cmd), *rows = json_object_object_get(o, key);
	int nh = header_words(text, hdr, 64), row = 0, k, c;

	ck_assert_msg(rows != NULL, "'%s --json' has no '%s'", cmd, key);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_object *r;
		struct json_object_iterator it, end;
		char *p = line;

		if (line[0] == '#')
			continue;
		ck_assert_msg((size_t)row < json_object_array_length(rows),
		    "'%s': more text rows than JSON rows", cmd);
		r = json_object_array_get_idx(rows, row++);
		it = json_object_iter_begin(r);
		end = json_object_iter_end(r);
		for (k = 0; k < nh; k++, json_object_iter_next(&it)) {
			const char *name, *want;
			size_t len = k == nh - 1 ? strlen(p) : strcspn(p, " ");
			ck_assert_msg(!json_object_iter_equal(&it, &end), "'%s': JSON row %d has "
			    "fewer keys than the header", cmd, row);
			name = json_object_iter_peek_name(&it);
			ck_assert_msg(strncmp(hdr[k], name, strlen(name)) == 0,
			    "'%s': column %d is '%s' in text, '%s' in JSON", cmd, k, hdr[k], name);
			want = as_text(json_object_iter_peek_value(&it), buf, sizeof(buf));
			for (c = 0; clock[c] && strcmp(clock[c], name) != 0; c++)
				;
			if (want != NULL && clock[c] == NULL)
				ck_assert_msg(strlen(want) == len && strncmp(p, want, len) == 0,
				    "'%s' row %d, %s: text '%.*s', JSON '%s'", cmd, row, name,
				    (int)len, p, want);
			p += len;
			if (*p == ' ')
				p++;
		}
		ck_assert_msg(json_object_iter_equal(&it, &end), "'%s': JSON row %d has more "
		    "keys than the header", cmd, row);
	}
	ck_assert_int_eq(row, json_object_array_length(rows));
	ck_assert_int_ge(row, minrows);
	json_object_put(o);
	free(text);
}

START_TEST(test_ctl__tables_text_matches_json)
{
	struct e2e e;
	struct conv c;

	e2e_start(&e, NULL, NULL);
	conv_init(&c, "conv-tables");
	ck_assert_int_eq(conv_turn(&e, &c, "one", 0, NULL, NULL), 200);
	ck_assert_int_eq(conv_turn(&e, &c, "two", 0, NULL, NULL), 200);
	assert_table_matches_json(&e, "show workers", "workers", 2);
	assert_table_matches_json(&e, "show pools", "pools", 1);
	assert_table_matches_json(&e, "show conversations", "conversations", 1);
	assert_table_matches_json(&e, "account list", "accounts", 1);
	assert_table_matches_json(&e, "config", "config", 10);
	conv_free(&c);
	e2e_stop(&e);
}
END_TEST

/* ---- 15. codexpoolctl: bad input --------------------------------------- */

/* codexpoolctl -s sock argv...; exit status, output in *out. */
static int
ctl_argv(struct e2e *e, char **out, char *const *args)
{
	char *argv[16], outpath[800];
	int argc = 0, i;
	pid_t pid;

	argv[argc++] = tl_program("ctl/codexpoolctl");
	argv[argc++] = "-s";
	argv[argc++] = e->ctl;
	for (i = 0; args[i] && argc < 15; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	snprintf(outpath, sizeof(outpath), "%s/ctl-argv.out", e->dir);
	unlink(outpath);
	pid = tl_spawn(outpath, argv);
	free(argv[0]);
	return ctl_wait(pid, outpath, out);
}

START_TEST(test_ctl__ctl_bad_input)
{
	struct e2e e;
	char path[800], big[800], failures[8192] = "", *out, *auth;
	size_t len;
	int rc, i;
	struct {
		char	*args[10];
		int	 want;
		const char *n1, *n2;
	} cases[] = {
		{ { "account", "add", "--auth-json", NULL }, 2, "--auth-json", NULL },
		{ { "account", "add", "--auth-json", "DIR", NULL }, 2, "is a directory", NULL },
		{ { "account", "add", "--auth-json", "/dev/null", NULL }, 2, "empty", NULL },
		{ { "account", "add", "--auth-json", "BIG", NULL }, 2, "too large", NULL },
		{ { "account", "add", "--auth-json", "MISSING", NULL }, 2, "No such file", NULL },
		{ { "account", "add", "--auth-json", "AUTH", "--access-token", "a",
		    "--refresh-token", "b", NULL }, 2, "not both", NULL },
		{ { "account", "add", "--access-token", "a", NULL }, 2, "--refresh-token", NULL },
		{ { "account", "add", "--frob", "x", NULL }, 2, "--frob", NULL },
		{ { "account", "add", "--auth-json", "AUTH", "--label", "a b", NULL }, 2,
		    "label", "blank" },
		{ { "account", "add", "--label", "x", "--label", "y", NULL }, 2, "twice", NULL },
		{ { "evict", "a b", NULL }, 2, "blank", NULL },
		{ { "", NULL }, 2, "usage:", NULL },
		{ { " ", NULL }, 2, "blank", NULL },
		{ { "status", "", NULL }, 0, "uptime: ", NULL },
	};

	e2e_start(&e, NULL, NULL);
	snprintf(big, sizeof(big), "%s/big.json", e.dir);
	out = calloc(1, 200 * 1024);
	memset(out, ' ', 200 * 1024 - 1);
	ck_assert_int_eq(tl_write_file(big, out, 200 * 1024 - 1, 0600), 0);
	free(out);
	tl_sim_auth_path(&e.sim, 2, path, sizeof(path));
	auth = tl_read_file(path, &len);
	ck_assert_ptr_nonnull(auth);
	free(auth);
	for (i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])); i++) {
		char *args[10], missing[800];
		int k;
		snprintf(missing, sizeof(missing), "%s/no-such.json", e.dir);
		for (k = 0; cases[i].args[k]; k++)
			args[k] = strcmp(cases[i].args[k], "DIR") == 0 ? e.dir :
			    strcmp(cases[i].args[k], "BIG") == 0 ? big :
			    strcmp(cases[i].args[k], "AUTH") == 0 ? path :
			    strcmp(cases[i].args[k], "MISSING") == 0 ? missing : cases[i].args[k];
		args[k] = NULL;
		rc = ctl_argv(&e, &out, args);
		{
			char what[300] = "";
			for (k = 0; args[k]; k++)
				snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s'%s'",
				    k ? " " : "", args[k]);
			note(failures, sizeof(failures), what, rc, cases[i].want, out,
			    cases[i].n1, cases[i].n2);
		}
		free(out);
	}
	ck_assert_msg(failures[0] == '\0', "codexpoolctl:%s", failures);
	/* none of it reached the daemon's accounts */
	{
		json_object *o = ctl_json(&e, "account list");
		ck_assert_int_eq(json_object_array_length(json_object_object_get(o, "accounts")), 1);
		json_object_put(o);
	}
	e2e_stop(&e);
}
END_TEST

static Suite *
make_suite_ctl(void)
{
	Suite *s = suite_create("ctl");
	TCase *cmds = tcase_create("commands");
	TCase *proto = tcase_create("protocol");
	TCase *ops = tcase_create("operations");
	TCase *initd = tcase_create("initscript");
	TCase *limits = tcase_create("limits");

	tcase_set_timeout(cmds, 120);
	tcase_set_timeout(proto, 120);
	tcase_set_timeout(ops, 120);
	tcase_set_timeout(initd, 120);
	tcase_set_timeout(limits, 120);
	tcase_add_test(cmds, test_ctl__every_command_text_and_json);
	tcase_add_test(cmds, test_ctl__abbreviations_and_errors);
	tcase_add_test(cmds, test_ctl__ambiguous_prefix_st);
	tcase_add_test(cmds, test_ctl__stats_reset_and_conversations);
	tcase_add_test(cmds, test_ctl__usage_lists_every_command);
	tcase_add_test(cmds, test_ctl__manual_lists_every_command);
	tcase_add_test(proto, test_ctl__raw_protocol);
	tcase_add_test(proto, test_ctl__raw_overlong_line);
	tcase_add_test(proto, test_ctl__wrong_protocol_and_no_daemon);
	tcase_add_test(proto, test_ctl__other_uid_refused);
	tcase_add_test(proto, test_ctl__control_group_members_served);
	tcase_add_test(proto, test_ctl__concurrent_clients_during_traffic);
	tcase_add_test(proto, test_ctl__control_group_supplementary_member);
	tcase_add_test(limits, test_ctl__flood_without_reading_stays_bounded);
	tcase_add_test(limits, test_ctl__paused_client_gets_every_answer);
	tcase_add_test(limits, test_ctl__idle_client_closed);
	tcase_add_test(limits, test_ctl__idle_flood_does_not_lock_out);
	tcase_add_test(cmds, test_ctl__worker_counters);
	tcase_add_test(cmds, test_ctl__tables_text_matches_json);
	tcase_add_test(cmds, test_ctl__ctl_bad_input);
	tcase_add_test(ops, test_ctl__pool_disable_mid_stream);
	tcase_add_test(ops, test_ctl__reload);
	tcase_add_test(ops, test_ctl__drain_worker);
	tcase_add_test(ops, test_ctl__pidfile_and_socket_guards);
	tcase_add_test(ops, test_ctl__daemon_mode_reports_startup_failure);
	tcase_add_test(ops, test_ctl__check_config_and_log_reopen);
	tcase_add_unchecked_fixture(initd, initd_setup, initd_teardown);
	tcase_add_test(initd, test_ctl__init_script);
	suite_add_tcase(s, cmds);
	suite_add_tcase(s, proto);
	suite_add_tcase(s, ops);
	suite_add_tcase(s, initd);
	suite_add_tcase(s, limits);
	return s;
}

int
main(void)
{
	return e2e_run(make_suite_ctl());
}
