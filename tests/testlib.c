/*
 * testlib: processes, files, certificates, the simulator, and blocking
 * HTTP / SSE / WebSocket clients for the end-to-end tests.
 *
 * Everything here blocks with a deadline; nothing sleeps to "let things
 * happen".  Waits poll a condition until a generous deadline instead.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "testlib.h"

#define TL_MAX_PROCS		256
#define TL_MAX_HEADER_BYTES	(256 * 1024)
#define TL_MAX_BODY_BYTES	(512u << 20)
#define TL_MAX_WS_MESSAGE	(512u << 20)
#define WS_GUID			"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static void
tl_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "testlib: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void *
tl_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL) {
		tl_err("out of memory (%zu bytes)", n);
		abort();
	}
	return p;
}

static void *
tl_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL) {
		tl_err("out of memory (%zu bytes)", n);
		abort();
	}
	return p;
}

static char *
tl_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(tl_xmalloc(n), s, n);
}

static char *
tl_xstrndup(const char *s, size_t n)
{
	char *p = tl_xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static char *
tl_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
tl_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	p = tl_xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

/* A growable byte buffer. */
struct buf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

static void
buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 1024;

		while (ncap < b->len + n + 1)
			ncap *= 2;
		b->p = tl_xrealloc(b->p, ncap);
		b->cap = ncap;
	}
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static char *
buf_take(struct buf *b, size_t *len)
{
	char *p;

	if (b->p == NULL)
		buf_add(b, "", 0);
	p = b->p;
	if (len != NULL)
		*len = b->len;
	memset(b, 0, sizeof(*b));
	return p;
}

/* ---- environment, files, directories ------------------------------- */

const char *
tl_builddir(void)
{
	const char *d = getenv("CODEXPOOL_BUILDDIR");

	return d && *d ? d : ".";
}

const char *
tl_srcdir(void)
{
	const char *d = getenv("CODEXPOOL_SRCDIR");

	return d && *d ? d : ".";
}

char *
tl_program(const char *relpath)
{
	return tl_asprintf("%s/%s", tl_builddir(), relpath);
}

char *
tl_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *path;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	path = tl_asprintf("%s/codexpool-test.XXXXXX", base);
	if (mkdtemp(path) == NULL) {
		tl_err("mkdtemp %s: %s", path, strerror(errno));
		free(path);
		return NULL;
	}
	return path;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP ? rmdir(path) : unlink(path)) {
		if (errno != ENOENT)
			tl_err("remove %s: %s", path, strerror(errno));
	}
	return 0;
}

int
tl_rmrf(const char *path)
{
	struct stat st;

	if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0)
		return -1;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	return nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

char *
tl_read_file(const char *path, size_t *len)
{
	struct buf b = { 0 };
	char chunk[65536];
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf_add(&b, "", 0);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		buf_add(&b, chunk, (size_t)n);
	}
	close(fd);
	if (n < 0) {
		free(b.p);
		return NULL;
	}
	return buf_take(&b, len);
}

int
tl_write_file(const char *path, const void *data, size_t len, int mode)
{
	const char *p = data;
	ssize_t w;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode ? mode : 0644);
	if (fd < 0) {
		tl_err("open %s: %s", path, strerror(errno));
		return -1;
	}
	while (len > 0) {
		w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			tl_err("write %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return close(fd);
}

int
tl_file_contains(const char *path, const char *needle)
{
	char *s = tl_read_file(path, NULL);
	int found;

	if (s == NULL)
		return 0;
	found = strstr(s, needle) != NULL;
	free(s);
	return found;
}

void
tl_msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int64_t
tl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
tl_wait_file(const char *path, int timeout_ms)
{
	int64_t deadline = tl_now_ms() + timeout_ms;
	struct stat st;

	do {
		if (stat(path, &st) == 0 && st.st_size > 0)
			return 0;
		tl_msleep(10);
	} while (tl_now_ms() < deadline);
	return -1;
}

int
tl_wait_file_contains(const char *path, const char *needle, int timeout_ms)
{
	int64_t deadline = tl_now_ms() + timeout_ms;

	do {
		if (tl_file_contains(path, needle))
			return 0;
		tl_msleep(20);
	} while (tl_now_ms() < deadline);
	return -1;
}

/* ---- processes ------------------------------------------------------ */

static struct {
	pid_t	pid;
	pid_t	owner;		/* the process that spawned it (Check forks) */
} procs[TL_MAX_PROCS];
static int atexit_done;

static void
proc_register(pid_t pid)
{
	int i;

	for (i = 0; i < TL_MAX_PROCS; i++)
		if (procs[i].pid == 0) {
			procs[i].pid = pid;
			procs[i].owner = getpid();
			return;
		}
	tl_err("process registry full; pid %d will not be cleaned up", (int)pid);
}

static int
proc_unregister(pid_t pid)
{
	int i;

	for (i = 0; i < TL_MAX_PROCS; i++)
		if (procs[i].pid == pid && procs[i].owner == getpid()) {
			procs[i].pid = 0;
			return 0;
		}
	return -1;
}

void
tl_kill_all(void)
{
	pid_t me = getpid();
	int i;

	for (i = 0; i < TL_MAX_PROCS; i++) {
		if (procs[i].pid == 0 || procs[i].owner != me)
			continue;
		kill(-procs[i].pid, SIGKILL);
		kill(procs[i].pid, SIGKILL);
		while (waitpid(procs[i].pid, NULL, 0) < 0 && errno == EINTR)
			;
		procs[i].pid = 0;
	}
}

static void
kill_all_atexit(void)
{
	tl_kill_all();
}

static void
child_exec(const char *logfile, char *const argv[], char *const envp_extra[],
    pid_t parent)
{
	sigset_t none;
	int fd, i;

	setpgid(0, 0);
	/* Die with the test: Check's fork mode ends a failing test with
	 * _exit (no atexit) or SIGKILL on timeout. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0 && fd != 0) {
		dup2(fd, 0);
		close(fd);
	}
	fd = open(logfile ? logfile : "/dev/null",
	    O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	closefrom(3);
	for (i = 0; envp_extra != NULL && envp_extra[i] != NULL; i++)
		putenv(envp_extra[i]);
	if (strchr(argv[0], '/') != NULL)
		execv(argv[0], argv);
	else
		execvp(argv[0], argv);
	dprintf(2, "testlib: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

pid_t
tl_spawn_env(const char *logfile, char *const argv[], char *const envp_extra[])
{
	pid_t parent = getpid(), pid;

	if (!atexit_done) {
		atexit(kill_all_atexit);
		atexit_done = 1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		tl_err("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0)
		child_exec(logfile, argv, envp_extra, parent);
	setpgid(pid, pid);	/* also here, so a kill(-pid) right away works */
	proc_register(pid);
	return pid;
}

pid_t
tl_spawn(const char *logfile, char *const argv[])
{
	return tl_spawn_env(logfile, argv, NULL);
}

static int
decode_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return -WTERMSIG(status);
	return -1000;
}

/* Waits for pid until deadline; 1 reaped (*status set), 0 timeout, -1 error. */
static int
reap_until(pid_t pid, int64_t deadline, int *status)
{
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
		if (tl_now_ms() >= deadline)
			return 0;
		tl_msleep(10);
	}
}

static void
after_exit(pid_t pid)
{
	/* The leader is gone; anything left in its group is a leak. */
	if (kill(-pid, 0) == 0) {
		tl_err("process group %d still had members after its leader "
		    "exited; killing them", (int)pid);
		kill(-pid, SIGKILL);
	}
	proc_unregister(pid);
}

