/*
 * The supervisor <-> worker message channel (see msg.h for the frame).
 *
 * Buffers.  Input and output each live in one contiguous buffer with a
 * start offset: consuming a message or writing bytes only moves the
 * offset, and the live bytes are moved to the front only when the
 * buffer is full (input) or mostly consumed (output), so every byte is
 * copied a bounded number of times even for bodies of several MiB.  The
 * input buffer grows to hold at most one maximum-size message plus its
 * header; a buffer grown for a large message is released once drained.
 *
 * Descriptor passing.  The rule that ties a received fd to its message:
 *
 *   sender:   the first byte of a message that carries an fd starts a
 *             sendmsg() of its own, and that sendmsg() carries the fd and
 *             no byte beyond the end of that message.  So the kernel
 *             buffer (skb) holding the fd contains exactly one message
 *             start: the fd's message, at its first byte.
 *   receiver: Linux hands over a buffer's fds with the first bytes read
 *             from it and ends that recvmsg() at the end of that buffer
 *             at the latest.  The fds therefore arrive with a chunk of
 *             bytes whose LAST message start is the fd's message (bytes
 *             of earlier messages may precede it in the same chunk).
 *             We record each fd with the stream offsets of its chunk and
 *             attach it to the last message that starts in that chunk.
 *
 * An fd that matches no message (a peer breaking the rule) is closed and
 * reported as MSGCHAN_PROTO.
 */
#include "config.h"
#include "msg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util.h"

#define MSGBUF_MIN		256
#define MSGCHAN_IN_MIN		(64u * 1024)
#define MSGCHAN_IN_MAX		((size_t)MSG_HDR_SIZE + MSG_MAX_PAYLOAD)
#define MSGCHAN_KEEP_MAX	(1024u * 1024)	/* release bigger buffers when empty */
#define MSGCHAN_MAX_FDS		64		/* received fds not yet claimed */
#define MSGCHAN_CMSG_FDS	8		/* fds one recvmsg() may carry */

struct rxfd {
	uint64_t	start, end;	/* stream offsets of the chunk it came with */
	int		fd;
};

struct txfd {
	uint64_t	pos;		/* stream offset of its message's first byte */
	uint64_t	end;		/* stream offset just past that message */
	int		fd;
};

struct msgchan {
	int		 fd;

	uint8_t		*in;
	size_t		 in_cap, in_start, in_end;
	uint64_t	 in_abs;	/* stream offset of in[in_start] */
	struct rxfd	 rxfds[MSGCHAN_MAX_FDS];
	size_t		 nrxfds;

	uint8_t		*out;
	size_t		 out_cap, out_start, out_end;
	uint64_t	 out_abs;	/* stream offset of out[out_start] */
	struct txfd	*txfds;
	size_t		 ntxfds, txfds_cap, txfds_head;
	size_t		 wq_limit;
	bool		 corked;
};

/* ---- payload builder ------------------------------------------------ */

void
msgbuf_init(struct msgbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void
msgbuf_free(struct msgbuf *b)
{
	free(b->buf);
	memset(b, 0, sizeof(*b));
}

void
msgbuf_reset(struct msgbuf *b)
{
	b->len = 0;
	b->failed = false;
}

static void
msgbuf_put(struct msgbuf *b, const void *p, size_t n)
{
	size_t cap;

	if (b->failed)
		return;
	if (n > MSG_MAX_PAYLOAD - b->len) {
		b->failed = true;
		return;
	}
	if (b->len + n > b->cap) {
		cap = b->cap ? b->cap : MSGBUF_MIN;
		while (cap < b->len + n)
			cap *= 2;
		b->buf = xrealloc(b->buf, cap);
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->buf + b->len, p, n);
	b->len += n;
}

void
msg_add_u8(struct msgbuf *b, uint8_t v)
{
	msgbuf_put(b, &v, sizeof(v));
}

void
msg_add_u32(struct msgbuf *b, uint32_t v)
{
	msgbuf_put(b, &v, sizeof(v));
}

void
msg_add_u64(struct msgbuf *b, uint64_t v)
{
	msgbuf_put(b, &v, sizeof(v));
}

/* u32 length (without the NUL), the bytes, a NUL. */
void
msg_add_str(struct msgbuf *b, const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n >= MSG_MAX_PAYLOAD) {
		b->failed = true;
		return;
	}
	msg_add_u32(b, (uint32_t)n);
	msgbuf_put(b, s != NULL ? s : "", n);
	msg_add_u8(b, 0);
}

