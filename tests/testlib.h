/*
 * testlib: what the end-to-end tests and benchmarks share.
 *
 * Processes (spawn, stop, a registry that kills leftovers), temp dirs,
 * files, certificates, the simulator (start, state, faults), a blocking
 * HTTP/1.1 client with SSE streaming, a blocking WebSocket client, and
 * builders for Responses requests.  Everything is plain TCP on loopback,
 * optionally TLS (OpenSSL) verified against a CA file.
 *
 * Conventions: functions returning int give 0 on success and -1 on
 * failure unless said otherwise; malloc'd results are freed by the
 * caller; json_object results are owned by the caller (json_object_put).
 * Timeouts are in milliseconds.  Failures print one line to stderr
 * ("testlib: ..."), so a failing test log says what went wrong.
 */
#ifndef CODEXPOOL_TESTLIB_H
#define CODEXPOOL_TESTLIB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#define TL_DEFAULT_TIMEOUT_MS	30000

/* ---- environment, files, directories ------------------------------- */

const char *tl_builddir(void);		/* $CODEXPOOL_BUILDDIR or "." */
const char *tl_srcdir(void);		/* $CODEXPOOL_SRCDIR or "." */
/* Path of a built program: tl_program("sim/codexpool-sim"); malloc'd. */
char	*tl_program(const char *relpath);
/* A fresh private (0700) directory under $TMPDIR or /tmp; malloc'd. */
char	*tl_tmpdir(void);
/* rm -rf without a shell; refuses "/" and "". */
int	tl_rmrf(const char *path);

/* Whole file, NUL-terminated, malloc'd; NULL if unreadable.  len may be NULL. */
char	*tl_read_file(const char *path, size_t *len);
int	tl_write_file(const char *path, const void *data, size_t len, int mode);
int	tl_file_contains(const char *path, const char *needle);	/* 1 / 0 */
/* Polls until path exists (and is non-empty); 0 or -1 on timeout. */
int	tl_wait_file(const char *path, int timeout_ms);
/* Polls until path contains needle; 0 or -1 on timeout. */
int	tl_wait_file_contains(const char *path, const char *needle, int timeout_ms);
/* Sleeps ms milliseconds (for poll loops only; never to "let things happen"). */
void	tl_msleep(int ms);
int64_t	tl_now_ms(void);			/* monotonic */

/* ---- processes ------------------------------------------------------ */

/*
 * Starts argv[0] (a path) in its own process group with stdin from
 * /dev/null and stdout+stderr appended to logfile (NULL: /dev/null);
 * every other fd is closed.  The child dies with the process that
 * started it (PR_SET_PDEATHSIG), so a Check test child that fails or
 * times out does not leave it behind; tl_kill_all() and an atexit
 * handler kill whatever is still registered.  envp_extra ("K=V", NULL
 * terminated, may be NULL) is added to the environment.
 */
pid_t	tl_spawn(const char *logfile, char *const argv[]);
pid_t	tl_spawn_env(const char *logfile, char *const argv[], char *const envp_extra[]);
/*
 * Sends sig (0: none) and waits up to timeout_ms for the exit, then
 * SIGKILLs the process group.  Returns the exit status (0..255), or
 * -signal if it died by a signal, or -1000 if pid is unknown.
 */
int	tl_stop(pid_t pid, int sig, int timeout_ms);
/* Like tl_stop without a signal: waits for an exit that should happen. */
int	tl_wait_exit(pid_t pid, int timeout_ms);
int	tl_alive(pid_t pid);			/* 1 if still running */
/* SIGKILLs every registered process group (teardown fixtures). */
void	tl_kill_all(void);
/* Open descriptors of pid (/proc/PID/fd), -1 if unreadable. */
int	tl_fd_count(pid_t pid);
/* Proportional set size of pid in KiB (/proc/PID/smaps_rollup), -1 if unreadable. */
long	tl_pss_kib(pid_t pid);
/* A loopback TCP port that was free a moment ago, -1 on error. */
int	tl_free_port(void);
/* Runs argv to completion (output to logfile); returns its exit status. */
int	tl_run(const char *logfile, char *const argv[], int timeout_ms);

