/*
 * The Responses WebSocket: handshake checks, message assembly, and the
 * paced sending of response plans (timers via lws_sul, never blocking).
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "jsonutil.h"
#include "log.h"
#include "lws_glue.h"
#include "pace.h"
#include "prompt.h"

struct ws_conn {
	struct lws		*wsi;
	struct sim_session	 sess;
	struct sbuf		 rx;		/* message being reassembled */
	int			 rx_binary;
	struct plan		 urgent;	/* errors that cannot wait */
	struct pacer		 pace;		/* responses, in order */
	int			 stalled;
	lws_sorted_usec_list_t	 sul_stall;	/* watches a stalled peer */
	struct ws_conn		*next;
	struct ws_conn		*prev;
};

/*
 * Custom (non-lws-token) request headers worth recording.  lws 4.1.6
 * cannot list unknown headers, so they are named here.
 */
static const char *const custom_headers[] = {
	"chatgpt-account-id", "openai-beta", "originator", "version",
	"session_id", "session-id", "thread-id", "x-client-request-id",
	"x-codex-window-id", "x-codex-turn-metadata", "x-codex-turn-state",
	"x-codex-beta-features", "x-codex-installation-id", "x-openai-fedramp",
	"openai-organization", "openai-project", "x-openai-subagent",
	"x-codex-parent-thread-id", "x-openai-memgen-request",
	"x-openai-internal-codex-residency",
	"x-responsesapi-include-timing-metrics", "x-request-id", "traceparent",
	"tracestate", NULL
};

/* The upgrade being accepted: CONFIRM_UPGRADE fills it, ESTABLISHED (in
 * the same service call, lws is single-threaded) takes it. */
static struct {
	struct lws	*wsi;
	uint64_t	 conn_id;
	int		 backend;
	char		 account[64];
	char		 path[256];
} pending;

static struct ws_conn *conns;

#define HDR_MAX	16384

void
req_path(struct lws *wsi, char *buf, size_t size)
{
	static const enum lws_token_indexes uri_tokens[] = {
		WSI_TOKEN_GET_URI, WSI_TOKEN_POST_URI, WSI_TOKEN_OPTIONS_URI,
		WSI_TOKEN_PUT_URI, WSI_TOKEN_PATCH_URI, WSI_TOKEN_DELETE_URI,
		WSI_TOKEN_HEAD_URI,
	};
	size_t i;

	buf[0] = '\0';
	for (i = 0; i < sizeof(uri_tokens) / sizeof(uri_tokens[0]); i++)
		if (lws_hdr_total_length(wsi, uri_tokens[i]) > 0) {
			if (lws_hdr_copy(wsi, buf, (int)size, uri_tokens[i]) < 0)
				buf[0] = '\0';
			return;
		}
}

int
path_ends_with(const char *path, const char *suffix)
{
	size_t pl = strlen(path), sl = strlen(suffix);

	return pl >= sl && strcmp(path + pl - sl, suffix) == 0;
}

/* Value of a known header, malloc'd, or NULL. */
char *
hdr_dup(struct lws *wsi, enum lws_token_indexes t)
{
	int n = lws_hdr_total_length(wsi, t);
	char *v;

	if (n <= 0 || n > HDR_MAX)
		return NULL;
	v = xmalloc((size_t)n + 1);
	if (lws_hdr_copy(wsi, v, n + 1, t) < 0) {
		free(v);
		return NULL;
	}
	return v;
}

char *
custom_dup(struct lws *wsi, const char *name)
{
	char key[96];
	int n, kl;
	char *v;

	kl = snprintf(key, sizeof(key), "%s:", name);
	n = lws_hdr_custom_length(wsi, key, kl);
	if (n < 0 || n > HDR_MAX)
		return NULL;
	v = xmalloc((size_t)n + 1);
	if (lws_hdr_custom_copy(wsi, v, n + 1, key, kl) < 0) {
		free(v);
		return NULL;
	}
	return v;
}

