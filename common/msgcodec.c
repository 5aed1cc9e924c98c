/*
 * The codec for every supervisor <-> worker payload (msgcodec.h).
 *
 * Each encode writes the fields in the order msgtypes.h gives; its decode
 * reads them back in the same order, next to it, so a change to one shows
 * in the other.  The msg.h reader fails sticky: a short read returns 0 or
 * "" and marks it failed, and msg_end() reports that and any bytes left
 * over, so a decode only checks once, at its end.
 */
#include "config.h"

#include <string.h>

#include "msgcodec.h"

/* Start a decode: the type must match; the output starts zeroed. */
static int
decode_begin(struct msgreader *r, const struct msg *m, uint32_t type,
    void *p, size_t size)
{
	if (p != NULL)
		memset(p, 0, size);
	if (m->hdr.type != type)
		return -1;
	msgreader_init(r, m);
	return 0;
}

#define BEGIN(r, m, type, p) \
	if (decode_begin((r), (m), (type), (p), sizeof(*(p))) == -1) \
		return -1

static int
decode_empty(const struct msg *m, uint32_t type)
{
	return m->hdr.type == type && m->hdr.len == 0 ? 0 : -1;
}

/* ---- supervisor -> worker ------------------------------------------- */

void
m_config_encode(struct msgbuf *b, const struct m_config *p)
{
	msgbuf_reset(b);
	msg_add_str(b, p->upstream_host);
	msg_add_u32(b, p->upstream_port);
	msg_add_str(b, p->upstream_path);
	msg_add_u8(b, p->tls);
	msg_add_str(b, p->ca_file);
	msg_add_str(b, p->proxy_host);
	msg_add_u32(b, p->proxy_port);
	msg_add_u8(b, p->pool_enabled);
	msg_add_u64(b, p->max_age_us);
	msg_add_u64(b, p->ping_interval_us);
	msg_add_u64(b, p->handshake_timeout_us);
	msg_add_u64(b, p->response_start_timeout_us);
	msg_add_str(b, p->originator);
	msg_add_str(b, p->client_version);
}

int
m_config_decode(const struct msg *m, struct m_config *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_CONFIG, p);
	p->upstream_host = msg_get_str(&r);
	p->upstream_port = msg_get_u32(&r);
	p->upstream_path = msg_get_str(&r);
	p->tls = msg_get_u8(&r) != 0;
	p->ca_file = msg_get_str(&r);
	p->proxy_host = msg_get_str(&r);
	p->proxy_port = msg_get_u32(&r);
	p->pool_enabled = msg_get_u8(&r) != 0;
	p->max_age_us = msg_get_u64(&r);
	p->ping_interval_us = msg_get_u64(&r);
	p->handshake_timeout_us = msg_get_u64(&r);
	p->response_start_timeout_us = msg_get_u64(&r);
	p->originator = msg_get_str(&r);
	p->client_version = msg_get_str(&r);
	return msg_end(&r);
}

void
m_upstream_addrs_encode(struct msgbuf *b, const struct m_upstream_addrs *p)
{
	uint32_t i;

	msgbuf_reset(b);
	if (p->naddrs > M_MAX_ADDRS) {
		b->failed = true;
		return;
	}
	msg_add_u32(b, p->naddrs);
	for (i = 0; i < p->naddrs; i++)
		msg_add_str(b, p->addrs[i]);
}

int
m_upstream_addrs_decode(const struct msg *m, struct m_upstream_addrs *p)
{
	struct msgreader r;
	uint32_t i;

	BEGIN(&r, m, MSG_UPSTREAM_ADDRS, p);
	p->naddrs = msg_get_u32(&r);
	if (p->naddrs > M_MAX_ADDRS)
		return -1;
	for (i = 0; i < p->naddrs; i++)
		p->addrs[i] = msg_get_str(&r);
	return msg_end(&r);
}