/* u32 length, the bytes. */
void
msg_add_blob(struct msgbuf *b, const void *p, size_t len)
{
	if (len >= MSG_MAX_PAYLOAD) {
		b->failed = true;
		return;
	}
	msg_add_u32(b, (uint32_t)len);
	msgbuf_put(b, p, len);
}

/* ---- payload reader ------------------------------------------------- */

void
msgreader_init(struct msgreader *r, const struct msg *m)
{
	r->p = m->data;
	r->left = m->hdr.len;
	r->failed = false;
}

static const uint8_t *
msgreader_take(struct msgreader *r, size_t n)
{
	const uint8_t *p;

	if (r->failed || n > r->left) {
		r->failed = true;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}

uint8_t
msg_get_u8(struct msgreader *r)
{
	const uint8_t *p = msgreader_take(r, 1);

	return p != NULL ? *p : 0;
}

uint32_t
msg_get_u32(struct msgreader *r)
{
	const uint8_t *p = msgreader_take(r, 4);
	uint32_t v = 0;

	if (p != NULL)
		memcpy(&v, p, sizeof(v));
	return v;
}

uint64_t
msg_get_u64(struct msgreader *r)
{
	const uint8_t *p = msgreader_take(r, 8);
	uint64_t v = 0;

	if (p != NULL)
		memcpy(&v, p, sizeof(v));
	return v;
}

/* Returns "" (and marks the reader failed) on a bad string, so callers
 * may use the result before checking msg_end(). */
const char *
msg_get_str(struct msgreader *r)
{
	uint32_t n = msg_get_u32(r);
	const uint8_t *p;

	if (r->failed)
		return "";
	if (n >= r->left) {
		r->failed = true;
		return "";
	}
	p = r->p;
	if (p[n] != '\0' || memchr(p, '\0', n) != NULL) {
		r->failed = true;
		return "";
	}
	msgreader_take(r, (size_t)n + 1);
	return (const char *)p;
}

const void *
msg_get_blob(struct msgreader *r, size_t *len)
{
	uint32_t n = msg_get_u32(r);
	const uint8_t *p;

	*len = 0;
	if (r->failed)
		return NULL;
	if ((p = msgreader_take(r, n)) == NULL)
		return NULL;
	*len = n;
	return p;
}

int
msg_end(struct msgreader *r)
{
	return r->failed || r->left != 0 ? -1 : 0;
}

/* ---- channel -------------------------------------------------------- */

struct msgchan *
msgchan_new(int fd)
{
	struct msgchan *ch;

	if (set_nonblock(fd) == -1)
		return NULL;
	ch = xcalloc(1, sizeof(*ch));
	ch->fd = fd;
	ch->wq_limit = MSG_DEFAULT_WQ_LIMIT;
	return ch;
}

void
msgchan_free(struct msgchan *ch)
{
	size_t i;

	if (ch == NULL)
		return;
	for (i = 0; i < ch->nrxfds; i++)
		close(ch->rxfds[i].fd);
	for (i = 0; i < ch->ntxfds; i++)
		close(ch->txfds[(ch->txfds_head + i) % ch->txfds_cap].fd);
	if (ch->fd != -1)
		close(ch->fd);
	free(ch->in);
	free(ch->out);
	free(ch->txfds);
	free(ch);
}

int
msgchan_fd(const struct msgchan *ch)
{
	return ch->fd;
}

void
msgchan_set_wq_limit(struct msgchan *ch, size_t bytes)
{
	ch->wq_limit = bytes;
}

size_t
msgchan_pending(const struct msgchan *ch)
{
	return ch->out_end - ch->out_start;
}

/* ---- reading -------------------------------------------------------- */

/* Bytes the message at in_start needs in all, or 0 if its header is not
 * complete yet. */
static size_t
in_need(const struct msgchan *ch)
{
	struct msg_hdr h;

	if (ch->in_end - ch->in_start < MSG_HDR_SIZE)
		return 0;
	memcpy(&h, ch->in + ch->in_start, sizeof(h));
	if (h.len > MSG_MAX_PAYLOAD)
		return MSGCHAN_IN_MAX + 1;
	return MSG_HDR_SIZE + (size_t)h.len;
}

/* Make room at in_end.  0 when there is room, 1 when the buffer is full
 * of a complete message (the caller must consume it first), or
 * MSGCHAN_PROTO for an oversize header. */
static int
in_make_room(struct msgchan *ch)
{
	size_t live = ch->in_end - ch->in_start, need, cap;

	if (ch->in == NULL) {
		ch->in_cap = MSGCHAN_IN_MIN;
		ch->in = xmalloc(ch->in_cap);
		ch->in_start = ch->in_end = 0;
		return 0;
	}
	if (ch->in_end < ch->in_cap)
		return 0;
	need = in_need(ch);
	if (need > MSGCHAN_IN_MAX)
		return MSGCHAN_PROTO;
	if (need != 0 && live >= need)
		return 1;
	if (ch->in_start > 0) {
		memmove(ch->in, ch->in + ch->in_start, live);
		ch->in_start = 0;
		ch->in_end = live;
		if (ch->in_end < ch->in_cap)
			return 0;
	}
	/* Full, from offset 0, with an incomplete message: grow. */
	cap = ch->in_cap * 2;
	if (need > cap)
		cap = need;
	if (cap > MSGCHAN_IN_MAX)
		cap = MSGCHAN_IN_MAX;
	ch->in = xrealloc(ch->in, cap);
	ch->in_cap = cap;
	return 0;
}

static void
close_fds_in_cmsg(struct msghdr *mh)
{
	struct cmsghdr *c;
	size_t i, n;
	int fd;

	for (c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
}

/* Record the fds that came with the chunk [start, end). */
static int
take_fds(struct msgchan *ch, struct msghdr *mh, uint64_t start, uint64_t end)
{
	struct cmsghdr *c;
	size_t i, n;
	int fd, rc = MSGCHAN_OK;

	if (mh->msg_flags & MSG_CTRUNC)
		rc = MSGCHAN_PROTO;	/* more fds than our protocol sends */
	for (c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (rc != MSGCHAN_OK || ch->nrxfds == MSGCHAN_MAX_FDS) {
				close(fd);
				rc = MSGCHAN_PROTO;
				continue;
			}
			ch->rxfds[ch->nrxfds].start = start;
			ch->rxfds[ch->nrxfds].end = end;
			ch->rxfds[ch->nrxfds].fd = fd;
			ch->nrxfds++;
		}
	}
	return rc;
}

int
msgchan_read(struct msgchan *ch)
{
	union {
		struct cmsghdr	align;
		char		buf[CMSG_SPACE(sizeof(int) * MSGCHAN_CMSG_FDS)];
	} cbuf;
	struct msghdr mh;
	struct iovec iov;
	uint64_t start;
	ssize_t n;
	int rc;

	/* A buffer grown for one big message goes back once drained. */
	if (ch->in != NULL && ch->in_start == ch->in_end &&
	    ch->in_cap > MSGCHAN_KEEP_MAX) {
		free(ch->in);
		ch->in = NULL;
	}
	if (ch->in != NULL && ch->in_start == ch->in_end)
		ch->in_start = ch->in_end = 0;
	for (;;) {
		if ((rc = in_make_room(ch)) < 0)
			return rc;
		if (rc == 1)
			return MSGCHAN_OK;	/* consume, then read again */
		iov.iov_base = ch->in + ch->in_end;
		iov.iov_len = ch->in_cap - ch->in_end;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		n = recvmsg(ch->fd, &mh, MSG_CMSG_CLOEXEC);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return MSGCHAN_OK;
			if (errno == ECONNRESET)
				return MSGCHAN_EOF;
			return MSGCHAN_ERROR;
		}
		if (n == 0) {
			close_fds_in_cmsg(&mh);
			return MSGCHAN_EOF;
		}
		start = ch->in_abs + (ch->in_end - ch->in_start);
		ch->in_end += (size_t)n;
		if (mh.msg_controllen > 0 &&
		    (rc = take_fds(ch, &mh, start, start + (uint64_t)n)) < 0)
			return rc;
		/* Report an oversize header at once, not when it fills up. */
		if (in_need(ch) > MSGCHAN_IN_MAX)
			return MSGCHAN_PROTO;
	}
}

