/*
 * The Messenger topic rules (SPEC section 4) in C, for the Mosquitto plugin.
 *
 * A line-by-line port of acl/topics.py and acl.principal.is_valid_user_id, which stay the
 * source of truth: tests/broker/test_mosquitto_rules.py runs the shared vectors
 * (tests/acl/vectors.json) and generated topics through both and fails on any difference.
 *
 * Pure functions over NUL-terminated byte strings: no allocation, no global state, no
 * mosquitto dependency. A NULL, empty or over-long argument is denied, and so is every call
 * whose `user` is not a valid user id (the Python rules cannot even build such a principal).
 */
#ifndef MESSENGER_ACL_RULES_H
#define MESSENGER_ACL_RULES_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* User ids (and presence device names): [A-Za-z0-9_.-]{1,64}, and not "." or "..". */
#define MA_USER_ID_MAX 64
/* What follows "{user}/" in a client id: [A-Za-z0-9_.:-]{1,128}. */
#define MA_CLIENT_SUFFIX_MAX 128
/* Longer topics are denied without being parsed; the longest allowed one is
 * "presence/{64}/{64}" (138 bytes), so this changes no answer. */
#define MA_TOPIC_MAX 512

/* Where the API publishes revocations; only the service may publish there, never retained. */
#define MA_CONTROL_TOPIC "$CONTROL/messenger/v1"

/* is_valid_user_id(s). */
bool ma_is_valid_user_id(const char *s);

/* client_id_allowed(): client ids are "{user}/{suffix}", so nobody takes over another
 * user's session ("bob" may not use "bobby/x"). */
bool ma_client_id_allowed(const char *user, const char *client_id);

/* can_publish(): may `user` publish to the exact `topic` (never a filter)? */
bool ma_can_publish(const char *user, bool is_service, const char *topic, bool retain);

/* can_subscribe(): may `user` subscribe with `topic_filter`? */
bool ma_can_subscribe(const char *user, bool is_service, const char *topic_filter);

/* can_receive(): may a message on `topic` be delivered to `user` (also retained replays)? */
bool ma_can_receive(const char *user, bool is_service, const char *topic);

/* can_set_will(): a Last Will only on the client's own presence topic; the service has none.
 * `retain` does not change the answer (it is allowed either way on presence). */
bool ma_can_set_will(const char *user, bool is_service, const char *topic, bool retain);

#ifdef __cplusplus
}
#endif

#endif /* MESSENGER_ACL_RULES_H */
