/*
 * POST /v1/chat/completions <-> the Responses API.
 *
 * Request (chat -> Responses):
 *	messages[] system, developer	-> instructions (texts joined by a blank
 *					   line; "You are a helpful assistant."
 *					   when there is none: the backend
 *					   requires instructions)
 *	messages[] user			-> message{role:user}: text parts ->
 *					   input_text, image_url parts ->
 *					   input_image{image_url, detail}
 *	messages[] assistant		-> message{role:assistant} of output_text
 *					   parts (when it has text), then one
 *					   function_call{call_id,name,arguments}
 *					   per tool_calls entry
 *	messages[] tool			-> function_call_output{call_id, output};
 *					   its tool_call_id must name an earlier
 *					   tool call (400 otherwise)
 *	tools[] type function		-> {type:function,name,description,
 *					   parameters,strict}; other types 400
 *	tool_choice			-> none/auto/required, or {type:function,name}
 *	parallel_tool_calls		-> as is
 *	response_format json_object,
 *	  json_schema			-> text.format; text = nothing
 *	verbosity			-> text.verbosity
 *	reasoning_effort		-> reasoning{effort, summary:auto}
 *	prompt_cache_key, else user	-> prompt_cache_key (conversation identity)
 *	stream				-> stream (the caller reads it);
 *					   stream_options.include_usage: see
 *					   chat_include_usage()
 *	n				-> must be 1 (400 otherwise)
 *	functions, function_call	-> 400: the legacy form; use tools
 *	chat_ignored_fields[]		accepted and dropped: the Codex backend
 *					   ignores sampling and length limits
 *	other fields			ignored
 *
 * Answer (Responses events -> chat.completion.chunk / chat.completion):
 *	output_text.delta		-> delta.content (after one role chunk)
 *	reasoning_summary_text.delta	-> delta.reasoning_content
 *	function_call item		-> delta.tool_calls[{index,id,type,function
 *					   {name,arguments:""}}], then argument
 *					   deltas; full arguments at done if
 *					   none were streamed
 *	completed			-> finish_reason tool_calls or stop
 *	incomplete			-> finish_reason length (content_filter
 *					   for a content filter)
 *	failed, error			-> data: {"error":{...}} and no [DONE];
 *					   non-stream: the error body and status
 *	usage				-> prompt_tokens = input_tokens,
 *					   completion_tokens = output_tokens,
 *					   cached and reasoning details
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "util.h"
#include "xlate.h"

#define DEFAULT_INSTRUCTIONS	"You are a helpful assistant."

const char *const chat_ignored_fields[] = {
	"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
	"presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
	"top_logprobs", "seed", "metadata", "store", "service_tier",
	"modalities", "audio", "prediction", "web_search_options",
	NULL
};

static const char *const efforts[] = {
	"none", "minimal", "low", "medium", "high", "xhigh", NULL
};

static bool
in_list(const char *const *list, const char *s)
{
	for (; *list != NULL; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

/*
 * The text of a content that may only hold text: a string, or an array of
 * {type:text,text} parts (refusal too when allow_refusal), joined by sep.
 * Returns a malloc'd string, or NULL with err.
 */
static char *
content_text(struct json_object *content, const char *sep, bool allow_refusal,
    size_t msgno, struct xlate_error *err)
{
	struct xlate_buf b = { .limit = SIZE_MAX / 2 };
	size_t i, n;

	if (content == NULL || json_object_is_type(content, json_type_null))
		return xstrdup("");
	if (json_object_is_type(content, json_type_string))
		return xstrdup(json_object_get_string(content));
	if (!json_object_is_type(content, json_type_array)) {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].content must be a string or an array of parts", msgno);
		return NULL;
	}
	n = json_object_array_length(content);
	xlate_buf_add(&b, "", 0);
	for (i = 0; i < n; i++) {
		struct json_object *p = json_object_array_get_idx(content, i);
		const char *type = json_get_str(p, "type"), *text;

		if (type != NULL && strcmp(type, "text") == 0)
			text = json_get_str(p, "text");
		else if (allow_refusal && type != NULL && strcmp(type, "refusal") == 0)
			text = json_get_str(p, "refusal");
		else {
			xlate_error_set(err, 400, "messages",
			    "messages[%zu].content[%zu]: unsupported content part type '%s' here",
			    msgno, i, type ? type : "(none)");
			xlate_buf_free(&b);
			return NULL;
		}
		if (text == NULL) {
			xlate_error_set(err, 400, "messages",
			    "messages[%zu].content[%zu] has no text", msgno, i);
			xlate_buf_free(&b);
			return NULL;
		}
		if (i > 0 && b.len > 0)
			xlate_buf_add(&b, sep, strlen(sep));
		xlate_buf_add(&b, text, strlen(text));
	}
	return b.data;
}

