/*
 * codexpoold: the supervisor.
 *
 * Start-up order matters: config, log, event base, signals, upstream
 * (DNS), account, workers, then the client listener and the control
 * socket, so that nothing is accepted before it can be served.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "apikeys.h"
#include "cfgkeys.h"
#include "log.h"
#include "metrics.h"
#include "front_ws.h"
#include "supervisor.h"
#include "turn.h"
#include "worker.h"

struct supervisor *sv;

static void
usage(void)
{
	fprintf(stderr,
	    "usage: codexpoold [-f] [-t] [-c FILE] [-d LEVEL]\n"
	    "  -f        stay in the foreground, log to stderr\n"
	    "  -t        check the configuration and exit\n"
	    "  -c FILE   configuration file (default %s)\n"
	    "  -d LEVEL  log level: error, warn, info, debug\n"
	    "  -V        print the version and exit\n",
	    CODEXPOOL_DEFAULT_CONFIG);
	exit(2);
}

static int
load_config(struct cfgset *cs, const char *path, bool explicit_path)
{
	char err[512];

	if (cfg_load_defaults(cs, err, sizeof(err)) == -1) {
		fprintf(stderr, "codexpoold: %s\n", err);
		return -1;
	}
	if (access(path, F_OK) == -1 && !explicit_path)
		return 0;	/* no file at the default path: run on defaults */
	if (cfg_load_file(cs, path, err, sizeof(err)) == -1) {
		fprintf(stderr, "codexpoold: %s\n", err);
		return -1;
	}
	return 0;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (sv->shutting_down) {
			log_info("second signal %d: stopping now", (int)sig);
			workers_shutdown(0);
			event_base_loopexit(sv->base, NULL);
			return;
		}
		log_info("got signal %d: stopping, letting turns finish (up to %llds)",
		    (int)sig, (long long)(sv->cfg.shutdown_timeout / USEC_PER_SEC));
		sv->shutting_down = true;
		http_stop_accepting();
		control_stop();
		workers_shutdown(sv->cfg.shutdown_timeout);
		break;
	case SIGCHLD:
		workers_reap();
		break;
	case SIGUSR1:
		log_set_file(sv->cfg.log_file);
		log_info("log file reopened");
		break;
	case SIGHUP: {
		char report[4096];
		log_info("got SIGHUP: re-reading %s", sv->config_path);
		if (config_reload(report, sizeof(report)) == -1)
			log_warnx("reload failed, nothing changed: %s", report);
		break;
	}
	}
}

static void
signals_setup(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGCHLD, SIGUSR1, SIGHUP };
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		sv->ev_sig[i] = evsignal_new(sv->base, sigs[i], on_signal, NULL);
		evsignal_add(sv->ev_sig[i], NULL);
	}
}

/* Refuse to start over a live daemon's pidfile; replace a stale one. */
static int
pidfile_check(const char *path)
{
	char buf[32];
	ssize_t n;
	long pid;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return errno == ENOENT ? 0 : -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	pid = strtol(buf, NULL, 10);
	if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
		log_warnx("pidfile %s names running process %ld: is codexpoold already running?",
		    path, pid);
		return -1;
	}
	log_info("removing stale pidfile %s (pid %ld is gone)", path, pid);
	unlink(path);
	return 0;
}

