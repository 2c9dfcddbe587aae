/*
 * The token cache: positive gateway answers, keyed on (username, password), kept cache_ttl_s
 * and never past the token's expire_at; at most cache_size entries, the oldest dropped first.
 * A revocation drops the entries it covers (revocation.c), so the reconnect asks the gateway.
 */
#ifndef MESSENGER_CACHE_H
#define MESSENGER_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway.h"
#include "ht.h"

struct ma_cache_entry {
	struct ma_ht_node node; /* first */
	char *username;
	char *password;
	struct ma_grant grant;
	int64_t deadline_ms; /* monotonic: inserted + ttl */
	struct ma_cache_entry *older, *newer;
};

struct ma_cache {
	struct ma_ht table;
	struct ma_cache_entry *oldest, *newest; /* insertion order, one TTL: expired ones are oldest */
	long ttl_s;                             /* 0: nothing is cached */
	long size;
};

bool ma_cache_init(struct ma_cache *c, long ttl_s, long size);

void ma_cache_free(struct ma_cache *c);

/* The cached grant for (username, password), or NULL; an expired entry is dropped. */
const struct ma_grant *ma_cache_get(struct ma_cache *c, const char *username, const char *password);

/* Cache a copy of `g` (nothing when out of memory, or when the token has expired). */
void ma_cache_put(struct ma_cache *c, const char *username, const char *password, const struct ma_grant *g);

/* Drop every entry `covered` says yes to; returns how many. */
size_t ma_cache_drop_if(struct ma_cache *c, bool (*covered)(const char *username, const struct ma_grant *g, const void *arg),
			const void *arg);

#endif /* MESSENGER_CACHE_H */