/* User content -> input_text / input_image parts. */
static struct json_object *
user_content(struct json_object *content, size_t msgno, struct xlate_error *err)
{
	struct json_object *parts = json_object_new_array();
	size_t i, n;

	if (json_object_is_type(content, json_type_string)) {
		json_object_array_add(parts, xlate_part("input_text", "text",
		    json_object_get_string(content)));
		return parts;
	}
	if (!json_object_is_type(content, json_type_array)) {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].content must be a string or an array of parts", msgno);
		goto fail;
	}
	n = json_object_array_length(content);
	for (i = 0; i < n; i++) {
		struct json_object *p = json_object_array_get_idx(content, i), *img, *v;
		const char *type = json_get_str(p, "type"), *text, *url, *detail = NULL;

		if (type != NULL && strcmp(type, "text") == 0) {
			if ((text = json_get_str(p, "text")) == NULL) {
				xlate_error_set(err, 400, "messages",
				    "messages[%zu].content[%zu] has no text", msgno, i);
				goto fail;
			}
			json_object_array_add(parts, xlate_part("input_text", "text", text));
		} else if (type != NULL && strcmp(type, "image_url") == 0) {
			json_object_object_get_ex(p, "image_url", &img);
			if (img != NULL && json_object_is_type(img, json_type_string))
				url = json_object_get_string(img);
			else {
				url = json_get_str(img, "url");
				detail = json_get_str(img, "detail");
			}
			if (url == NULL || *url == '\0') {
				xlate_error_set(err, 400, "messages",
				    "messages[%zu].content[%zu].image_url.url is required", msgno, i);
				goto fail;
			}
			v = xlate_part("input_image", "image_url", url);
			if (detail != NULL)
				json_object_object_add(v, "detail", json_object_new_string(detail));
			json_object_array_add(parts, v);
		} else {
			xlate_error_set(err, 400, "messages",
			    "messages[%zu].content[%zu]: unsupported content part type '%s'",
			    msgno, i, type ? type : "(none)");
			goto fail;
		}
	}
	return parts;
 fail:
	json_object_put(parts);
	return NULL;
}

/* One assistant tool_calls entry -> function_call; records its id. */
static struct json_object *
tool_call_item(struct json_object *tc, size_t msgno, size_t i,
    struct json_object *call_ids, struct xlate_error *err)
{
	struct json_object *fn = json_get_obj(tc, "function"), *args = NULL, *item;
	const char *id = json_get_str(tc, "id"), *type = json_get_str(tc, "type");
	const char *name = json_get_str(fn, "name"), *argtext;

	if (type != NULL && strcmp(type, "function") != 0) {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].tool_calls[%zu]: unsupported type '%s'", msgno, i, type);
		return NULL;
	}
	if (id == NULL || *id == '\0' || name == NULL || *name == '\0') {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].tool_calls[%zu] needs an id and function.name", msgno, i);
		return NULL;
	}
	json_object_object_get_ex(fn, "arguments", &args);
	if (args == NULL || json_object_is_type(args, json_type_null))
		argtext = "{}";
	else if (json_object_is_type(args, json_type_string))
		argtext = json_object_get_string(args);
	else if (json_object_is_type(args, json_type_object))
		argtext = json_plain(args, NULL);
	else {
		xlate_error_set(err, 400, "messages",
		    "messages[%zu].tool_calls[%zu].function.arguments must be a string", msgno, i);
		return NULL;
	}
	if (*argtext == '\0')
		argtext = "{}";	/* a call without arguments */
	item = json_object_new_object();
	json_object_object_add(item, "type", json_object_new_string("function_call"));
	json_object_object_add(item, "call_id", json_object_new_string(id));
	json_object_object_add(item, "name", json_object_new_string(name));
	json_object_object_add(item, "arguments", json_object_new_string(argtext));
	json_object_object_add(call_ids, id, json_object_new_boolean(1));
	return item;
}

