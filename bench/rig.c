#include "config.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rig.h"

void
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

int
rig_ctl(struct rig *r, bool print, char **text, const char *a1, const char *a2)
{
	char *bin = tl_program("ctl/codexpoolctl"), out[800], *t;
	char *argv[] = { bin, "-s", r->ctl, (char *)a1, (char *)a2, NULL };
	int rc;

	snprintf(out, sizeof(out), "%s/ctl.out", r->dir);
	unlink(out);
	rc = tl_run(out, argv, RIG_CTL_WAIT_MS);
	free(bin);
	t = tl_read_file(out, NULL);
	if (print && t != NULL)
		fputs(t, stdout);
	if (text != NULL)
		*text = rc == 0 ? t : NULL;
	if (text == NULL || rc != 0)
		free(t);
	return rc == 0 ? 0 : -1;
}

static void
write_conf(struct rig *r, bool tls, const char *conf_extra)
{
	char conf[4096], auth[700], upstream[900];

	if (tls)
		snprintf(upstream, sizeof(upstream), "wss://localhost:%d/backend-api/codex/"
		    "responses\nupstream_ca_file = %s/ca.pem", r->sim.port, r->dir);
	else
		snprintf(upstream, sizeof(upstream), "ws://127.0.0.1:%d/backend-api/codex/"
		    "responses", r->sim.port);
	tl_sim_auth_path(&r->sim, 1, auth, sizeof(auth));
	snprintf(r->conf, sizeof(r->conf), "%s/codexpool.conf", r->dir);
	snprintf(r->ctl, sizeof(r->ctl), "%s/ctl.sock", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/daemon.log", r->dir);
	snprintf(conf, sizeof(conf),
	    "listen = 127.0.0.1:0\nupstream_url = %s\n"
	    "token_url = %s://127.0.0.1:%d/oauth/token\n"
	    "auth_file = %s\ncontrol_socket = %s\ndata_dir = %s\nlog_level = warn\n%s\n%s\n",
	    upstream, tls ? "https" : "http", r->sim.port, auth, r->ctl, r->dir,
	    conf_extra != NULL ? conf_extra : "", getenv("CODEXPOOL_BENCH_CONF") ?
	    getenv("CODEXPOOL_BENCH_CONF") : "");
	tl_write_file(r->conf, conf, strlen(conf), 0600);
}

static void
spawn_daemon(struct rig *r)
{
	char *wrap = getenv("CODEXPOOL_BENCH_WRAP"), *wcopy = NULL, *save = NULL;
	char *argv[40], *bin, *p;
	int argc = 0;

	if (wrap != NULL && *wrap != '\0') {
		wcopy = strdup(wrap);
		for (p = strtok_r(wcopy, " ", &save); p != NULL && argc < 30;
		    p = strtok_r(NULL, " ", &save))
			argv[argc++] = p;
	}
	bin = tl_program("daemon/codexpoold");
	argv[argc++] = bin;
	argv[argc++] = "-f";
	argv[argc++] = "-c";
	argv[argc++] = r->conf;
	argv[argc] = NULL;
	r->daemon = tl_spawn(r->log, argv);
	free(bin);
	free(wcopy);
}

void
rig_start(struct rig *r, const char *builddir, bool tls, const char *sim_args,
    const char *conf_extra)
{
	char simargs[2048], *text, *p;
	int64_t end;

	memset(r, 0, sizeof(*r));
	if (builddir != NULL)
		setenv("CODEXPOOL_BUILDDIR", builddir, 1);
	if ((r->dir = tl_tmpdir()) == NULL)
		die("cannot make a temp dir");
	if (tls) {
		if (tl_make_certs(r->dir) != 0)
			die("cannot make certificates");
		snprintf(simargs, sizeof(simargs), "--tls-cert %s/server.pem "
		    "--tls-key %s/server.key %s", r->dir, r->dir, sim_args);
		sim_args = simargs;
	}
	if (tl_sim_start(&r->sim, r->dir, sim_args) != 0)
		die("cannot start codexpool-sim (run from the build dir or set "
		    "CODEXPOOL_BUILDDIR)");
	write_conf(r, tls, conf_extra);
	spawn_daemon(r);
	end = tl_now_ms() + RIG_START_WAIT_MS;
	while (r->port == 0 && tl_now_ms() < end) {
		if (access(r->ctl, F_OK) == 0 &&
		    rig_ctl(r, false, &text, "status", NULL) == 0) {
			if ((p = strstr(text, "listen: 127.0.0.1:")) != NULL)
				r->port = atoi(p + strlen("listen: 127.0.0.1:"));
			free(text);
		}
		if (r->port == 0) {
			if (!tl_alive(r->daemon))
				die("codexpoold did not start; see %s", r->log);
			tl_msleep(50);
		}
	}
	if (r->port == 0)
		die("codexpoold did not answer on %s", r->ctl);
}

void
rig_stop(struct rig *r)
{
	if (r->daemon > 0)
		tl_stop(r->daemon, SIGTERM, RIG_START_WAIT_MS);
	tl_sim_stop(&r->sim);
	tl_rmrf(r->dir);
	free(r->dir);
}
