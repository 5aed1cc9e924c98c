/*
 * codexpoolctl: the operator's command line for codexpoold.
 *
 * Connects to the control socket, checks the protocol version in the
 * greeting, sends one command line, prints the answer (up to the empty
 * line that ends it) and exits 0, or prints the daemon's reason and
 * exits 1.  A wrong command line exits 2; a daemon that cannot be reached
 * or does not speak our protocol exits 3, so scripts can tell them apart.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cfg.h"
#include "cfgkeys.h"
#include "util.h"

#define CTL_PROTO_VERSION	1
#define REPLY_TIMEOUT_MS	30000
#define MAX_REPLY		(16 * 1024 * 1024)
#define MAX_AUTH_JSON		(128 * 1024)	/* encoded, within the daemon's 256 KiB line */

#define EXIT_FAILED		1	/* the daemon refused or failed the command */
#define EXIT_USAGE		2	/* the command line, the config or a file is wrong */
#define EXIT_UNREACHABLE	3	/* no daemon to talk to, or not our protocol */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: codexpoolctl [-s SOCKET] [-c CONFIG] [--json] COMMAND [ARG...]\n"
	    "commands: status, show workers|pools|conversations|accounts, evict <entry>,\n"
	    "          pool enable|disable, drain <worker>, reload, config, stats reset,\n"
	    "          account list|disable|enable|remove|reset|refresh <entry>,\n"
	    "          account add --auth-json FILE [--label NAME],\n"
	    "          account add --access-token T --refresh-token R [--label NAME],\n"
	    "          key add <label>, key list, key remove <label>, help\n"
	    "Commands may be abbreviated to an unambiguous prefix.\n");
	exit(EXIT_USAGE);
}

/* The control socket named in the config file, if it names one. */
static char *
socket_from_config(const char *path, int explicit_path)
{
	struct codexpool_config cfg;
	struct cfgset cs;
	char err[512];
	char *sock = NULL;

	memset(&cfg, 0, sizeof(cfg));
	if (cfgset_init(&cs, codexpool_cfg_keys, &cfg) == -1)
		return NULL;
	if (cfg_load_defaults(&cs, err, sizeof(err)) == 0) {
		if (access(path, R_OK) == 0 || explicit_path) {
			if (cfg_load_file(&cs, path, err, sizeof(err)) == -1) {
				fprintf(stderr, "codexpoolctl: %s\n", err);
				cfgset_free(&cs);
				exit(EXIT_USAGE);
			}
		}
		if (cfg.control_socket)
			sock = strdup(cfg.control_socket);
	}
	cfgset_free(&cs);
	return sock;
}

/*
 * Read the greeting (one line) or an answer (lines up to the empty line
 * that ends it).  Bytes past it stay buffered for the next call.
 */
static char *
read_answer(int fd, size_t *len_out, int greeting)
{
	static char *buf;
	static size_t have, cap;
	size_t n;
	char *ans, *end;

	for (;;) {
		end = NULL;
		if (have > 0) {
			if (greeting)
				end = memchr(buf, '\n', have);
			else if (buf[0] == '\n')
				end = buf;		/* an empty answer */
			else if (have >= 2)
				end = memmem(buf, have, "\n\n", 2);
		}
		if (end != NULL) {
			n = (size_t)(end - buf) + (greeting || end == buf ? 1 : 2);
			ans = malloc(n + 1);
			if (ans == NULL)
				exit(EXIT_USAGE);
			memcpy(ans, buf, n);
			/* drop the terminating empty line */
			ans[greeting ? n : n - 1] = '\0';
			memmove(buf, buf + n, have - n);
			have -= n;
			*len_out = strlen(ans);
			return ans;
		}
		if (have == cap) {
			if (cap >= MAX_REPLY) {
				fprintf(stderr, "codexpoolctl: answer too large\n");
				exit(EXIT_UNREACHABLE);
			}
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			if (buf == NULL)
				exit(EXIT_USAGE);
		}
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int rc = poll(&pfd, 1, REPLY_TIMEOUT_MS);
		if (rc == 0) {
			fprintf(stderr, "codexpoolctl: no answer from codexpoold within %d s\n",
			    REPLY_TIMEOUT_MS / 1000);
			exit(EXIT_UNREACHABLE);
		}
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			exit(EXIT_UNREACHABLE);
		}
		ssize_t r = read(fd, buf + have, cap - have);
		if (r <= 0) {
			fprintf(stderr, "codexpoolctl: codexpoold closed the connection\n");
			exit(EXIT_UNREACHABLE);
		}
		have += (size_t)r;
	}
}