static int
add_messages(struct json_object *out, struct json_object *messages, struct xlate_error *err)
{
	struct json_object *input = json_object_new_array();
	struct json_object *call_ids = json_object_new_object();
	struct xlate_buf instr = { .limit = SIZE_MAX / 2 };
	size_t i, j, n = json_object_array_length(messages);
	int rc = -1;

	for (i = 0; i < n; i++) {
		struct json_object *m = json_object_array_get_idx(messages, i);
		struct json_object *content = NULL, *tcs, *parts, *item;
		const char *role = json_get_str(m, "role");
		char *text;

		if (role == NULL) {
			xlate_error_set(err, 400, "messages",
			    "messages[%zu] must be an object with a role", i);
			goto out;
		}
		json_object_object_get_ex(m, "content", &content);
		if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
			if ((text = content_text(content, "\n\n", false, i, err)) == NULL)
				goto out;
			if (*text != '\0') {
				if (instr.len > 0)
					xlate_buf_add(&instr, "\n\n", 2);
				xlate_buf_add(&instr, text, strlen(text));
			}
			free(text);
		} else if (strcmp(role, "user") == 0) {
			if (content == NULL) {
				xlate_error_set(err, 400, "messages",
				    "messages[%zu].content is required", i);
				goto out;
			}
			if ((parts = user_content(content, i, err)) == NULL)
				goto out;
			json_object_array_add(input, xlate_message("user", parts));
		} else if (strcmp(role, "assistant") == 0) {
			if ((text = content_text(content, "", true, i, err)) == NULL)
				goto out;
			if (*text != '\0') {
				parts = json_object_new_array();
				json_object_array_add(parts, xlate_part("output_text", "text", text));
				json_object_array_add(input, xlate_message("assistant", parts));
			}
			free(text);
			json_object_object_get_ex(m, "tool_calls", &tcs);
			if (tcs != NULL && !json_object_is_type(tcs, json_type_null)) {
				if (!json_object_is_type(tcs, json_type_array)) {
					xlate_error_set(err, 400, "messages",
					    "messages[%zu].tool_calls must be an array", i);
					goto out;
				}
				for (j = 0; j < json_object_array_length(tcs); j++) {
					item = tool_call_item(json_object_array_get_idx(tcs, j),
					    i, j, call_ids, err);
					if (item == NULL)
						goto out;
					json_object_array_add(input, item);
				}
			}
		} else if (strcmp(role, "tool") == 0) {
			const char *id = json_get_str(m, "tool_call_id");

			if (id == NULL || *id == '\0') {
				xlate_error_set(err, 400, "messages",
				    "messages[%zu].tool_call_id is required", i);
				goto out;
			}
			if (!json_object_object_get_ex(call_ids, id, NULL)) {
				xlate_error_set(err, 400, "messages",
				    "messages[%zu].tool_call_id '%s' matches no earlier tool call", i, id);
				goto out;
			}
			if ((text = content_text(content, "", false, i, err)) == NULL)
				goto out;
			item = json_object_new_object();
			json_object_object_add(item, "type",
			    json_object_new_string("function_call_output"));
			json_object_object_add(item, "call_id", json_object_new_string(id));
			json_object_object_add(item, "output", json_object_new_string(text));
			json_object_array_add(input, item);
			free(text);
		} else {
			xlate_error_set(err, 400, "messages",
			    "messages[%zu]: unsupported role '%s'", i, role);
			goto out;
		}
	}
	/* The backend wants a user turn; a system-only request gets an empty one. */
	if (json_object_array_length(input) == 0) {
		struct json_object *parts = json_object_new_array();
		json_object_array_add(parts, xlate_part("input_text", "text", ""));
		json_object_array_add(input, xlate_message("user", parts));
	}
	json_object_object_add(out, "instructions",
	    json_object_new_string(instr.len > 0 ? instr.data : DEFAULT_INSTRUCTIONS));
	json_object_object_add(out, "input", json_object_get(input));
	rc = 0;
 out:
	json_object_put(input);
	json_object_put(call_ids);
	xlate_buf_free(&instr);
	return rc;
}

static int
add_tools(struct json_object *out, struct json_object *chat, struct xlate_error *err)
{
	struct json_object *tools, *choice, *res;
	size_t i;

	if (json_object_object_get_ex(chat, "tools", &tools) &&
	    !json_object_is_type(tools, json_type_null)) {
		if (!json_object_is_type(tools, json_type_array)) {
			xlate_error_set(err, 400, "tools", "tools must be an array");
			return -1;
		}
		res = json_object_new_array();
		for (i = 0; i < json_object_array_length(tools); i++) {
			struct json_object *t = json_object_array_get_idx(tools, i), *fn, *v, *ft;
			const char *type = json_get_str(t, "type"), *name;

			if (type == NULL || strcmp(type, "function") != 0) {
				xlate_error_set(err, 400, "tools",
				    "tools[%zu]: unsupported tool type '%s' (only function tools)",
				    i, type ? type : "(none)");
				json_object_put(res);
				return -1;
			}
			fn = json_get_obj(t, "function");
			if ((name = json_get_str(fn, "name")) == NULL || *name == '\0') {
				xlate_error_set(err, 400, "tools",
				    "tools[%zu].function.name is required", i);
				json_object_put(res);
				return -1;
			}
			ft = json_object_new_object();
			json_object_object_add(ft, "type", json_object_new_string("function"));
			json_object_object_add(ft, "name", json_object_new_string(name));
			if (json_get_str(fn, "description") != NULL)
				json_object_object_add(ft, "description",
				    json_object_new_string(json_get_str(fn, "description")));
			if ((v = json_get_obj(fn, "parameters")) != NULL)
				json_object_object_add(ft, "parameters", json_object_get(v));
			else
				json_object_object_add(ft, "parameters", json_tokener_parse(
				    "{\"type\":\"object\",\"properties\":{}}"));
			/* Chat's strict defaults to false, the Responses API's to true. */
			json_object_object_add(ft, "strict",
			    json_object_new_boolean(json_get_bool(fn, "strict", false)));
			json_object_array_add(res, ft);
		}
		json_object_object_add(out, "tools", res);
	}
	if (json_object_object_get_ex(chat, "tool_choice", &choice) &&
	    !json_object_is_type(choice, json_type_null)) {
		if (json_object_is_type(choice, json_type_string)) {
			const char *c = json_object_get_string(choice);
			if (strcmp(c, "none") != 0 && strcmp(c, "auto") != 0 &&
			    strcmp(c, "required") != 0) {
				xlate_error_set(err, 400, "tool_choice",
				    "tool_choice must be none, auto, required or a function");
				return -1;
			}
			json_object_object_add(out, "tool_choice", json_object_new_string(c));
		} else {
			const char *name = json_get_str(json_get_obj(choice, "function"), "name");
			const char *type = json_get_str(choice, "type");
			if (type == NULL || strcmp(type, "function") != 0 || name == NULL) {
				xlate_error_set(err, 400, "tool_choice",
				    "tool_choice must be none, auto, required or "
				    "{\"type\":\"function\",\"function\":{\"name\":...}}");
				return -1;
			}
			res = json_object_new_object();
			json_object_object_add(res, "type", json_object_new_string("function"));
			json_object_object_add(res, "name", json_object_new_string(name));
			json_object_object_add(out, "tool_choice", res);
		}
	}
	if (json_object_object_get_ex(chat, "parallel_tool_calls", &choice) &&
	    !json_object_is_type(choice, json_type_null)) {
		if (!json_object_is_type(choice, json_type_boolean)) {
			xlate_error_set(err, 400, "parallel_tool_calls",
			    "parallel_tool_calls must be a boolean");
			return -1;
		}
		json_object_object_add(out, "parallel_tool_calls", json_object_get(choice));
	}
	return 0;
}

