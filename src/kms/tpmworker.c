#include "config.h"

#include "base/handles.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/secmem.h"
#include "kms/tpmworker.h"
#include "base/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#define RECONNECT_MIN_MS 250u
#define RECONNECT_MAX_MS 4000u
#define WATCHDOG_TICK_MS 500u
/* How long stop waits for a running command before leaving it behind. */
#define STOP_GRACE_MS    3000u

enum job_kind {
	JOB_PROBE,
	JOB_COUNTER,
	JOB_UNSEAL,
};

struct job {
	struct job *next;
	enum job_kind kind;
	uint64_t deadline_us; /* monotonic; 0: none */
	uint64_t duration_us;
	uint32_t rc; /* TSS2_RC of a failure, 0 when none is known */
	struct tpm_command_timing timings[TPM_TIMINGS_MAX];
	size_t n_timings;
	int err;
	uint64_t value;
	struct tpm_sealed sealed;
	enum tpm_kek_kind kek_kind;
	struct pcr_binding *binding; /* a reference; NULL for none/dup */
	struct tpm_pcr_values values;
	uint8_t *kek; /* secure heap */
	tpm_counter_fn counter_cb;
	tpm_unseal_fn unseal_cb;
	void *arg;
};

struct tpm_worker {
	uv_loop_t *loop;
	struct tpm_worker_config cfg;
	char *tcti;
	tpm_health_fn on_health;
	void *arg;

	/* Shared with the thread, under lock. */
	uv_mutex_t lock;
	uv_cond_t cond;
	struct job *queue, **queue_tail;
	struct job *done, **done_tail;
	size_t queued;
	bool stopping;

	/* Thread only. */
	tpm *t;

	/* Written by the thread's TPM layer, read by the loop's watchdog. */
	struct tpm_watch tpm_watch;
	/* The job the thread runs now (under lock), so that stop can answer
	 * it when it leaves the thread behind. */
	struct job *running;
	struct tpm_worker *next_abandoned;
	/* Set by stop when it leaves a stuck thread behind: the thread must
	 * then touch nothing of the loop's. */
	_Atomic bool abandoned;

	/* Loop only. */
	uv_thread_t thread;
	uv_async_t async;
	uv_timer_t probe_timer;
	uv_timer_t watchdog;
	bool stalled;
	uint64_t stalled_since;
	char stall_problem[64];
	bool probe_pending;
	bool probed; /* a probe has finished, one way or the other */
	bool healthy;
	const char *problem;
	uint32_t backoff_ms;
	uint64_t last_counter;
	struct handle_group handles;
};

static void job_free(struct job *j)
{
	unseal_binding_unref(j->binding);
	secmem_free(j->kek, TPM_KEK_BYTES);
	util_wipe(&j->sealed, sizeof(j->sealed));
	free(j);
}

/* Thread: make sure there is a TPM connection with the right SRK. */
static int ensure_connected(tpm_worker *w)
{
	int r;

	if (w->t)
		return 0;
	/* Watched from its first command: connecting can hang too. */
	r = tpm_open_watched(w->tcti, &w->tpm_watch, &w->t);
	if (r < 0)
		return r;
	r = tpm_srk_check(w->t, &w->cfg.srk_name);
	if (r < 0) {
		tpm_close(w->t);
		w->t = NULL;
		return r;
	}
	log_info("tpm: connected (%s)", w->tcti);
	return 0;
}

static void run_job(tpm_worker *w, struct job *j)
{
	uint64_t start = util_now_monotonic_us();
	int r;

	if (j->deadline_us && util_now_monotonic_us() >= j->deadline_us) {
		j->err = -ETIMEDOUT;
		return;
	}
	r = ensure_connected(w);
	if (r == 0) {
		switch (j->kind) {
		case JOB_PROBE:
			r = tpm_srk_check(w->t, &w->cfg.srk_name);
			break;
		case JOB_COUNTER:
			r = tpm_nv_counter_next(w->t, w->cfg.nv_index,
						j->deadline_us ? j->deadline_us
							       : util_now_monotonic_us() +
									 30000000u,
						&j->value);
			break;
		case JOB_UNSEAL:
			j->kek = secmem_alloc(TPM_KEK_BYTES);
			r = j->kek ? unseal_kek(w->t, j->binding, &j->sealed, j->kek_kind, j->kek,
						      &j->values)
				   : -ENOMEM;
			break;
		}
	}
	j->duration_us = util_now_monotonic_us() - start;
	if (w->t)
		j->n_timings = tpm_take_timings(w->t, j->timings, TPM_TIMINGS_MAX);
	if (r < 0 && w->t)
		j->rc = tpm_last_error(w->t);
	/* A broken connection is rebuilt from scratch on the next job. So is
	 * one where the software stack failed (tpm2-tss out of memory, say):
	 * ESAPI may be left mid-command and refuse the next one. */
	if (w->t && r < 0 && (r == -EIO || tpm_needs_reset(w->t))) {
		tpm_close(w->t);
		w->t = NULL;
	}
	j->err = r;
}

