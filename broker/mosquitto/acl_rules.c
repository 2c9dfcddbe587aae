/*
 * The Messenger topic rules: a port of acl/topics.py (see acl_rules.h).
 *
 * Like the Python, every check splits the topic on '/' and compares whole levels, and every
 * variable level must be a valid id, so wildcards, empty levels, '$' prefixes and non-ASCII
 * bytes are rejected without being listed.
 */
#include "acl_rules.h"

#include <stddef.h>
#include <string.h>

/* No rule looks at more than 3 levels ("$share/..." filters are compared as whole strings);
 * the parser keeps the first few and counts the rest. */
#define MAX_LEVELS 4

struct span {
	const char *p;
	size_t len;
};

struct levels {
	struct span v[MAX_LEVELS];
	size_t count; /* all levels, also those beyond MAX_LEVELS */
};

static const char INBOUND[] = "inbound";
static const char USERS[] = "users";
static const char PRESENCE[] = "presence";
static const char MESSAGES[] = "messages";
static const char EVENTS[] = "events";
static const char SINGLE_LEVEL[] = "+";

/* The service's wildcard filters, matched exactly (no other $share group, no "#"). */
static const char *const SERVICE_FILTERS[] = {
	"inbound/+",
	"presence/+/+",
	"$share/handlers/inbound/+",
	"$share/handlers/presence/+/+",
};

/* The length of `s`, or max + 1 when it is longer (strnlen, without needing POSIX). */
static size_t bounded_len(const char *s, size_t max)
{
	size_t n = 0;
	while (n <= max && s[n] != '\0') {
		n++;
	}
	return n;
}

static bool is_id_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '.' || c == '-';
}

static bool is_suffix_char(unsigned char c)
{
	return is_id_char(c) || c == ':';
}

static bool valid_id(const char *p, size_t len)
{
	if (len == 0 || len > MA_USER_ID_MAX) {
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		if (!is_id_char((unsigned char)p[i])) {
			return false;
		}
	}
	/* "." and ".." match the charset but read as path segments in URLs and file names. */
	return !(p[0] == '.' && (len == 1 || (len == 2 && p[1] == '.')));
}

static bool span_eq(struct span s, const char *literal)
{
	size_t n = strlen(literal);
	return s.len == n && memcmp(s.p, literal, n) == 0;
}

static bool span_eq_span(struct span a, struct span b)
{
	return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static bool valid_span(struct span s)
{
	return valid_id(s.p, s.len);
}

/* Length of a valid user id, or 0 when `user` is not one. */
static size_t user_len(const char *user)
{
	if (user == NULL) {
		return 0;
	}
	size_t n = bounded_len(user, MA_USER_ID_MAX);
	return valid_id(user, n) ? n : 0;
}

/* _levels(): false for NULL, empty or over-long topics (which every rule denies). */
static bool split_levels(const char *topic, struct levels *out)
{
	if (topic == NULL || topic[0] == '\0') {
		return false;
	}
	size_t len = bounded_len(topic, MA_TOPIC_MAX);
	if (len > MA_TOPIC_MAX) {
		return false;
	}
	out->count = 0;
	const char *start = topic;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || topic[i] == '/') {
			if (out->count < MAX_LEVELS) {
				out->v[out->count].p = start;
				out->v[out->count].len = (size_t)(topic + i - start);
			}
			out->count++;
			start = topic + i + 1;
		}
	}
	return true;
}

/* `uid` is the principal's user id, or NULL for "any valid id". */
static bool uid_matches(struct span level, const struct span *uid)
{
	return uid == NULL ? valid_span(level) : span_eq_span(level, *uid);
}

/* inbound/{uid} exactly. */
static bool is_inbound(const struct levels *lv, const struct span *uid)
{
	return lv->count == 2 && span_eq(lv->v[0], INBOUND) && uid_matches(lv->v[1], uid);
}

