/* Revocations (revocation.h). */
#include "revocation.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mosquitto.h>

#include "acl_rules.h"
#include "limits.h"
#include "util.h"

/* acl.revocation.MAX_JTI_LENGTH. */
#define MAX_JTI_LENGTH 128

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

/* acl.revocation.Revocation.covers, for a token's user, jti and iat. */
static bool covers(const struct revocation *r, const char *user, const char *jti, bool has_iat, double iat)
{
	if (r->jti) {
		return ma_str_eq_nullable(jti, r->jti);
	}
	return strcmp(user, r->user) == 0 && (!has_iat || iat < r->issued_before);
}

static bool covers_cached(const char *username, const struct ma_grant *g, const void *arg)
{
	return covers(arg, username, g->jti, g->has_iat, g->iat);
}

static void revoke(struct ma_plugin *pl, const struct revocation *r)
{
	/* Kicking runs MOSQ_EVT_DISCONNECT (and the Will's ACL check) inside the call, which
	 * changes the table: collect the client ids first. */
	size_t n = 0, cap = 0;
	char **ids = NULL;
	bool oom = false;
	const struct ma_ht *table = &pl->clients.table;
	for (size_t b = 0; b < table->nbuckets; b++) {
		for (struct ma_ht_node *node = table->buckets[b]; node; node = node->next) {
			const struct ma_client_state *st = (const struct ma_client_state *)node;
			if (!st->online || !covers(r, st->user, st->jti, st->has_iat, st->iat)) {
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
	size_t dropped = ma_cache_drop_if(&pl->cache, covers_cached, r);
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

void ma_revocation_apply(struct ma_plugin *pl, const char *sender, const void *payload, size_t len)
{
	if (len == 0 || len > MA_MAX_CONTROL_BYTES) {
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a control message from %s: size %zu", sender,
				     len);
		return;
	}
	cJSON *root = cJSON_ParseWithLength(payload, len);
	struct revocation r = {0};
	const char *why = "not JSON";
	if (root && parse_revocation(root, &r, &why)) {
		revoke(pl, &r);
	} else {
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "ignored a control message from %s: %s", sender, why);
	}
	cJSON_Delete(root);
}
