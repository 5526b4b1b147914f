#include "config.h"

#include "fake_backend.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TAG "FAKE"

struct slow_call {
	uv_timer_t timer;
	struct fake_backend *fb;
	kms_complete_fn done;
	void *token;
	uint8_t *data;
	size_t len;
	struct slow_call *next;
};

/* A call waiting for the start (fake_backend_starting_ops). */
struct waiter {
	void (*cb)(void *token);
	void *token;
	struct waiter *next;
};

struct fake_backend {
	uv_loop_t *loop;
	struct slow_call *slow;
	bool starting;
	struct waiter *waiters;
	size_t n_waiting;
};

int fake_backend_new(uv_loop_t *loop, fake_backend **ret)
{
	fake_backend *fb = calloc(1, sizeof(*fb));

	if (!fb)
		return -ENOMEM;
	fb->loop = loop;
	*ret = fb;
	return 0;
}

static void on_slow_closed(uv_handle_t *h)
{
	struct slow_call *s = h->data;

	free(s->data);
	free(s);
}

static void on_slow_done(uv_timer_t *t)
{
	struct slow_call *s = t->data, **pp;
	struct kms_result res = {.data = s->data, .data_len = s->len, .key_id = FAKE_KEY_ID};

	for (pp = &s->fb->slow; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->done(s->token, &res);
	uv_close((uv_handle_t *)&s->timer, on_slow_closed);
}

void fake_backend_finish_start(fake_backend *fb)
{
	fb->starting = false;
	while (fb->waiters) {
		struct waiter *w = fb->waiters;

		fb->waiters = w->next;
		fb->n_waiting--;
		w->cb(w->token);
		free(w);
	}
}

size_t fake_backend_waiting(const fake_backend *fb)
{
	return fb->n_waiting;
}

void fake_backend_stop(fake_backend *fb)
{
	fake_backend_finish_start(fb);
	/* Calls still waiting complete now, as a backend draining would. */
	while (fb->slow) {
		uv_timer_stop(&fb->slow->timer);
		on_slow_done(&fb->slow->timer);
	}
}

void fake_backend_free(fake_backend *fb)
{
	free(fb);
}

static void fake_status(void *backend, const char **ret_healthz, const char **ret_key_id)
{
	*ret_healthz = "ok";
	*ret_key_id = FAKE_KEY_ID;
}

static uint8_t *wrap(const uint8_t *in, size_t len, size_t *ret_len)
{
	uint8_t *out = malloc(len + 4);

	if (!out)
		return NULL;
	memcpy(out, TAG, 4);
	for (size_t i = 0; i < len; i++)
		out[4 + i] = in[len - 1 - i];
	*ret_len = len + 4;
	return out;
}

static void fake_encrypt(void *backend, const uint8_t *pt, size_t len, uint64_t deadline_ms,
			 kms_complete_fn done, void *token)
{
	fake_backend *fb = backend;
	struct kms_result res = {.key_id = FAKE_KEY_ID};
	uint8_t *out;
	size_t out_len;

	if (len == 4 && memcmp(pt, "fail", 4) == 0) {
		res.error = -ENODEV;
		res.message = "fake backend unavailable";
		done(token, &res);
		return;
	}
	out = wrap(pt, len, &out_len);
	if (!out) {
		res.error = -ENOMEM;
		done(token, &res);
		return;
	}
	if (len > 5 && memcmp(pt, "slow:", 5) == 0) {
		struct slow_call *s = calloc(1, sizeof(*s));
		unsigned long ms = strtoul((const char *)pt + 5, NULL, 10);

		if (!s) {
			free(out);
			res.error = -ENOMEM;
			done(token, &res);
			return;
		}
		s->fb = fb;
		s->done = done;
		s->token = token;
		s->data = out;
		s->len = out_len;
		uv_timer_init(fb->loop, &s->timer);
		s->timer.data = s;
		uv_timer_start(&s->timer, on_slow_done, ms, 0);
		s->next = fb->slow;
		fb->slow = s;
		return;
	}
	res.data = out;
	res.data_len = out_len;
	done(token, &res);
	free(out);
}

static void fake_decrypt(void *backend, const uint8_t *ct, size_t len, const char *key_id,
			 kms_complete_fn done, void *token)
{
	struct kms_result res = {.key_id = FAKE_KEY_ID};
	uint8_t *out;

	if (len < 4 || memcmp(ct, TAG, 4) != 0 || (key_id && strcmp(key_id, FAKE_KEY_ID) != 0)) {
		res.error = -EBADMSG;
		res.message = "invalid ciphertext";
		done(token, &res);
		return;
	}
	out = malloc(len - 4 ? len - 4 : 1);
	if (!out) {
		res.error = -ENOMEM;
		done(token, &res);
		return;
	}
	for (size_t i = 0; i < len - 4; i++)
		out[i] = ct[len - 1 - i];
	res.data = out;
	res.data_len = len - 4;
	done(token, &res);
	free(out);
}

static const struct kms_backend_ops ops = {
	.status = fake_status,
	.encrypt = fake_encrypt,
	.decrypt = fake_decrypt,
};

const struct kms_backend_ops *fake_backend_ops(void)
{
	return &ops;
}

static bool fake_started(void *backend)
{
	return !((fake_backend *)backend)->starting;
}

static void fake_when_started(void *backend, uint64_t deadline_ms, void (*cb)(void *token),
			      void *token)
{
	fake_backend *fb = backend;
	struct waiter *w = malloc(sizeof(*w));

	if (!w) {
		cb(token);
		return;
	}
	*w = (struct waiter){cb, token, fb->waiters};
	fb->waiters = w;
	fb->n_waiting++;
}

static const struct kms_backend_ops starting_ops = {
	.status = fake_status,
	.encrypt = fake_encrypt,
	.decrypt = fake_decrypt,
	.started = fake_started,
	.when_started = fake_when_started,
	.max_plaintext = 1000,
};

const struct kms_backend_ops *fake_backend_starting_ops(fake_backend *fb)
{
	fb->starting = true;
	return &starting_ops;
}
