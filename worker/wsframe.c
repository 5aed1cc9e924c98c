/*
 * Masked client WebSocket frames (wsframe.h).
 */
#include "config.h"

#include <string.h>

#include <openssl/rand.h>

#include "wsframe.h"

size_t
wsframe_header_len(size_t len)
{
	if (len < 126)
		return 2 + 4;
	if (len <= 0xffff)
		return 4 + 4;
	return 10 + 4;
}

int
wsframe_mask_key(uint8_t key[4])
{
	return RAND_bytes(key, 4) == 1 ? 0 : -1;
}

void
wsframe_mask(uint8_t *out, const uint8_t *in, size_t len, const uint8_t key[4])
{
	uint64_t k8, v, w[4];
	size_t i = 0, j;

	/* eight bytes at a time: the key repeats every four, so a word of
	 * two keys keeps the phase; four words a round while they last */
	memcpy(&k8, key, 4);
	memcpy((uint8_t *)&k8 + 4, key, 4);
	for (; i + 32 <= len; i += 32) {
		memcpy(w, in + i, 32);
		for (j = 0; j < 4; j++)
			w[j] ^= k8;
		memcpy(out + i, w, 32);
	}
	for (; i + 8 <= len; i += 8) {
		memcpy(&v, in + i, 8);
		v ^= k8;
		memcpy(out + i, &v, 8);
	}
	for (; i < len; i++)
		out[i] = in[i] ^ key[i & 3];
}

size_t
wsframe_build(uint8_t *out, unsigned opcode, const void *payload, size_t len,
    const uint8_t key[4])
{
	size_t h = 0;
	int i;

	out[h++] = 0x80 | (opcode & 0x0f);		/* FIN */
	if (len < 126)
		out[h++] = 0x80 | (uint8_t)len;		/* MASK */
	else if (len <= 0xffff) {
		out[h++] = 0x80 | 126;
		out[h++] = (uint8_t)(len >> 8);
		out[h++] = (uint8_t)len;
	} else {
		out[h++] = 0x80 | 127;
		for (i = 7; i >= 0; i--)
			out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	memcpy(out + h, key, 4);
	h += 4;
	wsframe_mask(out + h, payload, len, key);
	return h + len;
}
