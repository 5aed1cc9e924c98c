/*
 * POST /v1/messages (Anthropic Messages API) <-> the Responses API.
 *
 * Request (Messages -> Responses):
 *	system (string or text blocks)	-> instructions, blocks joined by a blank
 *					   line; blocks starting with
 *					   "x-anthropic-billing-header:" are
 *					   dropped (a per-request hash that
 *					   would defeat the prompt cache);
 *					   "You are a helpful assistant." if empty
 *	user text			-> message{role:user} input_text
 *	user image (base64 / url source)-> input_image{image_url: data URL / url}
 *	user tool_result		-> function_call_output{call_id:tool_use_id,
 *					   output}; string or text/image blocks;
 *					   is_error prefixes "Error: "; images
 *					   make output an array of input parts;
 *					   a tool_use_id that matches no earlier
 *					   tool_use is a 400
 *	assistant text			-> message{role:assistant} output_text
 *	assistant tool_use		-> function_call{call_id:id, name,
 *					   arguments: JSON text of input}
 *	assistant thinking,
 *	  redacted_thinking		-> a reasoning item when the signature
 *					   (data) is one this module made: the
 *					   upstream's encrypted_content behind
 *					   SIGNATURE_PREFIX.  Anything else
 *					   (Anthropic's own signatures, unsigned
 *					   thinking) is dropped: the backend could
 *					   not decrypt it.
 *	other block types		-> 400
 *	tools {name,description,
 *	  input_schema}			-> {type:function,name,description,
 *					   parameters,strict:false}; server tools
 *					   (a type other than "custom") are a 400
 *	tool_choice auto/any/tool/none	-> auto/required/{type:function,name}/none;
 *					   disable_parallel_tool_use ->
 *					   parallel_tool_calls:false
 *	thinking enabled budget_tokens	-> reasoning{effort, summary:auto} and
 *					   include reasoning.encrypted_content;
 *					   effort: budget < 2000 low, < 8000
 *					   medium, < 20000 high, else xhigh
 *					   (Claude Code's think / think hard /
 *					   ultrathink: 4000 / 10000 / 31999)
 *	thinking adaptive		-> reasoning{summary:auto}, the model's
 *					   own effort
 *	thinking disabled or absent	-> no reasoning field (model default)
 *	max_tokens			-> required (400 if missing, as Anthropic),
 *					   not forwarded
 *	metadata.user_id		-> its session part becomes
 *					   prompt_cache_key (anthropic_session_of)
 *	stream				-> stream (the caller reads it)
 *	anthropic_ignored_fields[]	accepted and dropped
 *
 * Answer (Responses events -> Messages events / message object):
 *	first content or the end	-> message_start (usage zero: the backend
 *					   reports usage only at the end); nothing
 *					   goes out before, so an early upstream
 *					   error can still be a plain HTTP error
 *	output_text.delta		-> text block, text_delta
 *	function_call item		-> tool_use block {id: call_id, name,
 *					   input:{}}, input_json_delta
 *	reasoning summary, encrypted	-> thinking block, thinking_delta, and
 *					   signature_delta with the encrypted
 *					   content (only when there is summary
 *					   text or encrypted content)
 *	completed			-> stop_reason tool_use (a tool was
 *					   called) or end_turn
 *	incomplete			-> max_tokens (refusal for a content filter)
 *	failed, error			-> event: error {"type":"error","error":..};
 *					   non-stream: that body with the upstream
 *					   status (503 overloaded -> 529)
 *	usage				-> input_tokens = input - cached,
 *					   cache_read_input_tokens = cached,
 *					   cache_creation_input_tokens = 0 (the
 *					   backend caches on its own and reports
 *					   no writes), output_tokens
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "util.h"
#include "xlate.h"

#define DEFAULT_INSTRUCTIONS	"You are a helpful assistant."
#define BILLING_HEADER		"x-anthropic-billing-header:"
/* Marks a thinking signature as the upstream's encrypted reasoning. */
#define SIGNATURE_PREFIX	"cxp1:"

const char *const anthropic_ignored_fields[] = {
	"max_tokens", "temperature", "top_p", "top_k", "stop_sequences",
	"service_tier", "container", "mcp_servers", "context_management",
	NULL
};

static bool
is(const char *a, const char *b)
{
	return a != NULL && strcmp(a, b) == 0;
}

/* An image block -> input_image part, or NULL with err. */
static struct json_object *
image_part(struct json_object *block, const char *where, struct xlate_error *err)
{
	struct json_object *src = json_get_obj(block, "source"), *p;
	const char *type = json_get_str(src, "type"), *mt, *data, *url;
	char *durl;
	size_t n;

	if (is(type, "base64")) {
		mt = json_get_str(src, "media_type");
		data = json_get_str(src, "data");
		if (mt == NULL || strncmp(mt, "image/", 6) != 0 || data == NULL) {
			xlate_error_set(err, 400, "messages",
			    "%s: an image source needs media_type image/... and data", where);
			return NULL;
		}
		n = strlen(mt) + strlen(data) + 14;
		durl = xmalloc(n);
		snprintf(durl, n, "data:%s;base64,%s", mt, data);
		p = json_object_new_object();
		json_object_object_add(p, "type", json_object_new_string("input_image"));
		json_object_object_add(p, "image_url", json_object_new_string(durl));
		free(durl);
		return p;
	}
	if (is(type, "url") && (url = json_get_str(src, "url")) != NULL && *url != '\0')
		return xlate_part("input_image", "image_url", url);
	xlate_error_set(err, 400, "messages",
	    "%s: unsupported image source type '%s' (base64 or url)", where,
	    type ? type : "(none)");
	return NULL;
}

