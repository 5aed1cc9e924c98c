/*
 * The supervisor <-> worker message decoders (common/msgcodec.c), every
 * type.  Input: one byte choosing the decoder (its top bit gives the
 * message another type, which every decoder must refuse), then the
 * payload.  A payload that decodes must encode again, and that encoding
 * must decode to the same encoding (decode and encode agree).
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>

#include "fuzz.h"
#include "msg.h"
#include "msgcodec.h"
#include "msgtypes.h"

/* decode m into p, then encode p into b; -1 if it did not decode */
typedef int codec_fn(const struct msg *m, struct msgbuf *b);

#define CODEC(name)							\
static int								\
codec_##name(const struct msg *m, struct msgbuf *b)			\
{									\
	struct m_##name p;						\
									\
	memset(&p, 0xa5, sizeof(p));	/* decode must set every field */ \
	if (m_##name##_decode(m, &p) == -1)				\
		return -1;						\
	m_##name##_encode(b, &p);					\
	return 0;							\
}
#define CODEC_EMPTY(name)						\
static int								\
codec_##name(const struct msg *m, struct msgbuf *b)			\
{									\
	if (m_##name##_decode(m) == -1)					\
		return -1;						\
	m_##name##_encode(b);						\
	return 0;							\
}

CODEC(config)
CODEC(upstream_addrs)
CODEC(req_start)
CODEC_EMPTY(req_cancel)
CODEC(evict)
CODEC(conn_close)
CODEC(pool_enable)
CODEC_EMPTY(stats_req)
CODEC(shutdown)
CODEC(hello)
CODEC(req_decision)
CODEC_EMPTY(req_started)
CODEC(req_event)
CODEC(req_done)
CODEC(req_error)
CODEC(rate_limits)
CODEC(conn_up)
CODEC(conn_down)
CODEC(stats)
CODEC(ws_adopt)
CODEC(ws_reply)
CODEC(ws_close)
CODEC(ws_turn)
CODEC(ws_gone)

static const struct {
	uint32_t	 type;
	codec_fn	*fn;
} codecs[] = {
	{ MSG_CONFIG, codec_config },
	{ MSG_UPSTREAM_ADDRS, codec_upstream_addrs },
	{ MSG_REQ_START, codec_req_start },
	{ MSG_REQ_CANCEL, codec_req_cancel },
	{ MSG_EVICT, codec_evict },
	{ MSG_CONN_CLOSE, codec_conn_close },
	{ MSG_POOL_ENABLE, codec_pool_enable },
	{ MSG_STATS_REQ, codec_stats_req },
	{ MSG_SHUTDOWN, codec_shutdown },
	{ MSG_HELLO, codec_hello },
	{ MSG_REQ_DECISION, codec_req_decision },
	{ MSG_REQ_STARTED, codec_req_started },
	{ MSG_REQ_EVENT, codec_req_event },
	{ MSG_REQ_DONE, codec_req_done },
	{ MSG_REQ_ERROR, codec_req_error },
	{ MSG_RATE_LIMITS, codec_rate_limits },
	{ MSG_CONN_UP, codec_conn_up },
	{ MSG_CONN_DOWN, codec_conn_down },
	{ MSG_STATS, codec_stats },
	{ MSG_WS_ADOPT, codec_ws_adopt },
	{ MSG_WS_REPLY, codec_ws_reply },
	{ MSG_WS_CLOSE, codec_ws_close },
	{ MSG_WS_TURN, codec_ws_turn },
	{ MSG_WS_GONE, codec_ws_gone },
};
#define NCODECS	(sizeof(codecs) / sizeof(codecs[0]))

static struct msg
msg_of(uint32_t type, const uint8_t *payload, size_t len)
{
	struct msg m;

	memset(&m, 0, sizeof(m));
	m.hdr.type = type;
	m.hdr.len = (uint32_t)len;
	m.hdr.rid = 7;
	m.data = payload;
	m.fd = -1;
	return m;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct msgbuf once, twice;
	struct msg m;
	uint8_t *payload;
	size_t k, len;
	uint32_t type;

	if (size < 1 || size - 1 > MSG_MAX_PAYLOAD)
		return 0;
	k = (data[0] & 0x7f) % NCODECS;
	type = codecs[k].type;
	if (data[0] & 0x80)	/* another message's type */
		type = codecs[(k + 1 + data[0] % (NCODECS - 1)) % NCODECS].type;
	len = size - 1;
	/* an exact-size copy: a read past the payload is an ASan report */
	payload = malloc(len ? len : 1);
	if (payload == NULL)
		abort();
	memcpy(payload, data + 1, len);
	m = msg_of(type, payload, len);

	msgbuf_init(&once);
	msgbuf_init(&twice);
	if (codecs[k].fn(&m, &once) == 0) {
		if (type != codecs[k].type)
			abort();	/* a decoder took another type's message */
		if (once.failed)
			abort();	/* decoded, yet cannot be sent again */
		m = msg_of(type, once.buf, once.len);
		if (codecs[k].fn(&m, &twice) != 0)
			abort();	/* our own encoding does not decode */
		if (twice.len != once.len ||
		    (once.len > 0 && memcmp(twice.buf, once.buf, once.len) != 0))
			abort();	/* decode and encode disagree */
	}
	msgbuf_free(&once);
	msgbuf_free(&twice);
	free(payload);
	return 0;
}
