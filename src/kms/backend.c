#include "config.h"

#include "base/files.h"
#include "base/handles.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/secmem.h"
#include "base/util.h"
#include "keys/auditrec.h"
#include "keys/envelope.h"
#include "keys/escrow.h"
#include "keys/unseal.h"
#include "kms/backend.h"
#include "kms/tpmworker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RELOAD_DEBOUNCE_MS 50u
#define COUNTS_FLUSH_MS    1000u
/* A failed unseal is tried again after this, doubling up to the max. */
#define UNSEAL_RETRY_MIN_MS 250u
#define UNSEAL_RETRY_MAX_MS 30000u
/* Calls wait for the start (first probe, write key) at most this long... */
#define STARTUP_MAX_MS      10000u
/* ...and are answered this long before their own deadline at the latest. */
#define HOLD_MARGIN_MS      200u
/* Every Decrypt failure that is the ciphertext's fault says this: no
 * oracle. */
#define DECRYPT_FAILED "invalid ciphertext"

enum blind_what { BLIND_STATE, BLIND_ESCROW, BLIND_PCR_SIGNATURES, BLIND_N };
static const char *const blind_names[BLIND_N] = {"state", "escrow", "pcr-signatures"};

struct generation {
	struct generation *next;
	uint32_t number;
	char key_id[ENVELOPE_KEY_ID_MAX];
	struct tpm_sealed sealed;
	enum tpm_kek_kind kind;
	uint8_t *kek;      /* secure heap; NULL until unsealed */
	bool unsealing;
	bool broken;       /* unusable file or key: retried only on reload */
	bool escrowed;     /* an escrow file exists (looked at on reload) */
	char *problem;     /* why a pcr kind does not unseal (no signature) */
	uint64_t decrypts; /* since start */
};

struct backend {
	uv_loop_t *loop;
	char *state_dir;
	tpm_worker *worker;
	struct generation *gens;
	uint32_t write_gen;
	/* A rotation's new write generation takes over only once its key is
	 * loaded, so Status never names a key Encrypt cannot use. */
	uint32_t next_write_gen;
	struct tpm_name srk_name;
	void (*on_ready)(void *arg);
	void (*on_health_change)(void *arg, const char *problem);
	void *ready_arg;
	bool was_ready;
	bool stopping;
	bool escrow_configured;
	/* What the daemon must look at and could not (owner or mode wrong):
	 * Status is not ok while any is, so no alarm stays silent on what
	 * was never seen. "" when seen. */
	char blind[BLIND_N][400];

	/* Boot-state binding: the state's PCR signer and the signatures of
	 * the signature directory, loaded on start, reload and when a file
	 * there changes (watched). NULL when the state binds nothing. */
	struct anchors *keys; /* the state's trust anchors */
	char *pcr_dir;
	struct pcr_binding *binding;
	uv_fs_event_t pcr_watch;
	bool pcr_watching;
	bool binding_loading, binding_again;
	uv_timer_t pcr_timer;

	/* The start: over once the first probe has an answer and, with a
	 * healthy TPM, the write key is loaded or known not to load (or after
	 * STARTUP_MAX_MS). Until then calls wait instead of hearing "not
	 * probed yet" (a kube-apiserver starting first would call the plugin
	 * unhealthy). */
	bool started;
	uint64_t start_ms;
	struct waiter *waiters;
	uv_timer_t hold_timer;

	/* The last audit of etcd (tpm2-kms audit), for the metrics: read at
	 * start and when the audit replaces its record. */
	struct auditrec *audit;
	uint64_t started_at; /* Unix time, for the metrics */

	uv_fs_event_t watch;
	bool watching;
	uv_timer_t reload_timer;
	uv_timer_t counts_timer;
	/* Unseals that failed for a passing reason are retried on a backoff
	 * of their own: the TPM may well stay healthy meanwhile (one lost
	 * command), and a rotation must not stall until the next SIGHUP. */
	uv_timer_t retry_timer;
	uint32_t retry_ms;
	size_t queued_secure; /* secure heap held by queued Encrypts */
	bool counts_dirty;
	struct handle_group handles;
	bool handles_closed;
	char status_buf[480];
	/* Decrypt's output (secure heap, ENVELOPE_MAX_BYTES): the backend's
	 * answer is consumed before done() returns, so one buffer serves
	 * every call, wiped after each. */
	uint8_t *plain;
};

/* A call held until the start is over (kms when_started). */
struct waiter {
	struct waiter *next;
	uint64_t until; /* loop clock */
	void (*cb)(void *token);
	void *token;
};

struct unseal_call {
	backend *p;
	uint32_t number;
};

struct encrypt_call {
	backend *p;
	uint8_t *plaintext; /* secure heap */
	size_t len;
	size_t held;        /* of the secure heap, as it counts */
	kms_complete_fn done;
	void *token;
};

