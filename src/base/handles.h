/* Handles one owner closes together: each is counted as it is closed
 * through the group, and all_closed runs once, after the last close
 * callback, so the owner frees itself without counting its handles by
 * hand. Must not: be used for a handle whose close callback needs its own
 * data (the group takes h->data over at close). */
#ifndef TPM2KMS_HANDLES_H
#define TPM2KMS_HANDLES_H

#include <uv.h>

struct handle_group {
	unsigned closing;
	void (*all_closed)(void *arg);
	void *arg;
};

/* Closes h as one of g's; g must outlive the close callbacks. */
void handle_group_close(struct handle_group *g, uv_handle_t *h);

#endif
