/*
 * codexpool-sim: options, the libwebsockets context and the service loop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "lws_glue.h"
#include "procs.h"

struct sim		*g_sim;
struct lws_context	*g_ctx;

static volatile sig_atomic_t stop_requested;

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
"usage: codexpool-sim [--listen ADDR:PORT] [--port-file FILE]\n"
"                     [--tls-cert PEM --tls-key PEM] [--backends N] [--seed N]\n"
"                     [--accounts N] [--auth-dir DIR] [--token-ttl SECS]\n"
"                     [--max-conn-age SECS] [--deltas K] [--delta-delay-ms MS]\n"
"                     [--first-event-ms MS]\n"
"                     [--fault KIND] [--max-message BYTES] [--max-body BYTES]\n"
"                     [--cache-entries N] [--reply-bytes N] [--procs N] [-v] [-h]\n"
"\n"
"--procs N (default 1) serves from N processes that share the listening\n"
"port (SO_REUSEPORT); each is one gateway instance with its own backends,\n"
"caches, connections, counters and fault queue, so GET /sim/state, POST\n"
"/sim/fault and POST /sim/reset reach only the process that accepts that\n"
"request, and a refresh token rotated by one is unknown to the others.\n"
"See sim/README.\n");
	exit(status);
}

static long long
num_arg(const char *opt, const char *s, long long min, long long max)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "codexpool-sim: %s: expected a number from %lld to %lld, "
		    "got '%s'\n", opt, min, max, s);
		exit(2);
	}
	return v;
}

static void
parse_args(int argc, char **argv, struct sim_opts *o)
{
	enum {
		OPT_LISTEN = 256, OPT_PORT_FILE, OPT_TLS_CERT, OPT_TLS_KEY,
		OPT_BACKENDS, OPT_SEED, OPT_ACCOUNTS, OPT_AUTH_DIR, OPT_TOKEN_TTL,
		OPT_MAX_CONN_AGE, OPT_DELTAS, OPT_DELTA_DELAY, OPT_FAULT,
		OPT_MAX_MESSAGE, OPT_MAX_BODY, OPT_CACHE_ENTRIES, OPT_REPLY_BYTES,
		OPT_FIRST_EVENT, OPT_PROCS,
	};
	static const struct option longopts[] = {
		{ "listen",		required_argument, NULL, OPT_LISTEN },
		{ "port-file",		required_argument, NULL, OPT_PORT_FILE },
		{ "tls-cert",		required_argument, NULL, OPT_TLS_CERT },
		{ "tls-key",		required_argument, NULL, OPT_TLS_KEY },
		{ "backends",		required_argument, NULL, OPT_BACKENDS },
		{ "seed",		required_argument, NULL, OPT_SEED },
		{ "accounts",		required_argument, NULL, OPT_ACCOUNTS },
		{ "auth-dir",		required_argument, NULL, OPT_AUTH_DIR },
		{ "token-ttl",		required_argument, NULL, OPT_TOKEN_TTL },
		{ "max-conn-age",	required_argument, NULL, OPT_MAX_CONN_AGE },
		{ "deltas",		required_argument, NULL, OPT_DELTAS },
		{ "delta-delay-ms",	required_argument, NULL, OPT_DELTA_DELAY },
		{ "first-event-ms",	required_argument, NULL, OPT_FIRST_EVENT },
		{ "fault",		required_argument, NULL, OPT_FAULT },
		{ "max-message",	required_argument, NULL, OPT_MAX_MESSAGE },
		{ "max-body",		required_argument, NULL, OPT_MAX_BODY },
		{ "cache-entries",	required_argument, NULL, OPT_CACHE_ENTRIES },
		{ "reply-bytes",	required_argument, NULL, OPT_REPLY_BYTES },
		{ "procs",		required_argument, NULL, OPT_PROCS },
		{ "verbose",		no_argument,	   NULL, 'v' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_LISTEN:
			if (parse_hostport(optarg, o->listen_host,
			    sizeof(o->listen_host), &o->listen_port) != 0 ||
			    o->listen_port < 0 || o->listen_port > 65535) {
				fprintf(stderr, "codexpool-sim: --listen: expected "
				    "ADDR:PORT, got '%s'\n", optarg);
				exit(2);
			}
			break;
		case OPT_PORT_FILE:
			o->port_file = optarg;
			break;
		case OPT_TLS_CERT:
			o->tls_cert = optarg;
			break;
		case OPT_TLS_KEY:
			o->tls_key = optarg;
			break;
		case OPT_BACKENDS:
			o->backends = (int)num_arg("--backends", optarg, 1,
			    SIM_MAX_BACKENDS);
			break;
		case OPT_SEED:
			o->seed = (uint64_t)num_arg("--seed", optarg, 0, LLONG_MAX);
			o->have_seed = 1;
			break;
		case OPT_ACCOUNTS:
			o->accounts = (int)num_arg("--accounts", optarg, 0,
			    SIM_ACCOUNTS_MAX);
			break;
		case OPT_AUTH_DIR:
			o->auth_dir = optarg;
			break;
		case OPT_TOKEN_TTL:
			o->token_ttl = (long)num_arg("--token-ttl", optarg, 1,
			    10L * 365 * 86400);
			break;
		case OPT_MAX_CONN_AGE:
			o->max_conn_age = (long)num_arg("--max-conn-age", optarg, 0,
			    10L * 365 * 86400);
			break;
		case OPT_DELTAS:
			o->deltas = (int)num_arg("--deltas", optarg, 1, SIM_MAX_DELTAS);
			break;
		case OPT_DELTA_DELAY:
			o->delta_delay_ms = (int)num_arg("--delta-delay-ms", optarg, 0,
			    SIM_MAX_DELAY_MS);
			break;
		case OPT_FIRST_EVENT:
			o->first_event_ms = (int)num_arg("--first-event-ms", optarg, 0,
			    SIM_MAX_DELAY_MS);
			break;
		case OPT_FAULT:
			if (fault_parse(optarg, &o->fault) < 0) {
				fprintf(stderr, "codexpool-sim: --fault: unknown fault "
				    "'%s'\n", optarg);
				exit(2);
			}
			break;
		case OPT_MAX_MESSAGE:
			o->max_message = (size_t)num_arg("--max-message", optarg, 1024,
			    1LL << 30);
			break;
		case OPT_MAX_BODY:
			o->max_body = (size_t)num_arg("--max-body", optarg, 1024,
			    1LL << 30);
			break;
		case OPT_CACHE_ENTRIES:
			o->cache_entries = (size_t)num_arg("--cache-entries", optarg, 1,
			    1LL << 28);
			break;
		case OPT_REPLY_BYTES:
			o->reply_bytes = (size_t)num_arg("--reply-bytes", optarg, 0,
			    64LL << 20);
			break;
		case OPT_PROCS:
			o->procs = (int)num_arg("--procs", optarg, 1, SIM_MAX_PROCS);
			break;
		case 'v':
			o->verbose++;
			break;
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "codexpool-sim: unexpected argument '%s'\n", argv[optind]);
		usage(2);
	}
	if ((o->tls_cert == NULL) != (o->tls_key == NULL)) {
		fprintf(stderr, "codexpool-sim: --tls-cert and --tls-key go together\n");
		exit(2);
	}
	if (o->auth_dir != NULL && o->accounts == 0) {
		fprintf(stderr, "codexpool-sim: --auth-dir needs --accounts N\n");
		exit(2);
	}
}

static void
on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
	if (g_ctx != NULL)
		lws_cancel_service(g_ctx);
}

static void
lws_log_emit(int level, const char *line)
{
	char buf[1024];
	size_t n;

	snprintf(buf, sizeof(buf), "lws: %s", line);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (level & LLL_ERR)
		log_warnx("%s", buf);
	else
		log_info("%s", buf);
}

static int
write_port_file(const char *path, int port)
{
	char tmp[PATH_MAX], line[16];
	int fd, len;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -1;
	len = snprintf(line, sizeof(line), "%d\n", port);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, line, (size_t)len) != len || close(fd) < 0) {
		unlink(tmp);
		return -1;
	}
	return rename(tmp, path);
}

static int
sim_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct sim_pss *pss = user;

	/* The upgrade check runs before lws binds the user space. */
	if (reason == LWS_CALLBACK_HTTP_CONFIRM_UPGRADE)
		return ws_confirm_upgrade(wsi, pss, in);
	/* lws reports some events (a failed TLS accept, for one) on a wsi
	 * that never got its user space: nothing of ours is attached. */
	if (pss == NULL)
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
	case LWS_CALLBACK_RECEIVE:
	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_CLOSED:
		return ws_callback(wsi, reason, pss, in, len);
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_HTTP_BODY:
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		return http_callback(wsi, reason, pss, in, len);
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