void
m_req_start_encode(struct msgbuf *b, const struct m_req_start *p)
{
	uint32_t i;

	msgbuf_reset(b);
	if (p->nheaders > M_MAX_HEADERS) {
		b->failed = true;
		return;
	}
	msg_add_u64(b, p->key_hash);
	msg_add_str(b, p->entry);
	msg_add_str(b, p->account_id);
	msg_add_str(b, p->access_token);
	msg_add_str(b, p->session_id);
	msg_add_u32(b, p->flags);
	msg_add_u32(b, p->attempt);
	msg_add_u64(b, p->owner_conn);
	msg_add_u32(b, p->nheaders);
	for (i = 0; i < p->nheaders; i++) {
		msg_add_str(b, p->headers[i].name);
		msg_add_str(b, p->headers[i].value);
	}
	msg_add_blob(b, p->frame, p->frame_len);
	msg_add_u64(b, p->wsid);
	msg_add_str(b, p->installation_id);
	msg_add_str(b, p->model);
}

int
m_req_start_decode(const struct msg *m, struct m_req_start *p)
{
	struct msgreader r;
	uint32_t i;

	BEGIN(&r, m, MSG_REQ_START, p);
	p->key_hash = msg_get_u64(&r);
	p->entry = msg_get_str(&r);
	p->account_id = msg_get_str(&r);
	p->access_token = msg_get_str(&r);
	p->session_id = msg_get_str(&r);
	p->flags = msg_get_u32(&r);
	p->attempt = msg_get_u32(&r);
	p->owner_conn = msg_get_u64(&r);
	p->nheaders = msg_get_u32(&r);
	if (p->nheaders > M_MAX_HEADERS)
		return -1;
	for (i = 0; i < p->nheaders; i++) {
		p->headers[i].name = msg_get_str(&r);
		p->headers[i].value = msg_get_str(&r);
	}
	p->frame = msg_get_blob(&r, &p->frame_len);
	p->wsid = msg_get_u64(&r);
	p->installation_id = msg_get_str(&r);
	p->model = msg_get_str(&r);
	return msg_end(&r);
}

void
m_req_cancel_encode(struct msgbuf *b)
{
	msgbuf_reset(b);
}

int
m_req_cancel_decode(const struct msg *m)
{
	return decode_empty(m, MSG_REQ_CANCEL);
}

void
m_evict_encode(struct msgbuf *b, const struct m_evict *p)
{
	msgbuf_reset(b);
	msg_add_str(b, p->entry);
}

int
m_evict_decode(const struct msg *m, struct m_evict *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_EVICT, p);
	p->entry = msg_get_str(&r);
	return msg_end(&r);
}

void
m_conn_close_encode(struct msgbuf *b, const struct m_conn_close *p)
{
	msgbuf_reset(b);
	msg_add_u64(b, p->conn_id);
	msg_add_str(b, p->reason);
}

int
m_conn_close_decode(const struct msg *m, struct m_conn_close *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_CONN_CLOSE, p);
	p->conn_id = msg_get_u64(&r);
	p->reason = msg_get_str(&r);
	return msg_end(&r);
}

void
m_pool_enable_encode(struct msgbuf *b, const struct m_pool_enable *p)
{
	msgbuf_reset(b);
	msg_add_u8(b, p->enabled);
}

int
m_pool_enable_decode(const struct msg *m, struct m_pool_enable *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_POOL_ENABLE, p);
	p->enabled = msg_get_u8(&r) != 0;
	return msg_end(&r);
}

void
m_stats_req_encode(struct msgbuf *b)
{
	msgbuf_reset(b);
}

int
m_stats_req_decode(const struct msg *m)
{
	return decode_empty(m, MSG_STATS_REQ);
}

void
m_shutdown_encode(struct msgbuf *b, const struct m_shutdown *p)
{
	msgbuf_reset(b);
	msg_add_u64(b, p->grace_us);
}

int
m_shutdown_decode(const struct msg *m, struct m_shutdown *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_SHUTDOWN, p);
	p->grace_us = msg_get_u64(&r);
	return msg_end(&r);
}

void
m_ws_adopt_encode(struct msgbuf *b, const struct m_ws_adopt *p)
{
	msgbuf_reset(b);
	msg_add_u64(b, p->key_hash);
	msg_add_str(b, p->entry);
	msg_add_u32(b, p->max_message);
	msg_add_blob(b, p->head, p->head_len);
}

int
m_ws_adopt_decode(const struct msg *m, struct m_ws_adopt *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_WS_ADOPT, p);
	p->key_hash = msg_get_u64(&r);
	p->entry = msg_get_str(&r);
	p->max_message = msg_get_u32(&r);
	p->head = msg_get_blob(&r, &p->head_len);
	return msg_end(&r);
}

