/* The gateway client (gateway.h): the HTTP call, the answer's JSON, the circuit breaker. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>

#include "util.h"

/* How long new connections are refused without asking, after a gateway failure. */
#define BREAKER_OPEN_MS 1000
/* A gateway answer is a few hundred bytes; anything much larger is not one. */
#define MAX_RESPONSE_BYTES (64 * 1024)

struct response_buf {
	char *data;
	size_t len;
	bool overflow;
};

void ma_grant_clear(struct ma_grant *g)
{
	free(g->jti);
	g->jti = NULL;
}

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

static bool append_header(struct ma_gateway *gw, const char *header)
{
	struct curl_slist *l = curl_slist_append(gw->headers, header);
	if (l == NULL) {
		return false;
	}
	gw->headers = l;
	return true;
}

bool ma_gateway_init(struct ma_gateway *gw, const struct ma_options *o)
{
	gw->url = o->url;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		return false;
	}
	gw->curl_global = true;
	gw->curl = curl_easy_init();
	if (gw->curl == NULL || !append_header(gw, "Content-Type: application/json") ||
	    !append_header(gw, "Accept: application/json") || !append_header(gw, "Expect:") ||
	    (o->secret_header && !append_header(gw, o->secret_header))) {
		return false;
	}
	CURL *c = gw->curl;
	/* One handle for every call: libcurl keeps the connection to the gateway alive. */
	bool ok = curl_easy_setopt(c, CURLOPT_URL, o->url) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_HTTPHEADER, gw->headers) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_curl_write) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, gw->curl_err) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, o->timeout_ms) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, o->timeout_ms) == CURLE_OK &&
		  /* No SIGALRM-based resolver timeouts inside the broker. */
		  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK &&
		  curl_easy_setopt(c, CURLOPT_USERAGENT, "messenger-auth (mosquitto)") == CURLE_OK;
	return ok;
}

void ma_gateway_cleanup(struct ma_gateway *gw)
{
	if (gw->curl) {
		curl_easy_cleanup(gw->curl);
		gw->curl = NULL;
	}
	curl_slist_free_all(gw->headers);
	gw->headers = NULL;
	if (gw->curl_global) {
		curl_global_cleanup();
		gw->curl_global = false;
	}
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
static enum ma_verdict parse_answer(const char *body, const char *username, struct ma_grant *g, char *why,
				    size_t why_len)
{
	cJSON *root = cJSON_Parse(body);
	enum ma_verdict v = MA_VERDICT_FAILURE;
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
		v = MA_VERDICT_DENY;
		goto done;
	}
	const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
	const cJSON *role = cJSON_GetObjectItemCaseSensitive(root, "role");
	const cJSON *jti = cJSON_GetObjectItemCaseSensitive(root, "jti");
	if (!cJSON_IsString(user) || strcmp(user->valuestring, username) != 0) {
		snprintf(why, why_len, "gateway allowed another user than the username");
		v = MA_VERDICT_DENY;
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
	v = MA_VERDICT_ALLOW;
done:
	cJSON_Delete(root);
	return v;
}

static enum ma_verdict call(struct ma_gateway *gw, const char *username, const char *password, const char *client_id,
			    struct ma_grant *g, char *why, size_t why_len)
{
	struct response_buf buf = {0};
	enum ma_verdict v = MA_VERDICT_FAILURE;
	char *body = NULL;
	cJSON *req = cJSON_CreateObject();
	if (req == NULL || !cJSON_AddStringToObject(req, "username", username) ||
	    !cJSON_AddStringToObject(req, "password", password) ||
	    !cJSON_AddStringToObject(req, "clientid", client_id) || (body = cJSON_PrintUnformatted(req)) == NULL) {
		snprintf(why, why_len, "out of memory");
		goto done;
	}
	gw->curl_err[0] = '\0';
	curl_easy_setopt(gw->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(gw->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(gw->curl, CURLOPT_WRITEDATA, &buf);
	CURLcode rc = curl_easy_perform(gw->curl);
	if (rc != CURLE_OK) {
		snprintf(why, why_len, "%s", buf.overflow ? "answer too large"
					     : gw->curl_err[0] ? gw->curl_err
							       : curl_easy_strerror(rc));
		goto done;
	}
	long status = 0;
	curl_easy_getinfo(gw->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status == 401 || status == 403) {
		snprintf(why, why_len, "HTTP %ld from %s: check plugin_opt_gateway_secret", status, gw->url);
		goto done; /* misconfigured: every CONNECT would fail, so treat it as an outage */
	}
	if (status >= 400 && status < 500) {
		/* The gateway refused this request (a body it could not read, say): a refusal of
		 * this client, not an outage. Only transport errors and 5xx open the breaker, so
		 * one client cannot lock everybody out. */
		snprintf(why, why_len, "HTTP %ld from %s", status, gw->url);
		v = MA_VERDICT_DENY;
		goto done;
	}
	if (status != 200) {
		snprintf(why, why_len, "HTTP %ld from %s", status, gw->url);
		goto done;
	}
	v = parse_answer(buf.data ? buf.data : "", username, g, why, why_len);
done:
	make_printable(why);
	/* The handle outlives this call; it must not keep pointers into freed memory. */
	curl_easy_setopt(gw->curl, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(gw->curl, CURLOPT_WRITEDATA, NULL);
	cJSON_free(body);
	cJSON_Delete(req);
	free(buf.data);
	return v;
}

static void failed(struct ma_gateway *gw, const char *why)
{
	gw->breaker_until_ms = ma_mono_ms() + BREAKER_OPEN_MS;
	if (!gw->down) {
		gw->down = true;
		gw->breaker_refusals = 0;
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				     LOG_PREFIX "gateway unreachable (%s): denying new connections, "
						"established clients are unaffected",
				     why);
	} else {
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "gateway still unreachable (%s)", why);
	}
	gw->breaker_refusals++;
}

static void answered(struct ma_gateway *gw)
{
	if (gw->down) {
		gw->down = false;
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     LOG_PREFIX "gateway reachable again; %lu connection(s) were refused while it was not",
				     gw->breaker_refusals);
	}
}

bool ma_gateway_breaker_open(struct ma_gateway *gw)
{
	if (gw->down && ma_mono_ms() < gw->breaker_until_ms) {
		gw->breaker_refusals++;
		return true;
	}
	return false;
}

enum ma_verdict ma_gateway_ask(struct ma_gateway *gw, const char *username, const char *password,
			       const char *client_id, struct ma_grant *g, char *why, size_t why_len)
{
	enum ma_verdict v = call(gw, username, password, client_id, g, why, why_len);
	if (v == MA_VERDICT_FAILURE) {
		failed(gw, why);
	} else {
		answered(gw);
	}
	return v;
}
