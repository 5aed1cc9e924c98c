/*
 * The Responses protocol as the simulator speaks it: one client message
 * in, a plan of frames (and closes, delays, faults) out.
 *
 * Order of checks for a response.create: busy connection, connection age,
 * previous_response_id, input shape, then the fault, then the response.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "jsonutil.h"
#include "log.h"
#include "prompt.h"
#include "sim.h"

#define JSON_FLAGS	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

void
step_free(struct plan_step *st)
{
	if (st == NULL)
		return;
	free(st->data);
	free(st);
}

void
plan_free(struct plan *plan)
{
	struct plan_step *st;

	while ((st = plan_pop(plan)) != NULL)
		step_free(st);
}

struct plan_step *
plan_pop(struct plan *plan)
{
	struct plan_step *st = plan->head;

	if (st == NULL)
		return NULL;
	plan->head = st->next;
	if (plan->head == NULL)
		plan->tail = NULL;
	st->next = NULL;
	return st;
}

void
plan_append(struct plan *dst, struct plan *src)
{
	if (src->head == NULL)
		return;
	if (dst->tail != NULL)
		dst->tail->next = src->head;
	else
		dst->head = src->head;
	dst->tail = src->tail;
	src->head = src->tail = NULL;
}

static struct plan_step *
add_step(struct plan *plan, enum step_kind kind, int delay_ms)
{
	struct plan_step *st = xcalloc(1, sizeof(*st));

	st->kind = kind;
	st->delay_ms = delay_ms;
	if (plan->tail != NULL)
		plan->tail->next = st;
	else
		plan->head = st;
	plan->tail = st;
	return st;
}

/* Adds a frame; takes ownership of o. */
static void
add_frame(struct plan *plan, struct json_object *o, int delay_ms)
{
	struct plan_step *st = add_step(plan, STEP_FRAME, delay_ms);
	size_t len;
	const char *s = json_object_to_json_string_length(o, JSON_FLAGS, &len);

	st->data = xmalloc(len + 1);
	memcpy(st->data, s, len + 1);
	st->len = len;
	json_object_put(o);
}

static void
add_raw_frame(struct plan *plan, char *text)
{
	struct plan_step *st = add_step(plan, STEP_FRAME, 0);

	st->data = text;
	st->len = strlen(text);
}

static void
add_close(struct plan *plan, int code, int delay_ms)
{
	add_step(plan, STEP_CLOSE, delay_ms)->close_code = code;
}

char *
sim_error_frame(int status, const char *type, const char *code,
    const char *message, const char *param)
{
	struct json_object *o = json_object_new_object(), *e;
	char *s;

	json_object_object_add(o, "type", json_object_new_string("error"));
	json_object_object_add(o, "status", json_object_new_int(status));
	e = json_object_new_object();
	json_object_object_add(e, "type", json_object_new_string(type));
	if (code != NULL)
		json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(message));
	if (param != NULL)
		json_object_object_add(e, "param", json_object_new_string(param));
	json_object_object_add(o, "error", e);
	s = xstrdup(json_object_to_json_string_ext(o, JSON_FLAGS));
	json_object_put(o);
	return s;
}

static struct json_object *
jstr_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

/* The per-request record for /sim/state; the caller fills in the rest. */
static struct json_object *
new_record(const struct sim_session *s, struct json_object *req)
{
	struct json_object *r = json_object_new_object();
	const char *pck = req ? json_get_str(req, "prompt_cache_key") : NULL;
	const char *prev = req ? json_get_str(req, "previous_response_id") : NULL;

	json_object_object_add(r, "conn", json_object_new_int64((int64_t)s->conn_id));
	json_object_object_add(r, "backend", json_object_new_int(s->backend));
	json_object_object_add(r, "account", json_object_new_string(s->account));
	json_object_object_add(r, "model", jstr_or_null(req ?
	    json_get_str(req, "model") : NULL));
	json_object_object_add(r, "prompt_cache_key", jstr_or_null(pck));
	json_object_object_add(r, "previous_response_id", jstr_or_null(prev));
	json_object_object_add(r, "generate", json_object_new_boolean(
	    req ? json_get_bool(req, "generate", true) : true));
	json_object_object_add(r, "input_tokens", json_object_new_int64(0));
	json_object_object_add(r, "cached_tokens", json_object_new_int64(0));
	json_object_object_add(r, "prompt_tokens", json_object_new_int64(0));
	json_object_object_add(r, "fault", NULL);
	json_object_object_add(r, "response_id", NULL);
	json_object_object_add(r, "error", NULL);
	json_object_object_add(r, "time", json_object_new_double(
	    (double)now_wall_usec() / 1e6));
	return r;
}

