/*
 * Client states: one per client id that authenticated, with what its grant says (user, role,
 * jti, iat), whether it is online, the filters it holds (subscriptions.h), and the live
 * connections per user they add up to (connections.h).
 *
 * Why a state outlives MOSQ_EVT_DISCONNECT. Measured on 2.0.11:
 * - A Last Will is ACL-checked (MOSQ_ACL_WRITE) only when it is sent, not at CONNECT, and
 *   after MOSQ_EVT_DISCONNECT has already been delivered for the client (on a takeover, the
 *   old connection's Will is checked after the new connection authenticated). A WRITE check
 *   for a client whose state is offline, or for a context other than the one that last
 *   authenticated with that client id, can therefore only be a Will: it is judged by
 *   ma_can_set_will(). A Will on a foreign topic is thus never published, but the CONNECT
 *   that carries it is not refused (the v5 plugin API does not show the Will at CONNECT).
 * - Messages for an offline persistent session are ACL-checked (MOSQ_ACL_READ) when they
 *   are queued, so dropping the state at disconnect would silently drop them.
 * Offline states are replaced when the client id authenticates again, and bounded by
 * offline_max (oldest forgotten first); an MQTT 3.x clean session has nothing to keep and
 * is forgotten at the next event, once its Will has gone out. The service account's states
 * (the handlers' persistent sessions, which hold acknowledged commands) are never evicted.
 * A session restored from Mosquitto's persistence file after a restart has no state until
 * its client reconnects (messenger_auth.c lets the service's read its topics meanwhile).
 */
#ifndef MESSENGER_CLIENTS_H
#define MESSENGER_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>

#include <mosquitto.h>

#include "connections.h"
#include "gateway.h"
#include "ht.h"
#include "subscriptions.h"

struct ma_client_state;

/* Offline client states, oldest first. */
struct ma_state_list {
	struct ma_client_state *oldest, *newest;
	size_t count;
};

/* One client id that authenticated. */
struct ma_client_state {
	struct ma_ht_node node; /* first */
	char *client_id;
	const struct mosquitto *client; /* the context that authenticated last; compared only */
	char *user;
	char *jti;
	bool has_iat;
	double iat;
	bool is_service;
	bool online;
	struct ma_filters filters;            /* the session's subscriptions (subscriptions.h) */
	bool filters_checked;                 /* against the broker's, since this CONNECT */
	struct ma_state_list *list;           /* when offline: offline or ended */
	struct ma_client_state *prev, *next; /* in `list`, oldest first */
};

struct ma_clients {
	struct ma_ht table; /* by client id */
	struct ma_state_list offline; /* sessions that may live on (bounded by offline_max) */
	struct ma_state_list ended;   /* MQTT 3.x clean sessions, forgotten at the next event */
	long offline_max;
	struct ma_connections connections; /* online states per user */
};

bool ma_clients_init(struct ma_clients *cs, long offline_max);

void ma_clients_free(struct ma_clients *cs);

struct ma_client_state *ma_state_find(struct ma_clients *cs, const char *client_id);

/* Forget the MQTT 3.x clean sessions that went offline since the last event. Their Will (the
 * only thing the state was still needed for) went out right after MOSQ_EVT_DISCONNECT, within
 * the same broker call. */
void ma_forget_ended_sessions(struct ma_clients *cs);

/* Record (or replace, on re-authentication or takeover) the state of `client_id`, online. The
 * replaced state's subscriptions carry over, in case the broker resumes its session (the first
 * SUBSCRIBE tells: messenger_auth.c). False when out of memory (nothing changed). */
bool ma_state_set(struct ma_clients *cs, const struct mosquitto *client, const char *client_id, const char *user,
		  const struct ma_grant *g);

/* The client went away; `clean`: an MQTT 3.x clean session (its session, and subscriptions,
 * end with it). */
void ma_state_set_offline(struct ma_clients *cs, struct ma_client_state *st, bool clean);

#endif /* MESSENGER_CLIENTS_H */
