/*
 * Which conversation a request belongs to.
 *
 * Order (first match wins):
 *   1. the body's prompt_cache_key;
 *   2. a session header: session_id, or session-id (Codex CLI 0.169);
 *   3. none: the turn goes out on a one-shot connection.
 * A previous_response_id is handled before this, by the connection that
 * owns it.
 */
#include "config.h"

#include <ctype.h>
#include <string.h>

#include <event2/http.h>

#include "jsonutil.h"
#include "supervisor.h"

#define CONV_MAX	512

static char *
trimmed_dup(const char *s)
{
	size_t n;

	while (*s && isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0 || n > CONV_MAX)
		return NULL;
	{
		char *d = xmalloc(n + 1);
		memcpy(d, s, n);
		d[n] = '\0';
		return d;
	}
}

const char *
conversation_of(struct evhttp_request *http, struct json_object *body, char **conv)
{
	static const char *headers[] = { "session_id", "session-id", NULL };
	struct evkeyvalq *h = evhttp_request_get_input_headers(http);
	const char *v;
	int i;

	*conv = NULL;
	if ((v = json_get_str(body, "prompt_cache_key")) != NULL &&
	    (*conv = trimmed_dup(v)) != NULL)
		return "prompt_cache_key";
	for (i = 0; headers[i]; i++)
		if ((v = evhttp_find_header(h, headers[i])) != NULL &&
		    (*conv = trimmed_dup(v)) != NULL)
			return headers[i];
	return NULL;
}
