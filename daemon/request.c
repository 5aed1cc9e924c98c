/*
 * One client turn: from POST /v1/responses to the worker and back.
 *
 * The supervisor commits the client's response headers only when the
 * worker reports that the upstream response started (its first output
 * frame), so anything that goes wrong before that is still a real HTTP
 * error (429, 401, 503...) and can still be retried.  After that the
 * frames are relayed as they come: Server-Sent Events for stream:true,
 * one JSON object assembled at the end for stream:false.
 */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "hash.h"
#include "jsonutil.h"
#include "log.h"
#include "msgtypes.h"
#include "store.h"
#include "supervisor.h"

#define MAX_ATTEMPTS	3	/* REQ_STARTs per turn when workers keep dying */
#define SSE_KEEPALIVE	(15 * USEC_PER_SEC)	/* comment line after this much silence */
#define SLOW_CLIENT_GRACE (10 * USEC_PER_SEC)	/* backlog above max_client_buffer this long: drop */
#define SLOW_CLIENT_HARD 4			/* backlog above 4 x max_client_buffer: drop at once */

static struct event *ev_janitor;

/* Client headers that travel to the upstream handshake unchanged. */
static const char *forwarded_headers[] = {
	"x-codex-turn-metadata",
	"x-codex-turn-state",
	"x-codex-beta-features",
	"x-openai-subagent",
	"x-codex-parent-thread-id",
	"x-responsesapi-include-timing-metrics",
	NULL
};

static char *
rq_prefix(const struct client_req *rq, char *buf, size_t len)
{
	snprintf(buf, len, "rid=%08" PRIx64 " acct=%.4s conv=%s", rq->rid,
	    rq->acct ? rq->acct->entry : "-", rq->conv_tag[0] ? rq->conv_tag : "-");
	return buf;
}

static void
on_reply_flushed(struct evhttp_request *http, void *arg)
{
	if (sv->replies_flushing > 0)
		sv->replies_flushing--;
	if (sv->shutting_down)
		shutdown_maybe_done();
}

/* Count a final reply until libevent has written it, so a stopping
 * daemon does not cut off the end of a response. */
static void
track_final_reply(struct evhttp_request *http)
{
	if (http == NULL)
		return;
	evhttp_request_set_on_complete_cb(http, on_reply_flushed, NULL);
	sv->replies_flushing++;
}

static void
on_client_close(struct evhttp_connection *evcon, void *arg)
{
	struct client_req *rq = arg;

	/*
	 * A client that leaves before we finished replying: libevent detaches
	 * the unfinished request from its connection and leaves it to us to
	 * free.  A request still attached is freed with the connection.
	 */
	if (rq->http != NULL && evhttp_request_get_connection(rq->http) == NULL)
		evhttp_request_free(rq->http);
	rq->client_gone = true;
	rq->http = NULL;
	rq->evcon = NULL;
	sv->stats.client_aborts++;
	if (rq->state == RQ_QUEUED || rq->state == RQ_WAIT_TOKEN) {
		request_free(rq);
		return;
	}
	if (!rq->cancel_sent && rq->state != RQ_FINISHED) {
		/* The worker evicts the connection: tail frames of this turn
		 * must never reach the next one. */
		rq->cancel_sent = true;
		workers_send(rq->slot, MSG_REQ_CANCEL, rq->rid, NULL);
	}
}

void
request_free(struct client_req *rq)
{
	if (rq->evcon != NULL)
		evhttp_connection_set_closecb(rq->evcon, NULL, NULL);
	if (rq->reserved && rq->acct)
		pm_unreserve(&sv->pool, rq->acct->entry);
	if (rq->acct != NULL)
		account_release(rq->acct);
	TAILQ_REMOVE(&sv->slots[rq->slot].reqs, rq, entry);
	idmap_del(&sv->reqs, rq->rid);
	sv->inflight--;
	if (sv->slots[rq->slot].draining)
		workers_check_drained(rq->slot);
	free(rq->frame);
	free(rq->session_id);
	free(rq->fwd_headers);
	free(rq->conv);
	json_object_put(rq->body);
	json_object_put(rq->output);
	json_object_put(rq->final);
	free(rq);
}

/*
 * The upstream frame for the turn's account: {"type":"response.create",
 * ...the client's body}, with the account's own ids: prompt_cache_key is
 * the (account, conversation) hash and client_metadata carries the
 * account's installation id, so two accounts never share an id.
 */