/* ---- certificates --------------------------------------------------- */

/*
 * dir/ca.pem, dir/ca.key, dir/server.pem, dir/server.key (SAN
 * DNS:localhost, IP:127.0.0.1; EC P-256; keys 0600), made with the
 * openssl CLI; its output goes to dir/openssl.log.
 */
int	tl_make_certs(const char *dir);

/* ---- the simulator ---------------------------------------------------- */

struct tl_sim {
	pid_t	pid;
	int	port;
	int	tls;			/* started with --tls-cert */
	int	naccounts;
	char	dir[512];		/* the dir given to tl_sim_start */
	char	log[600];		/* dir/sim.log */
	char	auth_dir[600];		/* dir/auth */
	char	ca_file[600];		/* for TLS: the CA to verify with */
};

/*
 * Starts codexpool-sim with --listen 127.0.0.1:0, --port-file, --auth-dir
 * dir/auth and --accounts 2 (unless extra_args has --accounts), plus
 * extra_args (space-separated, may be NULL), and waits for the port.
 * If extra_args has --tls-cert, ca_file is set to dir/ca.pem when that
 * exists (tl_make_certs(dir) first).
 */
int	tl_sim_start(struct tl_sim *sim, const char *dir, const char *extra_args);
/* SIGTERM, wait; returns the exit status like tl_stop (0 = clean). */
int	tl_sim_stop(struct tl_sim *sim);
/* GET /sim/state parsed; NULL on failure. */
json_object *tl_sim_state(struct tl_sim *sim);
/* POST /sim/fault with json; 0 if the sim answered 200. */
int	tl_sim_fault(struct tl_sim *sim, const char *json);
int	tl_sim_reset(struct tl_sim *sim);
/* Path of dir/auth/account-N.json (N from 1) into buf. */
void	tl_sim_auth_path(const struct tl_sim *sim, int n, char *buf, size_t size);

/* One account's tokens, as in a Codex CLI auth.json. */
struct tl_account {
	char	*access_token;
	char	*refresh_token;
	char	*id_token;
	char	*account_id;
};
int	tl_read_auth(const char *path, struct tl_account *acct);
int	tl_sim_account(const struct tl_sim *sim, int n, struct tl_account *acct);
void	tl_account_free(struct tl_account *acct);
/* "authorization: Bearer ...\r\nchatgpt-account-id: ...\r\n" plus the
 * usual Codex handshake headers; malloc'd. */
char	*tl_auth_headers(const struct tl_account *acct);

/* ---- HTTP client -------------------------------------------------- */

struct tl_conn_opts {
	const char	*ca_file;	/* non-NULL: TLS, verified against it */
	const char	*server_name;	/* SNI/verify name; default: host */
	int		 timeout_ms;	/* 0: TL_DEFAULT_TIMEOUT_MS */
};

struct tl_response {
	int	 status;
	char	*headers;		/* raw header block, NUL-terminated */
	char	*body;			/* de-chunked, NUL-terminated */
	size_t	 bodylen;
};

/*
 * One request with Connection: close.  extra_headers is a block of
 * "Name: value\r\n" lines or NULL; Content-Type defaults to
 * application/json when there is a body.  Handles Content-Length,
 * chunked and read-until-close bodies.  0 when a response was read.
 */
int	tl_http(const char *host, int port, const char *method, const char *path,
	    const char *extra_headers, const void *body, size_t len,
	    struct tl_response *out);
int	tl_http_opts(const struct tl_conn_opts *opts, const char *host, int port,
	    const char *method, const char *path, const char *extra_headers,
	    const void *body, size_t len, struct tl_response *out);
void	tl_response_free(struct tl_response *r);
/* Value of a header in a raw header block (case-insensitive), malloc'd. */
char	*tl_header_get(const char *headers, const char *name);
/* The body parsed as JSON, or NULL. */
json_object *tl_response_json(const struct tl_response *r);

