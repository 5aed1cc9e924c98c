/*
 * The turn lifecycle (see turn.h for the states and the retry rule).
 *
 * A turn is bound to an account, a worker slot and a pool grant by
 * turn_bind(), and let go of them by turn_unbind(); every attempt (a move to
 * another account, a retry after a failure, a worker that died, a token
 * refresh) is unbind, bind, dispatch, so a grant is never carried over
 * to the wrong account or lost on the way.
 */
#include "config.h"

#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "apikeys.h"
#include "front_ws.h"
#include "hash.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "msgcodec.h"
#include "msgtypes.h"
#include "render.h"
#include "store.h"
#include "supervisor.h"
#include "turn.h"
#include "upframe.h"
#include "xlate.h"

#define SSE_KEEPALIVE	(15 * USEC_PER_SEC)	/* comment line after this much silence */

static struct turn_list lists[TURN_NSTATES];
static int counts[TURN_NSTATES];
static struct event *ev_janitor;

static void	dispatch(struct turn *);
static void	turn_fail(struct turn *);

void
turn_init(void)
{
	int i;

	for (i = 0; i < TURN_NSTATES; i++) {
		TAILQ_INIT(&lists[i]);
		counts[i] = 0;
	}
}

int
turn_count(enum turn_state s)
{
	return counts[s];
}

int
turn_total(void)
{
	int i, n = 0;

	for (i = 0; i < TURN_NSTATES; i++)
		n += counts[i];
	return n;
}

/* Every state change goes through here. */
static void
turn_set_state(struct turn *t, enum turn_state s)
{
	if (t->state == s)
		return;
	TAILQ_REMOVE(&lists[t->state], t, link);
	counts[t->state]--;
	t->state = s;
	TAILQ_INSERT_TAIL(&lists[s], t, link);
	counts[s]++;
}

static char *
pfx(const struct turn *t, char *buf, size_t len)
{
	snprintf(buf, len, "rid=%08" PRIx64 " acct=%.4s conv=%s%s%s", t->rid,
	    t->acct ? t->acct->entry : "-", t->conv_tag[0] ? t->conv_tag : "-",
	    t->key_label[0] ? " key=" : "", t->key_label);
	return buf;
}

/* ---- creation and release ------------------------------------------ */

static void
turn_drop_body(struct turn *t)
{
	if (t->body != NULL) {
		jdoc_free(t->body);
		free(t->body);
		t->body = NULL;
	}
}

struct turn *
turn_new(struct evhttp_request *http, const struct turn_ops *ops, void *front,
    struct jdoc *body, bool stream)
{
	struct turn *t = xcalloc(1, sizeof(*t));
	const struct apikey *k;

	t->rid = sv->next_rid++;
	t->ops = ops;
	t->front = front;
	t->body = body;
	t->stream = stream;
	t->slot = -1;
	t->conv_source = "none";
	t->last.retry_after = -1;
	t->started_at = now_mono_usec();
	t->state = TURN_NEW;
	TAILQ_INSERT_TAIL(&lists[TURN_NEW], t, link);
	counts[TURN_NEW]++;
	idmap_put(&sv->reqs, t->rid, t);
	sv->stats.requests++;
	if (http != NULL) {
		/* a client WebSocket counts in max_clients once, as a session */
		sv->inflight++;
		t->counted = true;
		client_attach(t, http);
	}
	if ((k = apikey_current()) != NULL)
		strlcpy_safe(t->key_label, k->label, sizeof(t->key_label));
	return t;
}

void
turn_set_conversation(struct turn *t, char *conv, const char *source)
{
	free(t->conv);
	t->conv = conv;
	t->conv_source = source ? source : "none";
	t->conv_hash = conv ? hash64_str(conv) : 0;
}

void
turn_forward_header(struct turn *t, const char *name, const char *value)
{
	size_t nl = strlen(name) + 1, vl = strlen(value) + 1;

	if (nl + vl > 16384 || t->nfwd >= 32)
		return;
	t->fwd_headers = xrealloc(t->fwd_headers, t->fwd_len + nl + vl);
	memcpy(t->fwd_headers + t->fwd_len, name, nl);
	memcpy(t->fwd_headers + t->fwd_len + nl, value, vl);
	t->fwd_len += nl + vl;
	t->nfwd++;
}

/* Remove a forwarded header by name. */
static void
drop_forwarded_header(struct turn *t, const char *name)
{
	size_t off = 0, nl, vl;
	int i;

	for (i = 0; i < t->nfwd; i++) {
		nl = strlen(t->fwd_headers + off) + 1;
		vl = strlen(t->fwd_headers + off + nl) + 1;
		if (strcmp(t->fwd_headers + off, name) == 0) {
			memmove(t->fwd_headers + off, t->fwd_headers + off + nl + vl,
			    t->fwd_len - off - nl - vl);
			t->fwd_len -= nl + vl;
			t->nfwd--;
			return;
		}
		off += nl + vl;
	}
}

