/*
 * codexpool-sim --procs N: the listening sockets (one SO_REUSEPORT group),
 * the children, and the accept callback that hands connections to lws
 * (see procs.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "procs.h"

/* Connections accepted per wakeup, so that accepting never starves the
 * connections already served. */
#define ACCEPT_BURST	32

static volatile sig_atomic_t parent_stop, child_exited;
static int listen_fd_adopted = -1;

/* One listening socket on ai (port 0 in ai: any); -1 on failure. */
static int
listen_one(const struct addrinfo *ai, int reuseport)
{
	int fd, on = 1;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    ai->ai_protocol);
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if ((reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on,
	    sizeof(on)) < 0) || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
set_port(struct sockaddr *sa, int port)
{
	if (sa->sa_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

int
procs_listen(const char *host, int port, int n, int *fds, int *bound, char *err,
    size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char portstr[16];
	int i, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	if ((rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	fds[0] = -1;
	for (ai = res; ai != NULL && fds[0] < 0; ai = ai->ai_next)
		if ((fds[0] = listen_one(ai, 1)) >= 0)
			break;
	if (fds[0] < 0 || getsockname(fds[0], (struct sockaddr *)&ss, &sl) < 0) {
		snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port,
		    strerror(errno));
		if (fds[0] >= 0)
			close(fds[0]);
		goto fail;
	}
	*bound = ntohs(ss.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
	/* The others join the first one's port (SO_REUSEPORT group). */
	set_port(ai->ai_addr, *bound);
	for (i = 1; i < n; i++) {
		if ((fds[i] = listen_one(ai, 1)) < 0) {
			snprintf(err, errlen, "cannot listen on %s:%d again "
			    "(SO_REUSEPORT): %s", host, *bound, strerror(errno));
			while (--i >= 0)
				close(fds[i]);
			goto fail;
		}
	}
	freeaddrinfo(res);
	return 0;
fail:
	freeaddrinfo(res);
	return -1;
}

static void
on_parent_signal(int sig)
{
	if (sig == SIGCHLD)
		child_exited = 1;
	else
		parent_stop = 1;
}

/* Reaps what has exited; returns how many children are left. */
static int
reap(pid_t *pids, int n, int *bad)
{
	int status, i, left = 0;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0; i < n; i++) {
			if (pids[i] != pid)
				continue;
			pids[i] = -1;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				log_warnx("service process %d (pid %d) ended: %s %d", i,
				    (int)pid, WIFEXITED(status) ? "exit status" : "signal",
				    WIFEXITED(status) ? WEXITSTATUS(status) :
				    WTERMSIG(status));
				*bad = 1;
			} else if (!parent_stop) {
				log_warnx("service process %d (pid %d) exited", i,
				    (int)pid);
				*bad = 1;
			}
		}
	}
	for (i = 0; i < n; i++)
		if (pids[i] > 0)
			left++;
	return left;
}

int
procs_run(int nprocs, int (*child_main)(int index, void *arg), void *arg)
{
	struct sigaction sa;
	sigset_t block, old;
	pid_t pids[SIM_MAX_PROCS], parent = getpid();
	int i, bad = 0, stopping = 0;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &old);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_parent_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);

	for (i = 0; i < nprocs; i++) {
		fflush(NULL);
		if ((pids[i] = fork()) < 0) {
			log_warn("fork");
			bad = 1;
			nprocs = i;
			break;
		}
		if (pids[i] == 0) {
			memset(&sa, 0, sizeof(sa));
			sa.sa_handler = SIG_DFL;
			sigemptyset(&sa.sa_mask);
			sigaction(SIGCHLD, &sa, NULL);
			/* child_main installs its own SIGTERM/SIGINT handlers. */
			if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 ||
			    getppid() != parent)
				_exit(1);
			sigprocmask(SIG_SETMASK, &old, NULL);
			exit(child_main(i, arg));
		}
	}
	log_info("%d service processes started", nprocs);

	while (reap(pids, nprocs, &bad) > 0) {
		if ((parent_stop || bad) && !stopping) {
			stopping = 1;
			for (i = 0; i < nprocs; i++)
				if (pids[i] > 0)
					kill(pids[i], SIGTERM);
		}
		/* Signals stay blocked outside sigsuspend: none is lost
		 * between the checks above and the wait. */
		child_exited = 0;
		sigsuspend(&old);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return bad ? 1 : 0;
}

static void
accept_pending(struct lws_vhost *vh, int fd)
{
	static int warned;
	int i, c, on = 1;

	for (i = 0; i < ACCEPT_BURST; i++) {
		c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK && !warned) {
				/* EMFILE: the next wakeups retry; say it once. */
				log_warn("accept");
				warned = 1;
			}
			return;
		}
		/* What lws sets on the sockets it accepts itself. */
		(void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
		if (lws_adopt_socket_vhost(vh, c) == NULL)
			log_warnx("cannot adopt an accepted connection");
	}
}

int
procs_listen_callback(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len)
{
	(void)user;
	(void)in;
	(void)len;
	if (reason == LWS_CALLBACK_RAW_RX_FILE && listen_fd_adopted >= 0)
		accept_pending(lws_get_vhost(wsi), listen_fd_adopted);
	return 0;
}

int
procs_adopt_listener(struct lws_vhost *vh, int listen_fd)
{
	lws_sock_file_fd_type fd;

	fd.filefd = listen_fd;
	listen_fd_adopted = listen_fd;
	if (lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, fd,
	    SIM_LISTEN_PROTOCOL, NULL) == NULL) {
		listen_fd_adopted = -1;
		return -1;
	}
	return 0;
}