/* Streaming: returns after the response headers. */
struct tl_stream;
struct tl_stream *tl_stream_open(const struct tl_conn_opts *opts, const char *host,
	    int port, const char *method, const char *path, const char *extra_headers,
	    const void *body, size_t len);
/*
 * The same in two steps, for a request whose answer is not expected yet
 * (a turn still queued or waiting upstream): tl_stream_send only connects
 * and sends; tl_stream_head reads the status line and headers (done
 * already: 0).  tl_stream_read and tl_stream_read_event read it first.
 */
struct tl_stream *tl_stream_send(const struct tl_conn_opts *opts, const char *host,
	    int port, const char *method, const char *path, const char *extra_headers,
	    const void *body, size_t len);
int	tl_stream_head(struct tl_stream *s);
/* The rest of the response into out, as tl_http does; always closes s. */
int	tl_stream_finish(struct tl_stream *s, struct tl_response *out);
int	tl_stream_status(const struct tl_stream *s);
const char *tl_stream_headers(const struct tl_stream *s);
/* Up to n body bytes (de-chunked); 0 at the end, -1 on error/timeout. */
ssize_t	tl_stream_read(struct tl_stream *s, void *buf, size_t n, int timeout_ms);
/*
 * Next SSE event: 1 with *event (NULL if no "event:" line) and *data
 * (data lines joined by "\n"), both malloc'd; 0 at the end of the body;
 * -1 on error or timeout.
 */
int	tl_stream_read_event(struct tl_stream *s, char **event, char **data,
	    int timeout_ms);
/* Closes; with abort, by a TCP RST (SO_LINGER 0), like a killed client. */
void	tl_stream_close(struct tl_stream *s, int abort);

/* SSE helpers over a whole body. */
int	tl_sse_count(const char *body, const char *event_type);
/* Data of the last event whose type is event_type, parsed; NULL if none.
 * The type is the "event:" name or, without one, the data's "type". */
json_object *tl_sse_find(const char *body, const char *event_type);
json_object *tl_sse_completed(const char *body);	/* response.completed */
/* Every event's data JSON, in order, as an array. */
json_object *tl_sse_events(const char *body);

/* ---- WebSocket client ----------------------------------------------- */

enum tl_ws_why {
	TL_WS_OK = 0,
	TL_WS_CLOSED,		/* close frame received (code in tl_ws_close_code) */
	TL_WS_EOF,		/* TCP closed without a close frame */
	TL_WS_RESET,		/* ECONNRESET */
	TL_WS_TIMEOUT,
	TL_WS_ERROR,		/* protocol or other I/O error */
};

struct tl_ws;

/*
 * Connects and upgrades path.  extra_headers as for tl_http.  ca_file
 * non-NULL means TLS.  NULL when refused: *http_status_out is the HTTP
 * status (0 if no HTTP answer at all).
 */
struct tl_ws *tl_ws_connect(const char *host, int port, const char *path,
	    const char *extra_headers, const char *ca_file, int *http_status_out);
/* Same; when refused, *refusal (if given) receives the whole response. */
struct tl_ws *tl_ws_connect_ex(const struct tl_conn_opts *opts, const char *host,
	    int port, const char *path, const char *extra_headers,
	    struct tl_response *refusal);
/* Response headers of the 101. */
const char *tl_ws_headers(const struct tl_ws *ws);
int	tl_ws_send_text(struct tl_ws *ws, const char *text, size_t len);
/* Sends text as several frames of at most frag bytes (first text, then
 * continuation frames). */
int	tl_ws_send_fragmented(struct tl_ws *ws, const char *text, size_t len, size_t frag);
int	tl_ws_send_binary(struct tl_ws *ws, const void *data, size_t len);
int	tl_ws_send_ping(struct tl_ws *ws, const void *data, size_t len);
/*
 * Next text message (fragments joined), malloc'd and NUL-terminated;
 * pings are answered and pongs counted on the way.  NULL otherwise, with
 * *why (may be NULL) telling why.
 */
