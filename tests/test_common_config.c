/* config.c + cfgkeys.c: parsing, errors with line numbers, formatting. */
#include "config.h"
#include "cfg.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfgkeys.h"
#include "test_common_suites.h"

/* A table with one key of every type. */
struct test_config {
	char		*name;
	int		 count;
	bool		 flag;
	int64_t		 wait;
	uint64_t	 room;
	char		*addr;
	char		*mode;
};

static const char *const modes[] = { "fast", "slow", NULL };

static const struct cfg_key test_keys[] = {
	{ "name", CFG_STRING, offsetof(struct test_config, name), "anon", 0, 0, 0,
	  "a string", NULL },
	{ "count", CFG_INT, offsetof(struct test_config, count), "3", 0, 1, 256,
	  "an int", NULL },
	{ "flag", CFG_BOOL, offsetof(struct test_config, flag), "no", CFG_RELOADABLE,
	  0, 0, "a bool", NULL },
	{ "wait", CFG_DURATION, offsetof(struct test_config, wait), "25s", 0,
	  1000, 3600000000LL, "a duration", NULL },
	{ "room", CFG_SIZE, offsetof(struct test_config, room), "32M", 0,
	  1024, 1024LL * 1024 * 1024, "a size", NULL },
	{ "addr", CFG_ADDRESS, offsetof(struct test_config, addr), "127.0.0.1:80", 0,
	  0, 0, "an address", NULL },
	{ "mode", CFG_STRING, offsetof(struct test_config, mode), "fast", 0, 0, 0,
	  "a choice", modes },
	{ NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL },
};

static char tmpdir[64];

static void
setup_dir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_common_cfg.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void
teardown_dir(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/c.conf", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

/* Write text to tmpdir/c.conf and return the path (static storage). */
static const char *
write_conf(const char *text)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/c.conf", tmpdir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
	fclose(f);
	return path;
}

static const char *
write_conf_path(void)
{
	static char path[128];

	snprintf(path, sizeof(path), "%s/c.conf", tmpdir);
	return path;
}

/* Load text over the defaults of the test table; returns rc, fills err. */
static int
load_text(struct cfgset *cs, struct test_config *tc, const char *text,
    char *err, size_t errlen)
{
	char derr[256];

	memset(tc, 0xa5, sizeof(*tc));		/* init must not trust garbage */
	ck_assert_int_eq(cfgset_init(cs, test_keys, tc), 0);
	ck_assert_int_eq(cfg_load_defaults(cs, derr, sizeof(derr)), 0);
	err[0] = '\0';
	return cfg_load_file(cs, write_conf(text), err, errlen);
}

/* The error for text, after "path:" */
static void
check_error(const char *text, const char *want)
{
	struct cfgset cs;
	struct test_config tc;
	char err[512], full[600];

	ck_assert_int_eq(load_text(&cs, &tc, text, err, sizeof(err)), -1);
	snprintf(full, sizeof(full), "%s/c.conf:%s", tmpdir, want);
	ck_assert_msg(strcmp(err, full) == 0, "error '%s', want '%s'", err, full);
	cfgset_free(&cs);
}