/* A tool_result -> function_call_output, or NULL with err. */
static struct json_object *
tool_result_item(struct json_object *block, const char *where,
    struct json_object *call_ids, struct xlate_error *err)
{
	struct json_object *content = NULL, *item, *parts = NULL, *p;
	struct xlate_buf text = { .limit = SIZE_MAX / 2 };
	const char *id = json_get_str(block, "tool_use_id"), *s;
	bool is_error = json_get_bool(block, "is_error", false);
	char sub[96];
	size_t i;

	if (id == NULL || *id == '\0') {
		xlate_error_set(err, 400, "messages", "%s: tool_use_id is required", where);
		return NULL;
	}
	if (!json_object_object_get_ex(call_ids, id, NULL)) {
		xlate_error_set(err, 400, "messages",
		    "%s: tool_use_id '%s' matches no earlier tool_use", where, id);
		return NULL;
	}
	/* "Error: " marks a failed tool: Responses outputs have no error flag */
	if (is_error)
		xlate_buf_add(&text, "Error: ", 7);
	else
		xlate_buf_add(&text, "", 0);
	json_object_object_get_ex(block, "content", &content);
	if (content == NULL || json_object_is_type(content, json_type_null)) {
		;
	} else if (json_object_is_type(content, json_type_string)) {
		s = json_object_get_string(content);
		xlate_buf_add(&text, s, strlen(s));
	} else if (json_object_is_type(content, json_type_array)) {
		bool first = true;

		for (i = 0; i < json_object_array_length(content); i++) {
			struct json_object *b = json_object_array_get_idx(content, i);
			const char *type = json_get_str(b, "type");

			snprintf(sub, sizeof(sub), "%s.content[%zu]", where, i);
			if (is(type, "text") && (s = json_get_str(b, "text")) != NULL) {
				if (!first)
					xlate_buf_add(&text, "\n", 1);
				first = false;
				xlate_buf_add(&text, s, strlen(s));
			} else if (is(type, "image")) {
				if ((p = image_part(b, sub, err)) == NULL)
					goto fail;
				if (parts == NULL)
					parts = json_object_new_array();
				json_object_array_add(parts, p);
			} else {
				xlate_error_set(err, 400, "messages",
				    "%s: unsupported block type '%s' in a tool_result", sub,
				    type ? type : "(none)");
				goto fail;
			}
		}
	} else {
		xlate_error_set(err, 400, "messages",
		    "%s: content must be a string or an array of blocks", where);
		goto fail;
	}
	item = json_object_new_object();
	json_object_object_add(item, "type", json_object_new_string("function_call_output"));
	json_object_object_add(item, "call_id", json_object_new_string(id));
	if (parts != NULL) {
		/* text first, then the images */
		struct json_object *out = json_object_new_array();
		if (text.len > 0)
			json_object_array_add(out, xlate_part("input_text", "text", text.data));
		for (i = 0; i < json_object_array_length(parts); i++)
			json_object_array_add(out,
			    json_object_get(json_object_array_get_idx(parts, i)));
		json_object_object_add(item, "output", out);
	} else
		json_object_object_add(item, "output", json_object_new_string(text.data));
	json_object_put(parts);
	xlate_buf_free(&text);
	return item;
 fail:
	json_object_put(parts);
	xlate_buf_free(&text);
	return NULL;
}

/* thinking / redacted_thinking -> a reasoning item, or NULL (dropped). */
static struct json_object *
reasoning_item(const char *summary, const char *signature)
{
	struct json_object *item, *sum;
	size_t n = strlen(SIGNATURE_PREFIX);

	if (signature == NULL || strncmp(signature, SIGNATURE_PREFIX, n) != 0 ||
	    signature[n] == '\0')
		return NULL;
	item = json_object_new_object();
	sum = json_object_new_array();
	if (summary != NULL && *summary != '\0')
		json_object_array_add(sum, xlate_part("summary_text", "text", summary));
	json_object_object_add(item, "type", json_object_new_string("reasoning"));
	json_object_object_add(item, "summary", sum);
	json_object_object_add(item, "encrypted_content",
	    json_object_new_string(signature + n));
	return item;
}

/* Close the message being gathered (parts) into input. */
static void
flush(struct json_object *input, const char *role, struct json_object **parts)
{
	if (*parts != NULL && json_object_array_length(*parts) > 0)
		json_object_array_add(input, xlate_message(role, *parts));
	else
		json_object_put(*parts);
	*parts = NULL;
}

static int
add_message(struct json_object *input, struct json_object *m, size_t mi,
    struct json_object *call_ids, struct xlate_error *err)
{
	struct json_object *content = NULL, *parts = NULL, *item, *in;
	const char *role = json_get_str(m, "role"), *s;
	bool user;
	char where[64];
	size_t i, n;

