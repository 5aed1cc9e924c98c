/*
 * OAuth token refresh client for the supervisor (libevent, never blocks).
 *
 * One refresh is one POST of the Codex CLI's JSON body to the token URL.
 * https:// always verifies the chain (ca_file, or the system CAs) and the
 * host name, with SNI; there is no switch to turn that off.  Plain http://
 * is accepted for loopback hosts only (127.0.0.0/8, ::1, localhost), for
 * tests and local relays.
 *
 * Neither the tokens nor the response body are ever logged.
 */
#ifndef CODEXPOOL_OAUTH_H
#define CODEXPOOL_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "util.h"

#define OAUTH_CLIENT_ID		"app_EMoamEEZ73f0CkXaXp7hrann"
#define OAUTH_DEFAULT_TOKEN_URL	"https://auth.openai.com/oauth/token"
#define OAUTH_BODY_MAX		(256 * 1024)	/* response body limit */

enum oauth_outcome {
	OAUTH_OK = 0,
	OAUTH_PERMANENT,	/* refresh token is dead: mark the account expired */
	OAUTH_TRANSIENT,	/* network, TLS, timeout, 5xx, 429, bad JSON...: retry later */
};

struct oauth_result {
	enum oauth_outcome outcome;
	int		 http_status;		/* 0 when no HTTP response came */
	char		 error_code[64];	/* "" when none */
	char		 message[256];		/* for logs; never holds a token */
	/* OK only.  Owned by the module: copy what you keep, they are
	 * wiped and freed when the callback returns. */
	char		*access_token;
	char		*refresh_token;		/* NULL: keep the old one */
	char		*id_token;		/* NULL when absent */
	int64_t		 expires_in;		/* seconds, -1 when absent */
};

struct oauth_req;

/* Called once per started refresh, from the event loop. */
typedef void (*oauth_done_cb)(const struct oauth_result *res, void *arg);

/*
 * Starts a refresh.  token_url NULL means OAUTH_DEFAULT_TOKEN_URL;
 * ca_file NULL means the system CAs; dns is needed for host names (NULL
 * then refuses them rather than block in getaddrinfo); timeout bounds
 * the whole exchange.
 *
 * Returns the in-flight handle, or NULL with err set when the request
 * is refused before any I/O (bad URL, plain http to a non-loopback
 * host, unreadable CA file, ...): cb is then never called.  Otherwise cb
 * runs exactly once, never from inside this call, unless oauth_cancel()
 * comes first.  The handle is dead once cb has been called.
 */
struct oauth_req *oauth_refresh(struct event_base *base, struct evdns_base *dns,
	    const char *token_url, const char *ca_file, const char *refresh_token,
	    usec_t timeout, oauth_done_cb cb, void *arg, char *err, size_t errlen);

/* Abandons an in-flight refresh: cb is not called, everything is freed.
 * Beware: the server may already have rotated the refresh token. */
void	oauth_cancel(struct oauth_req *req);

/* Requests not yet freed, cancelled ones whose DNS lookup is still to
 * come back included (shutdown: run the loop until this is 0, or free
 * the evdns base with fail_requests set). */
int	oauth_pending(void);

/* Checks a token URL as oauth_refresh would (for config validation). */
int	oauth_check_url(const char *token_url, char *err, size_t errlen);

/* Name of an outcome for logs: "ok", "permanent", "transient". */
const char *oauth_outcome_name(enum oauth_outcome o);

/*
 * The classification oauth_refresh applies to an HTTP answer, exposed
 * for tests: fills res from status and body (len bytes, need not be
 * NUL-terminated).  Release with oauth_result_clear().
 */
void	oauth_parse_response(int status, const char *body, size_t len,
	    struct oauth_result *res);
void	oauth_result_clear(struct oauth_result *res);

#endif
