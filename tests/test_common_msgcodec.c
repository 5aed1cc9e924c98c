/*
 * msgcodec.c: every message round-trips (encode -> struct msg -> decode ->
 * equal), and every decode rejects a short payload, a trailing byte, the
 * wrong type and counts over their limits.
 */
#include "config.h"

#include <check.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "msg.h"
#include "msgcodec.h"
#include "test_common_suites.h"

/* A received message over an encoded payload, as msgchan_next() gives it. */
static struct msg
as_msg(uint32_t type, const struct msgbuf *b, size_t len)
{
	struct msg m;

	ck_assert(!b->failed);
	ck_assert_uint_le(len, b->len);
	memset(&m, 0, sizeof(m));
	m.hdr.type = type;
	m.hdr.len = (uint32_t)len;
	m.hdr.rid = 7;
	m.data = b->buf;
	m.fd = -1;
	return m;
}

static void
ck_blob_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	ck_assert_uint_eq(alen, blen);
	if (alen > 0)
		ck_assert_int_eq(memcmp(a, b, alen), 0);
}

/*
 * One sample per message: enc writes it, dec decodes a message and, when
 * verify is set, asserts it equals the sample.  The same table drives the
 * round-trip, truncation, trailing-byte and wrong-type tests.
 */
static const char frame_json[] = "{\"type\":\"response.create\",\"x\":\"\\u0000\"}";

static const struct m_config s_config = {
	.upstream_host = "chatgpt.com", .upstream_port = 443,
	.upstream_path = "/backend-api/codex/responses", .tls = true,
	.ca_file = "", .proxy_host = "proxy.local", .proxy_port = 3128,
	.pool_enabled = true, .max_age_us = 3300000000ULL,
	.ping_interval_us = 25000000ULL, .handshake_timeout_us = 10000000ULL,
	.response_start_timeout_us = 90000000ULL,
	.originator = "codex_exec", .client_version = "0.169.0",
};

static void
enc_config(struct msgbuf *b)
{
	m_config_encode(b, &s_config);
}

static int
dec_config(const struct msg *m, bool verify)
{
	struct m_config p;

	if (m_config_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_str_eq(p.upstream_host, s_config.upstream_host);
		ck_assert_uint_eq(p.upstream_port, s_config.upstream_port);
		ck_assert_str_eq(p.upstream_path, s_config.upstream_path);
		ck_assert(p.tls == s_config.tls);
		ck_assert_str_eq(p.ca_file, "");
		ck_assert_str_eq(p.proxy_host, s_config.proxy_host);
		ck_assert_uint_eq(p.proxy_port, s_config.proxy_port);
		ck_assert(p.pool_enabled == s_config.pool_enabled);
		ck_assert_uint_eq(p.max_age_us, s_config.max_age_us);
		ck_assert_uint_eq(p.ping_interval_us, s_config.ping_interval_us);
		ck_assert_uint_eq(p.handshake_timeout_us,
		    s_config.handshake_timeout_us);
		ck_assert_uint_eq(p.response_start_timeout_us,
		    s_config.response_start_timeout_us);
		ck_assert_str_eq(p.originator, s_config.originator);
		ck_assert_str_eq(p.client_version, s_config.client_version);
	}
	return 0;
}

static const struct m_upstream_addrs s_addrs = {
	.naddrs = 3, .addrs = { "127.0.0.1", "::1", "10.0.0.2" },
};

static void
enc_addrs(struct msgbuf *b)
{
	m_upstream_addrs_encode(b, &s_addrs);
}

static int
dec_addrs(const struct msg *m, bool verify)
{
	struct m_upstream_addrs p;
	uint32_t i;

	if (m_upstream_addrs_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.naddrs, s_addrs.naddrs);
		for (i = 0; i < p.naddrs; i++)
			ck_assert_str_eq(p.addrs[i], s_addrs.addrs[i]);
	}
	return 0;
}