int
tl_stop(pid_t pid, int sig, int timeout_ms)
{
	int status = 0, r;

	if (pid <= 0)
		return -1000;
	if (sig != 0)
		kill(pid, sig);
	r = reap_until(pid, tl_now_ms() + timeout_ms, &status);
	if (r < 0) {
		proc_unregister(pid);
		return -1000;
	}
	if (r == 0) {
		tl_err("pid %d did not exit within %d ms; killing it", (int)pid,
		    timeout_ms);
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	after_exit(pid);
	return decode_status(status);
}

int
tl_wait_exit(pid_t pid, int timeout_ms)
{
	int status = 0, r;

	r = reap_until(pid, tl_now_ms() + timeout_ms, &status);
	if (r <= 0)
		return r == 0 ? -1001 : -1000;
	after_exit(pid);
	return decode_status(status);
}

int
tl_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *d;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if ((dir = opendir(path)) == NULL)
		return -1;
	while ((d = readdir(dir)) != NULL)
		if (d->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

long
tl_pss_kib(pid_t pid)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Pss: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

int
tl_free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

int
tl_alive(pid_t pid)
{
	int status;

	if (pid <= 0)
		return 0;
	if (waitpid(pid, &status, WNOHANG) == pid) {
		/* Reaped here: remember nothing, it is gone. */
		proc_unregister(pid);
		return 0;
	}
	return kill(pid, 0) == 0;
}

int
tl_run(const char *logfile, char *const argv[], int timeout_ms)
{
	pid_t pid = tl_spawn(logfile, argv);

	if (pid < 0)
		return -1000;
	return tl_stop(pid, 0, timeout_ms);
}

/* ---- certificates --------------------------------------------------- */

int
tl_make_certs(const char *dir)
{
	char *log = tl_asprintf("%s/openssl.log", dir);
	char *ca_key = tl_asprintf("%s/ca.key", dir);
	char *ca_pem = tl_asprintf("%s/ca.pem", dir);
	char *srv_key = tl_asprintf("%s/server.key", dir);
	char *srv_csr = tl_asprintf("%s/server.csr", dir);
	char *srv_pem = tl_asprintf("%s/server.pem", dir);
	char *ext = tl_asprintf("%s/server.ext", dir);
	const char *ext_text =
	    "basicConstraints=critical,CA:FALSE\n"
	    "keyUsage=critical,digitalSignature,keyEncipherment\n"
	    "extendedKeyUsage=serverAuth\n"
	    "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
	char serial[40];
	uint8_t rnd[8];
	int rv = -1, i;

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 7, sizeof(rnd));
	rnd[0] &= 0x7f;
	strcpy(serial, "0x");
	for (i = 0; i < 8; i++)
		snprintf(serial + 2 + 2 * i, 3, "%02x", rnd[i]);
	{
		char *const ca[] = { "openssl", "req", "-x509", "-newkey", "ec",
		    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		    "-keyout", ca_key, "-out", ca_pem, "-days", "7",
		    "-subj", "/CN=codexpool test CA",
		    "-addext", "basicConstraints=critical,CA:TRUE",
		    "-addext", "keyUsage=critical,keyCertSign,cRLSign", NULL };
		char *const csr[] = { "openssl", "req", "-new", "-newkey", "ec",
		    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		    "-keyout", srv_key, "-out", srv_csr, "-subj", "/CN=localhost",
		    NULL };
		char *const sign[] = { "openssl", "x509", "-req", "-in", srv_csr,
		    "-CA", ca_pem, "-CAkey", ca_key, "-set_serial", serial,
		    "-out", srv_pem, "-days", "7", "-extfile", ext, NULL };

		if (tl_write_file(ext, ext_text, strlen(ext_text), 0644) < 0)
			goto out;
		if (tl_run(log, ca, 60000) != 0 || tl_run(log, csr, 60000) != 0 ||
		    tl_run(log, sign, 60000) != 0) {
			tl_err("openssl failed; see %s", log);
			goto out;
		}
	}
	if (chmod(ca_key, 0600) < 0 || chmod(srv_key, 0600) < 0)
		goto out;
	rv = 0;
out:
	free(log);
	free(ca_key);
	free(ca_pem);
	free(srv_key);
	free(srv_csr);
	free(srv_pem);
	free(ext);
	return rv;
}

/* ---- network I/O: plain or TLS, always with a deadline ---------------- */

struct tl_io {
	int	 fd;
	SSL_CTX	*ctx;
	SSL	*ssl;
	char	*rbuf;		/* bytes read but not consumed */
	size_t	 roff;
	size_t	 rlen;
	size_t	 rcap;
	int	 eof;
};

static int
remaining_ms(int64_t deadline)
{
	int64_t r = deadline - tl_now_ms();

	return r < 0 ? 0 : (r > INT32_MAX ? INT32_MAX : (int)r);
}

static int
wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { fd, events, 0 };
	int r;

	for (;;) {
		r = poll(&pfd, 1, remaining_ms(deadline));
		if (r > 0)
			return 0;
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

static int
is_ip_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static void
io_init(struct tl_io *io)
{
	memset(io, 0, sizeof(*io));
	io->fd = -1;
}

static void
io_close(struct tl_io *io, int abort_conn)
{
	if (io->ssl != NULL) {
		if (!abort_conn)
			SSL_shutdown(io->ssl);
		SSL_free(io->ssl);
	}
	if (io->ctx != NULL)
		SSL_CTX_free(io->ctx);
	if (io->fd >= 0) {
		if (abort_conn) {
			struct linger lg = { 1, 0 };

			setsockopt(io->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(io->fd);
	}
	free(io->rbuf);
	io_init(io);
}

static int
tls_start(struct tl_io *io, const struct tl_conn_opts *o, const char *host,
    int64_t deadline)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	const char *name = o->server_name ? o->server_name : host;
	int r, e;

	io->ctx = SSL_CTX_new(TLS_client_method());
	if (io->ctx == NULL)
		return -1;
	SSL_CTX_set_options(io->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (SSL_CTX_load_verify_locations(io->ctx, o->ca_file, NULL) != 1) {
		tl_err("cannot load CA file %s", o->ca_file);
		return -1;
	}
	SSL_CTX_set_verify(io->ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_alpn_protos(io->ctx, alpn, sizeof(alpn) - 1);
	io->ssl = SSL_new(io->ctx);
	if (io->ssl == NULL || SSL_set_fd(io->ssl, io->fd) != 1)
		return -1;
	if (is_ip_literal(name)) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(io->ssl), name);
	} else {
		SSL_set_tlsext_host_name(io->ssl, name);
		SSL_set1_host(io->ssl, name);
	}
	for (;;) {
		r = SSL_connect(io->ssl);
		if (r == 1)
			return 0;
		e = SSL_get_error(io->ssl, r);
		if (e == SSL_ERROR_WANT_READ) {
			if (wait_fd(io->fd, POLLIN, deadline) < 0)
				break;
		} else if (e == SSL_ERROR_WANT_WRITE) {
			if (wait_fd(io->fd, POLLOUT, deadline) < 0)
				break;
		} else {
			unsigned long ec = ERR_get_error();
			char msg[256];

			ERR_error_string_n(ec, msg, sizeof(msg));
			tl_err("TLS handshake with %s failed: %s (verify: %s)", name,
			    ec ? msg : "connection closed",
			    X509_verify_cert_error_string(SSL_get_verify_result(io->ssl)));
			ERR_clear_error();
			return -1;
		}
	}
	tl_err("TLS handshake with %s: %s", name, strerror(errno));
	return -1;
}

static int
io_connect(struct tl_io *io, const struct tl_conn_opts *o, const char *host,
    int port, int64_t deadline)
{
	struct addrinfo hints, *res = NULL, *ai;
	char portstr[16];
	int fd = -1, r, err = 0, one = 1;
	socklen_t elen = sizeof(err);

	io_init(io);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof(portstr), "%d", port);
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0) {
		tl_err("resolve %s: %s", host, gai_strerror(r));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0)
			continue;
		r = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (r < 0 && errno == EINPROGRESS) {
			if (wait_fd(fd, POLLOUT, deadline) == 0 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 &&
			    err == 0)
				r = 0;
			else if (err != 0)
				errno = err;
		}
		if (r == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		tl_err("connect %s:%d: %s", host, port, strerror(errno));
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	io->fd = fd;
	if (o != NULL && o->ca_file != NULL && tls_start(io, o, host, deadline) < 0) {
		io_close(io, 0);
		return -1;
	}
	return 0;
}

static int
io_write_all(struct tl_io *io, const void *data, size_t n, int64_t deadline)
{
	const char *p = data;
	ssize_t w;
	int e;

	while (n > 0) {
		if (io->ssl != NULL) {
			w = SSL_write(io->ssl, p, (int)(n > (1u << 30) ? (1u << 30) : n));
			if (w <= 0) {
				e = SSL_get_error(io->ssl, (int)w);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
					if (wait_fd(io->fd, e == SSL_ERROR_WANT_READ ?
					    POLLIN : POLLOUT, deadline) < 0)
						return -1;
					continue;
				}
				ERR_clear_error();
				if (errno == 0)
					errno = EPIPE;
				return -1;
			}
		} else {
			w = send(io->fd, p, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					if (wait_fd(io->fd, POLLOUT, deadline) < 0)
						return -1;
					continue;
				}
				return -1;
			}
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads more bytes into rbuf: >0 added, 0 EOF, -1 error/timeout (errno). */
static ssize_t
io_fill(struct tl_io *io, int64_t deadline)
{
	ssize_t r;
	int e;

	if (io->eof)
		return 0;
	if (io->roff > 0 && io->roff == io->rlen)
		io->roff = io->rlen = 0;
	if (io->rcap - io->rlen < 16384) {
		if (io->roff > 0) {
			memmove(io->rbuf, io->rbuf + io->roff, io->rlen - io->roff);
			io->rlen -= io->roff;
			io->roff = 0;
		}
		if (io->rcap - io->rlen < 16384) {
			io->rcap = io->rcap ? io->rcap * 2 : 65536;
			io->rbuf = tl_xrealloc(io->rbuf, io->rcap);
		}
	}
	for (;;) {
		if (io->ssl != NULL) {
			ERR_clear_error();
			errno = 0;
			r = SSL_read(io->ssl, io->rbuf + io->rlen, (int)(io->rcap - io->rlen));
			if (r > 0)
				break;
			e = SSL_get_error(io->ssl, (int)r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
				if (wait_fd(io->fd, e == SSL_ERROR_WANT_READ ?
				    POLLIN : POLLOUT, deadline) < 0)
					return -1;
				continue;
			}
			if (e == SSL_ERROR_ZERO_RETURN ||
			    (e == SSL_ERROR_SYSCALL && errno == 0)) {
				io->eof = 1;
				return 0;
			}
			if (errno == 0)
				errno = EPROTO;
			ERR_clear_error();
			return -1;
		}
		r = recv(io->fd, io->rbuf + io->rlen, io->rcap - io->rlen, 0);
		if (r > 0)
			break;
		if (r == 0) {
			io->eof = 1;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (wait_fd(io->fd, POLLIN, deadline) < 0)
			return -1;
	}
	io->rlen += (size_t)r;
	return r;
}

static size_t
io_avail(const struct tl_io *io)
{
	return io->rlen - io->roff;
}

/* Makes sure n bytes are buffered: 0 ok, -1 error/timeout/EOF first. */
static int
io_ensure(struct tl_io *io, size_t n, int64_t deadline)
{
	ssize_t r;

	while (io_avail(io) < n) {
		r = io_fill(io, deadline);
		if (r == 0) {
			errno = ECONNABORTED;
			return -1;
		}
		if (r < 0)
			return -1;
	}
	return 0;
}

/* A line without its CR LF, malloc'd; NULL on error / EOF / over limit. */
static char *
io_read_line(struct tl_io *io, size_t limit, int64_t deadline)
{
	char *nl, *line;
	size_t scanned = 0, len;

	for (;;) {
		nl = io_avail(io) > scanned ?
		    memchr(io->rbuf + io->roff + scanned, '\n', io_avail(io) - scanned) : NULL;
		if (nl != NULL)
			break;
		scanned = io_avail(io);
		if (scanned > limit || io_fill(io, deadline) <= 0)
			return NULL;
	}
	len = (size_t)(nl - (io->rbuf + io->roff));
	line = tl_xstrndup(io->rbuf + io->roff, len > 0 && nl[-1] == '\r' ? len - 1 : len);
	io->roff += len + 1;
	return line;
}

/* ---- HTTP ----------------------------------------------------------- */

enum body_mode { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_EOF };

struct tl_stream {
	struct tl_io	 io;
	int		 status;
	char		*headers;
	enum body_mode	 mode;
	uint64_t	 left;		/* LENGTH: body left; CHUNKED: chunk left */
	int		 done;
	int		 timeout_ms;
	struct buf	 sse;		/* undelivered SSE text */
	const char	*method;	/* "HEAD" or "" */
	int		 need_head;	/* sent by tl_stream_send, head not read yet */
};

char *
tl_header_get(const char *headers, const char *name)
{
	size_t nl = strlen(name);
	const char *p = headers, *eol, *v;

	if (headers == NULL)
		return NULL;
	/* Skip the status line. */
	p = strchr(p, '\n');
	while (p != NULL && *++p != '\0') {
		eol = strchr(p, '\n');
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			v = p + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			if (eol == NULL)
				eol = v + strlen(v);
			while (eol > v && (eol[-1] == '\r' || eol[-1] == ' ' ||
			    eol[-1] == '\n'))
				eol--;
			return tl_xstrndup(v, (size_t)(eol - v));
		}
		p = eol;
	}
	return NULL;
}

static char *
build_request(const char *host, int port, const char *method, const char *path,
    const char *extra_headers, size_t len, int has_body)
{
	struct buf b = { 0 };
	char line[512];
	int has_ct = extra_headers != NULL &&
	    (strncasecmp(extra_headers, "content-type:", 13) == 0 ||
	    strcasestr(extra_headers, "\ncontent-type:") != NULL);

	snprintf(line, sizeof(line), "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", method,
	    path, host, port);
	buf_adds(&b, line);
	buf_adds(&b, "Connection: close\r\nUser-Agent: codexpool-testlib\r\n");
	if (has_body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
		snprintf(line, sizeof(line), "Content-Length: %zu\r\n", len);
		buf_adds(&b, line);
		if (!has_ct)
			buf_adds(&b, "Content-Type: application/json\r\n");
	}
	if (extra_headers != NULL)
		buf_adds(&b, extra_headers);
	buf_adds(&b, "\r\n");
	return buf_take(&b, NULL);
}

/* Reads the status line and headers; sets status, headers, body mode. */
static int
read_response_head(struct tl_io *io, const char *method, int64_t deadline,
    int *status, char **headers, enum body_mode *mode, uint64_t *left)
{
	struct buf b = { 0 };
	char *line, *v;
	int first = 1;

	*status = 0;
	for (;;) {
		line = io_read_line(io, TL_MAX_HEADER_BYTES, deadline);
		if (line == NULL) {
			free(b.p);
			return -1;
		}
		if (first) {
			if (sscanf(line, "HTTP/%*d.%*d %d", status) != 1) {
				tl_err("bad HTTP status line: %.80s", line);
				free(line);
				free(b.p);
				return -1;
			}
			first = 0;
		}
		buf_adds(&b, line);
		buf_adds(&b, "\r\n");
		if (line[0] == '\0') {
			free(line);
			break;
		}
		free(line);
		if (b.len > TL_MAX_HEADER_BYTES) {
			tl_err("HTTP response headers too large");
			free(b.p);
			return -1;
		}
	}
	*headers = buf_take(&b, NULL);
	*left = 0;
	if (strcmp(method, "HEAD") == 0 || *status == 204 || *status == 304 ||
	    (*status >= 100 && *status < 200)) {
		*mode = BODY_NONE;
		return 0;
	}
	v = tl_header_get(*headers, "transfer-encoding");
	if (v != NULL && strcasestr(v, "chunked") != NULL) {
		*mode = BODY_CHUNKED;
		free(v);
		return 0;
	}
	free(v);
	v = tl_header_get(*headers, "content-length");
	if (v != NULL) {
		*mode = BODY_LENGTH;
		*left = strtoull(v, NULL, 10);
		free(v);
		return 0;
	}
	*mode = BODY_EOF;
	return 0;
}

struct tl_stream *
tl_stream_send(const struct tl_conn_opts *opts, const char *host, int port,
    const char *method, const char *path, const char *extra_headers,
    const void *body, size_t len)
{
	struct tl_conn_opts none = { 0 };
	struct tl_stream *s;
	int64_t deadline;
	char *req;

	if (opts == NULL)
		opts = &none;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : TL_DEFAULT_TIMEOUT_MS;
	deadline = tl_now_ms() + s->timeout_ms;
	if (io_connect(&s->io, opts, host, port, deadline) < 0) {
		free(s);
		return NULL;
	}
	req = build_request(host, port, method, path, extra_headers, len, body != NULL);
	if (io_write_all(&s->io, req, strlen(req), deadline) < 0 ||
	    (len > 0 && io_write_all(&s->io, body, len, deadline) < 0)) {
		tl_err("%s %s: send: %s", method, path, strerror(errno));
		free(req);
		tl_stream_close(s, 0);
		return NULL;
	}
	free(req);
	s->method = strcmp(method, "HEAD") == 0 ? "HEAD" : "";
	s->need_head = 1;
	return s;
}

int
tl_stream_head(struct tl_stream *s)
{
	int64_t deadline = tl_now_ms() + s->timeout_ms;

	if (!s->need_head)
		return 0;
	s->need_head = 0;
	if (read_response_head(&s->io, s->method, deadline, &s->status, &s->headers,
	    &s->mode, &s->left) < 0) {
		tl_err("no HTTP response (%s)", strerror(errno));
		s->done = 1;
		return -1;
	}
	if (s->mode == BODY_NONE || (s->mode == BODY_LENGTH && s->left == 0))
		s->done = 1;
	return 0;
}

struct tl_stream *
tl_stream_open(const struct tl_conn_opts *opts, const char *host, int port,
    const char *method, const char *path, const char *extra_headers,
    const void *body, size_t len)
{
	struct tl_stream *s;

	s = tl_stream_send(opts, host, port, method, path, extra_headers, body, len);
	if (s == NULL)
		return NULL;
	if (tl_stream_head(s) < 0) {
		tl_err("%s %s: no HTTP response", method, path);
		tl_stream_close(s, 0);
		return NULL;
	}
	return s;
}

int
tl_stream_status(const struct tl_stream *s)
{
	return s->status;
}

const char *
tl_stream_headers(const struct tl_stream *s)
{
	return s->headers;
}

static size_t
take_buffered(struct tl_io *io, void *dst, size_t n)
{
	size_t a = io_avail(io);

	if (n > a)
		n = a;
	memcpy(dst, io->rbuf + io->roff, n);
	io->roff += n;
	return n;
}

ssize_t
tl_stream_read(struct tl_stream *s, void *dst, size_t n, int timeout_ms)
{
	int64_t deadline = tl_now_ms() + (timeout_ms > 0 ? timeout_ms : s->timeout_ms);
	char *line;
	ssize_t r;
	size_t want;

	if (s->need_head && tl_stream_head(s) < 0)
		return -1;
	if (s->done || n == 0)
		return 0;
	switch (s->mode) {
	case BODY_NONE:
		s->done = 1;
		return 0;
	case BODY_LENGTH:
		if (io_avail(&s->io) == 0 && io_fill(&s->io, deadline) <= 0)
			return -1;
		want = n < s->left ? n : (size_t)s->left;
		r = (ssize_t)take_buffered(&s->io, dst, want);
		s->left -= (uint64_t)r;
		if (s->left == 0)
			s->done = 1;
		return r;
	case BODY_EOF:
		if (io_avail(&s->io) == 0) {
			r = io_fill(&s->io, deadline);
			if (r == 0) {
				s->done = 1;
				return 0;
			}
			if (r < 0)
				return -1;
		}
		return (ssize_t)take_buffered(&s->io, dst, n);
	case BODY_CHUNKED:
		if (s->left == 0) {
			line = io_read_line(&s->io, 4096, deadline);
			if (line == NULL)
				return -1;
			s->left = strtoull(line, NULL, 16);
			free(line);
			if (s->left == 0) {
				/* Trailers, then the empty line. */
				while ((line = io_read_line(&s->io, 65536, deadline)) != NULL) {
					int empty = line[0] == '\0';

					free(line);
					if (empty)
						break;
				}
				s->done = 1;
				return 0;
			}
		}
		if (io_avail(&s->io) == 0 && io_fill(&s->io, deadline) <= 0)
			return -1;
		want = n < s->left ? n : (size_t)s->left;
		r = (ssize_t)take_buffered(&s->io, dst, want);
		s->left -= (uint64_t)r;
		if (s->left == 0) {
			line = io_read_line(&s->io, 16, deadline);	/* chunk CRLF */
			free(line);
		}
		return r;
	}
	return -1;
}

/* One SSE event out of text (at *pos): 1 found, 0 need more. */
static int
sse_parse(const char *text, size_t len, size_t *pos, char **event, char **data)
{
	struct buf d = { 0 };
	char *ev = NULL;
	size_t p = *pos, eol, ll;
	int have = 0;

	while (p < len) {
		const char *nl = memchr(text + p, '\n', len - p);
		const char *line = text + p;

		if (nl == NULL)
			break;
		eol = (size_t)(nl - text);
		ll = eol - p;
		if (ll > 0 && line[ll - 1] == '\r')
			ll--;
		p = eol + 1;
		if (ll == 0) {
			if (have) {
				*pos = p;
				*event = ev;
				*data = buf_take(&d, NULL);
				return 1;
			}
			continue;
		}
		if (line[0] == ':')
			continue;
		have = 1;
		if (ll >= 6 && strncmp(line, "event:", 6) == 0) {
			size_t o = line[6] == ' ' ? 7 : 6;

			free(ev);
			ev = tl_xstrndup(line + o, ll - o);
		} else if (ll >= 5 && strncmp(line, "data:", 5) == 0) {
			size_t o = (ll > 5 && line[5] == ' ') ? 6 : 5;

			if (d.p != NULL)
				buf_add(&d, "\n", 1);
			buf_add(&d, line + o, ll - o);
		}
	}
	free(ev);
	free(d.p);
	return 0;
}

int
tl_stream_read_event(struct tl_stream *s, char **event, char **data, int timeout_ms)
{
	char chunk[16384];
	size_t pos = 0;
	ssize_t r;

	*event = *data = NULL;
	for (;;) {
		pos = 0;
		if (s->sse.len > 0 && sse_parse(s->sse.p, s->sse.len, &pos, event, data)) {
			memmove(s->sse.p, s->sse.p + pos, s->sse.len - pos);
			s->sse.len -= pos;
			s->sse.p[s->sse.len] = '\0';
			return 1;
		}
		r = tl_stream_read(s, chunk, sizeof(chunk), timeout_ms);
		if (r < 0)
			return -1;
		if (r == 0) {
			/* An event without its final blank line still counts. */
			if (s->sse.len > 0) {
				buf_add(&s->sse, "\n\n", 2);
				pos = 0;
				if (sse_parse(s->sse.p, s->sse.len, &pos, event, data)) {
					s->sse.len = 0;
					return 1;
				}
				s->sse.len = 0;
			}
			return 0;
		}
		buf_add(&s->sse, chunk, (size_t)r);
	}
}

void
tl_stream_close(struct tl_stream *s, int abort_conn)
{
	if (s == NULL)
		return;
	io_close(&s->io, abort_conn);
	free(s->headers);
	free(s->sse.p);
	free(s);
}

int
tl_stream_finish(struct tl_stream *s, struct tl_response *out)
{
	struct buf b = { 0 };
	char chunk[65536];
	ssize_t r;

	memset(out, 0, sizeof(*out));
	if (tl_stream_head(s) < 0) {
		tl_stream_close(s, 0);
		return -1;
	}
	buf_add(&b, "", 0);
	while ((r = tl_stream_read(s, chunk, sizeof(chunk), 0)) > 0) {
		buf_add(&b, chunk, (size_t)r);
		if (b.len > TL_MAX_BODY_BYTES) {
			tl_err("response body too large");
			r = -1;
			break;
		}
	}
	if (r < 0) {
		tl_err("reading the body: %s", strerror(errno));
		free(b.p);
		tl_stream_close(s, 0);
		return -1;
	}
	out->status = s->status;
	out->headers = s->headers;
	s->headers = NULL;
	out->body = buf_take(&b, &out->bodylen);
	tl_stream_close(s, 0);
	return 0;
}

int
tl_http_opts(const struct tl_conn_opts *opts, const char *host, int port,
    const char *method, const char *path, const char *extra_headers,
    const void *body, size_t len, struct tl_response *out)
{
	struct tl_stream *s;

	memset(out, 0, sizeof(*out));
	s = tl_stream_open(opts, host, port, method, path, extra_headers, body, len);
	if (s == NULL)
		return -1;
	if (tl_stream_finish(s, out) < 0) {
		tl_err("%s %s: no complete response", method, path);
		return -1;
	}
	return 0;
}

int
tl_http(const char *host, int port, const char *method, const char *path,
    const char *extra_headers, const void *body, size_t len,
    struct tl_response *out)
{
	return tl_http_opts(NULL, host, port, method, path, extra_headers, body, len, out);
}

void
tl_response_free(struct tl_response *r)
{
	if (r == NULL)
		return;
	free(r->headers);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

json_object *
tl_response_json(const struct tl_response *r)
{
	if (r->body == NULL)
		return NULL;
	return json_tokener_parse(r->body);
}

/* ---- SSE over a whole body ------------------------------------------ */

/* Calls fn for each event; stops when fn returns nonzero. */
static void
sse_each(const char *body, int (*fn)(const char *ev, const char *data, void *arg),
    void *arg)
{
	size_t pos = 0, len;
	char *ev, *data;
	int stop;

	if (body == NULL)
		return;
	len = strlen(body);
	while (sse_parse(body, len, &pos, &ev, &data)) {
		stop = fn(ev, data, arg);
		free(ev);
		free(data);
		if (stop)
			return;
	}
	/* A last event without the blank line. */
	if (pos < len) {
		char *tail = tl_asprintf("%s\n\n", body + pos);
		size_t p2 = 0;

		if (sse_parse(tail, strlen(tail), &p2, &ev, &data)) {
			fn(ev, data, arg);
			free(ev);
			free(data);
		}
		free(tail);
	}
}

/* The event's type: its "event:" name, else the data's "type". */
static int
sse_type_is(const char *ev, const char *data, const char *type)
{
	json_object *o, *t;
	int match = 0;

	if (ev != NULL)
		return strcmp(ev, type) == 0;
	o = json_tokener_parse(data);
	if (o != NULL && json_object_object_get_ex(o, "type", &t))
		match = strcmp(json_object_get_string(t), type) == 0;
	json_object_put(o);
	return match;
}

struct sse_count_arg {
	const char	*type;
	int		 n;
	json_object	*found;
	json_object	*all;
};

static int
sse_count_fn(const char *ev, const char *data, void *arg)
{
	struct sse_count_arg *a = arg;

	if (sse_type_is(ev, data, a->type))
		a->n++;
	return 0;
}

int
tl_sse_count(const char *body, const char *event_type)
{
	struct sse_count_arg a = { event_type, 0, NULL, NULL };

	sse_each(body, sse_count_fn, &a);
	return a.n;
}

static int
sse_find_fn(const char *ev, const char *data, void *arg)
{
	struct sse_count_arg *a = arg;

	if (sse_type_is(ev, data, a->type)) {
		json_object_put(a->found);
		a->found = json_tokener_parse(data);
	}
	return 0;
}

json_object *
tl_sse_find(const char *body, const char *event_type)
{
	struct sse_count_arg a = { event_type, 0, NULL, NULL };

	sse_each(body, sse_find_fn, &a);
	return a.found;
}

json_object *
tl_sse_completed(const char *body)
{
	return tl_sse_find(body, "response.completed");
}

static int
sse_all_fn(const char *ev, const char *data, void *arg)
{
	struct sse_count_arg *a = arg;
	json_object *o = json_tokener_parse(data);

	(void)ev;
	if (o != NULL)
		json_object_array_add(a->all, o);
	return 0;
}

json_object *
tl_sse_events(const char *body)
{
	struct sse_count_arg a = { NULL, 0, NULL, json_object_new_array() };

	sse_each(body, sse_all_fn, &a);
	return a.all;
}

/* ---- WebSocket client ------------------------------------------------- */

struct tl_ws {
	struct tl_io	 io;
	char		*headers;	/* of the 101 */
	struct buf	 msg;		/* fragments of the current message */
	int		 msg_op;	/* opcode of the current message, 0 none */
	int		 close_code;
	int		 close_sent;
	int		 closed;	/* close frame received or EOF */
	int		 pongs;
	int		 timeout_ms;
};

static void
b64_std(const unsigned char *in, size_t n, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static int
ws_send_frame(struct tl_ws *ws, int opcode, int fin, const void *data, size_t len)
{
	unsigned char hdr[14], mask[4];
	const unsigned char *p = data;
	unsigned char *frame;
	size_t hl = 0, i;
	int rv;

	hdr[hl++] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len < 126) {
		hdr[hl++] = (unsigned char)(0x80 | len);
	} else if (len <= 0xffff) {
		hdr[hl++] = 0x80 | 126;
		hdr[hl++] = (unsigned char)(len >> 8);
		hdr[hl++] = (unsigned char)len;
	} else {
		hdr[hl++] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			hdr[hl++] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	}
	if (getrandom(mask, sizeof(mask), 0) != (ssize_t)sizeof(mask))
		memcpy(mask, "\x12\x34\x56\x78", 4);
	memcpy(hdr + hl, mask, 4);
	hl += 4;
	frame = tl_xmalloc(hl + len);
	memcpy(frame, hdr, hl);
	for (i = 0; i < len; i++)
		frame[hl + i] = p[i] ^ mask[i & 3];
	rv = io_write_all(&ws->io, frame, hl + len, tl_now_ms() + ws->timeout_ms);
	free(frame);
	return rv;
}

struct tl_ws *
tl_ws_connect_ex(const struct tl_conn_opts *opts, const char *host, int port,
    const char *path, const char *extra_headers, struct tl_response *refusal)
{
	struct tl_conn_opts none = { 0 };
	unsigned char raw[16], sha[SHA_DIGEST_LENGTH];
	char key[32], expect[64], *accept = NULL, *req;
	struct tl_ws *ws;
	struct buf b = { 0 };
	enum body_mode mode;
	uint64_t left;
	int64_t deadline;
	int status = 0;

	if (refusal != NULL)
		memset(refusal, 0, sizeof(*refusal));
	if (opts == NULL)
		opts = &none;
	ws = calloc(1, sizeof(*ws));
	if (ws == NULL)
		return NULL;
	ws->close_code = -1;
	ws->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : TL_DEFAULT_TIMEOUT_MS;
	deadline = tl_now_ms() + ws->timeout_ms;
	if (io_connect(&ws->io, opts, host, port, deadline) < 0) {
		free(ws);
		return NULL;
	}
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		memset(raw, 0x5a, sizeof(raw));
	b64_std(raw, sizeof(raw), key);
	buf_adds(&b, "GET ");
	buf_adds(&b, path);
	buf_adds(&b, " HTTP/1.1\r\nHost: ");
	buf_adds(&b, host);
	{
		char pb[16];

		snprintf(pb, sizeof(pb), ":%d", port);
		buf_adds(&b, pb);
	}
	buf_adds(&b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
	buf_adds(&b, key);
	buf_adds(&b, "\r\n");
	if (extra_headers != NULL)
		buf_adds(&b, extra_headers);
	buf_adds(&b, "\r\n");
	req = buf_take(&b, NULL);
	if (io_write_all(&ws->io, req, strlen(req), deadline) < 0) {
		tl_err("websocket %s: send: %s", path, strerror(errno));
		free(req);
		goto fail;
	}
	free(req);
	if (read_response_head(&ws->io, "GET", deadline, &status, &ws->headers,
	    &mode, &left) < 0) {
		tl_err("websocket %s: no HTTP response (%s)", path, strerror(errno));
		goto fail;
	}
	if (status != 101) {
		if (refusal != NULL) {
			struct tl_stream st;
			char chunk[8192];
			ssize_t r;

			/* Reuse the stream reader for the refusal body. */
			memset(&st, 0, sizeof(st));
			st.io = ws->io;
			st.mode = mode;
			st.left = left;
			st.timeout_ms = ws->timeout_ms;
			st.done = mode == BODY_NONE || (mode == BODY_LENGTH && left == 0);
			buf_add(&b, "", 0);
			while ((r = tl_stream_read(&st, chunk, sizeof(chunk), 0)) > 0)
				buf_add(&b, chunk, (size_t)r);
			ws->io = st.io;
			refusal->status = status;
			refusal->headers = ws->headers;
			ws->headers = NULL;
			refusal->body = buf_take(&b, &refusal->bodylen);
		}
		io_close(&ws->io, 0);
		free(ws->headers);
		free(ws);
		if (refusal != NULL)
			refusal->status = status;
		errno = ECONNREFUSED;
		return NULL;
	}
	/* Sec-WebSocket-Accept = base64(SHA1(key + GUID)). */
	{
		char *cat = tl_asprintf("%s%s", key, WS_GUID);

		SHA1((unsigned char *)cat, strlen(cat), sha);
		free(cat);
	}
	b64_std(sha, sizeof(sha), expect);
	accept = tl_header_get(ws->headers, "sec-websocket-accept");
	if (accept == NULL || strcmp(accept, expect) != 0) {
		tl_err("websocket %s: bad Sec-WebSocket-Accept", path);
		free(accept);
		goto fail;
	}
	free(accept);
	return ws;
fail:
	if (refusal != NULL)
		refusal->status = status;
	io_close(&ws->io, 0);
	free(ws->headers);
	free(ws);
	return NULL;
}

struct tl_ws *
tl_ws_connect(const char *host, int port, const char *path,
    const char *extra_headers, const char *ca_file, int *http_status_out)
{
	struct tl_conn_opts o = { 0 };
	struct tl_response refusal;
	struct tl_ws *ws;

	o.ca_file = ca_file;
	ws = tl_ws_connect_ex(&o, host, port, path, extra_headers, &refusal);
	if (http_status_out != NULL)
		*http_status_out = ws ? 101 : refusal.status;
	tl_response_free(&refusal);
	return ws;
}

const char *
tl_ws_headers(const struct tl_ws *ws)
{
	return ws->headers;
}

int
tl_ws_send_text(struct tl_ws *ws, const char *text, size_t len)
{
	return ws_send_frame(ws, 0x1, 1, text, len);
}

int
tl_ws_send_fragmented(struct tl_ws *ws, const char *text, size_t len, size_t frag)
{
	size_t off = 0, n;
	int first = 1;

	if (frag == 0)
		frag = len ? len : 1;
	do {
		n = len - off < frag ? len - off : frag;
		if (ws_send_frame(ws, first ? 0x1 : 0x0, off + n == len, text + off, n) < 0)
			return -1;
		off += n;
		first = 0;
	} while (off < len);
	return 0;
}

int
tl_ws_send_binary(struct tl_ws *ws, const void *data, size_t len)
{
	return ws_send_frame(ws, 0x2, 1, data, len);
}

int
tl_ws_send_ping(struct tl_ws *ws, const void *data, size_t len)
{
	return ws_send_frame(ws, 0x9, 1, data, len);
}

static enum tl_ws_why
errno_why(void)
{
	if (errno == ETIMEDOUT)
		return TL_WS_TIMEOUT;
	if (errno == ECONNRESET)
		return TL_WS_RESET;
	if (errno == ECONNABORTED)
		return TL_WS_EOF;
	return TL_WS_ERROR;
}

char *
tl_ws_recv_text(struct tl_ws *ws, int timeout_ms, enum tl_ws_why *why)
{
	int64_t deadline = tl_now_ms() + (timeout_ms > 0 ? timeout_ms : ws->timeout_ms);
	enum tl_ws_why dummy;
	const unsigned char *h;
	uint64_t plen;
	size_t hl;
	int fin, op, masked, i;
	char *text;

	if (why == NULL)
		why = &dummy;
	*why = TL_WS_OK;
	for (;;) {
		if (ws->closed) {
			*why = ws->close_code >= 0 ? TL_WS_CLOSED : TL_WS_EOF;
			return NULL;
		}
		/* Parse only whole frames, so a timeout never loses bytes. */
		if (io_ensure(&ws->io, 2, deadline) < 0)
			goto io_fail;
		h = (const unsigned char *)ws->io.rbuf + ws->io.roff;
		fin = h[0] & 0x80;
		op = h[0] & 0x0f;
		masked = h[1] & 0x80;
		plen = h[1] & 0x7f;
		hl = 2;
		if (plen == 126)
			hl += 2;
		else if (plen == 127)
			hl += 8;
		if (masked)
			hl += 4;
		if (io_ensure(&ws->io, hl, deadline) < 0)
			goto io_fail;
		h = (const unsigned char *)ws->io.rbuf + ws->io.roff;
		if (plen == 126) {
			plen = (uint64_t)h[2] << 8 | h[3];
		} else if (plen == 127) {
			plen = 0;
			for (i = 0; i < 8; i++)
				plen = plen << 8 | h[2 + i];
		}
		if (plen > TL_MAX_WS_MESSAGE) {
			tl_err("websocket frame too large (%llu bytes)",
			    (unsigned long long)plen);
			*why = TL_WS_ERROR;
			return NULL;
		}
		if (io_ensure(&ws->io, hl + (size_t)plen, deadline) < 0)
			goto io_fail;
		h = (const unsigned char *)ws->io.rbuf + ws->io.roff;
		{
			unsigned char *payload = tl_xmalloc((size_t)plen + 1);
			size_t k;

			memcpy(payload, h + hl, (size_t)plen);
			if (masked)
				for (k = 0; k < plen; k++)
					payload[k] ^= h[hl - 4 + (k & 3)];
			payload[plen] = '\0';
			ws->io.roff += hl + (size_t)plen;

			switch (op) {
			case 0x8:	/* close */
				ws->close_code = plen >= 2 ?
				    (payload[0] << 8 | payload[1]) : 1005;
				ws->closed = 1;
				if (!ws->close_sent) {
					ws_send_frame(ws, 0x8, 1, payload, plen >= 2 ? 2 : 0);
					ws->close_sent = 1;
				}
				free(payload);
				*why = TL_WS_CLOSED;
				return NULL;
			case 0x9:	/* ping */
				ws_send_frame(ws, 0xA, 1, payload, (size_t)plen);
				free(payload);
				continue;
			case 0xA:	/* pong */
				ws->pongs++;
				free(payload);
				continue;
			case 0x1:
			case 0x2:
				if (ws->msg_op != 0) {
					tl_err("websocket: new message inside a fragmented one");
					free(payload);
					*why = TL_WS_ERROR;
					return NULL;
				}
				ws->msg_op = op;
				ws->msg.len = 0;
				break;
			case 0x0:
				if (ws->msg_op == 0) {
					tl_err("websocket: continuation without a message");
					free(payload);
					*why = TL_WS_ERROR;
					return NULL;
				}
				break;
			default:
				tl_err("websocket: unknown opcode %d", op);
				free(payload);
				*why = TL_WS_ERROR;
				return NULL;
			}
			buf_add(&ws->msg, payload, (size_t)plen);
			free(payload);
		}
		if (ws->msg.len > TL_MAX_WS_MESSAGE) {
			*why = TL_WS_ERROR;
			return NULL;
		}
		if (!fin)
			continue;
		if (ws->msg_op == 0x2) {
			tl_err("websocket: unexpected binary message (%zu bytes)", ws->msg.len);
			ws->msg_op = 0;
			ws->msg.len = 0;
			*why = TL_WS_ERROR;
			return NULL;
		}
		ws->msg_op = 0;
		text = buf_take(&ws->msg, NULL);
		return text;
	}
io_fail:
	*why = errno_why();
	if (*why == TL_WS_EOF || *why == TL_WS_RESET)
		ws->closed = 1;
	return NULL;
}

int
tl_ws_close_code(const struct tl_ws *ws)
{
	return ws->close_code;
}

int
tl_ws_pongs(const struct tl_ws *ws)
{
	return ws->pongs;
}

void
tl_ws_close(struct tl_ws *ws)
{
	unsigned char code[2] = { 0x03, 0xe8 };	/* 1000 */
	enum tl_ws_why why;
	char *t;
	int64_t deadline;

	if (ws == NULL)
		return;
	if (!ws->closed && !ws->close_sent) {
		if (ws_send_frame(ws, 0x8, 1, code, 2) == 0) {
			ws->close_sent = 1;
			/* Wait briefly for the peer's close so it sees a clean end. */
			deadline = tl_now_ms() + 2000;
			while (!ws->closed && tl_now_ms() < deadline) {
				t = tl_ws_recv_text(ws, remaining_ms(deadline) + 1, &why);
				free(t);
				if (why != TL_WS_OK)
					break;
			}
		}
	}
	io_close(&ws->io, 0);
	free(ws->headers);
	free(ws->msg.p);
	free(ws);
}

void
tl_ws_abort(struct tl_ws *ws)
{
	if (ws == NULL)
		return;
	io_close(&ws->io, 1);
	free(ws->headers);
	free(ws->msg.p);
	free(ws);
}

const char *
tl_ws_why_name(enum tl_ws_why why)
{
	switch (why) {
	case TL_WS_OK:		return "ok";
	case TL_WS_CLOSED:	return "closed";
	case TL_WS_EOF:		return "eof";
	case TL_WS_RESET:	return "reset";
	case TL_WS_TIMEOUT:	return "timeout";
	case TL_WS_ERROR:	return "error";
	}
	return "?";
}

static int
is_terminal(const char *type)
{
	return strcmp(type, "response.completed") == 0 ||
	    strcmp(type, "response.failed") == 0 ||
	    strcmp(type, "response.incomplete") == 0 ||
	    strcmp(type, "error") == 0;
}

json_object *
tl_ws_collect(struct tl_ws *ws, int timeout_ms, enum tl_ws_why *why)
{
	int64_t deadline = tl_now_ms() + (timeout_ms > 0 ? timeout_ms : ws->timeout_ms);
	json_object *frames = json_object_new_array(), *o, *t;
	enum tl_ws_why dummy;
	char *text;

	if (why == NULL)
		why = &dummy;
	for (;;) {
		text = tl_ws_recv_text(ws, remaining_ms(deadline) + 1, why);
		if (text == NULL)
			return frames;
		o = json_tokener_parse(text);
		if (o == NULL) {
			tl_err("websocket: skipping a non-JSON frame: %.60s", text);
			free(text);
			continue;
		}
		free(text);
		json_object_array_add(frames, o);
		if (json_object_object_get_ex(o, "type", &t) &&
		    json_object_is_type(t, json_type_string) &&
		    is_terminal(json_object_get_string(t))) {
			*why = TL_WS_OK;
			return frames;
		}
	}
}

json_object *
tl_ws_turn(struct tl_ws *ws, const char *request, int timeout_ms, enum tl_ws_why *why)
{
	if (tl_ws_send_text(ws, request, strlen(request)) < 0) {
		if (why != NULL)
			*why = errno_why();
		return json_object_new_array();
	}
	return tl_ws_collect(ws, timeout_ms, why);
}

/* ---- frames and usage ------------------------------------------------- */

static const char *
frame_type(json_object *o)
{
	json_object *t;

	if (json_object_object_get_ex(o, "type", &t) &&
	    json_object_is_type(t, json_type_string))
		return json_object_get_string(t);
	return "";
}

json_object *
tl_frames_find(json_object *frames, const char *type)
{
	size_t i, n;
	json_object *o;

	if (frames == NULL)
		return NULL;
	n = json_object_array_length(frames);
	for (i = n; i > 0; i--) {
		o = json_object_array_get_idx(frames, i - 1);
		if (strcmp(frame_type(o), type) == 0)
			return o;
	}
	return NULL;
}

int
tl_frames_count(json_object *frames, const char *type)
{
	size_t i, n;
	int c = 0;

	if (frames == NULL)
		return 0;
	n = json_object_array_length(frames);
	for (i = 0; i < n; i++)
		if (strcmp(frame_type(json_object_array_get_idx(frames, i)), type) == 0)
			c++;
	return c;
}

char *
tl_frames_types(json_object *frames)
{
	struct buf b = { 0 };
	size_t i, n;

	buf_add(&b, "", 0);
	n = frames ? json_object_array_length(frames) : 0;
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_add(&b, " ", 1);
		buf_adds(&b, frame_type(json_object_array_get_idx(frames, i)));
	}
	return buf_take(&b, NULL);
}

static int64_t
get_i64(json_object *o, const char *key)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, key, &v))
		return json_object_get_int64(v);
	return 0;
}

int
tl_usage_of(json_object *completed, struct tl_usage *u)
{
	json_object *resp = completed, *inner, *usage, *d;

	memset(u, 0, sizeof(*u));
	if (completed == NULL)
		return -1;
	/* an event carries the response inside; a response object is itself */
	if (json_object_object_get_ex(completed, "response", &inner))
		resp = inner;
	if (resp == NULL || !json_object_object_get_ex(resp, "usage", &usage) ||
	    !json_object_is_type(usage, json_type_object))
		return -1;
	u->input_tokens = get_i64(usage, "input_tokens");
	u->output_tokens = get_i64(usage, "output_tokens");
	u->total_tokens = get_i64(usage, "total_tokens");
	if (json_object_object_get_ex(usage, "input_tokens_details", &d))
		u->cached_tokens = get_i64(d, "cached_tokens");
	return 0;
}

const char *
tl_response_id(json_object *completed)
{
	json_object *resp = completed, *inner, *id;

	if (completed == NULL)
		return NULL;
	if (json_object_object_get_ex(completed, "response", &inner))
		resp = inner;
	if (resp != NULL && json_object_object_get_ex(resp, "id", &id) &&
	    json_object_is_type(id, json_type_string))
		return json_object_get_string(id);
	return NULL;
}

/* ---- request builders --------------------------------------------------- */

char *
tl_text(size_t kib, unsigned seed)
{
	static const char *const words[] = {
		"the", "pool", "keeps", "every", "conversation", "on", "one",
		"warm", "socket", "so", "cache", "prefix", "stays", "hot", "while",
		"tokens", "flow", "through", "workers", "and", "accounts", "rotate",
		"quietly", "under", "load", "with", "careful", "limits", "for",
		"each", "queue", "buffer", "request", "stream", "upstream", "reply",
	};
	size_t n = kib * 1024, len = 0, wl;
	uint64_t x = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)seed * 0x100000001b3ULL);
	char *out = tl_xmalloc(n + 1);
	const char *w;

	while (len < n) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w = words[x % (sizeof(words) / sizeof(words[0]))];
		wl = strlen(w);
		if (len + wl + 1 > n) {
			memset(out + len, '.', n - len);
			len = n;
			break;
		}
		memcpy(out + len, w, wl);
		len += wl;
		out[len++] = (x >> 32) % 11 == 0 ? '\n' : ' ';
	}
	out[n] = '\0';
	return out;
}

