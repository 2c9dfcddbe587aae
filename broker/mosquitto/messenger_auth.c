/*
 * messenger_auth: the Messenger plugin for Mosquitto 2.0 (plugin API v5). SPEC sections 3, 4, 7.
 * This file holds the plugin's entry points and its event callbacks; each concept they use has
 * a file of its own:
 *
 *   options.c        plugin_opt_* (the list is in options.h)
 *   gateway.c        POST {gateway_url}/mqtt/user with libcurl, its JSON answer, the breaker
 *   cache.c          positive gateway answers, cached for cache_ttl_s (never past expire_at)
 *   clients.c        one state per client id: user, grant, online or offline, subscriptions
 *   connections.c    live connections per user
 *   subscriptions.c  the filters one client holds
 *   revocation.c     revocations on $CONTROL/messenger/v1
 *   ht.c             the hash table under the cache, the states and the connection counts
 *   acl_rules.c      the topic rules of acl/topics.py (pure)
 *   limits.c         the limits of acl/limits.py (pure; numbers in limits_generated.h)
 *
 * - MOSQ_EVT_BASIC_AUTH: MQTT username = user id, password = bearer token. The client id must be
 *   "{user}/{suffix}" (checked here, without a gateway call); the token is checked by the
 *   gateway, or found in the cache; then a member or creator with MA_MAX_CONNECTIONS_PER_USER
 *   live connections under other client ids is refused.
 * - MOSQ_EVT_ACL_CHECK: the topic rules, and the limits: payload per topic class and of a
 *   retained message (publishes and Last Wills), distinct filters per client (subscribes).
 * - MOSQ_EVT_CONTROL on $CONTROL/messenger/v1: revocations from the service account kick the
 *   covered clients, with their Last Will.
 * - MOSQ_EVT_DISCONNECT: the client's state goes offline (clients.h says why it is kept).
 *
 * Mosquitto 2.0 runs plugins on its single network thread, so nothing here locks. The gateway
 * call blocks the broker for at most timeout_ms; after a failure a 1 s circuit breaker refuses
 * new (uncached) connections at once, so a hung gateway cannot stall every CONNECT.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl_rules.h"
#include "limits.h"
#include "plugin.h"
#include "revocation.h"
#include "util.h"

/* acl.tokens.MAX_TOKEN_LENGTH: longer passwords are refused without a gateway call. */
#define MAX_TOKEN_LENGTH 8192

/* A bearer token is a JWT: base64url segments and dots, at most MAX_TOKEN_LENGTH. Anything
 * else is refused here, so the gateway is only ever sent what it can read. */
static bool is_token(const char *s)
{
	if (s == NULL || s[0] == '\0') {
		return false;
	}
	size_t n = 0;
	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];
		if (n >= MAX_TOKEN_LENGTH ||
		    !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.')) {
			return false;
		}
	}
	return true;
}

/* A session restored from persistence has no state until its client reconnects. The service
 * account's (client id "{service_user}/...", enforced at CONNECT) may still receive the
 * service's topics, so the handlers' queued commands are not dropped. */
static bool restored_service_may_read(const struct ma_plugin *pl, const struct mosquitto *client, const char *topic)
{
	const char *username = mosquitto_client_username(client);
	const char *service_user = pl->options.service_user;
	return username != NULL && strcmp(username, service_user) == 0 &&
	       ma_client_id_allowed(service_user, mosquitto_client_id(client)) &&
	       ma_can_receive(service_user, true, topic);
}

