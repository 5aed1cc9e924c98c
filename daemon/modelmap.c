/*
 * model_map: client model name -> Codex model (see modelmap.h).
 */
#include "config.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelmap.h"
#include "util.h"

#ifndef FNM_CASEFOLD
#define FNM_CASEFOLD	0
#endif

struct modelmap_rule {
	char	glob[MODELMAP_MAX_NAME + 1];
	char	model[MODELMAP_MAX_NAME + 1];
};

struct modelmap {
	struct modelmap_rule	rules[MODELMAP_MAX_RULES];
	size_t			nrules;
};

/* Skip spaces; return the new position. */
static size_t
skip_space(const char *s, size_t i)
{
	while (s[i] != '\0' && isspace((unsigned char)s[i]))
		i++;
	return i;
}

/*
 * One word of a pair: from i up to (not including) one of the stop
 * characters or the end, with spaces trimmed.  Returns its length; *end
 * is where the scan stopped.
 */
static size_t
word(const char *s, size_t i, const char *stops, size_t *start, size_t *end)
{
	size_t j, last;

	i = skip_space(s, i);
	*start = i;
	for (j = i, last = i; s[j] != '\0' && strchr(stops, s[j]) == NULL; j++)
		if (!isspace((unsigned char)s[j]))
			last = j + 1;
	*end = j;
	return last - i;
}

static int fail(char *, size_t, size_t, const char *, ...)
	    __attribute__((format(printf, 4, 5)));

static int
fail(char *err, size_t errlen, size_t pos, const char *fmt, ...)
{
	char why[192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "position %zu: %s", pos + 1, why);
	return -1;
}

/* A glob: no inner spaces, brackets closed. */
static int
check_glob(const char *g, size_t len, size_t pos, char *err, size_t errlen)
{
	size_t i, j;

	for (i = 0; i < len; i++) {
		if (isspace((unsigned char)g[i]))
			return fail(err, errlen, pos + i, "space inside the pattern");
		if (g[i] == '\\' && i + 1 < len) {
			i++;
			continue;
		}
		if (g[i] == '[') {
			j = i + 1;
			if (j < len && (g[j] == '!' || g[j] == '^'))
				j++;
			if (j < len && g[j] == ']')
				j++;
			while (j < len && g[j] != ']')
				j++;
			if (j >= len)
				return fail(err, errlen, pos + i, "unclosed '[' in the pattern");
			i = j;
		}
	}
	return 0;
}

struct modelmap *
modelmap_parse(const char *spec, char *err, size_t errlen)
{
	struct modelmap *mm = xcalloc(1, sizeof(*mm));
	struct modelmap_rule *r;
	size_t i = 0, gs, ge, gl, ms, me, ml, k;

	if (spec == NULL || spec[skip_space(spec, 0)] == '\0')
		return mm;
	for (;;) {
		gl = word(spec, i, ",=", &gs, &ge);
		if (spec[ge] != '=') {
			if (gl == 0)
				fail(err, errlen, gs, "empty rule");
			else
				fail(err, errlen, gs, "'%.*s' has no '=MODEL'",
				    (int)(gl > 64 ? 64 : gl), spec + gs);
			goto bad;
		}
		if (gl == 0) {
			fail(err, errlen, gs, "empty pattern before '='");
			goto bad;
		}
		if (gl > MODELMAP_MAX_NAME) {
			fail(err, errlen, gs, "pattern longer than %d bytes", MODELMAP_MAX_NAME);
			goto bad;
		}
		if (check_glob(spec + gs, gl, gs, err, errlen) != 0)
			goto bad;
		ml = word(spec, ge + 1, ",", &ms, &me);
		if (ml == 0) {
			fail(err, errlen, ms, "empty model after '='");
			goto bad;
		}
		if (ml > MODELMAP_MAX_NAME) {
			fail(err, errlen, ms, "model longer than %d bytes", MODELMAP_MAX_NAME);
			goto bad;
		}
		for (k = ms; k < ms + ml; k++)
			if (isspace((unsigned char)spec[k]) || strchr("=*?[]\\", spec[k]) != NULL) {
				fail(err, errlen, k, "'%c' is not allowed in a model name", spec[k]);
				goto bad;
			}
		if (mm->nrules >= MODELMAP_MAX_RULES) {
			fail(err, errlen, gs, "more than %d rules", MODELMAP_MAX_RULES);
			goto bad;
		}
		r = &mm->rules[mm->nrules++];
		memcpy(r->glob, spec + gs, gl);
		r->glob[gl] = '\0';
		memcpy(r->model, spec + ms, ml);
		r->model[ml] = '\0';
		if (spec[me] == '\0')
			break;
		i = me + 1;	/* past the comma */
	}
	return mm;
 bad:
	free(mm);
	return NULL;
}

void
modelmap_free(struct modelmap *mm)
{
	free(mm);
}

size_t
modelmap_count(const struct modelmap *mm)
{
	return mm != NULL ? mm->nrules : 0;
}

const char *
modelmap_lookup(const struct modelmap *mm, const char *client_model)
{
	size_t i;

	if (mm == NULL || client_model == NULL)
		return NULL;
	for (i = 0; i < mm->nrules; i++)
		if (fnmatch(mm->rules[i].glob, client_model, FNM_CASEFOLD) == 0)
			return mm->rules[i].model;
	return NULL;
}

/* Is name one of the comma-separated list's entries (spaces trimmed)? */
static int
listed(const char *list, const char *name)
{
	size_t n = strlen(name), s, e, len, i = 0;

	if (list == NULL || n == 0)
		return 0;
	for (;;) {
		len = word(list, i, ",", &s, &e);
		if (len == n && strncmp(list + s, name, n) == 0)
			return 1;
		if (list[e] == '\0')
			return 0;
		i = e + 1;
	}
}

const char *
modelmap_resolve(const struct modelmap *mm, const char *known_models,
    const char *client_model)
{
	const char *m;

	if (client_model == NULL)
		return NULL;
	if (listed(known_models, client_model))
		return client_model;
	m = modelmap_lookup(mm, client_model);
	return m != NULL ? m : client_model;
}