static struct generation *find(backend *p, uint32_t number)
{
	for (struct generation *g = p->gens; g; g = g->next)
		if (g->number == number)
			return g;
	return NULL;
}

static void generation_free(struct generation *g)
{
	free(g->problem);
	secmem_free(g->kek, TPM_KEK_BYTES);
	util_wipe(&g->sealed, sizeof(g->sealed));
	free(g);
}

static void on_hold_timer(uv_timer_t *t);

/* Answers the waiters whose time is up (all: every one), and sets the
 * timer for the next one. */
static void release_waiters(backend *p, bool all)
{
	struct waiter **pp = &p->waiters, *w, *due = NULL;
	uint64_t now = uv_now(p->loop), next = 0;

	/* Unlinked first: a callback dispatches its call, which may finish
	 * other calls but never holds one. */
	while ((w = *pp)) {
		if (all || now >= w->until) {
			*pp = w->next;
			w->next = due;
			due = w;
			continue;
		}
		if (!next || w->until < next)
			next = w->until;
		pp = &w->next;
	}
	if (next && !p->stopping)
		uv_timer_start(&p->hold_timer, on_hold_timer, next - now, 0);
	while ((w = due)) {
		due = w->next;
		w->cb(w->token);
		free(w);
	}
}

static void maybe_started(backend *p)
{
	struct generation *w = find(p, p->write_gen);

	if (p->started)
		return;
	if (uv_now(p->loop) - p->start_ms < STARTUP_MAX_MS) {
		if (!tpm_worker_probed(p->worker))
			return;
		if (tpm_worker_healthy(p->worker) && w && !w->kek && !w->broken && !w->problem)
			return;
	}
	p->started = true;
	release_waiters(p, true);
}

static void on_hold_timer(uv_timer_t *t)
{
	backend *p = t->data;

	maybe_started(p);
	release_waiters(p, false);
}

static bool started(void *arg)
{
	backend *p = arg;

	maybe_started(p);
	return p->started || p->stopping;
}

static void when_started(void *arg, uint64_t deadline_ms, void (*cb)(void *token),
			 void *token)
{
	backend *p = arg;
	struct waiter *w;

	w = malloc(sizeof(*w));
	if (!w)
		goto now;
	w->until = p->start_ms + STARTUP_MAX_MS;
	/* Leave the call time to be answered before its own deadline. */
	if (deadline_ms && deadline_ms < w->until + HOLD_MARGIN_MS)
		w->until = deadline_ms > HOLD_MARGIN_MS ? deadline_ms - HOLD_MARGIN_MS : 0;
	w->cb = cb;
	w->token = token;
	w->next = p->waiters;
	p->waiters = w;
	release_waiters(p, false);
	return;
now:
	cb(token);
}

static void check_ready(backend *p)
{
	struct generation *w, *next = find(p, p->next_write_gen);

	if (next && next->kek && p->next_write_gen != p->write_gen) {
		log_info("write key is now generation %u (%s)", (unsigned)next->number,
			 next->key_id);
		p->write_gen = next->number;
	}
	w = find(p, p->write_gen);
	if (!p->was_ready && tpm_worker_healthy(p->worker) && w && w->kek) {
		p->was_ready = true;
		log_info("ready: write key %s", w->key_id);
		if (p->on_ready)
			p->on_ready(p->ready_arg);
	}
	maybe_started(p);
}

static bool transient(int err)
{
	return err == -EIO || err == -ETIMEDOUT || err == -ENOMEM || err == -ENOBUFS ||
	       err == -ENOENT;
}

static void start_unseal(backend *p, struct generation *g);
static void write_counts(backend *p);

static void on_retry_timer(uv_timer_t *t)
{
	backend *p = t->data;

	for (struct generation *g = p->gens; g; g = g->next)
		start_unseal(p, g);
}

static void schedule_retry(backend *p)
{
	if (p->stopping || uv_is_active((uv_handle_t *)&p->retry_timer))
		return;
	p->retry_ms = p->retry_ms ? p->retry_ms * 2 : UNSEAL_RETRY_MIN_MS;
	if (p->retry_ms > UNSEAL_RETRY_MAX_MS)
		p->retry_ms = UNSEAL_RETRY_MAX_MS;
	uv_timer_start(&p->retry_timer, on_retry_timer, p->retry_ms, 0);
}

