/*
 * Re-reading the configuration (SIGHUP or `codexpoolctl reload`).
 *
 * The file is parsed into a fresh set first, so a bad file changes
 * nothing.  Keys marked reloadable take their new value at once and the
 * workers get the new settings without dropping pooled connections; other
 * changed keys are reported and keep their old value until a restart.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "msgtypes.h"
#include "supervisor.h"

int
config_reload(char *report, size_t len)
{
	struct codexpool_config fresh;
	struct cfgset cs;
	const struct cfg_key *k;
	char err[512];
	size_t off = 0;
	int applied = 0, skipped = 0, i;
	bool was_enabled = sv->cfg.ws_pool_enabled;

	report[0] = '\0';
	memset(&fresh, 0, sizeof(fresh));
	cfgset_init(&cs, codexpool_cfg_keys, &fresh);
	if (cfg_load_defaults(&cs, err, sizeof(err)) == -1 ||
	    (access(sv->config_path, F_OK) == 0 &&
	    cfg_load_file(&cs, sv->config_path, err, sizeof(err)) == -1)) {
		snprintf(report, len, "%s", err);
		cfgset_free(&cs);
		return -1;
	}
	if (log_level_from_name(fresh.log_level) < 0) {
		snprintf(report, len, "log_level must be error, warn, info or debug");
		cfgset_free(&cs);
		return -1;
	}
	if (model_map_check(fresh.model_map, err, sizeof(err)) == -1) {
		snprintf(report, len, "model_map: %s", err);
		cfgset_free(&cs);
		return -1;
	}
	for (k = codexpool_cfg_keys, i = 0; k->name != NULL; k++, i++) {
		char val[256];
		if (!cfg_differs(&sv->cfgset, &cs, k))
			continue;
		cfg_format(&cs, k, val, sizeof(val));
		if (k->flags & CFG_RELOADABLE) {
			cfg_copy_value(&sv->cfgset, &cs, k);
			strlcpy_safe(sv->cfgset.origin[i].where, cs.origin[i].where,
			    sizeof(sv->cfgset.origin[i].where));
			applied++;
			off += (size_t)snprintf(report + off, off < len ? len - off : 0,
			    "applied: %s = %s\n", k->name, val);
		} else {
			skipped++;
			off += (size_t)snprintf(report + off, off < len ? len - off : 0,
			    "not applied (needs a restart): %s = %s\n", k->name, val);
		}
		if (off >= len)
			off = len - 1;
	}
	cfgset_free(&cs);

	log_set_level(log_level_from_name(sv->cfg.log_level));
	if (sv->cfg.log_file)
		log_set_file(sv->cfg.log_file);
	pm_set_cap(&sv->pool, sv->cfg.ws_pool_max_per_account);
	pm_set_max_age(&sv->pool, sv->cfg.ws_pool_max_age);
	if (sv->cfg.ws_pool_enabled != was_enabled)
		sv_set_pool_enabled(sv->cfg.ws_pool_enabled);
	for (i = 0; i < sv->nslots; i++)
		workers_send_config(i);
	log_info("configuration reloaded from %s: %d change(s) applied, %d need a restart",
	    sv->config_path, applied, skipped);
	return 0;
}
