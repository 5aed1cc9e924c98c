/*
 * JWT helpers: decode the payload of an access or id token (no signature
 * check: the upstream checks tokens; we only read exp and the account id),
 * and mint HMAC-SHA256 tokens for the simulator and the tests.
 */
#ifndef CODEXPOOL_JWT_H
#define CODEXPOOL_JWT_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#define JWT_AUTH_CLAIM	"https://api.openai.com/auth"

/* New json object of the payload, or NULL if token is not JWT-shaped. */
struct json_object *jwt_payload(const char *token);
/* exp claim in unix seconds, or -1. */
int64_t	jwt_exp(const char *token);
/* Copies the chatgpt_account_id claim into out; 0 on success. */
int	jwt_account_id(const char *token, char *out, size_t outlen);

/* Mint header.payload.signature with HS256 over payload_json; malloc'd. */
char	*jwt_mint(const char *payload_json, const uint8_t *key, size_t keylen);
/* 1 if the signature of token verifies under key. */
int	jwt_verify(const char *token, const uint8_t *key, size_t keylen);

#endif