/* A word goes on the one-line protocol as is: no blanks, no line ends. */
static void
check_word(const char *what, const char *w)
{
	if (*w == '\0') {
		fprintf(stderr, "codexpoolctl: %s is empty\n", what);
		exit(EXIT_USAGE);
	}
	if (strpbrk(w, " \t\r\n") != NULL) {
		fprintf(stderr, "codexpoolctl: %s has a blank or a line break: '%s'\n", what, w);
		exit(EXIT_USAGE);
	}
}

/*
 * The auth.json, read whole; exits with a message if it is not a readable
 * file of plausible size.  The caller wipes and frees it.
 */
static uint8_t *
read_auth_json(const char *file, size_t *lenp)
{
	struct stat st;
	uint8_t *data;
	size_t len = 0;
	ssize_t n;
	int fd;

	if ((fd = open(file, O_RDONLY | O_CLOEXEC)) == -1) {
		fprintf(stderr, "codexpoolctl: %s: %s\n", file, strerror(errno));
		exit(EXIT_USAGE);
	}
	if (fstat(fd, &st) == -1 || S_ISDIR(st.st_mode)) {
		fprintf(stderr, "codexpoolctl: %s: %s\n", file,
		    S_ISDIR(st.st_mode) ? "is a directory, not an auth.json file" : strerror(errno));
		exit(EXIT_USAGE);
	}
	data = malloc(MAX_AUTH_JSON + 1);
	if (data == NULL)
		exit(EXIT_USAGE);
	/* a pipe or /dev/stdin works too: read until EOF, not st_size */
	while ((n = read(fd, data + len, MAX_AUTH_JSON + 1 - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "codexpoolctl: %s: %s\n", file, strerror(errno));
			exit(EXIT_USAGE);
		}
		len += (size_t)n;
		if (len > MAX_AUTH_JSON) {
			fprintf(stderr, "codexpoolctl: %s is too large for an auth.json (more than "
			    "%d KiB)\n", file, MAX_AUTH_JSON / 1024);
			exit(EXIT_USAGE);
		}
	}
	close(fd);
	if (len == 0) {
		fprintf(stderr, "codexpoolctl: %s is empty, not an auth.json\n", file);
		exit(EXIT_USAGE);
	}
	*lenp = len;
	return data;
}

/*
 * "account add --auth-json FILE" reads the file here (the daemon need not
 * read the operator's home) and sends it base64url-encoded on one line;
 * "--access-token T --refresh-token R" sends the tokens.  Returns the
 * protocol line, or exits with a message.
 */
static char *
account_add_line(int argc, char **argv, int *json)
{
	const char *file = NULL, *access = NULL, *refresh = NULL, *label = NULL;
	char *line, *b64;
	size_t len = 0, cap;
	int i;

	for (i = 0; i < argc; i++) {
		const char **dst = strcmp(argv[i], "--auth-json") == 0 ? &file :
		    strcmp(argv[i], "--access-token") == 0 ? &access :
		    strcmp(argv[i], "--refresh-token") == 0 ? &refresh :
		    strcmp(argv[i], "--label") == 0 ? &label : NULL;
		if (strcmp(argv[i], "--json") == 0) {
			*json = 1;
			continue;
		}
		if (dst == NULL || i + 1 >= argc) {
			fprintf(stderr, "codexpoolctl: account add takes --auth-json FILE, or "
			    "--access-token T --refresh-token R, and optionally --label NAME%s%s%s\n",
			    dst == NULL ? " (not '" : " (no value after ", argv[i],
			    dst == NULL ? "')" : ")");
			exit(EXIT_USAGE);
		}
		if (*dst != NULL) {
			fprintf(stderr, "codexpoolctl: account add: %s is given twice\n", argv[i]);
			exit(EXIT_USAGE);
		}
		*dst = argv[++i];
	}
	if (label)
		check_word("a label", label);
	if (file != NULL && (access != NULL || refresh != NULL)) {
		fprintf(stderr, "codexpoolctl: account add takes --auth-json FILE or the tokens, "
		    "not both\n");
		exit(EXIT_USAGE);
	}
	if (file != NULL) {
		uint8_t *data = read_auth_json(file, &len);
		cap = len * 4 / 3 + 8;
		b64 = malloc(cap);
		if (b64 == NULL || b64url_encode(data, len, b64, cap) < 0) {
			fprintf(stderr, "codexpoolctl: cannot encode %s\n", file);
			exit(EXIT_USAGE);
		}
		explicit_bzero(data, len);
		free(data);
		line = malloc(strlen(b64) + (label ? strlen(label) : 0) + 64);
		if (line == NULL)
			exit(EXIT_USAGE);
		sprintf(line, "account add auth-json %s%s%s", b64, label ? " " : "", label ? label : "");
		explicit_bzero(b64, strlen(b64));
		free(b64);
		return line;
	}
	if (access == NULL || refresh == NULL) {
		fprintf(stderr, "codexpoolctl: account add needs --auth-json FILE, or both "
		    "--access-token and --refresh-token\n");
		exit(EXIT_USAGE);
	}
	check_word("the access token", access);
	check_word("the refresh token", refresh);
	line = malloc(strlen(access) + strlen(refresh) + (label ? strlen(label) : 0) + 64);
	if (line == NULL)
		exit(EXIT_USAGE);
	sprintf(line, "account add tokens %s %s%s%s", access, refresh, label ? " " : "",
	    label ? label : "");
	return line;
}

