/*
 * codexpoold's configuration: the struct and its key table.
 * Shared with codexpoolctl (default control socket) and the tests.
 */
#ifndef CODEXPOOL_CFGKEYS_H
#define CODEXPOOL_CFGKEYS_H

#include <stdbool.h>
#include <stdint.h>
#include "cfg.h"

struct codexpool_config {
	char		*listen;
	bool		 allow_anonymous;	/* no API key needed on a public listen */
	char		*metrics_listen;	/* NULL: /metrics on the API listener */
	int		 workers;		/* 0 = number of CPUs */
	char		*upstream_url;
	char		*upstream_ca_file;
	char		*upstream_proxy;
	char		*auth_file;
	bool		 ws_pool_enabled;
	bool		 implicit_resume;
	bool		 client_websockets;
	int64_t		 ws_pool_max_age;
	int		 ws_pool_max_per_account;
	int64_t		 ws_ping_interval;
	int64_t		 handshake_timeout;
	int64_t		 response_start_timeout;
	int64_t		 shutdown_timeout;
	char		*data_dir;
	char		*control_socket;
	char		*control_group;
	int64_t		 control_idle_timeout;
	uint64_t	 max_body_size;
	uint64_t	 max_client_buffer;
	int		 max_clients;
	int		 max_client_connections;	/* 0: from RLIMIT_NOFILE */
	int64_t		 client_idle_timeout;
	int64_t		 client_request_timeout;
	char		*log_level;
	char		*log_file;
	char		*pidfile;
	char		*user;
	char		*originator;
	char		*client_version;
	char		*token_url;
	char		*token_ca_file;
	int64_t		 token_refresh_margin;
	int64_t		 affinity_ttl;
	int64_t		 rate_limit_lock;
	char		*models;
	char		*model_map;
};

extern const struct cfg_key codexpool_cfg_keys[];

/* Compiled-in paths (configure's sysconfdir / localstatedir / runstatedir). */
#ifndef CODEXPOOL_SYSCONFDIR
#define CODEXPOOL_SYSCONFDIR	"/etc"
#endif
#ifndef CODEXPOOL_RUNSTATEDIR
#define CODEXPOOL_RUNSTATEDIR	"/run"
#endif
#ifndef CODEXPOOL_LOCALSTATEDIR
#define CODEXPOOL_LOCALSTATEDIR	"/var"
#endif
#define CODEXPOOL_DEFAULT_CONFIG	CODEXPOOL_SYSCONFDIR "/codexpool/codexpool.conf"
#define CODEXPOOL_DEFAULT_SOCKET	CODEXPOOL_RUNSTATEDIR "/codexpool/codexpool.sock"
#define CODEXPOOL_DEFAULT_DATADIR	CODEXPOOL_LOCALSTATEDIR "/lib/codexpool"

#endif
