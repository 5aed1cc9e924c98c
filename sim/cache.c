/*
 * Prompt-cache model: boundary hashing and a bounded LRU set of hashes
 * per backend.  Pure logic, no I/O, so the unit tests drive it directly.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define FNV_OFFSET	0xcbf29ce484222325ULL
#define FNV_PRIME	0x100000001b3ULL
#define NIL		UINT32_MAX

struct cache_node {
	uint64_t	key;
	uint32_t	hnext;		/* next node in the same bucket */
	uint32_t	older;		/* LRU list towards the oldest */
	uint32_t	newer;		/* LRU list towards the newest */
};

struct prompt_cache {
	struct cache_node *nodes;	/* max_entries slots */
	uint32_t	*buckets;	/* nbuckets heads */
	uint32_t	 nbuckets;	/* power of two */
	uint32_t	 max_entries;
	uint32_t	 used;		/* nodes handed out so far */
	uint32_t	 count;		/* live entries */
	uint32_t	 newest;
	uint32_t	 oldest;
	uint64_t	 evictions;
};

static uint64_t
mix64(uint64_t x)
{
	/* splitmix64 finaliser: FNV alone is weak in the high bits. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t
fnv_add(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

int64_t
prompt_tokens(size_t bytes)
{
	return (int64_t)((bytes + CACHE_BYTES_PER_TOKEN - 1) / CACHE_BYTES_PER_TOKEN);
}

int64_t
cache_boundary_tokens(size_t k)
{
	return CACHE_MIN_TOKENS + (int64_t)k * CACHE_STEP_TOKENS;
}

int
cache_probe_init(struct cache_probe *probe, const char *account,
    const char *prompt_cache_key, const void *prompt, size_t len)
{
	const unsigned char *p = prompt;
	uint64_t h = FNV_OFFSET;
	size_t n = 0, k, off = 0, end;
	int64_t tokens = prompt_tokens(len);

	memset(probe, 0, sizeof(*probe));
	probe->tokens = tokens;
	/* A boundary counts only when all of its bytes are present. */
	if ((int64_t)(len / CACHE_BYTES_PER_TOKEN) >= CACHE_MIN_TOKENS)
		n = (size_t)((len / CACHE_BYTES_PER_TOKEN - CACHE_MIN_TOKENS) /
		    CACHE_STEP_TOKENS) + 1;
	if (n == 0)
		return 0;
	probe->hashes = calloc(n, sizeof(*probe->hashes));
	if (probe->hashes == NULL)
		return -1;
	/* The scope goes first; the NUL separators keep ("a","bc") apart
	 * from ("ab","c"). */
	h = fnv_add(h, account ? account : "", strlen(account ? account : "") + 1);
	h = fnv_add(h, prompt_cache_key ? prompt_cache_key : "",
	    strlen(prompt_cache_key ? prompt_cache_key : "") + 1);
	for (k = 0; k < n; k++) {
		end = (size_t)cache_boundary_tokens(k) * CACHE_BYTES_PER_TOKEN;
		h = fnv_add(h, p + off, end - off);
		off = end;
		probe->hashes[k] = mix64(h ^ (uint64_t)end);
	}
	probe->n = n;
	return 0;
}

void
cache_probe_free(struct cache_probe *probe)
{
	free(probe->hashes);
	memset(probe, 0, sizeof(*probe));
}

struct prompt_cache *
prompt_cache_new(size_t max_entries)
{
	struct prompt_cache *c;
	uint32_t nb = 16, i;

	if (max_entries == 0)
		max_entries = CACHE_DEFAULT_ENTRIES;
	if (max_entries > (1u << 28))
		max_entries = 1u << 28;
	while (nb < max_entries * 2)
		nb <<= 1;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->nodes = calloc(max_entries, sizeof(*c->nodes));
	c->buckets = malloc(nb * sizeof(*c->buckets));
	if (c->nodes == NULL || c->buckets == NULL) {
		prompt_cache_free(c);
		return NULL;
	}
	for (i = 0; i < nb; i++)
		c->buckets[i] = NIL;
	c->nbuckets = nb;
	c->max_entries = (uint32_t)max_entries;
	c->newest = c->oldest = NIL;
	return c;
}

