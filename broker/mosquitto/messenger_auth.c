/*
 * messenger_auth: the Messenger plugin for Mosquitto 2.0 (plugin API v5). SPEC sections 3, 4, 7.
 *
 * - MOSQ_EVT_BASIC_AUTH: MQTT username = user id, password = bearer token. The client id must be
 *   "{user}/{suffix}" (checked here, without a gateway call); the token is checked by the
 *   gateway (POST {gateway_url}/mqtt/user), whose positive answers are cached for
 *   cache_ttl_s, never past the token's expire_at.
 * - MOSQ_EVT_ACL_CHECK: the topic rules of acl/topics.py, ported in acl_rules.c.
 * - MOSQ_EVT_CONTROL on $CONTROL/messenger/v1: revocations from the service account (see
 *   acl/revocation.py) kick the covered clients, with their Last Will.
 * - MOSQ_EVT_DISCONNECT: the client's session state is kept "offline" (see below).
 *
 * mosquitto.conf:
 *
 *   plugin /usr/lib/messenger/messenger_auth.so
 *   plugin_opt_gateway_url http://127.0.0.1:8081      (required)
 *   plugin_opt_gateway_secret ...                      (X-Gateway-Secret header)
 *   plugin_opt_timeout_ms 1000                         (connect and total, per gateway call)
 *   plugin_opt_cache_ttl_s 30                          (0 disables the cache)
 *   plugin_opt_cache_size 10000                        (cached tokens)
 *   plugin_opt_offline_max 10000                       (offline sessions remembered)
 *   plugin_opt_service_user messenger-service          (MESSENGER_SERVICE_USER)
 *
 * Mosquitto 2.0 runs plugins on its single network thread, so nothing here locks. The gateway
 * call blocks the broker for at most timeout_ms; after a failure a 1 s circuit breaker refuses
 * new (uncached) connections at once, so a hung gateway cannot stall every CONNECT.
 *
 * Why the client state outlives MOSQ_EVT_DISCONNECT. Measured on 2.0.11:
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
 * its client reconnects: one whose client id is "{service_user}/..." (a prefix enforced at
 * every CONNECT) keeps receiving the service's topics meanwhile; other users' messages are
 * refused until they reconnect (the database still has them for "sync").
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* strdup, strnlen, clock_gettime */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "acl_rules.h"

#define LOG_PREFIX "messenger-auth: "
#define GATEWAY_PATH "/mqtt/user"

#define DEFAULT_TIMEOUT_MS 1000L
#define DEFAULT_CACHE_TTL_S 30L
#define DEFAULT_CACHE_SIZE 10000L
#define DEFAULT_OFFLINE_MAX 10000L
#define DEFAULT_SERVICE_USER "messenger-service"
/* How long new connections are refused without asking, after a gateway failure. */
#define BREAKER_OPEN_MS 1000
/* acl.tokens.MAX_TOKEN_LENGTH: longer passwords are refused without a gateway call. */
#define MAX_TOKEN_LENGTH 8192
/* acl.revocation.MAX_JTI_LENGTH. */
#define MAX_JTI_LENGTH 128
/* A gateway answer is a few hundred bytes; anything much larger is not one. */
#define MAX_RESPONSE_BYTES (64 * 1024)
/* Control messages are tiny; MAX_PAYLOAD_BYTES of the project. */
#define MAX_CONTROL_BYTES (64 * 1024)

/* ------------------------------------------------------------------------------------------
 * A small intrusive hash table: FNV-1a, chaining, doubling when the load passes 1.
 * Entries embed `struct ht_node` as their first member; callers compare keys themselves.
 * ------------------------------------------------------------------------------------------ */

struct ht_node {
	struct ht_node *next;
	uint64_t hash;
};

struct ht {
	struct ht_node **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
	uint64_t seed; /* random: client ids are chosen by clients, so keep chains unpredictable */
};

#define FNV_OFFSET UINT64_C(14695981039346656037)
#define FNV_PRIME UINT64_C(1099511628211)

static uint64_t fnv1a(uint64_t h, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		h ^= *p;
		h *= FNV_PRIME;
	}
	return h;
}

