/*
 * json-c helpers.  Ownership follows json-c: parse returns a new object
 * the caller must json_object_put(); getters borrow from their parent.
 */
#ifndef CODEXPOOL_JSONUTIL_H
#define CODEXPOOL_JSONUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <json-c/json.h>

#define JSON_MAX_DEPTH	64
/* json_parse_buf's error for a document that is just null (valid JSON,
 * but never what a caller wants). */
#define JSON_ERR_NULL	"the document is JSON null"

/* Strict parse of exactly len bytes (trailing bytes other than
 * whitespace are an error).  Returns a new object or NULL with err set. */
struct json_object *json_parse_buf(const char *buf, size_t len, char *err, size_t errlen);

/* Borrowed lookups; NULL / def when absent or of another type. */
const char *json_get_str(struct json_object *o, const char *key);
int64_t	json_get_int(struct json_object *o, const char *key, int64_t def);
bool	json_get_bool(struct json_object *o, const char *key, bool def);
struct json_object *json_get_obj(struct json_object *o, const char *key);
struct json_object *json_get_array(struct json_object *o, const char *key);
/* Dotted path through objects: json_get_path(o, "response.usage.input_tokens"). */
struct json_object *json_get_path(struct json_object *o, const char *path);

/* Plain serialisation, owned by o (copy before putting o). */
const char *json_plain(struct json_object *o, size_t *len);

/* An OpenAI-style error body: {"error":{"message":..,"type":..,"code":..}}.
 * Returns a malloc'd NUL-terminated string. */
char	*json_error_body(const char *message, const char *type, const char *code);
/*
 * The type of a frame that starts {"type":"...", as every upstream event
 * does, read without parsing; false when it does not start so, the type
 * holds an escape, or it does not fit in size.
 */
bool	json_lead_type(const char *buf, size_t len, char *type, size_t size);

#endif