/* Let go of the grant and the slot (the account stays). */
static void
turn_unbind(struct turn *t)
{
	if (t->acct != NULL)
		pm_release(&sv->pool, t->acct->entry, &t->grant);
	if (t->slot >= 0)
		sv->slots[t->slot].nturns--;
	t->slot = -1;
}

static void
set_last_error(struct turn *t, int status, const char *type, const char *code,
    const char *message, const char *body, size_t len, int64_t retry_after)
{
	free(t->last_code);
	free(t->last_message);
	free(t->last_body);
	t->last_code = xstrdup(code);
	t->last_message = xstrdup(message);
	t->last_body = NULL;
	if (body != NULL && len > 0) {
		t->last_body = xmalloc(len + 1);
		memcpy(t->last_body, body, len);
		t->last_body[len] = '\0';
	}
	t->last.status = status;
	t->last.type = type;
	t->last.code = t->last_code;
	t->last.message = t->last_message;
	t->last.body = t->last_body;
	t->last.len = t->last_body ? len : 0;
	t->last.retry_after = retry_after;
	t->last.client_closed = false;
}

static void
turn_free(struct turn *t)
{
	int slot = t->slot;

	client_detach(t);
	turn_unbind(t);
	if (t->acct != NULL)
		account_release(t->acct);
	TAILQ_REMOVE(&lists[t->state], t, link);
	counts[t->state]--;
	idmap_del(&sv->reqs, t->rid);
	if (t->counted)
		sv->inflight--;
	if (slot >= 0 && sv->slots[slot].draining)
		workers_check_drained(slot);
	if (t->ev_retry != NULL)
		event_free(t->ev_retry);
	if (t->ops->free != NULL)
		t->ops->free(t);
	free(t->frame);
	free(t->fwd_headers);
	free(t->conv);
	free(t->prev_id);
	free(t->resume_prev);
	free(t->last_code);
	free(t->last_message);
	free(t->last_body);
	turn_drop_body(t);
	free(t);
}

static void
log_turn_end(struct turn *t, int status, uint64_t in, uint64_t cached,
    uint64_t outt, const char *what)
{
	char p[128];

	olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)),
	    "turn %s route=%s status=%d stream=%d conv_from=%s attempts=%d in=%" PRIu64
	    " cached=%" PRIu64 " out=%" PRIu64 " %lldms", what, t->ops->route, status,
	    t->stream, t->conv_source, t->attempts, in, cached, outt,
	    (long long)((now_mono_usec() - t->started_at) / USEC_PER_MSEC));
	metrics_turn_end(t->ops->route, t->cl.gone ? 499 : status, what,
	    now_mono_usec() - t->started_at, in, cached, outt, t->acct);
}

/* The turn ends before any output: the client gets t->last. */
static void
turn_fail(struct turn *t)
{
	sv->stats.requests_failed++;
	if (!t->cl.gone && t->ops->fail != NULL)
		t->ops->fail(t, &t->last);
	log_turn_end(t, t->last.status, 0, 0, 0, t->last.code && *t->last.code ?
	    t->last.code : "error");
	turn_free(t);
}

static void
fail_now(struct turn *t, int status, const char *type, const char *code,
    const char *message, int64_t retry_after)
{
	set_last_error(t, status, type, code, message, NULL, 0, retry_after);
	turn_fail(t);
}

/* ---- routing --------------------------------------------------------- */

/*
 * The worker of a pool key: where its connection lives, if it has one
 * (a conversation started while its hash slot was draining stays where it
 * went); else its consistent-hash slot, hashed again over the others
 * while that one drains.
 */
