/*
 * Every message between the supervisor (codexpoold) and its workers.
 *
 * This is the one place that lists them; both sides include it.  Each
 * entry says who sends it, what the rid header field means, the payload
 * in wire order (u8, u32, u64, str, blob as in msg.h) and the msgcodec.h
 * struct both sides encode and decode it with (struct m_*, functions
 * m_*_encode/m_*_decode).  Add new types at the end of a group; never
 * renumber; a payload change bumps MSG_PROTO_VERSION.
 */
#ifndef CODEXPOOL_MSGTYPES_H
#define CODEXPOOL_MSGTYPES_H

#include <stdint.h>

#define MSG_PROTO_VERSION	3	/* 2: REQ_START attempt; 3: client WebSockets */

enum msg_type {
	MSG_NONE = 0,

	/* ---- supervisor -> worker ------------------------------------ */

	/* Settings the worker runs with; sent after HELLO and on reload.
	 * struct m_config:
	 * str upstream_host, u32 upstream_port, str upstream_path, u8 tls,
	 * str ca_file ("" = system CAs), str proxy_host ("" = direct),
	 * u32 proxy_port, u8 pool_enabled, u64 max_age_us,
	 * u64 ping_interval_us, u64 handshake_timeout_us,
	 * u64 response_start_timeout_us, str originator, str client_version */
	MSG_CONFIG = 1,

	/* Addresses of the upstream host, resolved by the supervisor (the
	 * worker never does DNS).  struct m_upstream_addrs:
	 * u32 n (at most M_MAX_ADDRS), then n x str numeric address. */
	MSG_UPSTREAM_ADDRS = 2,

	/* Start one turn.  rid = request id.  struct m_req_start:
	 * u64 key_hash (0: no conversation), str entry, str account_id,
	 * str access_token, str session_id (sent upstream as session_id and
	 * x-client-request-id; "" = none), u32 flags (REQ_F_*),
	 * u32 attempt (1-based, for logs), u64 owner_conn (REQ_F_CONTINUE:
	 * the connection that owns the previous_response_id), u32 nheaders
	 * (at most M_MAX_HEADERS), nheaders x (str name, str value) extra
	 * handshake headers, blob frame (the response.create JSON text),
	 * u64 wsid (0: an HTTP turn; else the client WebSocket whose held
	 * response.create this turn sends, and frame is empty), str
	 * installation_id and str model ("" = the client's), applied to that
	 * held frame by the worker. */
	MSG_REQ_START = 3,

	/* The client went away: abandon the turn and evict its connection
	 * (tail frames must never reach the next turn).  rid; no payload
	 * (m_req_cancel_encode/decode). */
	MSG_REQ_CANCEL = 4,

	/* Close every pooled connection of an account; busy ones after their
	 * turn.  struct m_evict: str entry. */
	MSG_EVICT = 5,

	/* Close one pooled connection (the supervisor makes room under the
	 * per-account cap); busy ones after their turn.
	 * struct m_conn_close: u64 conn_id, str reason. */
	MSG_CONN_CLOSE = 6,

	/* Runtime switch.  struct m_pool_enable: u8 enabled.  Disabling closes idle pooled
	 * connections at once and busy ones after their turn. */
	MSG_POOL_ENABLE = 7,

	/* Ask for counters.  rid = the control request; no payload
	 * (m_stats_req_encode/decode). */
	MSG_STATS_REQ = 8,

	/* Stop: refuse new turns, let running ones finish, close pooled
	 * connections with code 1000, exit.  struct m_shutdown: u64 grace_us. */
	MSG_SHUTDOWN = 9,

	/* A client WebSocket upgrade, handed over with its socket (the fd,
	 * SCM_RIGHTS).  rid = wsid, the session's id.  struct m_ws_adopt:
	 * u64 key_hash (the session's pool key), str entry, u32 max_message
	 * (bytes), blob head (the upgrade request as the worker's HTTP
	 * parser must see it).  The worker answers the upgrade; frames never
	 * pass through the supervisor. */
	MSG_WS_ADOPT = 10,

	/* The answer to a client WebSocket turn that ends before output
	 * (refused, or failed after retries).  rid = wsid.
	 * struct m_ws_reply: u64 turn_rid, u32 close_code (0: keep the
	 * socket), str close_reason, blob frame (an error event, or empty). */
	MSG_WS_REPLY = 11,

	/* Close a client WebSocket, after its current turn if it has one.
	 * rid = wsid.  struct m_ws_close: u32 code, str reason. */
	MSG_WS_CLOSE = 12,

	/* ---- worker -> supervisor ------------------------------------ */

	/* The worker is up.  struct m_hello: u32 proto_version
	 * (MSG_PROTO_VERSION), u32 slot, u32 pid. */
	MSG_HELLO = 100,

	/* How a turn is dispatched upstream; sent once per attempt (a stale
	 * reuse sends a second one with DEC_RETRY_STALE).  rid.
	 * struct m_req_decision: u8 decision (DEC_*), u8 reason (BYP_*, for DEC_BYPASS), u64 conn_id
	 * (pooled connection used, 0 for one-shot). */
	MSG_REQ_DECISION = 101,

