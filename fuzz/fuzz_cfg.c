/*
 * The configuration file parser (common/cfg.c cfg_load_file over the
 * daemon's key table, common/cfgkeys.c), then what the daemon does with a
 * loaded file: format every key for `config`, compare with the defaults
 * as a reload does, and parse model_map (daemon/modelmap.c).  The input
 * is the file, given through a memfd.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cfg.h"
#include "cfgkeys.h"
#include "fuzz.h"
#include "modelmap.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct codexpool_config c, d;
	struct cfgset cs, defaults;
	const struct cfg_key *k;
	struct modelmap *mm;
	char path[64], err[512], buf[4096];
	int fd;

	if ((fd = memfd_create("fuzz.conf", MFD_CLOEXEC)) == -1)
		abort();
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	if (cfgset_init(&cs, codexpool_cfg_keys, &c) != 0 ||
	    cfgset_init(&defaults, codexpool_cfg_keys, &d) != 0)
		abort();
	if (cfg_load_defaults(&cs, err, sizeof(err)) != 0 ||
	    cfg_load_defaults(&defaults, err, sizeof(err)) != 0)
		abort();
	if (cfg_load_file(&cs, path, err, sizeof(err)) == 0) {
		for (k = codexpool_cfg_keys; k->name != NULL; k++) {
			cfg_format(&cs, k, buf, sizeof(buf));
			if (cfg_differs(&cs, &defaults, k))
				cfg_copy_value(&defaults, &cs, k);
		}
		if (c.model_map != NULL &&
		    (mm = modelmap_parse(c.model_map, err, sizeof(err))) != NULL) {
			(void)modelmap_resolve(mm, c.models, "claude-sonnet-4-5");
			modelmap_free(mm);
		}
	} else if (err[0] == '\0') {
		abort();	/* an error must say why */
	}
	cfgset_free(&cs);
	cfgset_free(&defaults);
	close(fd);
	return 0;
}