json_object *
tl_msg(const char *role, const char *text)
{
	json_object *m = json_object_new_object(), *content, *part;
	int assistant = strcmp(role, "assistant") == 0;

	json_object_object_add(m, "type", json_object_new_string("message"));
	json_object_object_add(m, "role", json_object_new_string(role));
	content = json_object_new_array();
	part = json_object_new_object();
	json_object_object_add(part, "type",
	    json_object_new_string(assistant ? "output_text" : "input_text"));
	json_object_object_add(part, "text", json_object_new_string(text));
	json_object_array_add(content, part);
	json_object_object_add(m, "content", content);
	return m;
}

static json_object *
req_object(const struct tl_req *r, int ws)
{
	json_object *o = json_object_new_object(), *inc;

	if (ws)
		json_object_object_add(o, "type", json_object_new_string("response.create"));
	json_object_object_add(o, "model",
	    json_object_new_string(r->model ? r->model : "gpt-5.4"));
	if (r->instructions != NULL)
		json_object_object_add(o, "instructions",
		    json_object_new_string(r->instructions));
	if (ws && r->previous_response_id != NULL)
		json_object_object_add(o, "previous_response_id",
		    json_object_new_string(r->previous_response_id));
	json_object_object_add(o, "input", r->input ? json_object_get(r->input) :
	    json_object_new_array());
	json_object_object_add(o, "tools", r->tools ? json_object_get(r->tools) :
	    json_object_new_array());
	json_object_object_add(o, "tool_choice", json_object_new_string("auto"));
	json_object_object_add(o, "parallel_tool_calls", json_object_new_boolean(0));
	json_object_object_add(o, "reasoning", NULL);
	json_object_object_add(o, "store", json_object_new_boolean(0));
	json_object_object_add(o, "stream", json_object_new_boolean(ws ? 1 : r->stream));
	inc = json_object_new_array();
	json_object_object_add(o, "include", inc);
	if (r->prompt_cache_key != NULL)
		json_object_object_add(o, "prompt_cache_key",
		    json_object_new_string(r->prompt_cache_key));
	if (ws && r->prewarm)
		json_object_object_add(o, "generate", json_object_new_boolean(0));
	return o;
}

