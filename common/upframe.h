/*
 * The response.create frame that goes upstream for a turn: the client's
 * Responses request with the account's own ids.  Pure (json-c in, text
 * out) so the tests check every rewrite directly.
 */
#ifndef CODEXPOOL_UPFRAME_H
#define CODEXPOOL_UPFRAME_H

#include <stddef.h>

#include <json-c/json.h>

/*
 * {"type":"response.create", ...body} with stream forced on, store off
 * unless the client set it, a bare string input turned into one user
 * message, the client's prompt_cache_key replaced by upstream_conv (the
 * (account, conversation) id; NULL: none) and the account's installation
 * id in client_metadata.  An implicit resume (resume_prev non-NULL) sends
 * only the input items from resume_skip on, continuing resume_prev.
 * Caller frees the text.
 */
char	*upframe_build(struct json_object *body, const char *upstream_conv,
	    const char *installation_id, int resume_skip, const char *resume_prev,
	    size_t *len);

#endif
