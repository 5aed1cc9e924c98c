/*
 * check_haproxy: scale-out behind HAProxy, with etc/haproxy-codexpool.cfg.example
 * itself (only its three addresses changed to free loopback ports).
 *
 * Two codexpoold nodes (each with its own simulator), HAProxy in front:
 * every turn of a conversation reaches one node, whatever carries its key
 * (a session header or the body's prompt_cache_key); a node that stops
 * sends only its conversations to the other node; when it comes back they
 * return to it, and the others never move; a client without any key stays
 * on one node; a client WebSocket reaches its conversation's node and its
 * turns run there.  Skipped where haproxy is not installed.
 */
#include "config.h"

#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e.h"

#define NCONV	12
#define NODES	2

static const char *haproxy_paths[] = { "/usr/sbin/haproxy", "/usr/local/sbin/haproxy",
    "/usr/bin/haproxy", NULL };

static const char *
haproxy_bin(void)
{
	int i;

	for (i = 0; haproxy_paths[i]; i++)
		if (access(haproxy_paths[i], X_OK) == 0)
			return haproxy_paths[i];
	return NULL;
}


/* text with its one occurrence of from replaced by to (malloc'd; text freed). */
static char *
replace_once(char *text, const char *from, const char *to)
{
	char *p = strstr(text, from), *out;

	ck_assert_msg(p != NULL, "the example has no '%s'", from);
	ck_assert_msg(strstr(p + 1, from) == NULL, "the example has '%s' twice", from);
	ck_assert_int_ge(asprintf(&out, "%.*s%s%s", (int)(p - text), text, to, p + strlen(from)), 0);
	free(text);
	return out;
}

/* How the conversation's key travels: headers, or the body's prompt_cache_key. */
static const char *const key_headers[] = { "session_id", "session-id",
    "x-claude-code-session-id", NULL /* body */ };

struct hconv {
	char	 key[32];
	char	 headers[96];		/* "" when the key is in the body */
	int	 node;			/* 1 or 2, where its turns went */
	json_object *history;
};

/* One turn through HAProxy; returns the node (1, 2) that served it. */
static int
turn(int port, struct hconv *c, const char *instructions)
{
	struct tl_req r = { .instructions = instructions, .input = c->history };
	struct tl_response resp;
	char *body, *node;
	int n;

	if (c->headers[0] == '\0' && c->key[0] != '(')
		r.prompt_cache_key = c->key;
	json_object_array_add(c->history, tl_msg("user", "next step, please"));
	body = tl_req_http(&r);
	ck_assert_int_eq(tl_http("127.0.0.1", port, "POST", "/v1/responses",
	    c->headers[0] ? c->headers : NULL, body, strlen(body), &resp), 0);
	free(body);
	ck_assert_msg(resp.status == 200, "conversation %s: HTTP %d: %.300s", c->key,
	    resp.status, resp.body);
	node = tl_header_get(resp.headers, "x-codexpool-node");
	ck_assert_msg(node != NULL, "no x-codexpool-node header: %s", resp.headers);
	ck_assert_msg(strcmp(node, "node1") == 0 || strcmp(node, "node2") == 0,
	    "x-codexpool-node: %s", node);
	n = node[4] - '0';
	free(node);
	{
		json_object *o = tl_response_json(&resp), *out;
		size_t i;
		ck_assert_ptr_nonnull(o);
		if (json_object_object_get_ex(o, "output", &out))
			for (i = 0; i < json_object_array_length(out); i++) {
				json_object *item = NULL;
				json_object_deep_copy(json_object_array_get_idx(out, i), &item, NULL);
				json_object_object_del(item, "id");
				json_object_object_del(item, "status");
				json_object_array_add(c->history, item);
			}
		json_object_put(o);
	}
	tl_response_free(&resp);
	return n;
}