	if (!is(role, "user") && !is(role, "assistant")) {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].role must be user or assistant", mi);
		return -1;
	}
	user = is(role, "user");
	json_object_object_get_ex(m, "content", &content);
	if (content != NULL && json_object_is_type(content, json_type_string)) {
		parts = json_object_new_array();
		json_object_array_add(parts, xlate_part(user ? "input_text" : "output_text", "text",
		    json_object_get_string(content)));
		flush(input, role, &parts);
		return 0;
	}
	if (content == NULL || !json_object_is_type(content, json_type_array)) {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].content must be a string or an array of blocks", mi);
		return -1;
	}
	n = json_object_array_length(content);
	for (i = 0; i < n; i++) {
		struct json_object *b = json_object_array_get_idx(content, i);
		const char *type = json_get_str(b, "type");

		snprintf(where, sizeof(where), "messages[%zu].content[%zu]", mi, i);
		if (is(type, "text")) {
			if ((s = json_get_str(b, "text")) == NULL) {
				xlate_error_set(err, 400, "messages", "%s: text is required", where);
				goto fail;
			}
			if (parts == NULL)
				parts = json_object_new_array();
			json_object_array_add(parts, xlate_part(user ? "input_text" : "output_text",
			    "text", s));
		} else if (user && is(type, "image")) {
			if ((item = image_part(b, where, err)) == NULL)
				goto fail;
			if (parts == NULL)
				parts = json_object_new_array();
			json_object_array_add(parts, item);
		} else if (user && is(type, "tool_result")) {
			if ((item = tool_result_item(b, where, call_ids, err)) == NULL)
				goto fail;
			flush(input, role, &parts);
			json_object_array_add(input, item);
		} else if (!user && is(type, "tool_use")) {
			const char *id = json_get_str(b, "id"), *name = json_get_str(b, "name");

			if (id == NULL || *id == '\0' || name == NULL || *name == '\0') {
				xlate_error_set(err, 400, "messages",
				    "%s: tool_use needs an id and a name", where);
				goto fail;
			}
			in = NULL;
			json_object_object_get_ex(b, "input", &in);
			if (in != NULL && !json_object_is_type(in, json_type_object)) {
				xlate_error_set(err, 400, "messages",
				    "%s: tool_use input must be an object", where);
				goto fail;
			}
			flush(input, role, &parts);
			item = json_object_new_object();
			json_object_object_add(item, "type", json_object_new_string("function_call"));
			json_object_object_add(item, "call_id", json_object_new_string(id));
			json_object_object_add(item, "name", json_object_new_string(name));
			json_object_object_add(item, "arguments",
			    json_object_new_string(in != NULL ? json_plain(in, NULL) : "{}"));
			json_object_array_add(input, item);
			json_object_object_add(call_ids, id, json_object_new_boolean(1));
		} else if (!user && (is(type, "thinking") || is(type, "redacted_thinking"))) {
			item = is(type, "thinking") ?
			    reasoning_item(json_get_str(b, "thinking"), json_get_str(b, "signature")) :
			    reasoning_item(NULL, json_get_str(b, "data"));
			if (item != NULL) {
				flush(input, role, &parts);
				json_object_array_add(input, item);
			}
		} else {
			xlate_error_set(err, 400, "messages",
			    "%s: unsupported block type '%s' in a%s message", where,
			    type ? type : "(none)", user ? " user" : "n assistant");
			goto fail;
		}
	}
	flush(input, role, &parts);
	return 0;
 fail:
	json_object_put(parts);
	return -1;
}

static int
add_system(struct json_object *out, struct json_object *msg, struct xlate_error *err)
{
	struct json_object *sys = NULL;
	struct xlate_buf b = { .limit = SIZE_MAX / 2 };
	const char *s;
	size_t i;

	json_object_object_get_ex(msg, "system", &sys);
	if (sys == NULL || json_object_is_type(sys, json_type_null)) {
		;
	} else if (json_object_is_type(sys, json_type_string)) {
		s = json_object_get_string(sys);
		xlate_buf_add(&b, s, strlen(s));
	} else if (json_object_is_type(sys, json_type_array)) {
		for (i = 0; i < json_object_array_length(sys); i++) {
			struct json_object *blk = json_object_array_get_idx(sys, i);
			if (!is(json_get_str(blk, "type"), "text") ||
			    (s = json_get_str(blk, "text")) == NULL) {
				xlate_error_set(err, 400, "system",
				    "system[%zu] must be a text block", i);
				xlate_buf_free(&b);
				return -1;
			}
			if (strncmp(s, BILLING_HEADER, strlen(BILLING_HEADER)) == 0 || *s == '\0')
				continue;
			if (b.len > 0)
				xlate_buf_add(&b, "\n\n", 2);
			xlate_buf_add(&b, s, strlen(s));
		}
	} else {
		xlate_error_set(err, 400, "system",
		    "system must be a string or an array of text blocks");
		return -1;
	}
	json_object_object_add(out, "instructions",
	    json_object_new_string(b.len > 0 ? b.data : DEFAULT_INSTRUCTIONS));
	xlate_buf_free(&b);
	return 0;
}

