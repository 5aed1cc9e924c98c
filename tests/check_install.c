/*
 * check_install: the README's "Using it", end to end.
 *
 * configure --prefix=<private dir>, make, make install; point the
 * installed sample configuration at a codexpool-sim (listen, upstream,
 * auth_file: nothing else changes); start the daemon through the installed
 * init script; one turn over HTTP; the installed codexpoolctl; stop; the
 * LSB exit codes of every action, a failed start included; the installed
 * logrotate snippet; make uninstall keeps the edited configuration.
 *
 * The build is the package's own (no sanitizers, -O0 for speed): this
 * tests the install, not the code, which the other runners cover.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define BUILD_TIMEOUT_MS	(20 * 60 * 1000)
#define WAIT_MS			30000

static char *dir;		/* the private directory of the test */
static char prefix[600];	/* dir/prefix: --prefix */

static char *
xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	ck_assert_int_ge(vasprintf(&s, fmt, ap), 0);
	va_end(ap);
	return s;
}


/* sh -c cmd, output appended to dir/<logname>; its exit status. */
static int
sh(const char *logname, int timeout_ms, const char *cmd)
{
	char *log = xasprintf("%s/%s", dir, logname);
	char *const argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	int rc = tl_run(log, argv, timeout_ms);

	free(log);
	return rc;
}

/* The installed init script with one action; output in dir/initd.out. */
static int
initd(const char *action)
{
	char *cmd = xasprintf("echo '$ init.d/codexpoold %s'; %s/etc/init.d/codexpoold %s; "
	    "rc=$?; echo \"exit $rc\"; exit $rc", action, prefix, action);
	int rc = sh("initd.out", 120000, cmd);

	free(cmd);
	return rc;
}

static pid_t
read_pid(const char *path)
{
	char *text = tl_read_file(path, NULL);
	pid_t pid = text ? (pid_t)atol(text) : 0;

	free(text);
	return pid;
}

/* Is pid a codexpoold installed under our prefix? */
static int
is_ours(pid_t pid)
{
	char link[64], exe[1024];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	if ((n = readlink(link, exe, sizeof(exe) - 1)) <= 0)
		return 0;
	exe[n] = '\0';
	return strncmp(exe, prefix, strlen(prefix)) == 0;
}

/* The line of text starting with start becomes repl (start must be there). */
static char *
replace_line(char *text, const char *start, const char *repl)
{
	char *p = text, *eol, *out;

	for (;;) {
		if (strncmp(p, start, strlen(start)) == 0)
			break;
		p = strchr(p, '\n');
		ck_assert_msg(p != NULL, "no line '%s' in the installed config", start);
		p++;
	}
	eol = strchr(p, '\n');
	out = xasprintf("%.*s%s%s", (int)(p - text), text, repl, eol ? eol : "\n");
	free(text);
	return out;
}

static void
setup(void)
{
	dir = tl_tmpdir();
	ck_assert_ptr_nonnull(dir);
	snprintf(prefix, sizeof(prefix), "%s/prefix", dir);
}

