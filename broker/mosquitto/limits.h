/*
 * The limits of acl/limits.py in C: payload per topic class and of a retained message,
 * subscriptions per client, live connections per user.
 *
 * The numbers come from limits_generated.h, which scripts/plugin_limits.py writes from
 * acl/limits.py (their one definition); these decisions are line-by-line ports of that module's
 * functions. tests/broker/test_mosquitto_limits.py runs the shared vectors
 * (tests/acl/limit_vectors.json) and generated topics through both. Pure functions, like
 * acl_rules.h: the plugin keeps the counts (connections.c, subscriptions.c).
 */
#ifndef MESSENGER_LIMITS_H
#define MESSENGER_LIMITS_H

#include <stdbool.h>
#include <stddef.h>

#include "limits_generated.h"

#ifdef __cplusplus
extern "C" {
#endif

/* acl.limits.TopicClass; MA_CLASS_NONE for every other topic (the topic rules deny those). */
enum ma_topic_class {
	MA_CLASS_NONE = 0,
	MA_CLASS_INBOUND,
	MA_CLASS_USER_STREAM,
	MA_CLASS_PRESENCE,
	MA_CLASS_CONTROL,
};

/* topic_class(): the class of `topic` by its shape alone. */
enum ma_topic_class ma_topic_class(const char *topic);

/* The largest payload of a class (0 for MA_CLASS_NONE). */
size_t ma_payload_limit(enum ma_topic_class klass);

/* payload_allowed(): may a `size`-byte publish or Last Will on `topic` go through? */
bool ma_payload_allowed(const char *topic, size_t size, bool retain);

/* subscription_allowed(): may a client holding `held` distinct filters subscribe to one more
 * (`already_held`: to one it holds, which replaces it and is always allowed)? */
bool ma_subscription_allowed(size_t held, bool already_held);

/* connection_allowed(): may a user connect while `others` of its connections are live under
 * other client ids? The service account has no limit. */
bool ma_connection_allowed(bool is_service, size_t others);

#ifdef __cplusplus
}
#endif

#endif /* MESSENGER_LIMITS_H */