static uint64_t random_seed(void)
{
	uint64_t seed = 0;
	FILE *f = fopen("/dev/urandom", "rb");
	if (f) {
		if (fread(&seed, sizeof seed, 1, f) != 1) {
			seed = 0;
		}
		fclose(f);
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return seed ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
}

static bool ht_init(struct ht *t, size_t nbuckets)
{
	t->seed = FNV_OFFSET ^ random_seed();
	t->buckets = calloc(nbuckets, sizeof *t->buckets);
	t->nbuckets = t->buckets ? nbuckets : 0;
	t->count = 0;
	return t->buckets != NULL;
}

static struct ht_node *ht_first(const struct ht *t, uint64_t hash)
{
	return t->buckets[hash & (t->nbuckets - 1)];
}

static void ht_grow(struct ht *t)
{
	size_t n = t->nbuckets * 2;
	struct ht_node **b = calloc(n, sizeof *b);
	if (b == NULL) {
		return; /* longer chains, still correct */
	}
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct ht_node *node = t->buckets[i];
		while (node) {
			struct ht_node *next = node->next;
			node->next = b[node->hash & (n - 1)];
			b[node->hash & (n - 1)] = node;
			node = next;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

static void ht_insert(struct ht *t, struct ht_node *node, uint64_t hash)
{
	if (t->count >= t->nbuckets) {
		ht_grow(t);
	}
	node->hash = hash;
	struct ht_node **head = &t->buckets[hash & (t->nbuckets - 1)];
	node->next = *head;
	*head = node;
	t->count++;
}

static void ht_unlink(struct ht *t, struct ht_node *node)
{
	struct ht_node **pp = &t->buckets[node->hash & (t->nbuckets - 1)];
	while (*pp && *pp != node) {
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = node->next;
		t->count--;
	}
}

/* ------------------------------------------------------------------------------------------
 * State
 * ------------------------------------------------------------------------------------------ */

/* What a valid token says about its holder (from the gateway or the cache). */
struct grant {
	bool is_service;
	char *jti; /* NULL when the token has none */
	bool has_iat;
	double iat;
	bool has_exp;
	double expire_at;
};

struct client_state;

/* Offline client states, oldest first. */
struct state_list {
	struct client_state *oldest, *newest;
	size_t count;
};

/* One client id that authenticated. */
struct client_state {
	struct ht_node node; /* first */
	char *client_id;
	const struct mosquitto *client; /* the context that authenticated last; compared only */
	char *user;
	char *jti;
	bool has_iat;
	double iat;
	bool is_service;
	bool online;
	struct state_list *list; /* when offline: pl->offline or pl->ended */
	struct client_state *prev, *next; /* in `list`, oldest first */
};

/* One cached positive answer, keyed on (username, password). */
struct cache_entry {
	struct ht_node node; /* first */
	char *username;
	char *password;
	struct grant grant;
	int64_t deadline_ms; /* monotonic: inserted + cache_ttl_s */
	struct cache_entry *older, *newer;
};

struct response_buf {
	char *data;
	size_t len;
	bool overflow;
};

struct plugin {
	mosquitto_plugin_id_t *id;
	/* options */
	char *url;
	char *secret_header;
	long timeout_ms;
	long cache_ttl_s;
	long cache_size;
	long offline_max;
	char *service_user;
	/* gateway */
	CURL *curl;
	struct curl_slist *headers;
	char curl_err[CURL_ERROR_SIZE];
	bool gateway_down;
	int64_t breaker_until_ms;
	unsigned long breaker_refusals;
	/* tables */
	struct ht clients;
	struct state_list offline; /* sessions that may live on (bounded by offline_max) */
	struct state_list ended;   /* MQTT 3.x clean sessions, forgotten at the next event */
	struct ht cache;
	struct cache_entry *cache_oldest, *cache_newest;
	bool curl_global;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static bool str_eq_nullable(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static const char *client_address(const struct mosquitto *client)
{
	const char *a = client ? mosquitto_client_address(client) : NULL;
	return a ? a : "?";
}

/* ------------------------------------------------------------------------------------------
 * Client states
 * ------------------------------------------------------------------------------------------ */

static struct client_state *state_find(struct plugin *pl, const char *client_id)
{
	if (client_id == NULL) {
		return NULL;
	}
	uint64_t h = fnv1a(pl->clients.seed, client_id);
	for (struct ht_node *n = ht_first(&pl->clients, h); n; n = n->next) {
		struct client_state *st = (struct client_state *)n;
		if (n->hash == h && strcmp(st->client_id, client_id) == 0) {
			return st;
		}
	}
	return NULL;
}

static void list_unlink(struct client_state *st)
{
	struct state_list *l = st->list;
	if (l == NULL) {
		return;
	}
	if (st->prev) {
		st->prev->next = st->next;
	} else {
		l->oldest = st->next;
	}
	if (st->next) {
		st->next->prev = st->prev;
	} else {
		l->newest = st->prev;
	}
	st->prev = st->next = NULL;
	st->list = NULL;
	l->count--;
}

static void list_append(struct state_list *l, struct client_state *st)
{
	st->list = l;
	st->next = NULL;
	st->prev = l->newest;
	if (l->newest) {
		l->newest->next = st;
	} else {
		l->oldest = st;
	}
	l->newest = st;
	l->count++;
}

static void state_free(struct client_state *st)
{
	free(st->client_id);
	free(st->user);
	free(st->jti);
	free(st);
}

static void state_remove(struct plugin *pl, struct client_state *st)
{
	list_unlink(st);
	ht_unlink(&pl->clients, &st->node);
	state_free(st);
}

/* Forget the MQTT 3.x clean sessions that went offline since the last event. Their Will (the
 * only thing the state was still needed for) went out right after MOSQ_EVT_DISCONNECT, within
 * the same broker call. */
static void forget_ended_sessions(struct plugin *pl)
{
	while (pl->ended.oldest) {
		state_remove(pl, pl->ended.oldest);
	}
}

/* Record (or replace, on re-authentication or takeover) the state of a client id. */
static bool state_set(struct plugin *pl, const struct mosquitto *client, const char *client_id, const char *user,
		      const struct grant *g)
{
	struct client_state *st = calloc(1, sizeof *st);
	if (st == NULL) {
		return false;
	}
	st->client_id = strdup(client_id);
	st->user = strdup(user);
	st->jti = dup_or_null(g->jti);
	if (st->client_id == NULL || st->user == NULL || (g->jti && st->jti == NULL)) {
		state_free(st);
		return false;
	}
	st->client = client;
	st->is_service = g->is_service;
	st->has_iat = g->has_iat;
	st->iat = g->iat;
	st->online = true;
	struct client_state *old = state_find(pl, client_id);
	if (old) {
		state_remove(pl, old);
	}
	ht_insert(&pl->clients, &st->node, fnv1a(pl->clients.seed, client_id));
	return true;
}

static void state_set_offline(struct plugin *pl, struct client_state *st, bool clean)
{
	if (!st->online) {
		return;
	}
	st->online = false;
	if (clean) {
		list_append(&pl->ended, st);
		return;
	}
	if (st->is_service) {
		return; /* a handler's session holds acknowledged commands: never forgotten */
	}
	list_append(&pl->offline, st);
	while (pl->offline.count > (size_t)pl->offline_max && pl->offline.oldest != st) {
		state_remove(pl, pl->offline.oldest);
	}
}

/* ------------------------------------------------------------------------------------------
 * Token cache
 * ------------------------------------------------------------------------------------------ */

static uint64_t cache_hash(const struct plugin *pl, const char *username, const char *password)
{
	/* The NUL between the two keeps ("ab", "c") and ("a", "bc") apart. */
	uint64_t h = fnv1a(pl->cache.seed, username);
	h = (h ^ 0) * FNV_PRIME;
	return fnv1a(h, password);
}

static void grant_clear(struct grant *g)
{
	free(g->jti);
	g->jti = NULL;
}

static void cache_remove(struct plugin *pl, struct cache_entry *e)
{
	if (e->older) {
		e->older->newer = e->newer;
	} else {
		pl->cache_oldest = e->newer;
	}
	if (e->newer) {
		e->newer->older = e->older;
	} else {
		pl->cache_newest = e->older;
	}
	ht_unlink(&pl->cache, &e->node);
	free(e->username);
	free(e->password);
	grant_clear(&e->grant);
	free(e);
}

static bool cache_entry_live(const struct cache_entry *e, int64_t now_ms, double now_wall)
{
	return now_ms < e->deadline_ms && !(e->grant.has_exp && now_wall >= e->grant.expire_at);
}

/* The cached grant for (username, password), or NULL; an expired entry is dropped. */
static const struct grant *cache_get(struct plugin *pl, const char *username, const char *password)
{
	if (pl->cache_ttl_s == 0) {
		return NULL;
	}
	uint64_t h = cache_hash(pl, username, password);
	for (struct ht_node *n = ht_first(&pl->cache, h); n; n = n->next) {
		struct cache_entry *e = (struct cache_entry *)n;
		if (n->hash == h && strcmp(e->username, username) == 0 && strcmp(e->password, password) == 0) {
			if (cache_entry_live(e, mono_ms(), wall_s())) {
				return &e->grant;
			}
			cache_remove(pl, e);
			return NULL;
		}
	}
	return NULL;
}

static void cache_put(struct plugin *pl, const char *username, const char *password, const struct grant *g)
{
	if (pl->cache_ttl_s == 0) {
		return;
	}
	int64_t now = mono_ms();
	double wall = wall_s();
	if (g->has_exp && wall >= g->expire_at) {
		return;
	}
	if (pl->cache.count >= (size_t)pl->cache_size) {
		/* Expired entries first; entries are in insertion order with one TTL, so the
		 * expired-by-TTL ones are all at the old end. */
		while (pl->cache_oldest && !cache_entry_live(pl->cache_oldest, now, wall)) {
			cache_remove(pl, pl->cache_oldest);
		}
		while (pl->cache.count >= (size_t)pl->cache_size && pl->cache_oldest) {
			cache_remove(pl, pl->cache_oldest);
		}
	}
	struct cache_entry *e = calloc(1, sizeof *e);
	if (e == NULL) {
		return;
	}
	e->username = strdup(username);
	e->password = strdup(password);
	e->grant = *g;
	e->grant.jti = dup_or_null(g->jti);
	if (e->username == NULL || e->password == NULL || (g->jti && e->grant.jti == NULL)) {
		free(e->username);
		free(e->password);
		free(e->grant.jti);
		free(e);
		return;
	}
	e->deadline_ms = now + (int64_t)pl->cache_ttl_s * 1000;
	e->older = pl->cache_newest;
	if (pl->cache_newest) {
		pl->cache_newest->newer = e;
	} else {
		pl->cache_oldest = e;
	}
	pl->cache_newest = e;
	ht_insert(&pl->cache, &e->node, cache_hash(pl, username, password));
}

/* ------------------------------------------------------------------------------------------
 * Gateway
 * ------------------------------------------------------------------------------------------ */

enum verdict { VERDICT_ALLOW, VERDICT_DENY, VERDICT_FAILURE };

static size_t on_curl_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct response_buf *buf = userdata;
	size_t n = size * nmemb;
	if (buf->len + n > MAX_RESPONSE_BYTES) {
		buf->overflow = true;
		return 0; /* aborts the transfer */
	}
	char *grown = realloc(buf->data, buf->len + n + 1);
	if (grown == NULL) {
		buf->overflow = true;
		return 0;
	}
	buf->data = grown;
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return n;
}

static bool json_optional_number(const cJSON *obj, const char *name, bool *has, double *value)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
	*has = false;
	if (item == NULL || cJSON_IsNull(item)) {
		return true;
	}
	if (!cJSON_IsNumber(item)) {
		return false;
	}
	*has = true;
	*value = item->valuedouble;
	return true;
}

/* Log lines stay one line: control characters (from a gateway's reason) become '?'. */
static void make_printable(char *s)
{
	for (unsigned char *p = (unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			*p = '?';
		}
	}
}

/* Read the gateway's answer. `why` gets a short, log-safe explanation. */
static enum verdict parse_answer(const char *body, const char *username, struct grant *g, char *why, size_t why_len)
{
	cJSON *root = cJSON_Parse(body);
	enum verdict v = VERDICT_FAILURE;
	if (root == NULL || !cJSON_IsObject(root)) {
		snprintf(why, why_len, "answer is not a JSON object");
		goto done;
	}
	const cJSON *ok = cJSON_GetObjectItemCaseSensitive(root, "ok");
	const cJSON *result = cJSON_GetObjectItemCaseSensitive(root, "result");
	if (!cJSON_IsBool(ok) || !cJSON_IsString(result)) {
		snprintf(why, why_len, "answer lacks ok/result");
		goto done;
	}
	if (!cJSON_IsTrue(ok) || strcmp(result->valuestring, "allow") != 0) {
		const cJSON *reason = cJSON_GetObjectItemCaseSensitive(root, "reason");
		snprintf(why, why_len, "gateway: %.200s", cJSON_IsString(reason) ? reason->valuestring : "denied");
		v = VERDICT_DENY;
		goto done;
	}
	const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
	const cJSON *role = cJSON_GetObjectItemCaseSensitive(root, "role");
	const cJSON *jti = cJSON_GetObjectItemCaseSensitive(root, "jti");
	if (!cJSON_IsString(user) || strcmp(user->valuestring, username) != 0) {
		snprintf(why, why_len, "gateway allowed another user than the username");
		v = VERDICT_DENY;
		goto done;
	}
	if (!cJSON_IsString(role) || (strcmp(role->valuestring, "member") != 0 &&
				       strcmp(role->valuestring, "creator") != 0 &&
				       strcmp(role->valuestring, "service") != 0)) {
		snprintf(why, why_len, "answer has no known role");
		goto done;
	}
	if (!(jti == NULL || cJSON_IsNull(jti) || cJSON_IsString(jti)) ||
	    !json_optional_number(root, "iat", &g->has_iat, &g->iat) ||
	    !json_optional_number(root, "expire_at", &g->has_exp, &g->expire_at)) {
		snprintf(why, why_len, "answer has a malformed jti/iat/expire_at");
		goto done;
	}
	g->is_service = strcmp(role->valuestring, "service") == 0;
	if (cJSON_IsString(jti)) {
		g->jti = strdup(jti->valuestring);
		if (g->jti == NULL) {
			snprintf(why, why_len, "out of memory");
			goto done;
		}
	}
	v = VERDICT_ALLOW;
done:
	cJSON_Delete(root);
	return v;
}

static enum verdict ask_gateway(struct plugin *pl, const char *username, const char *password, const char *client_id,
				struct grant *g, char *why, size_t why_len)
{
	struct response_buf buf = {0};
	enum verdict v = VERDICT_FAILURE;
	char *body = NULL;
	cJSON *req = cJSON_CreateObject();
	if (req == NULL || !cJSON_AddStringToObject(req, "username", username) ||
	    !cJSON_AddStringToObject(req, "password", password) ||
	    !cJSON_AddStringToObject(req, "clientid", client_id) || (body = cJSON_PrintUnformatted(req)) == NULL) {
		snprintf(why, why_len, "out of memory");
		goto done;
	}
	pl->curl_err[0] = '\0';
	curl_easy_setopt(pl->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(pl->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(pl->curl, CURLOPT_WRITEDATA, &buf);
	CURLcode rc = curl_easy_perform(pl->curl);
	if (rc != CURLE_OK) {
		snprintf(why, why_len, "%s", buf.overflow ? "answer too large"
					     : pl->curl_err[0] ? pl->curl_err
							       : curl_easy_strerror(rc));
		goto done;
	}
	long status = 0;
	curl_easy_getinfo(pl->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status == 401 || status == 403) {
		snprintf(why, why_len, "HTTP %ld from %s: check plugin_opt_gateway_secret", status, pl->url);
		goto done; /* misconfigured: every CONNECT would fail, so treat it as an outage */
	}
	if (status >= 400 && status < 500) {
		/* The gateway refused this request (a body it could not read, say): a refusal of
		 * this client, not an outage. Only transport errors and 5xx open the breaker, so
		 * one client cannot lock everybody out. */
		snprintf(why, why_len, "HTTP %ld from %s", status, pl->url);
		v = VERDICT_DENY;
		goto done;
	}
	if (status != 200) {
		snprintf(why, why_len, "HTTP %ld from %s", status, pl->url);
		goto done;
	}
	v = parse_answer(buf.data ? buf.data : "", username, g, why, why_len);
done:
	make_printable(why);
	/* The handle outlives this call; it must not keep pointers into freed memory. */
	curl_easy_setopt(pl->curl, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(pl->curl, CURLOPT_WRITEDATA, NULL);
	cJSON_free(body);
	cJSON_Delete(req);
	free(buf.data);
	return v;
}

static void gateway_failed(struct plugin *pl, const char *why)
{
	pl->breaker_until_ms = mono_ms() + BREAKER_OPEN_MS;
	if (!pl->gateway_down) {
		pl->gateway_down = true;
		pl->breaker_refusals = 0;
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				     LOG_PREFIX "gateway unreachable (%s): denying new connections, "
						"established clients are unaffected",
				     why);
	} else {
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "gateway still unreachable (%s)", why);
	}
}

static void gateway_answered(struct plugin *pl)
{
	if (pl->gateway_down) {
		pl->gateway_down = false;
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     LOG_PREFIX "gateway reachable again; %lu connection(s) were refused while it was not",
				     pl->breaker_refusals);
	}
}

/* ------------------------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------------------------ */

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
static bool restored_service_may_read(const struct plugin *pl, const struct mosquitto *client, const char *topic)
{
	const char *username = mosquitto_client_username(client);
	return username != NULL && strcmp(username, pl->service_user) == 0 &&
	       ma_client_id_allowed(pl->service_user, mosquitto_client_id(client)) &&
	       ma_can_receive(pl->service_user, true, topic);
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	(void)event;
	struct plugin *pl = userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *username = ed->username;
	const char *password = ed->password;

	forget_ended_sessions(pl);
	if (username == NULL || !is_token(password)) {
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "refused a client from %s: no username, or a password that is not a bearer token",
				     client_address(ed->client));
		return MOSQ_ERR_AUTH;
	}
	if (!ma_client_id_allowed(username, client_id)) {
		/* Neither value is logged: they failed validation, so may hold anything. */
		mosquitto_log_printf(MOSQ_LOG_INFO,
				     LOG_PREFIX "refused a client from %s: the client id must be \"{username}/{device}\"",
				     client_address(ed->client));
		return MOSQ_ERR_AUTH;
	}

	const struct grant *cached = cache_get(pl, username, password);
	if (cached) {
		if (!state_set(pl, ed->client, client_id, username, cached)) {
			return MOSQ_ERR_NOMEM;
		}
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "client %s authenticated from the cache", client_id);
		return MOSQ_ERR_SUCCESS;
	}
	if (pl->gateway_down && mono_ms() < pl->breaker_until_ms) {
		pl->breaker_refusals++;
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "refused client %s: gateway unreachable", client_id);
		return MOSQ_ERR_AUTH;
	}

	struct grant g = {0};
	char why[256] = "";
	enum verdict v = ask_gateway(pl, username, password, client_id, &g, why, sizeof why);
	if (v == VERDICT_FAILURE) {
		gateway_failed(pl, why);
		pl->breaker_refusals++;
		grant_clear(&g);
		return MOSQ_ERR_AUTH;
	}
	gateway_answered(pl);
	if (v == VERDICT_DENY) {
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "refused client %s from %s (%s)", client_id,
				     client_address(ed->client), why);
		grant_clear(&g);
		return MOSQ_ERR_AUTH;
	}
	cache_put(pl, username, password, &g);
	bool stored = state_set(pl, ed->client, client_id, username, &g);
	grant_clear(&g);
	return stored ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	(void)event;
	struct plugin *pl = userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	const struct client_state *st = state_find(pl, mosquitto_client_id(ed->client));
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
		break;
	case MOSQ_ACL_SUBSCRIBE:
		ok = ma_can_subscribe(st->user, st->is_service, ed->topic);
		break;
	case MOSQ_ACL_READ:
		ok = ma_can_receive(st->user, st->is_service, ed->topic);
		break;
	case MOSQ_ACL_UNSUBSCRIBE:
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
	struct plugin *pl = userdata;
	struct mosquitto_evt_disconnect *ed = event_data;
	forget_ended_sessions(pl);
	struct client_state *st = state_find(pl, mosquitto_client_id(ed->client));
	/* After a takeover the state already belongs to the new connection. */
	if (st && st->client == ed->client) {
		bool clean = mosquitto_client_protocol_version(ed->client) != 5 && mosquitto_client_clean_session(ed->client);
		state_set_offline(pl, st, clean);
	}
	return MOSQ_ERR_SUCCESS;
}