static int
add_tools(struct json_object *out, struct json_object *msg, struct xlate_error *err)
{
	struct json_object *tools = NULL, *tc, *res;
	const char *type;
	size_t i;

	json_object_object_get_ex(msg, "tools", &tools);
	if (tools != NULL && !json_object_is_type(tools, json_type_null)) {
		if (!json_object_is_type(tools, json_type_array)) {
			xlate_error_set(err, 400, "tools", "tools must be an array");
			return -1;
		}
		res = json_object_new_array();
		for (i = 0; i < json_object_array_length(tools); i++) {
			struct json_object *t = json_object_array_get_idx(tools, i), *ft, *schema;
			const char *name = json_get_str(t, "name");

			type = json_get_str(t, "type");
			if (type != NULL && strcmp(type, "custom") != 0) {
				xlate_error_set(err, 400, "tools",
				    "tools[%zu]: unsupported tool type '%s' (only client tools)",
				    i, type);
				json_object_put(res);
				return -1;
			}
			schema = json_get_obj(t, "input_schema");
			if (name == NULL || *name == '\0' || schema == NULL) {
				xlate_error_set(err, 400, "tools",
				    "tools[%zu] needs a name and an input_schema object", i);
				json_object_put(res);
				return -1;
			}
			ft = json_object_new_object();
			json_object_object_add(ft, "type", json_object_new_string("function"));
			json_object_object_add(ft, "name", json_object_new_string(name));
			if (json_get_str(t, "description") != NULL)
				json_object_object_add(ft, "description",
				    json_object_new_string(json_get_str(t, "description")));
			json_object_object_add(ft, "parameters", json_object_get(schema));
			json_object_object_add(ft, "strict", json_object_new_boolean(0));
			json_object_array_add(res, ft);
		}
		json_object_object_add(out, "tools", res);
	}
	json_object_object_get_ex(msg, "tool_choice", &tc);
	if (tc != NULL && !json_object_is_type(tc, json_type_null)) {
		type = json_get_str(tc, "type");
		if (is(type, "auto"))
			json_object_object_add(out, "tool_choice", json_object_new_string("auto"));
		else if (is(type, "any"))
			json_object_object_add(out, "tool_choice", json_object_new_string("required"));
		else if (is(type, "none"))
			json_object_object_add(out, "tool_choice", json_object_new_string("none"));
		else if (is(type, "tool") && json_get_str(tc, "name") != NULL) {
			res = json_object_new_object();
			json_object_object_add(res, "type", json_object_new_string("function"));
			json_object_object_add(res, "name",
			    json_object_new_string(json_get_str(tc, "name")));
			json_object_object_add(out, "tool_choice", res);
		} else {
			xlate_error_set(err, 400, "tool_choice",
			    "tool_choice.type must be auto, any, none, or tool with a name");
			return -1;
		}
		if (json_get_bool(tc, "disable_parallel_tool_use", false))
			json_object_object_add(out, "parallel_tool_calls",
			    json_object_new_boolean(0));
	}
	return 0;
}

/* thinking.budget_tokens -> reasoning.effort (thresholds in the top comment). */
static const char *
effort_of_budget(int64_t budget)
{
	if (budget < 2000)
		return "low";
	if (budget < 8000)
		return "medium";
	if (budget < 20000)
		return "high";
	return "xhigh";
}

static int
add_thinking(struct json_object *out, struct json_object *msg, struct xlate_error *err)
{
	struct json_object *th = NULL, *r, *v = NULL, *inc;
	const char *type;
	int64_t budget;

	json_object_object_get_ex(msg, "thinking", &th);
	if (th == NULL || json_object_is_type(th, json_type_null))
		return 0;
	type = json_get_str(th, "type");
	if (is(type, "disabled"))
		return 0;
	if (!is(type, "enabled") && !is(type, "adaptive")) {
		xlate_error_set(err, 400, "thinking",
		    "thinking.type must be enabled, adaptive or disabled");
		return -1;
	}
	r = json_object_new_object();
	if (is(type, "enabled")) {
		json_object_object_get_ex(th, "budget_tokens", &v);
		if (v == NULL || !json_object_is_type(v, json_type_int) ||
		    (budget = json_object_get_int64(v)) < 1) {
			xlate_error_set(err, 400, "thinking.budget_tokens",
			    "thinking.budget_tokens must be a positive integer");
			json_object_put(r);
			return -1;
		}
		json_object_object_add(r, "effort",
		    json_object_new_string(effort_of_budget(budget)));
	}
	json_object_object_add(r, "summary", json_object_new_string("auto"));
	json_object_object_add(out, "reasoning", r);
	inc = json_object_new_array();
	json_object_array_add(inc, json_object_new_string("reasoning.encrypted_content"));
	json_object_object_add(out, "include", inc);
	return 0;
}

char *
anthropic_session_of(struct json_object *msg)
{
	const char *uid = json_get_str(json_get_obj(msg, "metadata"), "user_id"), *p, *s;
	struct json_object *o;
	char perr[64];
	char *out = NULL;

	if (uid == NULL || *uid == '\0')
		return NULL;
	if (*uid == '{') {
		/* newer Claude Code: a JSON string with device/account/session ids */
		o = json_parse_buf(uid, strlen(uid), perr, sizeof(perr));
		if ((s = json_get_str(o, "session_id")) != NULL && *s != '\0' &&
		    strlen(s) <= 256)
			out = xstrdup(s);
		json_object_put(o);
		return out;
	}
	if ((p = strstr(uid, "_session_")) != NULL && p[9] != '\0' && strlen(p + 9) <= 256)
		return xstrdup(p + 9);
	return NULL;
}

