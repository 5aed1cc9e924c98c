/* Names of the supervisor <-> worker message types and codes, for logs. */
#include "config.h"
#include "msgtypes.h"

const char *
msg_type_name(uint32_t type)
{
	switch (type) {
	case MSG_NONE:			return "none";
	case MSG_CONFIG:		return "config";
	case MSG_UPSTREAM_ADDRS:	return "upstream_addrs";
	case MSG_REQ_START:		return "req_start";
	case MSG_REQ_CANCEL:		return "req_cancel";
	case MSG_EVICT:			return "evict";
	case MSG_CONN_CLOSE:		return "conn_close";
	case MSG_POOL_ENABLE:		return "pool_enable";
	case MSG_STATS_REQ:		return "stats_req";
	case MSG_SHUTDOWN:		return "shutdown";
	case MSG_WS_ADOPT:		return "ws_adopt";
	case MSG_WS_REPLY:		return "ws_reply";
	case MSG_WS_CLOSE:		return "ws_close";
	case MSG_HELLO:			return "hello";
	case MSG_REQ_DECISION:		return "req_decision";
	case MSG_REQ_STARTED:		return "req_started";
	case MSG_REQ_EVENT:		return "req_event";
	case MSG_REQ_DONE:		return "req_done";
	case MSG_REQ_ERROR:		return "req_error";
	case MSG_RATE_LIMITS:		return "rate_limits";
	case MSG_CONN_UP:		return "conn_up";
	case MSG_CONN_DOWN:		return "conn_down";
	case MSG_STATS:			return "stats";
	case MSG_WS_TURN:		return "ws_turn";
	case MSG_WS_GONE:		return "ws_gone";
	}
	return "unknown";
}

const char *
decision_name(int decision)
{
	switch (decision) {
	case DEC_REUSE:		return "reuse";
	case DEC_NEW:		return "new";
	case DEC_BYPASS:	return "bypass";
	case DEC_RETRY_STALE:	return "retry_stale";
	}
	return "unknown";
}

const char *
bypass_reason_name(int reason)
{
	switch (reason) {
	case BYP_NONE:		return "none";
	case BYP_BUSY:		return "busy";
	case BYP_CAP:		return "cap";
	case BYP_DEAD:		return "dead";
	case BYP_DISABLED:	return "disabled";
	case BYP_NO_KEY:	return "no_key";
	case BYP_FACTORY_ERROR:	return "factory_error";
	case BYP_EXPIRED:	return "expired";
	}
	return "unknown";
}

const char *
done_outcome_name(int outcome)
{
	switch (outcome) {
	case DONE_COMPLETED:	return "completed";
	case DONE_FAILED:	return "failed";
	case DONE_STREAM_ERROR:	return "stream_error";
	}
	return "unknown";
}
