/*
 * Importing a Codex auth.json (daemon/accounts.c account_add_auth_json
 * and the control line's base64url form): the parse and the token fields
 * it reads, then the JWT helpers (common/jwt.c) on each token, as
 * account_add() uses them before it touches the store.  The whole input
 * is also tried as a token, and as the base64url text of
 * `account add auth-json`.
 */
#include "config.h"

#include <stdlib.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "jsonutil.h"
#include "jwt.h"
#include "store.h"
#include "util.h"

static void
token(const char *t)
{
	struct json_object *o;
	char claim[STORE_ID_MAX];

	if (t == NULL)
		return;
	if (jwt_account_id(t, claim, sizeof(claim)) == 0 &&
	    (claim[0] == '\0' || strlen(claim) >= sizeof(claim)))
		abort();
	(void)jwt_exp(t);
	if ((o = jwt_payload(t)) != NULL)
		json_object_put(o);
}

static void
auth_json(const char *text, size_t len)
{
	struct json_object *root, *tokens;
	char perr[128];

	if ((root = json_parse_buf(text, len, perr, sizeof(perr))) == NULL)
		return;
	if ((tokens = json_get_obj(root, "tokens")) != NULL) {
		token(json_get_str(tokens, "access_token"));
		token(json_get_str(tokens, "id_token"));
		(void)json_get_str(tokens, "refresh_token");
		(void)json_get_str(tokens, "account_id");
	}
	json_object_put(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	uint8_t *json;
	int n;

	auth_json((const char *)data, size);
	token(s);

	/* control.c cmd_account_add_json: base64url, then the same import */
	json = malloc(size + 1);
	if (json == NULL)
		abort();
	n = b64url_decode(s, strlen(s), json, strlen(s) + 1);
	if (n > (int)strlen(s))
		abort();
	if (n >= 0)
		auth_json((const char *)json, (size_t)n);
	free(json);
	free(s);
	return 0;
}