/* The translation, with or without the max_tokens rule (count_tokens has none). */
static struct json_object *
translate(struct json_object *msg, bool need_max_tokens, struct xlate_error *err)
{
	struct json_object *out, *messages, *input, *calls, *v;
	const char *model;
	char *session;
	size_t i;

	if (msg == NULL || !json_object_is_type(msg, json_type_object)) {
		xlate_error_set(err, 400, NULL, "the request body must be a JSON object");
		return NULL;
	}
	if ((model = json_get_str(msg, "model")) == NULL || *model == '\0') {
		xlate_error_set(err, 400, "model", "model: Field required");
		return NULL;
	}
	if (need_max_tokens && (!json_object_object_get_ex(msg, "max_tokens", &v) ||
	    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1)) {
		xlate_error_set(err, 400, "max_tokens",
		    "max_tokens: Field required (a positive integer)");
		return NULL;
	}
	messages = json_get_array(msg, "messages");
	if (messages == NULL || json_object_array_length(messages) == 0) {
		xlate_error_set(err, 400, "messages", "messages must be a non-empty array");
		return NULL;
	}
	if (json_object_object_get_ex(msg, "stream", &v) && !json_object_is_type(v, json_type_null) &&
	    !json_object_is_type(v, json_type_boolean)) {
		xlate_error_set(err, 400, "stream", "stream must be a boolean");
		return NULL;
	}
	out = json_object_new_object();
	json_object_object_add(out, "model", json_object_new_string(model));
	if (add_system(out, msg, err) != 0)
		goto fail;
	input = json_object_new_array();
	calls = json_object_new_object();
	json_object_object_add(out, "input", input);
	for (i = 0; i < json_object_array_length(messages); i++)
		if (add_message(input, json_object_array_get_idx(messages, i), i, calls,
		    err) != 0) {
			json_object_put(calls);
			goto fail;
		}
	json_object_put(calls);
	if (add_tools(out, msg, err) != 0 || add_thinking(out, msg, err) != 0)
		goto fail;
	json_object_object_add(out, "stream",
	    json_object_new_boolean(json_get_bool(msg, "stream", false)));
	if ((session = anthropic_session_of(msg)) != NULL) {
		json_object_object_add(out, "prompt_cache_key", json_object_new_string(session));
		free(session);
	}
	return out;
 fail:
	json_object_put(out);
	return NULL;
}

struct json_object *
anthropic_request_to_responses(struct json_object *msg, struct xlate_error *err)
{
	return translate(msg, true, err);
}

/*
 * An estimate, not a tokenizer: the bytes of what would go upstream
 * (instructions, the input items and the tools as compact JSON) divided
 * by 4, rounded up.  JSON punctuation roughly makes up for the multi-byte
 * characters a real tokenizer counts as one token.
 */
struct json_object *
anthropic_count_tokens(struct json_object *msg, struct xlate_error *err)
{
	struct json_object *body = translate(msg, false, err), *o, *v;
	size_t bytes = 0, n;

	if (body == NULL)
		return NULL;
	if (json_object_object_get_ex(body, "instructions", &v))
		bytes += strlen(json_object_get_string(v));
	if (json_object_object_get_ex(body, "input", &v)) {
		json_plain(v, &n);
		bytes += n;
	}
	if (json_object_object_get_ex(body, "tools", &v)) {
		json_plain(v, &n);
		bytes += n;
	}
	json_object_put(body);
	o = json_object_new_object();
	json_object_object_add(o, "input_tokens", json_object_new_int64((int64_t)((bytes + 3) / 4)));
	return o;
}

/* ---- errors ---- */

const char *
anthropic_error_type(int status)
{
	switch (status) {
	case 400:
		return "invalid_request_error";
	case 401:
		return "authentication_error";
	case 402:
		return "billing_error";
	case 403:
		return "permission_error";
	case 404:
		return "not_found_error";
	case 413:
		return "request_too_large";
	case 429:
		return "rate_limit_error";
	case 503:
	case 529:
		return "overloaded_error";
	default:
		return status >= 500 ? "api_error" : "invalid_request_error";
	}
}

static struct json_object *
error_json(int status, const char *message)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "type", json_object_new_string(anthropic_error_type(status)));
	json_object_object_add(e, "message", xlate_str(message));
	json_object_object_add(o, "type", json_object_new_string("error"));
	json_object_object_add(o, "error", e);
	return o;
}

char *
anthropic_error_body(int status, const char *message)
{
	struct json_object *o = error_json(status, message);
	char *s = xstrdup(json_plain(o, NULL));

	json_object_put(o);
	return s;
}

/* ---- the answer ---- */

enum block_kind { BLK_NONE, BLK_TEXT, BLK_TOOL, BLK_THINKING };
enum msg_end { END_NONE, END_DONE, END_ERROR };

struct anthropic_stream {
	char		*id;
	char		*model;
	size_t		 limit;
	bool		 aggregate;	/* events came with emit == NULL */

	bool		 started;	/* message_start went out */
	int		 next_index;	/* of the next content block */
	enum block_kind	 open;		/* the open block, if any */
	char		*open_item;	/* its upstream item id */
	bool		 open_delta;	/* it streamed a delta */
	int64_t		 summary_index;
	int		 ntools;

	struct json_object *blocks;	/* non-stream: finished content blocks */
	struct json_object *cur;	/* non-stream: the open block */
	struct xlate_buf buf;		/* non-stream: the open block's text / JSON */
	size_t		 total;		/* non-stream: bytes kept */
	bool		 overflow;

	enum msg_end	 end;
	bool		 ended;
	const char	*stop_reason;
	struct xlate_usage usage;
	struct xlate_upstream_error error;
};

