#include "config.h"

#include "base/handles.h"

#include <assert.h>

static void on_closed(uv_handle_t *h)
{
	struct handle_group *g = h->data;

	assert(g->closing > 0);
	if (--g->closing == 0 && g->all_closed)
		g->all_closed(g->arg);
}

void handle_group_close(struct handle_group *g, uv_handle_t *h)
{
	/* Close callbacks run on a later loop iteration, never from
	 * uv_close: counting up as the owner closes is race-free. */
	g->closing++;
	h->data = g;
	uv_close(h, on_closed);
}