char	*tl_ws_recv_text(struct tl_ws *ws, int timeout_ms, enum tl_ws_why *why);
int	tl_ws_close_code(const struct tl_ws *ws);	/* -1 if none */
int	tl_ws_pongs(const struct tl_ws *ws);		/* pongs received */
/* Sends a close frame (if still open) and frees. */
void	tl_ws_close(struct tl_ws *ws);
/* Drops the TCP connection without a close frame and frees. */
void	tl_ws_abort(struct tl_ws *ws);
const char *tl_ws_why_name(enum tl_ws_why why);

/*
 * Sends one request and collects the parsed frames until a terminal one
 * (response.completed, response.failed, error, response.incomplete) or
 * until the connection ends / the timeout.  Returns the frames as an
 * array (possibly empty), never NULL; *why says how it ended (TL_WS_OK
 * for a terminal frame).
 */
json_object *tl_ws_turn(struct tl_ws *ws, const char *request, int timeout_ms,
	    enum tl_ws_why *why);
/* Only the collecting part of tl_ws_turn. */
json_object *tl_ws_collect(struct tl_ws *ws, int timeout_ms, enum tl_ws_why *why);

/* ---- frames and usage ---------------------------------------------- */

/* Borrowed: the last frame of type in frames, or NULL. */
json_object *tl_frames_find(json_object *frames, const char *type);
int	tl_frames_count(json_object *frames, const char *type);
/* The type of every frame, space-separated, malloc'd (for messages). */
char	*tl_frames_types(json_object *frames);

struct tl_usage {
	int64_t	input_tokens;
	int64_t	cached_tokens;
	int64_t	output_tokens;
	int64_t	total_tokens;
};
/* From a response.completed event (or its "response" object). */
int	tl_usage_of(json_object *completed, struct tl_usage *u);
/* response.id of a response.completed event, borrowed. */
const char *tl_response_id(json_object *completed);

/* ---- request builders ------------------------------------------------ */

/* kib KiB of deterministic prose (different seeds give different text),
 * malloc'd.  Four bytes make a token in the simulator, so 16 KiB of
 * instructions is about 4096 tokens, well past the 1024-token cache floor. */
char	*tl_text(size_t kib, unsigned seed);

/* {"type":"message","role":role,"content":[{"type":"input_text"|"output_text","text":text}]} */
json_object *tl_msg(const char *role, const char *text);

struct tl_req {
	const char	*model;			/* NULL: "gpt-5.4" */
	const char	*instructions;		/* NULL: omitted */
	const char	*prompt_cache_key;	/* NULL: omitted */
	const char	*previous_response_id;	/* NULL: omitted (WS only) */
	json_object	*input;			/* borrowed array; NULL: [] */
	json_object	*tools;			/* borrowed array; NULL: [] */
	int		 stream;		/* HTTP: "stream" value */
	int		 prewarm;		/* WS: 1 sends "generate":false */
};

/* A WebSocket response.create frame, malloc'd. */
char	*tl_req_ws(const struct tl_req *r);
/* An HTTP /v1/responses body (no "type", no previous_response_id), malloc'd. */
char	*tl_req_http(const struct tl_req *r);

/* Shorthands of tl_req_http / tl_req_ws with generate on. */
char	*tl_responses_body(const char *model, const char *instructions,
	    const char *prompt_cache_key, int stream, json_object *input);
char	*tl_response_create(const char *model, const char *instructions,
	    const char *prompt_cache_key, const char *previous_response_id,
	    json_object *input);

/*
 * A stateless client's history: appends the output items of a response
 * (every response.output_item.done item in frames / in an SSE body) to
 * history, without their "id" and "status", as the Codex CLI resends
 * them.  Returns how many were added.
 */
int	tl_history_add_output(json_object *history, json_object *frames);
int	tl_history_add_sse(json_object *history, const char *sse_body);
/* Text of the assistant message(s) among frames, malloc'd ("" if none). */
char	*tl_output_text(json_object *frames);

#endif