/* response_format and verbosity -> text{format, verbosity}. */
static int
add_text(struct json_object *out, struct json_object *chat, struct xlate_error *err)
{
	struct json_object *rf, *text = NULL, *fmt, *js, *schema;
	const char *type, *verbosity;

	if (json_object_object_get_ex(chat, "response_format", &rf) &&
	    !json_object_is_type(rf, json_type_null)) {
		type = json_get_str(rf, "type");
		if (type == NULL) {
			xlate_error_set(err, 400, "response_format",
			    "response_format must be an object with a type");
			return -1;
		}
		if (strcmp(type, "json_object") == 0) {
			fmt = json_object_new_object();
			json_object_object_add(fmt, "type", json_object_new_string("json_object"));
		} else if (strcmp(type, "json_schema") == 0) {
			js = json_get_obj(rf, "json_schema");
			schema = json_get_obj(js, "schema");
			if (json_get_str(js, "name") == NULL || schema == NULL) {
				xlate_error_set(err, 400, "response_format",
				    "response_format.json_schema needs a name and a schema");
				return -1;
			}
			fmt = json_object_new_object();
			json_object_object_add(fmt, "type", json_object_new_string("json_schema"));
			json_object_object_add(fmt, "name",
			    json_object_new_string(json_get_str(js, "name")));
			json_object_object_add(fmt, "schema", json_object_get(schema));
			json_object_object_add(fmt, "strict",
			    json_object_new_boolean(json_get_bool(js, "strict", false)));
			if (json_get_str(js, "description") != NULL)
				json_object_object_add(fmt, "description",
				    json_object_new_string(json_get_str(js, "description")));
		} else if (strcmp(type, "text") == 0) {
			fmt = NULL;
		} else {
			xlate_error_set(err, 400, "response_format",
			    "response_format.type must be text, json_object or json_schema");
			return -1;
		}
		if (fmt != NULL) {
			text = json_object_new_object();
			json_object_object_add(text, "format", fmt);
		}
	}
	if (json_object_object_get_ex(chat, "verbosity", &rf) &&
	    !json_object_is_type(rf, json_type_null)) {
		verbosity = json_object_is_type(rf, json_type_string) ?
		    json_object_get_string(rf) : "";
		if (strcmp(verbosity, "low") != 0 && strcmp(verbosity, "medium") != 0 &&
		    strcmp(verbosity, "high") != 0) {
			xlate_error_set(err, 400, "verbosity",
			    "verbosity must be low, medium or high");
			json_object_put(text);
			return -1;
		}
		if (text == NULL)
			text = json_object_new_object();
		json_object_object_add(text, "verbosity", json_object_new_string(verbosity));
	}
	if (text != NULL)
		json_object_object_add(out, "text", text);
	return 0;
}

bool
chat_include_usage(struct json_object *chat)
{
	return json_get_bool(json_get_obj(chat, "stream_options"), "include_usage", false);
}

struct json_object *
chat_request_to_responses(struct json_object *chat, struct xlate_error *err)
{
	struct json_object *out, *messages, *v;
	const char *model, *effort, *key;

	if (chat == NULL || !json_object_is_type(chat, json_type_object)) {
		xlate_error_set(err, 400, NULL, "the request body must be a JSON object");
		return NULL;
	}
	if ((model = json_get_str(chat, "model")) == NULL || *model == '\0') {
		xlate_error_set(err, 400, "model", "model is required");
		return NULL;
	}
	messages = json_get_array(chat, "messages");
	if (messages == NULL || json_object_array_length(messages) == 0) {
		xlate_error_set(err, 400, "messages", "messages must be a non-empty array");
		return NULL;
	}
	if (json_object_object_get_ex(chat, "n", &v) && !json_object_is_type(v, json_type_null) &&
	    (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 1)) {
		xlate_error_set(err, 400, "n", "n must be 1: one choice per request is supported");
		return NULL;
	}
	if (json_object_object_get_ex(chat, "stream", &v) && !json_object_is_type(v, json_type_null) &&
	    !json_object_is_type(v, json_type_boolean)) {
		xlate_error_set(err, 400, "stream", "stream must be a boolean");
		return NULL;
	}
	if ((json_object_object_get_ex(chat, "functions", &v) ||
	    json_object_object_get_ex(chat, "function_call", &v)) &&
	    !json_object_is_type(v, json_type_null)) {
		xlate_error_set(err, 400, "functions",
		    "the legacy functions and function_call fields are not supported; use tools");
		return NULL;
	}
	if (json_object_object_get_ex(chat, "stream_options", &v) &&
	    !json_object_is_type(v, json_type_null) && !json_object_is_type(v, json_type_object)) {
		xlate_error_set(err, 400, "stream_options", "stream_options must be an object");
		return NULL;
	}

	out = json_object_new_object();
	json_object_object_add(out, "model", json_object_new_string(model));
	if (add_messages(out, messages, err) != 0 || add_tools(out, chat, err) != 0 ||
	    add_text(out, chat, err) != 0)
		goto fail;
	if (json_object_object_get_ex(chat, "reasoning_effort", &v) &&
	    !json_object_is_type(v, json_type_null)) {
		effort = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
		if (!in_list(efforts, effort)) {
			xlate_error_set(err, 400, "reasoning_effort",
			    "reasoning_effort must be none, minimal, low, medium, high or xhigh");
			goto fail;
		}
		v = json_object_new_object();
		json_object_object_add(v, "effort", json_object_new_string(effort));
		json_object_object_add(v, "summary", json_object_new_string("auto"));
		json_object_object_add(out, "reasoning", v);
	}
	json_object_object_add(out, "stream",
	    json_object_new_boolean(json_get_bool(chat, "stream", false)));
	if ((key = json_get_str(chat, "prompt_cache_key")) == NULL || *key == '\0')
		key = json_get_str(chat, "user");
	if (key != NULL && *key != '\0')
		json_object_object_add(out, "prompt_cache_key", json_object_new_string(key));
	return out;
 fail:
	json_object_put(out);
	return NULL;
}