/* Whatever happened, no daemon of ours is left running. */
static void
teardown(void)
{
	char path[800];
	pid_t pid;
	int i;

	if (dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/var/run/codexpool/codexpoold.pid", prefix);
	pid = read_pid(path);
	if (pid > 0 && is_ours(pid)) {
		fprintf(stderr, "check_install: stopping leftover codexpoold %d\n", (int)pid);
		kill(pid, SIGTERM);
		for (i = 0; i < 200 && is_ours(pid); i++)
			tl_msleep(50);
		if (is_ours(pid))
			kill(pid, SIGKILL);
	}
	if (getenv("INSTALL_KEEP") == NULL)
		tl_rmrf(dir);
	else
		fprintf(stderr, "check_install: kept %s\n", dir);
	free(dir);
	dir = NULL;
}

START_TEST(test_install__readme)
{
	struct tl_sim sim;
	struct tl_response resp;
	struct stat st;
	char auth[700], line[800], *conf, *datadir, *pidfile, *text, *cmd, *log;
	int rc, port, st_exit = -1;
	pid_t pid;
	int64_t end;

	if (access(tl_srcdir(), F_OK) == 0) {
		char *cs = xasprintf("%s/config.status", tl_srcdir());
		int inplace = access(cs, F_OK) == 0;
		free(cs);
		if (inplace) {
			fprintf(stderr, "check_install: skipped: the source tree is configured in "
			    "place, so it cannot be configured again in a private build dir "
			    "(build in a separate dir, as tests/run does)\n");
			return;
		}
	}
	/* the daemon detaches: make it our child again to see it exit */
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	/* a make inside make check must not talk to the outer jobserver */
	unsetenv("MAKEFLAGS");
	unsetenv("MFLAGS");
	unsetenv("MAKELEVEL");

	/*
	 * ./configure && make && make install, into the private prefix; one
	 * compiler at a time, since the rest of the suite runs meanwhile
	 */
	cmd = xasprintf("set -e; mkdir -p '%s/build'; cd '%s/build'; "
	    "'%s/configure' --prefix='%s' CFLAGS=-O0 >configure.out; "
	    "make >make.out 2>&1; make install >install.out 2>&1",
	    dir, dir, tl_srcdir(), prefix);
	rc = sh("build.out", BUILD_TIMEOUT_MS, cmd);
	free(cmd);
	ck_assert_msg(rc == 0, "configure/make/make install exited %d; see %s/build/*.out",
	    rc, dir);

	/* make install made the state and run directories */
	datadir = xasprintf("%s/var/lib/codexpool", prefix);
	ck_assert_int_eq(stat(datadir, &st), 0);
	ck_assert_msg(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700,
	    "%s has mode %o", datadir, (unsigned)(st.st_mode & 0777));
	snprintf(line, sizeof(line), "%s/var/run/codexpool", prefix);
	ck_assert_int_eq(stat(line, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	/* the daemon makes a missing data_dir itself (and its parents) */
	snprintf(line, sizeof(line), "%s/var/lib", prefix);
	ck_assert_int_eq(rmdir(datadir), 0);
	ck_assert_int_eq(rmdir(line), 0);

	/* the sample config names its pidfile; set auth_file, and point it at the simulator */
	conf = xasprintf("%s/etc/codexpool/codexpool.conf", prefix);
	pidfile = xasprintf("%s/var/run/codexpool/codexpoold.pid", prefix);
	text = tl_read_file(conf, NULL);
	ck_assert_ptr_nonnull(text);
	snprintf(line, sizeof(line), "\npidfile = %s\n", pidfile);
	ck_assert_msg(strstr(text, line) != NULL, "the installed config has no '%s'", line + 1);
	ck_assert_int_eq(tl_sim_start(&sim, dir, NULL), 0);
	tl_sim_auth_path(&sim, 1, auth, sizeof(auth));
	port = tl_free_port();
	ck_assert_int_gt(port, 0);
	snprintf(line, sizeof(line), "auth_file = %s", auth);
	text = replace_line(text, "#auth_file = ", line);
	snprintf(line, sizeof(line), "listen = 127.0.0.1:%d", port);
	text = replace_line(text, "listen = ", line);
	snprintf(line, sizeof(line), "upstream_url = ws://127.0.0.1:%d/backend-api/codex/responses\n"
	    "token_url = http://127.0.0.1:%d/oauth/token", sim.port, sim.port);
	text = replace_line(text, "upstream_url = ", line);
	/* the sample's log_file, uncommented: where the logrotate snippet looks */
	log = xasprintf("%s/var/log/codexpool/codexpoold.log", prefix);
	snprintf(line, sizeof(line), "#log_file = %s\n", log);
	ck_assert_msg(strstr(text, line) != NULL, "the installed config has no '%s'", line);
	snprintf(line, sizeof(line), "log_file = %s", log);
	text = replace_line(text, "#log_file = ", line);
	ck_assert_int_eq(tl_write_file(conf, text, strlen(text), 0644), 0);
	free(text);

	/* before start: not running (3), reload has nothing to reload (7) */
	rc = initd("status");
	ck_assert_msg(rc == 3, "status before start exited %d; see %s/initd.out", rc, dir);
	rc = initd("reload");
	ck_assert_msg(rc == 7, "reload before start exited %d; see %s/initd.out", rc, dir);

	rc = initd("start");
	ck_assert_msg(rc == 0, "start exited %d; see %s/initd.out and %s", rc, dir, log);
	pid = read_pid(pidfile);
	ck_assert_msg(pid > 0 && is_ours(pid), "no codexpoold of ours in %s", pidfile);
	ck_assert_int_eq(stat(datadir, &st), 0);
	ck_assert_msg(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700,
	    "the daemon made %s with mode %o", datadir, (unsigned)(st.st_mode & 0777));
	ck_assert_int_eq(tl_file_contains(log, "created data_dir"), 1);
	rc = initd("status");
	ck_assert_msg(rc == 0, "status exited %d; see %s/initd.out", rc, dir);
	/* start again: already running is success, and the same daemon */
	rc = initd("start");
	ck_assert_msg(rc == 0, "a second start exited %d; see %s/initd.out", rc, dir);
	ck_assert_int_eq(read_pid(pidfile), pid);

	/* the README's curl */
	{
		static const char body[] =
		    "{\"model\":\"gpt-5.4\",\"input\":\"hello\",\"prompt_cache_key\":\"my-conversation\"}";
		json_object *o, *status;

		ck_assert_int_eq(tl_http("127.0.0.1", port, "POST", "/v1/responses",
		    "content-type: application/json\r\n", body, strlen(body), &resp), 0);
		ck_assert_msg(resp.status == 200, "turn: HTTP %d: %.300s", resp.status, resp.body);
		o = tl_response_json(&resp);
		ck_assert_ptr_nonnull(o);
		ck_assert(json_object_object_get_ex(o, "status", &status));
		ck_assert_str_eq(json_object_get_string(status), "completed");
		json_object_put(o);
		tl_response_free(&resp);
	}
	/* the README's codexpoolctl status: the installed default config finds the socket */
	cmd = xasprintf("'%s/sbin/codexpoolctl' status", prefix);
	rc = sh("ctl.out", WAIT_MS, cmd);
	free(cmd);
	ck_assert_msg(rc == 0, "codexpoolctl status exited %d; see %s/ctl.out", rc, dir);
	snprintf(line, sizeof(line), "%s/ctl.out", dir);
	ck_assert_int_eq(tl_file_contains(line, "requests_total"), 1);

	rc = initd("reload");
	ck_assert_msg(rc == 0, "reload exited %d; see %s/initd.out", rc, dir);
	ck_assert_int_eq(tl_wait_file_contains(log, "got SIGHUP", WAIT_MS), 0);

	/* the installed logrotate snippet: the old log moves, the daemon reopens */
	if (access("/usr/sbin/logrotate", X_OK) == 0) {
		char rotated[800];
		cmd = xasprintf("/usr/sbin/logrotate -v -f -s '%s/logrotate.state' "
		    "'%s/etc/logrotate.d/codexpool'", dir, prefix);
		rc = sh("logrotate.out", WAIT_MS, cmd);
		free(cmd);
		ck_assert_msg(rc == 0, "logrotate exited %d; see %s/logrotate.out", rc, dir);
		snprintf(rotated, sizeof(rotated), "%s.1", log);
		ck_assert_msg(tl_file_contains(rotated, "got SIGHUP") == 1,
		    "%s is not the rotated log; see %s/logrotate.out", rotated, dir);
		ck_assert_msg(tl_wait_file_contains(log, "log file reopened", WAIT_MS) == 0,
		    "the daemon did not reopen %s after logrotate", log);
	} else {
		fprintf(stderr, "check_install: logrotate is not installed: "
		    "the logrotate snippet is not tested\n");
	}

	/* stop: 0, the process is gone (exit 0), status 3; stop again is still 0 */
	rc = initd("stop");
	ck_assert_msg(rc == 0, "stop exited %d; see %s/initd.out", rc, dir);
	end = tl_now_ms() + WAIT_MS;
	while (tl_now_ms() < end) {
		int wst;
		if (waitpid(pid, &wst, WNOHANG) == pid) {
			st_exit = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
			break;
		}
		tl_msleep(20);
	}
	ck_assert_msg(st_exit == 0, "codexpoold %d after stop: exit %d (-1: still there)",
	    (int)pid, st_exit);
	ck_assert_int_eq(kill(pid, 0), -1);
	ck_assert_msg(access(pidfile, F_OK) == -1, "pidfile %s left behind", pidfile);
	rc = initd("status");
	ck_assert_msg(rc == 3, "status after stop exited %d; see %s/initd.out", rc, dir);
	rc = initd("stop");
	ck_assert_msg(rc == 0, "stop when stopped exited %d; see %s/initd.out", rc, dir);

	/* a failed start is reported: a daemon that cannot come up (no auth_file) ... */
	text = tl_read_file(conf, NULL);
	snprintf(line, sizeof(line), "auth_file = %s/no-such-auth.json", dir);
	text = replace_line(text, "auth_file = ", line);
	ck_assert_int_eq(tl_write_file(conf, text, strlen(text), 0644), 0);
	rc = initd("start");
	ck_assert_msg(rc == 1, "start without its auth_file exited %d; see %s/initd.out", rc, dir);
	rc = initd("status");
	ck_assert_msg(rc == 3, "status after a failed start exited %d", rc);
	/* ... and a configuration that does not parse */
	text = replace_line(text, "listen = ", "listen = not-an-address");
	ck_assert_int_eq(tl_write_file(conf, text, strlen(text), 0644), 0);
	free(text);
	rc = initd("start");
	ck_assert_msg(rc == 6, "start with a bad config exited %d; see %s/initd.out", rc, dir);
	rc = initd("restart");
	ck_assert_msg(rc == 6, "restart with a bad config exited %d; see %s/initd.out", rc, dir);
	rc = initd("frobnicate");
	ck_assert_int_eq(rc, 2);

	/* make uninstall removes the programs, keeps the edited configuration */
	cmd = xasprintf("cd '%s/build' && make uninstall", dir);
	rc = sh("uninstall.out", WAIT_MS * 4, cmd);
	free(cmd);
	ck_assert_msg(rc == 0, "make uninstall exited %d; see %s/uninstall.out", rc, dir);
	snprintf(line, sizeof(line), "%s/sbin/codexpoold", prefix);
	ck_assert_int_eq(access(line, F_OK), -1);
	ck_assert_int_eq(access(conf, F_OK), 0);
	rc = initd("status");
	ck_assert_msg(rc == 127 || rc == 4, "status of an uninstalled daemon exited %d", rc);

	ck_assert_int_eq(tl_sim_stop(&sim), 0);
	free(conf);
	free(pidfile);
	free(datadir);
	free(log);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("install");
	TCase *tc = tcase_create("readme");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, BUILD_TIMEOUT_MS / 1000 + 300);
	tcase_add_test(tc, test_install__readme);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	setvbuf(stdout, NULL, _IONBF, 0);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tl_kill_all();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
