/*
 * A map from 64-bit ids to pointers (open addressing, linear probing,
 * backward-shift deletion, so no tombstones pile up).  Connections,
 * requests and pool keys are found through it in the supervisor and the
 * workers; there can be thousands, so a list would not do.
 */
#ifndef CODEXPOOL_IDMAP_H
#define CODEXPOOL_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
	uint64_t	 key;
	void		*val;		/* NULL: empty slot */
};

struct idmap {
	struct idmap_slot *slots;
	size_t		 cap;		/* power of two, or 0 */
	size_t		 count;
};

void	 idmap_init(struct idmap *m);
void	 idmap_free(struct idmap *m);
/* Insert or replace; val must not be NULL. */
void	 idmap_put(struct idmap *m, uint64_t key, void *val);
void	*idmap_get(const struct idmap *m, uint64_t key);
/* Returns the removed value, or NULL. */
void	*idmap_del(struct idmap *m, uint64_t key);

/*
 * Iterate: for (i = 0; (v = idmap_next(m, &i)) != NULL; ) ...
 * Deleting while iterating may move a later entry before the cursor, so
 * callers that delete collect first, then act.
 */
void	*idmap_next(const struct idmap *m, size_t *cursor);

#endif
