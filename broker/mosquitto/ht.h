/*
 * A small intrusive hash table: FNV-1a with a random seed, chaining, doubling when the load
 * passes 1. Entries embed `struct ma_ht_node` as their first member; callers walk a chain from
 * ma_ht_first() and compare keys themselves. No locking: Mosquitto 2.0 calls plugins from its
 * one network thread.
 */
#ifndef MESSENGER_HT_H
#define MESSENGER_HT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ma_ht_node {
	struct ma_ht_node *next;
	uint64_t hash;
};

struct ma_ht {
	struct ma_ht_node **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
	uint64_t seed; /* random: client ids are chosen by clients, so keep chains unpredictable */
};

#define MA_FNV_PRIME UINT64_C(1099511628211)

/* FNV-1a of the NUL-terminated `s`, continuing from `h` (a table's seed to start). */
uint64_t ma_fnv1a(uint64_t h, const char *s);

/* An empty table with `nbuckets` (a power of two) buckets; false when out of memory. */
bool ma_ht_init(struct ma_ht *t, size_t nbuckets);

/* The chain that entries hashed `hash` are on. */
struct ma_ht_node *ma_ht_first(const struct ma_ht *t, uint64_t hash);

void ma_ht_insert(struct ma_ht *t, struct ma_ht_node *node, uint64_t hash);

/* Take `node` out of the table (it must be in it); the caller frees the entry. */
void ma_ht_unlink(struct ma_ht *t, struct ma_ht_node *node);

/* The buckets only: entries are the caller's to free first. */
void ma_ht_free(struct ma_ht *t);

#endif /* MESSENGER_HT_H */