int
turn_slot_for_key(uint64_t key_hash)
{
	uint64_t k = key_hash;
	int slot, tries;

	if ((slot = pm_slot_of(&sv->pool, key_hash)) >= 0 && slot < sv->nslots)
		return slot;
	slot = jump_hash(key_hash, sv->nslots);
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
 * Implicit resume: the idle connection this turn claimed holds a
 * conversation that the client's full history extends: send only the new
 * items, continuing its last response, on that connection alone.
 */
static void
resume_consider(struct turn *t)
{
	struct pm_conn *c;
	int skip;

	if (!sv->cfg.implicit_resume || t->body == NULL || t->resume_off || t->fresh ||
	    t->prev_id != NULL ||
	    t->grant.claimed == 0 || (c = pm_find(&sv->pool, t->grant.claimed)) == NULL ||
	    c->last_response == NULL ||
	    (skip = resume_prefix(&c->chain, t->body,
	    jdoc_member(t->body, 0, "input"))) <= 0)
		return;
	t->resume_skip = skip;
	t->resume_prev = xstrdup(c->last_response);
	t->flags |= REQ_F_CONTINUE;
	t->owner_conn = c->id;
}

/*
 * Bind the turn to its account's pool key, worker slot and grant, and
 * build the upstream frame with the account's ids.  A continuation goes
 * to the connection that owns its previous response, and keeps that
 * connection's prompt_cache_key.
 */
static void
turn_bind(struct turn *t, struct pm_conn *owner)
{
	struct pm_conn *evict = NULL;
	char keybuf[600], p[128];

	memset(&t->grant, 0, sizeof(t->grant));
	t->upconv[0] = '\0';
	free(t->resume_prev);
	t->resume_prev = NULL;
	t->resume_skip = 0;
	if (owner != NULL) {
		t->slot = owner->slot;
		t->key_hash = owner->key_hash;
		t->flags = REQ_F_POOLED | REQ_F_CONTINUE;
		t->owner_conn = owner->id;
		if (owner->upconv[0])
			strlcpy_safe(t->upconv, owner->upconv, sizeof(t->upconv));
		else if (t->conv != NULL)
			upstream_conversation_id(t->acct->entry, t->conv, t->upconv);
		if (owner->conv_hash != 0)
			t->conv_hash = owner->conv_hash;
	} else if (t->conv != NULL) {
		snprintf(keybuf, sizeof(keybuf), "%s:%s", t->acct->entry, t->conv);
		t->key_hash = hash64_str(keybuf);
		if (t->key_hash == 0)
			t->key_hash = 1;
		/* a client WebSocket's turn runs where its socket is */
		t->slot = t->ws != NULL ? t->ws->slot : turn_slot_for_key(t->key_hash);
		t->flags = REQ_F_POOLED;
		if (sv->pool_enabled)
			pm_acquire(&sv->pool, t->acct->entry, t->key_hash, t->fresh,
			    now_mono_usec(), &t->grant, &evict);
		upstream_conversation_id(t->acct->entry, t->conv, t->upconv);
		resume_consider(t);
	} else {
		t->key_hash = 0;
		t->flags = 0;
		t->slot = slot_round_robin();
	}
	if (t->grant.reserved)
		t->flags |= REQ_F_GRANT;
	if (t->fresh)
		t->flags |= REQ_F_FRESH;
	if (t->key_hash != 0)
		snprintf(t->conv_tag, sizeof(t->conv_tag), "%04x",
		    (unsigned)(t->key_hash >> 48));
	sv->slots[t->slot].nturns++;
	if (evict != NULL) {
		pool_close_conn(evict, "making room under ws_pool_max_per_account");
		olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)),
		    "account at ws_pool_max_per_account=%d: closing its least recently "
		    "used idle connection %016" PRIx64, sv->pool.cap, evict->id);
	}
	/* Encrypted reasoning can only be read by the account that wrote it. */
	if (t->moved && t->body != NULL && !t->reasoning_dropped) {
		upframe_drop_reasoning(t->body);
		t->reasoning_dropped = true;
	}
	if (t->body == NULL)
		return;		/* a client WebSocket's frame is built in its worker */
	free(t->frame);
	t->frame = upframe_build(t->body, &(struct upframe_ids){
	    .upstream_conv = t->upconv, .installation_id = t->acct->installation_id,
	    .resume_skip = t->resume_skip, .resume_prev = t->resume_prev },
	    &t->framelen);
}

static void
send_req_start(struct turn *t)
{
	struct m_req_start m = {
		.key_hash = t->key_hash,
		.entry = t->acct->entry,
		.account_id = t->acct->account_id,
		.access_token = t->acct->access_token,
		.session_id = t->upconv,
		.flags = t->flags,
		.attempt = (uint32_t)t->attempts,
		.owner_conn = t->owner_conn,
		.frame = t->frame,
		.frame_len = t->frame != NULL ? t->framelen : 0,
		.wsid = t->ws != NULL ? t->ws->wsid : 0,
		.installation_id = t->acct->installation_id,
		.model = "",
	};
	struct msgbuf b;
	const char *p;
	int i, rc;

	for (p = t->fwd_headers, i = 0; i < t->nfwd && i < M_MAX_HEADERS; i++) {
		m.headers[i].name = p;
		p += strlen(p) + 1;
		m.headers[i].value = p;
		p += strlen(p) + 1;
	}
	m.nheaders = (uint32_t)i;
	msgbuf_init(&b);
	m_req_start_encode(&b, &m);
	rc = workers_send(t->slot, MSG_REQ_START, t->rid, &b);
	explicit_bzero(b.buf, b.len);	/* it holds the access token */
	msgbuf_free(&b);
	if (rc == MSGCHAN_FULL)
		/* the worker is not keeping up: say so rather than hang */
		fail_now(t, 503, "server_error", "worker_overloaded",
		    "the worker has too much queued; try again", 1);
}

