/*
 * The request scanner (common/jscan.c) against json-c, which is laxer:
 * whatever the scanner takes json-c must take too, every string must
 * unescape to json-c's bytes, and walking the index must cover each
 * container's children exactly.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jscan.h"
#include "jsonutil.h"

/* json-c and the scanner differ on lone surrogates (json-c keeps some as
 * CESU bytes): leave strings with \ud... escapes out of the comparison. */
static bool
has_surrogate(const char *raw, size_t len)
{
	size_t i;

	for (i = 0; i + 2 < len; i++)
		if (raw[i] == '\\' && raw[i + 1] == 'u' && (raw[i + 2] == 'd' || raw[i + 2] == 'D'))
			return true;
	return false;
}

static void
check_string(const struct jdoc *d, int i)
{
	struct json_object *o;
	const char *raw;
	char *mine;
	size_t len;

	raw = jdoc_raw(d, i, &len);
	if (has_surrogate(raw, len))
		return;
	if ((o = json_parse_buf(raw, len, NULL, 0)) == NULL ||
	    !json_object_is_type(o, json_type_string))
		abort();
	mine = jdoc_strdup(d, i);
	if ((size_t)json_object_get_string_len(o) != strlen(mine) &&
	    memchr(json_object_get_string(o), '\0', (size_t)json_object_get_string_len(o)) == NULL)
		abort();
	if (memcmp(mine, json_object_get_string(o), strlen(mine)) != 0)
		abort();
	free(mine);
	json_object_put(o);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *o;
	struct jdoc d;
	char err[128];
	uint32_t i, n;
	int c;

	if (jdoc_parse(&d, (const char *)data, size, err, sizeof(err)) == -1) {
		if (err[0] == '\0')
			abort();	/* a refusal always says why */
		return 0;
	}
	o = json_parse_buf((const char *)data, size, NULL, 0);
	if (o == NULL && !jdoc_is(&d, 0, JT_NULL))
		abort();
	json_object_put(o);
	for (i = 0; i < d.ntok; i++) {
		if (d.tok[i].next <= i || d.tok[i].next > d.ntok ||
		    d.tok[i].start + d.tok[i].len > d.len)
			abort();
		if (d.tok[i].type == JT_STRING)
			check_string(&d, (int)i);
		if (d.tok[i].type != JT_OBJECT && d.tok[i].type != JT_ARRAY)
			continue;
		n = 0;
		for (c = jdoc_first(&d, (int)i); c >= 0; c = jdoc_next(&d, (int)i, c)) {
			if (d.tok[i].type == JT_OBJECT && !jdoc_is(&d, c, JT_STRING))
				abort();	/* a key */
			n++;
		}
		if (n != d.tok[i].count)
			abort();
	}
	jdoc_free(&d);
	return 0;
}