/* The per-user connection limit, then the client's state; a MOSQ_EVT_BASIC_AUTH answer. */
static int admit(struct ma_plugin *pl, const struct mosquitto *client, const char *client_id, const char *username,
		 const struct ma_grant *g)
{
	size_t others = ma_connections_live(&pl->clients.connections, username);
	const struct ma_client_state *same = ma_state_find(&pl->clients, client_id);
	if (same && same->online && strcmp(same->user, username) == 0 && others > 0) {
		others--; /* this CONNECT takes that connection over */
	}
	if (!ma_connection_allowed(g->is_service, others)) {
		mosquitto_log_printf(MOSQ_LOG_INFO,
				     LOG_PREFIX "refused client %s from %s: user %s has %zu live connections (limit %u)",
				     client_id, ma_client_address(client), username, others, MA_MAX_CONNECTIONS_PER_USER);
		return MOSQ_ERR_AUTH;
	}
	return ma_state_set(&pl->clients, client, client_id, username, g) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	(void)event;
	struct ma_plugin *pl = userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *username = ed->username;
	const char *password = ed->password;

	ma_forget_ended_sessions(&pl->clients);
	if (username == NULL || !is_token(password)) {
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "refused a client from %s: no username, or a password that is not a bearer token",
				     ma_client_address(ed->client));
		return MOSQ_ERR_AUTH;
	}
	if (!ma_client_id_allowed(username, client_id)) {
		/* Neither value is logged: they failed validation, so may hold anything. */
		mosquitto_log_printf(MOSQ_LOG_INFO,
				     LOG_PREFIX "refused a client from %s: the client id must be \"{username}/{device}\"",
				     ma_client_address(ed->client));
		return MOSQ_ERR_AUTH;
	}

	const struct ma_grant *cached = ma_cache_get(&pl->cache, username, password);
	if (cached) {
		int rc = admit(pl, ed->client, client_id, username, cached);
		if (rc == MOSQ_ERR_SUCCESS) {
			mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "client %s authenticated from the cache", client_id);
		}
		return rc;
	}
	if (ma_gateway_breaker_open(&pl->gateway)) {
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "refused client %s: gateway unreachable", client_id);
		return MOSQ_ERR_AUTH;
	}

	struct ma_grant g = {0};
	char why[256] = "";
	enum ma_verdict v = ma_gateway_ask(&pl->gateway, username, password, client_id, &g, why, sizeof why);
	if (v == MA_VERDICT_FAILURE) {
		ma_grant_clear(&g);
		return MOSQ_ERR_AUTH;
	}
	if (v == MA_VERDICT_DENY) {
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "refused client %s from %s (%s)", client_id,
				     ma_client_address(ed->client), why);
		ma_grant_clear(&g);
		return MOSQ_ERR_AUTH;
	}
	ma_cache_put(&pl->cache, username, password, &g);
	int rc = admit(pl, ed->client, client_id, username, &g);
	ma_grant_clear(&g);
	return rc;
}

/* A publish or Last Will of `size` bytes: within the limit of its topic class (and of a
 * retained message)? */
static bool payload_admitted(const struct ma_client_state *st, const struct mosquitto_evt_acl_check *ed)
{
	if (ma_payload_allowed(ed->topic, ed->payloadlen, ed->retain)) {
		return true;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "dropped a %" PRIu32 "-byte%s publish from %s on %s (limit %zu, retained %u)",
			     ed->payloadlen, ed->retain ? " retained" : "", st->client_id, ed->topic,
			     ma_payload_limit(ma_topic_class(ed->topic)), MA_MAX_RETAINED_BYTES);
	return false;
}

/* One filter of a SUBSCRIBE the topic rules allow: within the client's limit? */
static bool subscription_admitted(struct ma_client_state *st, const struct mosquitto *client, const char *filter)
{
	if (!st->filters_checked) {
		/* The first SUBSCRIBE since this CONNECT: the filters carried over from the last
		 * state are the session's only if the broker resumed it (a clean start, or an MQTT 5
		 * session that expired at its disconnect, has no subscriptions). */
		st->filters_checked = true;
		if (mosquitto_client_sub_count(client) == 0) {
			ma_filters_clear(&st->filters);
		}
	}
	bool held = ma_filters_has(&st->filters, filter);
	if (!ma_subscription_allowed(st->filters.count, held)) {
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "refused a subscription of %s to %s: it holds %zu filters (limit %u)",
				     st->client_id, filter, st->filters.count, MA_MAX_SUBSCRIPTIONS_PER_CLIENT);
		return false;
	}
	return held || ma_filters_add(&st->filters, filter);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	(void)event;
	struct ma_plugin *pl = userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	struct ma_client_state *st = ma_state_find(&pl->clients, mosquitto_client_id(ed->client));
	if (st == NULL) {
		if (ed->access == MOSQ_ACL_READ && restored_service_may_read(pl, ed->client, ed->topic)) {
			return MOSQ_ERR_SUCCESS;
		}
#ifdef MESSENGER_AUTH_TRACE
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "acl %s access=%d topic=%s: no state -> deny",
				     mosquitto_client_id(ed->client), ed->access, ed->topic);
#endif
		return MOSQ_ERR_ACL_DENIED;
	}
	bool ok;
	switch (ed->access) {
	case MOSQ_ACL_WRITE:
		if (!st->online || st->client != ed->client) {
			/* A disconnected (or taken-over) client publishes nothing but its Will. */
			ok = ma_can_set_will(st->user, st->is_service, ed->topic, ed->retain);
		} else {
			ok = ma_can_publish(st->user, st->is_service, ed->topic, ed->retain);
		}
		ok = ok && payload_admitted(st, ed);
		break;
	case MOSQ_ACL_SUBSCRIBE:
		ok = ma_can_subscribe(st->user, st->is_service, ed->topic) && subscription_admitted(st, ed->client, ed->topic);
		break;
	case MOSQ_ACL_READ:
		ok = ma_can_receive(st->user, st->is_service, ed->topic);
		break;
	case MOSQ_ACL_UNSUBSCRIBE:
		ma_filters_remove(&st->filters, ed->topic);
		ok = true;
		break;
	default:
		ok = false;
		break;
	}