struct revocation {
	const char *jti;
	const char *user;
	double issued_before;
};

/* acl.revocation.Revocation.from_control and __post_init__; `why` says what is wrong. */
static bool parse_revocation(const cJSON *root, struct revocation *r, const char **why)
{
	const cJSON *command = cJSON_GetObjectItemCaseSensitive(root, "command");
	const cJSON *jti = cJSON_GetObjectItemCaseSensitive(root, "jti");
	const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
	const cJSON *before = cJSON_GetObjectItemCaseSensitive(root, "issued_before");
	*why = NULL;
	if (!cJSON_IsObject(root) || !cJSON_IsString(command) || strcmp(command->valuestring, "revoke") != 0) {
		*why = "not a revocation";
	} else if (!(jti == NULL || cJSON_IsNull(jti) || cJSON_IsString(jti)) ||
		   !(user == NULL || cJSON_IsNull(user) || cJSON_IsString(user)) ||
		   !(before == NULL || cJSON_IsNull(before) || cJSON_IsNumber(before))) {
		*why = "jti and user must be strings, issued_before a Unix time";
	} else {
		r->jti = cJSON_IsString(jti) ? jti->valuestring : NULL;
		r->user = cJSON_IsString(user) ? user->valuestring : NULL;
		if ((r->jti == NULL) == (r->user == NULL)) {
			*why = "a revocation names either a jti or a user";
		} else if (r->jti && (r->jti[0] == '\0' || strlen(r->jti) > MAX_JTI_LENGTH)) {
			*why = "jti must be 1 to 128 characters";
		} else if (r->user && !ma_is_valid_user_id(r->user)) {
			*why = "invalid user id";
		} else if (r->user && !cJSON_IsNumber(before)) {
			*why = "a user revocation needs issued_before";
		} else {
			r->issued_before = cJSON_IsNumber(before) ? before->valuedouble : 0.0;
		}
	}
	return *why == NULL;
}

