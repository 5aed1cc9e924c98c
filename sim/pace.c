/*
 * Paced plan sending and frame writing, for both transports.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "pace.h"

static void
sul_cb(lws_sorted_usec_list_t *sul)
{
	struct pacer *p = lws_container_of(sul, struct pacer, sul);

	lws_callback_on_writable(p->wsi);
}

void
pacer_init(struct pacer *p, struct lws *wsi)
{
	memset(p, 0, sizeof(*p));
	p->wsi = wsi;
}

void
pacer_kick(struct pacer *p)
{
	usec_t now;

	if (p->script.head == NULL)
		return;
	now = now_mono_usec();
	if (!p->armed) {
		p->not_before = now + (usec_t)p->script.head->delay_ms * USEC_PER_MSEC;
		p->armed = 1;
	}
	if (now >= p->not_before)
		lws_callback_on_writable(p->wsi);
	else
		lws_sul_schedule(g_ctx, 0, &p->sul, sul_cb,
		    (lws_usec_t)(p->not_before - now));
}

struct plan_step *
pacer_due(struct pacer *p)
{
	if (p->script.head == NULL)
		return NULL;
	if (!p->armed || now_mono_usec() < p->not_before) {
		pacer_kick(p);
		return NULL;
	}
	p->armed = 0;
	return plan_pop(&p->script);
}

void
pacer_free(struct pacer *p, int context_alive)
{
	if (context_alive)
		lws_sul_cancel(&p->sul);
	plan_free(&p->script);
}

/* Copies data into buf + LWS_PRE + off with the send-time stamp; returns
 * the stamped length. */
static size_t
put_stamped(unsigned char *dst, const char *data, size_t len)
{
	char stamp[SIM_STAMP_MAX];
	size_t sl = sim_stamp_suffix(data, len, stamp, sizeof(stamp));

	if (sl == 0) {
		memcpy(dst, data, len);
		return len;
	}
	memcpy(dst, data, len - 1);
	memcpy(dst + len - 1, stamp, sl);
	return len - 1 + sl;
}

int
send_ws_frame(struct lws *wsi, const char *data, size_t len)
{
	unsigned char *buf = xmalloc(LWS_PRE + len + SIM_STAMP_MAX);
	size_t n = put_stamped(buf + LWS_PRE, data, len);
	int w;

	w = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT);
	free(buf);
	return (w < 0 || (size_t)w < n) ? -1 : 0;
}

/* The frame's "type", for the SSE event line; "" if it has none. */
static void
frame_type(const char *data, size_t len, char *out, size_t size)
{
	static const char key[] = "\"type\":\"";
	const char *p = memmem(data, len < 256 ? len : 256, key, sizeof(key) - 1);
	size_t i = 0;

	out[0] = '\0';
	if (p == NULL)
		return;
	p += sizeof(key) - 1;
	while (p < data + len && *p != '"' && *p != '\\' && i + 1 < size)
		out[i++] = *p++;
	out[i] = '\0';
}

int
send_sse_frame(struct lws *wsi, const unsigned char *resp_head, size_t rhl,
    const char *data, size_t len)
{
	char type[128], head[200];
	unsigned char *buf, *c;
	size_t hl, n, body, total;
	int w;

	frame_type(data, len, type, sizeof(type));
	/* [response head], chunk size line, "event: T\ndata: ", JSON, "\n\n",
	 * "\r\n" */
	buf = xmalloc(LWS_PRE + rhl + 16 + sizeof(head) + len + SIM_STAMP_MAX + 8);
	if (rhl > 0)
		memcpy(buf + LWS_PRE, resp_head, rhl);
	c = buf + LWS_PRE + rhl;
	hl = (size_t)snprintf(head, sizeof(head), "%s%s%sdata: ",
	    type[0] ? "event: " : "", type, type[0] ? "\n" : "");
	/* The chunk size comes first but depends on the stamped length:
	 * stamp into place after a fixed 8-hex-digit size line. */
	memcpy(c + 10, head, hl);
	n = put_stamped(c + 10 + hl, data, len);
	body = hl + n + 2;
	memcpy(c + 10 + hl + n, "\n\n\r\n", 4);
	snprintf((char *)c, 11, "%08zx\r", body);
	c[9] = '\n';
	total = rhl + 10 + body + 2;
	w = lws_write(wsi, buf + LWS_PRE, total, LWS_WRITE_HTTP);
	free(buf);
	return (w < 0 || (size_t)w < total) ? -1 : 0;
}

/* A TCP RST: with SO_LINGER {1, 0} the last close of the socket aborts
 * it.  lws would shut the socket down gracefully (FIN) first, so the
 * connected socket is replaced under lws's fd by a fresh unconnected one;
 * the dup2 drops the last reference and sends the RST, and lws then sees
 * a hung-up socket and cleans up. */
void
abort_with_rst(struct lws *wsi)
{
	struct linger lg = { 1, 0 };
	int fd = (int)lws_get_socket_fd(wsi), s;

	if (fd < 0)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		log_warn("setsockopt SO_LINGER");
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		log_warn("socket");
		return;
	}
	if (dup2(s, fd) < 0)
		log_warn("dup2");
	close(s);
}