START_TEST(test_haproxy__sharding)
{
	const char *haproxy = haproxy_bin();
	struct e2e node[NODES];
	struct hconv conv[NCONV];
	char extra[NODES][64], cfgpath[700], logpath[700], text[64], *cfg, *dir;
	int port[NODES], fport, i, t, per_node[NODES + 1] = { 0 };
	pid_t hap;
	long long served;

	if (haproxy == NULL) {
		fprintf(stderr, "check_haproxy: skipped: haproxy is not installed "
		    "(apt-get install haproxy)\n");
		return;
	}
	for (i = 0; i < NODES; i++) {
		port[i] = tl_free_port();
		ck_assert_int_gt(port[i], 0);
		snprintf(extra[i], sizeof(extra[i]), "listen = 127.0.0.1:%d", port[i]);
		e2e_start(&node[i], NULL, extra[i]);
		ck_assert_int_eq(node[i].port, port[i]);
	}
	dir = node[0].dir;

	/* the example, with its addresses moved to free ports */
	snprintf(cfgpath, sizeof(cfgpath), "%s/etc/haproxy-codexpool.cfg.example", tl_srcdir());
	cfg = tl_read_file(cfgpath, NULL);
	ck_assert_msg(cfg != NULL, "cannot read %s", cfgpath);
	fport = tl_free_port();
	ck_assert_int_gt(fport, 0);
	snprintf(text, sizeof(text), "127.0.0.1:%d", fport);
	cfg = replace_once(cfg, "127.0.0.1:8080", text);
	for (i = 0; i < NODES; i++) {
		char from[32];
		snprintf(from, sizeof(from), "127.0.0.1:%d", 8081 + i);
		snprintf(text, sizeof(text), "127.0.0.1:%d", port[i]);
		cfg = replace_once(cfg, from, text);
	}
	snprintf(cfgpath, sizeof(cfgpath), "%s/haproxy.cfg", dir);
	ck_assert_int_eq(tl_write_file(cfgpath, cfg, strlen(cfg), 0644), 0);
	free(cfg);
	snprintf(logpath, sizeof(logpath), "%s/haproxy.log", dir);
	{
		char *argv[] = { (char *)haproxy, "-f", cfgpath, NULL };
		char *check[] = { (char *)haproxy, "-c", "-f", cfgpath, NULL };
		ck_assert_msg(tl_run(logpath, check, WAIT_MS) == 0, "haproxy -c: see %s", logpath);
		hap = tl_spawn(logpath, argv);
		ck_assert_int_gt(hap, 0);
	}
	/* ready when the frontend answers /health from a node */
	{
		struct tl_response resp;
		int64_t end = tl_now_ms() + WAIT_MS;
		int ok = 0;
		while (!ok && tl_now_ms() < end) {
			if (tl_http("127.0.0.1", fport, "GET", "/health", NULL, NULL, 0, &resp) == 0) {
				ok = resp.status == 200;
				tl_response_free(&resp);
			}
			if (!ok) {
				ck_assert_msg(tl_alive(hap), "haproxy exited; see %s", logpath);
				tl_msleep(50);
			}
		}
		ck_assert_msg(ok, "HAProxy on port %d never answered /health", fport);
	}

	/* three turns per conversation: each lands on one node */
	for (i = 0; i < NCONV; i++) {
		const char *h = key_headers[i % 4];
		memset(&conv[i], 0, sizeof(conv[i]));
		snprintf(conv[i].key, sizeof(conv[i].key), "conv-%d", i);
		if (h != NULL)
			snprintf(conv[i].headers, sizeof(conv[i].headers), "%s: %s\r\n", h,
			    conv[i].key);
		conv[i].history = json_object_new_array();
	}
	for (t = 0; t < 3; t++)
		for (i = 0; i < NCONV; i++) {
			int n = turn(fport, &conv[i], node[0].instructions);
			if (t == 0)
				conv[i].node = n;
			ck_assert_msg(n == conv[i].node, "conversation %s (%s) moved from node%d "
			    "to node%d on turn %d", conv[i].key,
			    conv[i].headers[0] ? conv[i].headers : "prompt_cache_key",
			    conv[i].node, n, t + 1);
		}
	for (i = 0; i < NCONV; i++)
		per_node[conv[i].node]++;
	fprintf(stderr, "check_haproxy: %d conversations on node1, %d on node2\n",
	    per_node[1], per_node[2]);
	ck_assert_msg(per_node[1] > 0 && per_node[2] > 0,
	    "every conversation on one node (%d, %d): no sharding", per_node[1], per_node[2]);
	/* the nodes agree with the header: each served 3 turns per conversation */
	for (i = 0; i < NODES; i++) {
		served = status_num(&node[i], "requests_total");
		ck_assert_msg(served == 3LL * per_node[i + 1], "node%d served %lld turns, "
		    "the header says %d", i + 1, served, 3 * per_node[i + 1]);
	}

	/* a client WebSocket (Codex CLI's transport) passes through to the
	 * node of its conversation and keeps working there */
	{
		struct tl_ws *ws;
		struct tl_req r = { .instructions = node[0].instructions };
		json_object *frames, *in;
		enum tl_ws_why why;
		char hdr[96], *req, *prev = NULL, *nodehdr;
		int status = 0, k, n;

		snprintf(hdr, sizeof(hdr), "session_id: %s\r\n", conv[0].key);
		ws = tl_ws_connect("127.0.0.1", fport, "/v1/responses", hdr, NULL, &status);
		ck_assert_msg(ws != NULL, "WebSocket through HAProxy refused: %d", status);
		nodehdr = tl_header_get(tl_ws_headers(ws), "x-codexpool-node");
		ck_assert_msg(nodehdr != NULL, "no x-codexpool-node on the 101: %s",
		    tl_ws_headers(ws));
		n = nodehdr[4] - '0';
		free(nodehdr);
		ck_assert_int_eq(n, conv[0].node);
		for (k = 0; k < 3; k++) {
			in = json_object_new_array();
			json_object_array_add(in, tl_msg("user", "over the socket"));
			r.input = in;
			r.previous_response_id = prev;
			req = tl_req_ws(&r);
			frames = tl_ws_turn(ws, req, WAIT_MS, &why);
			free(req);
			json_object_put(in);
			ck_assert_msg(why == TL_WS_OK && tl_frames_find(frames,
			    "response.completed") != NULL, "WebSocket turn %d: %s", k + 1,
			    tl_ws_why_name(why));
			free(prev);
			prev = strdup(tl_response_id(tl_frames_find(frames, "response.completed")));
			json_object_put(frames);
		}
		free(prev);
		tl_ws_close(ws);
		ck_assert_int_eq(status_num(&node[n - 1], "ws_turns"), 3);
		ck_assert_int_eq(status_num(&node[2 - n], "ws_turns"), 0);
	}

	/* node2 stops: its conversations go to node1, node1's stay */
	e2e_daemon_stop(&node[1]);
	ck_assert_msg(tl_wait_file_contains(logpath, "node2 is DOWN", WAIT_MS) == 0,
	    "HAProxy never saw node2 go down; see %s", logpath);
	for (i = 0; i < NCONV; i++)
		ck_assert_int_eq(turn(fport, &conv[i], node[0].instructions), 1);

	/* node2 is back: exactly its conversations return to it */
	e2e_daemon_start(&node[1]);
	ck_assert_int_eq(node[1].port, port[1]);
	ck_assert_msg(tl_wait_file_contains(logpath, "node2 is UP", WAIT_MS) == 0,
	    "HAProxy never saw node2 come back; see %s", logpath);
	for (i = 0; i < NCONV; i++) {
		int n = turn(fport, &conv[i], node[0].instructions);
		ck_assert_msg(n == conv[i].node, "conversation %s was on node%d, is now on node%d",
		    conv[i].key, conv[i].node, n);
	}

	/* a stateless client without any key is hashed by its address: one node */
	{
		struct hconv anon;
		int first;
		memset(&anon, 0, sizeof(anon));
		snprintf(anon.key, sizeof(anon.key), "(no key)");
		anon.history = json_object_new_array();
		anon.headers[0] = '\0';
		first = turn(fport, &anon, NULL);
		for (t = 0; t < 4; t++)
			ck_assert_int_eq(turn(fport, &anon, NULL), first);
		json_object_put(anon.history);
	}

	/* SIGUSR1: HAProxy's soft stop, which exits 0 */
	ck_assert_int_eq(tl_stop(hap, SIGUSR1, WAIT_MS), 0);
	for (i = 0; i < NCONV; i++)
		json_object_put(conv[i].history);
	for (i = NODES - 1; i >= 0; i--)
		e2e_stop(&node[i]);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("haproxy");
	TCase *tc = tcase_create("sharding");

	tcase_add_test(tc, test_haproxy__sharding);
	suite_add_tcase(s, tc);
	return e2e_run(s);
}