static const struct lws_protocols protocols[] = {
	/* One protocol for everything: the Codex CLI asks for no WebSocket
	 * subprotocol, so its upgrade lands on protocol 0 with the HTTP. */
	{ "codexpool-sim", sim_callback, sizeof(struct sim_pss), 65536, 0, NULL, 0 },
	/* --procs N: this process's listening socket, watched as a raw fd. */
	{ SIM_LISTEN_PROTOCOL, procs_listen_callback, 0, 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void
install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

static void
log_listening(const struct sim_opts *o, int port)
{
	log_info("listening on %s:%d (%s), procs=%d backends=%d accounts=%d "
	    "token_ttl=%ld max_conn_age=%ld deltas=%d delta_delay_ms=%d "
	    "first_event_ms=%d", o->listen_host[0] ? o->listen_host : "*", port,
	    o->tls_cert ? "tls" : "plain", o->procs > 1 ? o->procs : 1,
	    o->backends, o->accounts, o->token_ttl, o->max_conn_age, o->deltas,
	    o->delta_delay_ms, o->first_event_ms);
}

/*
 * One service process: its lws context and loop.  listen_fd < 0: lws
 * listens itself (--procs 1) and the port file is written here; else the
 * context adopts this process's listening socket of --procs N.
 */
static int
serve(const struct sim_opts *opts, int listen_fd)
{
	struct lws_context_creation_info info;
	struct lws_vhost *vh;
	int n = 0, port, rc = 0;

	memset(&info, 0, sizeof(info));
	info.port = listen_fd < 0 ? opts->listen_port : CONTEXT_PORT_NO_LISTEN_SERVER;
	info.iface = opts->listen_host[0] ? opts->listen_host : NULL;
	info.protocols = protocols;
	info.max_http_header_data = 16384;
	/* Read HTTP request bodies (full histories) in 64 KiB pieces, not
	 * 4 KiB ones: fewer service loops before a direct answer starts. */
	info.pt_serv_buf_size = 65536;
	info.timeout_secs = 30;
	if (opts->listen_host[0] != '\0' && strchr(opts->listen_host, ':') == NULL)
		info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	if (opts->tls_cert != NULL) {
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = opts->tls_cert;
		info.ssl_private_key_filepath = opts->tls_key;
		/* HTTP/1.1 only: the Responses WebSocket is an HTTP/1.1 upgrade. */
		info.alpn = "http/1.1";
	}

	g_ctx = lws_create_context(&info);
	if (g_ctx == NULL) {
		log_error("cannot listen on %s:%d%s", opts->listen_host,
		    opts->listen_port,
		    opts->tls_cert ? " (check the TLS certificate and key)" : "");
		sim_free(g_sim);
		/* libwebsockets 4.1.6 leaks a little when context creation
		 * fails; _exit keeps LeakSanitizer from blaming us for it. */
		fflush(NULL);
		_exit(1);
	}
	vh = lws_get_vhost_by_name(g_ctx, "default");
	if (listen_fd >= 0) {
		if (vh == NULL || procs_adopt_listener(vh, listen_fd) != 0) {
			log_error("cannot watch the listening socket");
			rc = 1;
			goto out;
		}
	} else {
		port = vh ? lws_get_vhost_listen_port(vh) : -1;
		if (port <= 0) {
			log_error("cannot find the listening port");
			rc = 1;
			goto out;
		}
		if (opts->port_file != NULL &&
		    write_port_file(opts->port_file, port) < 0) {
			log_warn("cannot write port file %s", opts->port_file);
			rc = 1;
			goto out;
		}
		log_listening(opts, port);
	}

	while (n >= 0 && !stop_requested)
		n = lws_service(g_ctx, 0);
	log_info("shutting down");
out:
	lws_context_destroy(g_ctx);
	g_ctx = NULL;
	ws_shutdown();
	http_shutdown();
	return rc;
}

/* A --procs child: its own identity, then the same service loop. */
static int
serve_child(int index, void *arg)
{
	const struct sim_opts *opts = &g_sim->o;
	static char name[32];
	int *fds = arg, i, rc;

	snprintf(name, sizeof(name), "codexpool-sim[%d]", index);
	log_set_procname(name);
	/* Response ids stay unique across the children; a seed stays
	 * reproducible per child. */
	sim_random_bytes(&g_sim->run_id, sizeof(g_sim->run_id));
	if (opts->have_seed)
		g_sim->rng = opts->seed + (uint64_t)index * 0x9e3779b97f4a7c15ULL;
	else
		sim_random_bytes(&g_sim->rng, sizeof(g_sim->rng));
	/* Only this child's socket of the group: the kernel hands a
	 * connection to one socket, and it must be one we watch. */
	for (i = 0; i < opts->procs; i++)
		if (i != index)
			close(fds[i]);
	install_signals();
	rc = serve(opts, fds[index]);
	sim_free(g_sim);
	g_sim = NULL;
	return rc;
}

int
main(int argc, char **argv)
{
	struct sim_opts opts;
	static struct sim sim;
	char err[256];
	int rc, i, port, listen_fds[SIM_MAX_PROCS];

	sim_opts_defaults(&opts);
	parse_args(argc, argv, &opts);
	log_init("codexpool-sim", 1, opts.verbose ? LOG_LVL_DEBUG : LOG_LVL_INFO);

	if (sim_init(&sim, &opts, err, sizeof(err)) < 0) {
		log_error("%s", err);
		sim_free(&sim);
		return 1;
	}
	g_sim = &sim;
	if (opts.auth_dir != NULL &&
	    sim_auth_write_files(&sim.auth, opts.auth_dir, err, sizeof(err)) < 0) {
		log_error("cannot write auth files: %s", err);
		sim_free(&sim);
		return 1;
	}

	lws_set_log_level(opts.verbose > 1 ? (LLL_ERR | LLL_WARN | LLL_NOTICE) :
	    (LLL_ERR | LLL_WARN), lws_log_emit);

	if (opts.tls_cert != NULL && (access(opts.tls_cert, R_OK) < 0 ||
	    access(opts.tls_key, R_OK) < 0)) {
		log_warn("cannot read %s or %s", opts.tls_cert, opts.tls_key);
		sim_free(&sim);
		return 1;
	}
	if (opts.procs <= 1) {
		install_signals();
		rc = serve(&opts, -1);
		g_sim = NULL;
		sim_free(&sim);
		return rc;
	}

	/* --procs N: the parent listens, writes the port file, then only
	 * supervises; the accounts and their signing key are shared. */
	if (procs_listen(opts.listen_host, opts.listen_port, opts.procs,
	    listen_fds, &port, err, sizeof(err)) < 0) {
		log_error("%s", err);
		sim_free(&sim);
		return 1;
	}
	rc = 0;
	if (opts.port_file != NULL && write_port_file(opts.port_file, port) < 0) {
		log_warn("cannot write port file %s", opts.port_file);
		rc = 1;
	} else {
		log_listening(&opts, port);
		rc = procs_run(opts.procs, serve_child, listen_fds);
	}
	for (i = 0; i < opts.procs; i++)
		close(listen_fds[i]);
	log_info("shutting down");
	g_sim = NULL;
	sim_free(&sim);
	return rc;
}
