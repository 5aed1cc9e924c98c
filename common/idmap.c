/*
 * 64-bit id -> pointer map, open addressing with linear probing.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "idmap.h"
#include "util.h"

#define IDMAP_MIN_CAP	16

/* splitmix64 finaliser: ids are often sequential, spread them out. */
static size_t
idmap_hash(uint64_t key, size_t cap)
{
	key ^= key >> 30;
	key *= 0xbf58476d1ce4e5b9ULL;
	key ^= key >> 27;
	key *= 0x94d049bb133111ebULL;
	key ^= key >> 31;
	return (size_t)key & (cap - 1);
}

void
idmap_init(struct idmap *m)
{
	m->slots = NULL;
	m->cap = 0;
	m->count = 0;
}

void
idmap_free(struct idmap *m)
{
	free(m->slots);
	idmap_init(m);
}

static void
idmap_insert_slot(struct idmap_slot *slots, size_t cap, uint64_t key, void *val)
{
	size_t i = idmap_hash(key, cap);

	while (slots[i].val != NULL && slots[i].key != key)
		i = (i + 1) & (cap - 1);
	slots[i].key = key;
	slots[i].val = val;
}

static void
idmap_grow(struct idmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : IDMAP_MIN_CAP;
	struct idmap_slot *ns = xcalloc(ncap, sizeof(*ns));
	size_t i;

	for (i = 0; i < m->cap; i++)
		if (m->slots[i].val != NULL)
			idmap_insert_slot(ns, ncap, m->slots[i].key,
			    m->slots[i].val);
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
}

static struct idmap_slot *
idmap_find(const struct idmap *m, uint64_t key)
{
	size_t i;

	if (m->cap == 0)
		return NULL;
	i = idmap_hash(key, m->cap);
	while (m->slots[i].val != NULL) {
		if (m->slots[i].key == key)
			return &m->slots[i];
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

void
idmap_put(struct idmap *m, uint64_t key, void *val)
{
	struct idmap_slot *s = idmap_find(m, key);

	if (s != NULL) {
		s->val = val;
		return;
	}
	/* keep the load under 1/2 so probes stay short */
	if ((m->count + 1) * 2 > m->cap)
		idmap_grow(m);
	idmap_insert_slot(m->slots, m->cap, key, val);
	m->count++;
}

void *
idmap_get(const struct idmap *m, uint64_t key)
{
	struct idmap_slot *s = idmap_find(m, key);

	return s ? s->val : NULL;
}

void *
idmap_del(struct idmap *m, uint64_t key)
{
	struct idmap_slot *s = idmap_find(m, key);
	size_t i, j, home;
	void *val;

	if (s == NULL)
		return NULL;
	val = s->val;
	i = (size_t)(s - m->slots);
	s->val = NULL;
	m->count--;

	/* backward shift: pull later entries of the cluster into the hole */
	j = i;
	for (;;) {
		j = (j + 1) & (m->cap - 1);
		if (m->slots[j].val == NULL)
			break;
		home = idmap_hash(m->slots[j].key, m->cap);
		/* can slot j move to i?  only if home is not in (i, j] cyclically */
		if ((j > i && (home <= i || home > j)) ||
		    (j < i && (home <= i && home > j))) {
			m->slots[i] = m->slots[j];
			m->slots[j].val = NULL;
			i = j;
		}
	}
	return val;
}

void *
idmap_next(const struct idmap *m, size_t *cursor)
{
	while (*cursor < m->cap) {
		struct idmap_slot *s = &m->slots[(*cursor)++];
		if (s->val != NULL)
			return s->val;
	}
	return NULL;
}