static char *
req_string(json_object *o)
{
	char *s = tl_xstrdup(json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));

	json_object_put(o);
	return s;
}

char *
tl_req_ws(const struct tl_req *r)
{
	return req_string(req_object(r, 1));
}

char *
tl_req_http(const struct tl_req *r)
{
	return req_string(req_object(r, 0));
}

char *
tl_responses_body(const char *model, const char *instructions,
    const char *prompt_cache_key, int stream, json_object *input)
{
	struct tl_req r = { 0 };

	r.model = model;
	r.instructions = instructions;
	r.prompt_cache_key = prompt_cache_key;
	r.stream = stream;
	r.input = input;
	return tl_req_http(&r);
}

char *
tl_response_create(const char *model, const char *instructions,
    const char *prompt_cache_key, const char *previous_response_id,
    json_object *input)
{
	struct tl_req r = { 0 };

	r.model = model;
	r.instructions = instructions;
	r.prompt_cache_key = prompt_cache_key;
	r.previous_response_id = previous_response_id;
	r.input = input;
	return tl_req_ws(&r);
}

static int
add_output_item(json_object *history, json_object *frame)
{
	json_object *item, *copy = NULL;

	if (strcmp(frame_type(frame), "response.output_item.done") != 0 ||
	    !json_object_object_get_ex(frame, "item", &item))
		return 0;
	if (json_object_deep_copy(item, &copy, NULL) != 0)
		return 0;
	json_object_object_del(copy, "id");
	json_object_object_del(copy, "status");
	json_object_array_add(history, copy);
	return 1;
}

