/* The daemon's provisioning at start, on a thread the start can give up
 * on. A TPM that accepts the connection and never answers must not keep
 * the daemon from binding its socket and telling systemd it is ready: not
 * every TCTI honours a receive timeout (tcti-swtpm reads without one), so
 * the bound is kept by the waiting thread's clock, not by the TCTI. Must
 * not: touch the loop (it runs before it). */
#ifndef TPM2KMS_STARTUP_H
#define TPM2KMS_STARTUP_H

#include "admin/keyadmin.h"
#include "keys/statedir.h"

#include <stdbool.h>
#include <stdint.h>

/* keyadmin_provision(dir, tcti, c), with each TPM command given
 * answer_within_ms. Past that, -ETIMEDOUT: the thread is left behind,
 * cancelled (should the command ever answer, it sends no further one and
 * unwinds), and the caller serves what the state holds. Logs. */
int startup_provision(const char *dir, const char *tcti, const struct keyadmin_config *c,
		      uint32_t answer_within_ms, struct state *ret);

/* A provisioning thread is still stuck in a TPM command: exit handlers
 * must not tear down what it uses (exit with _exit). */
bool startup_left_behind(void);

#endif