/* acl.revocation.Revocation.covers. */
static bool revocation_covers(const struct revocation *r, const struct client_state *st)
{
	if (r->jti) {
		return str_eq_nullable(st->jti, r->jti);
	}
	return strcmp(st->user, r->user) == 0 && (!st->has_iat || st->iat < r->issued_before);
}

/* Drop the cached answers a revocation covers, so that the reconnect asks the gateway (which
 * refuses revoked tokens). */
static size_t cache_drop(struct plugin *pl, const struct revocation *r)
{
	size_t dropped = 0;
	struct cache_entry *e = pl->cache_oldest;
	while (e) {
		struct cache_entry *next = e->newer;
		bool covered = r->jti ? str_eq_nullable(e->grant.jti, r->jti)
				      : strcmp(e->username, r->user) == 0 &&
						(!e->grant.has_iat || e->grant.iat < r->issued_before);
		if (covered) {
			cache_remove(pl, e);
			dropped++;
		}
		e = next;
	}
	return dropped;
}

static void revoke(struct plugin *pl, const struct revocation *r)
{
	/* Kicking runs MOSQ_EVT_DISCONNECT (and the Will's ACL check) inside the call, which
	 * changes the table: collect the client ids first. */
	size_t n = 0, cap = 0;
	char **ids = NULL;
	bool oom = false;
	for (size_t b = 0; b < pl->clients.nbuckets; b++) {
		for (struct ht_node *node = pl->clients.buckets[b]; node; node = node->next) {
			struct client_state *st = (struct client_state *)node;
			if (!st->online || !revocation_covers(r, st)) {
				continue;
			}
			if (n == cap) {
				size_t grown_cap = cap ? cap * 2 : 8;
				char **grown = realloc(ids, grown_cap * sizeof *grown);
				if (grown == NULL) {
					oom = true;
					break;
				}
				ids = grown;
				cap = grown_cap;
			}
			if ((ids[n] = strdup(st->client_id)) == NULL) {
				oom = true;
				break;
			}
			n++;
		}
		if (oom) {
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		mosquitto_kick_client_by_clientid(ids[i], true);
		free(ids[i]);
	}
	free(ids);
	size_t dropped = cache_drop(pl, r);
	if (r->jti) {
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "revoked token %s: kicked %zu client(s), dropped %zu cached",
				     r->jti, n, dropped);
	} else {
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     LOG_PREFIX "revoked tokens of %s issued before %.0f: kicked %zu client(s), dropped %zu cached",
				     r->user, r->issued_before, n, dropped);
	}
	if (oom) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "out of memory: the revocation kicked only %zu client(s)", n);
	}
}

