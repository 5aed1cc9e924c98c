/*
 * The account that serves requests.  For now one account, imported from
 * a Codex CLI auth.json (auth_file) at start.
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "jsonutil.h"
#include "jwt.h"
#include "log.h"
#include "supervisor.h"

#define AUTH_FILE_MAX	(1024 * 1024)

static char *
read_small_file(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	if (fstat(fd, &st) == -1 || st.st_size > AUTH_FILE_MAX) {
		close(fd);
		return NULL;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		log_warnx("%s is readable by others (mode %03o); it holds tokens, chmod 600 it",
		    path, (unsigned)(st.st_mode & 0777));
	buf = xmalloc((size_t)st.st_size + 1);
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

int
accounts_load(void)
{
	struct json_object *root, *tokens;
	const char *access, *refresh, *acct_id;
	char claim[128], err[256];
	size_t len;
	char *text;
	struct account *a;

	if (sv->cfg.auth_file == NULL) {
		log_warnx("no auth_file configured: requests will get 503 until an account is added");
		return 0;
	}
	if ((text = read_small_file(sv->cfg.auth_file, &len)) == NULL) {
		log_warn("cannot read auth_file %s", sv->cfg.auth_file);
		return -1;
	}
	root = json_parse_buf(text, len, err, sizeof(err));
	free(text);
	if (root == NULL) {
		log_warnx("%s: not valid JSON: %s", sv->cfg.auth_file, err);
		return -1;
	}
	tokens = json_get_obj(root, "tokens");
	access = json_get_str(tokens, "access_token");
	refresh = json_get_str(tokens, "refresh_token");
	acct_id = json_get_str(tokens, "account_id");
	if (acct_id == NULL && access && jwt_account_id(access, claim, sizeof(claim)) == 0)
		acct_id = claim;
	if (acct_id == NULL && json_get_str(tokens, "id_token") &&
	    jwt_account_id(json_get_str(tokens, "id_token"), claim, sizeof(claim)) == 0)
		acct_id = claim;
	if (access == NULL || acct_id == NULL) {
		log_warnx("%s: needs tokens.access_token and an account id "
		    "(tokens.account_id or the token's chatgpt_account_id claim)", sv->cfg.auth_file);
		json_object_put(root);
		return -1;
	}
	a = xcalloc(1, sizeof(*a));
	a->account_id = xstrdup(acct_id);
	a->access_token = xstrdup(access);
	a->refresh_token = xstrdup(refresh);
	a->label = xstrdup("auth_file");
	snprintf(a->entry, sizeof(a->entry), "%016llx",
	    (unsigned long long)hash64_str(acct_id));
	json_object_put(root);
	sv->account = a;
	log_info("account %s loaded from %s", a->entry, sv->cfg.auth_file);
	return 0;
}

struct account *
accounts_pick(void)
{
	return sv->account;
}

void
accounts_free(void)
{
	struct account *a = sv ? sv->account : NULL;

	if (a == NULL)
		return;
	free(a->label);
	free(a->account_id);
	freezero_str(a->access_token);
	freezero_str(a->refresh_token);
	free(a);
	sv->account = NULL;
}