static const struct m_req_start s_start = {
	.key_hash = 0xfeedfacecafebeefULL, .entry = "acct-0001",
	.account_id = "acc-uuid", .access_token = "eyJ.secret.token",
	.session_id = "0199a3c2-7e1b", .flags = REQ_F_POOLED | REQ_F_GRANT |
	    REQ_F_FRESH, .attempt = 2, .owner_conn = 0x1122334455667788ULL,
	.nheaders = 2, .headers = {
		{ "x-codex-turn-metadata", "{\"turn_id\":\"t1\"}" },
		{ "x-codex-beta-features", "" },
	},
	.frame = frame_json, .frame_len = sizeof(frame_json) - 1,
	.wsid = 0x5151, .installation_id = "inst-1", .model = "gpt-5.4",
};

static void
enc_start(struct msgbuf *b)
{
	m_req_start_encode(b, &s_start);
}

static int
dec_start(const struct msg *m, bool verify)
{
	struct m_req_start p;
	uint32_t i;

	if (m_req_start_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.key_hash, s_start.key_hash);
		ck_assert_str_eq(p.entry, s_start.entry);
		ck_assert_str_eq(p.account_id, s_start.account_id);
		ck_assert_str_eq(p.access_token, s_start.access_token);
		ck_assert_str_eq(p.session_id, s_start.session_id);
		ck_assert_uint_eq(p.flags, s_start.flags);
		ck_assert_uint_eq(p.attempt, s_start.attempt);
		ck_assert_uint_eq(p.owner_conn, s_start.owner_conn);
		ck_assert_uint_eq(p.nheaders, s_start.nheaders);
		for (i = 0; i < p.nheaders; i++) {
			ck_assert_str_eq(p.headers[i].name,
			    s_start.headers[i].name);
			ck_assert_str_eq(p.headers[i].value,
			    s_start.headers[i].value);
		}
		ck_blob_eq(p.frame, p.frame_len, s_start.frame,
		    s_start.frame_len);
		ck_assert_uint_eq(p.wsid, s_start.wsid);
		ck_assert_str_eq(p.installation_id, s_start.installation_id);
		ck_assert_str_eq(p.model, s_start.model);
	}
	return 0;
}

static void
enc_cancel(struct msgbuf *b)
{
	m_req_cancel_encode(b);
}

static int
dec_cancel(const struct msg *m, bool verify)
{
	(void)verify;
	return m_req_cancel_decode(m);
}

static void
enc_evict(struct msgbuf *b)
{
	m_evict_encode(b, &(struct m_evict){ .entry = "acct-0002" });
}

static int
dec_evict(const struct msg *m, bool verify)
{
	struct m_evict p;

	if (m_evict_decode(m, &p) == -1)
		return -1;
	if (verify)
		ck_assert_str_eq(p.entry, "acct-0002");
	return 0;
}

static void
enc_conn_close(struct msgbuf *b)
{
	m_conn_close_encode(b, &(struct m_conn_close){ .conn_id = 99,
	    .reason = "making room" });
}

static int
dec_conn_close(const struct msg *m, bool verify)
{
	struct m_conn_close p;

	if (m_conn_close_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.conn_id, 99);
		ck_assert_str_eq(p.reason, "making room");
	}
	return 0;
}

static void
enc_pool_enable(struct msgbuf *b)
{
	m_pool_enable_encode(b, &(struct m_pool_enable){ .enabled = true });
}

static int
dec_pool_enable(const struct msg *m, bool verify)
{
	struct m_pool_enable p;

	if (m_pool_enable_decode(m, &p) == -1)
		return -1;
	if (verify)
		ck_assert(p.enabled);
	return 0;
}

static void
enc_stats_req(struct msgbuf *b)
{
	m_stats_req_encode(b);
}

static int
dec_stats_req(const struct msg *m, bool verify)
{
	(void)verify;
	return m_stats_req_decode(m);
}

static void
enc_shutdown(struct msgbuf *b)
{
	m_shutdown_encode(b, &(struct m_shutdown){ .grace_us = 30000000ULL });
}

static int
dec_shutdown(const struct msg *m, bool verify)
{
	struct m_shutdown p;

	if (m_shutdown_decode(m, &p) == -1)
		return -1;
	if (verify)
		ck_assert_uint_eq(p.grace_us, 30000000ULL);
	return 0;
}

static void
enc_hello(struct msgbuf *b)
{
	m_hello_encode(b, &(struct m_hello){ .proto_version =
	    MSG_PROTO_VERSION, .slot = 3, .pid = 4242 });
}

