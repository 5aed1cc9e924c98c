/*
 * The Responses protocol as the simulator speaks it: one client message
 * in, a plan of frames (and closes, delays, faults) out.
 *
 * Order of checks for a response.create: busy connection, connection age,
 * previous_response_id, input shape, then the fault, then the response.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
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
new_record(const struct sim_session *s, struct json_object *req, size_t bytes)
{
	struct json_object *r = json_object_new_object();
	const char *pck = req ? json_get_str(req, "prompt_cache_key") : NULL;
	const char *prev = req ? json_get_str(req, "previous_response_id") : NULL;
	const char *instr;
	struct json_object *input;

	json_object_object_add(r, "conn", json_object_new_int64((int64_t)s->conn_id));
	json_object_object_add(r, "backend", json_object_new_int(s->backend));
	json_object_object_add(r, "account", json_object_new_string(s->account));
	json_object_object_add(r, "model", jstr_or_null(req ?
	    json_get_str(req, "model") : NULL));
	json_object_object_add(r, "prompt_cache_key", jstr_or_null(pck));
	json_object_object_add(r, "previous_response_id", jstr_or_null(prev));
	json_object_object_add(r, "generate", json_object_new_boolean(
	    req ? json_get_bool(req, "generate", true) : true));
	/* what went upstream: the message's size, its input items, and the
	 * share of it that is instructions */
	json_object_object_add(r, "bytes", json_object_new_int64((int64_t)bytes));
	json_object_object_add(r, "input_items", json_object_new_int(
	    req && json_object_object_get_ex(req, "input", &input) &&
	    json_object_is_type(input, json_type_array) ?
	    (int)json_object_array_length(input) : -1));
	json_object_object_add(r, "instructions_bytes", json_object_new_int64(
	    req && (instr = json_get_str(req, "instructions")) != NULL ?
	    (int64_t)strlen(instr) : 0));
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
    size_t bytes, const char *code)
{
	struct json_object *r = new_record(s, req, bytes);

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
	/* like the backend: a window's reset_at is fixed until it resets */
	static long window_start;
	long now;

	if (window_start == 0)
		window_start = (long)time(NULL);
	now = window_start;

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
usage_obj(int64_t input, int64_t cached, int64_t output, int64_t reasoning)
{
	struct json_object *u = json_object_new_object(), *d;

	json_object_object_add(u, "input_tokens", json_object_new_int64(input));
	d = json_object_new_object();
	json_object_object_add(d, "cached_tokens", json_object_new_int64(cached));
	json_object_object_add(u, "input_tokens_details", d);
	json_object_object_add(u, "output_tokens", json_object_new_int64(output));
	d = json_object_new_object();
	json_object_object_add(d, "reasoning_tokens", json_object_new_int64(reasoning));
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

/* A function call; arguments "" while in progress. */
static struct json_object *
function_call_item(const char *id, const char *call_id, const char *name,
    const char *arguments, const char *status)
{
	struct json_object *it = json_object_new_object();

	json_object_object_add(it, "type", json_object_new_string("function_call"));
	json_object_object_add(it, "id", json_object_new_string(id));
	json_object_object_add(it, "call_id", json_object_new_string(call_id));
	json_object_object_add(it, "name", json_object_new_string(name));
	json_object_object_add(it, "arguments", json_object_new_string(arguments));
	json_object_object_add(it, "status", json_object_new_string(status));
	return it;
}

static struct json_object *
summary_part(const char *text)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "type", json_object_new_string("summary_text"));
	json_object_object_add(p, "text", json_object_new_string(text));
	return p;
}

