/*
 * codexpool-sim --procs N: one listening port, N service processes.
 *
 * The parent opens N listening sockets on one port (an SO_REUSEPORT group:
 * the kernel spreads new connections over them and wakes only the one
 * that gets it), then forks N children that each run their own
 * libwebsockets context (their own backends, prompt caches, records) on
 * one of the sockets.  A connection lives in the child that accepted it,
 * as a connection to one gateway instance does.  lws 4.1.6 sets
 * SO_REUSEPORT only with several service threads and binds its own
 * socket, so the children adopt the inherited one instead: lws watches it
 * as a raw file descriptor and the callback accepts and hands each
 * connection to lws_adopt_socket_vhost().  The parent binds all N before
 * the fork, so the port is never free in between.
 */
#ifndef SIM_PROCS_H
#define SIM_PROCS_H

#include <stddef.h>

#include <libwebsockets.h>

#define SIM_MAX_PROCS		64
#define SIM_LISTEN_PROTOCOL	"codexpool-sim-listen"

/* n non-blocking listening TCP sockets in fds, all on host:port (port 0:
 * the kernel picks one) with SO_REUSEPORT; the port in *bound.  0, or -1
 * with err filled (and nothing left open). */
int	procs_listen(const char *host, int port, int n, int *fds, int *bound,
	    char *err, size_t errlen);

/*
 * Forks nprocs children; each calls child_main(index, arg) and exits with
 * its return value.  The parent then waits: SIGTERM or SIGINT stops every
 * child (SIGTERM) and waits for them; a child that dies on its own stops
 * the others too.  Returns the parent's exit status (0: all children
 * exited 0 after a requested stop).  Children die with the parent
 * (PR_SET_PDEATHSIG).
 */
int	procs_run(int nprocs, int (*child_main)(int index, void *arg), void *arg);

/* The listener protocol's callback (lws_protocols entry named
 * SIM_LISTEN_PROTOCOL) and its setup: lws watches listen_fd and every
 * readable wakeup accepts what is pending.  0 on success. */
int	procs_listen_callback(struct lws *wsi, enum lws_callback_reasons reason,
	    void *user, void *in, size_t len);
int	procs_adopt_listener(struct lws_vhost *vh, int listen_fd);

#endif
