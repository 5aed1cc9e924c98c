/*
 * Pool actions: what changes the pool across workers.  The pool map
 * (poolmap.c) keeps the books; these tell the workers.
 */
#include "config.h"

#include "front_ws.h"
#include "msgcodec.h"
#include "supervisor.h"

int
sv_evict_account(const char *entry)
{
	struct m_evict e = { .entry = entry };
	struct msgbuf b;
	int n = pm_evict_account(&sv->pool, entry);

	msgbuf_init(&b);
	m_evict_encode(&b, &e);
	workers_broadcast(MSG_EVICT, &b);
	msgbuf_free(&b);
	/* client WebSockets reconnect and find the account's new state */
	ws_close_account(entry, "the account's state changed; reconnect");
	return n;
}

void
sv_set_pool_enabled(bool on)
{
	struct m_pool_enable e = { .enabled = on };
	struct msgbuf b;

	sv->pool_enabled = on;
	if (!on)
		pm_close_all(&sv->pool);
	msgbuf_init(&b);
	m_pool_enable_encode(&b, &e);
	workers_broadcast(MSG_POOL_ENABLE, &b);
	msgbuf_free(&b);
}

void
pool_close_conn(const struct pm_conn *c, const char *reason)
{
	struct m_conn_close cc = { .conn_id = c->id, .reason = reason };
	struct msgbuf b;

	msgbuf_init(&b);
	m_conn_close_encode(&b, &cc);
	workers_send(c->slot, MSG_CONN_CLOSE, 0, &b);
	msgbuf_free(&b);
}