static char *
build_frame(struct json_object *body, const char *upstream_conv,
    const char *installation_id, size_t *len)
{
	struct json_object *frame = json_object_new_object(), *meta;
	const char *text;
	char *out;

	json_object_object_add(frame, "type", json_object_new_string("response.create"));
	json_object_object_foreach(body, key, val) {
		if (strcmp(key, "type") == 0 || strcmp(key, "stream") == 0 ||
		    strcmp(key, "background") == 0 || strcmp(key, "prompt_cache_key") == 0)
			continue;
		if (strcmp(key, "input") == 0 && json_object_is_type(val, json_type_string)) {
			/* The backend wants items; a bare string is one user message. */
			struct json_object *msg = json_object_new_object();
			struct json_object *content = json_object_new_array();
			struct json_object *part = json_object_new_object();
			struct json_object *items = json_object_new_array();
			json_object_object_add(part, "type", json_object_new_string("input_text"));
			json_object_object_add(part, "text", json_object_get(val));
			json_object_array_add(content, part);
			json_object_object_add(msg, "type", json_object_new_string("message"));
			json_object_object_add(msg, "role", json_object_new_string("user"));
			json_object_object_add(msg, "content", content);
			json_object_array_add(items, msg);
			json_object_object_add(frame, "input", items);
			continue;
		}
		if (strcmp(key, "client_metadata") == 0) {
			struct json_object *copy = NULL;
			if (json_object_is_type(val, json_type_object) &&
			    json_object_deep_copy(val, &copy, NULL) == 0)
				json_object_object_add(frame, key, copy);
			continue;
		}
		json_object_object_add(frame, key, json_object_get(val));
	}
	if (!json_object_object_get_ex(frame, "store", NULL))
		json_object_object_add(frame, "store", json_object_new_boolean(0));
	json_object_object_add(frame, "stream", json_object_new_boolean(1));
	if (upstream_conv != NULL)
		json_object_object_add(frame, "prompt_cache_key", json_object_new_string(upstream_conv));
	if (installation_id != NULL && *installation_id) {
		if (!json_object_object_get_ex(frame, "client_metadata", &meta)) {
			meta = json_object_new_object();
			json_object_object_add(frame, "client_metadata", meta);
		}
		json_object_object_add(meta, "x-codex-installation-id",
		    json_object_new_string(installation_id));
	}
	text = json_object_to_json_string_length(frame,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
	out = xmalloc(*len + 1);
	memcpy(out, text, *len + 1);
	json_object_put(frame);
	return out;
}

static void
collect_forwarded_headers(struct client_req *rq, struct evhttp_request *http)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	size_t i, nl, vl;
	const char *v;

	for (i = 0; forwarded_headers[i]; i++) {
		if ((v = evhttp_find_header(h, forwarded_headers[i])) == NULL)
			continue;
		nl = strlen(forwarded_headers[i]) + 1;
		vl = strlen(v) + 1;
		if (nl + vl > 16384)
			continue;
		rq->fwd_headers = xrealloc(rq->fwd_headers, rq->fwd_len + nl + vl);
		memcpy(rq->fwd_headers + rq->fwd_len, forwarded_headers[i], nl);
		memcpy(rq->fwd_headers + rq->fwd_len + nl, v, vl);
		rq->fwd_len += nl + vl;
		rq->nfwd++;
	}
}

/* Remove a forwarded header (name\0value\0 pairs) by name. */
static void
drop_forwarded_header(struct client_req *rq, const char *name)
{
	size_t off = 0, nl, vl;
	int i;

	for (i = 0; i < rq->nfwd; i++) {
		nl = strlen(rq->fwd_headers + off) + 1;
		vl = strlen(rq->fwd_headers + off + nl) + 1;
		if (strcmp(rq->fwd_headers + off, name) == 0) {
			memmove(rq->fwd_headers + off, rq->fwd_headers + off + nl + vl,
			    rq->fwd_len - off - nl - vl);
			rq->fwd_len -= nl + vl;
			rq->nfwd--;
			return;
		}
		off += nl + vl;
	}
}

void
request_dispatch(struct client_req *rq)
{
	struct worker_slot *w = &sv->slots[rq->slot];
	struct msgbuf b;
	const char *p;
	int i, rc;

	if (w->chan == NULL) {
		rq->state = RQ_QUEUED;	/* goes out when the slot's worker is back */
		return;
	}
	msgbuf_init(&b);
	msg_add_u64(&b, rq->key_hash);
	msg_add_str(&b, rq->acct->entry);
	msg_add_str(&b, rq->acct->account_id);
	msg_add_str(&b, rq->acct->access_token);
	msg_add_str(&b, rq->session_id);
	msg_add_u32(&b, rq->flags | (rq->reserved ? REQ_F_GRANT : 0));
	msg_add_u32(&b, (uint32_t)rq->attempts + 1);	/* attempt, 1-based */
	msg_add_u64(&b, rq->owner_conn);
	msg_add_u32(&b, (uint32_t)rq->nfwd);
	for (p = rq->fwd_headers, i = 0; i < rq->nfwd; i++) {
		msg_add_str(&b, p);
		p += strlen(p) + 1;
		msg_add_str(&b, p);
		p += strlen(p) + 1;
	}
	msg_add_blob(&b, rq->frame, rq->framelen);
	rq->state = RQ_DISPATCHED;
	rq->attempts++;
	w->requests++;
	rc = workers_send(rq->slot, MSG_REQ_START, rq->rid, &b);
	explicit_bzero(b.buf, b.len);	/* it holds the access token */
	msgbuf_free(&b);
	if (rc == MSGCHAN_FULL) {
		/* the worker is not keeping up: say so rather than hang */
		sv->stats.requests_failed++;
		track_final_reply(rq->http);
		send_error(rq->http, 503, "server_error", "worker_overloaded",
		    "worker %d has too much queued; try again", rq->slot);
		rq->state = RQ_FINISHED;
		request_free(rq);
	}
}

/*
 * The worker of a pool key.  A draining worker gets no new conversations:
 * a key without a connection there is hashed again over the others.
 */
