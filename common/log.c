/*
 * Logging for every codexpool process: stderr in the foreground, syslog
 * otherwise, or an append-mode file.  Each line is formatted in full,
 * redacted, and written with one write() so lines from the supervisor
 * and its workers never interleave mid-line.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX	8192

static char		log_procname[64] = "codexpool";
static int		log_foreground = 1;
static enum log_level	log_level = LOG_LVL_INFO;
static int		log_file_fd = -1;
static bool		log_syslog_open;

static const char *const level_names[] = {
	[LOG_LVL_ERROR] = "error",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

static void
open_syslog(void)
{
	if (log_syslog_open)
		closelog();
	/* syslog keeps the ident pointer: log_procname is static storage. */
	openlog(log_procname, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	log_syslog_open = true;
}

void
log_init(const char *procname, int foreground, enum log_level level)
{
	if (procname != NULL)
		snprintf(log_procname, sizeof(log_procname), "%s", procname);
	log_foreground = foreground;
	log_level = level;
	if (!foreground)
		open_syslog();
}

void
log_set_procname(const char *procname)
{
	if (procname == NULL)
		return;
	snprintf(log_procname, sizeof(log_procname), "%s", procname);
	if (!log_foreground)
		open_syslog();
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

int
log_level_from_name(const char *name)
{
	size_t i;

	if (name == NULL)
		return -1;
	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return (int)i;
	if (strcasecmp(name, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

int
log_set_file(const char *path)
{
	int fd;

	if (path == NULL) {
		if (log_file_fd != -1)
			close(log_file_fd);
		log_file_fd = -1;
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1)
		return -1;
	if (log_file_fd != -1)
		close(log_file_fd);
	log_file_fd = fd;
	return 0;
}

/* ---- redaction ------------------------------------------------------ */

struct redact_out {
	char	*p;
	size_t	 len;
	size_t	 cap;		/* bytes usable, not counting the NUL */
};

static void
out_put(struct redact_out *o, const char *s, size_t n)
{
	if (n > o->cap - o->len)
		n = o->cap - o->len;
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static const char redacted[] = "[redacted]";

static bool
is_b64url(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_';
}

/* Characters of an RFC 6750 token68 (what follows "Bearer "). */
static bool
is_token_char(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
	    c == '+' || c == '/' || c == '=';
}

static size_t
span(const char *s, size_t n, bool (*ok)(unsigned char))
{
	size_t i = 0;

	while (i < n && ok((unsigned char)s[i]))
		i++;
	return i;
}

/* "Bearer" + blanks + token at s: returns the bytes to keep ("Bearer ")
 * in *keep and the total matched length, or 0. */
static size_t
match_bearer(const char *s, size_t n, size_t *keep)
{
	size_t i = 6, t;

	if (n < 8 || strncasecmp(s, "bearer", 6) != 0)
		return 0;
	if (s[i] != ' ' && s[i] != '\t')
		return 0;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if ((t = span(s + i, n - i, is_token_char)) == 0)
		return 0;
	*keep = i;
	return i + t;
}

/* eyJ<b64url>.<b64url>.<b64url>*: a JWT; returns its length or 0. */
static size_t
match_jwt(const char *s, size_t n)
{
	size_t i, t;

	if (n < 3 || strncmp(s, "eyJ", 3) != 0)
		return 0;
	i = span(s, n, is_b64url);
	if (i >= n || s[i] != '.')
		return 0;
	i++;
	if ((t = span(s + i, n - i, is_b64url)) == 0)
		return 0;
	i += t;
	if (i >= n || s[i] != '.')
		return 0;
	i++;
	i += span(s + i, n - i, is_b64url);
	return i;
}

static const char *const secret_keys[] = {
	"access_token", "refresh_token", "id_token",
};

/*
 * A secret key followed by its value: "refresh_token":"v", \"id_token\":
 * \"v\" (JSON inside a JSON string), access_token=v, id_token: 'v'.
 * Returns the total length, with the value at [*vstart, *vend).
 */
static size_t
match_secret_key(const char *s, size_t n, size_t *vstart, size_t *vend)
{
	size_t i = 0, k, klen;
	const char *quote;
	size_t qlen;

	for (k = 0; k < sizeof(secret_keys) / sizeof(secret_keys[0]); k++) {
		klen = strlen(secret_keys[k]);
		if (n >= klen && strncasecmp(s, secret_keys[k], klen) == 0)
			break;
	}
	if (k == sizeof(secret_keys) / sizeof(secret_keys[0]))
		return 0;
	i = klen;
	/* The key's own closing quote, possibly escaped. */
	if (i < n && (s[i] == '"' || s[i] == '\''))
		i++;
	else if (i + 1 < n && s[i] == '\\' && s[i + 1] == '"')
		i += 2;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i >= n || (s[i] != ':' && s[i] != '='))
		return 0;
	i++;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i >= n)
		return 0;
	if (s[i] == '"' || s[i] == '\'') {
		quote = s + i;
		qlen = 1;
	} else if (i + 1 < n && s[i] == '\\' && s[i + 1] == '"') {
		quote = s + i;
		qlen = 2;
	} else {
		quote = NULL;
		qlen = 0;
	}
	i += qlen;
	*vstart = i;
	if (quote != NULL) {
		/* Up to the closing quote, or the end of the line. */
		while (i < n) {
			if (qlen == 2) {
				if (s[i] == '\\' && i + 1 < n && s[i + 1] == '"')
					break;
			} else if (quote[0] == '"' && s[i] == '\\') {
				i += i + 1 < n ? 2 : 1;	/* JSON escape */
				continue;
			} else if (s[i] == quote[0]) {
				break;
			}
			i++;
		}
		*vend = i;
	} else {
		while (i < n && !isspace((unsigned char)s[i]) && s[i] != '&' &&
		    s[i] != ',' && s[i] != ';' && s[i] != '}' && s[i] != ')')
			i++;
		*vend = i;
		/* null / empty values are not secrets. */
		if (*vend - *vstart == 4 && strncmp(s + *vstart, "null", 4) == 0)
			return 0;
	}
	if (*vend == *vstart)
		return 0;
	return *vend;
}

void
log_redact(char *buf, size_t bufsize)
{
	struct redact_out o;
	size_t n, i, m, keep, vs, ve;
	unsigned char prev;

	if (buf == NULL || bufsize == 0)
		return;
	n = strnlen(buf, bufsize);
	if (n == bufsize) {
		/* Not terminated: cut the last byte rather than read past. */
		n = bufsize - 1;
		buf[n] = '\0';
	}
	o.cap = bufsize - 1;
	o.len = 0;
	if ((o.p = malloc(bufsize)) == NULL) {
		/* Cannot prove the line clean: drop it. */
		buf[0] = '\0';
		return;
	}
	for (i = 0; i < n;) {
		prev = i > 0 ? (unsigned char)buf[i - 1] : ' ';
		if (!isalnum(prev) && (m = match_bearer(buf + i, n - i, &keep))) {
			out_put(&o, buf + i, keep);
			out_put(&o, redacted, sizeof(redacted) - 1);
			i += m;
			continue;
		}
		if (!is_b64url(prev) && (m = match_jwt(buf + i, n - i))) {
			out_put(&o, redacted, sizeof(redacted) - 1);
			i += m;
			continue;
		}
		if (!isalnum(prev) &&
		    (m = match_secret_key(buf + i, n - i, &vs, &ve))) {
			out_put(&o, buf + i, vs);
			out_put(&o, redacted, sizeof(redacted) - 1);
			i += ve;
			continue;
		}
		out_put(&o, buf + i, 1);
		i++;
	}
	memcpy(buf, o.p, o.len);
	buf[o.len] = '\0';
	explicit_bzero(o.p, bufsize);
	free(o.p);
}

/* ---- output --------------------------------------------------------- */

static void
write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void
emit(enum log_level level, const char *line)
{
	static const int prio[] = {
		[LOG_LVL_ERROR] = LOG_ERR,
		[LOG_LVL_WARN] = LOG_WARNING,
		[LOG_LVL_INFO] = LOG_INFO,
		[LOG_LVL_DEBUG] = LOG_DEBUG,
	};
	char out[LOG_LINE_MAX + 160], ts[32];
	struct timespec now;
	struct tm tm;
	int n;

	if (log_file_fd == -1 && !log_foreground) {
		syslog(prio[level], "%s", line);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(out, sizeof(out), "%s.%03ldZ %s[%ld]: %s: %s\n", ts,
	    now.tv_nsec / 1000000, log_procname, (long)getpid(),
	    level_names[level], line);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(out)) {
		n = sizeof(out) - 1;
		out[n - 1] = '\n';
	}
	write_all(log_file_fd != -1 ? log_file_fd : STDERR_FILENO, out, (size_t)n);
}

static void
vlog_line(enum log_level level, const char *prefix, const char *fmt,
    va_list ap, const char *suffix)
{
	char line[LOG_LINE_MAX];
	size_t off = 0;
	int n;

	if ((int)level < LOG_LVL_ERROR)
		level = LOG_LVL_ERROR;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	if (level > log_level)
		return;
	line[0] = '\0';
	if (prefix != NULL && *prefix != '\0') {
		n = snprintf(line, sizeof(line), "%s ", prefix);
		off = n < 0 ? 0 : (size_t)n < sizeof(line) ? (size_t)n :
		    sizeof(line) - 1;
	}
	n = vsnprintf(line + off, sizeof(line) - off, fmt, ap);
	if (n > 0) {
		off += (size_t)n;
		if (off >= sizeof(line))
			off = sizeof(line) - 1;
	}
	if (suffix != NULL)
		snprintf(line + off, sizeof(line) - off, ": %s", suffix);
	log_redact(line, sizeof(line));
	emit(level, line);
}

#define LOG_FN(name, lvl)						\
void									\
name(const char *fmt, ...)						\
{									\
	va_list ap;							\
									\
	va_start(ap, fmt);						\
	vlog_line(lvl, NULL, fmt, ap, NULL);				\
	va_end(ap);							\
}

LOG_FN(log_error, LOG_LVL_ERROR)
LOG_FN(log_warnx, LOG_LVL_WARN)
LOG_FN(log_info, LOG_LVL_INFO)
LOG_FN(log_debug, LOG_LVL_DEBUG)

void
log_warn(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vlog_line(LOG_LVL_WARN, NULL, fmt, ap, strerror(saved));
	va_end(ap);
	errno = saved;
}

void
olog(enum log_level level, const char *prefix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog_line(level, prefix, fmt, ap, NULL);
	va_end(ap);
}

int
log_ratelimit_allow(struct log_ratelimit *rl, long long now_usec,
    unsigned long long *suppressed)
{
	*suppressed = 0;
	if (rl->last != 0 && now_usec - rl->last < rl->interval_usec) {
		rl->suppressed++;
		return 0;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last = now_usec != 0 ? now_usec : 1;
	return 1;
}

void
log_ratelimited(struct log_ratelimit *rl, enum log_level level, const char *fmt, ...)
{
	struct timespec ts;
	unsigned long long suppressed;
	char more[64];
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (!log_ratelimit_allow(rl, (long long)ts.tv_sec * 1000000LL +
	    ts.tv_nsec / 1000, &suppressed))
		return;
	snprintf(more, sizeof(more), "%llu more suppressed", suppressed);
	va_start(ap, fmt);
	vlog_line(level, NULL, fmt, ap, suppressed > 0 ? more : NULL);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vlog_line(LOG_LVL_ERROR, "fatal:", fmt, ap, strerror(saved));
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog_line(LOG_LVL_ERROR, "fatal:", fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