/* ---- the answer ---- */

struct chat_tool {
	char		*item_id;
	int64_t		 output_index;
	char		*call_id;
	char		*name;
	bool		 args_sent;	/* arguments reached the client (or the buffer) */
	struct xlate_buf args;		/* non-stream only */
};

enum chat_end { END_NONE, END_DONE, END_ERROR };

struct chat_stream {
	char		*id;
	char		*model;
	int64_t		 created;
	bool		 include_usage;
	size_t		 limit;		/* bytes the non-stream result may keep */
	size_t		 total;		/* bytes it keeps */
	bool		 overflow;	/* it would keep more */

	bool		 role_sent;
	bool		 text_open;	/* the current message item streamed text */
	bool		 reasoning_open;/* the current reasoning item streamed a summary */
	bool		 reasoning_any;	/* some reasoning text went out */
	int64_t		 summary_index;
	struct xlate_buf text, reasoning;	/* non-stream only */
	struct chat_tool *tools;
	size_t		 ntools;

	enum chat_end	 end;
	bool		 ended;		/* chat_stream_end ran */
	const char	*finish;
	struct xlate_usage usage;
	struct xlate_upstream_error error;
};

struct chat_stream *
chat_stream_new(const struct xlate_stream_opts *opts)
{
	struct chat_stream *st = xcalloc(1, sizeof(*st));

	st->id = xlate_id("chatcmpl-", opts->id_seed);
	st->model = xstrdup(opts->client_model != NULL ? opts->client_model : "");
	st->created = opts->created;
	st->include_usage = opts->include_usage;
	st->limit = opts->max_aggregate ? opts->max_aggregate : XLATE_DEFAULT_AGGREGATE;
	st->text.limit = st->reasoning.limit = SIZE_MAX / 2;	/* bounded by keep() */
	return st;
}

void
chat_stream_free(struct chat_stream *st)
{
	size_t i;

	if (st == NULL)
		return;
	for (i = 0; i < st->ntools; i++) {
		free(st->tools[i].item_id);
		free(st->tools[i].call_id);
		free(st->tools[i].name);
		xlate_buf_free(&st->tools[i].args);
	}
	free(st->tools);
	free(st->id);
	free(st->model);
	xlate_buf_free(&st->text);
	xlate_buf_free(&st->reasoning);
	free(st);
}

static struct json_object *
chunk(struct chat_stream *st, struct json_object *delta, const char *finish)
{
	struct json_object *c = json_object_new_object(), *choices, *ch;

	json_object_object_add(c, "id", json_object_new_string(st->id));
	json_object_object_add(c, "object", json_object_new_string("chat.completion.chunk"));
	json_object_object_add(c, "created", json_object_new_int64(st->created));
	json_object_object_add(c, "model", json_object_new_string(st->model));
	choices = json_object_new_array();
	if (delta != NULL) {
		ch = json_object_new_object();
		json_object_object_add(ch, "index", json_object_new_int(0));
		json_object_object_add(ch, "delta", delta);
		json_object_object_add(ch, "finish_reason",
		    finish != NULL ? json_object_new_string(finish) : NULL);
		json_object_array_add(choices, ch);
	}
	json_object_object_add(c, "choices", choices);
	return c;
}

/* Keep n more bytes for the non-stream result, or mark the overflow. */
static bool
keep(struct chat_stream *st, size_t n)
{
	if (st->overflow || st->total + n > st->limit) {
		st->overflow = true;
		return false;
	}
	st->total += n;
	return true;
}

static int
emit_role(struct chat_stream *st, xlate_emit_fn emit, void *arg)
{
	struct json_object *d;

	if (st->role_sent)
		return 0;
	st->role_sent = true;
	d = json_object_new_object();
	json_object_object_add(d, "role", json_object_new_string("assistant"));
	json_object_object_add(d, "content", json_object_new_string(""));
	return xlate_emit_json(emit, arg, NULL, chunk(st, d, NULL));
}