static int
dec_hello(const struct msg *m, bool verify)
{
	struct m_hello p;

	if (m_hello_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.proto_version, MSG_PROTO_VERSION);
		ck_assert_uint_eq(p.slot, 3);
		ck_assert_uint_eq(p.pid, 4242);
	}
	return 0;
}

static void
enc_decision(struct msgbuf *b)
{
	m_req_decision_encode(b, &(struct m_req_decision){
	    .decision = DEC_BYPASS, .reason = BYP_FACTORY_ERROR,
	    .conn_id = 0 });
}

static int
dec_decision(const struct msg *m, bool verify)
{
	struct m_req_decision p;

	if (m_req_decision_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.decision, DEC_BYPASS);
		ck_assert_uint_eq(p.reason, BYP_FACTORY_ERROR);
		ck_assert_uint_eq(p.conn_id, 0);
	}
	return 0;
}

static void
enc_started(struct msgbuf *b)
{
	m_req_started_encode(b);
}

static int
dec_started(const struct msg *m, bool verify)
{
	(void)verify;
	return m_req_started_decode(m);
}

static void
enc_event(struct msgbuf *b)
{
	m_req_event_encode(b, &(struct m_req_event){ .frame = frame_json,
	    .frame_len = sizeof(frame_json) - 1 });
}

static int
dec_event(const struct msg *m, bool verify)
{
	struct m_req_event p;

	if (m_req_event_decode(m, &p) == -1)
		return -1;
	if (verify)
		ck_blob_eq(p.frame, p.frame_len, frame_json,
		    sizeof(frame_json) - 1);
	return 0;
}

static const struct m_req_done s_done = {
	.outcome = DONE_STREAM_ERROR, .message = "upstream closed",
	.response_id = "resp_abc", .input_tokens = 1000,
	.cached_tokens = 900, .output_tokens = 42, .conn_id = 5,
};

static void
enc_done(struct msgbuf *b)
{
	m_req_done_encode(b, &s_done);
}

static int
dec_done(const struct msg *m, bool verify)
{
	struct m_req_done p;

	if (m_req_done_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.outcome, s_done.outcome);
		ck_assert_str_eq(p.message, s_done.message);
		ck_assert_str_eq(p.response_id, s_done.response_id);
		ck_assert_uint_eq(p.input_tokens, s_done.input_tokens);
		ck_assert_uint_eq(p.cached_tokens, s_done.cached_tokens);
		ck_assert_uint_eq(p.output_tokens, s_done.output_tokens);
		ck_assert_uint_eq(p.conn_id, s_done.conn_id);
	}
	return 0;
}

static const char err_body[] = "{\"error\":{\"message\":\"overloaded\"}}";

static void
enc_error(struct msgbuf *b)
{
	m_req_error_encode(b, &(struct m_req_error){ .http_status = 503,
	    .flags = ERR_F_RETRYABLE, .code = "server_is_overloaded",
	    .body = err_body, .body_len = sizeof(err_body) - 1 });
}

static int
dec_error(const struct msg *m, bool verify)
{
	struct m_req_error p;

	if (m_req_error_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.http_status, 503);
		ck_assert_uint_eq(p.flags, ERR_F_RETRYABLE);
		ck_assert_str_eq(p.code, "server_is_overloaded");
		ck_blob_eq(p.body, p.body_len, err_body, sizeof(err_body) - 1);
	}
	return 0;
}

static void
enc_rate_limits(struct msgbuf *b)
{
	m_rate_limits_encode(b, &(struct m_rate_limits){ .entry = "acct-0003",
	    .frame = frame_json, .frame_len = sizeof(frame_json) - 1 });
}

static int
dec_rate_limits(const struct msg *m, bool verify)
{
	struct m_rate_limits p;

	if (m_rate_limits_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_str_eq(p.entry, "acct-0003");
		ck_blob_eq(p.frame, p.frame_len, frame_json,
		    sizeof(frame_json) - 1);
	}
	return 0;
}

static void
enc_conn_up(struct msgbuf *b)
{
	m_conn_up_encode(b, &(struct m_conn_up){ .conn_id = 12,
	    .key_hash = 0xabcdefULL, .entry = "acct-0004" });
}