struct anthropic_stream *
anthropic_stream_new(const struct xlate_stream_opts *opts)
{
	struct anthropic_stream *st = xcalloc(1, sizeof(*st));

	st->id = xlate_id("msg_", opts->id_seed);
	st->model = xstrdup(opts->client_model != NULL ? opts->client_model : "");
	st->limit = opts->max_aggregate ? opts->max_aggregate : XLATE_DEFAULT_AGGREGATE;
	st->blocks = json_object_new_array();
	return st;
}

void
anthropic_stream_free(struct anthropic_stream *st)
{
	if (st == NULL)
		return;
	free(st->id);
	free(st->model);
	free(st->open_item);
	json_object_put(st->blocks);
	json_object_put(st->cur);
	xlate_buf_free(&st->buf);
	free(st);
}

static struct json_object *
usage_json(const struct xlate_usage *u)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "input_tokens", json_object_new_int64(u->input - u->cached));
	json_object_object_add(o, "cache_creation_input_tokens", json_object_new_int64(0));
	json_object_object_add(o, "cache_read_input_tokens", json_object_new_int64(u->cached));
	json_object_object_add(o, "output_tokens", json_object_new_int64(u->output));
	return o;
}

static struct json_object *
event(const char *type)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string(type));
	return o;
}

static int
start_message(struct anthropic_stream *st, xlate_emit_fn emit, void *arg)
{
	struct json_object *ev, *m;
	struct xlate_usage zero = { 0 };

	if (st->started || emit == NULL)
		return 0;
	st->started = true;
	m = json_object_new_object();
	json_object_object_add(m, "id", json_object_new_string(st->id));
	json_object_object_add(m, "type", json_object_new_string("message"));
	json_object_object_add(m, "role", json_object_new_string("assistant"));
	json_object_object_add(m, "model", json_object_new_string(st->model));
	json_object_object_add(m, "content", json_object_new_array());
	json_object_object_add(m, "stop_reason", NULL);
	json_object_object_add(m, "stop_sequence", NULL);
	json_object_object_add(m, "usage", usage_json(&zero));
	ev = event("message_start");
	json_object_object_add(ev, "message", m);
	return xlate_emit_json(emit, arg, "message_start", ev);
}

/* Keep n more bytes for the non-stream result, or mark the overflow. */
static bool
keep(struct anthropic_stream *st, size_t n)
{
	if (st->overflow || st->total + n > st->limit) {
		st->overflow = true;
		return false;
	}
	st->total += n;
	return true;
}

static int
close_block(struct anthropic_stream *st, xlate_emit_fn emit, void *arg)
{
	struct json_object *ev, *in;
	char perr[64];

	if (st->open == BLK_NONE)
		return 0;
	if (st->aggregate && st->cur != NULL) {
		const char *text = st->buf.data != NULL ? st->buf.data : "";
		if (st->open == BLK_TEXT)
			json_object_object_add(st->cur, "text", json_object_new_string(text));
		else if (st->open == BLK_THINKING)
			json_object_object_add(st->cur, "thinking", json_object_new_string(text));
		else {
			in = *text ? json_parse_buf(text, strlen(text), perr, sizeof(perr)) : NULL;
			if (in == NULL || !json_object_is_type(in, json_type_object)) {
				json_object_put(in);
				in = json_object_new_object();
			}
			json_object_object_add(st->cur, "input", in);
		}
		json_object_array_add(st->blocks, st->cur);
		st->cur = NULL;
	}
	xlate_buf_free(&st->buf);
	st->open = BLK_NONE;
	free(st->open_item);
	st->open_item = NULL;
	if (st->aggregate)
		return 0;
	ev = event("content_block_stop");
	json_object_object_add(ev, "index", json_object_new_int(st->next_index - 1));
	return xlate_emit_json(emit, arg, "content_block_stop", ev);
}

/* Close the open block and open a new one (cb: its content_block). */
static int
open_block(struct anthropic_stream *st, enum block_kind kind, const char *item_id,
    struct json_object *cb, xlate_emit_fn emit, void *arg)
{
	struct json_object *ev;

	if (close_block(st, emit, arg) != 0 || start_message(st, emit, arg) != 0) {
		json_object_put(cb);
		return -1;
	}
	st->open = kind;
	st->open_item = xstrdup(item_id);
	st->open_delta = false;
	st->buf.limit = SIZE_MAX / 2;
	st->next_index++;
	if (st->aggregate) {
		/* a block costs memory even when empty */
		if (keep(st, 64))
			st->cur = cb;
		else
			json_object_put(cb);
		return 0;
	}
	ev = event("content_block_start");
	json_object_object_add(ev, "index", json_object_new_int(st->next_index - 1));
	json_object_object_add(ev, "content_block", cb);
	return xlate_emit_json(emit, arg, "content_block_start", ev);
}

/* A delta of the open block: text_delta, input_json_delta, thinking_delta,
 * signature_delta (key names the field). */
static int
block_delta(struct anthropic_stream *st, const char *dtype, const char *key,
    const char *s, xlate_emit_fn emit, void *arg)
{
	struct json_object *ev, *d;

	if (st->aggregate) {
		if (strcmp(dtype, "signature_delta") == 0) {
			if (st->cur != NULL && keep(st, strlen(s)))
				json_object_object_add(st->cur, "signature",
				    json_object_new_string(s));
		} else if (keep(st, strlen(s)))
			xlate_buf_add(&st->buf, s, strlen(s));
		return 0;
	}
	d = event(dtype);
	json_object_object_add(d, key, json_object_new_string(s));
	ev = event("content_block_delta");
	json_object_object_add(ev, "index", json_object_new_int(st->next_index - 1));
	json_object_object_add(ev, "delta", d);
	return xlate_emit_json(emit, arg, "content_block_delta", ev);
}