static int
slot_for_key(uint64_t key_hash)
{
	struct pm_conn *c;
	uint64_t k = key_hash;
	int slot = jump_hash(key_hash, sv->nslots), tries;

	if (!sv->slots[slot].draining)
		return slot;
	c = idmap_get(&sv->pool.by_key, key_hash);
	if (c != NULL && c->slot == slot)
		return slot;
	for (tries = 0; tries < 64 && sv->slots[slot].draining; tries++) {
		k = k * 0x9e3779b97f4a7c15ULL + 1;
		slot = jump_hash(k, sv->nslots);
	}
	return slot;
}

static int
slot_round_robin(void)
{
	int i, slot = 0;

	for (i = 0; i < sv->nslots; i++) {
		slot = (int)(sv->rr++ % (unsigned)sv->nslots);
		if (!sv->slots[slot].draining)
			break;
	}
	return slot;
}

/*
 * Bind a turn to its account: the pool key entry:conversation, its worker
 * slot, a cap reservation, and the upstream frame with the account's ids.
 * Called again when the turn moves to another account.
 */
static void
route(struct client_req *rq, struct pm_conn *owner)
{
	struct pm_conn *evict = NULL;
	char keybuf[600], upconv[40], pfx[96];
	int slot;

	if (rq->reserved) {
		pm_unreserve(&sv->pool, rq->acct->entry);
		rq->reserved = false;
	}
	if (owner != NULL) {
		slot = owner->slot;
		rq->key_hash = owner->key_hash;
		rq->flags = REQ_F_POOLED | REQ_F_CONTINUE;
		rq->owner_conn = owner->id;
	} else if (rq->conv != NULL) {
		snprintf(keybuf, sizeof(keybuf), "%s:%s", rq->acct->entry, rq->conv);
		rq->key_hash = hash64_str(keybuf);
		if (rq->key_hash == 0)
			rq->key_hash = 1;
		slot = slot_for_key(rq->key_hash);
		rq->flags = REQ_F_POOLED;
		if (sv->pool_enabled &&
		    pm_reserve(&sv->pool, rq->acct->entry, rq->key_hash, now_mono_usec(), &evict) == 1)
			rq->reserved = true;
	} else {
		rq->key_hash = 0;
		rq->flags = 0;
		slot = slot_round_robin();
	}
	if (rq->key_hash != 0)
		snprintf(rq->conv_tag, sizeof(rq->conv_tag), "%04x", (unsigned)(rq->key_hash >> 48));
	if (slot != rq->slot) {
		TAILQ_REMOVE(&sv->slots[rq->slot].reqs, rq, entry);
		rq->slot = slot;
		TAILQ_INSERT_TAIL(&sv->slots[rq->slot].reqs, rq, entry);
	}
	if (evict != NULL) {
		struct msgbuf b;
		msgbuf_init(&b);
		msg_add_u64(&b, evict->id);
		msg_add_str(&b, "making room under ws_pool_max_per_account");
		workers_send(evict->slot, MSG_CONN_CLOSE, 0, &b);
		msgbuf_free(&b);
		olog(LOG_LVL_INFO, rq_prefix(rq, pfx, sizeof(pfx)),
		    "account at ws_pool_max_per_account=%d: closing its least recently used "
		    "idle connection %016" PRIx64, sv->pool.cap, evict->id);
	}
	free(rq->session_id);
	free(rq->frame);
	if (rq->conv != NULL) {
		upstream_conversation_id(rq->acct->entry, rq->conv, upconv);
		rq->session_id = xstrdup(upconv);
	} else {
		rq->session_id = xstrdup("");
	}
	rq->frame = build_frame(rq->body, rq->conv ? upconv : NULL, rq->acct->installation_id,
	    &rq->framelen);
}

/* Give the turn to another account, before anything reached the client. */
static bool
move_to_another_account(struct client_req *rq, const char *why)
{
	struct account *next;
	char pfx[96];
	bool moved;

	if ((rq->flags & REQ_F_CONTINUE) || rq->state == RQ_STREAMING || rq->body == NULL)
		return false;	/* continuation state never crosses accounts */
	if (rq->ntried < (int)(sizeof(rq->tried) / sizeof(rq->tried[0])))
		rq->tried[rq->ntried++] = rq->acct;
	next = accounts_pick(rq->conv, rq->tried, rq->ntried, &moved);
	if (next == NULL)
		return false;
	olog(LOG_LVL_INFO, rq_prefix(rq, pfx, sizeof(pfx)), "%s: moving the turn to account %s",
	    why, next->entry);
	next->inflight++;
	account_release(rq->acct);
	rq->acct = next;
	rq->moved = true;
	rq->conn_id = 0;
	/* turn state is bound to the account that issued it */
	drop_forwarded_header(rq, "x-codex-turn-state");
	route(rq, NULL);
	request_dispatch(rq);
	return true;
}

