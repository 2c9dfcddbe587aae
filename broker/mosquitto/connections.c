/* Live connections per user (connections.h). */
#include "connections.h"

#include <stdlib.h>
#include <string.h>

struct user_count {
	struct ma_ht_node node; /* first */
	char *user;
	size_t live;
};

bool ma_connections_init(struct ma_connections *c)
{
	return ma_ht_init(&c->users, 1024);
}

void ma_connections_free(struct ma_connections *c)
{
	for (size_t b = 0; b < c->users.nbuckets; b++) {
		struct ma_ht_node *n = c->users.buckets[b];
		while (n) {
			struct ma_ht_node *next = n->next;
			free(((struct user_count *)n)->user);
			free(n);
			n = next;
		}
	}
	ma_ht_free(&c->users);
}

static struct user_count *find(const struct ma_connections *c, const char *user, uint64_t h)
{
	for (struct ma_ht_node *n = ma_ht_first(&c->users, h); n; n = n->next) {
		struct user_count *u = (struct user_count *)n;
		if (n->hash == h && strcmp(u->user, user) == 0) {
			return u;
		}
	}
	return NULL;
}

size_t ma_connections_live(const struct ma_connections *c, const char *user)
{
	const struct user_count *u = find(c, user, ma_fnv1a(c->users.seed, user));
	return u ? u->live : 0;
}

bool ma_connections_add(struct ma_connections *c, const char *user)
{
	uint64_t h = ma_fnv1a(c->users.seed, user);
	struct user_count *u = find(c, user, h);
	if (u == NULL) {
		u = calloc(1, sizeof *u);
		if (u == NULL || (u->user = strdup(user)) == NULL) {
			free(u);
			return false;
		}
		ma_ht_insert(&c->users, &u->node, h);
	}
	u->live++;
	return true;
}

void ma_connections_remove(struct ma_connections *c, const char *user)
{
	struct user_count *u = find(c, user, ma_fnv1a(c->users.seed, user));
	if (u == NULL) {
		return;
	}
	if (--u->live == 0) {
		ma_ht_unlink(&c->users, &u->node);
		free(u->user);
		free(u);
	}
}
