/*
 * The model_map key: which Codex model serves a client's model name.
 *
 *	model_map = claude-*opus*=gpt-5.4, *sonnet*=gpt-5.4, *haiku*=gpt-5.4-mini, *=gpt-5.4
 *
 * Comma-separated GLOB=MODEL pairs; spaces around either side are
 * ignored.  The first GLOB that matches the client's model wins; globs
 * have fnmatch(3) syntax (*, ?, [...]) and ignore case.  MODEL is a
 * plain name (no spaces, commas, '=' or glob characters).  An empty value
 * is an empty map.  Pure: parsing and lookup do no I/O.
 */
#ifndef CODEXPOOL_MODELMAP_H
#define CODEXPOOL_MODELMAP_H

#include <stddef.h>

#define MODELMAP_MAX_RULES	64
#define MODELMAP_MAX_NAME	128	/* bytes of a glob or a model */

struct modelmap;

/* Parse spec.  NULL on error with err = "position N: why" (N counts
 * bytes of spec from 1). */
struct modelmap *modelmap_parse(const char *spec, char *err, size_t errlen);
void	modelmap_free(struct modelmap *mm);
size_t	modelmap_count(const struct modelmap *mm);

/* The model of the first rule whose glob matches client_model, or NULL. */
const char *modelmap_lookup(const struct modelmap *mm, const char *client_model);

/*
 * What the upstream gets: client_model itself when it is one of the
 * comma-separated known models (the `models` key, so "gpt-5.4-mini" is
 * not caught by a "*" rule), else the map's answer, else client_model.
 */
const char *modelmap_resolve(const struct modelmap *mm, const char *known_models,
	    const char *client_model);

#endif