static int on_control(int event, void *event_data, void *userdata)
{
	(void)event;
	struct plugin *pl = userdata;
	struct mosquitto_evt_control *ed = event_data;
	forget_ended_sessions(pl);
	const struct client_state *st = state_find(pl, mosquitto_client_id(ed->client));
	/* Mosquitto ACL-checks the PUBLISH (MOSQ_ACL_WRITE) before this event, and only the
	 * service may publish here; checked again because a kick is not to be left to one rule. */
	if (st == NULL || !st->online || st->client != ed->client || !st->is_service) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a control message from %s: not the service account",
				     st ? st->client_id : client_address(ed->client));
		return MOSQ_ERR_SUCCESS;
	}
	if (ed->payloadlen == 0 || ed->payloadlen > MAX_CONTROL_BYTES) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a control message from %s: size %" PRIu32,
				     st->client_id, ed->payloadlen);
		return MOSQ_ERR_SUCCESS;
	}
	cJSON *root = cJSON_ParseWithLength(ed->payload, ed->payloadlen);
	struct revocation r = {0};
	const char *why = "not JSON";
	if (root && parse_revocation(root, &r, &why)) {
		revoke(pl, &r);
	} else {
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a control message from %s: %s", st->client_id, why);
	}
	cJSON_Delete(root);
	return MOSQ_ERR_SUCCESS;
}