void
request_handle_responses(struct evhttp_request *http)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(http);
	size_t len = evbuffer_get_length(in);
	struct json_object *body = NULL, *input;
	const char *prev, *source;
	struct client_req *rq;
	struct pm_conn *owner = NULL;
	struct account *acct = NULL;
	char err[256], *conv = NULL;
	bool moved = false;

	if (len == 0) {
		send_error(http, 400, "invalid_request_error", "empty_body",
		    "the request body is empty; send a JSON Responses API request");
		return;
	}
	body = json_parse_buf((const char *)evbuffer_pullup(in, -1), len, err, sizeof(err));
	if (body == NULL) {
		send_error(http, 400, "invalid_request_error", "invalid_json",
		    "the request body is not valid JSON: %s", err);
		return;
	}
	if (!json_object_is_type(body, json_type_object)) {
		send_error(http, 400, "invalid_request_error", "invalid_body",
		    "the request body must be a JSON object");
		goto out;
	}
	if (json_get_str(body, "model") == NULL) {
		send_error(http, 400, "invalid_request_error", "missing_model",
		    "'model' is required and must be a string");
		goto out;
	}
	if (!json_object_object_get_ex(body, "input", &input) ||
	    !(json_object_is_type(input, json_type_array) ||
	      json_object_is_type(input, json_type_string))) {
		send_error(http, 400, "invalid_request_error", "invalid_input",
		    "'input' is required and must be a string or an array of items");
		goto out;
	}
	if (sv->inflight >= sv->cfg.max_clients) {
		send_error(http, 503, "server_error", "too_many_requests",
		    "codexpool is serving %d turns already (max_clients)", sv->inflight);
		goto out;
	}

	prev = json_get_str(body, "previous_response_id");
	if (prev != NULL && *prev != '\0') {
		/* A continuation may only run on the connection that completed
		 * that response, on its account: anything else would lose (or
		 * leak) the server-side state. */
		owner = sv->pool_enabled ? pm_owner(&sv->pool, prev) : NULL;
		if (owner == NULL) {
			send_error(http, 400, "invalid_request_error", "previous_response_not_found",
			    "previous_response_id '%.100s' cannot be continued: %s; "
			    "resend the full input without previous_response_id", prev,
			    !sv->pool_enabled ? "the connection pool is disabled" :
			    "the upstream connection that produced it is gone or has a newer response");
			goto out;
		}
		acct = accounts_by_entry(owner->acct->entry);
		if (acct == NULL || !account_usable(acct)) {
			send_error(http, 409, "invalid_request_error", "previous_response_unavailable",
			    "previous_response_id '%.100s' belongs to account %s, which is %s; "
			    "resend the full input without previous_response_id", prev,
			    owner->acct->entry, acct ? account_status_name(acct) : "gone");
			goto out;
		}
	}
	source = owner ? "previous_response_id" : conversation_of(http, body, &conv);
	if (acct == NULL && (acct = accounts_pick(conv, NULL, 0, &moved)) == NULL) {
		int64_t unlock;
		accounts_why_none(err, sizeof(err), &unlock);
		if (unlock > 0) {
			char ra[32];
			snprintf(ra, sizeof(ra), "%lld", (long long)(unlock - now_wall_usec() / USEC_PER_SEC));
			evhttp_add_header(evhttp_request_get_output_headers(http), "Retry-After", ra);
		}
		send_error(http, 503, "server_error", "no_account", "%s", err);
		free(conv);
		goto out;
	}

	rq = xcalloc(1, sizeof(*rq));
	rq->rid = sv->next_rid++;
	rq->http = http;
	rq->evcon = evhttp_request_get_connection(http);
	rq->stream = json_get_bool(body, "stream", false);
	rq->acct = acct;
	rq->moved = moved;
	rq->started_at = now_mono_usec();
	rq->conv = conv;
	rq->conv_source = source ? source : "none";
	rq->body = body;
	body = NULL;
	acct->inflight++;
	sv->inflight++;
	sv->stats.requests++;
	if (conv != NULL)
		rq->conv_hash = hash64_str(conv);
	else if (owner != NULL)
		rq->conv_hash = owner->key_hash;

	collect_forwarded_headers(rq, http);
	idmap_put(&sv->reqs, rq->rid, rq);
	rq->slot = 0;
	TAILQ_INSERT_TAIL(&sv->slots[0].reqs, rq, entry);
	route(rq, owner);
	evhttp_connection_set_closecb(rq->evcon, on_client_close, rq);
	request_dispatch(rq);
out:
	json_object_put(body);
}

/* ---- relaying ------------------------------------------------------ */

/* The "type" of a frame; the backend always writes it first, so a scan
 * avoids parsing every delta. */
static size_t
frame_type(const char *frame, size_t len, char *out, size_t outlen)
{
	static const char lead[] = "{\"type\":\"";
	const char *end;
	size_t n;

	out[0] = '\0';
	if (len > sizeof(lead) - 1 && memcmp(frame, lead, sizeof(lead) - 1) == 0) {
		frame += sizeof(lead) - 1;
		len -= sizeof(lead) - 1;
		end = memchr(frame, '"', len < 128 ? len : 128);
		if (end != NULL) {
			n = (size_t)(end - frame);
			if (n < outlen) {
				memcpy(out, frame, n);
				out[n] = '\0';
				return n;
			}
		}
	}
	{
		char err[64];
		struct json_object *o = json_parse_buf(frame, len, err, sizeof(err));
		const char *t = json_get_str(o, "type");
		if (t != NULL)
			strlcpy_safe(out, t, outlen);
		json_object_put(o);
	}
	return strlen(out);
}

/*
 * A client is too slow when it leaves more than max_client_buffer unread
 * for SLOW_CLIENT_GRACE, or more than SLOW_CLIENT_HARD times that at any
 * moment.  The grace lets a burst of large frames through to a client that
 * reads; the hard limit bounds memory for one that does not.
 */