/* Every request header we can read, the bearer token redacted. */
static struct json_object *
collect_headers(struct lws *wsi)
{
	struct json_object *h = json_object_new_object();
	char name[96];
	const char *tn;
	char *v;
	size_t nl;
	int t, i;

	for (t = 0; t < (int)_WSI_TOKEN_CLIENT_SENT_PROTOCOLS; t++) {
		tn = (const char *)lws_token_to_string((enum lws_token_indexes)t);
		if (tn == NULL || tn[0] == ':' || (nl = strlen(tn)) < 2 ||
		    tn[nl - 1] != ':' || nl >= sizeof(name))
			continue;
		v = hdr_dup(wsi, (enum lws_token_indexes)t);
		if (v == NULL)
			continue;
		memcpy(name, tn, nl - 1);
		name[nl - 1] = '\0';
		if (strcmp(name, "authorization") == 0) {
			/* Keep the scheme, never the credential. */
			const char *sp = strchr(v, ' ');
			char red[64];

			snprintf(red, sizeof(red), "%.*s [redacted]",
			    sp ? (int)(sp - v) : 0, v);
			json_object_object_add(h, name, json_object_new_string(
			    sp ? red : "[redacted]"));
		} else
			json_object_object_add(h, name, json_object_new_string(v));
		freezero_str(v);
	}
	for (i = 0; custom_headers[i] != NULL; i++) {
		v = custom_dup(wsi, custom_headers[i]);
		if (v == NULL)
			continue;
		json_object_object_add(h, custom_headers[i], json_object_new_string(v));
		free(v);
	}
	return h;
}

static void
record_handshake(uint64_t conn_id, const char *path, int status, int backend,
    const char *account, const char *error, struct json_object *headers)
{
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "conn", json_object_new_int64((int64_t)conn_id));
	json_object_object_add(r, "path", json_object_new_string(path));
	json_object_object_add(r, "status", json_object_new_int(status));
	json_object_object_add(r, "backend", backend >= 0 ?
	    json_object_new_int(backend) : NULL);
	json_object_object_add(r, "account", account ?
	    json_object_new_string(account) : NULL);
	json_object_object_add(r, "error", error ? json_object_new_string(error) : NULL);
	json_object_object_add(r, "headers", headers);
	json_object_object_add(r, "time", json_object_new_double(
	    (double)now_wall_usec() / 1e6));
	records_add_handshake(&g_sim->rec, r);
	if (status != 101)
		g_sim->rec.handshakes_rejected++;
}

static int
refuse(struct lws *wsi, uint64_t conn_id, const char *path, int status,
    const char *type, const char *code, const char *message,
    struct json_object *headers)
{
	char *body = json_error_body(message, type, code);
	int rv;

	record_handshake(conn_id, path, status, -1, NULL, code, headers);
	log_info("conn=%llu upgrade refused: %d %s path=%s",
	    (unsigned long long)conn_id, status, code, path);
	rv = http_reply_now(wsi, status, body);
	free(body);
	/* >0 tells lws we answered the upgrade ourselves. */
	return rv < 0 ? -1 : 1;
}

