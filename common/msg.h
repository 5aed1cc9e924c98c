/*
 * The supervisor <-> worker message channel.
 *
 * A message is a 16-byte header followed by a payload:
 *
 *	uint32_t type	(enum msg_type, msgtypes.h)
 *	uint32_t len	(payload bytes, at most MSG_MAX_PAYLOAD)
 *	uint64_t rid	(request id the message belongs to, 0 if none)
 *
 * in host byte order (both ends are the same binary on the same machine).
 * A message may carry one file descriptor (SCM_RIGHTS), sent with its first
 * byte: the sender starts a sendmsg() at that byte and sends nothing past
 * the message's end in it; the receiver attaches an fd to the last message
 * that starts in the chunk of bytes the fd arrived with (msg.c explains
 * why that is exact on Linux).
 *
 * The channel works on a non-blocking stream socket and does no polling
 * itself, so the libevent supervisor and the libwebsockets worker drive it
 * from their own loops:
 *
 *	readable:  msgchan_read(); while (msgchan_next(ch, &m) == 1) handle(&m);
 *	writable:  msgchan_flush(); keep polling for POLLOUT while msgchan_pending()
 *
 * Payloads are built and read with the typed helpers below (u8/u32/u64,
 * length-prefixed strings and blobs); msg_end() fails if bytes are left,
 * so a reader and a writer that disagree are caught at once.
 */
#ifndef CODEXPOOL_MSG_H
#define CODEXPOOL_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define MSG_HDR_SIZE		16
#define MSG_MAX_PAYLOAD		(64u * 1024 * 1024)	/* requests reach several MiB */
#define MSG_DEFAULT_WQ_LIMIT	(256u * 1024 * 1024)	/* queued output per channel */

struct msg_hdr {
	uint32_t	type;
	uint32_t	len;
	uint64_t	rid;
};

/* A received message.  data points into the channel's buffer and is valid
 * until the next msgchan_read()/msgchan_next() call on that channel. */
struct msg {
	struct msg_hdr	hdr;
	const uint8_t	*data;
	int		fd;		/* received descriptor, or -1; the receiver owns it */
};

/* Payload builder (growable buffer). */
struct msgbuf {
	uint8_t		*buf;
	size_t		len;
	size_t		cap;
	bool		failed;		/* an add exceeded MSG_MAX_PAYLOAD */
};

/* Payload reader over a received message. */
struct msgreader {
	const uint8_t	*p;
	size_t		left;
	bool		failed;		/* a get ran past the end */
};

void	msgbuf_init(struct msgbuf *b);
void	msgbuf_free(struct msgbuf *b);
void	msgbuf_reset(struct msgbuf *b);
void	msg_add_u8(struct msgbuf *b, uint8_t v);
void	msg_add_u32(struct msgbuf *b, uint32_t v);
void	msg_add_u64(struct msgbuf *b, uint64_t v);
void	msg_add_str(struct msgbuf *b, const char *s);	/* NULL is sent as "" */
void	msg_add_blob(struct msgbuf *b, const void *p, size_t len);

void	msgreader_init(struct msgreader *r, const struct msg *m);
uint8_t	 msg_get_u8(struct msgreader *r);
uint32_t msg_get_u32(struct msgreader *r);
uint64_t msg_get_u64(struct msgreader *r);
/* Strings are NUL-terminated on the wire; the pointer borrows the message. */
const char *msg_get_str(struct msgreader *r);
const void *msg_get_blob(struct msgreader *r, size_t *len);
/* 0 if every get succeeded and nothing is left over, -1 otherwise. */
int	msg_end(struct msgreader *r);

enum msgchan_status {
	MSGCHAN_OK = 0,		/* progress made or nothing to do */
	MSGCHAN_EOF = -1,	/* peer closed */
	MSGCHAN_ERROR = -2,	/* I/O error (errno set) */
	MSGCHAN_PROTO = -3,	/* oversize or malformed frame */
	MSGCHAN_FULL = -4,	/* output queue above its limit */
};

struct msgchan;

struct msgchan *msgchan_new(int fd);	/* takes ownership of fd, sets O_NONBLOCK */
void	msgchan_free(struct msgchan *ch);	/* closes fd and any unread received fds */
int	msgchan_fd(const struct msgchan *ch);
void	msgchan_set_wq_limit(struct msgchan *ch, size_t bytes);

/* Read what the socket has (until EAGAIN), or until the buffer holds a
 * complete message it may not grow past (take it with msgchan_next(); a
 * level-triggered loop calls read again).  Returns msgchan_status;
 * messages buffered before MSGCHAN_EOF can still be taken with next. */
int	msgchan_read(struct msgchan *ch);
/* 1 and fills *m when a complete message is buffered, 0 if none, <0 on a
 * protocol error (oversize frame, or a received fd no message owns). */
int	msgchan_next(struct msgchan *ch, struct msg *m);

/* Queue a message and try to write it at once.  fd >= 0 is passed along
 * (the caller keeps its own copy; it is dup()ed).  Returns msgchan_status. */
int	msgchan_send(struct msgchan *ch, uint32_t type, uint64_t rid,
	    const void *payload, size_t len, int fd);
int	msgchan_send_buf(struct msgchan *ch, uint32_t type, uint64_t rid,
	    const struct msgbuf *b);
/* Write queued bytes until EAGAIN or empty. */
int	msgchan_flush(struct msgchan *ch);
size_t	msgchan_pending(const struct msgchan *ch);	/* bytes still queued */
/*
 * Corked, msgchan_send() only queues (up to MSGCHAN_CORK_MAX, then it
 * writes): the owner flushes once per turn of its event loop, so the
 * events of one upstream read cross in one write and one wakeup instead
 * of one each.  Order is kept either way.
 */
#define MSGCHAN_CORK_MAX	(64u * 1024)
void	msgchan_cork(struct msgchan *ch, bool on);

#endif