START_TEST(test_config__defaults_applied)
{
	struct codexpool_config c;
	struct cfgset cs;
	char err[256];
	const struct cfg_key *k;

	ck_assert_int_eq(cfgset_init(&cs, codexpool_cfg_keys, &c), 0);
	ck_assert_int_eq(cfg_load_defaults(&cs, err, sizeof(err)), 0);
	ck_assert_str_eq(c.listen, "127.0.0.1:8080");
	ck_assert_int_eq(c.workers, 0);
	ck_assert_str_eq(c.upstream_url, "wss://chatgpt.com/backend-api/codex/responses");
	ck_assert_ptr_null(c.upstream_ca_file);
	ck_assert_ptr_null(c.upstream_proxy);
	ck_assert_ptr_null(c.auth_file);
	ck_assert(c.ws_pool_enabled);
	ck_assert_int_eq(c.ws_pool_max_age, 55 * 60 * 1000000LL);
	ck_assert_int_eq(c.ws_pool_max_per_account, 8);
	ck_assert_int_eq(c.ws_ping_interval, 25 * 1000000LL);
	ck_assert_int_eq(c.handshake_timeout, 15 * 1000000LL);
	ck_assert_int_eq(c.response_start_timeout, 180 * 1000000LL);
	ck_assert_int_eq(c.shutdown_timeout, 30 * 1000000LL);
	ck_assert_str_eq(c.data_dir, CODEXPOOL_DEFAULT_DATADIR);
	ck_assert_str_eq(c.control_socket, CODEXPOOL_DEFAULT_SOCKET);
	ck_assert_uint_eq(c.max_body_size, 32u * 1024 * 1024);
	ck_assert_uint_eq(c.max_client_buffer, 16u * 1024 * 1024);
	ck_assert_int_eq(c.max_clients, 1024);
	ck_assert_str_eq(c.log_level, "info");
	ck_assert_ptr_null(c.log_file);
	ck_assert_ptr_null(c.pidfile);
	ck_assert_ptr_null(c.user);
	ck_assert_str_eq(c.originator, "codex_cli_rs");
	ck_assert_str_eq(c.client_version, "0.169.0");
	for (k = codexpool_cfg_keys; k->name != NULL; k++) {
		ck_assert_str_eq(cs.origin[k - codexpool_cfg_keys].where, "default");
		ck_assert_ptr_nonnull(k->desc);
		ck_assert_ptr_null(strchr(k->desc, '\n'));
	}
	ck_assert_uint_eq(cs.nkeys, (size_t)(k - codexpool_cfg_keys));
	ck_assert_str_eq(c.token_url, "https://auth.openai.com/oauth/token");
	ck_assert_int_eq(c.affinity_ttl, 4 * 3600 * 1000000LL);
	ck_assert(cfg_find(codexpool_cfg_keys, "ws_pool_enabled")->flags & CFG_RELOADABLE);
	ck_assert(!(cfg_find(codexpool_cfg_keys, "listen")->flags & CFG_RELOADABLE));
	ck_assert_ptr_null(cfg_find(codexpool_cfg_keys, "lsiten"));
	cfgset_free(&cs);
}
END_TEST

START_TEST(test_config__parse_every_type)
{
	struct cfgset cs;
	struct test_config tc;
	char err[256];
	const char *text =
	    "# a comment\n"
	    "\n"
	    "   name = plain words here   # trailing comment\n"
	    "count=42\n"
	    "flag = on\r\n"
	    "wait = 1500ms\n"
	    "room = 4k\n"
	    "addr = [::1]:8080\n"
	    "mode = slow\n"
	    "name = \"quoted # not a comment \\\"x\\\" \\\\ \"  # comment\n";

	ck_assert_int_eq(load_text(&cs, &tc, text, err, sizeof(err)), 0);
	ck_assert_str_eq(err, "");
	/* Duplicate key: the last one wins, and its line is the origin. */
	ck_assert_str_eq(tc.name, "quoted # not a comment \"x\" \\ ");
	ck_assert_str_eq(cs.origin[0].where + strlen(cs.origin[0].where) - 9, "c.conf:10");
	ck_assert_int_eq(tc.count, 42);
	ck_assert_str_eq(cs.origin[1].where + strlen(tmpdir), "/c.conf:4");
	ck_assert(tc.flag);
	ck_assert_int_eq(tc.wait, 1500000);
	ck_assert_uint_eq(tc.room, 4096);
	ck_assert_str_eq(tc.addr, "[::1]:8080");
	ck_assert_str_eq(tc.mode, "slow");
	cfgset_free(&cs);

	ck_assert_int_eq(load_text(&cs, &tc,
	    "addr = /run/codexpool/http.sock\nname = \"\"\nflag=FALSE\n"
	    "wait=1h\nroom=1G\n", err, sizeof(err)), 0);
	ck_assert_str_eq(tc.addr, "/run/codexpool/http.sock");
	ck_assert_ptr_null(tc.name);		/* empty string = unset */
	ck_assert(!tc.flag);
	ck_assert_int_eq(tc.wait, 3600 * 1000000LL);
	ck_assert_uint_eq(tc.room, 1024u * 1024 * 1024);
	cfgset_free(&cs);
}
END_TEST

