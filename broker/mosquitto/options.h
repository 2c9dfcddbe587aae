/*
 * The plugin's options (plugin_opt_* in mosquitto.conf; docker-entrypoint.sh renders them):
 *
 *   plugin_opt_gateway_url http://127.0.0.1:8081      (required)
 *   plugin_opt_gateway_secret ...                      (X-Gateway-Secret header)
 *   plugin_opt_timeout_ms 1000                         (connect and total, per gateway call)
 *   plugin_opt_cache_ttl_s 30                          (0 disables the cache)
 *   plugin_opt_cache_size 10000                        (cached tokens)
 *   plugin_opt_offline_max 10000                       (offline sessions remembered)
 *   plugin_opt_service_user messenger-service          (MESSENGER_SERVICE_USER)
 *
 * The limits (limits.h) are not options: they are compiled in from acl/limits.py.
 */
#ifndef MESSENGER_OPTIONS_H
#define MESSENGER_OPTIONS_H

#include <stdbool.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

struct ma_options {
	char *url;           /* gateway_url + "/mqtt/user" */
	char *secret_header; /* "X-Gateway-Secret: ...", or NULL without gateway_secret */
	long timeout_ms;
	long cache_ttl_s;
	long cache_size;
	long offline_max;
	char *service_user;
};

/* Read `options`, logging what is wrong; false if the plugin cannot start with them. */
bool ma_options_read(struct ma_options *o, struct mosquitto_opt *options, int option_count);

void ma_options_free(struct ma_options *o);

#endif /* MESSENGER_OPTIONS_H */
