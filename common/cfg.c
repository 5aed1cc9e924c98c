/*
 * The table-driven configuration engine (see cfg.h for the format).
 * Every error names what was wrong and, for files, where: the operator
 * should be able to fix the line without reading the source.
 */
#include "config.h"
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CFG_LINE_MAX	4096

#define FIELD(cs, k)	((void *)((char *)(cs)->base + (k)->offset))
#define CFIELD(cs, k)	((const void *)((const char *)(cs)->base + (k)->offset))

static void
errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

const char *
cfg_type_name(enum cfg_type t)
{
	switch (t) {
	case CFG_STRING:	return "string";
	case CFG_INT:		return "int";
	case CFG_BOOL:		return "bool";
	case CFG_DURATION:	return "duration";
	case CFG_SIZE:		return "size";
	case CFG_ADDRESS:	return "address";
	}
	return "unknown";
}

const struct cfg_key *
cfg_find(const struct cfg_key *keys, const char *name)
{
	const struct cfg_key *k;

	for (k = keys; k->name != NULL; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

static size_t
key_index(const struct cfgset *cs, const struct cfg_key *k)
{
	return (size_t)(k - cs->keys);
}

int
cfgset_init(struct cfgset *cs, const struct cfg_key *keys, void *base)
{
	const struct cfg_key *k;

	cs->keys = keys;
	cs->base = base;
	cs->nkeys = 0;
	for (k = keys; k->name != NULL; k++)
		cs->nkeys++;
	cs->origin = xcalloc(cs->nkeys ? cs->nkeys : 1, sizeof(*cs->origin));
	/* Start from a known state so cfgset_free is always safe. */
	for (k = keys; k->name != NULL; k++) {
		switch (k->type) {
		case CFG_STRING:
		case CFG_ADDRESS:
			*(char **)FIELD(cs, k) = NULL;
			break;
		case CFG_INT:
			*(int *)FIELD(cs, k) = 0;
			break;
		case CFG_BOOL:
			*(bool *)FIELD(cs, k) = false;
			break;
		case CFG_DURATION:
			*(int64_t *)FIELD(cs, k) = 0;
			break;
		case CFG_SIZE:
			*(uint64_t *)FIELD(cs, k) = 0;
			break;
		}
		strlcpy_safe(cs->origin[key_index(cs, k)].where, "unset",
		    sizeof(cs->origin[0].where));
	}
	return 0;
}

void
cfgset_free(struct cfgset *cs)
{
	const struct cfg_key *k;
	char **sp;

	if (cs->keys != NULL && cs->base != NULL) {
		for (k = cs->keys; k->name != NULL; k++) {
			if (k->type != CFG_STRING && k->type != CFG_ADDRESS)
				continue;
			sp = FIELD(cs, k);
			free(*sp);
			*sp = NULL;
		}
	}
	free(cs->origin);
	cs->origin = NULL;
}

/* ---- value parsers -------------------------------------------------- */

int
cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* A non-negative decimal number followed by a unit; *unit points at the
 * rest.  -1 on no digits or overflow. */
static int
parse_number(const char *s, uint64_t *v, const char **unit)
{
	uint64_t n = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (n > (UINT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	*v = n;
	*unit = p;
	return 0;
}

int
cfg_parse_duration(const char *s, int64_t *usec)
{
	static const struct {
		const char	*name;
		uint64_t	 mult;
	} units[] = {
		{ "", 1000000 }, { "us", 1 }, { "ms", 1000 }, { "s", 1000000 },
		{ "m", 60000000ULL }, { "h", 3600000000ULL },
	};
	const char *unit;
	uint64_t n;
	size_t i;

	if (parse_number(s, &n, &unit) == -1)
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(unit, units[i].name) != 0)
			continue;
		if (n > (uint64_t)INT64_MAX / units[i].mult)
			return -1;
		*usec = (int64_t)(n * units[i].mult);
		return 0;
	}
	return -1;
}

int
cfg_parse_size(const char *s, uint64_t *bytes)
{
	const char *unit;
	uint64_t n, mult;

	if (parse_number(s, &n, &unit) == -1)
		return -1;
	if (unit[0] == '\0')
		mult = 1;
	else if (unit[1] != '\0')
		return -1;
	else if (unit[0] == 'k' || unit[0] == 'K')
		mult = 1024;
	else if (unit[0] == 'M' || unit[0] == 'm')
		mult = 1024 * 1024;
	else if (unit[0] == 'G' || unit[0] == 'g')
		mult = 1024 * 1024 * 1024;
	else
		return -1;
	if (n > UINT64_MAX / mult)
		return -1;
	*bytes = n * mult;
	return 0;
}

static int
parse_int(const char *s, int *out)
{
	char *end;
	long v;

	errno = 0;
	if (*s == '\0' || isspace((unsigned char)*s))
		return -1;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
		return -1;
	*out = (int)v;
	return 0;
}

/* host:port, [v6]:port, or an absolute path to a unix socket. */
static int
parse_address(const char *s)
{
	char host[256];
	int port;

	if (s[0] == '/')
		return strlen(s) < 108 ? 0 : -1;	/* sun_path */
	return parse_hostport(s, host, sizeof(host), &port);
}

/* ---- formatting ----------------------------------------------------- */

static void
format_duration(int64_t us, char *buf, size_t len)
{
	static const struct {
		const char	*name;
		int64_t		 mult;
	} units[] = {
		{ "h", 3600000000LL }, { "m", 60000000LL }, { "s", 1000000LL },
		{ "ms", 1000LL }, { "us", 1 },
	};
	size_t i;

	if (us == 0) {
		snprintf(buf, len, "0s");
		return;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (us % units[i].mult == 0)
			break;
	snprintf(buf, len, "%" PRId64 "%s", us / units[i].mult, units[i].name);
}

static void
format_size(uint64_t b, char *buf, size_t len)
{
	if (b != 0 && b % (uint64_t)(1024 * 1024 * 1024) == 0)
		snprintf(buf, len, "%" PRIu64 "G", b / (uint64_t)(1024 * 1024 * 1024));
	else if (b != 0 && b % (uint64_t)(1024 * 1024) == 0)
		snprintf(buf, len, "%" PRIu64 "M", b / (uint64_t)(1024 * 1024));
	else if (b != 0 && b % 1024 == 0)
		snprintf(buf, len, "%" PRIu64 "k", b / 1024);
	else
		snprintf(buf, len, "%" PRIu64, b);
}

static bool
needs_quotes(const char *s)
{
	size_t n = strlen(s);
	const char *p;

	if (n == 0 || isspace((unsigned char)s[0]) ||
	    isspace((unsigned char)s[n - 1]))
		return true;
	for (p = s; *p != '\0'; p++)
		if (*p == '#' || *p == '"' || *p == '\\')
			return true;
	return false;
}

static int
format_string(const char *s, char *buf, size_t len)
{
	size_t o = 0;
	const char *p;

	if (s == NULL)
		s = "";
	if (!needs_quotes(s))
		return snprintf(buf, len, "%s", s);
	/* Quoted: count first so truncation is reported like snprintf. */
	for (p = s; *p != '\0'; p++)
		o += (*p == '"' || *p == '\\') ? 2 : 1;
	o += 2;
	if (o < len) {
		char *q = buf;

		*q++ = '"';
		for (p = s; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				*q++ = '\\';
			*q++ = *p;
		}
		*q++ = '"';
		*q = '\0';
	} else if (len > 0) {
		buf[0] = '\0';
	}
	return (int)o;
}

int
cfg_format(const struct cfgset *cs, const struct cfg_key *k, char *buf, size_t len)
{
	char tmp[64];
	int n;

	switch (k->type) {
	case CFG_STRING:
	case CFG_ADDRESS:
		n = format_string(*(char *const *)CFIELD(cs, k), buf, len);
		break;
	case CFG_INT:
		n = snprintf(buf, len, "%d", *(const int *)CFIELD(cs, k));
		break;
	case CFG_BOOL:
		n = snprintf(buf, len, "%s",
		    *(const bool *)CFIELD(cs, k) ? "yes" : "no");
		break;
	case CFG_DURATION:
		format_duration(*(const int64_t *)CFIELD(cs, k), tmp, sizeof(tmp));
		n = snprintf(buf, len, "%s", tmp);
		break;
	case CFG_SIZE:
		format_size(*(const uint64_t *)CFIELD(cs, k), tmp, sizeof(tmp));
		n = snprintf(buf, len, "%s", tmp);
		break;
	default:
		return -1;
	}
	if (n < 0 || (size_t)n >= len)
		return -1;
	return n;
}

/* ---- setting -------------------------------------------------------- */

/* Edit distance, for "did you mean": only short names, so O(n*m) is fine. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j, prev, cur, tmp;
	size_t row[64];

	if (la >= 64 || lb >= 64)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			tmp = row[j];
			cur = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < cur)
				cur = row[j] + 1;
			if (row[j - 1] + 1 < cur)
				cur = row[j - 1] + 1;
			row[j] = cur;
			prev = tmp;
		}
	}
	return row[lb];
}

static void
unknown_key(const struct cfg_key *keys, const char *name, char *err, size_t errlen)
{
	const struct cfg_key *k, *best = NULL;
	size_t d, bestd = 3;

	for (k = keys; k->name != NULL; k++) {
		if ((d = edit_distance(name, k->name)) < bestd) {
			bestd = d;
			best = k;
		}
	}
	if (best != NULL)
		errf(err, errlen, "unknown key '%s' (did you mean '%s'?)",
		    name, best->name);
	else
		errf(err, errlen, "unknown key '%s'", name);
}

static bool
bounded(const struct cfg_key *k)
{
	return k->min != 0 || k->max != 0;
}

static void
range_error(const struct cfg_key *k, const char *value, char *err, size_t errlen)
{
	char lo[64], hi[64];

	if (k->type == CFG_DURATION) {
		format_duration(k->min, lo, sizeof(lo));
		format_duration(k->max, hi, sizeof(hi));
	} else if (k->type == CFG_SIZE) {
		format_size((uint64_t)k->min, lo, sizeof(lo));
		format_size((uint64_t)k->max, hi, sizeof(hi));
	} else {
		snprintf(lo, sizeof(lo), "%" PRId64, k->min);
		snprintf(hi, sizeof(hi), "%" PRId64, k->max);
	}
	errf(err, errlen, "value %s out of range for %s (%s..%s)", value,
	    k->name, lo, hi);
}

static int
set_key(struct cfgset *cs, const struct cfg_key *k, const char *value,
    const char *origin, char *err, size_t errlen)
{
	const char *const *c;
	char **sp;
	int64_t d;
	uint64_t sz;
	int iv;
	bool b;

	switch (k->type) {
	case CFG_STRING:
	case CFG_ADDRESS:
		if (k->type == CFG_ADDRESS && *value != '\0' &&
		    parse_address(value) == -1) {
			errf(err, errlen, "bad address '%s' for %s (use host:port,"
			    " [v6]:port or an absolute path)", value, k->name);
			return -1;
		}
		if (k->choices != NULL && *value != '\0') {
			for (c = k->choices; *c != NULL; c++)
				if (strcmp(*c, value) == 0)
					break;
			if (*c == NULL) {
				char list[256] = "";
				size_t o = 0;

				for (c = k->choices; *c != NULL; c++)
					o += (size_t)snprintf(list + o,
					    o < sizeof(list) ? sizeof(list) - o : 0,
					    "%s%s", c == k->choices ? "" :
					    c[1] == NULL ? " or " : ", ", *c);
				errf(err, errlen, "bad value '%s' for %s (use %s)",
				    value, k->name, list);
				return -1;
			}
		}
		sp = FIELD(cs, k);
		free(*sp);
		*sp = *value != '\0' ? xstrdup(value) : NULL;
		break;
	case CFG_INT:
		if (parse_int(value, &iv) == -1) {
			errf(err, errlen, "bad integer '%s' for %s", value, k->name);
			return -1;
		}
		if (bounded(k) && (iv < k->min || iv > k->max)) {
			range_error(k, value, err, errlen);
			return -1;
		}
		*(int *)FIELD(cs, k) = iv;
		break;
	case CFG_BOOL:
		if (cfg_parse_bool(value, &b) == -1) {
			errf(err, errlen, "bad boolean '%s' for %s (use yes or no)",
			    value, k->name);
			return -1;
		}
		*(bool *)FIELD(cs, k) = b;
		break;
	case CFG_DURATION:
		if (cfg_parse_duration(value, &d) == -1) {
			errf(err, errlen, "bad duration '%s' for %s (use a number"
			    " with us, ms, s, m or h)", value, k->name);
			return -1;
		}
		if (bounded(k) && (d < k->min || d > k->max)) {
			range_error(k, value, err, errlen);
			return -1;
		}
		*(int64_t *)FIELD(cs, k) = d;
		break;
	case CFG_SIZE:
		if (cfg_parse_size(value, &sz) == -1) {
			errf(err, errlen, "bad size '%s' for %s (use a number"
			    " with k, M or G)", value, k->name);
			return -1;
		}
		if (bounded(k) && (sz < (uint64_t)k->min || sz > (uint64_t)k->max)) {
			range_error(k, value, err, errlen);
			return -1;
		}
		*(uint64_t *)FIELD(cs, k) = sz;
		break;
	default:
		errf(err, errlen, "key %s has an unknown type", k->name);
		return -1;
	}
	strlcpy_safe(cs->origin[key_index(cs, k)].where,
	    origin != NULL ? origin : "", sizeof(cs->origin[0].where));
	return 0;
}

int
cfg_set(struct cfgset *cs, const char *name, const char *value,
    const char *origin, char *err, size_t errlen)
{
	const struct cfg_key *k;

	if ((k = cfg_find(cs->keys, name)) == NULL) {
		unknown_key(cs->keys, name, err, errlen);
		return -1;
	}
	return set_key(cs, k, value != NULL ? value : "", origin, err, errlen);
}

int
cfg_load_defaults(struct cfgset *cs, char *err, size_t errlen)
{
	const struct cfg_key *k;
	char why[256];

	for (k = cs->keys; k->name != NULL; k++) {
		if (set_key(cs, k, k->def != NULL ? k->def : "", "default",
		    why, sizeof(why)) == -1) {
			errf(err, errlen, "default of %s: %s", k->name, why);
			return -1;
		}
	}
	return 0;
}

/* ---- files ---------------------------------------------------------- */

/*
 * Split one line into key and value, in place.  Returns 1 with *key and
 * *value set, 0 for a blank or comment line, -1 with err set.
 */
static int
split_line(char *line, char **key, char **value, char *err, size_t errlen)
{
	char *p = line, *q, *end;

	while (isspace((unsigned char)*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	*key = p;
	while (isalnum((unsigned char)*p) || *p == '_' || *p == '-')
		p++;
	end = p;
	if (end == *key) {
		errf(err, errlen, "expected 'key = value'");
		return -1;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '=') {
		bool eol = *p == '\0' || *p == '#';

		*end = '\0';
		if (eol)
			errf(err, errlen, "missing '= value' after '%s'", *key);
		else
			errf(err, errlen, "expected '=' after '%s'", *key);
		return -1;
	}
	*end = '\0';
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '"') {
		/* Quoted: \" and \\ are the only escapes; unquote in place. */
		*value = q = ++p;
		for (;;) {
			if (*p == '\0') {
				errf(err, errlen, "unterminated quoted value for %s",
				    *key);
				return -1;
			}
			if (*p == '"')
				break;
			if (*p == '\\' && p[1] != '\0') {
				if (p[1] != '"' && p[1] != '\\') {
					errf(err, errlen, "bad escape '\\%c' in"
					    " value for %s (only \\\" and \\\\)",
					    p[1], *key);
					return -1;
				}
				p++;
			}
			*q++ = *p++;
		}
		*q = '\0';
		p++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '\0' && *p != '#') {
			errf(err, errlen, "unexpected text after the quoted"
			    " value for %s", *key);
			return -1;
		}
		return 1;
	}
	*value = p;
	if ((q = strchr(p, '#')) != NULL)
		*q = '\0';
	q = p + strlen(p);
	while (q > p && isspace((unsigned char)q[-1]))
		*--q = '\0';
	if (strchr(p, '"') != NULL) {
		errf(err, errlen, "stray '\"' in value for %s (quote the whole"
		    " value)", *key);
		return -1;
	}
	return 1;
}

int
cfg_load_file(struct cfgset *cs, const char *path, char *err, size_t errlen)
{
	char line[CFG_LINE_MAX + 2], why[512], where[128];
	char *key, *value;
	unsigned lineno = 0;
	size_t n;
	FILE *f;
	int c, rc = 0;
	bool eof = false;

	if ((f = fopen(path, "r")) == NULL) {
		errf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (!eof && rc == 0) {
		lineno++;
		n = 0;
		for (;;) {
			c = getc(f);
			if (c == EOF) {
				eof = true;
				break;
			}
			if (c == '\n')
				break;
			if (c == '\0') {
				errf(err, errlen, "%s:%u: NUL byte in line",
				    path, lineno);
				rc = -1;
				break;
			}
			if (n == CFG_LINE_MAX) {
				errf(err, errlen, "%s:%u: line too long (more"
				    " than %d bytes)", path, lineno, CFG_LINE_MAX);
				rc = -1;
				break;
			}
			line[n++] = (char)c;
		}
		if (rc != 0)
			break;
		if (eof && ferror(f)) {
			errf(err, errlen, "%s:%u: %s", path, lineno,
			    strerror(errno));
			rc = -1;
			break;
		}
		if (n > 0 && line[n - 1] == '\r')
			n--;
		line[n] = '\0';
		switch (split_line(line, &key, &value, why, sizeof(why))) {
		case 0:
			continue;
		case -1:
			errf(err, errlen, "%s:%u: %s", path, lineno, why);
			rc = -1;
			continue;
		}
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		if (cfg_set(cs, key, value, where, why, sizeof(why)) == -1) {
			errf(err, errlen, "%s:%u: %s", path, lineno, why);
			rc = -1;
		}
	}
	fclose(f);
	return rc;
}

/* ---- comparing and copying ------------------------------------------ */

int
cfg_differs(const struct cfgset *a, const struct cfgset *b, const struct cfg_key *k)
{
	const char *sa, *sb;

	switch (k->type) {
	case CFG_STRING:
	case CFG_ADDRESS:
		sa = *(char *const *)CFIELD(a, k);
		sb = *(char *const *)CFIELD(b, k);
		if (sa == NULL || sb == NULL)
			return sa != sb;
		return strcmp(sa, sb) != 0;
	case CFG_INT:
		return *(const int *)CFIELD(a, k) != *(const int *)CFIELD(b, k);
	case CFG_BOOL:
		return *(const bool *)CFIELD(a, k) != *(const bool *)CFIELD(b, k);
	case CFG_DURATION:
		return *(const int64_t *)CFIELD(a, k) !=
		    *(const int64_t *)CFIELD(b, k);
	case CFG_SIZE:
		return *(const uint64_t *)CFIELD(a, k) !=
		    *(const uint64_t *)CFIELD(b, k);
	}
	return 0;
}

void
cfg_copy_value(struct cfgset *dst, const struct cfgset *src, const struct cfg_key *k)
{
	char **sp;

	switch (k->type) {
	case CFG_STRING:
	case CFG_ADDRESS:
		sp = FIELD(dst, k);
		free(*sp);
		*sp = xstrdup(*(char *const *)CFIELD(src, k));
		break;
	case CFG_INT:
		*(int *)FIELD(dst, k) = *(const int *)CFIELD(src, k);
		break;
	case CFG_BOOL:
		*(bool *)FIELD(dst, k) = *(const bool *)CFIELD(src, k);
		break;
	case CFG_DURATION:
		*(int64_t *)FIELD(dst, k) = *(const int64_t *)CFIELD(src, k);
		break;
	case CFG_SIZE:
		*(uint64_t *)FIELD(dst, k) = *(const uint64_t *)CFIELD(src, k);
		break;
	}
	memcpy(dst->origin[key_index(dst, k)].where,
	    src->origin[key_index(src, k)].where, sizeof(dst->origin[0].where));
}
