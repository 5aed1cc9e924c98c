/*
 * The worker's upstream event classifier (worker/relay.c
 * relay_classify): any bytes a WebSocket message can carry.
 */
#include "config.h"

#include <stdlib.h>

#include "fuzz.h"
#include "relay.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_info fi;
	uint8_t *copy = malloc(size ? size : 1);
	char *code;

	if (copy == NULL)
		abort();
	memcpy(copy, data, size);	/* exact size: ASan sees a read past it */
	memset(&fi, 0, sizeof(fi));
	relay_classify(copy, size, &fi);
	if (fi.cls < FC_RATE_LIMITS || fi.cls > FC_OTHER)
		abort();
	if (memchr(fi.code, '\0', sizeof(fi.code)) == NULL ||
	    memchr(fi.response_id, '\0', sizeof(fi.response_id)) == NULL)
		abort();	/* unterminated copies */
	free(copy);

	code = fuzz_cstr(data, size);
	(void)relay_error_status(code);
	free(code);
	return 0;
}
