/*
 * Tests of the token refresh client against a real codexpool-sim (plain
 * and TLS with certificates made here), and against sockets made here
 * that refuse, never answer, or never resolve.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "oauth.h"
#include "testlib.h"

#define WAIT_MS		60000	/* generous: a busy 2-core machine */
#define TOKEN_PATH	"/oauth/token"
#define REQUEST_LINE	"POST " TOKEN_PATH " HTTP/1.1\r\n"

static char *basedir;		/* per run; removed even after failures */
static char *dir;		/* per test, inside basedir */
static struct event_base *base;

static void
suite_setup(void)
{
	if ((basedir = tl_tmpdir()) == NULL)
		exit(1);
}

static void
suite_teardown(void)
{
	/* a failed test skips its teardown: whatever it left goes here */
	tl_kill_all();
	tl_rmrf(basedir);
	free(basedir);
	basedir = NULL;
}

static void
setup(void)
{
	size_t n = strlen(basedir) + 16;

	dir = malloc(n);
	snprintf(dir, n, "%s/t.XXXXXX", basedir);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
}

static void
teardown(void)
{
	tl_kill_all();
	if (base != NULL)
		event_base_free(base);
	base = NULL;
	if (dir != NULL)
		tl_rmrf(dir);
	free(dir);
	dir = NULL;
}

/* ---- waiting on the event loop for a condition ---- */

struct waiter {
	int	(*cond)(void *);
	void	*arg;
	int64_t	 deadline;
};

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	struct waiter *w = arg;

	(void)fd;
	(void)what;
	if (w->cond(w->arg) || tl_now_ms() >= w->deadline)
		event_base_loopbreak(base);
}

/* Runs the loop until cond holds (1) or timeout_ms passes (0). */
static int
run_until(int (*cond)(void *), void *arg, int timeout_ms)
{
	struct waiter w = { cond, arg, tl_now_ms() + timeout_ms };
	struct timeval tv = { 0, 10 * 1000 };
	struct event *t;

	if (cond(arg))
		return 1;
	t = event_new(base, -1, EV_PERSIST, tick, &w);
	event_add(t, &tv);
	event_base_dispatch(base);
	event_free(t);
	return cond(arg);
}

static int
none_pending(void *arg)
{
	(void)arg;
	return oauth_pending() == 0;
}

/* ---- results ---- */

struct got {
	int		 calls;
	enum oauth_outcome outcome;
	int		 status;
	char		 code[64];
	char		 message[256];
	char		*access;
	char		*refresh;
	char		*id;
	int64_t		 expires_in;
};

static void
on_done(const struct oauth_result *r, void *arg)
{
	struct got *g = arg;

	g->calls++;
	g->outcome = r->outcome;
	g->status = r->http_status;
	snprintf(g->code, sizeof(g->code), "%s", r->error_code);
	snprintf(g->message, sizeof(g->message), "%s", r->message);
	free(g->access);
	free(g->refresh);
	free(g->id);
	g->access = r->access_token ? strdup(r->access_token) : NULL;
	g->refresh = r->refresh_token ? strdup(r->refresh_token) : NULL;
	g->id = r->id_token ? strdup(r->id_token) : NULL;
	g->expires_in = r->expires_in;
}

static void
got_free(struct got *g)
{
	free(g->access);
	free(g->refresh);
	free(g->id);
	memset(g, 0, sizeof(*g));
}

static int
got_called(void *arg)
{
	return ((struct got *)arg)->calls > 0;
}

static struct oauth_req *
start(struct evdns_base *dns, const char *url, const char *ca, const char *rt,
    int timeout_ms, struct got *g)
{
	struct oauth_req *r;
	char err[256];

	memset(g, 0, sizeof(*g));
	r = oauth_refresh(base, dns, url, ca, rt, (usec_t)timeout_ms * USEC_PER_MSEC,
	    on_done, g, err, sizeof(err));
	ck_assert_msg(r != NULL, "refused at once: %s", err);
	/* never from inside oauth_refresh, even when it fails at once */
	ck_assert_int_eq(g->calls, 0);
	return r;
}