static void on_unsealed(void *arg, int err, const uint8_t *kek,
			const struct tpm_pcr_values *values)
{
	struct unseal_call *u = arg;
	backend *p = u->p;
	struct generation *g = find(p, u->number);
	char key_id[ENVELOPE_KEY_ID_MAX];

	free(u);
	if (!g)
		return; /* retired meanwhile */
	g->unsealing = false;
	if (err == -ENOKEY && values) {
		/* Waits for a signature: tried again when one appears. */
		char why[24 * 80 + 400];

		unseal_describe(values, why, sizeof(why));
		/* A signature the daemon cannot read may be the one wanted. */
		if (p->binding && p->binding->n_unreadable)
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 "; %zu signature file(s) not readable, first %s",
				 p->binding->n_unreadable, p->binding->unreadable);
		if (!g->problem || strcmp(g->problem, why) != 0) {
			log_warning("generation %u: %s", (unsigned)g->number, why);
			/* What is there approves other values (the next boot's, or a
			 * stranger's): say which, so the operator can tell. */
			for (size_t i = 0; p->binding && i < p->binding->n_sigs; i++)
				log_warning("pcr signature %s: ignored now: it approves other PCR "
					    "values",
					    p->binding->sigs[i].source);
		}
		free(g->problem);
		g->problem = strdup(why);
		maybe_started(p);
		return;
	}
	if (err < 0) {
		if (err != -ECANCELED && !transient(err)) {
			g->broken = true;
			log_error("generation %u: cannot unseal %s/gen-%06u.pem: %s", (unsigned)g->number,
				  p->state_dir, (unsigned)g->number, strerror(-err));
			maybe_started(p);
		} else if (err != -ECANCELED) {
			log_warning("generation %u: unseal failed (%s); trying again", (unsigned)g->number,
				    strerror(-err));
			schedule_retry(p);
		}
		return;
	}
	if (envelope_key_id(kek, g->number, key_id) < 0 || strcmp(key_id, g->key_id) != 0) {
		g->broken = true;
		log_error("generation %u: the unsealed key does not match key_id %s in %s/state",
			  (unsigned)g->number, g->key_id, p->state_dir);
		maybe_started(p);
		return;
	}
	g->kek = secmem_alloc(TPM_KEK_BYTES);
	if (!g->kek) {
		log_error("generation %u: secure heap exhausted; trying again", (unsigned)g->number);
		schedule_retry(p);
		return;
	}
	p->retry_ms = 0;
	memcpy(g->kek, kek, TPM_KEK_BYTES);
	log_info("generation %u loaded (key_id %s)", (unsigned)g->number, g->key_id);
	/* `keys` shows which generations this daemon can use. */
	write_counts(p);
	check_ready(p);
}

static void start_unseal(backend *p, struct generation *g)
{
	struct unseal_call *u;

	if (g->kek || g->unsealing || g->broken || p->stopping)
		return;
	/* The first signatures are still being read: tried when they are. */
	if (tpm_kek_pcr_bound(g->kind) && !p->binding && p->binding_loading)
		return;
	u = malloc(sizeof(*u));
	if (!u) {
		schedule_retry(p);
		return;
	}
	u->p = p;
	u->number = g->number;
	/* A full TPM queue, say: not a reason to give up on the key. */
	if (tpm_worker_unseal(p->worker, &g->sealed, g->kind,
			      tpm_kek_pcr_bound(g->kind) ? p->binding : NULL,
			      on_unsealed, u) < 0) {
		free(u);
		schedule_retry(p);
		return;
	}
	g->unsealing = true;
}

static void on_health(void *arg, bool healthy)
{
	backend *p = arg;

	if (p->was_ready && p->on_health_change)
		p->on_health_change(p->ready_arg, healthy ? "" : tpm_worker_problem(p->worker));
	if (!healthy) {
		maybe_started(p);
		return;
	}
	for (struct generation *g = p->gens; g; g = g->next)
		start_unseal(p, g);
	check_ready(p);
}

/* A load of the signature directory, on libuv's thread pool: a directory
 * of thousands of files, or a slow file system, never stalls the loop. */
struct binding_load {
	uv_work_t req;
	backend *p;
	struct anchors keys; /* a copy: the backend's may change meanwhile */
	char *dir;
	struct pcr_binding *result;
	int err;
};

static void binding_work(uv_work_t *req)
{
	struct binding_load *l = req->data;

	l->err = unseal_load_binding(&l->keys, l->dir, &l->result);
}

static void load_binding(backend *p);
static void backend_free(backend *p);
static void on_all_closed(void *arg);

static void binding_done(uv_work_t *req, int status)
{
	struct binding_load *l = req->data;
	backend *p = l->p;

	p->binding_loading = false;
	if (p->stopping) {
		unseal_binding_unref(l->result);
		if (p->handles_closed)
			backend_free(p);
	} else if (status == 0 && l->err == 0) {
		unseal_binding_unref(p->binding);
		p->binding = l->result;
		if (p->binding->n_unreadable)
			snprintf(p->blind[BLIND_PCR_SIGNATURES], sizeof(p->blind[0]),
				 "%zu PCR signature file(s), first %.320s", p->binding->n_unreadable,
				 p->binding->unreadable);
		else
			p->blind[BLIND_PCR_SIGNATURES][0] = '\0';
		for (struct generation *g = p->gens; g; g = g->next)
			if (!g->kek)
				start_unseal(p, g);
	} else {
		unseal_binding_unref(l->result);
	}
	free(l->dir);
	free(l);
	if (!p->stopping && p->binding_again) {
		p->binding_again = false;
		load_binding(p);
	}
}