START_TEST(test_config__errors_with_line_numbers)
{
	check_error("name = x\n\ncoutn = 3\n",
	    "3: unknown key 'coutn' (did you mean 'count'?)");
	check_error("frobnicate = 3\n", "1: unknown key 'frobnicate'");
	check_error("count = 3x\n", "1: bad integer '3x' for count");
	check_error("count = \n", "1: bad integer '' for count");
	check_error("count = 0\n", "1: value 0 out of range for count (1..256)");
	check_error("count = 99999999999\n", "1: bad integer '99999999999' for count");
	check_error("flag = maybe\n", "1: bad boolean 'maybe' for flag (use yes or no)");
	check_error("\nwait = 5x\n",
	    "2: bad duration '5x' for wait (use a number with us, ms, s, m or h)");
	check_error("wait = -5s\n",
	    "1: bad duration '-5s' for wait (use a number with us, ms, s, m or h)");
	check_error("wait = 2h1m\n",
	    "1: bad duration '2h1m' for wait (use a number with us, ms, s, m or h)");
	check_error("wait = 500us\n", "1: value 500us out of range for wait (1ms..1h)");
	check_error("room = 5T\n", "1: bad size '5T' for room (use a number with k, M or G)");
	check_error("room = 2G\n", "1: value 2G out of range for room (1k..1G)");
	check_error("addr = localhost\n", "1: bad address 'localhost' for addr"
	    " (use host:port, [v6]:port or an absolute path)");
	check_error("addr = 1.2.3.4:99999\n", "1: bad address '1.2.3.4:99999' for addr"
	    " (use host:port, [v6]:port or an absolute path)");
	check_error("mode = medium\n", "1: bad value 'medium' for mode (use fast or slow)");
	check_error("name = \"abc\n", "1: unterminated quoted value for name");
	check_error("name = \"abc\\\"\n", "1: unterminated quoted value for name");
	check_error("name = \"a\\n\"\n",
	    "1: bad escape '\\n' in value for name (only \\\" and \\\\)");
	check_error("name = \"a\" b\n", "1: unexpected text after the quoted value for name");
	check_error("name = a\"b\n", "1: stray '\"' in value for name (quote the whole value)");
	check_error("name\n", "1: missing '= value' after 'name'");
	check_error("name: x\n", "1: expected '=' after 'name'");
	check_error("= x\n", "1: expected 'key = value'");
}
END_TEST

START_TEST(test_config__long_line)
{
	char *text, err[256];
	struct cfgset cs;
	struct test_config tc;
	size_t n;

	/* Exactly 4096 bytes before the newline: accepted. */
	text = malloc(8200);
	ck_assert_ptr_nonnull(text);
	strcpy(text, "name = ");
	n = strlen(text);
	memset(text + n, 'a', 4096 - n);
	strcpy(text + 4096, "\n");
	ck_assert_int_eq(load_text(&cs, &tc, text, err, sizeof(err)), 0);
	ck_assert_uint_eq(strlen(tc.name), 4096 - n);
	cfgset_free(&cs);

	/* One more: an error naming the line. */
	strcpy(text, "count = 2\nname = ");
	n = strlen(text);
	memset(text + n, 'a', 8000 - n);
	strcpy(text + 8000, "\n");
	ck_assert_int_eq(load_text(&cs, &tc, text, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "/c.conf:2: line too long (more than 4096 bytes)"));
	cfgset_free(&cs);
	free(text);

	/* A NUL byte in a line. */
	{
		FILE *f = fopen(write_conf(""), "w");

		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite("count = 2\nname = a\0b\n", 1, 20, f), 20);
		fclose(f);
		ck_assert_int_eq(cfgset_init(&cs, test_keys, &tc), 0);
		ck_assert_int_eq(cfg_load_file(&cs, write_conf_path(), err,
		    sizeof(err)), -1);
		ck_assert_ptr_nonnull(strstr(err, "/c.conf:2: NUL byte in line"));
		cfgset_free(&cs);
	}
}
END_TEST

