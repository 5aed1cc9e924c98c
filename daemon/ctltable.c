/*
 * Control-socket tables, declared once as columns: text or JSON rows.
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "ctltable.h"
#include "log.h"

void
ctl_table_begin(struct ctl_table *t, const struct ctl_column *cols, size_t ncols,
    struct evbuffer *text)
{
	size_t i;

	memset(t, 0, sizeof(*t));
	t->cols = cols;
	t->ncols = ncols;
	t->text = text;
	if (text == NULL) {
		t->rows = json_object_new_array();
		return;
	}
	evbuffer_add(text, "#", 1);
	for (i = 0; i < ncols; i++)
		evbuffer_add_printf(text, " %s", cols[i].header ? cols[i].header : cols[i].name);
	evbuffer_add(text, "\n", 1);
}

void
ctl_row_begin(struct ctl_table *t)
{
	t->cell = 0;
	if (t->text == NULL)
		t->row = json_object_new_object();
}

/*
 * The column the next cell fills, or NULL (and the value dropped) when a
 * row has more cells than columns.  A cell of the wrong type is a bug in
 * the row builder: logged, and rendered as what it is.
 */
static const struct ctl_column *
next_column(struct ctl_table *t, enum ctl_type type)
{
	const struct ctl_column *c;

	if (t->cell >= t->ncols) {
		log_warnx("control table: a row has more than %zu cells", t->ncols);
		return NULL;
	}
	c = &t->cols[t->cell++];
	if (c->type != type && type != CT_CUSTOM)
		log_warnx("control table: column %s gets a cell of another type", c->name);
	if (t->text != NULL && t->cell > 1)
		evbuffer_add(t->text, " ", 1);
	return c;
}

static void
put_json(struct ctl_table *t, const struct ctl_column *c, struct json_object *v)
{
	json_object_object_add(t->row, c->name, v);
}

void
ctl_cell_int(struct ctl_table *t, int64_t v)
{
	const struct ctl_column *c = next_column(t, CT_INT);

	if (c == NULL)
		return;
	if (t->text)
		evbuffer_add_printf(t->text, "%" PRId64, v);
	else
		put_json(t, c, json_object_new_int64(v));
}

void
ctl_cell_uint(struct ctl_table *t, uint64_t v)
{
	const struct ctl_column *c = next_column(t, CT_UINT);

	if (c == NULL)
		return;
	if (t->text)
		evbuffer_add_printf(t->text, "%" PRIu64, v);
	else
		put_json(t, c, json_object_new_uint64(v));
}

void
ctl_cell_str(struct ctl_table *t, const char *s)
{
	const struct ctl_column *c = next_column(t, CT_STR);

	if (c == NULL)
		return;
	if (t->text)
		evbuffer_add_printf(t->text, "%s", s && *s ? s : "-");
	else
		put_json(t, c, s ? json_object_new_string(s) : NULL);
}

void
ctl_cell_bool(struct ctl_table *t, bool v)
{
	const struct ctl_column *c = next_column(t, CT_BOOL);

	if (c == NULL)
		return;
	if (t->text)
		evbuffer_add_printf(t->text, "%s", v ? "yes" : "no");
	else
		put_json(t, c, json_object_new_boolean(v));
}

void
ctl_cell_custom(struct ctl_table *t, const char *text, struct json_object *json)
{
	const struct ctl_column *c = next_column(t, CT_CUSTOM);

	if (c == NULL || t->text) {
		if (c != NULL)
			evbuffer_add_printf(t->text, "%s", text);
		json_object_put(json);
		return;
	}
	put_json(t, c, json);
}

void
ctl_cell_none(struct ctl_table *t)
{
	const struct ctl_column *c;

	if (t->cell >= t->ncols) {
		log_warnx("control table: a row has more than %zu cells", t->ncols);
		return;
	}
	c = next_column(t, t->cols[t->cell].type);
	if (t->text)
		evbuffer_add(t->text, "-", 1);
	else
		put_json(t, c, NULL);
}

void
ctl_row_end(struct ctl_table *t)
{
	if (t->cell != t->ncols)
		log_warnx("control table: a row has %zu of %zu cells", t->cell, t->ncols);
	while (t->cell < t->ncols)
		ctl_cell_none(t);
	if (t->text) {
		evbuffer_add(t->text, "\n", 1);
		return;
	}
	json_object_array_add(t->rows, t->row);
	t->row = NULL;
}

void
ctl_table_end(struct ctl_table *t, struct json_object *parent, const char *key)
{
	if (t->rows == NULL)
		return;
	if (parent != NULL)
		json_object_object_add(parent, key, t->rows);
	else
		json_object_put(t->rows);
	t->rows = NULL;
}
