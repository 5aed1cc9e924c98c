/*
 * Logging for every codexpool process.
 *
 * In the foreground lines go to stderr, otherwise to syslog.  Every line
 * passes through log_redact() first, so a bearer token, a JWT or a refresh
 * token that slips into a message never reaches a log.  Objects that want
 * their lines grepped together (a request, an account, a connection) pass
 * a prefix: olog(LOG_LVL_INFO, "rid=9c1e acct=3fa2", "...").
 */
#ifndef CODEXPOOL_LOG_H
#define CODEXPOOL_LOG_H

#include <stddef.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

/* procname appears in every line ("codexpoold", "worker 2"). */
void	log_init(const char *procname, int foreground, enum log_level level);
void	log_set_procname(const char *procname);
void	log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug" -> level; -1 if unknown. */
int	log_level_from_name(const char *name);
/* Reopen an append-mode log file (SIGUSR1); NULL path means stderr/syslog. */
int	log_set_file(const char *path);

void	log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   /* appends ": strerror(errno)" */
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));  /* with errno */
void	fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Per-object lines: prefix is written before the message, e.g. "rid=0000002a acct=3fa2". */
void	olog(enum log_level level, const char *prefix, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

/*
 * A line that can repeat fast (an accept() error under fd exhaustion):
 * at most one per interval_usec per call site; the next line written says
 * how many were suppressed.  One static struct log_ratelimit per site.
 */
struct log_ratelimit {
	long long	interval_usec;
	long long	last;		/* monotonic usec of the last line, 0: none */
	unsigned long long suppressed;
};
#define LOG_RATELIMIT_INIT(usec)	{ (usec), 0, 0 }

/* true: write a line now, *suppressed lines were dropped since the last. */
int	log_ratelimit_allow(struct log_ratelimit *rl, long long now_usec,
	    unsigned long long *suppressed);
void	log_ratelimited(struct log_ratelimit *rl, enum log_level level,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Replace secrets in buf (NUL-terminated, edited in place) with "[redacted]":
 * "Bearer <tok>", JWT-shaped words (eyJ...x.y.z), and the values of
 * access_token / refresh_token / id_token in JSON or key=value text.
 */
void	log_redact(char *buf, size_t bufsize);

#endif