int
ws_confirm_upgrade(struct lws *wsi, struct sim_pss *pss, const char *upgrade)
{
	struct json_object *headers;
	struct sim_account *acct = NULL;
	enum auth_verdict v;
	char path[256];
	char *authz, *account_hdr;
	uint64_t conn_id;
	int status;

	(void)pss;
	req_path(wsi, path, sizeof(path));
	conn_id = sim_new_conn_id(g_sim);
	headers = collect_headers(wsi);
	if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0)
		return refuse(wsi, conn_id, path, 400, "invalid_request_error",
		    "unsupported_upgrade", "Only WebSocket upgrades are served here.",
		    headers);
	if (!path_ends_with(path, "/responses"))
		return refuse(wsi, conn_id, path, 404, "invalid_request_error",
		    "not_found", "No WebSocket endpoint at this path.", headers);
	status = fault_queue_take_reject(&g_sim->faults);
	if (status == 0 && g_sim->o.fault.kind == FAULT_REJECT_HANDSHAKE)
		status = g_sim->o.fault.arg;
	if (status != 0)
		return refuse(wsi, conn_id, path, status, "server_error",
		    "sim_reject_handshake", "The simulator was told to refuse this upgrade.",
		    headers);

	authz = hdr_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
	account_hdr = custom_dup(wsi, "chatgpt-account-id");
	v = sim_auth_check(&g_sim->auth, authz, account_hdr, &acct);
	freezero_str(authz);
	free(account_hdr);
	if (v != AUTH_OK)
		return refuse(wsi, conn_id, path, 401, "invalid_request_error",
		    auth_verdict_code(v), auth_verdict_message(v), headers);

	pending.wsi = wsi;
	pending.conn_id = conn_id;
	pending.backend = sim_rand_below(g_sim, g_sim->o.backends);
	strlcpy_safe(pending.account, acct->id, sizeof(pending.account));
	strlcpy_safe(pending.path, path, sizeof(pending.path));
	record_handshake(conn_id, path, 101, pending.backend, acct->id, NULL, headers);
	return 0;
}

/* Arranges the next WRITEABLE callback: urgent frames at once, the
 * script when its head step is due. */
static void
conn_kick(struct ws_conn *c)
{
	if (c->urgent.head != NULL)
		lws_callback_on_writable(c->wsi);
	else
		pacer_kick(&c->pace);
}

#define STALL_WATCH_US	(250 * LWS_US_PER_MS)

/*
 * A stalled connection reads nothing, so lws would never see its peer
 * leave and the connection would count as open forever.  Its socket is
 * checked for a hang-up instead (POLLRDHUP works with unread data queued).
 */