/* delta.content or delta.reasoning_content */
static int
emit_text(struct chat_stream *st, const char *key, const char *text,
    xlate_emit_fn emit, void *arg)
{
	struct json_object *d;

	if (*text == '\0')
		return 0;
	if (emit == NULL) {
		struct xlate_buf *b = strcmp(key, "content") == 0 ? &st->text : &st->reasoning;
		if (keep(st, strlen(text)))
			xlate_buf_add(b, text, strlen(text));
		return 0;
	}
	if (emit_role(st, emit, arg) != 0)
		return -1;
	d = json_object_new_object();
	json_object_object_add(d, key, json_object_new_string(text));
	return xlate_emit_json(emit, arg, NULL, chunk(st, d, NULL));
}

static struct chat_tool *
find_tool(struct chat_stream *st, const char *item_id, int64_t output_index)
{
	size_t i;

	/* newest first: deltas nearly always belong to the last call */
	for (i = st->ntools; i-- > 0;) {
		struct chat_tool *t = &st->tools[i];
		if (item_id != NULL && t->item_id != NULL) {
			if (strcmp(item_id, t->item_id) == 0)
				return t;
		} else if (output_index >= 0 && t->output_index == output_index)
			return t;
	}
	return NULL;
}

/* delta.tool_calls[{index, id, type, function{name, arguments}}] */
static int
emit_tool(struct chat_stream *st, struct chat_tool *t, bool start, const char *args,
    xlate_emit_fn emit, void *arg)
{
	struct json_object *d, *tcs, *tc, *fn;

	if (emit == NULL) {
		if (args != NULL && keep(st, strlen(args)))
			xlate_buf_add(&t->args, args, strlen(args));
		return 0;
	}
	if (emit_role(st, emit, arg) != 0)
		return -1;
	tc = json_object_new_object();
	fn = json_object_new_object();
	json_object_object_add(tc, "index", json_object_new_int((int)(t - st->tools)));
	if (start) {
		json_object_object_add(tc, "id", json_object_new_string(t->call_id));
		json_object_object_add(tc, "type", json_object_new_string("function"));
		json_object_object_add(fn, "name", json_object_new_string(t->name));
	}
	json_object_object_add(fn, "arguments", xlate_str(args));
	json_object_object_add(tc, "function", fn);
	tcs = json_object_new_array();
	json_object_array_add(tcs, tc);
	d = json_object_new_object();
	json_object_object_add(d, "tool_calls", tcs);
	return xlate_emit_json(emit, arg, NULL, chunk(st, d, NULL));
}

static struct chat_tool *
tool_start(struct chat_stream *st, struct json_object *ev, struct json_object *item,
    xlate_emit_fn emit, void *arg, int *rc)
{
	struct chat_tool *t;
	const char *call_id = json_get_str(item, "call_id"), *name = json_get_str(item, "name");

	*rc = 0;
	if (st->ntools >= XLATE_MAX_TOOL_CALLS) {
		st->end = END_ERROR;
		st->error.status = 502;
		strlcpy_safe(st->error.code, "too_many_tool_calls", sizeof(st->error.code));
		snprintf(st->error.message, sizeof(st->error.message),
		    "the response has more than %d tool calls", XLATE_MAX_TOOL_CALLS);
		return NULL;
	}
	if (emit == NULL)
		keep(st, 64 + (call_id ? strlen(call_id) : 0) + (name ? strlen(name) : 0));
	st->tools = xrealloc(st->tools, (st->ntools + 1) * sizeof(*st->tools));
	t = &st->tools[st->ntools++];
	memset(t, 0, sizeof(*t));
	t->item_id = xstrdup(json_get_str(item, "id"));
	t->output_index = json_get_int(ev, "output_index", -1);
	t->call_id = xstrdup(call_id != NULL ? call_id : t->item_id != NULL ? t->item_id : "");
	t->name = xstrdup(name != NULL ? name : "");
	t->args.limit = SIZE_MAX / 2;
	*rc = emit_tool(st, t, true, NULL, emit, arg);
	return t;
}

static bool
same(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The texts of a message item's output_text parts (a fallback when no
 * delta was streamed), joined, into emit_text. */
static int
item_texts(struct chat_stream *st, struct json_object *parts, const char *part_type,
    const char *key, const char *field, xlate_emit_fn emit, void *arg)
{
	size_t i;

	for (i = 0; parts != NULL && i < json_object_array_length(parts); i++) {
		struct json_object *p = json_object_array_get_idx(parts, i);
		const char *type = json_get_str(p, "type"), *text = json_get_str(p, field);
		if (type == NULL || strcmp(type, part_type) != 0 || text == NULL)
			continue;
		if (strcmp(key, "reasoning_content") == 0 && *text != '\0') {
			if (st->reasoning_any &&
			    emit_text(st, key, "\n\n", emit, arg) != 0)
				return -1;
			st->reasoning_any = true;
		}
		if (emit_text(st, key, text, emit, arg) != 0)
			return -1;
	}
	return 0;
}

