/*
 * Print the KEYS section of codexpool.conf(5) from the configuration
 * table itself, so the page and the code cannot drift apart.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cfgkeys.h"

/* Escape what man(7) would otherwise interpret. */
static void
put_escaped(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", stdout);
		else if (*s == '-')
			fputs("\\-", stdout);
		else
			putchar(*s);
	}
}

int
main(void)
{
	const struct cfg_key *k;

	for (k = codexpool_cfg_keys; k->name != NULL; k++) {
		printf(".TP\n.B ");
		put_escaped(k->name);
		printf(" = \\fI%s\\fR\n", cfg_type_name(k->type));
		put_escaped(k->desc);
		printf("\n.br\nDefault: ");
		if (k->def == NULL || k->def[0] == '\0')
			printf("unset");
		else
			put_escaped(k->def);
		printf(".%s\n", (k->flags & CFG_RELOADABLE) ?
		    " A reload applies a new value at once." : " Needs a restart.");
	}
	return 0;
}
