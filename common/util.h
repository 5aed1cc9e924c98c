/* Small helpers used by every process: strings, fds, time. */
#ifndef CODEXPOOL_UTIL_H
#define CODEXPOOL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef int64_t usec_t;		/* microseconds */

#define USEC_PER_MSEC	1000LL
#define USEC_PER_SEC	1000000LL

usec_t	now_mono_usec(void);	/* CLOCK_MONOTONIC */
usec_t	now_wall_usec(void);	/* CLOCK_REALTIME */

size_t	strlcpy_safe(char *dst, const char *src, size_t size);	/* returns strlen(src) */
char	*xstrdup(const char *s);		/* aborts on ENOMEM; NULL -> NULL */
void	*xmalloc(size_t n);
void	*xcalloc(size_t n, size_t m);
void	*xrealloc(void *p, size_t n);
void	freezero_str(char *s);			/* wipe then free (tokens) */

int	set_nonblock(int fd);
int	set_cloexec(int fd);

/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void	hex_encode(const uint8_t *in, size_t len, char *out);
/* base64url without padding; returns bytes written or -1 when out is too small / input is bad. */
int	b64url_encode(const uint8_t *in, size_t len, char *out, size_t outsize);
int	b64url_decode(const char *in, size_t len, uint8_t *out, size_t outsize);

/* Parse "host:port", "[v6]:port"; host may be empty (any).  0 on success. */
int	parse_hostport(const char *s, char *host, size_t hostsize, int *port);

#endif