static void
dispatch(struct turn *t)
{
	struct worker_slot *w = &sv->slots[t->slot];

	if (w->chan == NULL) {
		turn_set_state(t, TURN_QUEUED);	/* goes out when the worker is back */
		return;
	}
	t->attempts++;
	w->requests++;
	t->conn_id = 0;
	sv->stats.upstream_bytes += t->framelen;
	if (t->resume_prev != NULL)
		sv->stats.resumed++;
	turn_set_state(t, TURN_DISPATCHED);
	send_req_start(t);
}

/* Only a turn that nothing has reached the client of, and whose state is
 * not bound to one connection, may be sent again.  A client WebSocket's
 * continuation may: its worker checks the connection again, and asks the
 * client to reconnect when it is gone. */
static bool
can_retry(const struct turn *t)
{
	return !t->cl.gone && t->attempts < TURN_MAX_ATTEMPTS &&
	    ((t->body != NULL && t->prev_id == NULL) ||
	     (t->ws != NULL && t->state != TURN_STREAMING));
}

/* A client WebSocket's turn that must leave its account ends with the
 * session: the client reconnects and lands on the account's new state. */
static bool
turn_ask_reconnect(struct turn *t, const char *why)
{
	if (t->ops->reconnect == NULL || t->cl.gone)
		return false;
	t->ops->reconnect(t, why);
	log_turn_end(t, 503, 0, 0, 0, "reconnect");
	turn_free(t);
	return true;
}

/* Another attempt on the same account after a retryable failure. */
static void
on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct turn *t = arg;

	turn_bind(t, NULL);
	dispatch(t);
}

static bool
retry_later(struct turn *t)
{
	usec_t now = now_mono_usec(), delay, left;
	char p[128];

	if (!can_retry(t))
		return false;
	delay = TURN_RETRY_BASE << (t->attempts > 0 ? t->attempts - 1 : 0);
	delay += (usec_t)(arc4random_uniform((uint32_t)(delay / 2 + 1)));
	if (t->last.retry_after > 0 &&
	    (usec_t)t->last.retry_after * USEC_PER_SEC > delay)
		delay = (usec_t)t->last.retry_after * USEC_PER_SEC;
	left = t->started_at + TURN_RETRY_BUDGET - now;
	if (delay >= left)
		return false;
	turn_unbind(t);
	t->fresh = true;
	turn_set_state(t, TURN_BACKOFF);
	if (t->ev_retry == NULL)
		t->ev_retry = evtimer_new(sv->base, on_retry_timer, t);
	struct timeval tv = { (time_t)(delay / USEC_PER_SEC),
	    (suseconds_t)(delay % USEC_PER_SEC) };
	evtimer_add(t->ev_retry, &tv);
	sv->stats.retries++;
	olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)), "%s (HTTP %d) before the response "
	    "started: attempt %d in %lld ms on a fresh connection", t->last.code,
	    t->last.status, t->attempts + 1, (long long)(delay / USEC_PER_MSEC));
	return true;
}

/* Give the turn to another account, before anything reached the client. */
static bool
move_to_another_account(struct turn *t, const char *why)
{
	struct account *next;
	char p[128];
	bool moved;

	if (t->ws != NULL) {
		/* only when another account could take it: else the client
		 * gets the error */
		if (t->cl.gone || t->state == TURN_STREAMING)
			return false;
		if (t->ntried < (int)(sizeof(t->tried) / sizeof(t->tried[0])))
			t->tried[t->ntried++] = t->acct;
		if (accounts_pick(t->conv, t->tried, t->ntried, &moved) == NULL)
			return false;
		sv->stats.account_moves++;
		olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)), "%s: asking the client "
		    "WebSocket to reconnect", why);
		return turn_ask_reconnect(t, why);
	}
	if (!can_retry(t))
		return false;	/* continuation state never crosses accounts */
	if (t->ntried < (int)(sizeof(t->tried) / sizeof(t->tried[0])))
		t->tried[t->ntried++] = t->acct;
	next = accounts_pick(t->conv, t->tried, t->ntried, &moved);
	if (next == NULL)
		return false;
	olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)), "%s: moving the turn to account %s",
	    why, next->entry);
	turn_unbind(t);		/* the grant belongs to the old account */
	next->inflight++;
	account_release(t->acct);
	t->acct = next;
	t->moved = true;
	t->fresh = false;
	sv->stats.account_moves++;
	/* turn state is bound to the account that issued it */
	drop_forwarded_header(t, "x-codex-turn-state");
	turn_bind(t, NULL);
	dispatch(t);
	return true;
}

