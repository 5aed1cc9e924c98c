/*
 * One codec for every supervisor <-> worker message (msgtypes.h lists
 * them): a struct per payload and an encode and a decode function per
 * message, used by both sides, so the writer and the reader of a payload
 * cannot disagree on its layout.
 *
 *	struct m_evict e = { .entry = "acct-0001" };
 *	m_evict_encode(&b, &e);			(b: an initialised msgbuf)
 *	msgchan_send_buf(ch, MSG_EVICT, 0, &b);
 *
 *	struct m_evict e;
 *	if (m_evict_decode(m, &e) == -1)	(m: a received struct msg)
 *		... malformed: log and drop ...
 *
 * Encode replaces b's contents with the payload; a NULL string is sent as
 * "", and a payload that cannot be sent (over MSG_MAX_PAYLOAD, or a count
 * over its M_MAX_*) marks b failed, which msgchan_send_buf() refuses.
 *
 * Decode returns 0, or -1 when the message is not of that type or its
 * payload is short, malformed (a string without its NUL, a count over its
 * M_MAX_*) or has bytes left over; after -1, *p holds nothing useful.
 * Decoded strings are never NULL ("" when empty) and, like blobs, borrow
 * the message's buffer: they are valid only as long as the struct msg is
 * (msg.h: until the next msgchan_read()/msgchan_next() on the channel),
 * so copy what must outlive the message.
 */
#ifndef CODEXPOOL_MSGCODEC_H
#define CODEXPOOL_MSGCODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "msgtypes.h"

#define M_MAX_HEADERS	32	/* extra handshake headers in MSG_REQ_START */
#define M_MAX_ADDRS	64	/* addresses in MSG_UPSTREAM_ADDRS */
#define M_MAX_STATS	64	/* counters in MSG_STATS */

/* ---- supervisor -> worker ------------------------------------------- */

struct m_config {
	const char	*upstream_host;
	uint32_t	 upstream_port;
	const char	*upstream_path;
	bool		 tls;
	const char	*ca_file;		/* "" = system CAs */
	const char	*proxy_host;		/* "" = direct */
	uint32_t	 proxy_port;
	bool		 pool_enabled;
	uint64_t	 max_age_us;
	uint64_t	 ping_interval_us;
	uint64_t	 handshake_timeout_us;
	uint64_t	 response_start_timeout_us;
	const char	*originator;
	const char	*client_version;
};

struct m_upstream_addrs {
	uint32_t	 naddrs;
	const char	*addrs[M_MAX_ADDRS];	/* numeric addresses */
};

struct m_header {
	const char	*name;
	const char	*value;
};

struct m_req_start {
	uint64_t	 key_hash;		/* 0: no conversation */
	const char	*entry;
	const char	*account_id;
	const char	*access_token;
	const char	*session_id;		/* "" = none */
	uint32_t	 flags;			/* REQ_F_* */
	uint32_t	 attempt;		/* 1-based, for logs */
	uint64_t	 owner_conn;		/* REQ_F_CONTINUE */
	uint32_t	 nheaders;
	struct m_header	 headers[M_MAX_HEADERS];
	const void	*frame;			/* response.create JSON text */
	size_t		 frame_len;
	uint64_t	 wsid;			/* client WebSocket; 0: HTTP */
	const char	*installation_id;	/* wsid: for its held frame */
	const char	*model;			/* wsid: "" = the client's */
};

struct m_ws_adopt {
	uint64_t	 key_hash;
	const char	*entry;
	uint32_t	 max_message;
	const void	*head;			/* the upgrade request */
	size_t		 head_len;
};

struct m_ws_reply {
	uint64_t	 turn_rid;
	uint32_t	 close_code;		/* 0: keep the socket */
	const char	*close_reason;
	const void	*frame;			/* error event, may be empty */
	size_t		 frame_len;
};

struct m_ws_close {
	uint32_t	 code;
	const char	*reason;
};

struct m_evict {
	const char	*entry;
};

struct m_conn_close {
	uint64_t	 conn_id;
	const char	*reason;
};

struct m_pool_enable {
	bool		 enabled;
};

struct m_shutdown {
	uint64_t	 grace_us;
};

