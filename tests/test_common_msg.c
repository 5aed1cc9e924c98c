/* msg.c: framing, partial I/O, limits and descriptor passing. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "msg.h"
#include "test_common_suites.h"

static void
make_pair(int sv[2], int sndbuf)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	if (sndbuf > 0) {
		ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF,
		    &sndbuf, sizeof(sndbuf)), 0);
		ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF,
		    &sndbuf, sizeof(sndbuf)), 0);
	}
}

/* Bytes of one framed message, as the channel writes them. */
static uint8_t *
frame(uint32_t type, uint64_t rid, const void *p, uint32_t len, size_t *outlen)
{
	struct msg_hdr h = { type, len, rid };
	uint8_t *f = malloc(MSG_HDR_SIZE + len);

	ck_assert_ptr_nonnull(f);
	memcpy(f, &h, MSG_HDR_SIZE);
	if (len > 0)
		memcpy(f + MSG_HDR_SIZE, p, len);
	*outlen = MSG_HDR_SIZE + len;
	return f;
}

/* Write bytes (and optionally an fd with the first one) on a raw socket. */
static void
raw_send(int s, const void *p, size_t len, int fd)
{
	union {
		struct cmsghdr	align;
		char		buf[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *c;

	memset(&mh, 0, sizeof(mh));
	iov.iov_base = (void *)p;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fd >= 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ck_assert_int_eq(sendmsg(s, &mh, 0), (ssize_t)len);
}

/*
 * Drive both ends with poll() until rx has a message, or the deadline
 * (generous; only there so a bug cannot hang the suite) passes.
 */
static int
pump_next(struct msgchan *tx, struct msgchan *rx, struct msg *m)
{
	struct pollfd pfd[2];
	int rc, i;

	for (i = 0; i < 100000; i++) {
		if ((rc = msgchan_next(rx, m)) != 0)
			return rc;
		pfd[0].fd = msgchan_fd(rx);
		pfd[0].events = POLLIN;
		pfd[1].fd = tx != NULL ? msgchan_fd(tx) : -1;
		pfd[1].events = tx != NULL && msgchan_pending(tx) ? POLLOUT : 0;
		ck_assert_int_ge(poll(pfd, 2, 10000), 1);
		if (pfd[1].revents & POLLOUT)
			ck_assert_int_eq(msgchan_flush(tx), MSGCHAN_OK);
		if (pfd[0].revents & (POLLIN | POLLHUP)) {
			rc = msgchan_read(rx);
			if (rc != MSGCHAN_OK)
				return msgchan_next(rx, m) == 1 ? 1 : rc;
		}
	}
	ck_abort_msg("no message after many polls");
	return -1;
}

START_TEST(test_msg__round_trip_typed_payload)
{
	struct msgchan *a, *b;
	struct msgbuf mb;
	struct msgreader r;
	struct msg m;
	const void *blob;
	size_t bloblen;
	int sv[2];

	make_pair(sv, 0);
	a = msgchan_new(sv[0]);
	b = msgchan_new(sv[1]);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(msgchan_fd(a), sv[0]);

	msgbuf_init(&mb);
	msg_add_u8(&mb, 0xab);
	msg_add_u32(&mb, 0xdeadbeef);
	msg_add_u64(&mb, 0x0123456789abcdefULL);
	msg_add_str(&mb, "acct-1");
	msg_add_str(&mb, NULL);
	msg_add_blob(&mb, "\0\1\2", 3);
	msg_add_blob(&mb, NULL, 0);
	ck_assert(!mb.failed);
	ck_assert_int_eq(msgchan_send_buf(a, 103, 42, &mb), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_send(a, 9, 0, NULL, 0, -1), MSGCHAN_OK);
	ck_assert_uint_eq(msgchan_pending(a), 0);
	msgbuf_free(&mb);

	ck_assert_int_eq(pump_next(a, b, &m), 1);
	ck_assert_uint_eq(m.hdr.type, 103);
	ck_assert_uint_eq(m.hdr.rid, 42);
	ck_assert_int_eq(m.fd, -1);
	msgreader_init(&r, &m);
	ck_assert_uint_eq(msg_get_u8(&r), 0xab);
	ck_assert_uint_eq(msg_get_u32(&r), 0xdeadbeef);
	ck_assert_uint_eq(msg_get_u64(&r), 0x0123456789abcdefULL);
	ck_assert_str_eq(msg_get_str(&r), "acct-1");
	ck_assert_str_eq(msg_get_str(&r), "");
	blob = msg_get_blob(&r, &bloblen);
	ck_assert_uint_eq(bloblen, 3);
	ck_assert_mem_eq(blob, "\0\1\2", 3);
	msg_get_blob(&r, &bloblen);
	ck_assert_uint_eq(bloblen, 0);
	ck_assert_int_eq(msg_end(&r), 0);

	ck_assert_int_eq(pump_next(a, b, &m), 1);
	ck_assert_uint_eq(m.hdr.type, 9);
	ck_assert_uint_eq(m.hdr.len, 0);
	ck_assert_int_eq(msgchan_next(b, &m), 0);
	msgchan_free(a);
	msgchan_free(b);
}
END_TEST

START_TEST(test_msg__end_rejects_leftover_and_short)
{
	struct msgbuf mb;
	struct msgreader r;
	struct msg m;

	msgbuf_init(&mb);
	msg_add_u32(&mb, 7);
	msg_add_u8(&mb, 1);
	memset(&m, 0, sizeof(m));
	m.data = mb.buf;
	m.hdr.len = (uint32_t)mb.len;

	/* A byte left over. */
	msgreader_init(&r, &m);
	ck_assert_uint_eq(msg_get_u32(&r), 7);
	ck_assert_int_eq(msg_end(&r), -1);

	/* Reading past the end: zero values and a failed reader. */
	msgreader_init(&r, &m);
	ck_assert_uint_eq(msg_get_u32(&r), 7);
	ck_assert_uint_eq(msg_get_u64(&r), 0);
	ck_assert(r.failed);
	ck_assert_int_eq(msg_end(&r), -1);

	/* Exactly consumed. */
	msgreader_init(&r, &m);
	msg_get_u32(&r);
	msg_get_u8(&r);
	ck_assert_int_eq(msg_end(&r), 0);
	msgbuf_free(&mb);
}
END_TEST

START_TEST(test_msg__bad_strings_rejected)
{
	struct msgbuf mb;
	struct msgreader r;
	struct msg m;

	memset(&m, 0, sizeof(m));
	msgbuf_init(&mb);

	/* Length runs past the payload. */
	msg_add_u32(&mb, 100);
	msg_add_u8(&mb, 'a');
	msg_add_u8(&mb, 0);
	m.data = mb.buf;
	m.hdr.len = (uint32_t)mb.len;
	msgreader_init(&r, &m);
	ck_assert_str_eq(msg_get_str(&r), "");
	ck_assert_int_eq(msg_end(&r), -1);

	/* No NUL where the length says. */
	msgbuf_reset(&mb);
	msg_add_u32(&mb, 2);
	msg_add_blob(&mb, "abc", 3);
	m.data = mb.buf;
	m.hdr.len = (uint32_t)mb.len;
	msgreader_init(&r, &m);
	msg_get_str(&r);
	ck_assert_int_eq(msg_end(&r), -1);

	/* A NUL inside the string. */
	msgbuf_reset(&mb);
	msg_add_u32(&mb, 3);
	msg_add_u8(&mb, 'a');
	msg_add_u8(&mb, 0);
	msg_add_u8(&mb, 'b');
	msg_add_u8(&mb, 0);
	m.data = mb.buf;
	m.hdr.len = (uint32_t)mb.len;
	msgreader_init(&r, &m);
	msg_get_str(&r);
	ck_assert_int_eq(msg_end(&r), -1);

	/* Blob longer than the payload. */
	msgbuf_reset(&mb);
	msg_add_u32(&mb, 10);
	msg_add_u8(&mb, 'x');
	m.data = mb.buf;
	m.hdr.len = (uint32_t)mb.len;
	msgreader_init(&r, &m);
	{
		size_t n = 99;

		ck_assert_ptr_null(msg_get_blob(&r, &n));
		ck_assert_uint_eq(n, 0);
	}
	ck_assert_int_eq(msg_end(&r), -1);
	msgbuf_free(&mb);
}
END_TEST

START_TEST(test_msg__msgbuf_limit)
{
	struct msgbuf mb;
	struct msgchan *a;
	int sv[2];

	msgbuf_init(&mb);
	msg_add_blob(&mb, "x", MSG_MAX_PAYLOAD);	/* never read: fails first */
	ck_assert(mb.failed);
	make_pair(sv, 0);
	a = msgchan_new(sv[0]);
	ck_assert_int_eq(msgchan_send_buf(a, 1, 0, &mb), MSGCHAN_PROTO);
	ck_assert_int_eq(msgchan_send(a, 1, 0, "x", MSG_MAX_PAYLOAD + 1u, -1),
	    MSGCHAN_PROTO);
	ck_assert_uint_eq(msgchan_pending(a), 0);
	msgbuf_reset(&mb);
	ck_assert(!mb.failed);
	msgbuf_free(&mb);
	msgchan_free(a);
	close(sv[1]);
}
END_TEST

/* Feed a reader one byte per read(): messages appear exactly when their
 * last byte arrives, intact, and an fd sent with a first byte follows
 * its message. */
START_TEST(test_msg__byte_at_a_time)
{
	struct msgchan *rx;
	struct msg m;
	uint8_t *f[3];
	size_t flen[3], i, j;
	char payload[300], got[8];
	int sv[2], p[2], rc, n = 0;

	for (i = 0; i < sizeof(payload); i++)
		payload[i] = (char)('a' + i % 26);
	f[0] = frame(103, 1, payload, 300, &flen[0]);
	f[1] = frame(9, 2, NULL, 0, &flen[1]);
	f[2] = frame(3, 3, "fd!", 3, &flen[2]);
	ck_assert_int_eq(pipe(p), 0);
	make_pair(sv, 0);
	rx = msgchan_new(sv[1]);

	for (i = 0; i < 3; i++) {
		for (j = 0; j < flen[i]; j++) {
			raw_send(sv[0], f[i] + j, 1, i == 2 && j == 0 ? p[1] : -1);
			ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
			rc = msgchan_next(rx, &m);
			if (j + 1 < flen[i]) {
				ck_assert_int_eq(rc, 0);
				continue;
			}
			ck_assert_int_eq(rc, 1);
			n++;
			ck_assert_uint_eq(m.hdr.rid, i + 1);
			ck_assert_uint_eq(m.hdr.len, flen[i] - MSG_HDR_SIZE);
			ck_assert_mem_eq(m.data, f[i] + MSG_HDR_SIZE, m.hdr.len);
			if (i == 2) {
				ck_assert_int_ge(m.fd, 0);
				ck_assert_int_eq(write(m.fd, "ok", 2), 2);
				close(m.fd);
				ck_assert_int_eq(read(p[0], got, sizeof(got)), 2);
			} else {
				ck_assert_int_eq(m.fd, -1);
			}
			ck_assert_int_eq(msgchan_next(rx, &m), 0);
		}
		free(f[i]);
	}
	ck_assert_int_eq(n, 3);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	msgchan_free(rx);
}
END_TEST

/* A 5 MiB payload through a socket with a tiny buffer: many partial
 * writes and reads, and the bytes arrive intact. */
START_TEST(test_msg__partial_writes_large_payload)
{
	const size_t big = 5u * 1024 * 1024;
	struct msgchan *tx, *rx;
	struct msg m;
	uint8_t *payload;
	size_t i;
	int sv[2], round;

	payload = malloc(big);
	ck_assert_ptr_nonnull(payload);
	for (i = 0; i < big; i++)
		payload[i] = (uint8_t)(i * 2654435761u >> 13);
	make_pair(sv, 4096);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);

	for (round = 0; round < 2; round++) {
		ck_assert_int_eq(msgchan_send(tx, 103, 7 + round, payload, big, -1),
		    MSGCHAN_OK);
		ck_assert_int_eq(msgchan_send(tx, 102, 99, "tail", 4, -1),
		    MSGCHAN_OK);
		/* The kernel took only a small part. */
		ck_assert_uint_gt(msgchan_pending(tx), big / 2);
		ck_assert_int_eq(pump_next(tx, rx, &m), 1);
		ck_assert_uint_eq(m.hdr.rid, 7 + round);
		ck_assert_uint_eq(m.hdr.len, big);
		ck_assert(memcmp(m.data, payload, big) == 0);
		ck_assert_int_eq(pump_next(tx, rx, &m), 1);
		ck_assert_uint_eq(m.hdr.rid, 99);
		ck_assert_mem_eq(m.data, "tail", 4);
		ck_assert_uint_eq(msgchan_pending(tx), 0);
	}
	free(payload);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

/* Many messages of mixed sizes, back to back, all arrive in order. */
START_TEST(test_msg__stream_of_mixed_sizes)
{
	struct msgchan *tx, *rx;
	struct msg m;
	uint8_t *payload;
	uint32_t i, len, want_next = 0;
	int sv[2], rc;

	payload = malloc(300000);
	ck_assert_ptr_nonnull(payload);
	for (i = 0; i < 300000; i++)
		payload[i] = (uint8_t)i;
	make_pair(sv, 8192);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	for (i = 0; i < 200; i++) {
		len = (i * 7919u) % 300000u;
		if (i % 3 == 0)
			len %= 50;
		ck_assert_int_eq(msgchan_send(tx, 103, i, payload, len, -1), MSGCHAN_OK);
		/* Drain a little now and then, as a busy loop would. */
		while (msgchan_pending(tx) > 1000000) {
			rc = pump_next(tx, rx, &m);
			ck_assert_int_eq(rc, 1);
			ck_assert_uint_eq(m.hdr.rid, want_next);
			ck_assert_uint_eq(m.hdr.len,
			    want_next % 3 == 0 ? (want_next * 7919u) % 300000u % 50 :
			    (want_next * 7919u) % 300000u);
			ck_assert(memcmp(m.data, payload, m.hdr.len) == 0);
			want_next++;
		}
	}
	while (want_next < 200) {
		ck_assert_int_eq(pump_next(tx, rx, &m), 1);
		ck_assert_uint_eq(m.hdr.rid, want_next);
		ck_assert(memcmp(m.data, payload, m.hdr.len) == 0);
		want_next++;
	}
	free(payload);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

START_TEST(test_msg__oversize_frame_is_proto)
{
	struct msgchan *rx;
	struct msg_hdr h = { 103, MSG_MAX_PAYLOAD + 1u, 5 };
	struct msg m;
	int sv[2], rc;

	make_pair(sv, 0);
	rx = msgchan_new(sv[1]);
	raw_send(sv[0], &h, sizeof(h), -1);
	raw_send(sv[0], "junk", 4, -1);
	rc = msgchan_read(rx);
	if (rc == MSGCHAN_OK)
		rc = msgchan_next(rx, &m);
	ck_assert_int_eq(rc, MSGCHAN_PROTO);
	ck_assert_int_eq(msgchan_next(rx, &m), MSGCHAN_PROTO);
	close(sv[0]);
	msgchan_free(rx);
}
END_TEST

/* A header that allows exactly MSG_MAX_PAYLOAD is accepted (the buffer
 * grows to one maximum message plus its header). */
START_TEST(test_msg__max_payload_accepted)
{
	struct msgchan *tx, *rx;
	struct msg m;
	uint8_t *payload;
	int sv[2];

	payload = calloc(1, MSG_MAX_PAYLOAD);
	ck_assert_ptr_nonnull(payload);
	payload[MSG_MAX_PAYLOAD - 1] = 0x5a;
	make_pair(sv, 0);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	ck_assert_int_eq(msgchan_send(tx, 103, 1, payload, MSG_MAX_PAYLOAD, -1),
	    MSGCHAN_OK);
	free(payload);
	ck_assert_int_eq(pump_next(tx, rx, &m), 1);
	ck_assert_uint_eq(m.hdr.len, MSG_MAX_PAYLOAD);
	ck_assert_uint_eq(m.data[MSG_MAX_PAYLOAD - 1], 0x5a);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

START_TEST(test_msg__wq_limit_full)
{
	struct msgchan *tx, *rx;
	struct msg m;
	char payload[10000], *huge;
	size_t before;
	int sv[2], rc, sent = 0, got = 0;

	memset(payload, 'q', sizeof(payload));
	make_pair(sv, 4096);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	msgchan_set_wq_limit(tx, 64 * 1024);

	/* A message bigger than the whole limit never fits. */
	huge = calloc(1, 70 * 1024);
	ck_assert_ptr_nonnull(huge);
	ck_assert_int_eq(msgchan_send(tx, 103, 0, huge, 70 * 1024, -1),
	    MSGCHAN_FULL);
	ck_assert_uint_eq(msgchan_pending(tx), 0);
	ck_assert_int_eq(msgchan_send(tx, 103, 0, payload, 0, -1), MSGCHAN_OK);
	sent++;
	for (;;) {
		before = msgchan_pending(tx);
		rc = msgchan_send(tx, 103, (uint64_t)sent, payload, sizeof(payload), -1);
		if (rc == MSGCHAN_FULL) {
			/* Not queued, and it really would not have fit. */
			ck_assert_uint_eq(msgchan_pending(tx), before);
			ck_assert_uint_gt(before + MSG_HDR_SIZE + sizeof(payload),
			    64 * 1024);
			break;
		}
		ck_assert_int_eq(rc, MSGCHAN_OK);
		ck_assert_uint_le(msgchan_pending(tx), 64 * 1024);
		sent++;
		ck_assert_int_lt(sent, 1000);
	}
	/* Everything accepted arrives, in order; nothing else does. */
	while (got < sent) {
		ck_assert_int_eq(pump_next(tx, rx, &m), 1);
		ck_assert_uint_eq(m.hdr.rid, (uint64_t)got);
		got++;
	}
	ck_assert_uint_eq(msgchan_pending(tx), 0);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_next(rx, &m), 0);
	/* With the queue drained, sending works again. */
	ck_assert_int_eq(msgchan_send(tx, 103, 1, payload, sizeof(payload), -1),
	    MSGCHAN_OK);
	free(huge);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

START_TEST(test_msg__fd_passing_pipe)
{
	struct msgchan *tx, *rx;
	struct msg m;
	char buf[16];
	int sv[2], p[2];

	ck_assert_int_eq(pipe(p), 0);
	make_pair(sv, 0);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	ck_assert_int_eq(msgchan_send(tx, 1, 5, "pipe", 4, p[1]), MSGCHAN_OK);
	/* The sender keeps its own copy: closing it changes nothing. */
	close(p[1]);
	ck_assert_int_eq(pump_next(tx, rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 5);
	ck_assert_int_ge(m.fd, 0);
	ck_assert(fcntl(m.fd, F_GETFD) & FD_CLOEXEC);
	ck_assert_int_eq(write(m.fd, "hello", 5), 5);
	close(m.fd);
	ck_assert_int_eq(read(p[0], buf, sizeof(buf)), 5);
	ck_assert_mem_eq(buf, "hello", 5);
	/* Every write end is gone now: EOF. */
	ck_assert_int_eq(read(p[0], buf, sizeof(buf)), 0);
	close(p[0]);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

/* Corked, messages wait for the flush, then cross in one write, in order;
 * a message with an fd, or a full cork, writes at once. */
START_TEST(test_msg__cork)
{
	struct msgchan *tx, *rx;
	struct msg m;
	char big[MSGCHAN_CORK_MAX], buf[8];
	int sv[2], p[2], i;

	make_pair(sv, 0);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	msgchan_cork(tx, true);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(msgchan_send(tx, 1, (uint64_t)i, "x", 1, -1), MSGCHAN_OK);
	ck_assert_uint_eq(msgchan_pending(tx), 3 * (MSG_HDR_SIZE + 1));
	ck_assert_int_eq(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT | MSG_PEEK), -1);
	ck_assert_int_eq(msgchan_flush(tx), MSGCHAN_OK);
	ck_assert_uint_eq(msgchan_pending(tx), 0);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(pump_next(tx, rx, &m), 1);
		ck_assert_uint_eq(m.hdr.rid, (uint64_t)i);
	}
	/* an fd goes at once, with what was queued before it */
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(msgchan_send(tx, 1, 7, "a", 1, -1), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_send(tx, 1, 8, "b", 1, p[1]), MSGCHAN_OK);
	ck_assert_uint_eq(msgchan_pending(tx), 0);
	ck_assert_int_eq(pump_next(tx, rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 7);
	ck_assert_int_eq(pump_next(tx, rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 8);
	ck_assert_int_ge(m.fd, 0);
	close(m.fd);
	close(p[0]);
	close(p[1]);
	/* a cork never holds more than MSGCHAN_CORK_MAX */
	memset(big, 'z', sizeof(big));
	ck_assert_int_eq(msgchan_send(tx, 2, 9, big, sizeof(big) - MSG_HDR_SIZE, -1),
	    MSGCHAN_OK);
	ck_assert_uint_lt(msgchan_pending(tx), MSGCHAN_CORK_MAX);
	ck_assert_int_eq(pump_next(tx, rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 9);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

/* fds and fd-less messages interleaved, with big bodies and a small
 * socket buffer: each fd reaches the message it was sent with. */
START_TEST(test_msg__fd_passing_interleaved)
{
	enum { N = 40 };
	struct msgchan *tx, *rx;
	struct msg m;
	int pipes[N][2], sv[2], i, got = 0, nfd = 0;
	uint8_t *body;
	char c;

	body = calloc(1, 200000);
	ck_assert_ptr_nonnull(body);
	make_pair(sv, 4096);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	for (i = 0; i < N; i++) {
		pipes[i][0] = pipes[i][1] = -1;
		if (i % 3 != 1)
			ck_assert_int_eq(pipe(pipes[i]), 0);
		memcpy(body, &i, sizeof(i));
		ck_assert_int_eq(msgchan_send(tx, 1, (uint64_t)i, body,
		    i % 4 == 0 ? 200000 : (size_t)(i * 13 + 4), pipes[i][1]),
		    MSGCHAN_OK);
		if (pipes[i][1] != -1)
			close(pipes[i][1]);
	}
	while (got < N) {
		ck_assert_int_eq(pump_next(tx, rx, &m), 1);
		ck_assert_uint_eq(m.hdr.rid, (uint64_t)got);
		if (pipes[got][0] == -1) {
			ck_assert_int_eq(m.fd, -1);
		} else {
			ck_assert_int_ge(m.fd, 0);
			c = (char)got;
			ck_assert_int_eq(write(m.fd, &c, 1), 1);
			close(m.fd);
			ck_assert_int_eq(read(pipes[got][0], &c, 1), 1);
			ck_assert_int_eq(c, (char)got);
			close(pipes[got][0]);
			nfd++;
		}
		got++;
	}
	ck_assert_int_eq(nfd, N - N / 3);
	free(body);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

/* The receiver may see the fd in a read that also carries the tail of
 * earlier messages: the fd still belongs to its own message. */
START_TEST(test_msg__fd_after_other_messages_in_one_read)
{
	struct msgchan *rx;
	struct msg m;
	uint8_t *f1, *f2;
	size_t l1, l2;
	int sv[2], p[2];

	ck_assert_int_eq(pipe(p), 0);
	make_pair(sv, 0);
	rx = msgchan_new(sv[1]);
	f1 = frame(1, 1, "first", 5, &l1);
	f2 = frame(1, 2, "second", 6, &l2);
	raw_send(sv[0], f1, l1, -1);
	raw_send(sv[0], f2, l2, p[1]);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_next(rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 1);
	ck_assert_int_eq(m.fd, -1);
	ck_assert_int_eq(msgchan_next(rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 2);
	ck_assert_int_ge(m.fd, 0);
	close(m.fd);
	free(f1);
	free(f2);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	msgchan_free(rx);
}
END_TEST

/* An fd that does not come with the first byte of a message breaks the
 * rule: it is closed and reported. */
START_TEST(test_msg__stray_fd_is_proto)
{
	struct msgchan *rx;
	struct msg m;
	uint8_t *f1, *f2;
	size_t l1, l2;
	int sv[2], p[2], rc;
	char c;

	ck_assert_int_eq(pipe(p), 0);
	make_pair(sv, 0);
	rx = msgchan_new(sv[1]);
	f1 = frame(1, 1, "first", 5, &l1);
	f2 = frame(1, 2, "second", 6, &l2);
	/* The fd rides on the last byte of message 1. */
	raw_send(sv[0], f1, l1 - 1, -1);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	raw_send(sv[0], f1 + l1 - 1, 1, p[1]);
	close(p[1]);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	raw_send(sv[0], f2, l2, -1);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	/* Message 1 starts before the fd's chunk: no fd for it. */
	ck_assert_int_eq(msgchan_next(rx, &m), 1);
	ck_assert_int_eq(m.fd, -1);
	rc = msgchan_next(rx, &m);
	ck_assert_int_eq(rc, MSGCHAN_PROTO);
	/* ... and the stray fd was closed: the pipe reads EOF. */
	ck_assert_int_eq(read(p[0], &c, 1), 0);
	free(f1);
	free(f2);
	close(p[0]);
	close(sv[0]);
	msgchan_free(rx);
}
END_TEST

START_TEST(test_msg__free_closes_unclaimed_fds)
{
	struct msgchan *tx, *rx;
	int sv[2], p[2];
	char c;

	ck_assert_int_eq(pipe(p), 0);
	make_pair(sv, 0);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	ck_assert_int_eq(msgchan_send(tx, 1, 1, "x", 1, p[1]), MSGCHAN_OK);
	close(p[1]);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	msgchan_free(rx);	/* never called msgchan_next */
	msgchan_free(tx);
	ck_assert_int_eq(read(p[0], &c, 1), 0);
	close(p[0]);
}
END_TEST

START_TEST(test_msg__free_closes_queued_fds)
{
	struct msgchan *tx;
	char big[8192];
	int sv[2], p[2], i;
	char c;

	memset(big, 0, sizeof(big));
	ck_assert_int_eq(pipe(p), 0);
	make_pair(sv, 4096);
	tx = msgchan_new(sv[0]);
	/* Fill the socket so the fd message stays queued. */
	for (i = 0; i < 64; i++)
		ck_assert_int_eq(msgchan_send(tx, 1, 1, big, sizeof(big), -1),
		    MSGCHAN_OK);
	ck_assert_uint_gt(msgchan_pending(tx), 0);
	ck_assert_int_eq(msgchan_send(tx, 1, 1, "x", 1, p[1]), MSGCHAN_OK);
	close(p[1]);
	msgchan_free(tx);
	close(sv[1]);
	ck_assert_int_eq(read(p[0], &c, 1), 0);
	close(p[0]);
}
END_TEST

START_TEST(test_msg__eof)
{
	struct msgchan *tx, *rx;
	struct msg m;
	int sv[2];

	make_pair(sv, 0);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	ck_assert_int_eq(msgchan_send(tx, 1, 3, "bye", 3, -1), MSGCHAN_OK);
	msgchan_free(tx);
	/* Buffered messages are still delivered after EOF. */
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_EOF);
	ck_assert_int_eq(msgchan_next(rx, &m), 1);
	ck_assert_uint_eq(m.hdr.rid, 3);
	ck_assert_int_eq(msgchan_next(rx, &m), 0);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_EOF);
	/* Writing to a closed peer is EOF too, without SIGPIPE. */
	ck_assert_int_eq(msgchan_send(rx, 1, 1, "x", 1, -1), MSGCHAN_EOF);
	msgchan_free(rx);
}
END_TEST

START_TEST(test_msg__truncated_frame_waits)
{
	struct msgchan *rx;
	struct msg m;
	uint8_t *f;
	size_t l;
	int sv[2];

	make_pair(sv, 0);
	rx = msgchan_new(sv[1]);
	f = frame(1, 1, "0123456789", 10, &l);
	raw_send(sv[0], f, 10, -1);	/* part of the header */
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_next(rx, &m), 0);
	raw_send(sv[0], f + 10, l - 11, -1);	/* all but one byte */
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_next(rx, &m), 0);
	raw_send(sv[0], f + l - 1, 1, -1);
	ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	ck_assert_int_eq(msgchan_next(rx, &m), 1);
	ck_assert_mem_eq(m.data, "0123456789", 10);
	free(f);
	close(sv[0]);
	msgchan_free(rx);
}
END_TEST

Suite *
make_suite_msg(void)
{
	Suite *s = suite_create("msg");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_msg__round_trip_typed_payload);
	tcase_add_test(tc, test_msg__end_rejects_leftover_and_short);
	tcase_add_test(tc, test_msg__bad_strings_rejected);
	tcase_add_test(tc, test_msg__msgbuf_limit);
	tcase_add_test(tc, test_msg__byte_at_a_time);
	tcase_add_test(tc, test_msg__partial_writes_large_payload);
	tcase_add_test(tc, test_msg__stream_of_mixed_sizes);
	tcase_add_test(tc, test_msg__oversize_frame_is_proto);
	tcase_add_test(tc, test_msg__max_payload_accepted);
	tcase_add_test(tc, test_msg__wq_limit_full);
	tcase_add_test(tc, test_msg__fd_passing_pipe);
	tcase_add_test(tc, test_msg__cork);
	tcase_add_test(tc, test_msg__fd_passing_interleaved);
	tcase_add_test(tc, test_msg__fd_after_other_messages_in_one_read);
	tcase_add_test(tc, test_msg__stray_fd_is_proto);
	tcase_add_test(tc, test_msg__free_closes_unclaimed_fds);
	tcase_add_test(tc, test_msg__free_closes_queued_fds);
	tcase_add_test(tc, test_msg__eof);
	tcase_add_test(tc, test_msg__truncated_frame_waits);
	suite_add_tcase(s, tc);
	return s;
}
