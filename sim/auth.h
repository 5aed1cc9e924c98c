/*
 * Simulated ChatGPT accounts and their tokens.
 *
 * Access and id tokens are HS256 JWTs signed with a random key made at
 * start, so only tokens this run minted verify.  Refresh tokens are opaque
 * and single-use: a refresh rotates the account's refresh token, and
 * presenting a retired one is "refresh_token_reused", as upstream does.
 */
#ifndef SIM_AUTH_H
#define SIM_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define SIM_CLIENT_ID		"app_EMoamEEZ73f0CkXaXp7hrann"
#define SIM_RETIRED_MAX		64
#define SIM_ACCOUNTS_MAX	10000

struct sim_account {
	int	 index;			/* 1-based, as in account-N.json */
	char	 id[40];		/* chatgpt_account_id, UUID-shaped */
	char	 user_id[48];
	char	 email[64];
	char	*access_token;
	char	*id_token;
	char	*refresh_token;		/* the only one that refreshes */
	char	*retired[SIM_RETIRED_MAX];	/* used ones, newest last */
	int	 nretired;
	long	 refreshes;
	long	 issued_at;		/* unix seconds of the current tokens */
};

struct sim_auth {
	uint8_t	 key[32];
	long	 ttl;			/* access-token lifetime, seconds */
	struct sim_account *accounts;
	int	 n;
};

enum auth_verdict {
	AUTH_OK = 0,
	AUTH_MISSING,			/* no "Bearer" authorization */
	AUTH_BAD_TOKEN,			/* not a JWT, or bad signature */
	AUTH_EXPIRED,
	AUTH_NO_ACCOUNT_HEADER,
	AUTH_ACCOUNT_MISMATCH,		/* header != token claim */
	AUTH_UNKNOWN_ACCOUNT,
};

enum refresh_result {
	REFRESH_OK = 0,
	REFRESH_REUSED,
	REFRESH_UNKNOWN,
};

/* Makes the key and n accounts; 0 on success. */
int	sim_auth_init(struct sim_auth *auth, int n, long ttl);
void	sim_auth_free(struct sim_auth *auth);

/* Writes dir/account-1.json .. account-N.json (mode 0600, via rename).
 * 0 on success; on failure err says why. */
int	sim_auth_write_files(const struct sim_auth *auth, const char *dir,
	    char *err, size_t errlen);
/* The Codex CLI auth.json of an account, malloc'd. */
char	*sim_auth_file_json(const struct sim_account *a);

/* authorization is the whole header value ("Bearer ..."), either may be
 * NULL.  On AUTH_OK *out (if given) is the account. */
enum auth_verdict sim_auth_check(struct sim_auth *auth, const char *authorization,
	    const char *account_header, struct sim_account **out);
const char *auth_verdict_code(enum auth_verdict v);
const char *auth_verdict_message(enum auth_verdict v);

enum refresh_result sim_auth_refresh(struct sim_auth *auth,
	    const char *refresh_token, struct sim_account **out);

struct sim_account *sim_auth_find(struct sim_auth *auth, const char *account_id);

/* Fills buf with n random bytes (getrandom, falling back to a PRNG). */
void	sim_random_bytes(void *buf, size_t n);

#endif
