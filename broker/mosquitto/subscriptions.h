/*
 * The topic filters one client id holds, for the per-client limit (MA_MAX_SUBSCRIPTIONS_PER_CLIENT,
 * decided by ma_subscription_allowed() in limits.c).
 *
 * Mosquitto calls the ACL check once per filter of a SUBSCRIBE (MOSQ_ACL_SUBSCRIBE) and of an
 * UNSUBSCRIBE (MOSQ_ACL_UNSUBSCRIBE), with the filter as sent ("$share/group/..." included):
 * an allowed subscribe adds the filter, an unsubscribe removes it, and subscribing again to a
 * held filter (which replaces that subscription) neither counts twice nor is refused. The set
 * belongs to the session: a persistent session's survives a reconnect (clients.c moves it to
 * the new state), a clean start begins empty. A small array searched linearly: it holds at most
 * the limit (256), and SUBSCRIBE is rare.
 */
#ifndef MESSENGER_SUBSCRIPTIONS_H
#define MESSENGER_SUBSCRIPTIONS_H

#include <stdbool.h>
#include <stddef.h>

struct ma_filters {
	char **items;
	size_t count;
	size_t cap;
};

bool ma_filters_has(const struct ma_filters *f, const char *filter);

/* Add `filter` (not held yet); false when out of memory. */
bool ma_filters_add(struct ma_filters *f, const char *filter);

/* Remove `filter` if held. */
void ma_filters_remove(struct ma_filters *f, const char *filter);

/* Move every filter of `from` to the empty `to`. */
void ma_filters_move(struct ma_filters *to, struct ma_filters *from);

void ma_filters_clear(struct ma_filters *f);

#endif /* MESSENGER_SUBSCRIPTIONS_H */