static int
pidfile_write(const char *path)
{
	char buf[32];
	int fd, n;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) == -1) {
		log_warn("cannot create pidfile %s", path);
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, (size_t)n) != n) {
		log_warn("cannot write pidfile %s", path);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int ready_fd = -1;

static int
daemonize(void)
{
	int fd, p[2];
	ssize_t n;
	char c;

	/* The caller's exit status says whether the daemon came up. */
	if (pipe2(p, O_CLOEXEC) == -1)
		return -1;
	switch (fork()) {
	case -1:
		return -1;
	case 0:
		close(p[0]);
		ready_fd = p[1];
		break;
	default:
		close(p[1]);
		c = 0;
		while ((n = read(p[0], &c, 1)) == -1 && errno == EINTR)
			;
		_exit(n == 1 && c == '1' ? 0 : 1);
	}
	if (setsid() == -1)
		return -1;
	switch (fork()) {	/* never reacquire a controlling terminal */
	case -1:
		return -1;
	case 0:
		break;
	default:
		_exit(0);
	}
	if (chdir("/") == -1)
		return -1;
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	return 0;
}

/*
 * The account store's directory, with any missing parents, mode 0700: a
 * fresh install need not prepare it.  An existing directory is left as the
 * operator made it.
 */
static int
data_dir_create(const char *dir)
{
	char path[4096], *p;
	struct stat st;

	if (dir[0] == '\0') {
		log_warnx("data_dir is empty");
		return -1;
	}
	if (stat(dir, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		log_warnx("data_dir %s is not a directory", dir);
		return -1;
	}
	if (strlen(dir) >= sizeof(path)) {
		log_warnx("data_dir path is too long: %s", dir);
		return -1;
	}
	strlcpy_safe(path, dir, sizeof(path));
	for (p = path + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			log_warn("cannot create data_dir %s", path);
			return -1;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	log_info("created data_dir %s (mode 0700)", dir);
	return 0;
}

/* Once the sockets are bound, a root daemon becomes the configured user. */
static int
drop_privileges(const char *user)
{
	struct passwd *pw;

	if (user == NULL || geteuid() != 0)
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		log_warnx("user '%s' does not exist", user);
		return -1;
	}
	if (sv->cfg.control_socket && chown(sv->cfg.control_socket, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s", sv->cfg.control_socket);
	if (setgroups(1, &pw->pw_gid) == -1 || setgid(pw->pw_gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		log_warn("cannot become user %s", user);
		return -1;
	}
	log_info("running as user %s", user);
	return 0;
}

/*
 * Each client needs a socket, each worker a channel and one per pooled
 * connection, each turn a little more: take the whole hard limit (the
 * workers inherit it) and say so, so an operator sees what a restart
 * with a higher LimitNOFILE would buy.
 */
static void
check_fd_limit(void)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)sv->cfg.max_clients * 2 + 64, was;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	was = rl.rlim_cur;
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
			log_warn("cannot raise RLIMIT_NOFILE from %llu to %llu",
			    (unsigned long long)was, (unsigned long long)rl.rlim_max);
			rl.rlim_cur = was;
		}
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		log_info("RLIMIT_NOFILE: unlimited");
	else
		log_info("RLIMIT_NOFILE: %llu (soft was %llu, hard %llu)",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)was,
		    (unsigned long long)rl.rlim_max);
	if (rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < need)
		log_warnx("RLIMIT_NOFILE is %llu but max_clients=%d needs about %llu: "
		    "raise it (ulimit -n, LimitNOFILE=) or lower max_clients",
		    (unsigned long long)rl.rlim_cur, sv->cfg.max_clients,
		    (unsigned long long)need);
}

static int
run_worker(int argc, char **argv, int slot)
{
	int ch, foreground = 0, level = LOG_LVL_INFO;
	char name[32];

	optind = 1;
	while ((ch = getopt(argc, argv, "W:fd:")) != -1) {
		if (ch == 'f')
			foreground = 1;
		else if (ch == 'd' && log_level_from_name(optarg) >= 0)
			level = log_level_from_name(optarg);
	}
	snprintf(name, sizeof(name), "worker %d", slot);
	log_init(name, foreground, level);
	return worker_main(slot, 3);
}

int
main(int argc, char **argv)
{
	const char *config_path = CODEXPOOL_DEFAULT_CONFIG;
	const char *level_override = NULL;
	bool explicit_path = false, check_only = false, foreground = false;
	bool wrote_pidfile = false;
	int ch, i, rc = 1;
	ssize_t n;

	for (i = 1; i < argc - 1; i++)	/* worker mode: re-executed by the supervisor */
		if (strcmp(argv[i], "-W") == 0)
			return run_worker(argc, argv, atoi(argv[i + 1]));

	while ((ch = getopt(argc, argv, "fc:td:Vh")) != -1) {
		switch (ch) {
		case 'f':
			foreground = true;
			break;
		case 'c':
			config_path = optarg;
			explicit_path = true;
			break;
		case 't':
			check_only = true;
			break;
		case 'd':
			if (log_level_from_name(optarg) < 0)
				usage();
			level_override = optarg;
			break;
		case 'V':
			printf("codexpoold %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	sv = xcalloc(1, sizeof(*sv));
	sv->config_path = config_path;
	sv->foreground = foreground;
	sv->control_fd = -1;
	cfgset_init(&sv->cfgset, codexpool_cfg_keys, &sv->cfg);
	if (load_config(&sv->cfgset, config_path, explicit_path) == -1)
		goto out;
	if (level_override)
		cfg_set(&sv->cfgset, "log_level", level_override, "command line", NULL, 0);
	if (log_level_from_name(sv->cfg.log_level) < 0) {
		fprintf(stderr, "codexpoold: log_level must be error, warn, info or debug\n");
		goto out;
	}
	{
		char merr[256];
		if (model_map_check(sv->cfg.model_map, merr, sizeof(merr)) == -1) {
			fprintf(stderr, "codexpoold: model_map: %s\n", merr);
			goto out;
		}
	}
	if (check_only) {
		printf("configuration ok\n");
		rc = 0;
		goto out;
	}
	log_init("codexpoold", 1, log_level_from_name(sv->cfg.log_level));
	if (sv->cfg.pidfile && pidfile_check(sv->cfg.pidfile) == -1)
		goto out;
	if (!foreground) {
		if (daemonize() == -1)
			fatal("cannot daemonize");
		log_init("codexpoold", 0, log_level_from_name(sv->cfg.log_level));
	}
	if (sv->cfg.log_file && log_set_file(sv->cfg.log_file) == -1)
		fatal("cannot open log file %s", sv->cfg.log_file);
	if (sv->cfg.pidfile) {
		if (pidfile_write(sv->cfg.pidfile) == -1)
			goto out;
		wrote_pidfile = true;
	}
	check_fd_limit();

	/* Workers are this same binary re-executed with -W. */
	n = readlink("/proc/self/exe", sv->self_exe, sizeof(sv->self_exe) - 1);
	if (n <= 0)
		fatal("readlink /proc/self/exe");
	sv->self_exe[n] = '\0';

	sv->pool_enabled = sv->cfg.ws_pool_enabled;
	sv->started_at = now_mono_usec();
	pm_init(&sv->pool, sv->cfg.ws_pool_max_per_account);
	pm_set_max_age(&sv->pool, sv->cfg.ws_pool_max_age);
	idmap_init(&sv->reqs);
	usage_window_reset(&sv->recent);
	convlog_init(&sv->convs);
	turn_init();
	ws_init();
	accounts_set_listener(turn_on_account_event);
	sv->next_rid = 1;

	sv->base = event_base_new();
	if (sv->base == NULL)
		fatalx("event_base_new failed");
	signals_setup();
	if (upstream_init() == -1)
		goto out;
	if (data_dir_create(sv->cfg.data_dir) == -1 || accounts_load() == -1 ||
	    apikeys_load() == -1)
		goto out;
	{
		char why[1024];
		if (apikeys_check_listen(sv->cfg.listen, sv->cfg.allow_anonymous, why,
		    sizeof(why)) == -1) {
			log_warnx("refusing to start: %s", why);
			goto out;
		}
	}
	/* The store is open and the sockets bound while root; then drop
	 * to the user, and the workers start as the user. */
	if (http_start() == -1 || metrics_listen_start() == -1 || control_start() == -1)
		goto out;
	if (drop_privileges(sv->cfg.user) == -1)
		goto out;
	if (workers_start() == -1)
		goto out;
	turn_janitor_start();
	log_info("codexpoold %s ready: listening on %s, %d workers, pool %s",
	    PACKAGE_VERSION, sv->listen_addr, sv->nslots,
	    sv->pool_enabled ? "enabled" : "disabled");

	if (ready_fd != -1) {
		if (write(ready_fd, "1", 1) != 1)
			log_warn("cannot tell the starter we are ready");
		close(ready_fd);
		ready_fd = -1;
	}
	event_base_dispatch(sv->base);
	rc = 0;
	log_info("stopped");
out:
	if (sv->base) {
		control_stop();
		turn_janitor_stop();
		workers_free();
		ws_free_all();
		turn_free_all();
		http_free();
		metrics_listen_free();
		accounts_free();	/* before the DNS base: a refresh may use it */
		apikeys_free();		/* after the final usage flush */
		upstream_free();
		for (i = 0; i < (int)(sizeof(sv->ev_sig) / sizeof(sv->ev_sig[0])); i++)
			if (sv->ev_sig[i])
				event_free(sv->ev_sig[i]);
		if (sv->ev_shutdown_deadline)
			event_free(sv->ev_shutdown_deadline);
		event_base_free(sv->base);
	}
	pm_free(&sv->pool);
	idmap_free(&sv->reqs);
	convlog_free(&sv->convs);
	model_map_free();
	if (wrote_pidfile)
		unlink(sv->cfg.pidfile);
	cfgset_free(&sv->cfgset);
	free(sv);
	return rc;
}
