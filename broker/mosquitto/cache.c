/* The token cache (cache.h). */
#include "cache.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static uint64_t cache_hash(const struct ma_cache *c, const char *username, const char *password)
{
	/* The NUL between the two keeps ("ab", "c") and ("a", "bc") apart. */
	uint64_t h = ma_fnv1a(c->table.seed, username);
	h = (h ^ 0) * MA_FNV_PRIME;
	return ma_fnv1a(h, password);
}

bool ma_cache_init(struct ma_cache *c, long ttl_s, long size)
{
	c->oldest = c->newest = NULL;
	c->ttl_s = ttl_s;
	c->size = size;
	return ma_ht_init(&c->table, 1024);
}

static void cache_remove(struct ma_cache *c, struct ma_cache_entry *e)
{
	if (e->older) {
		e->older->newer = e->newer;
	} else {
		c->oldest = e->newer;
	}
	if (e->newer) {
		e->newer->older = e->older;
	} else {
		c->newest = e->older;
	}
	ma_ht_unlink(&c->table, &e->node);
	free(e->username);
	free(e->password);
	ma_grant_clear(&e->grant);
	free(e);
}

void ma_cache_free(struct ma_cache *c)
{
	while (c->oldest) {
		cache_remove(c, c->oldest);
	}
	ma_ht_free(&c->table);
}

static bool entry_live(const struct ma_cache_entry *e, int64_t now_ms, double now_wall)
{
	return now_ms < e->deadline_ms && !(e->grant.has_exp && now_wall >= e->grant.expire_at);
}

const struct ma_grant *ma_cache_get(struct ma_cache *c, const char *username, const char *password)
{
	if (c->ttl_s == 0) {
		return NULL;
	}
	uint64_t h = cache_hash(c, username, password);
	for (struct ma_ht_node *n = ma_ht_first(&c->table, h); n; n = n->next) {
		struct ma_cache_entry *e = (struct ma_cache_entry *)n;
		if (n->hash == h && strcmp(e->username, username) == 0 && strcmp(e->password, password) == 0) {
			if (entry_live(e, ma_mono_ms(), ma_wall_s())) {
				return &e->grant;
			}
			cache_remove(c, e);
			return NULL;
		}
	}
	return NULL;
}

void ma_cache_put(struct ma_cache *c, const char *username, const char *password, const struct ma_grant *g)
{
	if (c->ttl_s == 0) {
		return;
	}
	int64_t now = ma_mono_ms();
	double wall = ma_wall_s();
	if (g->has_exp && wall >= g->expire_at) {
		return;
	}
	if (c->table.count >= (size_t)c->size) {
		/* Expired entries first; entries are in insertion order with one TTL, so the
		 * expired-by-TTL ones are all at the old end. */
		while (c->oldest && !entry_live(c->oldest, now, wall)) {
			cache_remove(c, c->oldest);
		}
		while (c->table.count >= (size_t)c->size && c->oldest) {
			cache_remove(c, c->oldest);
		}
	}
	struct ma_cache_entry *e = calloc(1, sizeof *e);
	if (e == NULL) {
		return;
	}
	e->username = strdup(username);
	e->password = strdup(password);
	e->grant = *g;
	e->grant.jti = ma_dup_or_null(g->jti);
	if (e->username == NULL || e->password == NULL || (g->jti && e->grant.jti == NULL)) {
		free(e->username);
		free(e->password);
		free(e->grant.jti);
		free(e);
		return;
	}
	e->deadline_ms = now + (int64_t)c->ttl_s * 1000;
	e->older = c->newest;
	if (c->newest) {
		c->newest->newer = e;
	} else {
		c->oldest = e;
	}
	c->newest = e;
	ma_ht_insert(&c->table, &e->node, cache_hash(c, username, password));
}

size_t ma_cache_drop_if(struct ma_cache *c, bool (*covered)(const char *username, const struct ma_grant *g, const void *arg),
			const void *arg)
{
	size_t dropped = 0;
	struct ma_cache_entry *e = c->oldest;
	while (e) {
		struct ma_cache_entry *next = e->newer;
		if (covered(e->username, &e->grant, arg)) {
			cache_remove(c, e);
			dropped++;
		}
		e = next;
	}
	return dropped;
}
