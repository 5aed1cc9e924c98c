/*
 * Client-to-server WebSocket frames (RFC 6455 5.2, 5.3) built here rather
 * than by libwebsockets: lws 4.1.6 masks a client frame one byte at a
 * time, which was a third of a worker's instructions per turn for a
 * ~30 KB request.  upstream.c hands the finished frame to lws_write() as
 * LWS_WRITE_HTTP, which lws 4.1.6 sends unframed (see upstream.c).
 */
#ifndef CODEXPOOL_WSFRAME_H
#define CODEXPOOL_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

#define WSFRAME_OP_TEXT		0x1
#define WSFRAME_OP_BINARY	0x2
#define WSFRAME_HEADER_MAX	14	/* 2 + 8 (64-bit length) + 4 (mask) */

/* Header bytes (mask key included) of a masked frame of len payload bytes. */
size_t	wsframe_header_len(size_t len);
/* Four mask key bytes from the CSPRNG (RFC 6455 10.3); -1 when it fails. */
int	wsframe_mask_key(uint8_t key[4]);
/* XOR len bytes of in with key into out (out may be in), the key's phase
 * starting at byte 0. */
void	wsframe_mask(uint8_t *out, const uint8_t *in, size_t len,
	    const uint8_t key[4]);
/* A whole masked frame with FIN set: header, then payload XORed with key.
 * out holds wsframe_header_len(len) + len bytes; returns that length. */
size_t	wsframe_build(uint8_t *out, unsigned opcode, const void *payload,
	    size_t len, const uint8_t key[4]);

#endif