/* One refresh to completion. */
static void
refresh(struct evdns_base *dns, const char *url, const char *ca, const char *rt,
    int timeout_ms, struct got *g)
{
	start(dns, url, ca, rt, timeout_ms, g);
	ck_assert_msg(run_until(got_called, g, WAIT_MS), "no callback for %s", url);
	ck_assert_int_eq(g->calls, 1);
	ck_assert_msg(run_until(none_pending, NULL, WAIT_MS), "request not freed");
}

static char *
url_of(const char *scheme, const char *host, int port)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s://%s:%d" TOKEN_PATH, scheme, host, port);
	return strdup(buf);
}

static void
start_tls_sim(struct tl_sim *sim, const char *cert, const char *key)
{
	char args[1200];

	snprintf(args, sizeof(args), "--accounts 3 --tls-cert %s --tls-key %s", cert, key);
	ck_assert_int_eq(tl_sim_start(sim, dir, args), 0);
}

static void
make_default_certs(char *cert, char *key, size_t size)
{
	ck_assert_int_eq(tl_make_certs(dir), 0);
	snprintf(cert, size, "%s/server.pem", dir);
	snprintf(key, size, "%s/server.key", dir);
}

/* A TCP socket on 127.0.0.1:0; listening (backlog only, never accepted) or not. */
static int
loopback_socket(int type, int do_listen, int *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	if (do_listen)
		ck_assert_int_eq(listen(fd, 8), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static int
fd_readable(void *arg)
{
	struct pollfd p = { *(int *)arg, POLLIN, 0 };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

/* ---- cases ---- */

START_TEST(test_oauth__refresh_ok_tls_then_reuse_is_permanent)
{
	struct tl_account acct;
	struct tl_sim sim;
	struct got g1, g2, g3;
	char cert[600], key[600], *url, *url_ip;

	make_default_certs(cert, key, sizeof(cert));
	start_tls_sim(&sim, cert, key);
	ck_assert_int_eq(tl_sim_account(&sim, 1, &acct), 0);
	url = url_of("https", "localhost", sim.port);
	url_ip = url_of("https", "127.0.0.1", sim.port);

	refresh(NULL, url, sim.ca_file, acct.refresh_token, 30000, &g1);
	ck_assert_msg(g1.outcome == OAUTH_OK, "outcome %d: %s", g1.outcome, g1.message);
	ck_assert_int_eq(g1.status, 200);
	ck_assert_ptr_nonnull(g1.access);
	ck_assert_ptr_nonnull(g1.refresh);
	ck_assert_ptr_nonnull(g1.id);
	ck_assert_str_ne(g1.refresh, acct.refresh_token);
	ck_assert_str_ne(g1.access, acct.access_token);
	ck_assert_int_gt(g1.expires_in, 0);

	/* the old refresh token is spent: permanent, and says why */
	refresh(NULL, url_ip, sim.ca_file, acct.refresh_token, 30000, &g2);
	ck_assert_int_eq(g2.outcome, OAUTH_PERMANENT);
	ck_assert_int_eq(g2.status, 401);
	ck_assert_str_eq(g2.code, "refresh_token_reused");
	ck_assert_ptr_null(g2.access);
	ck_assert_msg(strstr(g2.message, acct.refresh_token) == NULL, "token in message");

	/* the new one works, over the IP address (IP SAN) too */
	refresh(NULL, url_ip, sim.ca_file, g1.refresh, 30000, &g3);
	ck_assert_msg(g3.outcome == OAUTH_OK, "outcome %d: %s", g3.outcome, g3.message);
	ck_assert_str_ne(g3.refresh, g1.refresh);

	/* an unknown token is invalid_grant: permanent as well */
	got_free(&g2);
	refresh(NULL, url, sim.ca_file, "rt_never_issued", 30000, &g2);
	ck_assert_int_eq(g2.outcome, OAUTH_PERMANENT);
	ck_assert_str_eq(g2.code, "invalid_grant");

	got_free(&g1);
	got_free(&g2);
	got_free(&g3);
	free(url);
	free(url_ip);
	tl_account_free(&acct);
	ck_assert_int_eq(tl_sim_stop(&sim), 0);
}
END_TEST

START_TEST(test_oauth__wrong_ca_is_transient)
{
	struct tl_account acct;
	struct tl_sim sim;
	struct got g;
	char cert[600], key[600], other[600], other_ca[700], *url;

	make_default_certs(cert, key, sizeof(cert));
	snprintf(other, sizeof(other), "%s/other", dir);
	ck_assert_int_eq(mkdir(other, 0700), 0);
	ck_assert_int_eq(tl_make_certs(other), 0);
	snprintf(other_ca, sizeof(other_ca), "%s/ca.pem", other);
	start_tls_sim(&sim, cert, key);
	ck_assert_int_eq(tl_sim_account(&sim, 1, &acct), 0);
	url = url_of("https", "localhost", sim.port);

	refresh(NULL, url, other_ca, acct.refresh_token, 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_int_eq(g.status, 0);
	ck_assert_msg(strstr(g.message, "verification failed") != NULL, "message: %s",
	    g.message);
	got_free(&g);

	/* nothing reached the endpoint: the token still works */
	refresh(NULL, url, sim.ca_file, acct.refresh_token, 30000, &g);
	ck_assert_msg(g.outcome == OAUTH_OK, "outcome %d: %s", g.outcome, g.message);
	got_free(&g);

	/* the system CAs do not know our test CA either */
	refresh(NULL, url, NULL, "rt_whatever", 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_msg(strstr(g.message, "verification failed") != NULL, "message: %s",
	    g.message);
	got_free(&g);
	free(url);
	tl_account_free(&acct);
	ck_assert_int_eq(tl_sim_stop(&sim), 0);
}
END_TEST

START_TEST(test_oauth__host_name_mismatch_refused)
{
	static const char ext_text[] =
	    "basicConstraints=critical,CA:FALSE\n"
	    "keyUsage=critical,digitalSignature,keyEncipherment\n"
	    "extendedKeyUsage=serverAuth\n"
	    "subjectAltName=DNS:other.example\n";
	struct tl_account acct;
	struct tl_sim sim;
	struct got g;
	char cert[600], key[600], odd_key[600], odd_csr[600], odd_pem[600], ext[600];
	char ca_pem[600], ca_key[600], log[600], *url;

	make_default_certs(cert, key, sizeof(cert));
	/* a server certificate from the same CA, for another name only */
	snprintf(odd_key, sizeof(odd_key), "%s/odd.key", dir);
	snprintf(odd_csr, sizeof(odd_csr), "%s/odd.csr", dir);
	snprintf(odd_pem, sizeof(odd_pem), "%s/odd.pem", dir);
	snprintf(ext, sizeof(ext), "%s/odd.ext", dir);
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", dir);
	snprintf(ca_key, sizeof(ca_key), "%s/ca.key", dir);
	snprintf(log, sizeof(log), "%s/openssl-odd.log", dir);
	ck_assert_int_eq(tl_write_file(ext, ext_text, strlen(ext_text), 0600), 0);
	{
		char *const csr[] = { "openssl", "req", "-new", "-newkey", "ec",
		    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
		    odd_key, "-out", odd_csr, "-subj", "/CN=other.example", NULL };
		char *const sign[] = { "openssl", "x509", "-req", "-in", odd_csr, "-CA",
		    ca_pem, "-CAkey", ca_key, "-set_serial", "0x5eed", "-days", "2",
		    "-extfile", ext, "-out", odd_pem, NULL };

		ck_assert_int_eq(tl_run(log, csr, WAIT_MS), 0);
		ck_assert_int_eq(tl_run(log, sign, WAIT_MS), 0);
	}
	start_tls_sim(&sim, odd_pem, odd_key);
	ck_assert_int_eq(tl_sim_account(&sim, 1, &acct), 0);

	/* by IP: the certificate has no IP address */
	url = url_of("https", "127.0.0.1", sim.port);
	refresh(NULL, url, sim.ca_file, acct.refresh_token, 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_msg(strstr(g.message, "mismatch") != NULL, "message: %s", g.message);
	got_free(&g);
	free(url);

	/* by name: localhost is not other.example */
	url = url_of("https", "localhost", sim.port);
	refresh(NULL, url, sim.ca_file, acct.refresh_token, 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_msg(strstr(g.message, "mismatch") != NULL, "message: %s", g.message);
	got_free(&g);
	free(url);

	tl_account_free(&acct);
	ck_assert_int_eq(tl_sim_stop(&sim), 0);
}
END_TEST

START_TEST(test_oauth__plain_http_loopback_works)
{
	struct tl_account acct;
	struct tl_sim sim;
	struct got g, g2;
	char *url;

	ck_assert_int_eq(tl_sim_start(&sim, dir, "--accounts 2"), 0);
	ck_assert_int_eq(tl_sim_account(&sim, 2, &acct), 0);
	url = url_of("http", "127.0.0.1", sim.port);
	refresh(NULL, url, NULL, acct.refresh_token, 30000, &g);
	ck_assert_msg(g.outcome == OAUTH_OK, "outcome %d: %s", g.outcome, g.message);
	ck_assert_str_ne(g.refresh, acct.refresh_token);
	free(url);

	url = url_of("http", "localhost", sim.port);
	refresh(NULL, url, NULL, g.refresh, 30000, &g2);
	ck_assert_msg(g2.outcome == OAUTH_OK, "outcome %d: %s", g2.outcome, g2.message);
	free(url);
	got_free(&g);
	got_free(&g2);

	/* https to a plain HTTP server: a TLS failure, transient */
	url = url_of("https", "127.0.0.1", sim.port);
	refresh(NULL, url, NULL, "rt_x", 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_int_eq(g.status, 0);
	got_free(&g);
	free(url);
	tl_account_free(&acct);
	ck_assert_int_eq(tl_sim_stop(&sim), 0);
}
END_TEST

START_TEST(test_oauth__bad_urls_refused_before_io)
{
	static const struct {
		const char	*url;
		const char	*why;
	} bad[] = {
		/* TEST-NET-1: only a string here; it must never be contacted */
		{ "http://192.0.2.1/oauth/token", "refusing plain http" },
		{ "http://192.0.2.1:8080/oauth/token", "refusing plain http" },
		{ "http://auth.openai.com/oauth/token", "refusing plain http" },
		{ "http://[2001:db8::1]/oauth/token", "refusing plain http" },
		{ "http://10.0.0.1/oauth/token", "refusing plain http" },
		{ "ftp://localhost/oauth/token", "https://" },
		{ "https://user:secret@auth.openai.com/oauth/token", "credentials" },
		{ "not a url", "not a valid URL" },
		{ "", "empty" },
		{ "https://auth.openai.com/oauth/token", "DNS resolver" },	/* no dns */
	};
	struct got g;
	char err[256];
	size_t i;

	memset(&g, 0, sizeof(g));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_ptr_null(oauth_refresh(base, NULL, bad[i].url, NULL, "rt", USEC_PER_SEC,
		    on_done, &g, err, sizeof(err)));
		ck_assert_msg(strstr(err, bad[i].why) != NULL, "%s: unclear error: %s",
		    bad[i].url, err);
	}
	ck_assert_int_eq(oauth_check_url("http://192.0.2.1/x", err, sizeof(err)), -1);
	ck_assert_int_eq(oauth_check_url("http://127.8.9.10:1/x", err, sizeof(err)), 0);
	ck_assert_int_eq(oauth_check_url("http://[::1]:1/x", err, sizeof(err)), 0);
	ck_assert_int_eq(oauth_check_url("http://LOCALHOST:1/x", err, sizeof(err)), 0);
	ck_assert_int_eq(oauth_check_url(NULL, err, sizeof(err)), 0);	/* the default */

	/* a missing CA file and a missing token are refused too */
	ck_assert_ptr_null(oauth_refresh(base, NULL, "https://127.0.0.1:1/t", "/nonexistent/ca.pem",
	    "rt", USEC_PER_SEC, on_done, &g, err, sizeof(err)));
	ck_assert_msg(strstr(err, "/nonexistent/ca.pem") != NULL, "unclear: %s", err);
	ck_assert_ptr_null(oauth_refresh(base, NULL, "http://127.0.0.1:1/t", NULL, "",
	    USEC_PER_SEC, on_done, &g, err, sizeof(err)));

	/* nothing was started: nothing to run, nothing left */
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(g.calls, 0);
	ck_assert_int_eq(oauth_pending(), 0);
}
END_TEST

START_TEST(test_oauth__unreachable_port_is_transient)
{
	struct got g;
	char *url;
	int fd, port;

	/* a port that was free a moment ago and has no listener */
	fd = loopback_socket(SOCK_STREAM, 0, &port);
	close(fd);
	url = url_of("http", "127.0.0.1", port);
	refresh(NULL, url, NULL, "rt", 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_int_eq(g.status, 0);
	ck_assert_msg(strstr(g.message, "could not connect") != NULL, "message: %s", g.message);
	got_free(&g);
	free(url);

	url = url_of("https", "127.0.0.1", port);
	refresh(NULL, url, NULL, "rt", 30000, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_msg(strstr(g.message, "could not connect") != NULL, "message: %s", g.message);
	got_free(&g);
	free(url);
}
END_TEST

START_TEST(test_oauth__silent_server_times_out)
{
	struct got g;
	char *url;
	int fd, port;

	fd = loopback_socket(SOCK_STREAM, 1, &port);	/* accepts into the backlog only */
	url = url_of("http", "127.0.0.1", port);
	refresh(NULL, url, NULL, "rt", 300, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_int_eq(g.status, 0);
	ck_assert_msg(strstr(g.message, "within") != NULL ||
	    strstr(g.message, "timed out") != NULL, "message: %s", g.message);
	got_free(&g);
	free(url);

	/* TLS handshake that never gets a ServerHello */
	url = url_of("https", "localhost", port);
	refresh(NULL, url, NULL, "rt", 300, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_msg(strstr(g.message, "within") != NULL ||
	    strstr(g.message, "timed out") != NULL, "message: %s", g.message);
	got_free(&g);
	free(url);
	close(fd);
}
END_TEST

START_TEST(test_oauth__cancel_in_flight_is_clean)
{
	struct got g;
	char buf[4096], *url;
	size_t have = 0;
	ssize_t n;
	int lfd, cfd, port;
	struct oauth_req *r;

	buf[0] = '\0';
	/* cancel before anything happened */
	lfd = loopback_socket(SOCK_STREAM, 1, &port);
	url = url_of("https", "127.0.0.1", port);
	r = start(NULL, url, NULL, "rt_cancel_1", 30000, &g);
	oauth_cancel(r);
	ck_assert_int_eq(oauth_pending(), 0);
	free(url);
	close(lfd);

	/* cancel with the request sent and the answer awaited */
	lfd = loopback_socket(SOCK_STREAM, 1, &port);
	url = url_of("http", "127.0.0.1", port);
	r = start(NULL, url, NULL, "rt_cancel_2", 30000, &g);
	ck_assert(run_until(fd_readable, &lfd, WAIT_MS));
	cfd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(cfd, 0);
	while (strstr(buf, "rt_cancel_2") == NULL) {
		ck_assert(run_until(fd_readable, &cfd, WAIT_MS));
		n = read(cfd, buf + have, sizeof(buf) - 1 - have);
		ck_assert_int_gt(n, 0);
		have += (size_t)n;
		buf[have] = '\0';
	}
	ck_assert_msg(strncmp(buf, REQUEST_LINE, sizeof(REQUEST_LINE) - 1) == 0, "%s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "Content-Type: application/json"));
	ck_assert_ptr_nonnull(strstr(buf, "\"grant_type\":\"refresh_token\""));
	ck_assert_ptr_nonnull(strstr(buf, "\"client_id\":\"" OAUTH_CLIENT_ID "\""));
	oauth_cancel(r);
	ck_assert_int_eq(oauth_pending(), 0);
	/* the connection is gone: the peer sees EOF */
	ck_assert(run_until(fd_readable, &cfd, WAIT_MS));
	ck_assert_int_eq(read(cfd, buf, sizeof(buf)), 0);
	close(cfd);
	free(url);
	close(lfd);

	/* cancel in the middle of a TLS handshake */
	lfd = loopback_socket(SOCK_STREAM, 1, &port);
	url = url_of("https", "localhost", port);
	r = start(NULL, url, NULL, "rt_cancel_3", 30000, &g);
	ck_assert(run_until(fd_readable, &lfd, WAIT_MS));
	cfd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(cfd, 0);
	ck_assert(run_until(fd_readable, &cfd, WAIT_MS));	/* ClientHello */
	n = read(cfd, buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq((unsigned char)buf[0], 0x16);		/* a handshake record */
	oauth_cancel(r);
	ck_assert_int_eq(oauth_pending(), 0);
	close(cfd);
	free(url);

	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(g.calls, 0);
	close(lfd);
}
END_TEST

/* A resolver that is asked and never answers (a UDP socket made here). */
static struct evdns_base *
silent_dns(int *ufd)
{
	struct evdns_base *dns;
	char ns[64];
	int port;

	*ufd = loopback_socket(SOCK_DGRAM, 0, &port);
	dns = evdns_base_new(base, 0);
	ck_assert_ptr_nonnull(dns);
	snprintf(ns, sizeof(ns), "127.0.0.1:%d", port);
	ck_assert_int_eq(evdns_base_nameserver_ip_add(dns, ns), 0);
	return dns;
}

START_TEST(test_oauth__cancel_and_timeout_during_dns)
{
	struct evdns_base *dns;
	struct got g;
	struct oauth_req *r;
	int ufd;

	dns = silent_dns(&ufd);
	r = start(dns, "https://auth.example.invalid/oauth/token", NULL, "rt", 30000, &g);
	ck_assert(run_until(fd_readable, &ufd, WAIT_MS));	/* the query went out */
	oauth_cancel(r);
	/* freed once the lookup has come back cancelled */
	ck_assert(run_until(none_pending, NULL, WAIT_MS));
	ck_assert_int_eq(g.calls, 0);

	refresh(dns, "https://auth.example.invalid/oauth/token", NULL, "rt", 300, &g);
	ck_assert_int_eq(g.outcome, OAUTH_TRANSIENT);
	ck_assert_msg(strstr(g.message, "within") != NULL, "message: %s", g.message);
	got_free(&g);

	evdns_base_free(dns, 1);
	close(ufd);
	ck_assert_int_eq(oauth_pending(), 0);
}
END_TEST

START_TEST(test_oauth__classify_answers)
{
	static const char jwt[] = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlMTIz";
	struct oauth_result r;
	char body[512];

	memset(&r, 0, sizeof(r));
#define PARSE(st, b)	oauth_parse_response((st), (b), strlen(b), &r)
	PARSE(200, "{\"access_token\":\"at\",\"refresh_token\":\"rt\",\"id_token\":\"it\","
	    "\"expires_in\":3600}");
	ck_assert_int_eq(r.outcome, OAUTH_OK);
	ck_assert_str_eq(r.access_token, "at");
	ck_assert_str_eq(r.refresh_token, "rt");
	ck_assert_str_eq(r.id_token, "it");
	ck_assert_int_eq(r.expires_in, 3600);

	PARSE(200, "{\"access_token\":\"at\"}");	/* no rotation: keep the old one */
	ck_assert_int_eq(r.outcome, OAUTH_OK);
	ck_assert_ptr_null(r.refresh_token);
	ck_assert_int_eq(r.expires_in, -1);

	PARSE(200, "{\"token_type\":\"Bearer\"}");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	PARSE(200, "<html>hello</html>");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	PARSE(200, "");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);

	/* the three places the code can be */
	PARSE(401, "{\"error\":{\"code\":\"refresh_token_expired\",\"message\":\"m\"}}");
	ck_assert_int_eq(r.outcome, OAUTH_PERMANENT);
	ck_assert_str_eq(r.error_code, "refresh_token_expired");
	PARSE(400, "{\"error\":\"invalid_grant\",\"error_description\":\"bad\"}");
	ck_assert_int_eq(r.outcome, OAUTH_PERMANENT);
	ck_assert_str_eq(r.error_code, "invalid_grant");
	ck_assert_ptr_nonnull(strstr(r.message, "bad"));
	PARSE(401, "{\"code\":\"refresh_token_invalidated\",\"message\":\"gone\"}");
	ck_assert_int_eq(r.outcome, OAUTH_PERMANENT);
	ck_assert_str_eq(r.error_code, "refresh_token_invalidated");

	/* other codes and statuses are worth a retry */
	PARSE(401, "{\"error\":{\"code\":\"invalid_client\"}}");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	PARSE(403, "{\"error\":\"invalid_grant\"}");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	PARSE(429, "{\"error\":{\"code\":\"rate_limited\"}}");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	ck_assert_int_eq(r.http_status, 429);
	PARSE(500, "{\"error\":\"refresh_token_reused\"}");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	PARSE(502, "<html>Bad gateway</html>");
	ck_assert_int_eq(r.outcome, OAUTH_TRANSIENT);
	ck_assert_ptr_nonnull(strstr(r.message, "not JSON"));

	/* a server that echoes a token does not get it into our message */
	snprintf(body, sizeof(body), "{\"error\":{\"code\":\"x\",\"message\":\"bad %s\"}}", jwt);
	PARSE(400, body);
	ck_assert_ptr_null(strstr(r.message, jwt));
#undef PARSE
	oauth_result_clear(&r);
	ck_assert_str_eq(oauth_outcome_name(OAUTH_PERMANENT), "permanent");
}
END_TEST

static Suite *
make_suite_oauth(void)
{
	Suite *s = suite_create("oauth");
	TCase *tc = tcase_create("oauth");

	tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, test_oauth__refresh_ok_tls_then_reuse_is_permanent);
	tcase_add_test(tc, test_oauth__wrong_ca_is_transient);
	tcase_add_test(tc, test_oauth__host_name_mismatch_refused);
	tcase_add_test(tc, test_oauth__plain_http_loopback_works);
	tcase_add_test(tc, test_oauth__bad_urls_refused_before_io);
	tcase_add_test(tc, test_oauth__unreachable_port_is_transient);
	tcase_add_test(tc, test_oauth__silent_server_times_out);
	tcase_add_test(tc, test_oauth__cancel_in_flight_is_clean);
	tcase_add_test(tc, test_oauth__cancel_and_timeout_during_dns);
	tcase_add_test(tc, test_oauth__classify_answers);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(make_suite_oauth());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