int
tl_history_add_output(json_object *history, json_object *frames)
{
	size_t i, n;
	int added = 0;

	if (frames == NULL)
		return 0;
	n = json_object_array_length(frames);
	for (i = 0; i < n; i++)
		added += add_output_item(history, json_object_array_get_idx(frames, i));
	return added;
}

int
tl_history_add_sse(json_object *history, const char *sse_body)
{
	json_object *events = tl_sse_events(sse_body);
	int n = tl_history_add_output(history, events);

	json_object_put(events);
	return n;
}

char *
tl_output_text(json_object *frames)
{
	struct buf b = { 0 };
	json_object *f, *item, *content, *part, *text;
	size_t i, j, n, m;

	buf_add(&b, "", 0);
	n = frames ? json_object_array_length(frames) : 0;
	for (i = 0; i < n; i++) {
		f = json_object_array_get_idx(frames, i);
		if (strcmp(frame_type(f), "response.output_item.done") != 0 ||
		    !json_object_object_get_ex(f, "item", &item) ||
		    !json_object_object_get_ex(item, "content", &content) ||
		    !json_object_is_type(content, json_type_array))
			continue;
		m = json_object_array_length(content);
		for (j = 0; j < m; j++) {
			part = json_object_array_get_idx(content, j);
			if (json_object_object_get_ex(part, "text", &text))
				buf_adds(&b, json_object_get_string(text));
		}
	}
	return buf_take(&b, NULL);
}