static bool
client_too_slow(struct client_req *rq)
{
	struct bufferevent *bev;
	size_t backlog;
	usec_t now;

	if (rq->evcon == NULL ||
	    (bev = evhttp_connection_get_bufferevent(rq->evcon)) == NULL)
		return false;
	backlog = evbuffer_get_length(bufferevent_get_output(bev));
	if (backlog <= sv->cfg.max_client_buffer) {
		rq->backlog_since = 0;
		return false;
	}
	if (backlog > SLOW_CLIENT_HARD * sv->cfg.max_client_buffer)
		return true;
	now = now_mono_usec();
	if (rq->backlog_since == 0)
		rq->backlog_since = now;
	return now - rq->backlog_since > SLOW_CLIENT_GRACE;
}

static void
drop_slow_client(struct client_req *rq)
{
	char pfx[96];

	olog(LOG_LVL_WARN, rq_prefix(rq, pfx, sizeof(pfx)),
	    "client reads too slowly (more than max_client_buffer queued): dropping it");
	if (rq->evcon != NULL) {
		struct evhttp_connection *evcon = rq->evcon;
		evhttp_connection_set_closecb(evcon, NULL, NULL);
		on_client_close(evcon, rq);
		evhttp_connection_free(evcon);
	}
}

static void
sse_write(struct client_req *rq, const char *type, const char *data, size_t len)
{
	struct evbuffer *buf;

	if (rq->http == NULL)
		return;
	/* Judge the backlog before adding to it: one large frame is fine,
	 * a client that leaves max_client_buffer unread is not. */
	if (client_too_slow(rq)) {
		drop_slow_client(rq);
		return;
	}
	buf = evbuffer_new();
	if (type[0])
		evbuffer_add_printf(buf, "event: %s\n", type);
	evbuffer_add(buf, "data: ", 6);
	evbuffer_add(buf, data, len);
	evbuffer_add(buf, "\n\n", 2);
	evhttp_send_reply_chunk(rq->http, buf);
	evbuffer_free(buf);
	rq->last_write = now_mono_usec();
}

static void
start_stream(struct client_req *rq)
{
	struct evkeyvalq *h;
	char rid[32];

	if (rq->http == NULL || !rq->stream)
		return;
	h = evhttp_request_get_output_headers(rq->http);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	snprintf(rid, sizeof(rid), "%08" PRIx64, rq->rid);
	evhttp_add_header(h, "x-codexpool-request-id", rid);
	evhttp_send_reply_start(rq->http, 200, "OK");
	rq->last_write = now_mono_usec();
}

/*
 * Streams that have been silent for a while get an SSE comment: proxies
 * and clients keep the connection, and a client that left is noticed
 * (the write fails) even while the upstream is thinking.
 */
static void
on_janitor(evutil_socket_t fd, short what, void *arg)
{
	struct client_req *rq, *next;
	usec_t now = now_mono_usec();
	int i;

	for (i = 0; i < sv->nslots; i++) {
		for (rq = TAILQ_FIRST(&sv->slots[i].reqs); rq != NULL; rq = next) {
			next = TAILQ_NEXT(rq, entry);
			if (rq->state != RQ_STREAMING || !rq->stream || rq->http == NULL)
				continue;
			if (client_too_slow(rq)) {
				drop_slow_client(rq);
				continue;
			}
			if (now - rq->last_write < SSE_KEEPALIVE)
				continue;
			struct evbuffer *buf = evbuffer_new();
			evbuffer_add(buf, ": keepalive\n\n", 13);
			evhttp_send_reply_chunk(rq->http, buf);
			evbuffer_free(buf);
			rq->last_write = now;
		}
	}
}

void
request_janitor_start(void)
{
	struct timeval tv = { 5, 0 };

	ev_janitor = event_new(sv->base, -1, EV_PERSIST, on_janitor, NULL);
	event_add(ev_janitor, &tv);
}

void
request_janitor_stop(void)
{
	if (ev_janitor != NULL)
		event_free(ev_janitor);
	ev_janitor = NULL;
}

static void
aggregate(struct client_req *rq, const char *type, const char *frame, size_t len)
{
	struct json_object *o, *item, *resp;
	char err[128];

	if (strcmp(type, "response.output_item.done") != 0 &&
	    strcmp(type, "response.completed") != 0 &&
	    strcmp(type, "response.failed") != 0 &&
	    strcmp(type, "response.incomplete") != 0 &&
	    strcmp(type, "error") != 0)
		return;
	rq->agg_bytes += len;
	if (rq->agg_bytes > sv->cfg.max_client_buffer)
		return;		/* reported as too large when the turn ends */
	if ((o = json_parse_buf(frame, len, err, sizeof(err))) == NULL)
		return;
	if (strcmp(type, "response.output_item.done") == 0) {
		if ((item = json_get_obj(o, "item")) != NULL) {
			if (rq->output == NULL)
				rq->output = json_object_new_array();
			json_object_array_add(rq->output, json_object_get(item));
		}
	} else {
		json_object_put(rq->final);
		resp = json_get_obj(o, "response");
		rq->final = resp ? json_object_get(resp) : json_object_get(o);
	}
	json_object_put(o);
}

