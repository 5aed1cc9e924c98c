/*
 * Implicit resume: a stateless client (chat, messages, or a Responses
 * client without previous_response_id) resends its whole history every
 * turn.  When that history extends exactly what the conversation's pooled
 * connection last sent and received, only the new items need to go
 * upstream, with previous_response_id: the same cache, far fewer bytes.
 *
 * A chain is a running hash over a conversation's items in a normal form
 * that the client's echo and the upstream's output share: a message is its
 * role and its content (text, or the part itself for images and files),
 * a function call its call_id, name and arguments, a call's output its
 * call_id and output.  Reasoning items are left out (clients do not all
 * echo them).  Items are tokens of a checked document (jscan.h), -1 for
 * none.  Pure: no I/O.
 */
#ifndef CODEXPOOL_RESUME_H
#define CODEXPOOL_RESUME_H

#include <stdint.h>

#include "jscan.h"

struct resume_chain {
	uint64_t	hash;
	uint32_t	count;		/* items folded in */
};

void	resume_chain_init(struct resume_chain *c);
/* Fold one input or output item in (reasoning items are skipped). */
void	resume_chain_add(struct resume_chain *c, const struct jdoc *d, int item);
/* Fold every item of an input array (or a bare string input) in. */
void	resume_chain_add_input(struct resume_chain *c, const struct jdoc *d, int input);
/*
 * If input starts with exactly the items chain describes and has more
 * after them, the index of the first new item; else -1.
 */
int	resume_prefix(const struct resume_chain *c, const struct jdoc *d, int input);

#endif