static int
dec_conn_up(const struct msg *m, bool verify)
{
	struct m_conn_up p;

	if (m_conn_up_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.conn_id, 12);
		ck_assert_uint_eq(p.key_hash, 0xabcdefULL);
		ck_assert_str_eq(p.entry, "acct-0004");
	}
	return 0;
}

static void
enc_conn_down(struct msgbuf *b)
{
	m_conn_down_encode(b, &(struct m_conn_down){ .conn_id = 13,
	    .entry = "acct-0005", .reason = "expired" });
}

static int
dec_conn_down(const struct msg *m, bool verify)
{
	struct m_conn_down p;

	if (m_conn_down_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.conn_id, 13);
		ck_assert_str_eq(p.entry, "acct-0005");
		ck_assert_str_eq(p.reason, "expired");
	}
	return 0;
}

static void
enc_stats(struct msgbuf *b)
{
	struct m_stats p = { 0 };

	ck_assert(m_stats_add(&p, "conns_open", 4));
	ck_assert(m_stats_add(&p, "bytes_relayed", 0x100000000ULL));
	ck_assert(m_stats_add(&p, "pool_enabled", 1));
	m_stats_encode(b, &p);
}

static int
dec_stats(const struct msg *m, bool verify)
{
	struct m_stats p;

	if (m_stats_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.nstats, 3);
		ck_assert_str_eq(p.stats[0].name, "conns_open");
		ck_assert_uint_eq(p.stats[0].value, 4);
		ck_assert_str_eq(p.stats[1].name, "bytes_relayed");
		ck_assert_uint_eq(p.stats[1].value, 0x100000000ULL);
		ck_assert_str_eq(p.stats[2].name, "pool_enabled");
		ck_assert_uint_eq(p.stats[2].value, 1);
	}
	return 0;
}

static const char ws_head[] = "GET /v1/responses HTTP/1.1\r\nHost: x\r\n\r\n";

static void
enc_ws_adopt(struct msgbuf *b)
{
	m_ws_adopt_encode(b, &(struct m_ws_adopt){ .key_hash = 0xabcdef,
	    .entry = "acct-0001", .max_message = 65536, .head = ws_head,
	    .head_len = sizeof(ws_head) - 1 });
}

static int
dec_ws_adopt(const struct msg *m, bool verify)
{
	struct m_ws_adopt p;

	if (m_ws_adopt_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.key_hash, 0xabcdef);
		ck_assert_str_eq(p.entry, "acct-0001");
		ck_assert_uint_eq(p.max_message, 65536);
		ck_blob_eq(p.head, p.head_len, ws_head, sizeof(ws_head) - 1);
	}
	return 0;
}

static void
enc_ws_reply(struct msgbuf *b)
{
	m_ws_reply_encode(b, &(struct m_ws_reply){ .turn_rid = 77, .close_code = 1012,
	    .close_reason = "reconnect", .frame = frame_json,
	    .frame_len = sizeof(frame_json) - 1 });
}

static int
dec_ws_reply(const struct msg *m, bool verify)
{
	struct m_ws_reply p;

	if (m_ws_reply_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.turn_rid, 77);
		ck_assert_uint_eq(p.close_code, 1012);
		ck_assert_str_eq(p.close_reason, "reconnect");
		ck_blob_eq(p.frame, p.frame_len, frame_json, sizeof(frame_json) - 1);
	}
	return 0;
}

static void
enc_ws_close(struct msgbuf *b)
{
	m_ws_close_encode(b, &(struct m_ws_close){ .code = 1001, .reason = "bye" });
}

static int
dec_ws_close(const struct msg *m, bool verify)
{
	struct m_ws_close p;

	if (m_ws_close_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.code, 1001);
		ck_assert_str_eq(p.reason, "bye");
	}
	return 0;
}

static void
enc_ws_turn(struct msgbuf *b)
{
	m_ws_turn_encode(b, &(struct m_ws_turn){ .model = "gpt-5.4",
	    .previous_response_id = "resp_1", .generate = 1, .frame_len = 4242 });
}