int
msgchan_next(struct msgchan *ch, struct msg *m)
{
	size_t avail = ch->in_end - ch->in_start, total;
	uint64_t s, e;

	if (avail < MSG_HDR_SIZE)
		return 0;
	memcpy(&m->hdr, ch->in + ch->in_start, sizeof(m->hdr));
	if (m->hdr.len > MSG_MAX_PAYLOAD)
		return MSGCHAN_PROTO;
	total = MSG_HDR_SIZE + (size_t)m->hdr.len;
	if (avail < total)
		return 0;
	m->data = ch->in + ch->in_start + MSG_HDR_SIZE;
	m->fd = -1;

	s = ch->in_abs;
	e = s + total;
	if (ch->nrxfds > 0) {
		struct rxfd *r = &ch->rxfds[0];

		if (r->end <= s) {
			/* Its chunk passed without a message to own it. */
			close(r->fd);
			memmove(&ch->rxfds[0], &ch->rxfds[1],
			    (ch->nrxfds - 1) * sizeof(ch->rxfds[0]));
			ch->nrxfds--;
			return MSGCHAN_PROTO;
		}
		if (r->start <= s && e >= r->end) {
			m->fd = r->fd;
			memmove(&ch->rxfds[0], &ch->rxfds[1],
			    (ch->nrxfds - 1) * sizeof(ch->rxfds[0]));
			ch->nrxfds--;
		}
	}
	ch->in_start += total;
	ch->in_abs += total;
	return 1;
}

