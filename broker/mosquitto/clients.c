/* Client states (clients.h). */
#include "clients.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

bool ma_clients_init(struct ma_clients *cs, long offline_max)
{
	cs->offline = (struct ma_state_list){0};
	cs->ended = (struct ma_state_list){0};
	cs->offline_max = offline_max;
	return ma_ht_init(&cs->table, 1024) && ma_connections_init(&cs->connections);
}

static void state_free(struct ma_client_state *st)
{
	ma_filters_clear(&st->filters);
	free(st->client_id);
	free(st->user);
	free(st->jti);
	free(st);
}

void ma_clients_free(struct ma_clients *cs)
{
	for (size_t b = 0; b < cs->table.nbuckets; b++) {
		struct ma_ht_node *n = cs->table.buckets[b];
		while (n) {
			struct ma_ht_node *next = n->next;
			state_free((struct ma_client_state *)n);
			n = next;
		}
	}
	ma_ht_free(&cs->table);
	ma_connections_free(&cs->connections);
}

struct ma_client_state *ma_state_find(struct ma_clients *cs, const char *client_id)
{
	if (client_id == NULL) {
		return NULL;
	}
	uint64_t h = ma_fnv1a(cs->table.seed, client_id);
	for (struct ma_ht_node *n = ma_ht_first(&cs->table, h); n; n = n->next) {
		struct ma_client_state *st = (struct ma_client_state *)n;
		if (n->hash == h && strcmp(st->client_id, client_id) == 0) {
			return st;
		}
	}
	return NULL;
}

static void list_unlink(struct ma_client_state *st)
{
	struct ma_state_list *l = st->list;
	if (l == NULL) {
		return;
	}
	if (st->prev) {
		st->prev->next = st->next;
	} else {
		l->oldest = st->next;
	}
	if (st->next) {
		st->next->prev = st->prev;
	} else {
		l->newest = st->prev;
	}
	st->prev = st->next = NULL;
	st->list = NULL;
	l->count--;
}

static void list_append(struct ma_state_list *l, struct ma_client_state *st)
{
	st->list = l;
	st->next = NULL;
	st->prev = l->newest;
	if (l->newest) {
		l->newest->next = st;
	} else {
		l->oldest = st;
	}
	l->newest = st;
	l->count++;
}

static void state_remove(struct ma_clients *cs, struct ma_client_state *st)
{
	if (st->online) {
		ma_connections_remove(&cs->connections, st->user);
	}
	list_unlink(st);
	ma_ht_unlink(&cs->table, &st->node);
	state_free(st);
}

void ma_forget_ended_sessions(struct ma_clients *cs)
{
	while (cs->ended.oldest) {
		state_remove(cs, cs->ended.oldest);
	}
}

bool ma_state_set(struct ma_clients *cs, const struct mosquitto *client, const char *client_id, const char *user,
		  const struct ma_grant *g)
{
	struct ma_client_state *st = calloc(1, sizeof *st);
	if (st == NULL) {
		return false;
	}
	st->client_id = strdup(client_id);
	st->user = strdup(user);
	st->jti = ma_dup_or_null(g->jti);
	if (st->client_id == NULL || st->user == NULL || (g->jti && st->jti == NULL) ||
	    !ma_connections_add(&cs->connections, user)) {
		state_free(st);
		return false;
	}
	st->client = client;
	st->is_service = g->is_service;
	st->has_iat = g->has_iat;
	st->iat = g->iat;
	st->online = true;
	struct ma_client_state *old = ma_state_find(cs, client_id);
	if (old) {
		ma_filters_move(&st->filters, &old->filters);
		state_remove(cs, old);
	}
	ma_ht_insert(&cs->table, &st->node, ma_fnv1a(cs->table.seed, client_id));
	return true;
}

void ma_state_set_offline(struct ma_clients *cs, struct ma_client_state *st, bool clean)
{
	if (!st->online) {
		return;
	}
	st->online = false;
	ma_connections_remove(&cs->connections, st->user);
	if (clean) {
		ma_filters_clear(&st->filters);
		list_append(&cs->ended, st);
		return;
	}
	if (st->is_service) {
		return; /* a handler's session holds acknowledged commands: never forgotten */
	}
	list_append(&cs->offline, st);
	while (cs->offline.count > (size_t)cs->offline_max && cs->offline.oldest != st) {
		state_remove(cs, cs->offline.oldest);
	}
}
