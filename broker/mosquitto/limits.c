/* The limit decisions of limits.h: a port of acl/limits.py. */
#include "limits.h"

#include <string.h>

#include "acl_rules.h"

/* The first level of `topic`, which ends at `slash`, is `word`. */
static bool first_level_is(const char *topic, const char *slash, const char *word)
{
	size_t len = strlen(word);
	return (size_t)(slash - topic) == len && memcmp(topic, word, len) == 0;
}

enum ma_topic_class ma_topic_class(const char *topic)
{
	if (topic == NULL) {
		return MA_CLASS_NONE;
	}
	if (strcmp(topic, MA_CONTROL_TOPIC) == 0) {
		return MA_CLASS_CONTROL;
	}
	const char *first = strchr(topic, '/');
	if (first == NULL) {
		return MA_CLASS_NONE;
	}
	const char *second = strchr(first + 1, '/');
	if (second == NULL) {
		return first_level_is(topic, first, "inbound") ? MA_CLASS_INBOUND : MA_CLASS_NONE;
	}
	if (strchr(second + 1, '/') != NULL) {
		return MA_CLASS_NONE; /* four levels or more */
	}
	if (first_level_is(topic, first, "presence")) {
		return MA_CLASS_PRESENCE;
	}
	if (first_level_is(topic, first, "users") && (strcmp(second + 1, "messages") == 0 || strcmp(second + 1, "events") == 0)) {
		return MA_CLASS_USER_STREAM;
	}
	return MA_CLASS_NONE;
}

size_t ma_payload_limit(enum ma_topic_class klass)
{
	switch (klass) {
	case MA_CLASS_INBOUND:
		return MA_MAX_INBOUND_BYTES;
	case MA_CLASS_USER_STREAM:
		return MA_MAX_USER_STREAM_BYTES;
	case MA_CLASS_PRESENCE:
		return MA_MAX_PRESENCE_BYTES;
	case MA_CLASS_CONTROL:
		return MA_MAX_CONTROL_BYTES;
	case MA_CLASS_NONE:
	default:
		return 0;
	}
}

bool ma_payload_allowed(const char *topic, size_t size, bool retain)
{
	enum ma_topic_class klass = ma_topic_class(topic);
	if (klass == MA_CLASS_NONE) {
		return false;
	}
	return size <= ma_payload_limit(klass) && (!retain || size <= MA_MAX_RETAINED_BYTES);
}

bool ma_subscription_allowed(size_t held, bool already_held)
{
	return already_held || held < MA_MAX_SUBSCRIPTIONS_PER_CLIENT;
}

bool ma_connection_allowed(bool is_service, size_t others)
{
	return is_service || others < MA_MAX_CONNECTIONS_PER_USER;
}
