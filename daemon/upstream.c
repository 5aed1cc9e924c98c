/*
 * Where the upstream is, and its addresses.
 *
 * Workers never resolve names (a getaddrinfo() would stall every stream of
 * their shard), so the supervisor resolves the upstream host, and the
 * proxy's, with evdns and pushes numeric addresses to the workers; it
 * resolves again every few minutes.  Workers keep the host name for the
 * Host header, SNI and certificate checks.
 */
#include "config.h"

#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "log.h"
#include "msgtypes.h"
#include "supervisor.h"

#define DNS_REFRESH_SEC	300

static int
parse_upstream_url(const char *url, struct upstream_target *up)
{
	const char *p, *slash;
	char hostport[512];
	size_t n;

	if (strncmp(url, "wss://", 6) == 0) {
		up->tls = true;
		p = url + 6;
	} else if (strncmp(url, "ws://", 5) == 0) {
		up->tls = false;
		p = url + 5;
	} else {
		log_warnx("upstream_url must start with wss:// or ws://: %s", url);
		return -1;
	}
	slash = strchr(p, '/');
	n = slash ? (size_t)(slash - p) : strlen(p);
	if (n == 0 || n >= sizeof(hostport)) {
		log_warnx("upstream_url has no host: %s", url);
		return -1;
	}
	memcpy(hostport, p, n);
	hostport[n] = '\0';
	up->path = xstrdup(slash ? slash : "/");
	if (strchr(hostport, ':') == NULL || (hostport[0] == '[' && strstr(hostport, "]:") == NULL)) {
		char *h = hostport;
		size_t hl = strlen(h);
		if (h[0] == '[' && h[hl - 1] == ']') {
			h[hl - 1] = '\0';
			h++;
		}
		up->host = xstrdup(h);
		up->port = up->tls ? 443 : 80;
		return 0;
	}
	{
		char host[256];
		if (parse_hostport(hostport, host, sizeof(host), &up->port) == -1 ||
		    host[0] == '\0' || up->port <= 0) {
			log_warnx("upstream_url has a bad host or port: %s", url);
			return -1;
		}
		up->host = xstrdup(host);
	}
	return 0;
}

static int
is_numeric(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static void
push_addrs(void)
{
	int i;

	for (i = 0; i < sv->nslots; i++)
		workers_send_addrs(i);
}

static void
on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	bool proxy = arg != NULL;
	struct evutil_addrinfo *ai;
	const char *name = proxy ? sv->up.proxy_host : sv->up.host;
	int n = 0;

	if (result != 0) {
		log_warnx("cannot resolve %s: %s%s", name, evutil_gai_strerror(result),
		    (proxy ? sv->up.proxy_addr[0] : sv->up.naddrs) ?
		    "; keeping the addresses we had" : "");
		return;
	}
	for (ai = res; ai != NULL && n < SV_MAX_UPSTREAM_ADDRS; ai = ai->ai_next) {
		char buf[64];
		const void *src = ai->ai_family == AF_INET ?
		    (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr :
		    (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		if (evutil_inet_ntop(ai->ai_family, src, buf, sizeof(buf)) == NULL)
			continue;
		if (proxy) {
			strlcpy_safe(sv->up.proxy_addr, buf, sizeof(sv->up.proxy_addr));
			n = 1;
			break;
		}
		strlcpy_safe(sv->up.addrs[n++], buf, sizeof(sv->up.addrs[0]));
	}
	evutil_freeaddrinfo(res);
	if (n == 0)
		return;
	if (!proxy)
		sv->up.naddrs = n;
	log_debug("%s resolved to %d address(es)", name, n);
	push_addrs();
}

static void
resolve(const char *host, void *arg)
{
	struct evutil_addrinfo hints;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	evdns_getaddrinfo(sv->dns, host, NULL, &hints, on_resolved, arg);
}

static void
on_refresh(evutil_socket_t fd, short what, void *arg)
{
	if (!is_numeric(sv->up.host))
		resolve(sv->up.host, NULL);
	if (sv->up.proxy_host && !is_numeric(sv->up.proxy_host))
		resolve(sv->up.proxy_host, (void *)1);
}

int
upstream_init(void)
{
	struct timeval tv = { DNS_REFRESH_SEC, 0 };

	if (parse_upstream_url(sv->cfg.upstream_url, &sv->up) == -1)
		return -1;
	if (sv->cfg.upstream_proxy) {
		char host[256];
		if (parse_hostport(sv->cfg.upstream_proxy, host, sizeof(host),
		    &sv->up.proxy_port) == -1 || host[0] == '\0' || sv->up.proxy_port <= 0) {
			log_warnx("upstream_proxy must be host:port, not '%s'", sv->cfg.upstream_proxy);
			return -1;
		}
		sv->up.proxy_host = xstrdup(host);
		if (is_numeric(host))
			strlcpy_safe(sv->up.proxy_addr, host, sizeof(sv->up.proxy_addr));
	}
	if (is_numeric(sv->up.host)) {
		strlcpy_safe(sv->up.addrs[0], sv->up.host, sizeof(sv->up.addrs[0]));
		sv->up.naddrs = 1;
	}
	/* Name servers from resolv.conf, names from /etc/hosts. */
	sv->dns = evdns_base_new(sv->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (sv->dns == NULL) {
		sv->dns = evdns_base_new(sv->base, 0);
		if (sv->dns == NULL) {
			log_warnx("cannot set up DNS");
			return -1;
		}
		evdns_base_load_hosts(sv->dns, NULL);
	}
	sv->ev_dns_refresh = event_new(sv->base, -1, EV_PERSIST, on_refresh, NULL);
	event_add(sv->ev_dns_refresh, &tv);
	on_refresh(-1, 0, NULL);
	log_info("upstream %s://%s:%d%s%s%s", sv->up.tls ? "wss" : "ws", sv->up.host,
	    sv->up.port, sv->up.path, sv->up.proxy_host ? " via proxy " : "",
	    sv->up.proxy_host ? sv->cfg.upstream_proxy : "");
	return 0;
}

void
upstream_free(void)
{
	if (sv->ev_dns_refresh)
		event_free(sv->ev_dns_refresh);
	if (sv->dns)
		evdns_base_free(sv->dns, 0);
	free(sv->up.host);
	free(sv->up.path);
	free(sv->up.proxy_host);
}