/* (Re)loads the PCR signatures; with any change the waiting generations
 * are tried again. One load at a time: a request meanwhile is served by
 * one more load after it. */
static void load_binding(backend *p)
{
	struct binding_load *l;

	if (!p->keys || !p->keys->pcr_key_len || p->stopping)
		return;
	if (p->binding_loading) {
		p->binding_again = true;
		return;
	}
	l = calloc(1, sizeof(*l));
	if (!l || !(l->dir = strdup(p->pcr_dir))) {
		free(l);
		log_warning("pcr signatures %s: out of memory; not read", p->pcr_dir);
		return;
	}
	l->p = p;
	l->keys = *p->keys;
	l->req.data = l;
	if (uv_queue_work(p->loop, &l->req, binding_work, binding_done) < 0) {
		free(l->dir);
		free(l);
		return;
	}
	p->binding_loading = true;
}

static void on_pcr_timer(uv_timer_t *t)
{
	load_binding(t->data);
}

static void on_pcr_dir_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	backend *p = h->data;

	if (status >= 0)
		uv_timer_start(&p->pcr_timer, on_pcr_timer, RELOAD_DEBOUNCE_MS, 0);
}

/* Keeps the state's keys and watches the signature directory once the
 * state binds generations to PCRs. */
static void apply_keys(backend *p, const struct state *st)
{
	if (!st->anchors.pcr_key_len)
		return;
	if (!p->keys)
		p->keys = calloc(1, sizeof(*p->keys));
	if (!p->keys)
		return;
	*p->keys = st->anchors;
	if (!p->pcr_watching) {
		int r = uv_fs_event_start(&p->pcr_watch, on_pcr_dir_event, p->pcr_dir, 0);

		if (r < 0)
			log_warning("cannot watch %s (%s): send SIGHUP after adding a PCR signature",
				    p->pcr_dir, uv_strerror(r));
		p->pcr_watching = r == 0;
	}
	load_binding(p);
}

/* Brings the in-memory generations in line with a freshly loaded state. */
static void apply_state(backend *p, const struct state *st)
{
	struct generation **pp = &p->gens;

	apply_keys(p, st);

	if (!tpm_name_equal(&st->srk_name, &p->srk_name))
		log_warning("%s/state now names another SRK; restart the daemon to use it",
			    p->state_dir);
	/* Retired generations go; their keys are wiped. */
	while (*pp) {
		struct generation *g = *pp;

		if (!state_find(st, g->number)) {
			*pp = g->next;
			log_info("generation %u retired", (unsigned)g->number);
			generation_free(g);
		} else {
			pp = &g->next;
		}
	}
	for (size_t i = 0; i < st->n_gens; i++) {
		const struct state_generation *sg = &st->gens[i];
		struct generation *g = find(p, sg->number);
		int r;

		if (g) {
			/* A reload is the operator's way to retry a broken one. */
			if (g->broken && !g->kek)
				g->broken = false;
			start_unseal(p, g);
			continue;
		}
		g = calloc(1, sizeof(*g));
		if (!g)
			continue;
		g->number = sg->number;
		g->kind = sg->kind;
		strcpy(g->key_id, sg->key_id);
		r = state_generation_read(p->state_dir, sg, &g->sealed);
		if (r < 0) {
			g->broken = true;
			log_error("generation %u: %s/%s is missing or damaged; it cannot decrypt, "
				  "other generations are served",
				  (unsigned)g->number, p->state_dir, sg->file);
		}
		g->next = p->gens;
		p->gens = g;
		start_unseal(p, g);
	}
	/* Escrow is looked at on reload only, never per call. */
	{
		char why[200];

		if (escrow_examine(p->state_dir, why, sizeof(why)) < 0) {
			snprintf(p->blind[BLIND_ESCROW], sizeof(p->blind[0]), "%.*s/escrow: %s", 100,
				 p->state_dir, why);
			log_error("cannot look at %s", p->blind[BLIND_ESCROW]);
		} else {
			p->blind[BLIND_ESCROW][0] = '\0';
		}
	}
	p->escrow_configured = escrow_configured(p->state_dir);
	for (struct generation *g = p->gens; g; g = g->next)
		g->escrowed = p->escrow_configured && escrow_has(p->state_dir, g->number);
	p->next_write_gen = st->write_generation;
	/* At start there is no key to keep using meanwhile; Status names the
	 * one being loaded and says it is not loaded yet. */
	if (!p->write_gen || !find(p, p->write_gen))
		p->write_gen = st->write_generation;
	check_ready(p);
}

void backend_reload(backend *p)
{
	struct state st;

	if (p->stopping)
		return;
	if (state_load(p->state_dir, &st) < 0) {
		char path[PATH_MAX + 8], why[200];

		snprintf(path, sizeof(path), "%s/state", p->state_dir);
		files_describe_access(path, why, sizeof(why));
		if (*why)
			snprintf(p->blind[BLIND_STATE], sizeof(p->blind[0]), "%.*s: %s", 100, path,
				 why);
		log_error("reload: keeping the generations already loaded");
		return;
	}
	p->blind[BLIND_STATE][0] = '\0';
	apply_state(p, &st);
	state_free(&st);
}

