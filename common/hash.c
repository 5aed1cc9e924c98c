/*
 * Pool-key hashing (FNV-1a 64 + splitmix64 finaliser) and Lamping and
 * Veach's jump consistent hash.  See hash.h for why these two.
 */
#include "config.h"
#include "hash.h"

#include <string.h>

#define FNV64_OFFSET	0xcbf29ce484222325ULL
#define FNV64_PRIME	0x100000001b3ULL

/* FNV-1a alone mixes the last bytes weakly into the high bits, which
 * jump_hash reads first; the splitmix64 finaliser spreads every input
 * bit over the whole word. */
static uint64_t
mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

uint64_t
hash64(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = FNV64_OFFSET;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV64_PRIME;
	}
	return mix64(h);
}

uint64_t
hash64_str(const char *s)
{
	return hash64(s, s != NULL ? strlen(s) : 0);
}

/* "A Fast, Minimal Memory, Consistent Hash Algorithm", Lamping and
 * Veach, 2014: a linear congruential walk over the buckets a key would
 * jump to as the count grows; the last jump below 'buckets' wins. */
int32_t
jump_hash(uint64_t key, int32_t buckets)
{
	int64_t b = -1, j = 0;

	if (buckets <= 0)
		return 0;
	while (j < buckets) {
		b = j;
		key = key * 2862933555777941757ULL + 1;
		j = (int64_t)((double)(b + 1) *
		    ((double)(1LL << 31) / (double)((key >> 33) + 1)));
	}
	return (int32_t)b;
}