static bool
open_is(struct anthropic_stream *st, enum block_kind kind, const char *item_id)
{
	if (st->open != kind)
		return false;
	if (item_id == NULL || st->open_item == NULL)
		return true;	/* no ids: items come one after the other */
	return strcmp(item_id, st->open_item) == 0;
}

static struct json_object *
text_block(void)
{
	struct json_object *cb = event("text");

	json_object_object_add(cb, "text", json_object_new_string(""));
	return cb;
}

static struct json_object *
thinking_block(void)
{
	struct json_object *cb = event("thinking");

	json_object_object_add(cb, "thinking", json_object_new_string(""));
	json_object_object_add(cb, "signature", json_object_new_string(""));
	return cb;
}

static int
tool_open(struct anthropic_stream *st, struct json_object *item, xlate_emit_fn emit, void *arg)
{
	struct json_object *cb = event("tool_use");
	const char *call_id = json_get_str(item, "call_id"), *id = json_get_str(item, "id");

	json_object_object_add(cb, "id", xlate_str(call_id != NULL ? call_id : id));
	json_object_object_add(cb, "name", xlate_str(json_get_str(item, "name")));
	json_object_object_add(cb, "input", json_object_new_object());
	st->ntools++;
	return open_block(st, BLK_TOOL, id, cb, emit, arg);
}

static int
item_done(struct anthropic_stream *st, struct json_object *item, xlate_emit_fn emit, void *arg)
{
	const char *type = json_get_str(item, "type"), *id = json_get_str(item, "id"), *s;
	struct json_object *parts;
	size_t i;

	if (is(type, "message")) {
		if (open_is(st, BLK_TEXT, id))
			return close_block(st, emit, arg);
		/* no deltas came: the item's text, as one block */
		parts = json_get_array(item, "content");
		for (i = 0; parts != NULL && i < json_object_array_length(parts); i++) {
			struct json_object *p = json_object_array_get_idx(parts, i);
			s = is(json_get_str(p, "type"), "refusal") ? json_get_str(p, "refusal") :
			    json_get_str(p, "text");
			if (s == NULL || *s == '\0')
				continue;
			if (!open_is(st, BLK_TEXT, id) &&
			    open_block(st, BLK_TEXT, id, text_block(), emit, arg) != 0)
				return -1;
			if (block_delta(st, "text_delta", "text", s, emit, arg) != 0)
				return -1;
		}
		return close_block(st, emit, arg);
	}
	if (is(type, "function_call")) {
		if (!open_is(st, BLK_TOOL, id) && tool_open(st, item, emit, arg) != 0)
			return -1;
		s = json_get_str(item, "arguments");
		if (!st->open_delta && s != NULL && *s != '\0' &&
		    block_delta(st, "input_json_delta", "partial_json", s, emit, arg) != 0)
			return -1;
		return close_block(st, emit, arg);
	}
	if (is(type, "reasoning")) {
		const char *enc = json_get_str(item, "encrypted_content");
		char *sig;
		int rc;

		if (!open_is(st, BLK_THINKING, id)) {
			parts = json_get_array(item, "summary");
			if ((parts == NULL || json_object_array_length(parts) == 0) &&
			    (enc == NULL || *enc == '\0'))
				return close_block(st, emit, arg);
			if (open_block(st, BLK_THINKING, id, thinking_block(), emit, arg) != 0)
				return -1;
			for (i = 0; parts != NULL && i < json_object_array_length(parts); i++) {
				s = json_get_str(json_object_array_get_idx(parts, i), "text");
				if (s == NULL || *s == '\0')
					continue;
				if ((i > 0 && block_delta(st, "thinking_delta", "thinking",
				    "\n\n", emit, arg) != 0) ||
				    block_delta(st, "thinking_delta", "thinking", s, emit, arg) != 0)
					return -1;
			}
		}
		if (enc != NULL && *enc != '\0') {
			sig = xmalloc(strlen(SIGNATURE_PREFIX) + strlen(enc) + 1);
			memcpy(sig, SIGNATURE_PREFIX, strlen(SIGNATURE_PREFIX));
			memcpy(sig + strlen(SIGNATURE_PREFIX), enc, strlen(enc) + 1);
			rc = block_delta(st, "signature_delta", "signature", sig, emit, arg);
			free(sig);
			if (rc != 0)
				return -1;
		}
		return close_block(st, emit, arg);
	}
	return 0;
}

static void
set_end(struct anthropic_stream *st, struct json_object *ev, const char *type)
{
	struct json_object *resp = json_get_obj(ev, "response");
	const char *reason;

	if (is(type, "response.failed") || is(type, "error")) {
		xlate_upstream_error_from(&st->error, ev);
		st->end = END_ERROR;
		return;
	}
	xlate_usage_from(&st->usage, resp);
	st->end = END_DONE;
	if (is(type, "response.incomplete")) {
		reason = json_get_str(json_get_obj(resp, "incomplete_details"), "reason");
		st->stop_reason = is(reason, "content_filter") ? "refusal" : "max_tokens";
	} else
		st->stop_reason = st->ntools > 0 ? "tool_use" : "end_turn";
}