static void
record_error(struct sim *sim, const struct sim_session *s, struct json_object *req,
    const char *code)
{
	struct json_object *r = new_record(s, req);

	json_object_object_add(r, "error", json_object_new_string(code));
	records_add_request(&sim->rec, r);
	log_info("conn=%llu backend=%d account=%s request error=%s",
	    (unsigned long long)s->conn_id, s->backend, s->account, code);
}

static void
error_plan(struct plan *plan, int status, const char *type, const char *code,
    const char *message, const char *param)
{
	add_raw_frame(plan, sim_error_frame(status, type, code, message, param));
}

static void
rate_limits_frame(struct plan *plan, int delay_ms)
{
	struct json_object *o, *rl, *w, *c;
	long now = (long)time(NULL);

	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("codex.rate_limits"));
	json_object_object_add(o, "plan_type", json_object_new_string("plus"));
	rl = json_object_new_object();
	json_object_object_add(rl, "allowed", json_object_new_boolean(1));
	json_object_object_add(rl, "limit_reached", json_object_new_boolean(0));
	w = json_object_new_object();
	json_object_object_add(w, "used_percent", json_object_new_double(12.0));
	json_object_object_add(w, "window_minutes", json_object_new_int(300));
	json_object_object_add(w, "reset_at", json_object_new_int64(now + 3 * 3600));
	json_object_object_add(rl, "primary", w);
	w = json_object_new_object();
	json_object_object_add(w, "used_percent", json_object_new_double(3.0));
	json_object_object_add(w, "window_minutes", json_object_new_int(10080));
	json_object_object_add(w, "reset_at", json_object_new_int64(now + 5 * 86400));
	json_object_object_add(rl, "secondary", w);
	json_object_object_add(o, "rate_limits", rl);
	c = json_object_new_object();
	json_object_object_add(c, "has_credits", json_object_new_boolean(0));
	json_object_object_add(c, "unlimited", json_object_new_boolean(0));
	json_object_object_add(c, "balance", NULL);
	json_object_object_add(o, "credits", c);
	add_frame(plan, o, delay_ms);
}

static struct json_object *
event(const char *type, int *seq)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string(type));
	json_object_object_add(o, "sequence_number", json_object_new_int((*seq)++));
	return o;
}

static struct json_object *
response_obj(const char *id, const char *model, const char *status, long created)
{
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "id", json_object_new_string(id));
	json_object_object_add(r, "object", json_object_new_string("response"));
	json_object_object_add(r, "created_at", json_object_new_int64(created));
	json_object_object_add(r, "status", json_object_new_string(status));
	json_object_object_add(r, "model", json_object_new_string(model));
	json_object_object_add(r, "output", json_object_new_array());
	return r;
}

static struct json_object *
usage_obj(int64_t input, int64_t cached, int64_t output)
{
	struct json_object *u = json_object_new_object(), *d;

	json_object_object_add(u, "input_tokens", json_object_new_int64(input));
	d = json_object_new_object();
	json_object_object_add(d, "cached_tokens", json_object_new_int64(cached));
	json_object_object_add(u, "input_tokens_details", d);
	json_object_object_add(u, "output_tokens", json_object_new_int64(output));
	d = json_object_new_object();
	json_object_object_add(d, "reasoning_tokens", json_object_new_int64(0));
	json_object_object_add(u, "output_tokens_details", d);
	json_object_object_add(u, "total_tokens", json_object_new_int64(input + output));
	return u;
}

static struct json_object *
message_item(const char *id, const char *status, const char *text)
{
	struct json_object *it = json_object_new_object(), *content, *part;

	json_object_object_add(it, "type", json_object_new_string("message"));
	json_object_object_add(it, "id", json_object_new_string(id));
	json_object_object_add(it, "role", json_object_new_string("assistant"));
	json_object_object_add(it, "status", json_object_new_string(status));
	content = json_object_new_array();
	if (text != NULL) {
		part = json_object_new_object();
		json_object_object_add(part, "type", json_object_new_string("output_text"));
		json_object_object_add(part, "text", json_object_new_string(text));
		json_object_object_add(part, "annotations", json_object_new_array());
		json_object_array_add(content, part);
	}
	json_object_object_add(it, "content", content);
	return it;
}