void
turn_start(struct turn *t)
{
	struct pm_conn *owner = NULL;
	struct account *acct = NULL;
	const char *prev;
	char err[256], msg[512];
	int64_t unlock;
	bool moved = false;

	if (t->ws != NULL) {
		/* a client WebSocket stays on its account while it is usable */
		if ((acct = accounts_by_entry(t->ws->entry)) != NULL && !account_usable(acct))
			acct = NULL;
		if (acct == NULL && accounts_pick(t->conv, NULL, 0, &moved) != NULL &&
		    turn_ask_reconnect(t, "the session's account is no longer usable; reconnect"))
			return;
	}
	/* (a client WebSocket's worker checks its own continuations) */
	if (t->body != NULL && t->prev_id == NULL &&
	    (t->prev_id = jdoc_get_strdup(t->body, 0, "previous_response_id")) != NULL &&
	    *t->prev_id == '\0') {
		free(t->prev_id);
		t->prev_id = NULL;
	}
	prev = t->body != NULL ? t->prev_id : NULL;
	if (prev != NULL) {
		/* A continuation may only run on the connection that completed
		 * that response, on its account: anything else would lose (or
		 * leak) the server-side state. */
		owner = sv->pool_enabled ? pm_owner(&sv->pool, prev) : NULL;
		if (owner == NULL) {
			snprintf(msg, sizeof(msg), "previous_response_id '%.100s' cannot be "
			    "continued: %s; resend the full input without previous_response_id",
			    prev, !sv->pool_enabled ? "the connection pool is disabled" :
			    "the upstream connection that produced it is gone or has a newer response");
			fail_now(t, 400, "invalid_request_error", "previous_response_not_found", msg, -1);
			return;
		}
		acct = accounts_by_entry(owner->acct->entry);
		if (acct == NULL || !account_usable(acct)) {
			snprintf(msg, sizeof(msg), "previous_response_id '%.100s' belongs to "
			    "account %s, which is %s; resend the full input without "
			    "previous_response_id", prev, owner->acct->entry,
			    acct ? account_status_name(acct) : "gone");
			fail_now(t, 409, "invalid_request_error", "previous_response_unavailable",
			    msg, -1);
			return;
		}
		t->conv_source = "previous_response_id";
	}
	if (acct == NULL && (acct = accounts_pick(t->conv, NULL, 0, &moved)) == NULL) {
		accounts_why_none(err, sizeof(err), &unlock);
		fail_now(t, 503, "server_error", "no_account", err,
		    unlock > 0 ? unlock - now_wall_usec() / USEC_PER_SEC : -1);
		return;
	}
	acct->inflight++;
	t->acct = acct;
	t->moved = moved;
	/* the conversation this turn leaves on its connection */
	if (owner != NULL)
		t->chain = owner->chain;
	else
		resume_chain_init(&t->chain);
	if (t->body != NULL)
		resume_chain_add_input(&t->chain, t->body,
		    jdoc_member(t->body, 0, "input"));
	turn_bind(t, owner);
	dispatch(t);
}

/* ---- account faults ------------------------------------------------ */

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
	if ((e = json_get_obj(o, "error")) != NULL) {
		at = json_get_int(e, "resets_at", 0);
		if (at == 0 && (in = json_get_int(e, "resets_in_seconds", 0)) > 0)
			at = now_wall_usec() / USEC_PER_SEC +
			    (in > 366 * 86400 ? 366 * 86400 : in);	/* no overflow */
	}
	json_object_put(o);
	return at;
}

/*
 * An error that says the account is at fault changes the account whether
 * or not the turn goes on (its client may have left, a continuation may
 * not move).  The turn, which has not reached the client, then goes to
 * another account (429, 402, 403) or waits for a fresh token (401, once).
 * True when the turn continues.
 */
static bool
account_fault(struct turn *t, int status, const char *code, const char *body, size_t len)
{
	struct account *a = t->acct;
	char why[128];

	snprintf(why, sizeof(why), "upstream %d %s", status, code && *code ? code : "");
	switch (status) {
	case 401:
		if (a->refresh_token == NULL)
			return false;
		if (a->status == ST_ACTIVE)
			account_set_status(a, ST_REFRESHING, why);
		if (account_refresh(a, why) == -1 || t->refreshed || !can_retry(t))
			return false;
		t->refreshed = true;
		turn_unbind(t);
		turn_set_state(t, TURN_WAIT_TOKEN);	/* turn_on_account_event resumes it */
		return true;
	case 402:
	case 429:
		account_lock(a, error_resets_at(a, body, len), why);
		return move_to_another_account(t, why);
	case 403:
		account_set_status(a, ST_BANNED, why);
		return move_to_another_account(t, why);
	}
	return false;
}