static int
dec_ws_turn(const struct msg *m, bool verify)
{
	struct m_ws_turn p;

	if (m_ws_turn_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_str_eq(p.model, "gpt-5.4");
		ck_assert_str_eq(p.previous_response_id, "resp_1");
		ck_assert_uint_eq(p.generate, 1);
		ck_assert_uint_eq(p.frame_len, 4242);
	}
	return 0;
}

static void
enc_ws_gone(struct msgbuf *b)
{
	m_ws_gone_encode(b, &(struct m_ws_gone){ .code = 1006, .reason = "reset" });
}

static int
dec_ws_gone(const struct msg *m, bool verify)
{
	struct m_ws_gone p;

	if (m_ws_gone_decode(m, &p) == -1)
		return -1;
	if (verify) {
		ck_assert_uint_eq(p.code, 1006);
		ck_assert_str_eq(p.reason, "reset");
	}
	return 0;
}

static const struct codec_case {
	uint32_t	 type;
	void		(*enc)(struct msgbuf *);
	int		(*dec)(const struct msg *, bool);
} cases[] = {
	{ MSG_CONFIG,		enc_config,	 dec_config },
	{ MSG_UPSTREAM_ADDRS,	enc_addrs,	 dec_addrs },
	{ MSG_REQ_START,	enc_start,	 dec_start },
	{ MSG_REQ_CANCEL,	enc_cancel,	 dec_cancel },
	{ MSG_EVICT,		enc_evict,	 dec_evict },
	{ MSG_CONN_CLOSE,	enc_conn_close,	 dec_conn_close },
	{ MSG_POOL_ENABLE,	enc_pool_enable, dec_pool_enable },
	{ MSG_STATS_REQ,	enc_stats_req,	 dec_stats_req },
	{ MSG_SHUTDOWN,		enc_shutdown,	 dec_shutdown },
	{ MSG_HELLO,		enc_hello,	 dec_hello },
	{ MSG_REQ_DECISION,	enc_decision,	 dec_decision },
	{ MSG_REQ_STARTED,	enc_started,	 dec_started },
	{ MSG_REQ_EVENT,	enc_event,	 dec_event },
	{ MSG_REQ_DONE,		enc_done,	 dec_done },
	{ MSG_REQ_ERROR,	enc_error,	 dec_error },
	{ MSG_RATE_LIMITS,	enc_rate_limits, dec_rate_limits },
	{ MSG_CONN_UP,		enc_conn_up,	 dec_conn_up },
	{ MSG_CONN_DOWN,	enc_conn_down,	 dec_conn_down },
	{ MSG_STATS,		enc_stats,	 dec_stats },
	{ MSG_WS_ADOPT,		enc_ws_adopt,	 dec_ws_adopt },
	{ MSG_WS_REPLY,		enc_ws_reply,	 dec_ws_reply },
	{ MSG_WS_CLOSE,		enc_ws_close,	 dec_ws_close },
	{ MSG_WS_TURN,		enc_ws_turn,	 dec_ws_turn },
	{ MSG_WS_GONE,		enc_ws_gone,	 dec_ws_gone },
};
#define NCASES	(sizeof(cases) / sizeof(cases[0]))

/* Every message type msgtypes.h names has a case. */
START_TEST(test_codec__covers_every_type)
{
	uint32_t t;
	size_t i, n = 0;

	for (t = 0; t < 1000; t++) {
		if (t == MSG_NONE || strcmp(msg_type_name(t), "unknown") == 0)
			continue;
		n++;
		for (i = 0; i < NCASES && cases[i].type != t; i++)
			;
		ck_assert_msg(i < NCASES, "no codec case for %s",
		    msg_type_name(t));
	}
	ck_assert_uint_eq(n, NCASES);
}
END_TEST

START_TEST(test_codec__round_trip)
{
	const struct codec_case *c = &cases[_i];
	struct msgbuf b;
	struct msg m;

	msgbuf_init(&b);
	msg_add_str(&b, "stale bytes");		/* encode replaces them */
	c->enc(&b);
	m = as_msg(c->type, &b, b.len);
	ck_assert_msg(c->dec(&m, true) == 0, "%s does not round-trip",
	    msg_type_name(c->type));
	msgbuf_free(&b);
}
END_TEST

