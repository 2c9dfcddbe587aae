/* The intrusive hash table of ht.h. */
#include "ht.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FNV_OFFSET UINT64_C(14695981039346656037)

uint64_t ma_fnv1a(uint64_t h, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		h ^= *p;
		h *= MA_FNV_PRIME;
	}
	return h;
}

static uint64_t random_seed(void)
{
	uint64_t seed = 0;
	FILE *f = fopen("/dev/urandom", "rb");
	if (f) {
		if (fread(&seed, sizeof seed, 1, f) != 1) {
			seed = 0;
		}
		fclose(f);
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return seed ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
}

bool ma_ht_init(struct ma_ht *t, size_t nbuckets)
{
	t->seed = FNV_OFFSET ^ random_seed();
	t->buckets = calloc(nbuckets, sizeof *t->buckets);
	t->nbuckets = t->buckets ? nbuckets : 0;
	t->count = 0;
	return t->buckets != NULL;
}

struct ma_ht_node *ma_ht_first(const struct ma_ht *t, uint64_t hash)
{
	return t->buckets[hash & (t->nbuckets - 1)];
}

static void grow(struct ma_ht *t)
{
	size_t n = t->nbuckets * 2;
	struct ma_ht_node **b = calloc(n, sizeof *b);
	if (b == NULL) {
		return; /* longer chains, still correct */
	}
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct ma_ht_node *node = t->buckets[i];
		while (node) {
			struct ma_ht_node *next = node->next;
			node->next = b[node->hash & (n - 1)];
			b[node->hash & (n - 1)] = node;
			node = next;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

void ma_ht_insert(struct ma_ht *t, struct ma_ht_node *node, uint64_t hash)
{
	if (t->count >= t->nbuckets) {
		grow(t);
	}
	node->hash = hash;
	struct ma_ht_node **head = &t->buckets[hash & (t->nbuckets - 1)];
	node->next = *head;
	*head = node;
	t->count++;
}

void ma_ht_unlink(struct ma_ht *t, struct ma_ht_node *node)
{
	struct ma_ht_node **pp = &t->buckets[node->hash & (t->nbuckets - 1)];
	while (*pp && *pp != node) {
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = node->next;
		t->count--;
	}
}

void ma_ht_free(struct ma_ht *t)
{
	free(t->buckets);
	t->buckets = NULL;
	t->nbuckets = 0;
	t->count = 0;
}