void
turn_on_account_event(struct account *a, int event)
{
	struct turn *t, *next;
	enum turn_state s;

	for (s = TURN_QUEUED; s <= TURN_BACKOFF; s++) {
		for (t = TAILQ_FIRST(&lists[s]); t != NULL; t = next) {
			next = TAILQ_NEXT(t, link);
			if (t->acct != a)
				continue;
			if (event == ACCT_EV_REFRESHED && s == TURN_WAIT_TOKEN) {
				turn_bind(t, NULL);
				dispatch(t);
				continue;
			}
			if (event == ACCT_EV_REFRESHED || (event == ACCT_EV_REFRESH_FAILED &&
			    s != TURN_WAIT_TOKEN))
				continue;
			/* its refresh failed, or the account was removed */
			if (t->state == TURN_BACKOFF && t->ev_retry != NULL)
				evtimer_del(t->ev_retry);
			if (move_to_another_account(t, event == ACCT_EV_REMOVED ?
			    "account removed" : "token refresh failed"))
				continue;
			if (event == ACCT_EV_REMOVED)
				fail_now(t, 503, "server_error", "account_removed",
				    "the account serving this turn was removed", -1);
			else
				fail_now(t, 401, "invalid_request_error", "token_expired",
				    "the account's access token was rejected and could not be refreshed",
				    -1);
		}
	}
}

/* ---- worker messages ------------------------------------------------- */

static void
on_decision(struct turn *t, const struct msg *m)
{
	struct m_req_decision d;

	if (m_req_decision_decode(m, &d) == -1)
		return;
	pm_decision(&sv->pool, t->acct->entry, &t->grant, d.decision, d.conn_id, t->slot,
	    now_mono_usec());
	t->decision = d.decision;
	if (d.conn_id != 0 && (d.decision == DEC_NEW || d.decision == DEC_REUSE)) {
		t->conn_id = d.conn_id;
		pm_set_conversation(&sv->pool, d.conn_id, t->conv_hash, t->upconv);
	} else if (d.decision == DEC_RETRY_STALE || d.decision == DEC_BYPASS) {
		t->conn_id = 0;
	}
	if (d.decision > 0 && d.decision < 8) {
		sv->stats.decisions[d.decision]++;
		sv->slots[t->slot].decisions[d.decision]++;
	}
	if (d.decision == DEC_BYPASS && d.reason < 16)
		sv->stats.bypass[d.reason]++;
	t->reason = d.decision == DEC_BYPASS ? d.reason : 0;
}

static void
on_started(struct turn *t)
{
	/* never replayed after output began */
	free(t->frame);
	t->frame = NULL;
	turn_drop_body(t);
	turn_set_state(t, TURN_STREAMING);
	metrics_turn_started(t->ops->route, now_mono_usec() - t->started_at);
	if (!t->cl.gone)
		t->ops->start(t);
}

/* An output item joins the conversation the connection will hold. */
static void
chain_output(struct turn *t, const char *frame, size_t len)
{
	struct jdoc d;
	int item;

	if (jdoc_scan(&d, frame, len, NULL, 0) == -1)
		return;
	if (jdoc_is(&d, (item = jdoc_member(&d, 0, "item")), JT_OBJECT))
		resume_chain_add(&t->chain, &d, item);
	jdoc_free(&d);
}

static void
on_event(struct turn *t, const struct msg *m)
{
	struct m_req_event ev;
	char type[128];

	if (m_req_event_decode(m, &ev) == -1 || t->cl.gone || t->state != TURN_STREAMING)
		return;
	render_frame_type(ev.frame, ev.frame_len, type, sizeof(type));
	if (strcmp(type, "response.output_item.done") == 0)
		chain_output(t, ev.frame, ev.frame_len);
	t->ops->event(t, type, ev.frame, ev.frame_len);
}

/* The turn started and is over. */
static void
turn_finish(struct turn *t, int outcome, const char *code, const char *message,
    uint64_t in, uint64_t cached, uint64_t outt)
{
	if (outcome != DONE_COMPLETED)
		sv->stats.requests_failed++;
	if (!t->cl.gone)
		t->ops->finish(t, outcome, code, message);
	log_turn_end(t, 200, in, cached, outt, outcome == DONE_STREAM_ERROR ? code :
	    done_outcome_name(outcome));
	turn_free(t);
}