static void
finish_nonstream(struct client_req *rq, int outcome, const char *message)
{
	struct evbuffer *out;
	struct json_object *out_items;
	const char *text;
	size_t len;

	if (rq->http == NULL)
		return;
	if (rq->agg_bytes > sv->cfg.max_client_buffer) {
		send_error(rq->http, 502, "server_error", "response_too_large",
		    "the response is larger than max_client_buffer; use stream:true");
		return;
	}
	if (outcome == DONE_STREAM_ERROR || rq->final == NULL) {
		send_error(rq->http, 502, "server_error", "stream_disconnected",
		    "upstream stream ended early: %s", message && *message ? message : "no response.completed");
		return;
	}
	if (outcome == DONE_FAILED) {
		struct json_object *e = json_get_obj(rq->final, "error");
		const char *m = e ? json_get_str(e, "message") : NULL;
		const char *code = e ? json_get_str(e, "code") : NULL;
		send_error(rq->http, 502, "upstream_error", code ? code : "response_failed",
		    "%s", m ? m : "the upstream response failed");
		return;
	}
	/* Output items come from output_item.done; the completed event's
	 * response may carry them too, or an empty list. */
	if (rq->output != NULL &&
	    (!json_object_object_get_ex(rq->final, "output", &out_items) ||
	     json_object_array_length(out_items) == 0))
		json_object_object_add(rq->final, "output", json_object_get(rq->output));
	text = json_object_to_json_string_length(rq->final,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	out = evbuffer_new();
	evbuffer_add(out, text, len);
	evhttp_add_header(evhttp_request_get_output_headers(rq->http),
	    "Content-Type", "application/json");
	evhttp_send_reply(rq->http, 200, "OK", out);
	evbuffer_free(out);
}

static void
end_stream_with_error(struct client_req *rq, const char *code, const char *message)
{
	struct json_object *ev, *resp, *err;
	const char *text;
	size_t len;

	if (rq->http == NULL)
		return;
	ev = json_object_new_object();
	resp = json_object_new_object();
	err = json_object_new_object();
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string(message));
	json_object_object_add(resp, "status", json_object_new_string("failed"));
	json_object_object_add(resp, "error", err);
	json_object_object_add(ev, "type", json_object_new_string("response.failed"));
	json_object_object_add(ev, "response", resp);
	text = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &len);
	sse_write(rq, "response.failed", text, len);
	json_object_put(ev);
}

/* An upstream error body as the client sees it: {"error": {...}}. */
static void
reply_upstream_error(struct client_req *rq, int status, const char *code,
    const char *body, size_t len)
{
	struct json_object *o, *e, *wrapped;
	struct evbuffer *out;
	const char *text;
	char err[128];
	int64_t resets;

	if (rq->http == NULL)
		return;
	o = json_parse_buf(body, len, err, sizeof(err));
	e = json_get_obj(o, "error");
	if (e == NULL && json_get_obj(o, "response") != NULL)
		e = json_get_obj(json_get_obj(o, "response"), "error");
	if (e == NULL) {
		send_error(rq->http, status, status >= 500 ? "server_error" : "invalid_request_error",
		    code && *code ? code : NULL, "upstream error (HTTP %d)", status);
		json_object_put(o);
		return;
	}
	wrapped = json_object_new_object();
	json_object_object_add(wrapped, "error", json_object_get(e));
	text = json_object_to_json_string_length(wrapped, JSON_C_TO_STRING_PLAIN, &len);
	out = evbuffer_new();
	evbuffer_add(out, text, len);
	evhttp_add_header(evhttp_request_get_output_headers(rq->http),
	    "Content-Type", "application/json");
	if (status == 429 && (resets = json_get_int(e, "resets_at", 0)) > 0) {
		char ra[32];
		int64_t wait = resets - now_wall_usec() / USEC_PER_SEC;
		snprintf(ra, sizeof(ra), "%lld", (long long)(wait > 0 ? wait : 0));
		evhttp_add_header(evhttp_request_get_output_headers(rq->http), "Retry-After", ra);
	}
	evhttp_send_reply(rq->http, status, NULL, out);
	evbuffer_free(out);
	json_object_put(wrapped);
	json_object_put(o);
}

static void
log_turn_end(struct client_req *rq, int status, uint64_t in, uint64_t cached,
    uint64_t outt, const char *what)
{
	char pfx[96];

	olog(LOG_LVL_INFO, rq_prefix(rq, pfx, sizeof(pfx)),
	    "turn %s status=%d stream=%d conv_from=%s in=%" PRIu64 " cached=%" PRIu64
	    " out=%" PRIu64 " %lldms", what, status, rq->stream, rq->conv_source,
	    in, cached, outt,
	    (long long)((now_mono_usec() - rq->started_at) / USEC_PER_MSEC));
}

static void
on_decision(struct client_req *rq, struct msgreader *r)
{
	int decision = msg_get_u8(r);
	int reason = msg_get_u8(r);
	uint64_t conn = msg_get_u64(r);

	if (msg_end(r) == -1)
		return;
	pm_decision(&sv->pool, rq->acct->entry, rq->reserved, decision, conn,
	    rq->key_hash, rq->slot, now_mono_usec());
	rq->reserved = false;
	rq->decision = decision;
	if (conn != 0 && (decision == DEC_NEW || decision == DEC_REUSE))
		rq->conn_id = conn;
	else if (decision == DEC_RETRY_STALE || decision == DEC_BYPASS)
		rq->conn_id = 0;
	if (decision > 0 && decision < 8) {
		sv->stats.decisions[decision]++;
		sv->slots[rq->slot].decisions[decision]++;
	}
	if (decision == DEC_BYPASS && reason >= 0 && reason < 16)
		sv->stats.bypass[reason]++;
	rq->reason = decision == DEC_BYPASS ? reason : 0;
}

