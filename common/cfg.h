/*
 * Table-driven configuration.
 *
 * One struct cfg_key row per key drives everything: parsing, defaults,
 * validation, what a reload may change, `codexpoolctl config`, and the
 * KEYS section of codexpool.conf(5), generated from the table at build
 * time (man/local.am).
 *
 * File format: "key = value" lines; '#' starts a comment (outside quotes);
 * blank lines are ignored; values may be double-quoted.  Errors name the
 * file and line: "codexpool.conf:12: unknown key 'lsiten'".
 *
 * Value syntax per type:
 *	string    any text
 *	int       decimal, within [min, max]
 *	bool      yes/no, true/false, on/off, 1/0
 *	duration  integer with unit us, ms, s, m, h (no unit = seconds)
 *	size      integer with unit k, M, G (powers of 1024; no unit = bytes)
 *	address   host:port, [v6]:port, or an absolute path (unix socket)
 */
#ifndef CODEXPOOL_CONFIG_H
#define CODEXPOOL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum cfg_type {
	CFG_STRING,	/* char *            (NULL when empty) */
	CFG_INT,	/* int */
	CFG_BOOL,	/* bool */
	CFG_DURATION,	/* int64_t, microseconds */
	CFG_SIZE,	/* uint64_t, bytes */
	CFG_ADDRESS,	/* char *, validated */
};

#define CFG_RELOADABLE	0x01	/* a reload applies a new value at once */

struct cfg_key {
	const char	*name;
	enum cfg_type	 type;
	size_t		 offset;	/* of the field in the config struct */
	const char	*def;		/* default, written as in a file; NULL = unset */
	int		 flags;
	int64_t		 min, max;	/* CFG_INT, CFG_DURATION, CFG_SIZE; 0,0 = no bound */
	const char	*desc;		/* one line, for `config` and the man page */
	const char *const *choices;	/* CFG_STRING: NULL-terminated list of the
					 * allowed values, or NULL for any text */
};

/* Where a key's value came from, kept per key for `codexpoolctl config`. */
struct cfg_origin {
	char	where[128];		/* "default", or "/etc/codexpool.conf:12" */
};

/*
 * A config set: the table, the struct it fills, and per-key origins.
 * keys[] ends with a row whose name is NULL.
 */
struct cfgset {
	const struct cfg_key	*keys;
	void			*base;
	struct cfg_origin	*origin;	/* one per key, allocated by cfgset_init */
	size_t			 nkeys;
};

int	cfgset_init(struct cfgset *cs, const struct cfg_key *keys, void *base);
void	cfgset_free(struct cfgset *cs);		/* frees strings and origins */

/* Apply every default.  0, or -1 with err filled (a bad default is a bug). */
int	cfg_load_defaults(struct cfgset *cs, char *err, size_t errlen);
/* Parse a file over the current values.  0, or -1 with err = "file:line: why". */
int	cfg_load_file(struct cfgset *cs, const char *path, char *err, size_t errlen);
/* Set one key from text, as if read at origin.  0 or -1 with err (the
 * reason only, e.g. "unknown key 'lsiten' (did you mean 'listen'?)");
 * on error the old value stays. */
int	cfg_set(struct cfgset *cs, const char *name, const char *value,
	    const char *origin, char *err, size_t errlen);

const struct cfg_key *cfg_find(const struct cfg_key *keys, const char *name);
/* Print a key's current value as it would be written in a file. */
int	cfg_format(const struct cfgset *cs, const struct cfg_key *k, char *buf, size_t len);
/* 1 if key k differs between two sets built from the same table. */
int	cfg_differs(const struct cfgset *a, const struct cfgset *b, const struct cfg_key *k);
/* Copy key k's value from src to dst (strings duplicated). */
void	cfg_copy_value(struct cfgset *dst, const struct cfgset *src, const struct cfg_key *k);

/* Parsers used by the table and reusable elsewhere (0 on success). */
int	cfg_parse_bool(const char *s, bool *out);
int	cfg_parse_duration(const char *s, int64_t *usec);
int	cfg_parse_size(const char *s, uint64_t *bytes);
const char *cfg_type_name(enum cfg_type t);

#endif