static int
item_done(struct chat_stream *st, struct json_object *ev, xlate_emit_fn emit, void *arg)
{
	struct json_object *item = json_get_obj(ev, "item");
	const char *type = json_get_str(item, "type"), *id = json_get_str(item, "id");
	struct chat_tool *t;
	int rc = 0;

	if (type == NULL)
		return 0;
	/* Items come one after the other: deltas before a done belong to it. */
	if (strcmp(type, "message") == 0) {
		if (st->text_open) {
			st->text_open = false;
			return 0;
		}
		return item_texts(st, json_get_array(item, "content"), "output_text",
		    "content", "text", emit, arg);
	}
	if (strcmp(type, "reasoning") == 0) {
		if (st->reasoning_open) {
			st->reasoning_open = false;
			return 0;
		}
		return item_texts(st, json_get_array(item, "summary"), "summary_text",
		    "reasoning_content", "text", emit, arg);
	}
	if (strcmp(type, "function_call") == 0) {
		t = find_tool(st, id, json_get_int(ev, "output_index", -1));
		if (t == NULL && (t = tool_start(st, ev, item, emit, arg, &rc)) == NULL)
			return rc;
		if (rc == 0 && !t->args_sent) {
			t->args_sent = true;
			rc = emit_tool(st, t, false, json_get_str(item, "arguments"), emit, arg);
		}
	}
	return rc;
}

static void
set_end(struct chat_stream *st, struct json_object *ev, const char *type)
{
	struct json_object *resp = json_get_obj(ev, "response");
	const char *reason;

	if (strcmp(type, "response.failed") == 0 || strcmp(type, "error") == 0) {
		xlate_upstream_error_from(&st->error, ev);
		st->end = END_ERROR;
		return;
	}
	xlate_usage_from(&st->usage, resp);
	st->end = END_DONE;
	if (strcmp(type, "response.incomplete") == 0) {
		reason = json_get_str(json_get_obj(resp, "incomplete_details"), "reason");
		st->finish = same(reason, "content_filter") ? "content_filter" : "length";
	} else
		st->finish = st->ntools > 0 ? "tool_calls" : "stop";
}

int
chat_stream_event(struct chat_stream *st, const char *type, const char *frame,
    size_t len, xlate_emit_fn emit, void *arg)
{
	struct json_object *ev, *item;
	struct chat_tool *t;
	const char *s, *id;
	char perr[64];
	int rc = 0;

	if (st->end != END_NONE || type == NULL)
		return 0;
	if ((ev = json_parse_buf(frame, len, perr, sizeof(perr))) == NULL)
		return -1;
	id = json_get_str(ev, "item_id");
	if (strcmp(type, "response.output_text.delta") == 0) {
		if ((s = json_get_str(ev, "delta")) != NULL) {
			st->text_open = true;
			rc = emit_text(st, "content", s, emit, arg);
		}
	} else if (strcmp(type, "response.reasoning_summary_text.delta") == 0) {
		if ((s = json_get_str(ev, "delta")) != NULL) {
			int64_t si = json_get_int(ev, "summary_index", 0);
			/* a blank line between summary parts and items */
			if ((!st->reasoning_open && st->reasoning_any) ||
			    (st->reasoning_open && si != st->summary_index))
				rc = emit_text(st, "reasoning_content", "\n\n", emit, arg);
			st->reasoning_open = st->reasoning_any = true;
			st->summary_index = si;
			if (rc == 0)
				rc = emit_text(st, "reasoning_content", s, emit, arg);
		}
	} else if (strcmp(type, "response.output_item.added") == 0) {
		item = json_get_obj(ev, "item");
		if (same(json_get_str(item, "type"), "function_call"))
			tool_start(st, ev, item, emit, arg, &rc);
	} else if (strcmp(type, "response.function_call_arguments.delta") == 0) {
		t = find_tool(st, id, json_get_int(ev, "output_index", -1));
		if (t != NULL && (s = json_get_str(ev, "delta")) != NULL && *s != '\0') {
			t->args_sent = true;
			rc = emit_tool(st, t, false, s, emit, arg);
		}
	} else if (strcmp(type, "response.function_call_arguments.done") == 0) {
		t = find_tool(st, id, json_get_int(ev, "output_index", -1));
		if (t != NULL && !t->args_sent && (s = json_get_str(ev, "arguments")) != NULL) {
			t->args_sent = true;
			rc = emit_tool(st, t, false, s, emit, arg);
		}
	} else if (strcmp(type, "response.output_item.done") == 0) {
		rc = item_done(st, ev, emit, arg);
	} else if (strcmp(type, "response.completed") == 0 ||
	    strcmp(type, "response.incomplete") == 0 ||
	    strcmp(type, "response.failed") == 0 || strcmp(type, "error") == 0) {
		set_end(st, ev, type);
	}
	json_object_put(ev);
	return rc;
}

bool
chat_stream_started(const struct chat_stream *st)
{
	return st->role_sent;
}