static void thread_main(void *arg)
{
	tpm_worker *w = arg;
	sigset_t all;

	/* The loop's signals (SIGTERM, SIGHUP) are for the loop thread: one
	 * delivered here would interrupt the TPM I/O of a command in flight. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);

	uv_mutex_lock(&w->lock);
	for (;;) {
		struct job *j;

		while (!w->queue && !w->stopping)
			uv_cond_wait(&w->cond, &w->lock);
		if (w->stopping)
			break;
		j = w->queue;
		w->queue = j->next;
		if (!w->queue)
			w->queue_tail = &w->queue;
		w->queued--;
		w->running = j;
		uv_mutex_unlock(&w->lock);

		run_job(w, j);

		uv_mutex_lock(&w->lock);
		w->running = NULL;
		if (w->abandoned) {
			/* stop gave up on us: the loop's handles are gone. */
			job_free(j);
			uv_mutex_unlock(&w->lock);
			return;
		}
		j->next = NULL;
		*w->done_tail = j;
		w->done_tail = &j->next;
		uv_async_send(&w->async);
	}
	uv_mutex_unlock(&w->lock);
	tpm_close(w->t);
	w->t = NULL;
}

static void schedule_probe(tpm_worker *w, uint32_t delay_ms);

/* Workers whose thread stop left behind, stuck in a TPM command. */
static tpm_worker *abandoned_workers;

static const char *problem_of(int err)
{
	switch (err) {
	case -EKEYREJECTED:
		return "tpm: storage root key changed (TPM cleared or replaced)";
	case -ENOENT:
		return "tpm: storage root key 0x81000001 missing";
	case -ETIMEDOUT:
		return "tpm: not answering in time";
	case -EIO:
		return "tpm: unreachable";
	default:
		return "tpm: error";
	}
}

static void set_health(tpm_worker *w, bool healthy, const char *problem)
{
	bool changed = healthy != w->healthy || problem != w->problem;

	if (healthy != w->healthy) {
		if (healthy)
			log_info("tpm: healthy");
		else
			log_warning("%s", problem);
	}
	w->healthy = healthy;
	w->problem = problem;
	if (changed && w->on_health)
		w->on_health(w->arg, healthy);
}

/* Queues j for the worker thread; a job refused (stopping, queue full) is
 * freed here. */
static int submit(tpm_worker *w, struct job *j)
{
	uv_mutex_lock(&w->lock);
	if (w->stopping || (j->kind != JOB_PROBE && w->queued >= w->cfg.max_queue)) {
		int r = w->stopping ? -ECANCELED : -ENOBUFS;

		uv_mutex_unlock(&w->lock);
		job_free(j);
		return r;
	}
	j->next = NULL;
	*w->queue_tail = j;
	w->queue_tail = &j->next;
	w->queued++;
	uv_cond_signal(&w->cond);
	uv_mutex_unlock(&w->lock);
	return 0;
}

static const char *const job_names[] = {"probe", "counter", "unseal"};

