/*
 * codexpool-sim --procs N: one listening socket, N service processes.
 *
 * The parent binds and listens, then forks N children that each run their
 * own libwebsockets context (their own backends, prompt caches, records)
 * and accept from the shared socket.  A connection lives in the child that
 * accepted it, as a connection to one gateway instance does.  lws 4.1.6
 * sets SO_REUSEPORT only with several service threads, so the children
 * adopt the inherited listening socket instead: lws watches it as a raw
 * file descriptor and the callback accepts and hands each connection to
 * lws_adopt_socket_vhost().
 */
#ifndef SIM_PROCS_H
#define SIM_PROCS_H

#include <stddef.h>

#include <libwebsockets.h>

#define SIM_MAX_PROCS		64
#define SIM_LISTEN_PROTOCOL	"codexpool-sim-listen"

/* A non-blocking listening TCP socket on host:port (port 0: any), its
 * bound port in *bound; -1 with err filled on failure. */
int	procs_listen(const char *host, int port, int *bound, char *err,
	    size_t errlen);

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