static void
on_done(struct client_req *rq, struct msgreader *r)
{
	int outcome = msg_get_u8(r);
	const char *message = msg_get_str(r);
	const char *resp_id = msg_get_str(r);
	uint64_t in = msg_get_u64(r), cached = msg_get_u64(r), outt = msg_get_u64(r);
	uint64_t conn = msg_get_u64(r);

	if (msg_end(r) == -1)
		outcome = DONE_STREAM_ERROR;
	if (rq->conn_id != 0)
		pm_turn_end(&sv->pool, rq->conn_id, conn != 0 ? resp_id : NULL,
		    in, cached, now_mono_usec());
	sv->stats.input_tokens += in;
	sv->stats.cached_tokens += cached;
	sv->stats.output_tokens += outt;
	usage_window_add(&sv->recent, now_mono_usec(), in, cached);
	account_usage(rq->acct, in, cached, outt);
	if (outcome == DONE_COMPLETED)
		convlog_turn(&sv->convs, rq->conv_hash, rq->acct->entry, rq->slot,
		    rq->decision, rq->reason, in, cached, now_mono_usec());
	if (outcome != DONE_COMPLETED)
		sv->stats.requests_failed++;
	if (rq->stream) {
		if (outcome == DONE_STREAM_ERROR && !rq->client_gone)
			end_stream_with_error(rq, "stream_disconnected",
			    message && *message ? message : "upstream stream ended early");
		track_final_reply(rq->http);
		if (rq->http != NULL)
			evhttp_send_reply_end(rq->http);
	} else {
		track_final_reply(rq->http);
		finish_nonstream(rq, outcome, message);
	}
	log_turn_end(rq, 200, in, cached, outt, done_outcome_name(outcome));
	rq->state = RQ_FINISHED;
	request_free(rq);
}

/* When an upstream error body says the account's limit resets (unix s);
 * its x-codex-* headers, if any, update the account's quota view. */
static int64_t
error_resets_at(struct account *a, const char *body, size_t len)
{
	struct json_object *o, *e;
	int64_t at = 0, in;
	char err[64];

	if (body == NULL || (o = json_parse_buf(body, len, err, sizeof(err))) == NULL)
		return 0;
	accounts_on_rate_limit_headers(a, json_get_obj(o, "headers"));
	e = json_get_obj(o, "error");
	if (e != NULL) {
		at = json_get_int(e, "resets_at", 0);
		if (at == 0 && (in = json_get_int(e, "resets_in_seconds", 0)) > 0)
			at = now_wall_usec() / USEC_PER_SEC + in;
	}
	json_object_put(o);
	return at;
}

/*
 * An error that says the account is at fault changes the account, and the
 * turn, which has not reached the client, goes to another account (429,
 * 402, 403) or waits for a fresh token (401, once).  True when the turn
 * continues.
 */
static bool
handle_account_error(struct client_req *rq, uint32_t status, const char *code,
    const char *body, size_t len)
{
	struct account *a = rq->acct;
	char why[128];

	snprintf(why, sizeof(why), "upstream %u %s", status, code && *code ? code : "");
	switch (status) {
	case 401:
		if (rq->refreshed || (rq->flags & REQ_F_CONTINUE) || a->refresh_token == NULL)
			return false;
		rq->refreshed = true;
		if (a->status == ST_ACTIVE)
			account_set_status(a, ST_REFRESHING, why);
		if (account_refresh(a, why) == -1)
			return false;
		rq->state = RQ_WAIT_TOKEN;	/* request_account_refreshed() resumes it */
		return true;
	case 402:
	case 429:
		account_lock(a, error_resets_at(a, body, len), why);
		return move_to_another_account(rq, why);
	case 403:
		account_set_status(a, ST_BANNED, why);
		return move_to_another_account(rq, why);
	}
	return false;
}

static void
on_error(struct client_req *rq, struct msgreader *r)
{
	uint32_t status = msg_get_u32(r);
	uint8_t flags = msg_get_u8(r);
	const char *code = msg_get_str(r);
	size_t len = 0;
	const char *body = msg_get_blob(r, &len);

	if (msg_end(r) == -1) {
		status = 502;
		flags = 0;
		code = "internal_error";
		body = NULL;
	}
	if (rq->conn_id != 0)
		pm_turn_end(&sv->pool, rq->conn_id, NULL, 0, 0, now_mono_usec());
	rq->conn_id = 0;
	if (status < 400 || status > 599)
		status = 502;
	if (!rq->client_gone && (flags & ERR_F_ACCOUNT) &&
	    handle_account_error(rq, status, code, body, len))
		return;
	if (status == 400 && code && strcmp(code, "previous_response_not_found") == 0 && rq->body)
		pm_forget_response(&sv->pool, json_get_str(rq->body, "previous_response_id"));
	sv->stats.requests_failed++;
	track_final_reply(rq->http);
	if (body != NULL && len > 0)
		reply_upstream_error(rq, (int)status, code, body, len);
	else
		send_error(rq->http, (int)status, status >= 500 ? "server_error" :
		    "invalid_request_error", code && *code ? code : NULL,
		    "upstream request failed (HTTP %u)", status);
	log_turn_end(rq, (int)status, 0, 0, 0, code && *code ? code : "error");
	rq->state = RQ_FINISHED;
	request_free(rq);
}

