/*
 * The benches' rig: codexpool-sim and codexpoold on loopback, in a
 * private temp dir, the daemon's port read from `codexpoolctl status`.
 * One copy for every mode of codexpool-bench.
 */
#ifndef CODEXPOOL_BENCH_RIG_H
#define CODEXPOOL_BENCH_RIG_H

#include <stdbool.h>
#include <sys/types.h>

#include "testlib.h"

#define RIG_START_WAIT_MS	180000	/* a daemon under valgrind starts slowly */
#define RIG_CTL_WAIT_MS		60000

struct rig {
	char		*dir;
	struct tl_sim	 sim;
	pid_t		 daemon;
	int		 port;
	char		 ctl[700];
	char		 conf[700];
	char		 log[700];
};

/* "codexpool-bench: ...", every process started stopped, exit 1. */
void	die(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * Start the simulator (sim_args) and the daemon (conf_extra, then the
 * environment's CODEXPOOL_BENCH_CONF, appended to its configuration), or
 * die.  builddir (NULL: as set) picks the
 * binaries; tls puts the simulator behind wss:// with certificates made
 * here; CODEXPOOL_BENCH_WRAP, if set, is a command line the daemon runs
 * under (valgrind, strace).
 */
void	rig_start(struct rig *r, const char *builddir, bool tls,
	    const char *sim_args, const char *conf_extra);
void	rig_stop(struct rig *r);

/* codexpoolctl a1 [a2]: 0 when it exits 0.  Its output goes to stdout
 * when print, and into *text (malloc'd) when text is not NULL. */
int	rig_ctl(struct rig *r, bool print, char **text, const char *a1,
	    const char *a2);

#endif