static void
stall_watch(lws_sorted_usec_list_t *sul)
{
	struct ws_conn *c = lws_container_of(sul, struct ws_conn, sul_stall);
	struct pollfd pfd = { .fd = lws_get_socket_fd(c->wsi), .events = POLLRDHUP };

	if (pfd.fd >= 0 && poll(&pfd, 1, 0) > 0 &&
	    (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
		log_info("conn=%llu stalled peer left", (unsigned long long)c->sess.conn_id);
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
		return;
	}
	lws_sul_schedule(g_ctx, 0, &c->sul_stall, stall_watch, STALL_WATCH_US);
}

/* Runs one step; returns -1 when the connection must close. */
static int
run_step(struct ws_conn *c, struct plan_step *st)
{
	switch (st->kind) {
	case STEP_FRAME:
		return send_ws_frame(c->wsi, st->data, st->len);
	case STEP_IDLE:
		c->sess.busy = 0;
		return 0;
	case STEP_CLOSE:
		log_info("conn=%llu closing with %d", (unsigned long long)c->sess.conn_id,
		    st->close_code);
		lws_close_reason(c->wsi, (enum lws_close_status)st->close_code,
		    (unsigned char *)"sim", 3);
		return -1;
	case STEP_RESET:
		log_info("conn=%llu resetting (RST)", (unsigned long long)c->sess.conn_id);
		abort_with_rst(c->wsi);
		return -1;
	case STEP_STALL:
		log_info("conn=%llu stalling", (unsigned long long)c->sess.conn_id);
		c->stalled = 1;
		lws_rx_flow_control(c->wsi, 0);
		lws_sul_schedule(g_ctx, 0, &c->sul_stall, stall_watch, STALL_WATCH_US);
		return 0;
	}
	return 0;
}

static int
on_writeable(struct ws_conn *c)
{
	struct plan_step *st;
	int rv;

	if (c->urgent.head != NULL)
		st = plan_pop(&c->urgent);
	else if ((st = pacer_due(&c->pace)) == NULL)
		return 0;
	rv = run_step(c, st);
	step_free(st);
	if (rv < 0)
		return -1;
	conn_kick(c);
	return 0;
}

static void
queue_error_and_close(struct ws_conn *c, const char *code, const char *message,
    int close_code)
{
	struct plan p = { 0 };
	struct plan_step *st;

	st = xcalloc(1, sizeof(*st));
	st->kind = STEP_FRAME;
	st->data = sim_error_frame(400, "invalid_request_error", code, message, NULL);
	st->len = strlen(st->data);
	p.head = p.tail = st;
	st = xcalloc(1, sizeof(*st));
	st->kind = STEP_CLOSE;
	st->close_code = close_code;
	p.tail->next = st;
	p.tail = st;
	plan_append(&c->urgent, &p);
	log_info("conn=%llu message rejected: %s", (unsigned long long)c->sess.conn_id,
	    code);
}

static void
on_receive(struct ws_conn *c, const void *in, size_t len)
{
	struct plan p;

	if (lws_frame_is_binary(c->wsi))
		c->rx_binary = 1;
	sbuf_add(&c->rx, in, len);
	if (!lws_is_final_fragment(c->wsi) || lws_remaining_packet_payload(c->wsi) > 0)
		return;
	if (c->rx.overflow) {
		char msg[128];

		snprintf(msg, sizeof(msg), "Message larger than %zu bytes.",
		    g_sim->o.max_message);
		queue_error_and_close(c, "message_too_large", msg,
		    LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
	} else if (c->rx_binary) {
		queue_error_and_close(c, "binary_not_supported",
		    "Binary frames are not supported; send JSON text frames.",
		    LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE);
	} else {
		sim_respond(g_sim, &c->sess, c->rx.buf ? c->rx.buf : "", c->rx.len, &p);
		plan_append(p.urgent ? &c->urgent : &c->pace.script, &p);
	}
	sbuf_reset(&c->rx);
	c->rx_binary = 0;
	conn_kick(c);
}

static void
conn_free(struct ws_conn *c, int context_alive)
{
	pacer_free(&c->pace, context_alive);
	if (context_alive)
		lws_sul_cancel(&c->sul_stall);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	plan_free(&c->urgent);
	sbuf_free(&c->rx);
	session_free(&c->sess);
	free(c);
}

int
ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
    struct sim_pss *pss, void *in, size_t len)
{
	struct ws_conn *c;

	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
		if (pending.wsi != wsi) {
			log_warnx("websocket established without a checked handshake");
			return -1;
		}
		c = xcalloc(1, sizeof(*c));
		c->wsi = wsi;
		pacer_init(&c->pace, wsi);
		session_init(&c->sess, pending.conn_id, pending.backend, pending.account);
		sbuf_init(&c->rx, g_sim->o.max_message);
		c->next = conns;
		if (conns != NULL)
			conns->prev = c;
		conns = c;
		pss->ws = c;
		pending.wsi = NULL;
		records_conn_open(&g_sim->rec, c->sess.account);
		log_info("conn=%llu open backend=%d account=%s path=%s",
		    (unsigned long long)c->sess.conn_id, c->sess.backend,
		    c->sess.account, pending.path);
		return 0;
	case LWS_CALLBACK_RECEIVE:
		if (pss->ws == NULL)
			return -1;
		on_receive(pss->ws, in, len);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		if (pss->ws == NULL)
			return 0;
		return on_writeable(pss->ws);
	case LWS_CALLBACK_CLOSED:
		c = pss->ws;
		if (c == NULL)
			return 0;
		pss->ws = NULL;
		records_conn_close(&g_sim->rec, c->sess.account);
		log_info("conn=%llu closed backend=%d account=%s",
		    (unsigned long long)c->sess.conn_id, c->sess.backend,
		    c->sess.account);
		conn_free(c, 1);
		return 0;
	default:
		return 0;
	}
}

void
ws_shutdown(void)
{
	/* Called after the context is gone.  lws closes every connection on
	 * context destroy (CLOSED frees them); this only catches what it did
	 * not, and must not touch the timers any more. */
	while (conns != NULL)
		conn_free(conns, 0);
}