static void on_reload_timer(uv_timer_t *t)
{
	backend_reload(t->data);
}

/* The record is small and local: read on the loop, as the state is. */
static void load_audit(backend *p)
{
	struct auditrec *a = calloc(1, sizeof(*a));

	if (a && auditrec_load(p->state_dir, AUDITREC_LIVE, a) < 0) {
		free(a);
		a = NULL;
	}
	free(p->audit);
	p->audit = a;
}

static void on_state_dir_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	backend *p = h->data;

	if (status == 0 && filename && strcmp(filename, AUDITREC_LIVE) == 0) {
		load_audit(p);
		return;
	}

	/* rotate and retire replace "state" by rename. */
	if (status < 0 || !filename || strcmp(filename, "state") != 0)
		return;
	uv_timer_start(&p->reload_timer, on_reload_timer, RELOAD_DEBOUNCE_MS, 0);
}

static void on_counts_timer(uv_timer_t *t);

static void write_counts(backend *p)
{
	struct decrypt_counts *c = calloc(1, sizeof(*c));

	if (!c)
		return;
	c->pid = getpid();
	for (struct generation *g = p->gens; g && c->n < STATE_MAX_GENERATIONS; g = g->next) {
		c->gen[c->n] = g->number;
		c->count[c->n] = g->decrypts;
		c->loaded[c->n] = g->kek != NULL;
		c->n++;
	}
	if (counts_save(p->state_dir, c) == 0) {
		p->counts_dirty = false;
	} else if (!p->stopping) {
		/* Tried again a second later. */
		p->counts_dirty = true;
		uv_timer_start(&p->counts_timer, on_counts_timer, COUNTS_FLUSH_MS, 0);
	}
	free(c);
}

static void on_counts_timer(uv_timer_t *t)
{
	backend *p = t->data;

	if (p->counts_dirty)
		write_counts(p);
}

/* Escrow is configured and the write key is a `dup` generation without an
 * escrow file: its loss would not be recoverable. */
static bool escrow_missing(const backend *p, const struct generation *w)
{
	return p->escrow_configured && w && tpm_kek_duplicable(w->kind) && !w->escrowed;
}

/* The first thing the daemon could not look at, NULL when none. */
static const char *blind(const backend *p)
{
	for (size_t i = 0; i < BLIND_N; i++)
		if (p->blind[i][0])
			return p->blind[i];
	return NULL;
}

static void status(void *arg, const char **ret_healthz, const char **ret_key_id)
{
	backend *p = arg;
	struct generation *w = find(p, p->write_gen);

	*ret_key_id = w ? w->key_id : "";
	if (!tpm_worker_healthy(p->worker)) {
		*ret_healthz = tpm_worker_problem(p->worker);
	} else if (w && !w->kek && w->problem) {
		*ret_healthz = w->problem;
	} else if (!w || !w->kek) {
		snprintf(p->status_buf, sizeof(p->status_buf), "write key generation %u %s",
			 (unsigned)p->write_gen, w && w->broken ? "is unusable" : "not loaded yet");
		*ret_healthz = p->status_buf;
	} else if (blind(p)) {
		snprintf(p->status_buf, sizeof(p->status_buf), "cannot read %s", blind(p));
		*ret_healthz = p->status_buf;
	} else if (escrow_missing(p, w)) {
		snprintf(p->status_buf, sizeof(p->status_buf),
			 "write key generation %u is not escrowed (escrow is configured; run "
			 "tpm2-kms init)",
			 (unsigned)p->write_gen);
		*ret_healthz = p->status_buf;
	} else {
		*ret_healthz = "ok";
	}
}

/* What an allocation takes of OpenSSL's secure heap: a power of two, at
 * least its minimum block (secmem_init's 32). */
static size_t secure_block(size_t len)
{
	size_t b = 32;

	while (b < len)
		b *= 2;
	return b;
}

static void encrypt_free(struct encrypt_call *e)
{
	e->p->queued_secure -= e->held;
	secmem_free(e->plaintext, e->len);
	free(e);
}

