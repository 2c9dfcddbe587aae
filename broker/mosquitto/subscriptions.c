/* The filters a client holds (subscriptions.h). */
#include "subscriptions.h"

#include <stdlib.h>
#include <string.h>

static size_t find(const struct ma_filters *f, const char *filter)
{
	for (size_t i = 0; i < f->count; i++) {
		if (strcmp(f->items[i], filter) == 0) {
			return i;
		}
	}
	return f->count;
}

bool ma_filters_has(const struct ma_filters *f, const char *filter)
{
	return find(f, filter) < f->count;
}

bool ma_filters_add(struct ma_filters *f, const char *filter)
{
	if (f->count == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 4;
		char **grown = realloc(f->items, cap * sizeof *grown);
		if (grown == NULL) {
			return false;
		}
		f->items = grown;
		f->cap = cap;
	}
	char *copy = strdup(filter);
	if (copy == NULL) {
		return false;
	}
	f->items[f->count++] = copy;
	return true;
}

void ma_filters_remove(struct ma_filters *f, const char *filter)
{
	size_t i = find(f, filter);
	if (i < f->count) {
		free(f->items[i]);
		f->items[i] = f->items[--f->count]; /* order does not matter */
	}
}

void ma_filters_move(struct ma_filters *to, struct ma_filters *from)
{
	*to = *from;
	from->items = NULL;
	from->count = from->cap = 0;
}

void ma_filters_clear(struct ma_filters *f)
{
	for (size_t i = 0; i < f->count; i++) {
		free(f->items[i]);
	}
	free(f->items);
	f->items = NULL;
	f->count = f->cap = 0;
}
