/*
 * codexpoold: the supervisor.
 *
 * Start-up order matters: config, log, event base, signals, upstream
 * (DNS), account, workers, then the client listener and the control
 * socket, so that nothing is accepted before it can be served.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "cfgkeys.h"
#include "log.h"
#include "supervisor.h"
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
	case SIGHUP:
		log_info("got SIGHUP: reload is done with 'codexpoolctl reload'");
		break;
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
	if (check_only) {
		printf("configuration ok\n");
		rc = 0;
		goto out;
	}
	log_init("codexpoold", 1, log_level_from_name(sv->cfg.log_level));
	if (sv->cfg.log_file && log_set_file(sv->cfg.log_file) == -1)
		fatal("cannot open log file %s", sv->cfg.log_file);

	/* Workers are this same binary re-executed with -W. */
	n = readlink("/proc/self/exe", sv->self_exe, sizeof(sv->self_exe) - 1);
	if (n <= 0)
		fatal("readlink /proc/self/exe");
	sv->self_exe[n] = '\0';

	sv->pool_enabled = sv->cfg.ws_pool_enabled;
	sv->started_at = now_mono_usec();
	pm_init(&sv->pool, sv->cfg.ws_pool_max_per_account);
	u64map_init(&sv->reqs);
	sv->next_rid = 1;

	sv->base = event_base_new();
	if (sv->base == NULL)
		fatalx("event_base_new failed");
	signals_setup();
	if (upstream_init() == -1)
		goto out;
	if (accounts_load() == -1)
		goto out;
	if (workers_start() == -1)
		goto out;
	if (http_start() == -1 || control_start() == -1)
		goto out;
	log_info("codexpoold %s ready: listening on %s, %d workers, pool %s",
	    PACKAGE_VERSION, sv->listen_addr, sv->nslots,
	    sv->pool_enabled ? "enabled" : "disabled");

	event_base_dispatch(sv->base);
	rc = 0;
	log_info("stopped");
out:
	if (sv->base) {
		control_stop();
		http_free();
		workers_free();
		upstream_free();
		for (i = 0; i < (int)(sizeof(sv->ev_sig) / sizeof(sv->ev_sig[0])); i++)
			if (sv->ev_sig[i])
				event_free(sv->ev_sig[i]);
		if (sv->ev_shutdown_deadline)
			event_free(sv->ev_shutdown_deadline);
		event_base_free(sv->base);
	}
	accounts_free();
	pm_free(&sv->pool);
	u64map_free(&sv->reqs);
	cfgset_free(&sv->cfgset);
	free(sv);
	return rc;
}