void
prompt_cache_free(struct prompt_cache *c)
{
	if (c == NULL)
		return;
	free(c->nodes);
	free(c->buckets);
	free(c);
}

void
prompt_cache_clear(struct prompt_cache *c)
{
	uint32_t i;

	for (i = 0; i < c->nbuckets; i++)
		c->buckets[i] = NIL;
	c->used = c->count = 0;
	c->newest = c->oldest = NIL;
}

static uint32_t
bucket_of(const struct prompt_cache *c, uint64_t key)
{
	return (uint32_t)(key & (c->nbuckets - 1));
}

static uint32_t
find(const struct prompt_cache *c, uint64_t key)
{
	uint32_t i;

	for (i = c->buckets[bucket_of(c, key)]; i != NIL; i = c->nodes[i].hnext)
		if (c->nodes[i].key == key)
			return i;
	return NIL;
}

static void
lru_unlink(struct prompt_cache *c, uint32_t i)
{
	struct cache_node *n = &c->nodes[i];

	if (n->older != NIL)
		c->nodes[n->older].newer = n->newer;
	else
		c->oldest = n->newer;
	if (n->newer != NIL)
		c->nodes[n->newer].older = n->older;
	else
		c->newest = n->older;
	n->older = n->newer = NIL;
}

static void
lru_push_newest(struct prompt_cache *c, uint32_t i)
{
	struct cache_node *n = &c->nodes[i];

	n->newer = NIL;
	n->older = c->newest;
	if (c->newest != NIL)
		c->nodes[c->newest].newer = i;
	c->newest = i;
	if (c->oldest == NIL)
		c->oldest = i;
}

static void
bucket_unlink(struct prompt_cache *c, uint32_t i)
{
	uint32_t *pp = &c->buckets[bucket_of(c, c->nodes[i].key)];

	while (*pp != NIL) {
		if (*pp == i) {
			*pp = c->nodes[i].hnext;
			return;
		}
		pp = &c->nodes[*pp].hnext;
	}
}

static void
touch_or_insert(struct prompt_cache *c, uint64_t key)
{
	uint32_t i = find(c, key), b;

	if (i != NIL) {
		lru_unlink(c, i);
		lru_push_newest(c, i);
		return;
	}
	if (c->used < c->max_entries) {
		i = c->used++;
	} else {
		/* Full: reuse the least recently used slot. */
		i = c->oldest;
		lru_unlink(c, i);
		bucket_unlink(c, i);
		c->count--;
		c->evictions++;
	}
	b = bucket_of(c, key);
	c->nodes[i].key = key;
	c->nodes[i].hnext = c->buckets[b];
	c->buckets[b] = i;
	lru_push_newest(c, i);
	c->count++;
}

int64_t
prompt_cache_lookup(struct prompt_cache *c, const struct cache_probe *probe)
{
	size_t k;
	uint32_t i;

	for (k = probe->n; k > 0; k--) {
		i = find(c, probe->hashes[k - 1]);
		if (i != NIL) {
			lru_unlink(c, i);
			lru_push_newest(c, i);
			return cache_boundary_tokens(k - 1);
		}
	}
	return 0;
}

void
prompt_cache_store(struct prompt_cache *c, const struct cache_probe *probe)
{
	size_t k;

	/* Longest first: the short prefixes, which many prompts share, end
	 * up the newest and are evicted last. */
	for (k = probe->n; k > 0; k--)
		touch_or_insert(c, probe->hashes[k - 1]);
}

size_t
prompt_cache_entries(const struct prompt_cache *c)
{
	return c->count;
}

size_t
prompt_cache_capacity(const struct prompt_cache *c)
{
	return c->max_entries;
}

uint64_t
prompt_cache_evictions(const struct prompt_cache *c)
{
	return c->evictions;
}