/* A reasoning item; summary NULL while in progress. */
static struct json_object *
reasoning_item(const char *id, const char *summary)
{
	struct json_object *it = json_object_new_object(), *sum;

	json_object_object_add(it, "type", json_object_new_string("reasoning"));
	json_object_object_add(it, "id", json_object_new_string(id));
	sum = json_object_new_array();
	if (summary != NULL)
		json_object_array_add(sum, summary_part(summary));
	json_object_object_add(it, "summary", sum);
	if (summary != NULL)
		json_object_object_add(it, "encrypted_content",
		    json_object_new_string("sim-encrypted-reasoning"));
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

/* prefix + the first 40 characters of the last user text, one line. */
static char *
quote_text(const char *prefix, const char *user_text)
{
	struct sbuf sb;
	const char *u = user_text ? user_text : "";
	size_t i, n = utf8_prefix(u, SIM_REPLY_QUOTE_CHARS);

	sbuf_init(&sb, 4096);
	sbuf_adds(&sb, prefix);
	/* Control characters would make an ugly reply; keep it one line. */
	for (i = 0; i < n; i++)
		sbuf_addc(&sb, (unsigned char)u[i] < 0x20 ? ' ' : u[i]);
	return sbuf_take(&sb, NULL);
}

/* "sim reply to: " + the first 40 characters of the last user text. */
static char *
reply_text(const char *user_text)
{
	return quote_text(SIM_REPLY_PREFIX, user_text);
}

/* {"input":"<the first 40 characters of the last user text>"} */
static char *
call_arguments(const char *user_text)
{
	struct json_object *o = json_object_new_object();
	char *q = quote_text("", user_text), *s;

	json_object_object_add(o, "input", json_object_new_string(q));
	s = xstrdup(json_object_to_json_string_ext(o, JSON_FLAGS));
	json_object_put(o);
	free(q);
	return s;
}

struct gen {
	const char	*model;
	char		 resp_id[64];
	char		 msg_id[64];
	char		 fc_id[64];
	char		 call_id[64];
	char		 rs_id[64];
	long		 created;
	int64_t		 input_tokens;
	int64_t		 cached_tokens;
	int64_t		 output_tokens;
	int64_t		 reasoning_tokens;
	char		*text;		/* the message, or NULL for a function call */
	const char	*fc_name;	/* the function call's name, or NULL */
	char		*arguments;	/* its arguments */
	char		*summary;	/* reasoning summary, or NULL */
	int		 seq;
	int		 deltas;	/* per streamed item */
	int		 delta_ms;	/* before each delta */
	int		 stop_after;	/* deltas before a mid-stream cut; -1 none */
	int		 deltas_sent;
	struct json_object *items;	/* the completed output items */
};

static void
new_ids(struct sim *sim, struct gen *g)
{
	uint64_t n = ++sim->next_resp;
	unsigned long long run = (unsigned long long)sim->run_id;

	snprintf(g->resp_id, sizeof(g->resp_id), "resp_%016llx%08llx", run,
	    (unsigned long long)n);
	snprintf(g->msg_id, sizeof(g->msg_id), "msg_%016llx%08llx", run,
	    (unsigned long long)n);
	snprintf(g->fc_id, sizeof(g->fc_id), "fc_%016llx%08llx", run,
	    (unsigned long long)n);
	snprintf(g->call_id, sizeof(g->call_id), "call_%016llx%08llx", run,
	    (unsigned long long)n);
	snprintf(g->rs_id, sizeof(g->rs_id), "rs_%016llx%08llx", run,
	    (unsigned long long)n);
}

static void
created_frames(struct plan *plan, struct gen *g, int first_delay_ms, int sse)
{
	struct json_object *o;

	/* Over SSE the rate limits travel as response headers instead. */
	if (!sse) {
		rate_limits_frame(plan, first_delay_ms);
		first_delay_ms = 0;
	}
	o = event("response.created", &g->seq);
	json_object_object_add(o, "response",
	    response_obj(g->resp_id, g->model, "in_progress", g->created));
	add_frame(plan, o, first_delay_ms);
}

/* An event about part of an output item: item_id, output_index and, if
 * index_key, that index (content_index, summary_index) = 0. */
static struct json_object *
ref_event(struct gen *g, const char *type, const char *item_id, int out_index,
    const char *index_key)
{
	struct json_object *o = event(type, &g->seq);

	json_object_object_add(o, "item_id", json_object_new_string(item_id));
	json_object_object_add(o, "output_index", json_object_new_int(out_index));
	if (index_key != NULL)
		json_object_object_add(o, index_key, json_object_new_int(0));
	return o;
}

static void
item_event(struct plan *plan, struct gen *g, const char *type, int out_index,
    struct json_object *item)
{
	struct json_object *o = event(type, &g->seq);

	json_object_object_add(o, "output_index", json_object_new_int(out_index));
	json_object_object_add(o, "item", item);
	add_frame(plan, o, 0);
}

/* g->deltas delta events that spread text evenly, each after the pacing
 * delay.  Returns 1 when a mid-stream cut stops the response here. */
static int
delta_frames(struct plan *plan, struct gen *g, const char *text, const char *type,
    const char *item_id, int out_index, const char *index_key)
{
	struct json_object *o;
	size_t chars = utf8_chars(text), off = 0, want, n;
	int k;

	for (k = 0; k < g->deltas; k++) {
		want = (chars * (size_t)(k + 1)) / (size_t)g->deltas -
		    (chars * (size_t)k) / (size_t)g->deltas;
		n = utf8_prefix(text + off, want);
		o = ref_event(g, type, item_id, out_index, index_key);
		json_object_object_add(o, "delta",
		    json_object_new_string_len(text + off, (int)n));
		off += n;
		add_frame(plan, o, g->delta_ms);
		if (g->stop_after >= 0 && ++g->deltas_sent >= g->stop_after)
			return 1;
	}
	return 0;
}

static int
reasoning_frames(struct plan *plan, struct gen *g, int idx)
{
	struct json_object *o;

	item_event(plan, g, "response.output_item.added", idx,
	    reasoning_item(g->rs_id, NULL));
	o = ref_event(g, "response.reasoning_summary_part.added", g->rs_id, idx,
	    "summary_index");
	json_object_object_add(o, "part", summary_part(""));
	add_frame(plan, o, 0);
	if (delta_frames(plan, g, g->summary, "response.reasoning_summary_text.delta",
	    g->rs_id, idx, "summary_index"))
		return 1;
	o = ref_event(g, "response.reasoning_summary_text.done", g->rs_id, idx,
	    "summary_index");
	json_object_object_add(o, "text", json_object_new_string(g->summary));
	add_frame(plan, o, 0);
	o = ref_event(g, "response.reasoning_summary_part.done", g->rs_id, idx,
	    "summary_index");
	json_object_object_add(o, "part", summary_part(g->summary));
	add_frame(plan, o, 0);
	item_event(plan, g, "response.output_item.done", idx,
	    reasoning_item(g->rs_id, g->summary));
	json_object_array_add(g->items, reasoning_item(g->rs_id, g->summary));
	return 0;
}

static int
function_call_frames(struct plan *plan, struct gen *g, int idx)
{
	struct json_object *o;

	item_event(plan, g, "response.output_item.added", idx,
	    function_call_item(g->fc_id, g->call_id, g->fc_name, "", "in_progress"));
	if (delta_frames(plan, g, g->arguments,
	    "response.function_call_arguments.delta", g->fc_id, idx, NULL))
		return 1;
	o = ref_event(g, "response.function_call_arguments.done", g->fc_id, idx, NULL);
	json_object_object_add(o, "name", json_object_new_string(g->fc_name));
	json_object_object_add(o, "arguments", json_object_new_string(g->arguments));
	add_frame(plan, o, 0);
	item_event(plan, g, "response.output_item.done", idx, function_call_item(
	    g->fc_id, g->call_id, g->fc_name, g->arguments, "completed"));
	json_object_array_add(g->items, function_call_item(g->fc_id, g->call_id,
	    g->fc_name, g->arguments, "completed"));
	return 0;
}

static int
message_frames(struct plan *plan, struct gen *g, int idx)
{
	struct json_object *o;

	item_event(plan, g, "response.output_item.added", idx,
	    message_item(g->msg_id, "in_progress", NULL));
	o = ref_event(g, "response.content_part.added", g->msg_id, idx, "content_index");
	json_object_object_add(o, "part", text_part(""));
	add_frame(plan, o, 0);
	if (delta_frames(plan, g, g->text, "response.output_text.delta", g->msg_id,
	    idx, "content_index"))
		return 1;
	o = ref_event(g, "response.output_text.done", g->msg_id, idx, "content_index");
	json_object_object_add(o, "text", json_object_new_string(g->text));
	add_frame(plan, o, 0);
	o = ref_event(g, "response.content_part.done", g->msg_id, idx, "content_index");
	json_object_object_add(o, "part", text_part(g->text));
	add_frame(plan, o, 0);
	item_event(plan, g, "response.output_item.done", idx,
	    message_item(g->msg_id, "completed", g->text));
	json_object_array_add(g->items, message_item(g->msg_id, "completed", g->text));
	return 0;
}

/* in_progress, then each output item's events; stops early (returns 1)
 * after g->stop_after deltas. */
static int
output_frames(struct plan *plan, struct gen *g)
{
	struct json_object *o;
	int idx = 0;

	o = event("response.in_progress", &g->seq);
	json_object_object_add(o, "response",
	    response_obj(g->resp_id, g->model, "in_progress", g->created));
	add_frame(plan, o, 0);
	if (g->summary != NULL && reasoning_frames(plan, g, idx++))
		return 1;
	if (g->fc_name != NULL)
		return function_call_frames(plan, g, idx);
	return message_frames(plan, g, idx);
}

static void
completed_frame(struct plan *plan, struct gen *g)
{
	struct json_object *o, *r, *out;
	size_t i;

	o = event("response.completed", &g->seq);
	r = response_obj(g->resp_id, g->model, "completed", g->created);
	json_object_object_get_ex(r, "output", &out);
	for (i = 0; i < json_object_array_length(g->items); i++)
		json_object_array_add(out,
		    json_object_get(json_object_array_get_idx(g->items, i)));
	json_object_object_add(r, "usage", usage_obj(g->input_tokens,
	    g->cached_tokens, g->output_tokens, g->reasoning_tokens));
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

/* What the gateway answers on a connection past its age limit. */
static void
conn_limit_plan(struct plan *plan)
{
	error_plan(plan, 400, "invalid_request_error",
	    "websocket_connection_limit_reached",
	    "Responses websocket connection limit reached (60 minutes). "
	    "Create a new websocket connection to continue.", NULL);
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
commit(struct sim_session *s, const struct gen *g, struct sbuf *prompt)
{
	size_t i, n = g->items ? json_object_array_length(g->items) : 0;

	/* The continuation base is this prompt followed by its output. */
	for (i = 0; i < n; i++)
		prompt_add_item(prompt, json_object_array_get_idx(g->items, i));
	free(s->last_prompt);
	s->last_prompt = sbuf_take(prompt, &s->last_prompt_len);
	strlcpy_safe(s->last_resp_id, g->resp_id, sizeof(s->last_resp_id));
}

/* ---- knobs ----------------------------------------------------------- */

void
sim_knobs_init(struct sim_knobs *k)
{
	memset(k, 0, sizeof(*k));
	k->first_event_ms = k->delta_delay_ms = k->deltas = k->reasoning = -1;
}

static int
valid_name(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > SIM_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' ||
		    s[i] == '.'))
			return 0;
	return 1;
}

static int
knob_num(const char *v, long min, long max, int *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
		return -1;
	*out = (int)n;
	return 0;
}

int
sim_knob_set(struct sim_knobs *k, const char *name, const char *value)
{
	if (value == NULL)
		return -1;
	if (strcmp(name, "first_event_ms") == 0)
		return knob_num(value, 0, SIM_MAX_DELAY_MS, &k->first_event_ms);
	if (strcmp(name, "delta_delay_ms") == 0)
		return knob_num(value, 0, SIM_MAX_DELAY_MS, &k->delta_delay_ms);
	if (strcmp(name, "deltas") == 0)
		return knob_num(value, 1, SIM_MAX_DELTAS, &k->deltas);
	if (strcmp(name, "reasoning") == 0) {
		if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
			k->reasoning = 1;
		else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
			k->reasoning = 0;
		else
			return -1;
		return 0;
	}
	if (strcmp(name, "function_call") == 0) {
		if (!valid_name(value, strlen(value)))
			return -1;
		strlcpy_safe(k->function_call, value, sizeof(k->function_call));
		return 0;
	}
	return -1;
}

/* The body's "sim" object, then the outside knobs over it. */
static int
merge_knobs(struct json_object *req, const struct sim_knobs *outside,
    struct sim_knobs *k, char *bad, size_t badlen)
{
	struct json_object *o = json_get_obj(req, "sim");

	sim_knobs_init(k);
	if (json_object_object_get_ex(req, "sim", NULL) && o == NULL) {
		snprintf(bad, badlen, "sim");
		return -1;
	}
	if (o != NULL) {
		json_object_object_foreach(o, key, val) {
			if (json_object_is_type(val, json_type_object) ||
			    json_object_is_type(val, json_type_array) ||
			    sim_knob_set(k, key, json_object_get_string(val)) < 0) {
				snprintf(bad, badlen, "sim.%.60s", key);
				return -1;
			}
		}
	}
	if (outside == NULL)
		return 0;
	if (outside->first_event_ms >= 0)
		k->first_event_ms = outside->first_event_ms;
	if (outside->delta_delay_ms >= 0)
		k->delta_delay_ms = outside->delta_delay_ms;
	if (outside->deltas >= 0)
		k->deltas = outside->deltas;
	if (outside->reasoning >= 0)
		k->reasoning = outside->reasoning;
	if (outside->function_call[0] != '\0')
		strlcpy_safe(k->function_call, outside->function_call,
		    sizeof(k->function_call));
	return 0;
}

/* A function call asked for by a knob, or by "CALL:NAME" in the last user
 * text of a request that has tools and does not end with a function call's
 * output.  NULL: answer with a message. */
static const char *
pick_function_call(struct json_object *req, const char *user_text,
    struct sim_knobs *k)
{
	struct json_object *tools = json_get_array(req, "tools");
	struct json_object *input = json_get_array(req, "input"), *last;
	const char *p, *type;
	size_t n;

	if (k->function_call[0] != '\0')
		return k->function_call;
	/* The tool's result is in: the model answers it, as a real one would,
	 * so a client resending the CALL: text does not loop. */
	if (input != NULL && (n = json_object_array_length(input)) > 0 &&
	    (last = json_object_array_get_idx(input, n - 1)) != NULL &&
	    (type = json_get_str(last, "type")) != NULL &&
	    strcmp(type, "function_call_output") == 0)
		return NULL;
	if (tools == NULL || json_object_array_length(tools) == 0 ||
	    user_text == NULL || (p = strstr(user_text, "CALL:")) == NULL)
		return NULL;
	p += strlen("CALL:");
	for (n = 0; p[n] != '\0' && n <= SIM_NAME_MAX; n++)
		if (!(isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == '-' ||
		    p[n] == '.'))
			break;
	/* A trailing dot ends the sentence, not the name. */
	while (n > 0 && p[n - 1] == '.')
		n--;
	if (!valid_name(p, n))
		return NULL;
	memcpy(k->function_call, p, n);
	k->function_call[n] = '\0';
	return k->function_call;
}

size_t
sim_stamp_suffix(const char *data, size_t len, char *buf, size_t size)
{
	int n;

	static const char rate_limits[] = "{\"type\":\"codex.rate_limits\"";

	if (len < 2 || data[0] != '{' || data[len - 1] != '}')
		return 0;
	/* the backend sends the same rate-limits frame until a window moves
	 * (codexpoold skips parsing a repeat): no stamp there */
	if (len >= sizeof(rate_limits) - 1 &&
	    memcmp(data, rate_limits, sizeof(rate_limits) - 1) == 0)
		return 0;
	n = snprintf(buf, size, "%s\"sim_sent_us\":%lld}", len > 2 ? "," : "",
	    (long long)now_wall_usec());
	return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* ---- one request ----------------------------------------------------- */

void
sim_respond(struct sim *sim, struct sim_session *s, const char *msg,
    size_t len, struct plan *plan)
{
	sim_respond_knobs(sim, s, msg, len, NULL, plan);
}

void
sim_respond_knobs(struct sim *sim, struct sim_session *s, const char *msg,
    size_t len, const struct sim_knobs *outside, struct plan *plan)
{
	struct json_object *req = NULL, *input = NULL, *rec;
	struct cache_probe probe = { 0 };
	struct sim_fault fault = { FAULT_NONE, 0 };
	struct sim_knobs knobs;
	struct sbuf prompt;
	struct gen g;
	const char *type, *prev, *pck;
	char *user_text = NULL, err[128], faultname[48], msgbuf[256];
	int generate, store = 1, first_delay;
	int64_t prompt_toks;

	memset(plan, 0, sizeof(*plan));
	memset(&g, 0, sizeof(g));
	sbuf_init(&prompt, sim->o.max_message * 2 + (1u << 20));
	sim->rec.request_bytes_total += len;

	req = json_parse_buf(msg, len, err, sizeof(err));
	if (req == NULL || !json_object_is_type(req, json_type_object)) {
		snprintf(msgbuf, sizeof(msgbuf), "Invalid JSON in message: %s",
		    req == NULL ? err : "not an object");
		error_plan(plan, 400, "invalid_request_error", "invalid_json", msgbuf, NULL);
		plan->urgent = 1;
		record_error(sim, s, NULL, len, "invalid_json");
		goto out;
	}
	type = json_get_str(req, "type");
	/* An HTTP body has no "type"; a WebSocket message must have it. */
	if ((type == NULL && !s->sse) ||
	    (type != NULL && strcmp(type, "response.create") != 0)) {
		snprintf(msgbuf, sizeof(msgbuf), "Unsupported message type '%.64s'.",
		    type ? type : "(none)");
		error_plan(plan, 400, "invalid_request_error", "unsupported_message_type",
		    msgbuf, "type");
		plan->urgent = 1;
		record_error(sim, s, req, len, "unsupported_message_type");
		goto out;
	}
	if (s->sse && !json_get_bool(req, "stream", false)) {
		error_plan(plan, 400, "invalid_request_error", "invalid_value",
		    "Stream must be set to true", "stream");
		record_error(sim, s, req, len, "invalid_value");
		goto out;
	}
	if (merge_knobs(req, outside, &knobs, err, sizeof(err)) < 0) {
		snprintf(msgbuf, sizeof(msgbuf), "Invalid simulator option '%s' (see "
		    "codexpool-sim(1)).", err);
		error_plan(plan, 400, "invalid_request_error", "invalid_sim_option",
		    msgbuf, err);
		plan->urgent = 1;
		record_error(sim, s, req, len, "invalid_sim_option");
		goto out;
	}
	if (s->busy) {
		error_plan(plan, 400, "invalid_request_error",
		    "conversation_already_has_active_response",
		    "Conversation already has an active response in progress. "
		    "Wait until the response is finished before creating a new one.",
		    NULL);
		plan->urgent = 1;
		record_error(sim, s, req, len, "conversation_already_has_active_response");
		goto out;
	}
	if (sim->o.max_conn_age > 0 &&
	    now_mono_usec() - s->opened >= sim->o.max_conn_age * USEC_PER_SEC) {
		conn_limit_plan(plan);
		record_error(sim, s, req, len, "websocket_connection_limit_reached");
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
			record_error(sim, s, req, len, "previous_response_not_found");
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
		record_error(sim, s, req, len, "invalid_type");
		goto out;
	}
	if (prompt_add_input(&prompt, input) < 0 || prompt.overflow) {
		error_plan(plan, 400, "invalid_request_error", "context_length_exceeded",
		    "The prompt is larger than this simulator accepts.", "input");
		record_error(sim, s, req, len, "context_length_exceeded");
		goto out;
	}
	user_text = prompt_last_user_text(input);
	if (choose_fault(sim, user_text, &fault) < 0) {
		error_plan(plan, 400, "invalid_request_error", "invalid_sim_marker",
		    "Unknown fault in [[sim:...]] marker.", "input");
		record_error(sim, s, req, len, "invalid_sim_marker");
		goto out;
	}

	generate = json_get_bool(req, "generate", true);
	pck = json_get_str(req, "prompt_cache_key");
	g.model = json_get_str(req, "model");
	if (g.model == NULL)
		g.model = SIM_DEFAULT_MODEL;
	g.created = (long)time(NULL);
	g.items = json_object_new_array();
	g.deltas = knobs.deltas >= 0 ? knobs.deltas : sim->o.deltas;
	g.delta_ms = knobs.delta_delay_ms >= 0 ? knobs.delta_delay_ms :
	    sim->o.delta_delay_ms;
	g.stop_after = -1;
	first_delay = knobs.first_event_ms >= 0 ? knobs.first_event_ms :
	    sim->o.first_event_ms;
	new_ids(sim, &g);
	if (cache_probe_init(&probe, s->account, pck, prompt.buf, prompt.len) < 0) {
		error_plan(plan, 500, "server_error", "server_error",
		    "Out of memory.", NULL);
		record_error(sim, s, req, len, "server_error");
		goto out;
	}
	prompt_toks = probe.tokens;
	g.cached_tokens = prompt_cache_lookup(sim->backends[s->backend], &probe);
	g.input_tokens = prompt_toks;
	if (generate) {
		g.fc_name = pick_function_call(req, user_text, &knobs);
		if (g.fc_name != NULL) {
			g.arguments = call_arguments(user_text);
			g.output_tokens = prompt_tokens(strlen(g.arguments));
		} else {
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
		}
		if (knobs.reasoning > 0) {
			g.summary = quote_text("Thinking about: ", user_text);
			g.reasoning_tokens = prompt_tokens(strlen(g.summary));
			g.output_tokens += g.reasoning_tokens;
		}
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
		created_frames(plan, &g, first_delay, s->sse);
		failed_frame(plan, &g);
		add_step(plan, STEP_IDLE, 0);
		store = 0;
		break;
	case FAULT_CONN_LIMIT:
		conn_limit_plan(plan);
		add_step(plan, STEP_IDLE, 0);
		store = 0;
		break;
	case FAULT_STALL:
		add_step(plan, STEP_STALL, 0);
		store = 0;
		break;
	case FAULT_CLOSE_MID_STREAM:
		created_frames(plan, &g, first_delay, s->sse);
		if (generate) {
			g.stop_after = 2;
			output_frames(plan, &g);
		}
		add_close(plan, 1011, 0);
		break;
	case FAULT_SLOW_START:
		first_delay = fault.arg;
		/* FALLTHROUGH */
	case FAULT_CLOSE_IDLE:
	case FAULT_NONE:
	default:
		created_frames(plan, &g, first_delay, s->sse);
		if (generate)
			output_frames(plan, &g);
		completed_frame(plan, &g);
		add_step(plan, STEP_IDLE, 0);
		if (fault.kind == FAULT_CLOSE_IDLE)
			add_close(plan, 1000, SIM_CLOSE_IDLE_DELAY_MS);
		break;
	}
	s->busy = 1;

	if (store)
		prompt_cache_store(sim->backends[s->backend], &probe);
	rec = new_record(s, req, len);
	json_object_object_add(rec, "input_tokens", json_object_new_int64(g.input_tokens));
	json_object_object_add(rec, "cached_tokens", json_object_new_int64(g.cached_tokens));
	json_object_object_add(rec, "prompt_tokens", json_object_new_int64(prompt_toks));
	fault_format(&fault, faultname, sizeof(faultname));
	if (fault.kind != FAULT_NONE)
		json_object_object_add(rec, "fault", json_object_new_string(faultname));
	json_object_object_add(rec, "response_id", json_object_new_string(g.resp_id));
	if (g.fc_name != NULL)
		json_object_object_add(rec, "function_call",
		    json_object_new_string(g.fc_name));
	records_add_request(&sim->rec, rec);
	log_info("conn=%llu backend=%d account=%s request %s%s%s input=%lld "
	    "cached=%lld prompt=%lld fault=%s%s%s",
	    (unsigned long long)s->conn_id, s->backend, s->account, g.resp_id,
	    generate ? "" : " (prewarm)", s->sse ? " (sse)" : "",
	    (long long)g.input_tokens, (long long)g.cached_tokens,
	    (long long)prompt_toks, faultname, g.fc_name ? " call=" : "",
	    g.fc_name ? g.fc_name : "");

	/* Only a response that will complete can be continued. */
	if (fault.kind == FAULT_NONE || fault.kind == FAULT_SLOW_START ||
	    fault.kind == FAULT_CLOSE_IDLE)
		commit(s, &g, &prompt);
out:
	json_object_put(g.items);
	cache_probe_free(&probe);
	sbuf_free(&prompt);
	free(user_text);
	free(g.text);
	free(g.arguments);
	free(g.summary);
	json_object_put(req);
}