START_TEST(test_codec__truncated_rejected)
{
	const struct codec_case *c = &cases[_i];
	struct msgbuf b;
	struct msg m;
	size_t len;

	msgbuf_init(&b);
	c->enc(&b);
	for (len = 0; len < b.len; len++) {
		m = as_msg(c->type, &b, len);
		ck_assert_msg(c->dec(&m, false) == -1,
		    "%s accepted %zu of %zu bytes", msg_type_name(c->type),
		    len, b.len);
	}
	msgbuf_free(&b);
}
END_TEST

START_TEST(test_codec__trailing_byte_rejected)
{
	const struct codec_case *c = &cases[_i];
	struct msgbuf b;
	struct msg m;

	msgbuf_init(&b);
	c->enc(&b);
	msg_add_u8(&b, 0);
	m = as_msg(c->type, &b, b.len);
	ck_assert_msg(c->dec(&m, false) == -1, "%s accepted a trailing byte",
	    msg_type_name(c->type));
	msgbuf_free(&b);
}
END_TEST

START_TEST(test_codec__wrong_type_rejected)
{
	const struct codec_case *c = &cases[_i];
	struct msgbuf b;
	struct msg m;

	msgbuf_init(&b);
	c->enc(&b);
	m = as_msg(c->type == MSG_STATS ? MSG_CONFIG : MSG_STATS, &b, b.len);
	ck_assert_int_eq(c->dec(&m, false), -1);
	msgbuf_free(&b);
}
END_TEST

/* Through a real channel, as the supervisor and a worker use it. */
START_TEST(test_codec__through_msgchan)
{
	struct msgchan *tx, *rx;
	struct msgbuf b;
	struct msg m;
	struct pollfd pfd;
	int sv[2], rc = 0, i;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	tx = msgchan_new(sv[0]);
	rx = msgchan_new(sv[1]);
	ck_assert_ptr_nonnull(tx);
	ck_assert_ptr_nonnull(rx);
	msgbuf_init(&b);
	enc_start(&b);
	ck_assert_int_eq(msgchan_send_buf(tx, MSG_REQ_START, 77, &b),
	    MSGCHAN_OK);
	for (i = 0; i < 1000 && (rc = msgchan_next(rx, &m)) == 0; i++) {
		pfd.fd = sv[1];
		pfd.events = POLLIN;
		ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
		ck_assert_int_eq(msgchan_read(rx), MSGCHAN_OK);
	}
	ck_assert_int_eq(rc, 1);
	ck_assert_uint_eq(m.hdr.rid, 77);
	ck_assert_int_eq(dec_start(&m, true), 0);
	msgbuf_free(&b);
	msgchan_free(tx);
	msgchan_free(rx);
}
END_TEST

/* NULL strings go out as "" and come back as "", never NULL. */
START_TEST(test_codec__null_strings)
{
	struct m_conn_down in = { .conn_id = 1 }, out;
	struct msgbuf b;
	struct msg m;

	msgbuf_init(&b);
	m_conn_down_encode(&b, &in);
	m = as_msg(MSG_CONN_DOWN, &b, b.len);
	ck_assert_int_eq(m_conn_down_decode(&m, &out), 0);
	ck_assert_str_eq(out.entry, "");
	ck_assert_str_eq(out.reason, "");
	msgbuf_free(&b);
}
END_TEST