/* A token refresh that turns were waiting for has ended. */
void
request_account_refreshed(struct account *a, bool ok)
{
	struct client_req *rq, *next;
	int i;

	for (i = 0; i < sv->nslots; i++) {
		for (rq = TAILQ_FIRST(&sv->slots[i].reqs); rq != NULL; rq = next) {
			next = TAILQ_NEXT(rq, entry);
			if (rq->state != RQ_WAIT_TOKEN || rq->acct != a)
				continue;
			if (ok) {
				route(rq, NULL);
				request_dispatch(rq);
				continue;
			}
			if (move_to_another_account(rq, "token refresh failed"))
				continue;
			sv->stats.requests_failed++;
			track_final_reply(rq->http);
			send_error(rq->http, 401, "invalid_request_error", "token_expired",
			    "the account's access token was rejected and could not be refreshed");
			log_turn_end(rq, 401, 0, 0, 0, "token_expired");
			rq->state = RQ_FINISHED;
			request_free(rq);
		}
	}
}

void
request_on_worker_msg(int slot, const struct msg *m)
{
	struct client_req *rq = idmap_get(&sv->reqs, m->hdr.rid);
	struct msgreader r;
	char type[128];

	if (rq == NULL || rq->slot != slot)
		return;		/* already finished (e.g. dropped client) */
	msgreader_init(&r, m);
	switch (m->hdr.type) {
	case MSG_REQ_DECISION:
		on_decision(rq, &r);
		break;
	case MSG_REQ_STARTED:
		rq->state = RQ_STREAMING;
		free(rq->frame);	/* never replayed after output began */
		rq->frame = NULL;
		json_object_put(rq->body);
		rq->body = NULL;
		start_stream(rq);
		break;
	case MSG_REQ_EVENT: {
		size_t len = 0;
		const char *frame = msg_get_blob(&r, &len);
		if (msg_end(&r) == -1 || rq->client_gone)
			break;
		frame_type(frame, len, type, sizeof(type));
		if (rq->stream)
			sse_write(rq, type, frame, len);
		else
			aggregate(rq, type, frame, len);
		break;
	}
	case MSG_REQ_DONE:
		on_done(rq, &r);
		break;
	case MSG_REQ_ERROR:
		on_error(rq, &r);
		break;
	default:
		log_debug("worker %d: unexpected %s for rid %" PRIx64, slot,
		    msg_type_name(m->hdr.type), m->hdr.rid);
		break;
	}
}

void
request_worker_died(int slot)
{
	struct client_req *rq, *next;
	char pfx[96];

	for (rq = TAILQ_FIRST(&sv->slots[slot].reqs); rq != NULL; rq = next) {
		next = TAILQ_NEXT(rq, entry);
		if (rq->state == RQ_QUEUED || rq->state == RQ_WAIT_TOKEN)
			continue;	/* not on the worker */
		if (rq->client_gone) {
			request_free(rq);
			continue;
		}
		if (rq->state == RQ_DISPATCHED && rq->attempts < MAX_ATTEMPTS) {
			/* Nothing reached the client: run it again on the new worker. */
			rq->state = RQ_QUEUED;
			rq->conn_id = 0;
			sv->stats.retried_on_respawn++;
			olog(LOG_LVL_INFO, rq_prefix(rq, pfx, sizeof(pfx)),
			    "worker %d died before the response started: will retry", slot);
			continue;
		}
		if (rq->state == RQ_STREAMING && rq->stream) {
			end_stream_with_error(rq, "worker_crashed",
			    "the codexpool worker serving this stream terminated");
			if (rq->http != NULL)
				evhttp_send_reply_end(rq->http);
		} else {
			send_error(rq->http, 502, "server_error", "worker_crashed",
			    "the codexpool worker serving this request terminated");
		}
		sv->stats.requests_failed++;
		log_turn_end(rq, 502, 0, 0, 0, "worker_crashed");
		rq->state = RQ_FINISHED;
		request_free(rq);
	}
}

void
request_worker_ready(int slot)
{
	struct client_req *rq, *next;

	for (rq = TAILQ_FIRST(&sv->slots[slot].reqs); rq != NULL; rq = next) {
		next = TAILQ_NEXT(rq, entry);
		if (rq->state == RQ_QUEUED)
			request_dispatch(rq);
	}
}

/* At exit: whatever is left is answered, if it can be, and freed. */
void
request_free_all(void)
{
	struct client_req *rq;
	int i;

	for (i = 0; i < sv->nslots; i++) {
		while ((rq = TAILQ_FIRST(&sv->slots[i].reqs)) != NULL) {
			if (rq->state == RQ_STREAMING && rq->http != NULL && rq->stream)
				evhttp_send_reply_end(rq->http);
			else if (rq->state != RQ_STREAMING)
				send_error(rq->http, 503, "server_error", "shutting_down",
				    "codexpool stopped before this turn finished");
			request_free(rq);
		}
	}
}

/* ---- pool actions -------------------------------------------------- */

int
sv_evict_account(const char *entry)
{
	struct msgbuf b;
	int n = pm_evict_account(&sv->pool, entry);

	msgbuf_init(&b);
	msg_add_str(&b, entry);
	workers_broadcast(MSG_EVICT, &b);
	msgbuf_free(&b);
	return n;
}

void
sv_set_pool_enabled(bool on)
{
	struct msgbuf b;

	sv->pool_enabled = on;
	if (!on)
		pm_close_all(&sv->pool);
	msgbuf_init(&b);
	msg_add_u8(&b, on);
	workers_broadcast(MSG_POOL_ENABLE, &b);
	msgbuf_free(&b);
}