static struct json_object *
text_part(const char *text)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "type", json_object_new_string("output_text"));
	json_object_object_add(p, "text", json_object_new_string(text));
	json_object_object_add(p, "annotations", json_object_new_array());
	return p;
}

static struct json_object *
item_ref(struct json_object *o, const char *msg_id)
{
	json_object_object_add(o, "item_id", json_object_new_string(msg_id));
	json_object_object_add(o, "output_index", json_object_new_int(0));
	json_object_object_add(o, "content_index", json_object_new_int(0));
	return o;
}

/* Length of the first n UTF-8 characters of s (never splits one). */
static size_t
utf8_prefix(const char *s, size_t n)
{
	size_t i = 0, chars = 0;

	while (s[i] != '\0' && chars < n) {
		i++;
		while ((s[i] & 0xc0) == 0x80)
			i++;
		chars++;
	}
	return i;
}

static size_t
utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if ((*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* "sim reply to: " + the first 40 characters of the last user text. */
static char *
reply_text(const char *user_text)
{
	struct sbuf sb;
	const char *u = user_text ? user_text : "";
	size_t i, n = utf8_prefix(u, SIM_REPLY_QUOTE_CHARS);

	sbuf_init(&sb, 4096);
	sbuf_adds(&sb, SIM_REPLY_PREFIX);
	/* Control characters would make an ugly reply; keep it one line. */
	for (i = 0; i < n; i++)
		sbuf_addc(&sb, (unsigned char)u[i] < 0x20 ? ' ' : u[i]);
	return sbuf_take(&sb, NULL);
}

struct gen {
	const char	*model;
	char		 resp_id[64];
	char		 msg_id[64];
	long		 created;
	int64_t		 input_tokens;
	int64_t		 cached_tokens;
	int64_t		 output_tokens;
	char		*text;
	int		 seq;
};

static void
new_ids(struct sim *sim, struct gen *g)
{
	uint64_t n = ++sim->next_resp;

	snprintf(g->resp_id, sizeof(g->resp_id), "resp_%016llx%08llx",
	    (unsigned long long)sim->run_id, (unsigned long long)n);
	snprintf(g->msg_id, sizeof(g->msg_id), "msg_%016llx%08llx",
	    (unsigned long long)sim->run_id, (unsigned long long)n);
}

static void
created_frames(struct plan *plan, struct gen *g, int first_delay_ms)
{
	struct json_object *o;

	rate_limits_frame(plan, first_delay_ms);
	o = event("response.created", &g->seq);
	json_object_object_add(o, "response",
	    response_obj(g->resp_id, g->model, "in_progress", g->created));
	add_frame(plan, o, 0);
}

/* Frames up to and including the delta number stop_after (all if < 0). */
static void
output_frames(struct sim *sim, struct plan *plan, struct gen *g, int stop_after)
{
	struct json_object *o;
	size_t chars = utf8_chars(g->text), off = 0, want, n;
	int k, deltas = sim->o.deltas;

	o = event("response.in_progress", &g->seq);
	json_object_object_add(o, "response",
	    response_obj(g->resp_id, g->model, "in_progress", g->created));
	add_frame(plan, o, 0);
	o = event("response.output_item.added", &g->seq);
	json_object_object_add(o, "output_index", json_object_new_int(0));
	json_object_object_add(o, "item", message_item(g->msg_id, "in_progress", NULL));
	add_frame(plan, o, 0);
	o = item_ref(event("response.content_part.added", &g->seq), g->msg_id);
	json_object_object_add(o, "part", text_part(""));
	add_frame(plan, o, 0);
	for (k = 0; k < deltas; k++) {
		/* Spread the characters evenly over the deltas. */
		want = (chars * (size_t)(k + 1)) / (size_t)deltas -
		    (chars * (size_t)k) / (size_t)deltas;
		n = utf8_prefix(g->text + off, want);
		o = item_ref(event("response.output_text.delta", &g->seq), g->msg_id);
		json_object_object_add(o, "delta",
		    json_object_new_string_len(g->text + off, (int)n));
		off += n;
		add_frame(plan, o, sim->o.delta_delay_ms);
		if (stop_after >= 0 && k + 1 >= stop_after)
			return;
	}
	o = item_ref(event("response.output_text.done", &g->seq), g->msg_id);
	json_object_object_add(o, "text", json_object_new_string(g->text));
	add_frame(plan, o, 0);
	o = item_ref(event("response.content_part.done", &g->seq), g->msg_id);
	json_object_object_add(o, "part", text_part(g->text));
	add_frame(plan, o, 0);
	o = event("response.output_item.done", &g->seq);
	json_object_object_add(o, "output_index", json_object_new_int(0));
	json_object_object_add(o, "item", message_item(g->msg_id, "completed", g->text));
	add_frame(plan, o, 0);
}

static void
completed_frame(struct plan *plan, struct gen *g, int with_output)
{
	struct json_object *o, *r, *out;

	o = event("response.completed", &g->seq);
	r = response_obj(g->resp_id, g->model, "completed", g->created);
	if (with_output) {
		json_object_object_get_ex(r, "output", &out);
		json_object_array_add(out, message_item(g->msg_id, "completed", g->text));
	}
	json_object_object_add(r, "usage",
	    usage_obj(g->input_tokens, g->cached_tokens, g->output_tokens));
	json_object_object_add(o, "response", r);
	add_frame(plan, o, 0);
}

static void
failed_frame(struct plan *plan, struct gen *g)
{
	struct json_object *o, *r, *e;

	o = event("response.failed", &g->seq);
	r = response_obj(g->resp_id, g->model, "failed", g->created);
	e = json_object_new_object();
	json_object_object_add(e, "code", json_object_new_string("server_error"));
	json_object_object_add(e, "message", json_object_new_string(
	    "The server had an error while processing your request. Sorry about that!"));
	json_object_object_add(r, "error", e);
	json_object_object_add(r, "usage", NULL);
	json_object_object_add(o, "response", r);
	add_frame(plan, o, 0);
}

static void
usage_limit_frame(struct plan *plan)
{
	struct json_object *o, *e, *h;
	long now = (long)time(NULL);
	char buf[32];

	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("error"));
	json_object_object_add(o, "status", json_object_new_int(429));
	e = json_object_new_object();
	json_object_object_add(e, "type", json_object_new_string("usage_limit_reached"));
	json_object_object_add(e, "message",
	    json_object_new_string("The usage limit has been reached"));
	json_object_object_add(e, "plan_type", json_object_new_string("plus"));
	json_object_object_add(e, "resets_at", json_object_new_int64(now + 3600));
	json_object_object_add(e, "resets_in_seconds", json_object_new_int(3600));
	json_object_object_add(o, "error", e);
	h = json_object_new_object();
	json_object_object_add(h, "x-codex-primary-used-percent",
	    json_object_new_string("100.0"));
	json_object_object_add(h, "x-codex-primary-window-minutes",
	    json_object_new_string("300"));
	snprintf(buf, sizeof(buf), "%ld", now + 3600);
	json_object_object_add(h, "x-codex-primary-reset-at", json_object_new_string(buf));
	json_object_object_add(h, "x-codex-secondary-used-percent",
	    json_object_new_string("41.0"));
	json_object_object_add(h, "x-codex-secondary-window-minutes",
	    json_object_new_string("10080"));
	json_object_object_add(o, "headers", h);
	add_frame(plan, o, 0);
}

/* Picks the fault for a request: marker, then run-time queue, then global.
 * Returns -1 for a malformed marker. */
static int
choose_fault(struct sim *sim, const char *user_text, struct sim_fault *f)
{
	int m = fault_from_marker(user_text, f);

	if (m != 0)
		return m < 0 ? -1 : 0;
	if (fault_queue_take(&sim->faults, f))
		return 0;
	*f = sim->o.fault;
	if (f->kind == FAULT_REJECT_HANDSHAKE)
		f->kind = FAULT_NONE;
	return 0;
}

static void
commit(struct sim_session *s, const struct gen *g, struct sbuf *prompt,
    struct json_object *item)
{
	/* The continuation base is this prompt followed by its output. */
	if (item != NULL)
		prompt_add_item(prompt, item);
	free(s->last_prompt);
	s->last_prompt = sbuf_take(prompt, &s->last_prompt_len);
	strlcpy_safe(s->last_resp_id, g->resp_id, sizeof(s->last_resp_id));
}

void
sim_respond(struct sim *sim, struct sim_session *s, const char *msg,
    size_t len, struct plan *plan)
{
	struct json_object *req = NULL, *input = NULL, *rec, *item = NULL;
	struct cache_probe probe = { 0 };
	struct sim_fault fault = { FAULT_NONE, 0 };
	struct sbuf prompt;
	struct gen g;
	const char *type, *prev, *pck;
	char *user_text = NULL, err[128], faultname[48], msgbuf[256];
	int generate, store = 1, first_delay = 0;
	int64_t prompt_toks;

	memset(plan, 0, sizeof(*plan));
	memset(&g, 0, sizeof(g));
	sbuf_init(&prompt, sim->o.max_message * 2 + (1u << 20));

	req = json_parse_buf(msg, len, err, sizeof(err));
	if (req == NULL || !json_object_is_type(req, json_type_object)) {
		snprintf(msgbuf, sizeof(msgbuf), "Invalid JSON in message: %s",
		    req == NULL ? err : "not an object");
		error_plan(plan, 400, "invalid_request_error", "invalid_json", msgbuf, NULL);
		plan->urgent = 1;
		record_error(sim, s, NULL, "invalid_json");
		goto out;
	}
	type = json_get_str(req, "type");
	if (type == NULL || strcmp(type, "response.create") != 0) {
		snprintf(msgbuf, sizeof(msgbuf), "Unsupported message type '%.64s'.",
		    type ? type : "(none)");
		error_plan(plan, 400, "invalid_request_error", "unsupported_message_type",
		    msgbuf, "type");
		plan->urgent = 1;
		record_error(sim, s, req, "unsupported_message_type");
		goto out;
	}
	if (s->busy) {
		error_plan(plan, 400, "invalid_request_error",
		    "conversation_already_has_active_response",
		    "Conversation already has an active response in progress. "
		    "Wait until the response is finished before creating a new one.",
		    NULL);
		plan->urgent = 1;
		record_error(sim, s, req, "conversation_already_has_active_response");
		goto out;
	}
	if (sim->o.max_conn_age > 0 &&
	    now_mono_usec() - s->opened >= sim->o.max_conn_age * USEC_PER_SEC) {
		error_plan(plan, 400, "invalid_request_error",
		    "websocket_connection_limit_reached",
		    "Responses websocket connection limit reached (60 minutes). "
		    "Create a new websocket connection to continue.", NULL);
		record_error(sim, s, req, "websocket_connection_limit_reached");
		goto out;
	}

	prev = json_get_str(req, "previous_response_id");
	if (prev != NULL) {
		if (s->last_resp_id[0] == '\0' || strcmp(prev, s->last_resp_id) != 0) {
			snprintf(msgbuf, sizeof(msgbuf),
			    "Previous response with id '%.80s' not found.", prev);
			error_plan(plan, 400, "invalid_request_error",
			    "previous_response_not_found", msgbuf,
			    "previous_response_id");
			record_error(sim, s, req, "previous_response_not_found");
			goto out;
		}
		sbuf_add(&prompt, s->last_prompt, s->last_prompt_len);
	} else
		prompt_add_header(&prompt, req);
	json_object_object_get_ex(req, "input", &input);
	if (input != NULL && !json_object_is_type(input, json_type_array) &&
	    !json_object_is_type(input, json_type_string)) {
		error_plan(plan, 400, "invalid_request_error", "invalid_type",
		    "Invalid type for 'input': expected an array or a string.", "input");
		record_error(sim, s, req, "invalid_type");
		goto out;
	}
	if (prompt_add_input(&prompt, input) < 0 || prompt.overflow) {
		error_plan(plan, 400, "invalid_request_error", "context_length_exceeded",
		    "The prompt is larger than this simulator accepts.", "input");
		record_error(sim, s, req, "context_length_exceeded");
		goto out;
	}
	user_text = prompt_last_user_text(input);
	if (choose_fault(sim, user_text, &fault) < 0) {
		error_plan(plan, 400, "invalid_request_error", "invalid_sim_marker",
		    "Unknown fault in [[sim:...]] marker.", "input");
		record_error(sim, s, req, "invalid_sim_marker");
		goto out;
	}

	generate = json_get_bool(req, "generate", true);
	pck = json_get_str(req, "prompt_cache_key");
	g.model = json_get_str(req, "model");
	if (g.model == NULL)
		g.model = SIM_DEFAULT_MODEL;
	g.created = (long)time(NULL);
	new_ids(sim, &g);
	if (cache_probe_init(&probe, s->account, pck, prompt.buf, prompt.len) < 0) {
		error_plan(plan, 500, "server_error", "server_error",
		    "Out of memory.", NULL);
		record_error(sim, s, req, "server_error");
		goto out;
	}
	prompt_toks = probe.tokens;
	g.cached_tokens = prompt_cache_lookup(sim->backends[s->backend], &probe);
	g.input_tokens = prompt_toks;
	if (generate) {
		g.text = reply_text(user_text);
		if (sim->o.reply_bytes > strlen(g.text)) {
			/* big replies, for the relay's buffer limits */
			size_t have = strlen(g.text);
			char *big = realloc(g.text, sim->o.reply_bytes + 1);
			if (big != NULL) {
				memset(big + have, 'z', sim->o.reply_bytes - have);
				big[sim->o.reply_bytes] = '\0';
				g.text = big;
			}
		}
		g.output_tokens = prompt_tokens(strlen(g.text));
		if (g.output_tokens < 1)
			g.output_tokens = 1;
	} else {
		/* A prewarm bills nothing but still warms the cache. */
		g.input_tokens = g.cached_tokens = g.output_tokens = 0;
	}

	switch (fault.kind) {
	case FAULT_CLOSE_BEFORE_FIRST:
		add_close(plan, 1011, 0);
		store = 0;
		break;
	case FAULT_RESET:
		add_step(plan, STEP_RESET, 0);
		store = 0;
		break;
	case FAULT_USAGE_LIMIT:
		usage_limit_frame(plan);
		add_step(plan, STEP_IDLE, 0);
		store = 0;
		break;
	case FAULT_TOKEN_EXPIRED:
		error_plan(plan, 401, "invalid_request_error", "token_expired",
		    "Provided authentication token is expired. Please try signing in again.",
		    NULL);
		add_step(plan, STEP_IDLE, 0);
		store = 0;
		break;
	case FAULT_OVERLOADED:
		error_plan(plan, 503, "service_unavailable_error", "server_is_overloaded",
		    "Our servers are currently overloaded. Please try again later.", NULL);
		add_step(plan, STEP_IDLE, 0);
		store = 0;
		break;
	case FAULT_SERVER_ERROR:
		created_frames(plan, &g, 0);
		failed_frame(plan, &g);
		add_step(plan, STEP_IDLE, 0);
		store = 0;
		break;
	case FAULT_STALL:
		add_step(plan, STEP_STALL, 0);
		store = 0;
		break;
	case FAULT_CLOSE_MID_STREAM:
		created_frames(plan, &g, 0);
		if (generate)
			output_frames(sim, plan, &g, 2);
		add_close(plan, 1011, 0);
		break;
	case FAULT_SLOW_START:
		first_delay = fault.arg;
		/* FALLTHROUGH */
	case FAULT_CLOSE_IDLE:
	case FAULT_NONE:
	default:
		created_frames(plan, &g, first_delay);
		if (generate) {
			output_frames(sim, plan, &g, -1);
			item = message_item(g.msg_id, "completed", g.text);
		}
		completed_frame(plan, &g, generate);
		add_step(plan, STEP_IDLE, 0);
		if (fault.kind == FAULT_CLOSE_IDLE)
			add_close(plan, 1000, SIM_CLOSE_IDLE_DELAY_MS);
		break;
	}
	s->busy = 1;

	if (store)
		prompt_cache_store(sim->backends[s->backend], &probe);
	rec = new_record(s, req);
	json_object_object_add(rec, "input_tokens", json_object_new_int64(g.input_tokens));
	json_object_object_add(rec, "cached_tokens", json_object_new_int64(g.cached_tokens));
	json_object_object_add(rec, "prompt_tokens", json_object_new_int64(prompt_toks));
	fault_format(&fault, faultname, sizeof(faultname));
	if (fault.kind != FAULT_NONE)
		json_object_object_add(rec, "fault", json_object_new_string(faultname));
	json_object_object_add(rec, "response_id", json_object_new_string(g.resp_id));
	records_add_request(&sim->rec, rec);
	log_info("conn=%llu backend=%d account=%s request %s%s input=%lld "
	    "cached=%lld prompt=%lld fault=%s",
	    (unsigned long long)s->conn_id, s->backend, s->account, g.resp_id,
	    generate ? "" : " (prewarm)", (long long)g.input_tokens,
	    (long long)g.cached_tokens, (long long)prompt_toks, faultname);

	/* Only a response that will complete can be continued. */
	if (fault.kind == FAULT_NONE || fault.kind == FAULT_SLOW_START ||
	    fault.kind == FAULT_CLOSE_IDLE)
		commit(s, &g, &prompt, item);
out:
	json_object_put(item);
	cache_probe_free(&probe);
	sbuf_free(&prompt);
	free(user_text);
	free(g.text);
	json_object_put(req);
}
