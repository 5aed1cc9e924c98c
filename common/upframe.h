/*
 * The response.create frame that goes upstream for a turn: the client's
 * Responses request with the account's own ids.  The body is spliced, not
 * rebuilt: every field the proxy does not change goes upstream as the
 * bytes the client sent.  Pure (a checked document in, text out) so the
 * tests check every rewrite directly.
 */
#ifndef CODEXPOOL_UPFRAME_H
#define CODEXPOOL_UPFRAME_H

#include <stddef.h>

#include "jscan.h"

/* What the proxy puts into a turn's frame; NULL/0: nothing. */
struct upframe_ids {
	const char	*upstream_conv;	/* the (account, conversation) id */
	const char	*installation_id; /* the account's */
	const char	*model;		/* the model to ask for, when mapped */
	int		 resume_skip;	/* implicit resume: the first new item */
	const char	*resume_prev;	/* ... continuing this response */
};

/*
 * {"type":"response.create", ...body} with stream forced on, store off
 * unless the client set it, a bare string input turned into one user
 * message, the client's prompt_cache_key replaced by upstream_conv and the
 * account's installation id in client_metadata.  An implicit resume
 * (resume_prev set) sends only the input items from resume_skip on,
 * continuing resume_prev.  Of a repeated top-level key only the last goes,
 * as json-c would keep it.  body's root must be an object.  Caller frees
 * the text.
 */
char	*upframe_build(const struct jdoc *body, const struct upframe_ids *ids,
	    size_t *len);

/*
 * Encrypted reasoning can only be read by the account that wrote it: take
 * the reasoning items out of body's input (body is rebuilt).  Returns how
 * many were dropped.
 */
size_t	upframe_drop_reasoning(struct jdoc *body);

#endif