static void on_counter(void *arg, int err, uint64_t counter)
{
	struct encrypt_call *e = arg;
	backend *p = e->p;
	struct generation *w = find(p, p->write_gen);
	struct kms_result res = {0};
	uint8_t out[ENVELOPE_MAX_BYTES];
	size_t out_len;

	if (err < 0) {
		res.error = err == -ETIMEDOUT ? -ETIMEDOUT : err == -ENOBUFS ? -ENOBUFS : -ENODEV;
		res.message = err == -ETIMEDOUT ? "deadline exceeded waiting for the TPM"
			      : err == -ENOBUFS ? "too many calls waiting for the TPM"
			      : err == -ECANCELED ? "shutting down"
						  : tpm_worker_problem(p->worker);
		if (!res.message || !*res.message)
			res.message = "tpm: error";
		goto done;
	}
	/* The key_id answered is the one Status reports at this moment. */
	if (!w || !w->kek) {
		res.error = -ENODEV;
		res.message = "write key not loaded";
		goto done;
	}
	res.error = envelope_seal(w->kek, w->number, counter, e->plaintext, e->len, out, &out_len);
	if (res.error < 0) {
		res.message = "encryption failed";
		goto done;
	}
	res.data = out;
	res.data_len = out_len;
	res.key_id = w->key_id;
done:
	e->done(e->token, &res);
	encrypt_free(e);
}

static void encrypt(void *arg, const uint8_t *plaintext, size_t len, uint64_t deadline_ms,
		    kms_complete_fn done, void *token)
{
	backend *p = arg;
	struct kms_result res = {0};
	struct encrypt_call *e;
	const char *health, *key_id;

	if (len > ENVELOPE_MAX_PLAINTEXT) {
		res.error = -EMSGSIZE;
		res.message = "plaintext larger than 958 bytes";
		done(token, &res);
		return;
	}
	status(p, &health, &key_id);
	if (strcmp(health, "ok") != 0) {
		res.error = -ENODEV;
		res.message = health;
		done(token, &res);
		return;
	}
	/* Waiting plaintexts may take half the secure heap, never the keys'
	 * half. */
	if (p->queued_secure + secure_block(len) > PLUGIN_QUEUED_SECURE_MAX) {
		res.error = -ENOBUFS;
		res.message = "too many calls waiting for the TPM";
		done(token, &res);
		return;
	}
	e = calloc(1, sizeof(*e));
	if (e)
		e->plaintext = secmem_alloc(len);
	if (!e || !e->plaintext) {
		free(e);
		res.error = -ENOMEM;
		res.message = "out of memory";
		done(token, &res);
		return;
	}
	memcpy(e->plaintext, plaintext, len);
	e->len = len;
	e->held = secure_block(len);
	p->queued_secure += e->held;
	e->p = p;
	e->done = done;
	e->token = token;
	res.error = tpm_worker_counter(p->worker, deadline_ms, on_counter, e);
	if (res.error < 0) {
		encrypt_free(e);
		res.message = res.error == -ENOBUFS ? "too many calls waiting for the TPM"
						    : "shutting down";
		if (res.error != -ENOBUFS)
			res.error = -ENODEV;
		done(token, &res);
	}
}

static const struct generation *find_key_id(const backend *p, const char *key_id)
{
	for (const struct generation *g = p->gens; g; g = g->next)
		if (strcmp(g->key_id, key_id) == 0)
			return g;
	return NULL;
}

static void decrypt(void *arg, const uint8_t *ct, size_t len, const char *key_id,
		    kms_complete_fn done, void *token)
{
	backend *p = arg;
	struct kms_result res = {.error = -EBADMSG, .message = DECRYPT_FAILED};
	struct generation *g;
	size_t out_len = 0;
	uint32_t number;

	/* Named from the request's key_id alone, before the ciphertext is
	 * looked at: it says nothing about the ciphertext, and "invalid
	 * ciphertext" for a key this node never had read as corruption. */
	if (key_id && !find_key_id(p, key_id)) {
		res.message = "unknown key_id: no key generation here has it (retired, not "
			      "imported yet, or another cluster's)";
		goto done;
	}
	if (envelope_generation(ct, len, &number) < 0)
		goto done;
	g = find(p, number);
	if (!g || (key_id && strcmp(key_id, g->key_id) != 0))
		goto done;
	if (!g->kek) {
		/* A key we have but cannot use yet is not the caller's fault. */
		res.error = -ENODEV;
		res.message = g->broken	   ? "key generation unusable"
			      : g->problem ? g->problem
					   : "key generation not loaded yet";
		goto done;
	}
	/* envelope_generation() bounded len by ENVELOPE_MAX_BYTES. */
	if (envelope_open(g->kek, ct, len, p->plain, &out_len) < 0)
		goto done;
	res.error = 0;
	res.message = NULL;
	res.data = p->plain;
	res.data_len = out_len;
	res.key_id = g->key_id;
	/* The first use of a generation is written at once, so `retire`
	 * sees it; later counts within a second. */
	if (g->decrypts++ == 0)
		write_counts(p);
	else if (!p->counts_dirty) {
		p->counts_dirty = true;
		uv_timer_start(&p->counts_timer, on_counts_timer, COUNTS_FLUSH_MS, 0);
	}
done:
	done(token, &res);
	util_wipe(p->plain, out_len);
}

/* The last audit of etcd: what `retire` relies on, and its age (an alert
 * asks for a fresh one after a rotation). */
