#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "u64map.h"
#include "util.h"

static size_t
slot_of(const struct u64map *m, uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return (size_t)key & (m->cap - 1);
}

void
u64map_init(struct u64map *m)
{
	memset(m, 0, sizeof(*m));
}

void
u64map_free(struct u64map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

void *
u64map_get(const struct u64map *m, uint64_t key)
{
	size_t i;

	if (m->cap == 0 || key == 0)
		return NULL;
	for (i = slot_of(m, key); m->keys[i] != 0; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] == key)
			return m->vals[i];
	return NULL;
}

static void
grow(struct u64map *m)
{
	struct u64map bigger;
	size_t i;

	bigger.cap = m->cap ? m->cap * 2 : 16;
	bigger.count = 0;
	bigger.keys = xcalloc(bigger.cap, sizeof(uint64_t));
	bigger.vals = xcalloc(bigger.cap, sizeof(void *));
	for (i = 0; i < m->cap; i++)
		if (m->keys[i] != 0)
			u64map_put(&bigger, m->keys[i], m->vals[i]);
	free(m->keys);
	free(m->vals);
	*m = bigger;
}

void
u64map_put(struct u64map *m, uint64_t key, void *val)
{
	size_t i;

	if ((m->count + 1) * 4 > m->cap * 3)	/* keep the load under 3/4 */
		grow(m);
	for (i = slot_of(m, key); m->keys[i] != 0; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == key) {
			m->vals[i] = val;
			return;
		}
	}
	m->keys[i] = key;
	m->vals[i] = val;
	m->count++;
}

void *
u64map_del(struct u64map *m, uint64_t key)
{
	size_t i, j, home;
	void *old;

	if (m->cap == 0 || key == 0)
		return NULL;
	for (i = slot_of(m, key); m->keys[i] != key; i = (i + 1) & (m->cap - 1))
		if (m->keys[i] == 0)
			return NULL;
	old = m->vals[i];
	/* Backward-shift the rest of the probe run so lookups never need tombstones. */
	j = i;
	for (;;) {
		j = (j + 1) & (m->cap - 1);
		if (m->keys[j] == 0)
			break;
		home = slot_of(m, m->keys[j]);
		/* Move j into the hole at i unless its home lies cyclically in (i, j]. */
		if ((j > i && (home <= i || home > j)) ||
		    (j < i && (home <= i && home > j))) {
			m->keys[i] = m->keys[j];
			m->vals[i] = m->vals[j];
			i = j;
		}
	}
	m->keys[i] = 0;
	m->vals[i] = NULL;
	m->count--;
	return old;
}

int
u64map_next(const struct u64map *m, size_t *pos, uint64_t *key, void **val)
{
	while (*pos < m->cap) {
		size_t i = (*pos)++;
		if (m->keys[i] != 0) {
			if (key)
				*key = m->keys[i];
			if (val)
				*val = m->vals[i];
			return 1;
		}
	}
	return 0;
}
