/*
 * The control socket's line parser (daemon/control.c
 * control_parse_line: split into words, --json, keyword prefixes,
 * argument counts), each input line as the socket reads it.
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>

#include "fuzz.h"
#include "supervisor.h"

/* main.c's supervisor: the parser never looks at it. */
struct supervisor *sv;

static void
on_line(void *arg, const char *line, size_t len)
{
	char *s = fuzz_cstr((const uint8_t *)line, len), err[600];
	const char *usage;
	bool blank = strspn(s, " \t\r") == strlen(s);

	(void)arg;
	usage = control_parse_line(s, err, sizeof(err));
	if (usage == NULL && err[0] == '\0' && !blank)
		abort();	/* refused without a reason */
	if (usage != NULL && blank)
		abort();	/* a blank line ran a command */
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_frames(data, size, on_line, NULL);
	return 0;
}