/* ------------------------------------------------------------------------------------------
 * Plugin entry points
 * ------------------------------------------------------------------------------------------ */

static void plugin_free(struct plugin *pl)
{
	if (pl == NULL) {
		return;
	}
	if (pl->clients.buckets) {
		for (size_t b = 0; b < pl->clients.nbuckets; b++) {
			struct ht_node *n = pl->clients.buckets[b];
			while (n) {
				struct ht_node *next = n->next;
				state_free((struct client_state *)n);
				n = next;
			}
		}
		free(pl->clients.buckets);
	}
	while (pl->cache_oldest) {
		cache_remove(pl, pl->cache_oldest);
	}
	free(pl->cache.buckets);
	if (pl->curl) {
		curl_easy_cleanup(pl->curl);
	}
	curl_slist_free_all(pl->headers);
	if (pl->curl_global) {
		curl_global_cleanup();
	}
	free(pl->url);
	free(pl->service_user);
	free(pl->secret_header);
	free(pl);
}

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

static bool read_options(struct plugin *pl, struct mosquitto_opt *options, int option_count)
{
	const char *url = NULL, *secret = NULL, *service_user = DEFAULT_SERVICE_USER;
	pl->timeout_ms = DEFAULT_TIMEOUT_MS;
	pl->cache_ttl_s = DEFAULT_CACHE_TTL_S;
	pl->cache_size = DEFAULT_CACHE_SIZE;
	pl->offline_max = DEFAULT_OFFLINE_MAX;
	for (int i = 0; i < option_count; i++) {
		const char *k = options[i].key, *v = options[i].value ? options[i].value : "";
		bool ok = true;
		if (strcmp(k, "gateway_url") == 0) {
			url = v;
		} else if (strcmp(k, "gateway_secret") == 0) {
			secret = v;
		} else if (strcmp(k, "timeout_ms") == 0) {
			ok = parse_long_option(k, v, 1, 60000, &pl->timeout_ms);
		} else if (strcmp(k, "cache_ttl_s") == 0) {
			ok = parse_long_option(k, v, 0, 86400, &pl->cache_ttl_s);
		} else if (strcmp(k, "cache_size") == 0) {
			ok = parse_long_option(k, v, 1, 10000000, &pl->cache_size);
		} else if (strcmp(k, "offline_max") == 0) {
			ok = parse_long_option(k, v, 1, 10000000, &pl->offline_max);
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
	pl->service_user = strdup(service_user);
	if (pl->service_user == NULL) {
		return false;
	}
	size_t len = strlen(url);
	while (len > 0 && url[len - 1] == '/') {
		len--; /* "http://api:8081/" + "/mqtt/user" */
	}
	pl->url = malloc(len + sizeof GATEWAY_PATH);
	if (pl->url == NULL) {
		return false;
	}
	memcpy(pl->url, url, len);
	memcpy(pl->url + len, GATEWAY_PATH, sizeof GATEWAY_PATH);
	if (secret && secret[0] != '\0') {
		if (has_control_chars(secret)) {
			mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_gateway_secret must not hold control characters");
			return false;
		}
		static const char name[] = "X-Gateway-Secret: ";
		pl->secret_header = malloc(sizeof name + strlen(secret));
		if (pl->secret_header == NULL) {
			return false;
		}
		memcpy(pl->secret_header, name, sizeof name - 1);
		strcpy(pl->secret_header + sizeof name - 1, secret);
	}
	return true;
}

static bool append_header(struct plugin *pl, const char *header)
{
	struct curl_slist *l = curl_slist_append(pl->headers, header);
	if (l == NULL) {
		return false;
	}
	pl->headers = l;
	return true;
}

static bool setup_curl(struct plugin *pl)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		return false;
	}
	pl->curl_global = true;
	pl->curl = curl_easy_init();
	if (pl->curl == NULL || !append_header(pl, "Content-Type: application/json") ||
	    !append_header(pl, "Accept: application/json") || !append_header(pl, "Expect:") ||
	    (pl->secret_header && !append_header(pl, pl->secret_header))) {
		return false;
	}
	CURL *c = pl->curl;
	/* One handle for every call: libcurl keeps the connection to the gateway alive. */
	bool ok = curl_easy_setopt(c, CURLOPT_URL, pl->url) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_HTTPHEADER, pl->headers) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_curl_write) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, pl->curl_err) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, pl->timeout_ms) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, pl->timeout_ms) == CURLE_OK &&
		  /* No SIGALRM-based resolver timeouts inside the broker. */
		  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_USERAGENT, "messenger-auth (mosquitto)") == CURLE_OK;
	return ok;
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

static void unregister_callbacks(struct plugin *pl, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		mosquitto_callback_unregister(pl->id, CALLBACKS[i].event, CALLBACKS[i].cb, CALLBACKS[i].event_data);
	}
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
			  int option_count)
{
	struct plugin *pl = calloc(1, sizeof *pl);
	if (pl == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	pl->id = identifier;
	if (!read_options(pl, options, option_count)) {
		plugin_free(pl);
		return MOSQ_ERR_INVAL;
	}
	if (!ht_init(&pl->clients, 1024) || !ht_init(&pl->cache, 1024) || !setup_curl(pl)) {
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
			     LOG_PREFIX "gateway %s, timeout %ld ms, token cache %ld s x %ld entries%s",
			     pl->url, pl->timeout_ms, pl->cache_ttl_s, pl->cache_size,
			     pl->secret_header ? "" : " (no gateway_secret set)");
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)options;
	(void)option_count;
	struct plugin *pl = userdata;
	if (pl) {
		unregister_callbacks(pl, CALLBACK_COUNT);
		plugin_free(pl);
	}
	return MOSQ_ERR_SUCCESS;
}
