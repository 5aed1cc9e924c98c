/*
 * Pool actions: what changes the pool across workers.  The pool map
 * (poolmap.c) keeps the books; these tell the workers.
 */
#include "config.h"

#include "msgtypes.h"
#include "supervisor.h"

int
sv_evict_account(const char *entry)
{
	struct msgbuf b;
	int n = pm_evict_account(&sv->pool, entry);

	msgbuf_init(&b);
	msg_add_str(&b, entry);
	workers_broadcast(MSG_EVICT, &b);
	msgbuf_free(&b);
	return n;
}

void
sv_set_pool_enabled(bool on)
{
	struct msgbuf b;

	sv->pool_enabled = on;
	if (!on)
		pm_close_all(&sv->pool);
	msgbuf_init(&b);
	msg_add_u8(&b, on);
	workers_broadcast(MSG_POOL_ENABLE, &b);
	msgbuf_free(&b);
}

void
pool_close_conn(const struct pm_conn *c, const char *reason)
{
	struct msgbuf b;

	msgbuf_init(&b);
	msg_add_u64(&b, c->id);
	msg_add_str(&b, reason);
	workers_send(c->slot, MSG_CONN_CLOSE, 0, &b);
	msgbuf_free(&b);
}