void
m_ws_reply_encode(struct msgbuf *b, const struct m_ws_reply *p)
{
	msgbuf_reset(b);
	msg_add_u64(b, p->turn_rid);
	msg_add_u32(b, p->close_code);
	msg_add_str(b, p->close_reason);
	msg_add_blob(b, p->frame, p->frame_len);
}

int
m_ws_reply_decode(const struct msg *m, struct m_ws_reply *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_WS_REPLY, p);
	p->turn_rid = msg_get_u64(&r);
	p->close_code = msg_get_u32(&r);
	p->close_reason = msg_get_str(&r);
	p->frame = msg_get_blob(&r, &p->frame_len);
	return msg_end(&r);
}

void
m_ws_close_encode(struct msgbuf *b, const struct m_ws_close *p)
{
	msgbuf_reset(b);
	msg_add_u32(b, p->code);
	msg_add_str(b, p->reason);
}

int
m_ws_close_decode(const struct msg *m, struct m_ws_close *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_WS_CLOSE, p);
	p->code = msg_get_u32(&r);
	p->reason = msg_get_str(&r);
	return msg_end(&r);
}

/* ---- worker -> supervisor ------------------------------------------- */

void
m_hello_encode(struct msgbuf *b, const struct m_hello *p)
{
	msgbuf_reset(b);
	msg_add_u32(b, p->proto_version);
	msg_add_u32(b, p->slot);
	msg_add_u32(b, p->pid);
}

int
m_hello_decode(const struct msg *m, struct m_hello *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_HELLO, p);
	p->proto_version = msg_get_u32(&r);
	p->slot = msg_get_u32(&r);
	p->pid = msg_get_u32(&r);
	return msg_end(&r);
}

void
m_req_decision_encode(struct msgbuf *b, const struct m_req_decision *p)
{
	msgbuf_reset(b);
	msg_add_u8(b, p->decision);
	msg_add_u8(b, p->reason);
	msg_add_u64(b, p->conn_id);
}

int
m_req_decision_decode(const struct msg *m, struct m_req_decision *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_REQ_DECISION, p);
	p->decision = msg_get_u8(&r);
	p->reason = msg_get_u8(&r);
	p->conn_id = msg_get_u64(&r);
	return msg_end(&r);
}

void
m_req_started_encode(struct msgbuf *b)
{
	msgbuf_reset(b);
}

int
m_req_started_decode(const struct msg *m)
{
	return decode_empty(m, MSG_REQ_STARTED);
}

void
m_req_event_encode(struct msgbuf *b, const struct m_req_event *p)
{
	msgbuf_reset(b);
	msg_add_blob(b, p->frame, p->frame_len);
}

int
m_req_event_decode(const struct msg *m, struct m_req_event *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_REQ_EVENT, p);
	p->frame = msg_get_blob(&r, &p->frame_len);
	return msg_end(&r);
}

void
m_req_done_encode(struct msgbuf *b, const struct m_req_done *p)
{
	msgbuf_reset(b);
	msg_add_u8(b, p->outcome);
	msg_add_str(b, p->message);
	msg_add_str(b, p->response_id);
	msg_add_u64(b, p->input_tokens);
	msg_add_u64(b, p->cached_tokens);
	msg_add_u64(b, p->output_tokens);
	msg_add_u64(b, p->conn_id);
}

int
m_req_done_decode(const struct msg *m, struct m_req_done *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_REQ_DONE, p);
	p->outcome = msg_get_u8(&r);
	p->message = msg_get_str(&r);
	p->response_id = msg_get_str(&r);
	p->input_tokens = msg_get_u64(&r);
	p->cached_tokens = msg_get_u64(&r);
	p->output_tokens = msg_get_u64(&r);
	p->conn_id = msg_get_u64(&r);
	return msg_end(&r);
}

void
m_req_error_encode(struct msgbuf *b, const struct m_req_error *p)
{
	msgbuf_reset(b);
	msg_add_u32(b, p->http_status);
	msg_add_u8(b, p->flags);
	msg_add_str(b, p->code);
	msg_add_blob(b, p->body, p->body_len);
}

