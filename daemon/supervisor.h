/*
 * codexpoold's core types and the functions its modules share.
 *
 * One supervisor process: the client HTTP API, the control socket, the
 * account, DNS, and the worker slots, all on one libevent base.  Each
 * client turn is a struct turn (turn.h) that lives from the HTTP request
 * until its worker sends the final message for it.
 */
#ifndef CODEXPOOL_SUPERVISOR_H
#define CODEXPOOL_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "cfgkeys.h"
#include "convlog.h"
#include "msg.h"
#include "poolmap.h"
#include "stats.h"
#include "idmap.h"
#include "util.h"

struct evbuffer;
struct oauth_req;
struct store;

#define SV_MAX_WORKERS		256
#define SV_MAX_UPSTREAM_ADDRS	16
#define ENTRY_LEN		17	/* 16 hex + NUL */

/*
 * One ChatGPT account: the in-memory copy of its row in the store.  The
 * store is written first (tokens durably) and this copy follows, so a
 * crash never loses a rotated refresh token.
 */
struct account {
	char		 entry[ENTRY_LEN];	/* our id: 16 hex */
	char		*label;
	char		*account_id;		/* chatgpt-account-id */
	char		*access_token;		/* secret */
	char		*refresh_token;		/* secret */
	char		*id_token;		/* secret */
	int64_t		 access_expires;	/* unix s, 0 unknown */
	int		 status;		/* enum store_status */
	char		*reason;		/* why it is not active */
	int64_t		 locked_until;		/* unix s: rate-limit lock */
	char		*plan;
	char		*quota_json;		/* last codex.rate_limits windows */
	/* the last codex.rate_limits frame as it came, when no window in it
	 * was full: the same frame again (most turns: the backend's reset_at
	 * is fixed per window) is not parsed again */
	char		*rl_frame;
	size_t		 rl_frame_len;
	char		 installation_id[40];
	int		 inflight;
	uint64_t	 requests, input_tokens, cached_tokens, output_tokens;
	int64_t		 last_used;		/* unix s */
	/* usage not yet written to the store */
	int64_t		 d_requests, d_input, d_cached, d_output;
	/* token refresh */
	struct oauth_req *refresh;		/* in flight */
	struct event	*ev_refresh;		/* next scheduled refresh */
	int		 refresh_failures;
	int64_t		 refreshed_at;		/* unix s */
	bool		 removed;		/* gone from the store; freed after its last turn */
	TAILQ_ENTRY(account) link;
};
TAILQ_HEAD(account_list, account);

enum slot_state {
	SLOT_DOWN,		/* not running; respawn timer armed */
	SLOT_STARTING,		/* forked, waiting for HELLO */
	SLOT_UP,
	SLOT_STOPPING,		/* told to shut down */
};

struct worker_slot {
	int			 index;
	enum slot_state		 state;
	pid_t			 pid;
	struct msgchan		*chan;
	struct event		*ev_read;
	struct event		*ev_write;
	struct event		*ev_respawn;
	usec_t			 started_at;
	unsigned		 restarts;
	usec_t			 backoff;
	int			 nturns;	/* turns bound to this slot */
	bool			 draining;	/* no new conversations; restart when idle */
	uint64_t		 requests;
	uint64_t		 decisions[8];	/* by DEC_* */
};

/* Counters for `codexpoolctl status`. */
struct sv_stats {
	uint64_t	requests;
	uint64_t	requests_failed;
	uint64_t	decisions[8];		/* by DEC_* */
	uint64_t	bypass[16];		/* by BYP_* */
	uint64_t	input_tokens;
	uint64_t	cached_tokens;
	uint64_t	output_tokens;
	uint64_t	client_aborts;
	uint64_t	client_conns_refused;	/* over max_client_connections */
	uint64_t	worker_restarts;
	uint64_t	retried_on_respawn;
	uint64_t	retries;		/* retryable failures sent again */
	uint64_t	account_moves;		/* turns moved to another account */
	uint64_t	resumed;		/* turns sent as an implicit resume */
	uint64_t	resume_fallbacks;	/* resumes refused, sent again in full */
	uint64_t	upstream_bytes;		/* response.create bytes sent */
	uint64_t	ws_upgrades;		/* client WebSockets handed to workers */
	uint64_t	ws_turns;		/* turns sent by client WebSockets */
	uint64_t	ws_reconnects;		/* client WebSockets asked to reconnect */
};

