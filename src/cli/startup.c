#include "config.h"

#include "base/log.h"
#include "cli/startup.h"
#include "base/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define POLL_NS (100u * 1000u * 1000u)

/* Shared by the start and the provisioning thread, under lock; freed by
 * whichever of them lets go last. */
struct provision_run {
	uv_mutex_t lock;
	uv_cond_t cond;
	const char *dir, *tcti;
	struct keyadmin_config kc;
	/* The admin key is copied: an abandoned thread outlives the caller's
	 * buffer. */
	uint8_t admin[STATE_ADMIN_KEY_MAX];
	struct tpm_watch watch;
	struct state st;
	int r;
	bool done;
	bool abandoned;
};

static _Atomic bool left_behind;

static void run_free(struct provision_run *run)
{
	state_free(&run->st);
	uv_cond_destroy(&run->cond);
	uv_mutex_destroy(&run->lock);
	util_wipe(run->admin, sizeof(run->admin));
	free(run);
}

static void provision_main(void *arg)
{
	struct provision_run *run = arg;
	struct state st = {0};
	sigset_t all;
	bool abandoned;
	int r;

	/* Signals are the loop's: none interrupts a TPM command here. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);

	r = keyadmin_provision(run->dir, run->tcti, &run->kc, &st);
	uv_mutex_lock(&run->lock);
	run->r = r;
	run->st = st;
	run->done = true;
	abandoned = run->abandoned;
	uv_cond_signal(&run->cond);
	uv_mutex_unlock(&run->lock);
	if (abandoned) {
		log_info("tpm: the start's provisioning ended after all (%s)",
			 r < 0 ? strerror(-r) : "done");
		run_free(run);
	}
}

int startup_provision(const char *dir, const char *tcti, const struct keyadmin_config *c,
		      uint32_t answer_within_ms, struct state *ret)
{
	struct provision_run *run;
	uv_thread_t thread;
	bool gave_up = false;
	int r;

	if (c->admin_key_len > sizeof(run->admin))
		return -EINVAL;
	run = calloc(1, sizeof(*run));
	if (!run)
		return -ENOMEM;
	run->dir = dir;
	run->tcti = tcti;
	run->kc = *c;
	if (c->admin_key) {
		memcpy(run->admin, c->admin_key, c->admin_key_len);
		run->kc.admin_key = run->admin;
	}
	run->kc.watch = &run->watch;
	uv_mutex_init(&run->lock);
	uv_cond_init(&run->cond);
	r = uv_thread_create(&thread, provision_main, run);
	if (r < 0) {
		log_error("cannot start the provisioning thread: %s", uv_strerror(r));
		run_free(run);
		return r;
	}
	uv_mutex_lock(&run->lock);
	while (!run->done) {
		uint64_t since;

		(void)uv_cond_timedwait(&run->cond, &run->lock, POLL_NS);
		since = run->watch.since_us;
		if (!run->done && since &&
		    util_now_monotonic_us() - since > (uint64_t)answer_within_ms * 1000u) {
			run->abandoned = true;
			run->watch.cancelled = true;
			gave_up = true;
			break;
		}
	}
	uv_mutex_unlock(&run->lock);
	if (gave_up) {
		/* The thread frees run when its command ends, if it ever does. */
		pthread_detach(thread);
		left_behind = true;
		log_error("tpm: no answer within %u ms at start; serving what the state holds "
			  "(configuration changes apply at the next start)",
			  (unsigned)answer_within_ms);
		return -ETIMEDOUT;
	}
	uv_thread_join(&thread);
	r = run->r;
	if (r == 0) {
		*ret = run->st;
		memset(&run->st, 0, sizeof(run->st));
	}
	run_free(run);
	return r;
}

bool startup_left_behind(void)
{
	return left_behind;
}
