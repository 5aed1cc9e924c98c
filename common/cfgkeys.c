/*
 * codexpoold's key table.  Everything about a key lives in its row: the
 * parser, `codexpoolctl config`, reload and codexpool.conf(5) read it.
 */
#include "config.h"
#include "cfgkeys.h"

#include <stddef.h>

#define US_S	1000000LL
#define US_M	(60 * US_S)
#define US_H	(60 * US_M)
#define KIB	1024LL
#define MIB	(1024 * KIB)
#define GIB	(1024 * MIB)

#define OFF(f)	offsetof(struct codexpool_config, f)
#define R	CFG_RELOADABLE

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };

const struct cfg_key codexpool_cfg_keys[] = {
	{ "listen", CFG_ADDRESS, OFF(listen), "127.0.0.1:8080", 0, 0, 0,
	  "address of the client HTTP API (host:port or [v6]:port; port 0 = any free port)", NULL },
	{ "allow_anonymous", CFG_BOOL, OFF(allow_anonymous), "no", 0, 0, 0,
	  "serve clients without an API key on a non-loopback listen address while no key exists (codexpoolctl key add); otherwise codexpoold refuses to start", NULL },
	{ "metrics_listen", CFG_ADDRESS, OFF(metrics_listen), NULL, 0, 0, 0,
	  "address of a separate listener for GET /metrics and /health, without API keys; unset = /metrics on the API listener (behind API keys once one exists)", NULL },
	{ "workers", CFG_INT, OFF(workers), "0", 0, 0, 256,
	  "number of worker processes; 0 = one per CPU", NULL },
	{ "upstream_url", CFG_STRING, OFF(upstream_url),
	  "wss://chatgpt.com/backend-api/codex/responses", 0, 0, 0,
	  "WebSocket URL of the Codex responses endpoint", NULL },
	{ "upstream_ca_file", CFG_STRING, OFF(upstream_ca_file), NULL, 0, 0, 0,
	  "PEM file of CAs trusted for the upstream; unset = system CAs", NULL },
	{ "upstream_proxy", CFG_STRING, OFF(upstream_proxy), NULL, 0, 0, 0,
	  "host:port of an HTTP CONNECT proxy for upstream connections; unset = direct", NULL },
	{ "auth_file", CFG_STRING, OFF(auth_file), NULL, 0, 0, 0,
	  "Codex CLI auth.json imported into the account store at start unless its account is already there", NULL },
	{ "ws_pool_enabled", CFG_BOOL, OFF(ws_pool_enabled), "yes", R, 0, 0,
	  "keep one persistent upstream WebSocket per conversation", NULL },
	{ "implicit_resume", CFG_BOOL, OFF(implicit_resume), "yes", R, 0, 0,
	  "a stateless client's turn that extends what its pooled connection last sent "
	  "and received goes upstream as only the new items with previous_response_id", NULL },
	{ "client_websockets", CFG_BOOL, OFF(client_websockets), "yes", R, 0, 0,
	  "accept WebSocket upgrades on /v1/responses (the Codex CLI's transport); "
	  "no = answer them 426, so clients fall back to HTTP", NULL },
	{ "ws_pool_max_age", CFG_DURATION, OFF(ws_pool_max_age), "55m", R,
	  1 * US_S, 59 * US_M,
	  "close a pooled connection after this age (the upstream ends them at 60m)", NULL },
	{ "ws_pool_max_per_account", CFG_INT, OFF(ws_pool_max_per_account), "8", R,
	  1, 100000,
	  "most pooled connections one account may hold", NULL },
	{ "ws_ping_interval", CFG_DURATION, OFF(ws_ping_interval), "25s", R,
	  1 * US_S, 10 * US_M,
	  "interval of WebSocket pings on pooled connections, idle or busy; 2.5 intervals of silence = dead", NULL },
	{ "handshake_timeout", CFG_DURATION, OFF(handshake_timeout), "15s", R,
	  1 * US_S, 10 * US_M,
	  "limit for connecting and the upstream WebSocket handshake", NULL },
	{ "response_start_timeout", CFG_DURATION, OFF(response_start_timeout), "180s", R,
	  1 * US_S, 1 * US_H,
	  "limit for the first upstream frame of a turn", NULL },
	{ "shutdown_timeout", CFG_DURATION, OFF(shutdown_timeout), "30s", R,
	  0, 1 * US_H,
	  "how long running turns may continue after a stop request", NULL },
	{ "data_dir", CFG_STRING, OFF(data_dir), CODEXPOOL_DEFAULT_DATADIR, 0, 0, 0,
	  "directory of the account database and its tokens", NULL },
	{ "control_socket", CFG_STRING, OFF(control_socket), CODEXPOOL_DEFAULT_SOCKET, 0, 0, 0,
	  "unix socket for codexpoolctl", NULL },
	{ "control_group", CFG_STRING, OFF(control_group), NULL, 0, 0, 0,
	  "group whose members may also use the control socket (mode 0660); unset = root and the daemon's user only", NULL },
	{ "control_idle_timeout", CFG_DURATION, OFF(control_idle_timeout), "60s", R,
	  1 * US_S, 24 * US_H,
	  "close a control connection that sends nothing and reads nothing for this long", NULL },
	{ "max_body_size", CFG_SIZE, OFF(max_body_size), "32M", R,
	  1 * KIB, 1 * GIB,
	  "largest client request body accepted", NULL },
	{ "max_client_buffer", CFG_SIZE, OFF(max_client_buffer), "16M", R,
	  64 * KIB, 1 * GIB,
	  "unread output allowed per client: 10 s above it, or 4 times it at once, drops the client", NULL },
	{ "max_clients", CFG_INT, OFF(max_clients), "1024", R, 1, 1000000,
	  "most client turns in flight at once; more get 503", NULL },
	{ "max_client_connections", CFG_INT, OFF(max_client_connections), "0", R, 0, 1000000,
	  "most client connections open at once, idle or busy; more are refused with 503; "
	  "0 = RLIMIT_NOFILE less a reserve (128 + 1/8) for everything else", NULL },
	{ "client_idle_timeout", CFG_DURATION, OFF(client_idle_timeout), "30s", R,
	  1 * US_S, 1 * US_H,
	  "close a client connection silent this long while a request is awaited "
	  "(keep-alive, or a pause inside headers or body)", NULL },
	{ "client_request_timeout", CFG_DURATION, OFF(client_request_timeout), "60s", R,
	  1 * US_S, 1 * US_H,
	  "close a client connection whose request (headers and body) is not in this "
	  "long after the connection opened or its previous reply ended", NULL },
	{ "log_level", CFG_STRING, OFF(log_level), "info", R, 0, 0,
	  "error, warn, info or debug", log_levels },
	{ "log_file", CFG_STRING, OFF(log_file), NULL, R, 0, 0,
	  "append log lines to this file (reopened on SIGUSR1); unset = syslog or stderr", NULL },
	{ "pidfile", CFG_STRING, OFF(pidfile), NULL, 0, 0, 0,
	  "write the supervisor's pid to this file", NULL },
	{ "user", CFG_STRING, OFF(user), NULL, 0, 0, 0,
	  "drop root privileges to this user after binding", NULL },
	{ "originator", CFG_STRING, OFF(originator), "codex_cli_rs", R, 0, 0,
	  "originator header sent upstream", NULL },
	{ "client_version", CFG_STRING, OFF(client_version), "0.169.0", R, 0, 0,
	  "client version sent upstream", NULL },
	{ "token_url", CFG_STRING, OFF(token_url), "https://auth.openai.com/oauth/token", R, 0, 0,
	  "OAuth token endpoint used to refresh access tokens", NULL },
	{ "token_ca_file", CFG_STRING, OFF(token_ca_file), NULL, R, 0, 0,
	  "PEM file of CAs trusted for token_url; unset = upstream_ca_file, else system CAs", NULL },
	{ "token_refresh_margin", CFG_DURATION, OFF(token_refresh_margin), "5m", R,
	  1 * US_S, 24 * US_H,
	  "refresh an access token this long before it expires", NULL },
	{ "affinity_ttl", CFG_DURATION, OFF(affinity_ttl), "4h", R, 1 * US_M, 30 * 24 * US_H,
	  "how long a conversation stays with the account that served it", NULL },
	{ "rate_limit_lock", CFG_DURATION, OFF(rate_limit_lock), "15m", R, 1 * US_S, 7 * 24 * US_H,
	  "how long an account rests after a usage limit that names no reset time", NULL },
	{ "models", CFG_STRING, OFF(models), "gpt-5.4,gpt-5.4-mini,gpt-5.3-codex,gpt-5.2", R, 0, 0,
	  "comma-separated model ids listed by GET /v1/models", NULL },
	{ "model_map", CFG_STRING, OFF(model_map),
	  "claude-*opus*=gpt-5.4,*sonnet*=gpt-5.4,*haiku*=gpt-5.4-mini,*=gpt-5.4", R, 0, 0,
	  "Codex model for a client model on the chat and messages routes: "
	  "comma-separated glob=model, first match wins; a model listed in models is kept", NULL },
	{ NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL },
};
