/*
 * The canonical prompt of a Responses request, as the cache model sees it.
 *
 * The prompt is instructions, then tools (as canonical JSON), then every
 * input item in order.  An item has one canonical form whether a client
 * sends it as input or the simulator produced it as output: a message is
 * its role and the text of its parts; any other item is its JSON with
 * sorted keys and without "id" and "status".  So a client that resends the
 * whole history and a client that continues with previous_response_id
 * produce the same bytes.
 */
#ifndef SIM_PROMPT_H
#define SIM_PROMPT_H

#include <stddef.h>
#include <json-c/json.h>

/* Growable byte buffer with a hard size limit. */
struct sbuf {
	char	*buf;
	size_t	 len;
	size_t	 cap;
	size_t	 max;		/* adding beyond this sets overflow */
	int	 overflow;
};

void	sbuf_init(struct sbuf *sb, size_t max);
void	sbuf_free(struct sbuf *sb);
void	sbuf_reset(struct sbuf *sb);
/* 0 on success, -1 (and overflow set) when max would be exceeded. */
int	sbuf_add(struct sbuf *sb, const void *data, size_t len);
int	sbuf_adds(struct sbuf *sb, const char *s);
int	sbuf_addc(struct sbuf *sb, char c);
int	sbuf_printf(struct sbuf *sb, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Hands the NUL-terminated buffer to the caller and resets sb. */
char	*sbuf_take(struct sbuf *sb, size_t *len);

/* Canonical JSON: object keys sorted, no whitespace.  With drop_id_status,
 * the top-level "id" and "status" members are left out. */
int	json_canonical(struct sbuf *sb, struct json_object *o, int drop_id_status);

/* Instructions and tools of a request (the part before the items). */
int	prompt_add_header(struct sbuf *sb, struct json_object *req);
int	prompt_add_item(struct sbuf *sb, struct json_object *item);
/* Every element of an input array; a string input counts as one user
 * message.  NULL adds nothing. */
int	prompt_add_input(struct sbuf *sb, struct json_object *input);

/* Text of the last user message in input (parts joined by newlines),
 * malloc'd; NULL when there is none. */
char	*prompt_last_user_text(struct json_object *input);

#endif