/* users/{uid}/messages|events exactly. */
static bool is_user_stream(const struct levels *lv, const struct span *uid)
{
	return lv->count == 3 && span_eq(lv->v[0], USERS) &&
	       (span_eq(lv->v[2], MESSAGES) || span_eq(lv->v[2], EVENTS)) && uid_matches(lv->v[1], uid);
}

/* presence/{uid}/{device} exactly. */
static bool is_presence(const struct levels *lv, const struct span *uid)
{
	return lv->count == 3 && span_eq(lv->v[0], PRESENCE) && valid_span(lv->v[2]) &&
	       uid_matches(lv->v[1], uid);
}

bool ma_is_valid_user_id(const char *s)
{
	return user_len(s) > 0;
}

bool ma_client_id_allowed(const char *user, const char *client_id)
{
	size_t ulen = user_len(user);
	if (ulen == 0 || client_id == NULL) {
		return false;
	}
	size_t clen = bounded_len(client_id, ulen + 1 + MA_CLIENT_SUFFIX_MAX);
	if (clen <= ulen + 1 || clen > ulen + 1 + MA_CLIENT_SUFFIX_MAX) {
		return false;
	}
	if (memcmp(client_id, user, ulen) != 0 || client_id[ulen] != '/') {
		return false;
	}
	for (size_t i = ulen + 1; i < clen; i++) {
		if (!is_suffix_char((unsigned char)client_id[i])) {
			return false;
		}
	}
	return true;
}

bool ma_can_publish(const char *user, bool is_service, const char *topic, bool retain)
{
	struct levels lv;
	size_t ulen = user_len(user);
	if (ulen == 0 || !split_levels(topic, &lv)) {
		return false;
	}
	if (is_service) {
		return !retain && (strcmp(topic, MA_CONTROL_TOPIC) == 0 || is_user_stream(&lv, NULL));
	}
	struct span uid = {user, ulen};
	if (is_inbound(&lv, &uid)) {
		return !retain;
	}
	/* Retained is fine on presence: it is the point of the topic. */
	return is_presence(&lv, &uid);
}

bool ma_can_subscribe(const char *user, bool is_service, const char *topic_filter)
{
	struct levels lv;
	size_t ulen = user_len(user);
	if (ulen == 0 || !split_levels(topic_filter, &lv)) {
		return false;
	}
	if (is_service) {
		for (size_t i = 0; i < sizeof SERVICE_FILTERS / sizeof SERVICE_FILTERS[0]; i++) {
			if (strcmp(topic_filter, SERVICE_FILTERS[i]) == 0) {
				return true;
			}
		}
		return is_inbound(&lv, NULL) || is_presence(&lv, NULL);
	}
	struct span uid = {user, ulen};
	if (is_user_stream(&lv, &uid)) {
		return true;
	}
	/* Presence is readable by everyone: presence/{x}/{d}, presence/{x}/+ and presence/+/+. */
	if (lv.count != 3 || !span_eq(lv.v[0], PRESENCE)) {
		return false;
	}
	struct span who = lv.v[1], device = lv.v[2];
	if (span_eq(who, SINGLE_LEVEL)) {
		return span_eq(device, SINGLE_LEVEL);
	}
	return valid_span(who) && (span_eq(device, SINGLE_LEVEL) || valid_span(device));
}

bool ma_can_receive(const char *user, bool is_service, const char *topic)
{
	struct levels lv;
	size_t ulen = user_len(user);
	if (ulen == 0 || !split_levels(topic, &lv)) {
		return false;
	}
	if (is_service) {
		return is_inbound(&lv, NULL) || is_presence(&lv, NULL);
	}
	struct span uid = {user, ulen};
	return is_user_stream(&lv, &uid) || is_presence(&lv, NULL);
}

bool ma_can_set_will(const char *user, bool is_service, const char *topic, bool retain)
{
	(void)retain; /* allowed either way on presence, the only place a Will may go */
	struct levels lv;
	size_t ulen = user_len(user);
	if (ulen == 0 || is_service || !split_levels(topic, &lv)) {
		return false;
	}
	struct span uid = {user, ulen};
	return is_presence(&lv, &uid);
}
