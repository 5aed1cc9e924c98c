/*
 * Small helpers used by every process: strings, memory, fds, time,
 * hex and base64url, host:port parsing.
 */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static usec_t
clock_usec(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) == -1)
		return 0;
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

usec_t
now_mono_usec(void)
{
	return clock_usec(CLOCK_MONOTONIC);
}

usec_t
now_wall_usec(void)
{
	return clock_usec(CLOCK_REALTIME);
}

size_t
strlcpy_safe(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size > 0) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

/* Running out of memory is not something a proxy can recover from in a
 * useful way: say so and stop. */
static void __attribute__((noreturn))
oom(size_t n)
{
	fprintf(stderr, "out of memory allocating %zu bytes\n", n);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom(n);
	return p;
}

void *
xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);

	if (p == NULL)
		oom(n * m);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		oom(n);
	return q;
}

char *
xstrdup(const char *s)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		oom(strlen(s) + 1);
	return d;
}

void
freezero_str(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

int
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1)
		return -1;
	if (fl & O_NONBLOCK)
		return 0;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int
set_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl == -1)
		return -1;
	if (fl & FD_CLOEXEC)
		return 0;
	return fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

void
hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Writes a NUL after the output when there is room for it. */
int
b64url_encode(const uint8_t *in, size_t len, char *out, size_t outsize)
{
	size_t need = (len / 3) * 4 + (len % 3 ? len % 3 + 1 : 0);
	size_t i, o = 0;
	uint32_t v;

	if (need + 1 > outsize || need > INT32_MAX)
		return -1;
	for (i = 0; i + 3 <= len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url_alphabet[(v >> 18) & 63];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = b64url_alphabet[(v >> 18) & 63];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url_alphabet[(v >> 18) & 63];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	out[o] = '\0';
	return (int)o;
}

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict: no padding, no whitespace, no standard-alphabet '+' or '/'.
 * A length of 1 mod 4 cannot come from an encoder and is rejected. */
int
b64url_decode(const char *in, size_t len, uint8_t *out, size_t outsize)
{
	size_t need, i, o = 0;
	uint32_t acc = 0;
	int bits = 0, v;

	if (len % 4 == 1 || len > INT32_MAX)
		return -1;
	need = (len / 4) * 3 + (len % 4 ? len % 4 - 1 : 0);
	if (need > outsize)
		return -1;
	for (i = 0; i < len; i++) {
		if ((v = b64url_value((unsigned char)in[i])) < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Leftover bits must be zero, or the text is not canonical. */
	if (acc != 0)
		return -1;
	return (int)o;
}

/* Hex digits, ':' and '.' (v4-mapped), then an optional "%zone". */
static bool
valid_v6_text(const char *p, const char *end)
{
	bool zone = false;

	for (; p < end; p++) {
		unsigned char c = (unsigned char)*p;

		if (zone) {
			if (c <= ' ' || c == ']' || c == '/')
				return false;
		} else if (c == '%') {
			zone = true;
		} else if (!(c == ':' || c == '.' || (c >= '0' && c <= '9') ||
		    (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
			return false;
		}
	}
	return true;
}

int
parse_hostport(const char *s, char *host, size_t hostsize, int *port)
{
	const char *colon, *hstart, *hend, *p;
	long v;
	char *end;

	if (s == NULL || hostsize == 0)
		return -1;
	if (s[0] == '[') {
		hstart = s + 1;
		if ((hend = strchr(hstart, ']')) == NULL || hend[1] != ':')
			return -1;
		if (hend == hstart)
			return -1;
		colon = hend + 1;
		if (!valid_v6_text(hstart, hend))
			return -1;
	} else {
		hstart = s;
		if ((colon = strrchr(s, ':')) == NULL)
			return -1;
		hend = colon;
		/* A bare v6 address without brackets is ambiguous. */
		if (memchr(hstart, ':', (size_t)(hend - hstart)) != NULL)
			return -1;
		for (p = hstart; p < hend; p++)
			if (*p <= ' ' || *p == '/' || *p == '[' || *p == ']')
				return -1;
	}
	if ((size_t)(hend - hstart) >= hostsize)
		return -1;
	if (colon[1] < '0' || colon[1] > '9')
		return -1;
	errno = 0;
	v = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > 65535)
		return -1;
	memcpy(host, hstart, (size_t)(hend - hstart));
	host[hend - hstart] = '\0';
	*port = (int)v;
	return 0;
}
