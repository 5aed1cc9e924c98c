/*
 * A map from uint64_t keys to pointers: open addressing, linear probing,
 * tombstone-free deletion (backward shift).  Keys are already hashes
 * (request ids, pool-key hashes), so they are mixed once more and used
 * directly.  Key 0 is reserved as "empty".
 */
#ifndef CODEXPOOL_U64MAP_H
#define CODEXPOOL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

struct u64map {
	uint64_t	*keys;
	void		**vals;
	size_t		 cap;		/* power of two */
	size_t		 count;
};

void	u64map_init(struct u64map *m);
void	u64map_free(struct u64map *m);
void	*u64map_get(const struct u64map *m, uint64_t key);
/* Insert or replace; key must not be 0. */
void	u64map_put(struct u64map *m, uint64_t key, void *val);
/* Remove; returns the old value or NULL. */
void	*u64map_del(struct u64map *m, uint64_t key);

/* Iterate: for (size_t i = 0; u64map_next(m, &i, &k, &v); ) ... (no changes while iterating) */
int	u64map_next(const struct u64map *m, size_t *pos, uint64_t *key, void **val);

#endif