/* ---- writing -------------------------------------------------------- */

static struct txfd *
txfd_head(struct msgchan *ch)
{
	return ch->ntxfds > 0 ? &ch->txfds[ch->txfds_head] : NULL;
}

static void
txfd_pop(struct msgchan *ch)
{
	close(ch->txfds[ch->txfds_head].fd);
	ch->txfds_head = (ch->txfds_head + 1) % ch->txfds_cap;
	ch->ntxfds--;
}

static void
txfd_push(struct msgchan *ch, uint64_t pos, uint64_t end, int fd)
{
	size_t i, ncap;
	struct txfd *n;

	if (ch->ntxfds == ch->txfds_cap) {
		ncap = ch->txfds_cap ? ch->txfds_cap * 2 : 8;
		n = xcalloc(ncap, sizeof(*n));
		for (i = 0; i < ch->ntxfds; i++)
			n[i] = ch->txfds[(ch->txfds_head + i) % ch->txfds_cap];
		free(ch->txfds);
		ch->txfds = n;
		ch->txfds_cap = ncap;
		ch->txfds_head = 0;
	}
	i = (ch->txfds_head + ch->ntxfds) % ch->txfds_cap;
	ch->txfds[i].pos = pos;
	ch->txfds[i].end = end;
	ch->txfds[i].fd = fd;
	ch->ntxfds++;
}

static void
out_reserve(struct msgchan *ch, size_t n)
{
	size_t live = ch->out_end - ch->out_start, cap;

	if (ch->out_cap - ch->out_end >= n)
		return;
	/* Compact when the consumed head is at least as big as what is
	 * live: the move then costs no more than the bytes already sent. */
	if (ch->out_start > 0 && ch->out_start >= live) {
		memmove(ch->out, ch->out + ch->out_start, live);
		ch->out_start = 0;
		ch->out_end = live;
		if (ch->out_cap - ch->out_end >= n)
			return;
	}
	cap = ch->out_cap ? ch->out_cap : MSGBUF_MIN * 16;
	while (cap - ch->out_end < n)
		cap *= 2;
	ch->out = xrealloc(ch->out, cap);
	ch->out_cap = cap;
}