#ifdef MESSENGER_AUTH_TRACE
	mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "acl %s access=%d topic=%s retain=%d online=%d same=%d -> %s",
			     st->client_id, ed->access, ed->topic, ed->retain, st->online, st->client == ed->client,
			     ok ? "allow" : "deny");
#endif
	return ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	(void)event;
	struct ma_plugin *pl = userdata;
	struct mosquitto_evt_disconnect *ed = event_data;
	ma_forget_ended_sessions(&pl->clients);
	struct ma_client_state *st = ma_state_find(&pl->clients, mosquitto_client_id(ed->client));
	/* After a takeover the state already belongs to the new connection. */
	if (st && st->client == ed->client) {
		bool clean = mosquitto_client_protocol_version(ed->client) != 5 && mosquitto_client_clean_session(ed->client);
		ma_state_set_offline(&pl->clients, st, clean);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_control(int event, void *event_data, void *userdata)
{
	(void)event;
	struct ma_plugin *pl = userdata;
	struct mosquitto_evt_control *ed = event_data;
	ma_forget_ended_sessions(&pl->clients);
	const struct ma_client_state *st = ma_state_find(&pl->clients, mosquitto_client_id(ed->client));
	/* Mosquitto ACL-checks the PUBLISH (MOSQ_ACL_WRITE) before this event, and only the
	 * service may publish here; checked again because a kick is not to be left to one rule. */
	if (st == NULL || !st->online || st->client != ed->client || !st->is_service) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a control message from %s: not the service account",
				     st ? st->client_id : ma_client_address(ed->client));
		return MOSQ_ERR_SUCCESS;
	}
	ma_revocation_apply(pl, st->client_id, ed->payload, ed->payloadlen);
	return MOSQ_ERR_SUCCESS;
}

/* ------------------------------------------------------------------------------------------
 * Plugin entry points
 * ------------------------------------------------------------------------------------------ */

static void plugin_free(struct ma_plugin *pl)
{
	if (pl == NULL) {
		return;
	}
	ma_clients_free(&pl->clients);
	ma_cache_free(&pl->cache);
	ma_gateway_cleanup(&pl->gateway);
	ma_options_free(&pl->options);
	free(pl);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

static const struct {
	int event;
	MOSQ_FUNC_generic_callback cb;
	const char *event_data;
} CALLBACKS[] = {
	{MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL},
	{MOSQ_EVT_ACL_CHECK, on_acl_check, NULL},
	{MOSQ_EVT_CONTROL, on_control, MA_CONTROL_TOPIC},
	{MOSQ_EVT_DISCONNECT, on_disconnect, NULL},
};
#define CALLBACK_COUNT (sizeof CALLBACKS / sizeof CALLBACKS[0])

static void unregister_callbacks(struct ma_plugin *pl, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		mosquitto_callback_unregister(pl->id, CALLBACKS[i].event, CALLBACKS[i].cb, CALLBACKS[i].event_data);
	}
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
			  int option_count)
{
	struct ma_plugin *pl = calloc(1, sizeof *pl);
	if (pl == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	pl->id = identifier;
	if (!ma_options_read(&pl->options, options, option_count)) {
		plugin_free(pl);
		return MOSQ_ERR_INVAL;
	}
	if (!ma_clients_init(&pl->clients, pl->options.offline_max) ||
	    !ma_cache_init(&pl->cache, pl->options.cache_ttl_s, pl->options.cache_size) ||
	    !ma_gateway_init(&pl->gateway, &pl->options)) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot start (out of memory or libcurl failed)");
		plugin_free(pl);
		return MOSQ_ERR_UNKNOWN;
	}
	for (size_t i = 0; i < CALLBACK_COUNT; i++) {
		int rc = mosquitto_callback_register(identifier, CALLBACKS[i].event, CALLBACKS[i].cb, CALLBACKS[i].event_data,
						     pl);
		if (rc != MOSQ_ERR_SUCCESS) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot register callback %d: %s", CALLBACKS[i].event,
					     mosquitto_strerror(rc));
			unregister_callbacks(pl, i);
			plugin_free(pl);
			return rc;
		}
	}
	*userdata = pl;
	mosquitto_log_printf(MOSQ_LOG_INFO,
			     LOG_PREFIX "gateway %s, timeout %ld ms, token cache %ld s x %ld entries%s; "
					"limits: %u connections per user, %u subscriptions per client, %u-byte retained",
			     pl->options.url, pl->options.timeout_ms, pl->options.cache_ttl_s, pl->options.cache_size,
			     pl->options.secret_header ? "" : " (no gateway_secret set)", MA_MAX_CONNECTIONS_PER_USER,
			     MA_MAX_SUBSCRIPTIONS_PER_CLIENT, MA_MAX_RETAINED_BYTES);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)options;
	(void)option_count;
	struct ma_plugin *pl = userdata;
	if (pl) {
		unregister_callbacks(pl, CALLBACK_COUNT);
		plugin_free(pl);
	}
	return MOSQ_ERR_SUCCESS;
}
