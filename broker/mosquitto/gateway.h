/*
 * The gateway client: POST {gateway_url}/mqtt/user with libcurl, and what its answer grants.
 *
 * One curl handle for every call (libcurl keeps the connection to the gateway alive). A call
 * blocks the broker for at most timeout_ms; after a failure (transport error, 5xx, 401/403) a
 * 1 s circuit breaker refuses new (uncached) connections at once, so a hung gateway cannot
 * stall every CONNECT. A 4xx other than 401/403 is a refusal of that client, not an outage.
 */
#ifndef MESSENGER_GATEWAY_H
#define MESSENGER_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "options.h"

/* What a valid token says about its holder (from the gateway or the cache). */
struct ma_grant {
	bool is_service;
	char *jti; /* NULL when the token has none */
	bool has_iat;
	double iat;
	bool has_exp;
	double expire_at;
};

/* Free what `g` owns (its jti). */
void ma_grant_clear(struct ma_grant *g);

enum ma_verdict { MA_VERDICT_ALLOW, MA_VERDICT_DENY, MA_VERDICT_FAILURE };

struct ma_gateway {
	CURL *curl;
	struct curl_slist *headers;
	char curl_err[CURL_ERROR_SIZE];
	const char *url; /* the options' */
	bool curl_global;
	/* the circuit breaker */
	bool down;
	int64_t breaker_until_ms;
	unsigned long breaker_refusals;
};

/* libcurl and the one handle, configured from `o` (which must outlive the gateway). */
bool ma_gateway_init(struct ma_gateway *gw, const struct ma_options *o);

void ma_gateway_cleanup(struct ma_gateway *gw);

/* Is the breaker open? Then the CONNECT is refused without a call (and counted). */
bool ma_gateway_breaker_open(struct ma_gateway *gw);

/* Ask about one CONNECT. ALLOW fills `g` (the caller clears it); DENY and FAILURE put a short,
 * log-safe reason in `why`. A FAILURE opens the breaker (and counts as a refusal); any answer
 * closes it. */
enum ma_verdict ma_gateway_ask(struct ma_gateway *gw, const char *username, const char *password,
			       const char *client_id, struct ma_grant *g, char *why, size_t why_len);

#endif /* MESSENGER_GATEWAY_H */