static void
on_done(struct turn *t, const struct msg *m)
{
	struct m_req_done d;
	const char *message, *resp_id;
	uint64_t in, cached, outt, conn;
	int outcome;

	if (m_req_done_decode(m, &d) == -1) {
		memset(&d, 0, sizeof(d));
		d.outcome = DONE_STREAM_ERROR;
		d.message = "malformed message from the worker";
	}
	outcome = d.outcome;
	message = d.message;
	resp_id = d.response_id;
	in = d.input_tokens;
	cached = d.cached_tokens;
	outt = d.output_tokens;
	conn = d.conn_id;
	if (t->conn_id != 0) {
		pm_turn_end(&sv->pool, t->conn_id, conn != 0 ? resp_id : NULL,
		    in, cached, now_mono_usec());
		/* a client WebSocket's turn leaves a history this side never
		 * saw: no implicit resume may build on it (an empty chain) */
		if (conn != 0 && outcome == DONE_COMPLETED)
			pm_set_chain(&sv->pool, conn, &t->chain);
	}
	t->conn_id = 0;
	sv->stats.input_tokens += in;
	sv->stats.cached_tokens += cached;
	sv->stats.output_tokens += outt;
	usage_window_add(&sv->recent, now_mono_usec(), in, cached);
	account_usage(t->acct, in, cached, outt);
	apikey_usage(t->key_label[0] ? t->key_label : NULL, in, cached);
	if (outcome == DONE_COMPLETED)
		convlog_turn(&sv->convs, t->conv_hash, t->acct->entry, t->slot,
		    t->decision, t->reason, in, cached, &(struct conv_who){
			.route = t->ops->route, .key_label = t->key_label,
			.resumed = t->resume_prev != NULL }, now_mono_usec());
	if (t->state != TURN_STREAMING) {
		/* a worker that finished a turn it never started: an error */
		set_last_error(t, 502, "server_error", "stream_disconnected",
		    message && *message ? message : "the response ended before it started",
		    NULL, 0, -1);
		turn_fail(t);
		return;
	}
	turn_finish(t, outcome, "stream_disconnected",
	    message && *message ? message : "upstream stream ended early", in, cached, outt);
}

static void
on_error(struct turn *t, const struct msg *m)
{
	struct m_req_error e;
	uint32_t status;
	uint8_t flags;
	const char *code, *body;
	int64_t retry_after = -1;
	size_t len;
	char msg[128], p[128];

	if (m_req_error_decode(m, &e) == -1) {
		memset(&e, 0, sizeof(e));
		e.http_status = 502;
		e.code = "internal_error";
	}
	status = e.http_status;
	flags = e.flags;
	code = e.code;
	body = e.body;
	len = e.body_len;
	if (t->conn_id != 0)
		pm_turn_end(&sv->pool, t->conn_id, NULL, 0, 0, now_mono_usec());
	t->conn_id = 0;
	if (status < 400 || status > 599)
		status = 502;
	if (body != NULL && len > 0)
		retry_after = render_retry_after(body, len, now_wall_usec() / USEC_PER_SEC);
	snprintf(msg, sizeof(msg), "upstream request failed (HTTP %u)", status);
	set_last_error(t, (int)status, NULL, code, msg, body, len, retry_after);
	t->last.client_closed = (flags & ERR_F_CLIENT_CLOSED) != 0;
	if (t->state == TURN_STREAMING) {
		/* a worker never does this; end the stream rather than hang */
		turn_finish(t, DONE_STREAM_ERROR, code && *code ? code : "upstream_error", msg,
		    0, 0, 0);
		return;
	}
	if ((flags & ERR_F_ACCOUNT) && account_fault(t, (int)status, code, body, len))
		return;
	if (t->resume_prev != NULL && !(flags & ERR_F_ACCOUNT) && !t->cl.gone) {
		/* the connection could not continue: the full body, once */
		olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)), "implicit resume refused (%s): "
		    "sending the full input", code);
		t->resume_off = true;
		sv->stats.resume_fallbacks++;
		turn_unbind(t);
		turn_bind(t, NULL);
		dispatch(t);
		return;
	}
	if (status == 400 && code && strcmp(code, "previous_response_not_found") == 0 &&
	    t->prev_id != NULL)
		pm_forget_response(&sv->pool, t->prev_id);
	if ((flags & ERR_F_RETRYABLE) && retry_later(t))
		return;
	turn_fail(t);
}

void
turn_on_worker_msg(int slot, const struct msg *m)
{
	struct turn *t = idmap_get(&sv->reqs, m->hdr.rid);

	if (t == NULL || t->slot != slot ||
	    (t->state != TURN_DISPATCHED && t->state != TURN_STREAMING))
		return;		/* already finished, or not on that worker */
	switch (m->hdr.type) {
	case MSG_REQ_DECISION:
		on_decision(t, m);
		break;
	case MSG_REQ_STARTED:
		if (t->state == TURN_DISPATCHED)
			on_started(t);
		break;
	case MSG_REQ_EVENT:
		on_event(t, m);
		break;
	case MSG_REQ_DONE:
		on_done(t, m);
		break;
	case MSG_REQ_ERROR:
		on_error(t, m);
		break;
	default:
		log_debug("worker %d: unexpected %s for rid %" PRIx64, slot,
		    msg_type_name(m->hdr.type), m->hdr.rid);
		break;
	}
}