/* Counts over their limit: encode refuses, decode rejects. */
START_TEST(test_codec__counts_bounded)
{
	struct m_req_start *rs = calloc(1, sizeof(*rs));
	struct m_upstream_addrs *ua = calloc(1, sizeof(*ua));
	struct m_stats *st = calloc(1, sizeof(*st));
	struct msgbuf b;
	struct msg m;
	int i;

	ck_assert_ptr_nonnull(rs);
	ck_assert_ptr_nonnull(ua);
	ck_assert_ptr_nonnull(st);
	msgbuf_init(&b);

	rs->nheaders = M_MAX_HEADERS + 1;
	m_req_start_encode(&b, rs);
	ck_assert(b.failed);
	ua->naddrs = M_MAX_ADDRS + 1;
	m_upstream_addrs_encode(&b, ua);
	ck_assert(b.failed);
	for (i = 0; i < M_MAX_STATS; i++)
		ck_assert(m_stats_add(st, "x", (uint64_t)i));
	ck_assert(!m_stats_add(st, "one too many", 0));
	ck_assert_uint_eq(st->nstats, M_MAX_STATS);
	m_stats_encode(&b, st);
	ck_assert(!b.failed);		/* reset clears the earlier failure */
	m = as_msg(MSG_STATS, &b, b.len);
	ck_assert_int_eq(m_stats_decode(&m, st), 0);
	ck_assert_uint_eq(st->nstats, M_MAX_STATS);

	/* Hand-built payloads that claim one more than the limit. */
	msgbuf_reset(&b);
	msg_add_u32(&b, M_MAX_STATS + 1);
	for (i = 0; i < M_MAX_STATS + 1; i++) {
		msg_add_str(&b, "x");
		msg_add_u64(&b, 0);
	}
	m = as_msg(MSG_STATS, &b, b.len);
	ck_assert_int_eq(m_stats_decode(&m, st), -1);

	msgbuf_reset(&b);
	msg_add_u32(&b, M_MAX_ADDRS + 1);
	for (i = 0; i < M_MAX_ADDRS + 1; i++)
		msg_add_str(&b, "127.0.0.1");
	m = as_msg(MSG_UPSTREAM_ADDRS, &b, b.len);
	ck_assert_int_eq(m_upstream_addrs_decode(&m, ua), -1);

	msgbuf_reset(&b);
	msg_add_u64(&b, 1);
	msg_add_str(&b, "e");
	msg_add_str(&b, "a");
	msg_add_str(&b, "t");
	msg_add_str(&b, "s");
	msg_add_u32(&b, 0);
	msg_add_u32(&b, 1);
	msg_add_u64(&b, 0);
	msg_add_u32(&b, M_MAX_HEADERS + 1);
	for (i = 0; i < M_MAX_HEADERS + 1; i++) {
		msg_add_str(&b, "n");
		msg_add_str(&b, "v");
	}
	msg_add_blob(&b, "{}", 2);
	m = as_msg(MSG_REQ_START, &b, b.len);
	ck_assert_int_eq(m_req_start_decode(&m, rs), -1);

	msgbuf_free(&b);
	free(rs);
	free(ua);
	free(st);
}
END_TEST

/* A string whose NUL is missing (or early) is malformed. */
START_TEST(test_codec__bad_string_rejected)
{
	struct m_evict e;
	struct msgbuf b;
	struct msg m;

	msgbuf_init(&b);
	msg_add_u32(&b, 3);
	msg_add_u8(&b, 'a');
	msg_add_u8(&b, 'b');
	msg_add_u8(&b, 'c');
	msg_add_u8(&b, 'd');		/* not the NUL */
	m = as_msg(MSG_EVICT, &b, b.len);
	ck_assert_int_eq(m_evict_decode(&m, &e), -1);

	msgbuf_reset(&b);
	msg_add_u32(&b, 3);
	msg_add_u8(&b, 'a');
	msg_add_u8(&b, 0);		/* NUL inside */
	msg_add_u8(&b, 'c');
	msg_add_u8(&b, 0);
	m = as_msg(MSG_EVICT, &b, b.len);
	ck_assert_int_eq(m_evict_decode(&m, &e), -1);
	msgbuf_free(&b);
}
END_TEST

Suite *
make_suite_msgcodec(void)
{
	Suite *s = suite_create("msgcodec");
	TCase *tc = tcase_create("codec");

	tcase_add_test(tc, test_codec__covers_every_type);
	tcase_add_loop_test(tc, test_codec__round_trip, 0, (int)NCASES);
	tcase_add_loop_test(tc, test_codec__truncated_rejected, 0, (int)NCASES);
	tcase_add_loop_test(tc, test_codec__trailing_byte_rejected, 0,
	    (int)NCASES);
	tcase_add_loop_test(tc, test_codec__wrong_type_rejected, 0,
	    (int)NCASES);
	tcase_add_test(tc, test_codec__through_msgchan);
	tcase_add_test(tc, test_codec__null_strings);
	tcase_add_test(tc, test_codec__counts_bounded);
	tcase_add_test(tc, test_codec__bad_string_rejected);
	suite_add_tcase(s, tc);
	return s;
}