static void collect_audit(const backend *p, struct metrics_out *out)
{
	const struct auditrec *a = p->audit;

	metrics_gauge(out, "tpm2kms_audit_timestamp_seconds",
		      "When the last audit of etcd (tpm2-kms audit) began, Unix time; 0: none.",
		      a ? a->started : 0);
	metrics_gauge(out, "tpm2kms_audit_complete",
		      "1 when the last audit read every key under the prefix.", a && a->complete);
	metrics_gauge(out, "tpm2kms_audit_undecryptable_objects",
		      "KMS v2 objects the last audit found that do not decrypt here.",
		      a ? a->undecryptable : 0);
	metrics_family(out, "tpm2kms_audit_objects", "gauge",
	               "Objects the last audit found under each generation of this node.");
	for (size_t i = 0; a && i < a->n_gens; i++)
		metrics_printf(out, "tpm2kms_audit_objects{generation=\"%u\"} %llu\n",
		               (unsigned)a->gen[i], (unsigned long long)a->gen_objects[i]);
}

/* The generations, one line each per family. */
static void collect_generations(const backend *p, struct metrics_out *out)
{
	metrics_family(out, "tpm2kms_kek_generation_info", "gauge",
		       "Key generations known: key_id and state (write, decrypt-only, "
		       "loading, unusable).");
	for (struct generation *g = p->gens; g; g = g->next)
		metrics_printf(out,
			       "tpm2kms_kek_generation_info{generation=\"%u\",key_id=\"%s\","
			       "state=\"%s\"} 1\n",
			       (unsigned)g->number, g->key_id,
			       !g->kek	       ? (g->broken ? "unusable" : "loading")
			       : g->number == p->write_gen ? "write"
							   : "decrypt-only");
	metrics_family(out, "tpm2kms_kek_generation_escrowed", "gauge",
		       "1 for a dup generation with an escrow file (escrow configured).");
	for (struct generation *g = p->gens; g; g = g->next)
		if (tpm_kek_duplicable(g->kind) && p->escrow_configured)
			metrics_printf(out, "tpm2kms_kek_generation_escrowed{generation=\"%u\"} %d\n",
				       (unsigned)g->number, g->escrowed);
	metrics_family(out, "tpm2kms_decrypts_total", "counter",
		       "Successful Decrypt calls per key generation since start.");
	for (struct generation *g = p->gens; g; g = g->next)
		metrics_printf(out, "tpm2kms_decrypts_total{generation=\"%u\"} %llu\n",
			       (unsigned)g->number, (unsigned long long)g->decrypts);
}

/* Every metric family; /metrics shows them in this order. */
static void collect(void *arg, struct metrics_out *out)
{
	backend *p = arg;
	const char *healthz, *key_id;
	unsigned no_approval = 0, not_loaded = 0, waiting = 0;

	status(p, &healthz, &key_id);
	for (struct generation *g = p->gens; g; g = g->next) {
		no_approval += !g->kek && g->problem != NULL;
		not_loaded += !g->kek;
	}
	for (struct waiter *w = p->waiters; w; w = w->next)
		waiting++;
	metrics_gauge(out, "tpm2kms_status_ok",
		      "1 while Status answers healthz \"ok\" (its reason is in the log and "
		      "`tpm2-kms status`).",
		      strcmp(healthz, "ok") == 0);
	metrics_gauge(out, "tpm2kms_start_time_seconds",
		      "When this daemon started, Unix time (restarts show as changes).",
		      (unsigned long long)p->started_at);
	metrics_gauge(out, "tpm2kms_tpm_up", "1 while the last TPM probe succeeded.",
		      p->worker && tpm_worker_healthy(p->worker));
	metrics_gauge(out, "tpm2kms_nonce_value",
		      "Last NV counter value used for a nonce (0: none since start).",
		      p->worker ? tpm_worker_last_counter(p->worker) : 0);
	metrics_gauge(out, "tpm2kms_escrow_missing",
		      "1 while escrow is configured and the write key generation is not escrowed.",
		      escrow_missing(p, find(p, p->write_gen)));
	metrics_gauge(out, "tpm2kms_pcr_approval_missing",
		      "Boot-state-bound generations waiting for a signature that approves the "
		      "current PCR values.",
		      no_approval);
	metrics_gauge(out, "tpm2kms_kek_generations_not_loaded",
		      "Key generations known but not unsealed (loading or unusable).", not_loaded);
	metrics_family(out, "tpm2kms_state_unreadable", "gauge",
		       "1 while the daemon cannot read what it must check (the state file, the "
		       "escrow directory, PCR signature files): owner or mode.");
	for (size_t i = 0; i < BLIND_N; i++)
		metrics_printf(out, "tpm2kms_state_unreadable{what=\"%s\"} %d\n", blind_names[i],
			       p->blind[i][0] != '\0');
	collect_audit(p, out);
	metrics_gauge(out, "tpm2kms_calls_waiting_for_start",
		      "Calls held until the start is over (keys unsealed or the hold window "
		      "ended).",
		      waiting);
	collect_generations(p, out);
}