START_TEST(test_config__missing_file)
{
	struct cfgset cs;
	struct test_config tc;
	char err[256];

	ck_assert_int_eq(cfgset_init(&cs, test_keys, &tc), 0);
	ck_assert_int_eq(cfg_load_file(&cs, "/nonexistent/codexpool.conf", err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "/nonexistent/codexpool.conf: No such file or directory");
	cfgset_free(&cs);
}
END_TEST

START_TEST(test_config__value_parsers)
{
	int64_t us;
	uint64_t b;
	bool v;

	ck_assert_int_eq(cfg_parse_duration("10", &us), 0);
	ck_assert_int_eq(us, 10000000);
	ck_assert_int_eq(cfg_parse_duration("7us", &us), 0);
	ck_assert_int_eq(us, 7);
	ck_assert_int_eq(cfg_parse_duration("3m", &us), 0);
	ck_assert_int_eq(us, 180000000);
	ck_assert_int_eq(cfg_parse_duration("", &us), -1);
	ck_assert_int_eq(cfg_parse_duration("s", &us), -1);
	ck_assert_int_eq(cfg_parse_duration("1 s", &us), -1);
	ck_assert_int_eq(cfg_parse_duration("1.5s", &us), -1);
	ck_assert_int_eq(cfg_parse_duration("99999999999999999999h", &us), -1);
	ck_assert_int_eq(cfg_parse_duration("9999999999999h", &us), -1);
	ck_assert_int_eq(cfg_parse_size("0", &b), 0);
	ck_assert_uint_eq(b, 0);
	ck_assert_int_eq(cfg_parse_size("16M", &b), 0);
	ck_assert_uint_eq(b, 16u * 1024 * 1024);
	ck_assert_int_eq(cfg_parse_size("2K", &b), 0);
	ck_assert_uint_eq(b, 2048);
	ck_assert_int_eq(cfg_parse_size("2kb", &b), -1);
	ck_assert_int_eq(cfg_parse_size("99999999999G", &b), -1);
	ck_assert_int_eq(cfg_parse_bool("Yes", &v), 0);
	ck_assert(v);
	ck_assert_int_eq(cfg_parse_bool("0", &v), 0);
	ck_assert(!v);
	ck_assert_int_eq(cfg_parse_bool("off", &v), 0);
	ck_assert(!v);
	ck_assert_int_eq(cfg_parse_bool("nope", &v), -1);
	ck_assert_str_eq(cfg_type_name(CFG_DURATION), "duration");
	ck_assert_str_eq(cfg_type_name(CFG_ADDRESS), "address");
}
END_TEST

START_TEST(test_config__format_values)
{
	struct cfgset cs;
	struct test_config tc;
	char err[256], buf[64];
	static const struct {
		const char *key, *in, *out;
	} v[] = {
		{ "wait", "3300s", "55m" }, { "wait", "25s", "25s" },
		{ "wait", "500ms", "500ms" }, { "wait", "1500ms", "1500ms" },
		{ "wait", "90s", "90s" }, { "wait", "3600s", "1h" },
		{ "wait", "1001us", "1001us" },
		{ "room", "32768k", "32M" }, { "room", "1024", "1k" },
		{ "room", "1536", "1536" }, { "room", "1024M", "1G" },
		{ "flag", "on", "yes" }, { "flag", "0", "no" },
		{ "count", "007", "7" },
		{ "name", "plain words", "plain words" },
		{ "name", "a#b", "\"a#b\"" },
		{ "name", "say \"hi\" \\o/", "\"say \\\"hi\\\" \\\\o/\"" },
		{ "name", " padded ", "\" padded \"" },
		{ "name", "", "\"\"" },
		{ "addr", "[::1]:1", "[::1]:1" },
	};
	size_t i;

	ck_assert_int_eq(cfgset_init(&cs, test_keys, &tc), 0);
	ck_assert_int_eq(cfg_load_defaults(&cs, err, sizeof(err)), 0);
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		ck_assert_int_eq(cfg_set(&cs, v[i].key, v[i].in, "test", err,
		    sizeof(err)), 0);
		ck_assert_int_eq(cfg_format(&cs, cfg_find(test_keys, v[i].key),
		    buf, sizeof(buf)), (int)strlen(v[i].out));
		ck_assert_str_eq(buf, v[i].out);
	}
	ck_assert_str_eq(cs.origin[0].where, "test");
	/* Too small a buffer is reported, not overrun. */
	ck_assert_int_eq(cfg_set(&cs, "name", "0123456789", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_format(&cs, &test_keys[0], buf, 5), -1);
	ck_assert_int_eq(cfg_set(&cs, "nmae", "x", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "unknown key 'nmae' (did you mean 'name'?)");
	ck_assert_int_eq(cfg_set(&cs, "count", "1000", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "value 1000 out of range for count (1..256)");
	ck_assert_int_eq(tc.count, 7);		/* unchanged on error */
	cfgset_free(&cs);
}
END_TEST

/* Every key of the real table: format, write as a file, load into a
 * fresh set, compare.  Non-default values too, including awkward strings. */
START_TEST(test_config__format_round_trip)
{
	struct codexpool_config a, b;
	struct cfgset ca, cb;
	const struct cfg_key *k;
	char err[256], val[512], *text;
	size_t off = 0;

	text = calloc(1, 65536);
	ck_assert_ptr_nonnull(text);
	ck_assert_int_eq(cfgset_init(&ca, codexpool_cfg_keys, &a), 0);
	ck_assert_int_eq(cfg_load_defaults(&ca, err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&ca, "user", "odd \"name\" # \\", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&ca, "ws_pool_max_age", "1234ms", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&ca, "max_body_size", "1000k", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&ca, "ws_pool_enabled", "off", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&ca, "listen", "/tmp/x.sock", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&ca, "log_level", "debug", "t", err, sizeof(err)), 0);
	for (k = codexpool_cfg_keys; k->name != NULL; k++) {
		ck_assert_int_gt(cfg_format(&ca, k, val, sizeof(val)), -1);
		off += (size_t)snprintf(text + off, 65536 - off, "%s = %s\n",
		    k->name, val);
	}
	ck_assert_int_eq(cfgset_init(&cb, codexpool_cfg_keys, &b), 0);
	ck_assert_int_eq(cfg_load_file(&cb, write_conf(text), err, sizeof(err)), 0);
	for (k = codexpool_cfg_keys; k->name != NULL; k++)
		ck_assert_msg(!cfg_differs(&ca, &cb, k), "%s differs", k->name);
	ck_assert_str_eq(b.user, "odd \"name\" # \\");
	ck_assert_int_eq(b.ws_pool_max_age, 1234000);

	/* differs / copy */
	k = cfg_find(codexpool_cfg_keys, "originator");
	ck_assert_int_eq(cfg_set(&cb, "originator", "other", "t2", err, sizeof(err)), 0);
	ck_assert(cfg_differs(&ca, &cb, k));
	cfg_copy_value(&cb, &ca, k);
	ck_assert(!cfg_differs(&ca, &cb, k));
	ck_assert_str_eq(b.originator, "codex_cli_rs");
	ck_assert_ptr_ne(b.originator, a.originator);
	k = cfg_find(codexpool_cfg_keys, "pidfile");
	ck_assert_int_eq(cfg_set(&cb, "pidfile", "/run/x.pid", "t2", err, sizeof(err)), 0);
	ck_assert(cfg_differs(&ca, &cb, k));
	cfg_copy_value(&cb, &ca, k);
	ck_assert_ptr_null(b.pidfile);
	ck_assert(!cfg_differs(&ca, &cb, cfg_find(codexpool_cfg_keys, "workers")));
	cfgset_free(&ca);
	cfgset_free(&cb);
	free(text);
}
END_TEST

START_TEST(test_config__table_ranges)
{
	struct codexpool_config c;
	struct cfgset cs;
	char err[256];

	ck_assert_int_eq(cfgset_init(&cs, codexpool_cfg_keys, &c), 0);
	ck_assert_int_eq(cfg_load_defaults(&cs, err, sizeof(err)), 0);
	ck_assert_int_eq(cfg_set(&cs, "ws_pool_max_per_account", "0", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "value 0 out of range for ws_pool_max_per_account (1..100000)");
	ck_assert_int_eq(cfg_set(&cs, "workers", "257", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "value 257 out of range for workers (0..256)");
	ck_assert_int_eq(cfg_set(&cs, "ws_pool_max_age", "60m", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "value 60m out of range for ws_pool_max_age (1s..59m)");
	ck_assert_int_eq(cfg_set(&cs, "ws_ping_interval", "11m", "t", err, sizeof(err)), -1);
	ck_assert_int_eq(cfg_set(&cs, "max_body_size", "512", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "value 512 out of range for max_body_size (1k..1G)");
	ck_assert_int_eq(cfg_set(&cs, "log_level", "verbose", "t", err, sizeof(err)), -1);
	ck_assert_str_eq(err, "bad value 'verbose' for log_level (use error, warn, info or debug)");
	ck_assert_int_eq(cfg_set(&cs, "log_level", "warn", "t", err, sizeof(err)), 0);
	ck_assert_str_eq(c.log_level, "warn");
	ck_assert_int_eq(cfg_set(&cs, "workers", "256", "t", err, sizeof(err)), 0);
	ck_assert_int_eq(c.workers, 256);
	cfgset_free(&cs);
}
END_TEST

Suite *
make_suite_config(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
	tcase_add_test(tc, test_config__defaults_applied);
	tcase_add_test(tc, test_config__parse_every_type);
	tcase_add_test(tc, test_config__errors_with_line_numbers);
	tcase_add_test(tc, test_config__long_line);
	tcase_add_test(tc, test_config__missing_file);
	tcase_add_test(tc, test_config__value_parsers);
	tcase_add_test(tc, test_config__format_values);
	tcase_add_test(tc, test_config__format_round_trip);
	tcase_add_test(tc, test_config__table_ranges);
	suite_add_tcase(s, tc);
	return s;
}