static void complete(tpm_worker *w, struct job *j)
{
	if (j->err != -ECANCELED && !(j->err == -ETIMEDOUT && j->duration_us == 0)) {
		char code[24] = "";

		if (j->err < 0 && j->rc)
			snprintf(code, sizeof(code), "0x%08x", (unsigned)j->rc);
		else if (j->err < 0)
			snprintf(code, sizeof(code), "%s", j->err == -EIO ? "unreachable" : "other");
		metrics_tpm(job_names[j->kind], j->duration_us, code);
	}
	for (size_t i = 0; i < j->n_timings; i++) {
		const char *name = tpm_command_name(j->timings[i].command);
		char other[16];

		if (!name) {
			snprintf(other, sizeof(other), "0x%08x", (unsigned)j->timings[i].command);
			name = other;
		}
		metrics_tpm_command(name, j->timings[i].duration_us);
	}
	switch (j->kind) {
	case JOB_PROBE:
		w->probe_pending = false;
		w->probed = true;
		if (j->err == 0) {
			w->backoff_ms = 0;
			set_health(w, true, "");
			schedule_probe(w, w->cfg.probe_interval_ms);
		} else {
			set_health(w, false, problem_of(j->err));
			w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : RECONNECT_MIN_MS;
			if (w->backoff_ms > RECONNECT_MAX_MS)
				w->backoff_ms = RECONNECT_MAX_MS;
			schedule_probe(w, w->backoff_ms);
		}
		break;
	case JOB_COUNTER:
		if (j->err == 0)
			w->last_counter = j->value;
		j->counter_cb(j->arg, j->err, j->value);
		break;
	case JOB_UNSEAL:
		j->unseal_cb(j->arg, j->err, j->err == 0 ? j->kek : NULL,
			     j->err == -ENOKEY ? &j->values : NULL);
		break;
	}
	/* Any TPM trouble: find out now whether the TPM is still there. */
	if (j->kind != JOB_PROBE && j->err < 0 && j->err != -ECANCELED &&
	    j->err != -EINVAL && j->err != -ENOKEY && !w->stopping)
		schedule_probe(w, 0);
}

/* A command the TPM has not answered for command_timeout_ms: Status is
 * not ok and Encrypt fails fast until it answers (the job then ends and a
 * probe follows). */
static void on_watchdog(uv_timer_t *t)
{
	tpm_worker *w = t->data;
	uint64_t since = w->tpm_watch.since_us, now = util_now_monotonic_us();

	if (w->stalled) {
		/* Answered: the next command has another start, or none runs. */
		if (since != w->stalled_since) {
			w->stalled = false;
			schedule_probe(w, 0);
		}
		return;
	}
	if (since && now - since > (uint64_t)w->cfg.command_timeout_ms * 1000u) {
		snprintf(w->stall_problem, sizeof(w->stall_problem),
			 "tpm: a command has not answered for %u s",
			 (unsigned)((now - since) / 1000000u));
		w->stalled = true;
		w->stalled_since = since;
		set_health(w, false, w->stall_problem);
	}
}

static void on_async(uv_async_t *a)
{
	tpm_worker *w = a->data;
	struct job *list;

	uv_mutex_lock(&w->lock);
	list = w->done;
	w->done = NULL;
	w->done_tail = &w->done;
	uv_mutex_unlock(&w->lock);
	while (list) {
		struct job *j = list;

		list = j->next;
		complete(w, j);
		job_free(j);
	}
}

static void on_probe_timer(uv_timer_t *t)
{
	tpm_worker *w = t->data;
	struct job *j;

	if (w->probe_pending || w->stopping)
		return;
	j = calloc(1, sizeof(*j));
	if (!j) {
		schedule_probe(w, RECONNECT_MIN_MS);
		return;
	}
	j->kind = JOB_PROBE;
	if (submit(w, j) < 0)
		return;
	w->probe_pending = true;
}

static void schedule_probe(tpm_worker *w, uint32_t delay_ms)
{
	if (w->probe_pending)
		return;
	/* An earlier probe replaces a later one. */
	if (uv_is_active((uv_handle_t *)&w->probe_timer) &&
	    uv_timer_get_due_in(&w->probe_timer) <= delay_ms)
		return;
	uv_timer_start(&w->probe_timer, on_probe_timer, delay_ms, 0);
}

static void close_handles(tpm_worker *w);

int tpm_worker_start(uv_loop_t *loop, const struct tpm_worker_config *cfg, tpm_health_fn on_health,
		     void *arg, tpm_worker **ret)
{
	tpm_worker *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->loop = loop;
	w->cfg = *cfg;
	w->tcti = strdup(cfg->tcti);
	if (!w->tcti) {
		free(w);
		return -ENOMEM;
	}
	w->cfg.tcti = w->tcti;
	w->on_health = on_health;
	w->arg = arg;
	w->problem = "tpm: not probed yet";
	w->queue_tail = &w->queue;
	w->done_tail = &w->done;
	uv_mutex_init(&w->lock);
	uv_cond_init(&w->cond);
	uv_async_init(loop, &w->async, on_async);
	w->async.data = w;
	uv_timer_init(loop, &w->probe_timer);
	w->probe_timer.data = w;
	uv_timer_init(loop, &w->watchdog);
	w->watchdog.data = w;
	if (!w->cfg.command_timeout_ms)
		w->cfg.command_timeout_ms = 10000;
	r = uv_thread_create(&w->thread, thread_main, w);
	if (r < 0) {
		log_error("tpm: cannot start worker thread: %s", uv_strerror(r));
		/* w frees itself once its handles are closed. */
		close_handles(w);
		return r;
	}
	schedule_probe(w, 0);
	uv_timer_start(&w->watchdog, on_watchdog, WATCHDOG_TICK_MS, WATCHDOG_TICK_MS);
	*ret = w;
	return 0;
}

