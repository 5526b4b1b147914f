/* Test helper: a private swtpm per test, in its own temp dir, over Unix
 * sockets; started and killed at will. Readiness is polled, not slept. */
#ifndef TPM2KMS_TEST_SWTPM_H
#define TPM2KMS_TEST_SWTPM_H

#include <stdbool.h>
#include <sys/types.h>

struct swtpm {
	char dir[64];      /* temp dir holding everything */
	char state[96];    /* --tpmstate dir */
	char sock[96];
	char tcti[128];    /* "swtpm:path=..." */
	pid_t pid;
};

/* Creates the temp dir; optionally runs swtpm_setup --create-spk first
 * (an RSA-2048 SRK at 0x81000001, as a vendor-provisioned TPM has). */
int swtpm_init(struct swtpm *s, bool with_setup_spk);
int swtpm_start(struct swtpm *s);
void swtpm_kill(struct swtpm *s, int sig); /* and reap */
void swtpm_cleanup(struct swtpm *s);       /* kill, remove dir */

#endif