/* ---- the simulator ---------------------------------------------------- */

static const struct tl_conn_opts *
sim_opts(const struct tl_sim *sim, struct tl_conn_opts *o)
{
	memset(o, 0, sizeof(*o));
	if (sim->tls)
		o->ca_file = sim->ca_file;
	return o;
}

int
tl_sim_start(struct tl_sim *sim, const char *dir, const char *extra_args)
{
	char *argv[128], *args = NULL, *tok, *save = NULL, *port_file, *port_text;
	char *prog = tl_program("sim/codexpool-sim");
	char listen[] = "127.0.0.1:0";
	int argc = 0, have_accounts = 0, i, rv = -1;
	int64_t deadline;
	struct stat st;

	memset(sim, 0, sizeof(*sim));
	sim->pid = -1;
	snprintf(sim->dir, sizeof(sim->dir), "%s", dir);
	snprintf(sim->log, sizeof(sim->log), "%s/sim.log", dir);
	snprintf(sim->auth_dir, sizeof(sim->auth_dir), "%s/auth", dir);
	port_file = tl_asprintf("%s/sim.port", dir);
	unlink(port_file);
	sim->naccounts = 2;

	argv[argc++] = prog;
	argv[argc++] = "--listen";
	argv[argc++] = listen;
	argv[argc++] = "--port-file";
	argv[argc++] = port_file;
	argv[argc++] = "--auth-dir";
	argv[argc++] = sim->auth_dir;
	if (extra_args != NULL) {
		args = tl_xstrdup(extra_args);
		for (tok = strtok_r(args, " \t", &save); tok != NULL && argc < 120;
		    tok = strtok_r(NULL, " \t", &save)) {
			if (strcmp(tok, "--accounts") == 0)
				have_accounts = 1;
			if (strcmp(tok, "--tls-cert") == 0)
				sim->tls = 1;
			argv[argc++] = tok;
		}
	}
	for (i = 0; i < argc - 1; i++)
		if (strcmp(argv[i], "--accounts") == 0)
			sim->naccounts = atoi(argv[i + 1]);
	if (!have_accounts) {
		argv[argc++] = "--accounts";
		argv[argc++] = "2";
	}
	argv[argc] = NULL;
	if (sim->tls) {
		snprintf(sim->ca_file, sizeof(sim->ca_file), "%s/ca.pem", dir);
		if (stat(sim->ca_file, &st) < 0)
			sim->ca_file[0] = '\0';
	}

	sim->pid = tl_spawn(sim->log, argv);
	if (sim->pid < 0)
		goto out;
	deadline = tl_now_ms() + TL_DEFAULT_TIMEOUT_MS;
	while (tl_wait_file(port_file, 20) < 0) {
		if (!tl_alive(sim->pid) || tl_now_ms() >= deadline) {
			char *log = tl_read_file(sim->log, NULL);

			tl_err("codexpool-sim did not start; its log:\n%s",
			    log ? log : "(none)");
			free(log);
			tl_stop(sim->pid, SIGKILL, 5000);
			sim->pid = -1;
			goto out;
		}
	}
	port_text = tl_read_file(port_file, NULL);
	sim->port = port_text ? atoi(port_text) : 0;
	free(port_text);
	if (sim->port <= 0 || sim->port > 65535) {
		tl_err("bad port file %s", port_file);
		goto out;
	}
	rv = 0;
out:
	free(port_file);
	free(args);
	free(prog);
	return rv;
}