struct upstream_target {
	char		*host;
	int		 port;
	char		*path;
	bool		 tls;
	char		*proxy_host;		/* NULL: direct */
	int		 proxy_port;
	char		 addrs[SV_MAX_UPSTREAM_ADDRS][64];
	int		 naddrs;
	char		 proxy_addr[64];
};

struct supervisor {
	struct event_base	*base;
	struct evdns_base	*dns;
	struct evhttp		*http;
	struct cfgset		 cfgset;
	struct codexpool_config	 cfg;
	const char		*config_path;
	bool			 foreground;
	char			 self_exe[4096];
	bool			 pool_enabled;	/* runtime switch, starts from the config */
	struct poolmap		 pool;
	struct worker_slot	 slots[SV_MAX_WORKERS];
	int			 nslots;
	struct idmap		 reqs;		/* rid -> struct turn */
	uint64_t		 next_rid;
	int			 inflight;
	unsigned		 rr;		/* round robin for requests without a key */
	struct account_list	 accounts;
	struct account_list	 removed_accounts;	/* removed, turns still running */
	int			 naccounts;
	struct store		*store;
	struct event		*ev_flush;	/* writes usage and affinity */
	struct upstream_target	 up;
	struct sv_stats		 stats;
	struct usage_window	 recent;	/* usage of the last five minutes */
	struct convlog		 convs;		/* recent conversations */
	usec_t			 started_at;
	bool			 shutting_down;
	int			 replies_flushing;	/* final replies not yet written out */
	struct event		*ev_shutdown_deadline;
	struct event		*ev_sig[6];
	struct event		*ev_dns_refresh;
	char			 listen_addr[128];	/* actual bound address */
	int			 control_fd;
	struct event		*ev_control;
};

extern struct supervisor *sv;

/* workers.c */
int	workers_start(void);
/* msgchan status; MSGCHAN_FULL means the message was not queued. */
int	workers_send(int slot, uint32_t type, uint64_t rid, const struct msgbuf *b);
/* The same, passing fd along (the caller keeps its own). */
int	workers_send_fd(int slot, uint32_t type, uint64_t rid, const struct msgbuf *b, int fd);
void	workers_broadcast(uint32_t type, const struct msgbuf *b);
void	workers_send_config(int slot);
void	workers_send_addrs(int slot);
void	workers_shutdown(usec_t grace);
void	workers_reap(void);
int	workers_running(void);
void	workers_free(void);
void	shutdown_maybe_done(void);
int	workers_drain(int slot);
int	workers_slot_inflight(int slot);
void	workers_check_drained(int slot);

/* front_responses.c: POST /v1/responses */
void	responses_handle(struct evhttp_request *http);
/* front_xlate.c: POST /v1/chat/completions, /v1/messages(/count_tokens) */
void	chat_handle(struct evhttp_request *http);
void	messages_handle(struct evhttp_request *http);
void	messages_count_tokens(struct evhttp_request *http);
/* model_map: 0, or -1 with why */
int	model_map_check(const char *spec, char *err, size_t errlen);
void	model_map_free(void);