int
main(int argc, char **argv)
{
	const char *config_path = CODEXPOOL_DEFAULT_CONFIG;
	char *sock = NULL, *greeting, *ans, *line, *cmd;
	int ch, fd, json = 0, explicit_config = 0, version;
	struct sockaddr_un sun;
	size_t len, off;
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};

	/* a daemon that refuses us closes at once: say why, do not die writing */
	signal(SIGPIPE, SIG_IGN);
	while ((ch = getopt_long(argc, argv, "+s:c:jh", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			sock = strdup(optarg);
			break;
		case 'c':
			config_path = optarg;
			explicit_config = 1;
			break;
		case 'j':
			json = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0)
		usage();
	if (sock == NULL)
		sock = socket_from_config(config_path, explicit_config);
	if (sock == NULL)
		sock = strdup(CODEXPOOL_DEFAULT_SOCKET);

	if (argc >= 2 && strcmp(argv[0], "account") == 0 && strcmp(argv[1], "add") == 0) {
		line = account_add_line(argc - 2, argv + 2, &json);
	} else {
		size_t cap = 16;
		for (int i = 0; i < argc; i++)
			cap += strlen(argv[i]) + 1;
		line = malloc(cap + 8);
		if (line == NULL)
			exit(EXIT_USAGE);
		off = 0;
		line[0] = '\0';
		for (int i = 0; i < argc; i++) {
			if (strcmp(argv[i], "--json") == 0) {
				json = 1;
				continue;
			}
			if (argv[i][0] == '\0')
				continue;	/* an empty "$VAR" */
			check_word("an argument", argv[i]);
			off += (size_t)snprintf(line + off, cap - off, "%s%s", off ? " " : "", argv[i]);
		}
		if (off == 0)
			usage();	/* the daemon would not answer an empty line */
	}
	cmd = realloc(line, strlen(line) + 16);
	if (cmd == NULL)
		exit(EXIT_USAGE);
	line = cmd;
	if (json)
		strcat(line, " --json");
	off = strlen(line);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(sock) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "codexpoolctl: socket path too long: %s\n", sock);
		exit(EXIT_USAGE);
	}
	strcpy(sun.sun_path, sock);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "codexpoolctl: cannot connect to %s: %s (is codexpoold running?)\n",
		    sock, strerror(errno));
		exit(EXIT_UNREACHABLE);
	}
	greeting = read_answer(fd, &len, 1);
	if (sscanf(greeting, "codexpool %d", &version) != 1)
		version = -1;
	free(greeting);
	if (version == -1) {
		fprintf(stderr, "codexpoolctl: %s does not speak the codexpool control protocol\n", sock);
		exit(EXIT_UNREACHABLE);
	}
	if (version != CTL_PROTO_VERSION) {
		fprintf(stderr, "codexpoolctl: codexpoold speaks control protocol %d, this "
		    "codexpoolctl speaks %d; use the codexpoolctl that came with the daemon\n",
		    version, CTL_PROTO_VERSION);
		exit(EXIT_UNREACHABLE);
	}
	line[off++] = '\n';
	for (size_t done = 0; done < off; ) {
		ssize_t w = write(fd, line + done, off - done);
		if (w <= 0) {
			/* refused at once: the daemon's reason may already be here */
			if (errno == EPIPE)
				break;
			fprintf(stderr, "codexpoolctl: write: %s\n", strerror(errno));
			exit(EXIT_UNREACHABLE);
		}
		done += (size_t)w;
	}
	explicit_bzero(line, off);
	free(line);
	ans = read_answer(fd, &len, 0);
	close(fd);
	free(sock);
	if (strncmp(ans, "error: ", 7) == 0) {
		fprintf(stderr, "codexpoolctl: %s", ans + 7);
		free(ans);
		return EXIT_FAILED;
	}
	if (json && strstr(ans, "\"error\":") != NULL && ans[0] == '{' &&
	    strncmp(ans, "{\"error\":", 9) == 0) {
		fputs(ans, stdout);
		free(ans);
		return EXIT_FAILED;
	}
	fputs(ans, stdout);
	free(ans);
	return 0;
}
