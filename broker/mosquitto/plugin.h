/* The plugin's state, one per mosquitto_plugin_init(): what each part of it keeps. */
#ifndef MESSENGER_PLUGIN_H
#define MESSENGER_PLUGIN_H

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "cache.h"
#include "clients.h"
#include "gateway.h"
#include "options.h"

struct ma_plugin {
	mosquitto_plugin_id_t *id;
	struct ma_options options;
	struct ma_gateway gateway;
	struct ma_cache cache;
	struct ma_clients clients;
};

#endif /* MESSENGER_PLUGIN_H */