int
tl_sim_stop(struct tl_sim *sim)
{
	int rv;

	if (sim->pid <= 0)
		return -1000;
	rv = tl_stop(sim->pid, SIGTERM, 20000);
	sim->pid = -1;
	return rv;
}

json_object *
tl_sim_state(struct tl_sim *sim)
{
	struct tl_conn_opts o;
	struct tl_response r;
	json_object *state;

	if (tl_http_opts(sim_opts(sim, &o), "127.0.0.1", sim->port, "GET",
	    "/sim/state", NULL, NULL, 0, &r) < 0)
		return NULL;
	state = r.status == 200 ? tl_response_json(&r) : NULL;
	if (state == NULL)
		tl_err("GET /sim/state: status %d", r.status);
	tl_response_free(&r);
	return state;
}

static int
sim_post(struct tl_sim *sim, const char *path, const char *json)
{
	struct tl_conn_opts o;
	struct tl_response r;
	int status;

	if (tl_http_opts(sim_opts(sim, &o), "127.0.0.1", sim->port, "POST", path,
	    NULL, json, strlen(json), &r) < 0)
		return -1;
	status = r.status;
	if (status != 200)
		tl_err("POST %s: %d %s", path, status, r.body ? r.body : "");
	tl_response_free(&r);
	return status == 200 ? 0 : -1;
}