static const struct kms_backend_ops ops = {
	.status = status,
	.encrypt = encrypt,
	.decrypt = decrypt,
	.started = started,
	.when_started = when_started,
	.max_plaintext = ENVELOPE_MAX_PLAINTEXT,
	.max_ciphertext = ENVELOPE_MAX_BYTES,
};

const struct kms_backend_ops *backend_ops(void)
{
	return &ops;
}

int backend_new(uv_loop_t *loop, const struct backend_config *cfg, const struct state *st,
	       backend **ret)
{
	struct tpm_worker_config wc = {
		.tcti = cfg->tcti,
		.nv_index = st->nv_index,
		.srk_name = st->srk_name,
		.probe_interval_ms = cfg->probe_interval_ms,
		.max_queue = cfg->max_tpm_queue,
		.command_timeout_ms = cfg->tpm_command_timeout_ms,
	};
	backend *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->loop = loop;
	p->started_at = util_now_realtime_s();
	p->srk_name = st->srk_name;
	p->on_ready = cfg->on_ready;
	p->on_health_change = cfg->on_health;
	p->ready_arg = cfg->ready_arg;
	p->state_dir = strdup(cfg->state_dir);
	p->pcr_dir = strdup(cfg->pcr_signatures ? cfg->pcr_signatures : UNSEAL_DEFAULT_DIR);
	p->plain = secmem_alloc(ENVELOPE_MAX_BYTES);
	if (!p->state_dir || !p->plain || !p->pcr_dir) {
		secmem_free(p->plain, ENVELOPE_MAX_BYTES);
		free(p->state_dir);
		free(p->pcr_dir);
		free(p);
		return -ENOMEM;
	}
	uv_timer_init(loop, &p->reload_timer);
	uv_timer_init(loop, &p->counts_timer);
	uv_timer_init(loop, &p->retry_timer);
	uv_timer_init(loop, &p->pcr_timer);
	uv_timer_init(loop, &p->hold_timer);
	uv_fs_event_init(loop, &p->pcr_watch);
	p->reload_timer.data = p->counts_timer.data = p->retry_timer.data = p;
	p->pcr_timer.data = p->pcr_watch.data = p->hold_timer.data = p;
	p->handles = (struct handle_group){.all_closed = on_all_closed, .arg = p};
	/* The loop's clock dates from before provisioning, which a slow TPM
	 * can make last seconds: the hold window starts now. */
	uv_update_time(loop);
	p->start_ms = uv_now(loop);
	uv_fs_event_init(loop, &p->watch);
	p->watch.data = p;
	r = uv_fs_event_start(&p->watch, on_state_dir_event, p->state_dir, 0);
	if (r < 0)
		log_warning("cannot watch %s (%s): send SIGHUP after rotate or retire",
			    p->state_dir, uv_strerror(r));
	r = tpm_worker_start(loop, &wc, on_health, p, &p->worker);
	if (r < 0) {
		backend_stop(p);
		return r;
	}
	apply_state(p, st);
	load_audit(p);
	/* Tells `keys` and `retire` that a daemon is counting from now on. */
	write_counts(p);
	metrics_add_collector(collect, p);
	*ret = p;
	return 0;
}

static void on_all_closed(void *arg)
{
	backend *p = arg;

	p->handles_closed = true;
	/* A signature load still running frees us when it is done. */
	if (!p->binding_loading)
		backend_free(p);
}

static void backend_free(backend *p)
{
	while (p->gens) {
		struct generation *g = p->gens;

		p->gens = g->next;
		generation_free(g);
	}
	secmem_free(p->plain, ENVELOPE_MAX_BYTES);
	unseal_binding_unref(p->binding);
	free(p->keys);
	free(p->audit);
	free(p->pcr_dir);
	free(p->state_dir);
	free(p);
}

void backend_stop(backend *p)
{
	if (p->stopping)
		return;
	metrics_remove_collector(collect, p);
	/* Held calls go to the backend while it still has a worker to refuse
	 * them. */
	release_waiters(p, true);
	p->stopping = true;
	/* Pending Encrypts complete (with errors) before the worker goes. */
	tpm_worker_stop(p->worker);
	p->worker = NULL;
	if (p->counts_dirty)
		write_counts(p);
	handle_group_close(&p->handles, (uv_handle_t *)&p->watch);
	handle_group_close(&p->handles, (uv_handle_t *)&p->reload_timer);
	handle_group_close(&p->handles, (uv_handle_t *)&p->counts_timer);
	handle_group_close(&p->handles, (uv_handle_t *)&p->retry_timer);
	handle_group_close(&p->handles, (uv_handle_t *)&p->pcr_timer);
	handle_group_close(&p->handles, (uv_handle_t *)&p->pcr_watch);
	handle_group_close(&p->handles, (uv_handle_t *)&p->hold_timer);
}