static struct json_object *
usage_json(const struct xlate_usage *u)
{
	struct json_object *o = json_object_new_object(), *d;

	json_object_object_add(o, "prompt_tokens", json_object_new_int64(u->input));
	json_object_object_add(o, "completion_tokens", json_object_new_int64(u->output));
	json_object_object_add(o, "total_tokens", json_object_new_int64(u->input + u->output));
	d = json_object_new_object();
	json_object_object_add(d, "cached_tokens", json_object_new_int64(u->cached));
	json_object_object_add(o, "prompt_tokens_details", d);
	d = json_object_new_object();
	json_object_object_add(d, "reasoning_tokens", json_object_new_int64(u->reasoning));
	json_object_object_add(o, "completion_tokens_details", d);
	return o;
}

static const char *
chat_error_type(int status)
{
	switch (status) {
	case 401:
		return "authentication_error";
	case 403:
		return "permission_error";
	case 429:
		return "rate_limit_error";
	default:
		return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

static struct json_object *
error_json(int status, const char *code, const char *param, const char *message)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "message", xlate_str(message));
	json_object_object_add(e, "type", json_object_new_string(chat_error_type(status)));
	json_object_object_add(e, "param", param != NULL ? json_object_new_string(param) : NULL);
	json_object_object_add(e, "code", code != NULL ? json_object_new_string(code) : NULL);
	json_object_object_add(o, "error", e);
	return o;
}

static char *
body_of(struct json_object *o)
{
	char *s = xstrdup(json_plain(o, NULL));

	json_object_put(o);
	return s;
}

char *
chat_error_body(int status, const char *code, const char *message)
{
	return body_of(error_json(status, code, NULL, message));
}

char *
chat_xlate_error_body(const struct xlate_error *err)
{
	return body_of(error_json(err->status, err->code, err->param, err->message));
}

/* The turn ended without a terminal event: an error for the client. */
static void
set_disconnected(struct chat_stream *st, const char *why)
{
	st->end = END_ERROR;
	st->error.status = 502;
	strlcpy_safe(st->error.code, "stream_disconnected", sizeof(st->error.code));
	snprintf(st->error.message, sizeof(st->error.message),
	    "upstream stream ended before response.completed: %s",
	    why != NULL ? why : "connection closed");
}

int
chat_stream_end(struct chat_stream *st, const char *abort_reason,
    xlate_emit_fn emit, void *arg)
{
	if (st->ended)
		return 0;
	st->ended = true;
	if (st->end == END_NONE)
		set_disconnected(st, abort_reason);
	if (emit == NULL)
		return 0;
	if (st->end == END_ERROR)
		return xlate_emit_json(emit, arg, NULL, error_json(st->error.status,
		    st->error.code, NULL, st->error.message));
	if (emit_role(st, emit, arg) != 0 ||
	    xlate_emit_json(emit, arg, NULL,
	    chunk(st, json_object_new_object(), st->finish)) != 0)
		return -1;
	if (st->include_usage) {
		struct json_object *c = chunk(st, NULL, NULL);
		json_object_object_add(c, "usage", usage_json(&st->usage));
		if (xlate_emit_json(emit, arg, NULL, c) != 0)
			return -1;
	}
	return emit(arg, NULL, "[DONE]", 6) != 0 ? -1 : 0;
}

struct json_object *
chat_stream_result(struct chat_stream *st, int *status)
{
	struct json_object *o, *msg, *choices, *ch, *tcs;
	size_t i;

	if (!st->ended)
		chat_stream_end(st, NULL, NULL, NULL);
	if (st->end == END_ERROR) {
		*status = st->error.status;
		return error_json(st->error.status, st->error.code, NULL, st->error.message);
	}
	if (st->overflow) {
		*status = 502;
		return error_json(502, "response_too_large", NULL,
		    "the response is larger than the non-stream limit; use stream:true");
	}
	*status = 200;
	msg = json_object_new_object();
	json_object_object_add(msg, "role", json_object_new_string("assistant"));
	json_object_object_add(msg, "content", st->text.len > 0 || st->ntools == 0 ?
	    xlate_str(st->text.data) : NULL);
	if (st->reasoning.len > 0)
		json_object_object_add(msg, "reasoning_content",
		    json_object_new_string(st->reasoning.data));
	if (st->ntools > 0) {
		tcs = json_object_new_array();
		for (i = 0; i < st->ntools; i++) {
			struct json_object *tc = json_object_new_object(), *fn;
			fn = json_object_new_object();
			json_object_object_add(fn, "name", json_object_new_string(st->tools[i].name));
			json_object_object_add(fn, "arguments", xlate_str(st->tools[i].args.data));
			json_object_object_add(tc, "id", json_object_new_string(st->tools[i].call_id));
			json_object_object_add(tc, "type", json_object_new_string("function"));
			json_object_object_add(tc, "function", fn);
			json_object_array_add(tcs, tc);
		}
		json_object_object_add(msg, "tool_calls", tcs);
	}
	ch = json_object_new_object();
	json_object_object_add(ch, "index", json_object_new_int(0));
	json_object_object_add(ch, "message", msg);
	json_object_object_add(ch, "finish_reason", json_object_new_string(st->finish));
	choices = json_object_new_array();
	json_object_array_add(choices, ch);
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(st->id));
	json_object_object_add(o, "object", json_object_new_string("chat.completion"));
	json_object_object_add(o, "created", json_object_new_int64(st->created));
	json_object_object_add(o, "model", json_object_new_string(st->model));
	json_object_object_add(o, "choices", choices);
	json_object_object_add(o, "usage", usage_json(&st->usage));
	return o;
}