/* http.c: a JSON reply (with the status's reason phrase) */
void	http_send_json(struct evhttp_request *http, int status, const char *json);
/* http.c: an error reply of our own, in the OpenAI shape */
void	send_error(struct evhttp_request *http, int status, const char *type,
	    const char *code, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* http.c */
int	http_start(void);
void	http_stop_accepting(void);
/* Client connections (http.c): the turn's close hook, the end of a reply. */
void	http_conn_set_hook(struct evhttp_connection *evcon,
	    void (*hook)(struct evhttp_connection *, void *), void *arg);
void	http_reply_done(struct evhttp_request *http);
int	http_conn_count(void);
/*
 * Take a client's socket away from evhttp (a WebSocket upgrade going to a
 * worker): returns a new descriptor for it, with any bytes the client sent
 * after the request appended to head (at most head_max in all), or -1
 * after answering or dropping the client.  The connection is freed.
 */
int	http_steal_socket(struct evhttp_request *http, struct evbuffer *head,
	    size_t head_max);
int	http_conn_cap(void);
void	http_free(void);

/* identity.c */
/* A client's conversation key as codexpool keeps it (identity.c); NULL if
 * blank.  Every source of a key goes through it. */
char	*conversation_key(const char *s, size_t len);
struct jdoc;
/* From the headers, then the body (a checked Responses request); model:
 * the client's own model name when the body's was mapped, else NULL. */
const char *conversation_of(struct evhttp_request *http, const struct jdoc *body,
	    const char *model, char **conv);
/* The headers alone (a WebSocket upgrade has no body); the source or NULL. */
const char *conversation_of_headers(struct evhttp_request *http, char **conv);
/* The id sent upstream for (account, conversation): "cp_" + 32 hex. */
void	upstream_conversation_id(const char *entry, const char *conv, char out[40]);

/* accounts.c */
/* What accounts.c tells its listener (the turn lifecycle). */
enum account_event {
	ACCT_EV_REFRESHED = 1,	/* a new access token is in place */
	ACCT_EV_REFRESH_FAILED,	/* a refresh ended without a new token */
	ACCT_EV_REMOVED,	/* gone from the store */
};
void	accounts_set_listener(void (*fn)(struct account *a, int event));
int	accounts_load(void);
void	accounts_free(void);
struct account *accounts_find(const char *text);	/* entry, label or account id */
struct account *accounts_by_entry(const char *entry);
/* The account for a conversation (conv NULL: none): its affinity if that
 * account is usable and not excluded, else the least loaded usable one. */
struct account *accounts_pick(const char *conv, struct account *const *exclude, int nexclude,
	    bool *moved);
bool	account_usable(struct account *a);
/* Why no account is usable, for a 503 body. */
void	accounts_why_none(char *buf, size_t len, int64_t *first_unlock);
void	account_usage(struct account *a, uint64_t in, uint64_t cached, uint64_t out);
void	account_lock(struct account *a, int64_t until, const char *reason);
void	account_set_status(struct account *a, int status, const char *reason);
void	account_reset(struct account *a);
int	account_refresh(struct account *a, const char *why);
int	account_add(const char *access, const char *refresh, const char *id_token,
	    const char *account_id, const char *label, struct account **out,
	    char *err, size_t errlen);
int	account_add_auth_json(const char *json, size_t len, const char *label,
	    struct account **out, char *err, size_t errlen);
int	account_remove(struct account *a);
/* A turn let go of its account (frees a removed one after its last turn). */
void	account_release(struct account *a);
void	accounts_on_rate_limits(const char *entry, const char *frame, size_t len);
void	accounts_on_rate_limit_headers(struct account *a, struct json_object *headers);
const char *account_status_name(const struct account *a);

/* upstream.c */
int	upstream_init(void);
void	upstream_free(void);

/* control.c */
/* The pure part of a control line (fuzz/fuzz_control.c): its command's
 * usage, or NULL with err set ("" for a blank line).  Splits line in place. */
const char *control_parse_line(char *line, char *err, size_t errlen);
int	control_start(void);
void	control_stop(void);
/* A worker's MSG_STATS, for the control command that asked (rid). */
void	control_on_worker_stats(int slot, const struct msg *m);

/* reload.c: 0, or -1 with the reason; report lists what changed */
int	config_reload(char *report, size_t len);

/* poolact.c: pool actions shared by control, accounts and turns */
/* Close an account's pooled connections everywhere; returns how many. */
int	sv_evict_account(const char *entry);
void	sv_set_pool_enabled(bool on);
/* Tell a connection's worker to close it (it is already marked closing). */
void	pool_close_conn(const struct pm_conn *c, const char *reason);

#endif