int
m_req_error_decode(const struct msg *m, struct m_req_error *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_REQ_ERROR, p);
	p->http_status = msg_get_u32(&r);
	p->flags = msg_get_u8(&r);
	p->code = msg_get_str(&r);
	p->body = msg_get_blob(&r, &p->body_len);
	return msg_end(&r);
}

void
m_rate_limits_encode(struct msgbuf *b, const struct m_rate_limits *p)
{
	msgbuf_reset(b);
	msg_add_str(b, p->entry);
	msg_add_blob(b, p->frame, p->frame_len);
}

int
m_rate_limits_decode(const struct msg *m, struct m_rate_limits *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_RATE_LIMITS, p);
	p->entry = msg_get_str(&r);
	p->frame = msg_get_blob(&r, &p->frame_len);
	return msg_end(&r);
}

void
m_conn_up_encode(struct msgbuf *b, const struct m_conn_up *p)
{
	msgbuf_reset(b);
	msg_add_u64(b, p->conn_id);
	msg_add_u64(b, p->key_hash);
	msg_add_str(b, p->entry);
}

int
m_conn_up_decode(const struct msg *m, struct m_conn_up *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_CONN_UP, p);
	p->conn_id = msg_get_u64(&r);
	p->key_hash = msg_get_u64(&r);
	p->entry = msg_get_str(&r);
	return msg_end(&r);
}

void
m_conn_down_encode(struct msgbuf *b, const struct m_conn_down *p)
{
	msgbuf_reset(b);
	msg_add_u64(b, p->conn_id);
	msg_add_str(b, p->entry);
	msg_add_str(b, p->reason);
}

int
m_conn_down_decode(const struct msg *m, struct m_conn_down *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_CONN_DOWN, p);
	p->conn_id = msg_get_u64(&r);
	p->entry = msg_get_str(&r);
	p->reason = msg_get_str(&r);
	return msg_end(&r);
}

void
m_stats_encode(struct msgbuf *b, const struct m_stats *p)
{
	uint32_t i;

	msgbuf_reset(b);
	if (p->nstats > M_MAX_STATS) {
		b->failed = true;
		return;
	}
	msg_add_u32(b, p->nstats);
	for (i = 0; i < p->nstats; i++) {
		msg_add_str(b, p->stats[i].name);
		msg_add_u64(b, p->stats[i].value);
	}
}

int
m_stats_decode(const struct msg *m, struct m_stats *p)
{
	struct msgreader r;
	uint32_t i;

	BEGIN(&r, m, MSG_STATS, p);
	p->nstats = msg_get_u32(&r);
	if (p->nstats > M_MAX_STATS)
		return -1;
	for (i = 0; i < p->nstats; i++) {
		p->stats[i].name = msg_get_str(&r);
		p->stats[i].value = msg_get_u64(&r);
	}
	return msg_end(&r);
}

bool
m_stats_add(struct m_stats *p, const char *name, uint64_t value)
{
	if (p->nstats >= M_MAX_STATS)
		return false;
	p->stats[p->nstats].name = name;
	p->stats[p->nstats].value = value;
	p->nstats++;
	return true;
}

void
m_ws_turn_encode(struct msgbuf *b, const struct m_ws_turn *p)
{
	msgbuf_reset(b);
	msg_add_str(b, p->model);
	msg_add_str(b, p->previous_response_id);
	msg_add_u8(b, p->generate);
	msg_add_u32(b, p->frame_len);
}

int
m_ws_turn_decode(const struct msg *m, struct m_ws_turn *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_WS_TURN, p);
	p->model = msg_get_str(&r);
	p->previous_response_id = msg_get_str(&r);
	p->generate = msg_get_u8(&r);
	p->frame_len = msg_get_u32(&r);
	return msg_end(&r);
}

void
m_ws_gone_encode(struct msgbuf *b, const struct m_ws_gone *p)
{
	msgbuf_reset(b);
	msg_add_u32(b, p->code);
	msg_add_str(b, p->reason);
}

int
m_ws_gone_decode(const struct msg *m, struct m_ws_gone *p)
{
	struct msgreader r;

	BEGIN(&r, m, MSG_WS_GONE, p);
	p->code = msg_get_u32(&r);
	p->reason = msg_get_str(&r);
	return msg_end(&r);
}