int
tl_sim_fault(struct tl_sim *sim, const char *json)
{
	return sim_post(sim, "/sim/fault", json);
}

int
tl_sim_reset(struct tl_sim *sim)
{
	return sim_post(sim, "/sim/reset", "{}");
}

void
tl_sim_auth_path(const struct tl_sim *sim, int n, char *buf, size_t size)
{
	snprintf(buf, size, "%s/account-%d.json", sim->auth_dir, n);
}

static char *
dup_member(json_object *o, const char *key)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return tl_xstrdup(json_object_get_string(v));
	return NULL;
}

int
tl_read_auth(const char *path, struct tl_account *acct)
{
	json_object *o, *tokens = NULL;
	char *text = tl_read_file(path, NULL);

	memset(acct, 0, sizeof(*acct));
	if (text == NULL) {
		tl_err("cannot read %s", path);
		return -1;
	}
	o = json_tokener_parse(text);
	free(text);
	if (o == NULL || !json_object_object_get_ex(o, "tokens", &tokens)) {
		tl_err("%s is not an auth.json", path);
		json_object_put(o);
		return -1;
	}
	acct->access_token = dup_member(tokens, "access_token");
	acct->refresh_token = dup_member(tokens, "refresh_token");
	acct->id_token = dup_member(tokens, "id_token");
	acct->account_id = dup_member(tokens, "account_id");
	json_object_put(o);
	if (acct->access_token == NULL || acct->account_id == NULL) {
		tl_account_free(acct);
		return -1;
	}
	return 0;
}

int
tl_sim_account(const struct tl_sim *sim, int n, struct tl_account *acct)
{
	char path[700];

	tl_sim_auth_path(sim, n, path, sizeof(path));
	return tl_read_auth(path, acct);
}

void
tl_account_free(struct tl_account *acct)
{
	free(acct->access_token);
	free(acct->refresh_token);
	free(acct->id_token);
	free(acct->account_id);
	memset(acct, 0, sizeof(*acct));
}

char *
tl_auth_headers(const struct tl_account *acct)
{
	return tl_asprintf("authorization: Bearer %s\r\n"
	    "chatgpt-account-id: %s\r\n"
	    "openai-beta: responses_websockets=2026-02-06\r\n"
	    "originator: codex_exec\r\n",
	    acct->access_token ? acct->access_token : "",
	    acct->account_id ? acct->account_id : "");
}
