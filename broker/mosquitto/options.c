/* Reading plugin_opt_* (options.h). */
#include "options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "acl_rules.h"
#include "util.h"

#define GATEWAY_PATH "/mqtt/user"

#define DEFAULT_TIMEOUT_MS 1000L
#define DEFAULT_CACHE_TTL_S 30L
#define DEFAULT_CACHE_SIZE 10000L
#define DEFAULT_OFFLINE_MAX 10000L
#define DEFAULT_SERVICE_USER "messenger-service"

static bool parse_long_option(const char *key, const char *value, long min, long max, long *out)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < min || v > max) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_%s must be an integer from %ld to %ld, not \"%s\"",
				     key, min, max, value);
		return false;
	}
	*out = v;
	return true;
}

static bool has_control_chars(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			return true;
		}
	}
	return false;
}

bool ma_options_read(struct ma_options *o, struct mosquitto_opt *options, int option_count)
{
	const char *url = NULL, *secret = NULL, *service_user = DEFAULT_SERVICE_USER;
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
	o->cache_ttl_s = DEFAULT_CACHE_TTL_S;
	o->cache_size = DEFAULT_CACHE_SIZE;
	o->offline_max = DEFAULT_OFFLINE_MAX;
	for (int i = 0; i < option_count; i++) {
		const char *k = options[i].key, *v = options[i].value ? options[i].value : "";
		bool ok = true;
		if (strcmp(k, "gateway_url") == 0) {
			url = v;
		} else if (strcmp(k, "gateway_secret") == 0) {
			secret = v;
		} else if (strcmp(k, "timeout_ms") == 0) {
			ok = parse_long_option(k, v, 1, 60000, &o->timeout_ms);
		} else if (strcmp(k, "cache_ttl_s") == 0) {
			ok = parse_long_option(k, v, 0, 86400, &o->cache_ttl_s);
		} else if (strcmp(k, "cache_size") == 0) {
			ok = parse_long_option(k, v, 1, 10000000, &o->cache_size);
		} else if (strcmp(k, "offline_max") == 0) {
			ok = parse_long_option(k, v, 1, 10000000, &o->offline_max);
		} else if (strcmp(k, "service_user") == 0) {
			service_user = v;
		} else {
			mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "unknown option plugin_opt_%s ignored", k);
		}
		if (!ok) {
			return false;
		}
	}
	if (url == NULL || url[0] == '\0') {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_gateway_url is required "
							 "(the Messenger API, e.g. http://127.0.0.1:8081)");
		return false;
	}
	if ((strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) || has_control_chars(url)) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_gateway_url must be an http:// or https:// URL");
		return false;
	}
	if (!ma_is_valid_user_id(service_user)) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_service_user must be a user id");
		return false;
	}
	o->service_user = strdup(service_user);
	if (o->service_user == NULL) {
		return false;
	}
	size_t len = strlen(url);
	while (len > 0 && url[len - 1] == '/') {
		len--; /* "http://api:8081/" + "/mqtt/user" */
	}
	o->url = malloc(len + sizeof GATEWAY_PATH);
	if (o->url == NULL) {
		return false;
	}
	memcpy(o->url, url, len);
	memcpy(o->url + len, GATEWAY_PATH, sizeof GATEWAY_PATH);
	if (secret && secret[0] != '\0') {
		if (has_control_chars(secret)) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_gateway_secret must not hold control characters");
			return false;
		}
		static const char name[] = "X-Gateway-Secret: ";
		o->secret_header = malloc(sizeof name + strlen(secret));
		if (o->secret_header == NULL) {
			return false;
		}
		memcpy(o->secret_header, name, sizeof name - 1);
		strcpy(o->secret_header + sizeof name - 1, secret);
	}
	return true;
}

void ma_options_free(struct ma_options *o)
{
	free(o->url);
	free(o->service_user);
	free(o->secret_header);
	o->url = o->service_user = o->secret_header = NULL;
}
