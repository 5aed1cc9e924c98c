/*
 * Control-socket tables: each `show` table is declared once, as an array
 * of columns, and its rows are built cell by cell in column order.  The
 * same rows become either the text table (a "# name name ..." header,
 * then one line per row, cells separated by a space) or a JSON array of
 * objects keyed by the column names.
 *
 * Text and JSON differ only where a table needs it: a missing value is
 * "-" in text and null in JSON; an empty string is "-" in text; a boolean
 * is yes/no in text; a custom cell gives both renderings.
 */
#ifndef CODEXPOOL_CTLTABLE_H
#define CODEXPOOL_CTLTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <json-c/json.h>

enum ctl_type {
	CT_INT,		/* int64_t */
	CT_UINT,	/* uint64_t */
	CT_STR,		/* NULL: "-" / null; "": "-" / "" */
	CT_BOOL,	/* yes/no / true/false */
	CT_CUSTOM,	/* a text rendering and a JSON value, given per cell */
};

struct ctl_column {
	const char	*name;		/* JSON key; also the text header unless header is set */
	enum ctl_type	 type;
	const char	*header;	/* text header, where it says more than the key */
};

#define COL(name, type)			{ (name), (type), NULL }
#define COL_H(name, type, header)	{ (name), (type), (header) }

struct ctl_table {
	const struct ctl_column	*cols;
	size_t			 ncols;
	size_t			 cell;		/* next cell of the current row */
	struct evbuffer		*text;		/* text mode */
	struct json_object	*rows;		/* JSON mode: the array */
	struct json_object	*row;		/* JSON mode: the current row */
};

/* Text mode when text is set (writes the header now), else JSON mode. */
void	ctl_table_begin(struct ctl_table *t, const struct ctl_column *cols, size_t ncols,
	    struct evbuffer *text);
void	ctl_row_begin(struct ctl_table *t);
void	ctl_cell_int(struct ctl_table *t, int64_t v);
void	ctl_cell_uint(struct ctl_table *t, uint64_t v);
void	ctl_cell_str(struct ctl_table *t, const char *s);
void	ctl_cell_bool(struct ctl_table *t, bool v);
/* Takes json (may be NULL: null). */
void	ctl_cell_custom(struct ctl_table *t, const char *text, struct json_object *json);
/* No value, in any column: "-" / null. */
void	ctl_cell_none(struct ctl_table *t);
void	ctl_row_end(struct ctl_table *t);
/* JSON mode: adds the rows to parent under key.  Text mode: nothing more. */
void	ctl_table_end(struct ctl_table *t, struct json_object *parent, const char *key);

#define CTL_TABLE_BEGIN(t, cols, text) \
	ctl_table_begin((t), (cols), sizeof(cols) / sizeof((cols)[0]), (text))

#endif
