/*
 * The simulated prompt cache of one upstream backend.
 *
 * A prompt is a byte string; it counts ceil(bytes / 4) tokens.  The
 * cache works on prefixes that end on a boundary: 1024 tokens, then every
 * 128 tokens (1024, 1152, 1280, ...), like the real service that reports
 * cached_tokens in 128-token steps from 1024 on.  Each boundary prefix is
 * hashed together with its scope (account, prompt_cache_key), so two
 * accounts or two keys never share entries.  A request is served from the
 * longest boundary prefix the backend already holds; afterwards all of its
 * boundary prefixes are stored.  Memory is bounded: when a backend holds
 * max_entries hashes, the least recently used one is evicted.
 */
#ifndef SIM_CACHE_H
#define SIM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_BYTES_PER_TOKEN	4
#define CACHE_MIN_TOKENS	1024
#define CACHE_STEP_TOKENS	128
#define CACHE_DEFAULT_ENTRIES	65536

/* The boundary hashes of one prompt in one scope, shortest first. */
struct cache_probe {
	int64_t		 tokens;	/* ceil(bytes / 4) */
	uint64_t	*hashes;	/* hashes[k]: prefix of 1024 + 128k tokens */
	size_t		 n;
};

struct prompt_cache;

int64_t	prompt_tokens(size_t bytes);
/* Tokens of boundary k (0-based). */
int64_t	cache_boundary_tokens(size_t k);

/* Fills probe; 0 on success, -1 on allocation failure. */
int	cache_probe_init(struct cache_probe *probe, const char *account,
	    const char *prompt_cache_key, const void *prompt, size_t len);
void	cache_probe_free(struct cache_probe *probe);

/* max_entries 0 means CACHE_DEFAULT_ENTRIES.  NULL on allocation failure. */
struct prompt_cache *prompt_cache_new(size_t max_entries);
void	prompt_cache_free(struct prompt_cache *cache);

/* Cached tokens for probe: the longest boundary prefix held, else 0.
 * A hit refreshes the entry's age. */
int64_t	prompt_cache_lookup(struct prompt_cache *cache, const struct cache_probe *probe);
/* Store every boundary prefix of probe. */
void	prompt_cache_store(struct prompt_cache *cache, const struct cache_probe *probe);

size_t	prompt_cache_entries(const struct prompt_cache *cache);
size_t	prompt_cache_capacity(const struct prompt_cache *cache);
uint64_t prompt_cache_evictions(const struct prompt_cache *cache);
void	prompt_cache_clear(struct prompt_cache *cache);

#endif