int
msgchan_flush(struct msgchan *ch)
{
	union {
		struct cmsghdr	align;
		char		buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr mh;
	struct cmsghdr *c;
	struct iovec iov;
	struct txfd *t;
	size_t len;
	ssize_t n;
	bool with_fd;

	while (ch->out_start < ch->out_end) {
		len = ch->out_end - ch->out_start;
		t = txfd_head(ch);
		with_fd = false;
		if (t != NULL && t->pos == ch->out_abs) {
			/* The fd's message starts here: a sendmsg of its
			 * own, with nothing past the message's end. */
			with_fd = true;
			if (len > t->end - t->pos)
				len = (size_t)(t->end - t->pos);
		} else if (t != NULL && t->pos - ch->out_abs < len) {
			/* Stop before the next fd's message. */
			len = (size_t)(t->pos - ch->out_abs);
		}
		iov.iov_base = ch->out + ch->out_start;
		iov.iov_len = len;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (with_fd) {
			memset(&cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf.buf;
			mh.msg_controllen = sizeof(cbuf.buf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &t->fd, sizeof(int));
		}
		n = sendmsg(ch->fd, &mh, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return MSGCHAN_OK;
			if (errno == EPIPE || errno == ECONNRESET)
				return MSGCHAN_EOF;
			return MSGCHAN_ERROR;
		}
		if (with_fd && n > 0)
			txfd_pop(ch);	/* the kernel holds its own reference now */
		ch->out_start += (size_t)n;
		ch->out_abs += (uint64_t)n;
	}
	ch->out_start = ch->out_end = 0;
	if (ch->out_cap > MSGCHAN_KEEP_MAX) {
		free(ch->out);
		ch->out = NULL;
		ch->out_cap = 0;
	}
	return MSGCHAN_OK;
}

int
msgchan_send(struct msgchan *ch, uint32_t type, uint64_t rid,
    const void *payload, size_t len, int fd)
{
	struct msg_hdr h;
	size_t pending;
	int dfd = -1;

	if (len > MSG_MAX_PAYLOAD) {
		errno = EMSGSIZE;
		return MSGCHAN_PROTO;
	}
	pending = msgchan_pending(ch);
	if (pending > ch->wq_limit || MSG_HDR_SIZE + len > ch->wq_limit - pending) {
		errno = ENOBUFS;
		return MSGCHAN_FULL;
	}
	if (fd >= 0 && (dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1)
		return MSGCHAN_ERROR;
	memset(&h, 0, sizeof(h));
	h.type = type;
	h.len = (uint32_t)len;
	h.rid = rid;
	out_reserve(ch, MSG_HDR_SIZE + len);
	if (dfd != -1)
		txfd_push(ch, ch->out_abs + (ch->out_end - ch->out_start),
		    ch->out_abs + (ch->out_end - ch->out_start) + MSG_HDR_SIZE + len,
		    dfd);
	memcpy(ch->out + ch->out_end, &h, MSG_HDR_SIZE);
	if (len > 0)
		memcpy(ch->out + ch->out_end + MSG_HDR_SIZE, payload, len);
	ch->out_end += MSG_HDR_SIZE + len;
	if (ch->corked && dfd == -1 && ch->out_end - ch->out_start < MSGCHAN_CORK_MAX)
		return MSGCHAN_OK;
	return msgchan_flush(ch);
}

void
msgchan_cork(struct msgchan *ch, bool on)
{
	ch->corked = on;
}

int
msgchan_send_buf(struct msgchan *ch, uint32_t type, uint64_t rid,
    const struct msgbuf *b)
{
	if (b->failed) {
		errno = EMSGSIZE;
		return MSGCHAN_PROTO;
	}
	return msgchan_send(ch, type, rid, b->buf, b->len, -1);
}
