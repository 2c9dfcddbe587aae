/*
 * Live connections per user, for the per-user limit (MA_MAX_CONNECTIONS_PER_USER, decided by
 * ma_connection_allowed() in limits.c).
 *
 * A connection is live from the CONNECT the plugin admitted to its MOSQ_EVT_DISCONNECT: clients.c
 * counts a client state when it goes online and uncounts it when it goes offline or is replaced.
 * States are per client id, so a CONNECT that takes over a live client id replaces that state
 * and the user's count does not change. Users with no live connection have no entry.
 */
#ifndef MESSENGER_CONNECTIONS_H
#define MESSENGER_CONNECTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "ht.h"

struct ma_connections {
	struct ma_ht users;
};

bool ma_connections_init(struct ma_connections *c);

void ma_connections_free(struct ma_connections *c);

/* How many client ids of `user` are online. */
size_t ma_connections_live(const struct ma_connections *c, const char *user);

/* One more for `user`; false when out of memory (nothing counted). */
bool ma_connections_add(struct ma_connections *c, const char *user);

/* One fewer for `user`. */
void ma_connections_remove(struct ma_connections *c, const char *user);

#endif /* MESSENGER_CONNECTIONS_H */
