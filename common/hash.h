/*
 * Pool-key hashing and the key -> worker mapping.
 *
 * hash64() is FNV-1a over the bytes followed by the splitmix64 finaliser:
 * stable across runs, platforms and releases (it is persisted in logs and
 * in `show pools`), cheap, and well mixed in every bit.
 *
 * jump_hash() is Lamping and Veach's jump consistent hash: no table, no
 * memory, and when the worker count grows from N to N+1 only 1/(N+1) of
 * the keys move.  Workers are numbered 0..N-1 and never removed from the
 * middle (a dead worker is respawned into its own slot), which is exactly
 * the case jump hashing is built for.
 */
#ifndef CODEXPOOL_HASH_H
#define CODEXPOOL_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash64(const void *data, size_t len);
uint64_t hash64_str(const char *s);
int32_t	 jump_hash(uint64_t key, int32_t buckets);

#endif