void	m_config_encode(struct msgbuf *, const struct m_config *);
int	m_config_decode(const struct msg *, struct m_config *);
void	m_upstream_addrs_encode(struct msgbuf *, const struct m_upstream_addrs *);
int	m_upstream_addrs_decode(const struct msg *, struct m_upstream_addrs *);
void	m_req_start_encode(struct msgbuf *, const struct m_req_start *);
int	m_req_start_decode(const struct msg *, struct m_req_start *);
void	m_req_cancel_encode(struct msgbuf *);		/* no payload */
int	m_req_cancel_decode(const struct msg *);
void	m_evict_encode(struct msgbuf *, const struct m_evict *);
int	m_evict_decode(const struct msg *, struct m_evict *);
void	m_conn_close_encode(struct msgbuf *, const struct m_conn_close *);
int	m_conn_close_decode(const struct msg *, struct m_conn_close *);
void	m_pool_enable_encode(struct msgbuf *, const struct m_pool_enable *);
int	m_pool_enable_decode(const struct msg *, struct m_pool_enable *);
void	m_stats_req_encode(struct msgbuf *);		/* no payload */
int	m_stats_req_decode(const struct msg *);
void	m_shutdown_encode(struct msgbuf *, const struct m_shutdown *);
int	m_shutdown_decode(const struct msg *, struct m_shutdown *);
void	m_ws_adopt_encode(struct msgbuf *, const struct m_ws_adopt *);
int	m_ws_adopt_decode(const struct msg *, struct m_ws_adopt *);
void	m_ws_reply_encode(struct msgbuf *, const struct m_ws_reply *);
int	m_ws_reply_decode(const struct msg *, struct m_ws_reply *);
void	m_ws_close_encode(struct msgbuf *, const struct m_ws_close *);
int	m_ws_close_decode(const struct msg *, struct m_ws_close *);

/* ---- worker -> supervisor ------------------------------------------- */

struct m_hello {
	uint32_t	 proto_version;		/* MSG_PROTO_VERSION */
	uint32_t	 slot;
	uint32_t	 pid;
};

struct m_req_decision {
	uint8_t		 decision;		/* DEC_* */
	uint8_t		 reason;		/* BYP_*, for DEC_BYPASS */
	uint64_t	 conn_id;		/* 0 for one-shot */
};

struct m_req_event {
	const void	*frame;			/* one upstream JSON frame */
	size_t		 frame_len;
};

struct m_req_done {
	uint8_t		 outcome;		/* DONE_* */
	const char	*message;		/* why, for DONE_STREAM_ERROR */
	const char	*response_id;
	uint64_t	 input_tokens;
	uint64_t	 cached_tokens;
	uint64_t	 output_tokens;
	uint64_t	 conn_id;		/* owns response_id; 0 if none */
};

struct m_req_error {
	uint32_t	 http_status;
	uint8_t		 flags;			/* ERR_F_* */
	const char	*code;
	const void	*body;			/* OpenAI-style error JSON */
	size_t		 body_len;
};

struct m_rate_limits {
	const char	*entry;
	const void	*frame;			/* codex.rate_limits JSON */
	size_t		 frame_len;
};

struct m_conn_up {
	uint64_t	 conn_id;
	uint64_t	 key_hash;
	const char	*entry;
};

struct m_conn_down {
	uint64_t	 conn_id;
	const char	*entry;
	const char	*reason;
};

struct m_ws_turn {
	const char	*model;
	const char	*previous_response_id;	/* "" none */
	uint8_t		 generate;
	uint32_t	 frame_len;
};

struct m_ws_gone {
	uint32_t	 code;
	const char	*reason;
};

struct m_stat {
	const char	*name;
	uint64_t	 value;
};

struct m_stats {
	uint32_t	 nstats;
	struct m_stat	 stats[M_MAX_STATS];
};

void	m_hello_encode(struct msgbuf *, const struct m_hello *);
int	m_hello_decode(const struct msg *, struct m_hello *);
void	m_req_decision_encode(struct msgbuf *, const struct m_req_decision *);
int	m_req_decision_decode(const struct msg *, struct m_req_decision *);
void	m_req_started_encode(struct msgbuf *);		/* no payload */
int	m_req_started_decode(const struct msg *);
void	m_req_event_encode(struct msgbuf *, const struct m_req_event *);
int	m_req_event_decode(const struct msg *, struct m_req_event *);
void	m_req_done_encode(struct msgbuf *, const struct m_req_done *);
int	m_req_done_decode(const struct msg *, struct m_req_done *);
void	m_req_error_encode(struct msgbuf *, const struct m_req_error *);
int	m_req_error_decode(const struct msg *, struct m_req_error *);
void	m_rate_limits_encode(struct msgbuf *, const struct m_rate_limits *);
int	m_rate_limits_decode(const struct msg *, struct m_rate_limits *);
void	m_conn_up_encode(struct msgbuf *, const struct m_conn_up *);
int	m_conn_up_decode(const struct msg *, struct m_conn_up *);
void	m_conn_down_encode(struct msgbuf *, const struct m_conn_down *);
int	m_conn_down_decode(const struct msg *, struct m_conn_down *);
void	m_stats_encode(struct msgbuf *, const struct m_stats *);
int	m_stats_decode(const struct msg *, struct m_stats *);
void	m_ws_turn_encode(struct msgbuf *, const struct m_ws_turn *);
int	m_ws_turn_decode(const struct msg *, struct m_ws_turn *);
void	m_ws_gone_encode(struct msgbuf *, const struct m_ws_gone *);
int	m_ws_gone_decode(const struct msg *, struct m_ws_gone *);
/* Append one counter; false (and nothing added) when stats is full. */
bool	m_stats_add(struct m_stats *, const char *name, uint64_t value);

#endif
