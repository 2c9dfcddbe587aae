/* Small helpers every file of the plugin uses: the log prefix, clocks, strings. */
#ifndef MESSENGER_UTIL_H
#define MESSENGER_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto_broker.h>

#define LOG_PREFIX "messenger-auth: "

static inline int64_t ma_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline double ma_wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline char *ma_dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static inline bool ma_str_eq_nullable(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* For log lines: the client's address, or "?". */
static inline const char *ma_client_address(const struct mosquitto *client)
{
	const char *a = client ? mosquitto_client_address(client) : NULL;
	return a ? a : "?";
}

#endif /* MESSENGER_UTIL_H */
