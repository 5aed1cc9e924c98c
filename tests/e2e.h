/*
 * The end-to-end fixture: a private directory, a real codexpool-sim, a
 * real codexpoold configured against it, codexpoolctl over the real
 * control socket, and a stateless client.  Shared by the e2e runners.
 */
#ifndef CODEXPOOL_E2E_H
#define CODEXPOOL_E2E_H

#include <sys/types.h>
#include <check.h>
#include <json-c/json.h>

#include "testlib.h"

#define INSTR_KIB	16	/* ~4096 tokens of instructions: past the cache floor */
#define WAIT_MS		30000

struct e2e {
	char		*dir;
	struct tl_sim	 sim;
	pid_t		 daemon;
	char		 conf[700];
	char		 ctl[700];
	char		 log[700];
	int		 port;
	char		*instructions;
};

/* Starts the simulator (extra sim_args) and the daemon (extra config lines). */
void	e2e_start(struct e2e *e, const char *sim_args, const char *conf_extra);
/* Stops both; fails the test if the daemon did not exit 0 or its log has
 * a sanitizer report. */
void	e2e_stop(struct e2e *e);
/* Stop (cleanly, checked like e2e_stop) and start the daemon alone, on the
 * same directory and configuration: a restart. */
void	e2e_daemon_stop(struct e2e *e);
void	e2e_daemon_start(struct e2e *e);
/* Runs codexpoolctl with the words of fmt; returns its exit status. */
int	ctl_run(struct e2e *e, char **out, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
long long status_num(struct e2e *e, const char *key);
int	wait_status(struct e2e *e, const char *key, long long want);
long long sim_num(struct e2e *e, const char *key);

/* A stateless client: the full history every turn. */
struct conv {
	json_object	*history;
	const char	*key;		/* prompt_cache_key, or NULL */
	const char	*headers;	/* extra request headers, or NULL */
	int		 turns;
};

void	conv_init(struct conv *c, const char *key);
void	conv_free(struct conv *c);
int	conv_turn(struct e2e *e, struct conv *c, const char *text, int stream,
	    struct tl_usage *u, struct tl_response *keep);
double	ratio(const struct tl_usage *u);
/* A streamed turn whose first event was read: it holds its connection. */
struct tl_stream *open_held_stream(struct e2e *e, struct conv *c, const char *text);
/* Reads the rest; *completed says whether response.completed came. */
int	drain_stream(struct tl_stream *s, int *completed);

/* `account list` field of the account whose label or entry is who: 0, or -1. */
int	account_field(struct e2e *e, const char *who, const char *field, char *out, size_t len);
/* Waits until that field contains want: 0, or -1 after WAIT_MS. */
int	wait_account_field(struct e2e *e, const char *who, const char *field, const char *want);
/* The account id the simulator saw on its newest request (caller frees), or NULL. */
char	*last_sim_account(struct e2e *e);

/* Runs a runner's suite (CK_ENV), kills leftover processes, returns the exit status. */
int	e2e_run(Suite *s);

#endif