/* The client closed its connection. */
void
turn_client_left(struct turn *t)
{
	sv->stats.client_aborts++;
	switch (t->state) {
	case TURN_NEW:
	case TURN_QUEUED:
	case TURN_WAIT_TOKEN:
	case TURN_BACKOFF:
		log_turn_end(t, 499, 0, 0, 0, "client_gone");
		turn_free(t);	/* nothing upstream */
		return;
	case TURN_DISPATCHED:
	case TURN_STREAMING:
		if (!t->cancel_sent) {
			/* The worker evicts the connection: tail frames of this
			 * turn must never reach the next one.  Its final message
			 * frees the turn. */
			t->cancel_sent = true;
			workers_send(t->slot, MSG_REQ_CANCEL, t->rid, NULL);
		}
		return;
	case TURN_NSTATES:
		break;
	}
}

/*
 * The worker of a slot is gone (its channel was read to the end first).
 * Turns that had not started are sent again, on a new grant, when the
 * slot's new worker is up; started ones end with an error event.
 */
void
turn_worker_died(int slot)
{
	struct turn *t, *next;
	char p[128];
	enum turn_state s;

	for (s = TURN_DISPATCHED; s <= TURN_STREAMING; s++) {
		for (t = TAILQ_FIRST(&lists[s]); t != NULL; t = next) {
			next = TAILQ_NEXT(t, link);
			if (t->slot != slot)
				continue;
			t->conn_id = 0;
			if (t->cl.gone) {
				log_turn_end(t, 499, 0, 0, 0, "client_gone");
				turn_free(t);
				continue;
			}
			if (t->state == TURN_STREAMING) {
				turn_finish(t, DONE_STREAM_ERROR, "worker_crashed",
				    "the codexpool worker serving this stream terminated", 0, 0, 0);
				continue;
			}
			set_last_error(t, 502, "server_error", "worker_crashed",
			    "the codexpool worker serving this request terminated", NULL, 0, -1);
			if (!can_retry(t)) {
				turn_fail(t);
				continue;
			}
			/* Nothing reached the client: run it again on the new worker. */
			sv->stats.retried_on_respawn++;
			olog(LOG_LVL_INFO, pfx(t, p, sizeof(p)),
			    "worker %d died before the response started: will retry", slot);
			turn_unbind(t);
			turn_bind(t, NULL);
			dispatch(t);	/* QUEUED until the slot's worker is back */
		}
	}
}

void
turn_worker_ready(int slot)
{
	struct turn *t, *next;

	for (t = TAILQ_FIRST(&lists[TURN_QUEUED]); t != NULL; t = next) {
		next = TAILQ_NEXT(t, link);
		if (t->slot == slot)
			dispatch(t);
	}
}

/* At exit: whatever is left is answered, if it can be, and freed. */
void
turn_free_all(void)
{
	struct turn *t;
	int s;

	for (s = 0; s < TURN_NSTATES; s++) {
		while ((t = TAILQ_FIRST(&lists[s])) != NULL) {
			if (t->state == TURN_STREAMING) {
				if (!t->cl.gone)
					t->ops->finish(t, DONE_STREAM_ERROR, "shutting_down",
					    "codexpool stopped before this turn finished");
				turn_free(t);
			} else {
				fail_now(t, 503, "server_error", "shutting_down",
				    "codexpool stopped before this turn finished", -1);
			}
		}
	}
}

/*
 * Streams that have been silent for a while get a keepalive: proxies and
 * clients keep the connection, and a client that left is noticed (the
 * write fails) even while the upstream is thinking.  Slow clients are
 * judged here too, between frames.
 */
static void
on_janitor(evutil_socket_t fd, short what, void *arg)
{
	struct turn *t, *next;
	usec_t now = now_mono_usec();

	static uint64_t trimmed_at;

	for (t = TAILQ_FIRST(&lists[TURN_STREAMING]); t != NULL; t = next) {
		next = TAILQ_NEXT(t, link);
		if (!t->stream || t->cl.gone)
			continue;
		if (client_check_slow(t))
			continue;
		if (now - t->cl.last_write < SSE_KEEPALIVE)
			continue;
		if (t->ops->keepalive != NULL)
			t->ops->keepalive(t);
		else
			client_keepalive(t);
	}
	/* After a burst, give the bodies' heap back (glibc keeps it), as
	 * the workers' sweep does: once per quiet spell. */
	if (sv->inflight == 0 && sv->stats.requests != trimmed_at) {
		trimmed_at = sv->stats.requests;
		malloc_trim(0);
	}
}

void
turn_janitor_start(void)
{
	struct timeval tv = { 5, 0 };

	ev_janitor = event_new(sv->base, -1, EV_PERSIST, on_janitor, NULL);
	event_add(ev_janitor, &tv);
}

void
turn_janitor_stop(void)
{
	if (ev_janitor != NULL)
		event_free(ev_janitor);
	ev_janitor = NULL;
}