int
anthropic_stream_event(struct anthropic_stream *st, const char *type, const char *frame,
    size_t len, xlate_emit_fn emit, void *arg)
{
	struct json_object *ev, *item;
	const char *id, *s;
	char perr[64];
	int rc = 0;

	if (st->end != END_NONE || type == NULL)
		return 0;
	if ((ev = json_parse_buf(frame, len, perr, sizeof(perr))) == NULL)
		return -1;
	st->aggregate = emit == NULL;
	id = json_get_str(ev, "item_id");
	s = json_get_str(ev, "delta");
	if (is(type, "response.output_text.delta")) {
		if (s != NULL && *s != '\0') {
			if (!open_is(st, BLK_TEXT, id))
				rc = open_block(st, BLK_TEXT, id, text_block(), emit, arg);
			if (rc == 0)
				rc = block_delta(st, "text_delta", "text", s, emit, arg);
		}
	} else if (is(type, "response.reasoning_summary_text.delta")) {
		int64_t si = json_get_int(ev, "summary_index", 0);

		if (s != NULL && *s != '\0') {
			if (!open_is(st, BLK_THINKING, id)) {
				rc = open_block(st, BLK_THINKING, id, thinking_block(), emit, arg);
				st->summary_index = si;
			} else if (si != st->summary_index) {
				rc = block_delta(st, "thinking_delta", "thinking", "\n\n", emit, arg);
				st->summary_index = si;
			}
			st->open_delta = true;
			if (rc == 0)
				rc = block_delta(st, "thinking_delta", "thinking", s, emit, arg);
		}
	} else if (is(type, "response.output_item.added")) {
		item = json_get_obj(ev, "item");
		if (is(json_get_str(item, "type"), "function_call"))
			rc = tool_open(st, item, emit, arg);
	} else if (is(type, "response.function_call_arguments.delta")) {
		if (s != NULL && *s != '\0' && open_is(st, BLK_TOOL, id)) {
			st->open_delta = true;
			rc = block_delta(st, "input_json_delta", "partial_json", s, emit, arg);
		}
	} else if (is(type, "response.function_call_arguments.done")) {
		s = json_get_str(ev, "arguments");
		if (s != NULL && *s != '\0' && open_is(st, BLK_TOOL, id) && !st->open_delta) {
			st->open_delta = true;
			rc = block_delta(st, "input_json_delta", "partial_json", s, emit, arg);
		}
	} else if (is(type, "response.output_item.done")) {
		rc = item_done(st, json_get_obj(ev, "item"), emit, arg);
	} else if (is(type, "response.completed") || is(type, "response.incomplete") ||
	    is(type, "response.failed") || is(type, "error")) {
		set_end(st, ev, type);
	}
	json_object_put(ev);
	return rc;
}

int
anthropic_stream_end(struct anthropic_stream *st, const char *abort_reason,
    xlate_emit_fn emit, void *arg)
{
	struct json_object *ev, *d;

	if (st->ended)
		return 0;
	st->ended = true;
	if (st->end == END_NONE) {
		st->end = END_ERROR;
		st->error.status = 502;
		strlcpy_safe(st->error.code, "stream_disconnected", sizeof(st->error.code));
		snprintf(st->error.message, sizeof(st->error.message),
		    "upstream stream ended before response.completed: %s",
		    abort_reason != NULL ? abort_reason : "connection closed");
	}
	if (st->end == END_ERROR) {
		if (emit == NULL)
			return 0;
		return xlate_emit_json(emit, arg, "error",
		    error_json(st->error.status, st->error.message));
	}
	st->aggregate = emit == NULL;
	if (start_message(st, emit, arg) != 0 || close_block(st, emit, arg) != 0)
		return -1;
	if (emit == NULL)
		return 0;
	d = json_object_new_object();
	json_object_object_add(d, "stop_reason", json_object_new_string(st->stop_reason));
	json_object_object_add(d, "stop_sequence", NULL);
	ev = event("message_delta");
	json_object_object_add(ev, "delta", d);
	json_object_object_add(ev, "usage", usage_json(&st->usage));
	if (xlate_emit_json(emit, arg, "message_delta", ev) != 0)
		return -1;
	return xlate_emit_json(emit, arg, "message_stop", event("message_stop"));
}

struct json_object *
anthropic_stream_result(struct anthropic_stream *st, int *status)
{
	struct json_object *o;

	if (!st->ended)
		anthropic_stream_end(st, NULL, NULL, NULL);
	if (st->end == END_ERROR) {
		/* Anthropic clients retry an overloaded API on 529 */
		*status = st->error.status == 503 ? 529 : st->error.status;
		return error_json(*status, st->error.message);
	}
	if (st->overflow) {
		*status = 502;
		return error_json(502,
		    "the response is larger than the non-stream limit; use stream:true");
	}
	*status = 200;
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(st->id));
	json_object_object_add(o, "type", json_object_new_string("message"));
	json_object_object_add(o, "role", json_object_new_string("assistant"));
	json_object_object_add(o, "model", json_object_new_string(st->model));
	json_object_object_add(o, "content", json_object_get(st->blocks));
	json_object_object_add(o, "stop_reason", json_object_new_string(st->stop_reason));
	json_object_object_add(o, "stop_sequence", NULL);
	json_object_object_add(o, "usage", usage_json(&st->usage));
	return o;
}

bool
anthropic_stream_started(const struct anthropic_stream *st)
{
	return st->started;
}

int
anthropic_ping(xlate_emit_fn emit, void *arg)
{
	return xlate_emit_json(emit, arg, "ping", event("ping"));
}