static void on_all_closed(void *arg)
{
	tpm_worker *w = arg;

	/* An abandoned thread may still use the rest: the process exit ends
	 * both. */
	if (w->abandoned)
		return;
	uv_cond_destroy(&w->cond);
	uv_mutex_destroy(&w->lock);
	free(w->tcti);
	free(w);
}

static void close_handles(tpm_worker *w)
{
	w->handles = (struct handle_group){.all_closed = on_all_closed, .arg = w};
	handle_group_close(&w->handles, (uv_handle_t *)&w->async);
	handle_group_close(&w->handles, (uv_handle_t *)&w->probe_timer);
	handle_group_close(&w->handles, (uv_handle_t *)&w->watchdog);
}

/* Joins the thread if it ends within ms. */
static bool join_within(tpm_worker *w, uint32_t ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000u;
	until.tv_nsec += (long)(ms % 1000u) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	return pthread_timedjoin_np(w->thread, NULL, &until) == 0;
}

void tpm_worker_stop(tpm_worker *w)
{
	struct job *cancelled, stuck = {0};
	bool have_stuck = false;

	if (!w)
		return;
	uv_mutex_lock(&w->lock);
	w->stopping = true;
	cancelled = w->queue;
	w->queue = NULL;
	w->queue_tail = &w->queue;
	w->queued = 0;
	uv_cond_signal(&w->cond);
	uv_mutex_unlock(&w->lock);
	if (!join_within(w, STOP_GRACE_MS)) {
		log_error("tpm: a command has not answered; stopping without it");
		uv_mutex_lock(&w->lock);
		w->abandoned = true;
		/* Should the command ever answer, nothing more is sent. */
		w->tpm_watch.cancelled = true;
		/* The thread keeps (and frees) its job; its caller is
		 * answered from a copy of what completing reads. */
		if (w->running) {
			stuck.kind = w->running->kind;
			stuck.counter_cb = w->running->counter_cb;
			stuck.unseal_cb = w->running->unseal_cb;
			stuck.arg = w->running->arg;
			have_stuck = true;
		}
		uv_mutex_unlock(&w->lock);
		pthread_detach(w->thread);
		/* The thread keeps using the worker until the process exits. */
		w->next_abandoned = abandoned_workers;
		abandoned_workers = w;
	}

	/* Finished jobs first, then the cancelled ones. */
	on_async(&w->async);
	while (cancelled) {
		struct job *j = cancelled;

		cancelled = j->next;
		j->err = -ECANCELED;
		complete(w, j);
		job_free(j);
	}
	if (have_stuck) {
		stuck.err = -ECANCELED;
		complete(w, &stuck);
	}
	uv_timer_stop(&w->probe_timer);
	close_handles(w);
}

bool tpm_worker_left_behind(void)
{
	return abandoned_workers != NULL;
}

bool tpm_worker_probed(const tpm_worker *w)
{
	return w->probed;
}

bool tpm_worker_healthy(const tpm_worker *w)
{
	return w->healthy;
}

const char *tpm_worker_problem(const tpm_worker *w)
{
	return w->healthy ? "" : w->problem;
}

int tpm_worker_counter(tpm_worker *w, uint64_t deadline_ms, tpm_counter_fn cb, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->kind = JOB_COUNTER;
	if (deadline_ms) {
		uint64_t now = uv_now(w->loop);

		j->deadline_us = util_now_monotonic_us() +
				 (deadline_ms > now ? (deadline_ms - now) * 1000u : 0);
	}
	j->counter_cb = cb;
	j->arg = arg;
	return submit(w, j);
}

int tpm_worker_unseal(tpm_worker *w, const struct tpm_sealed *s, enum tpm_kek_kind kind,
		      struct pcr_binding *binding, tpm_unseal_fn cb, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	if (binding)
		j->binding = unseal_binding_ref(binding);
	j->kind = JOB_UNSEAL;
	j->sealed = *s;
	j->kek_kind = kind;
	j->unseal_cb = cb;
	j->arg = arg;
	return submit(w, j);
}

uint64_t tpm_worker_last_counter(const tpm_worker *w)
{
	return w->last_counter;
}
