/* GENERATED from acl/limits.py by scripts/plugin_limits.py: do not edit; change acl/limits.py
 * and run `make plugin-limits`. tests/broker/test_mosquitto_limits.py fails when it is stale. */
#ifndef MESSENGER_LIMITS_GENERATED_H
#define MESSENGER_LIMITS_GENERATED_H

#define MA_MAX_INBOUND_BYTES 262144u
#define MA_MAX_USER_STREAM_BYTES 262144u
#define MA_MAX_PRESENCE_BYTES 1024u
#define MA_MAX_CONTROL_BYTES 65536u
#define MA_MAX_RETAINED_BYTES 1024u
#define MA_MAX_SUBSCRIPTIONS_PER_CLIENT 256u
#define MA_MAX_CONNECTIONS_PER_USER 10u

#endif /* MESSENGER_LIMITS_GENERATED_H */