	/* The first output frame arrived: the supervisor may now commit its
	 * HTTP response headers.  rid; no payload
	 * (m_req_started_encode/decode).  REQ_EVENTs follow. */
	MSG_REQ_STARTED = 102,

	/* One upstream frame to relay, in order.  rid.
	 * struct m_req_event: blob frame (JSON). */
	MSG_REQ_EVENT = 103,

	/* The turn is over after it started.  rid.  struct m_req_done:
	 * u8 outcome (DONE_*), str message (why, for DONE_STREAM_ERROR),
	 * str response_id, u64 input_tokens, u64 cached_tokens,
	 * u64 output_tokens, u64 conn_id (the pooled connection that now owns
	 * response_id, 0 if none). */
	MSG_REQ_DONE = 104,

	/* The turn failed before it started: nothing reached the client.  rid.
	 * struct m_req_error:
	 * u32 http_status, u8 flags (ERR_F_*), str code, blob body (an
	 * OpenAI-style error JSON, or the upstream error frame). */
	MSG_REQ_ERROR = 105,

	/* A codex.rate_limits frame (not relayed to clients).  rid.
	 * struct m_rate_limits: str entry, blob frame. */
	MSG_RATE_LIMITS = 106,

	/* A pooled connection finished its handshake and joined the pool.
	 * struct m_conn_up: u64 conn_id, u64 key_hash, str entry. */
	MSG_CONN_UP = 107,

	/* A pooled connection left the pool (closed, died, expired, evicted).
	 * struct m_conn_down: u64 conn_id, str entry, str reason. */
	MSG_CONN_DOWN = 108,

	/* Counters.  rid = the MSG_STATS_REQ's.  struct m_stats:
	 * u32 n (at most M_MAX_STATS), n x (str name, u64 value). */
	MSG_STATS = 109,

	/* A client WebSocket sent a response.create; the worker holds it
	 * until the supervisor starts the turn (MSG_REQ_START with this wsid)
	 * or refuses it (MSG_WS_REPLY).  rid = wsid.  struct m_ws_turn:
	 * str model, str previous_response_id ("" none), u8 generate,
	 * u32 frame_len. */
	MSG_WS_TURN = 110,

	/* A client WebSocket ended (closed, failed, or its upgrade was
	 * refused).  rid = wsid.  struct m_ws_gone: u32 code (the close code,
	 * 0 if none), str reason. */
	MSG_WS_GONE = 111,
};

/* MSG_REQ_START flags */
#define REQ_F_POOLED	0x01	/* pooling allowed: pool enabled and a conversation */
#define REQ_F_GRANT	0x02	/* a per-account cap slot is reserved: may open a new pooled connection */
#define REQ_F_CONTINUE	0x04	/* previous_response_id: only owner_conn may serve it */
/* A retry after a retryable failure: do not reuse the key's existing pooled
 * connection; close it if idle and open a new pooled connection (DEC_NEW)
 * when REQ_F_GRANT allows, else one-shot.  REQ_F_CONTINUE wins over it
 * (only the owner can serve a continuation). */
#define REQ_F_FRESH	0x08

/* MSG_REQ_DECISION decisions */
enum dispatch_decision {
	DEC_REUSE = 1,		/* an idle pooled connection of this key */
	DEC_NEW,		/* a new pooled connection for this key */
	DEC_BYPASS,		/* a one-shot connection; reason says why */
	DEC_RETRY_STALE,	/* a reused connection failed before the first frame: one retry, one-shot */
};

enum bypass_reason {
	BYP_NONE = 0,
	BYP_BUSY,		/* the key's connection serves another turn */
	BYP_CAP,		/* account at ws_pool_max_per_account, all busy */
	BYP_DEAD,		/* pooled connection unusable */
	BYP_DISABLED,		/* pool switched off */
	BYP_NO_KEY,		/* no conversation */
	BYP_FACTORY_ERROR,	/* opening the pooled connection failed */
	BYP_EXPIRED,		/* pooled connection reached ws_pool_max_age */
};

/* MSG_REQ_DONE outcomes */
enum done_outcome {
	DONE_COMPLETED = 1,	/* response.completed was relayed */
	DONE_FAILED,		/* a terminal error event (response.failed, error, response.incomplete) was relayed */
	DONE_STREAM_ERROR,	/* upstream broke mid-stream; the supervisor ends the client stream with an error event */
};

/* MSG_REQ_ERROR flags */
#define ERR_F_RETRYABLE	0x01	/* another attempt (other worker/account) may succeed */
#define ERR_F_ACCOUNT	0x02	/* the account is at fault (401/403/429): account state must change */
#define ERR_F_CLIENT_CLOSED 0x04	/* the worker closed the client WebSocket itself
				 * (it must reconnect): no error event to send */

const char *msg_type_name(uint32_t type);
const char *decision_name(int decision);
const char *bypass_reason_name(int reason);
const char *done_outcome_name(int outcome);

#endif
