/* tpm2-kms doctor: what operators get wrong, found before they read a
 * guide. Each check has a stable ID (tpm.reachable, state.owner, ...), a
 * level (ok, skipped, warning, error), a one-line finding and the fix. The
 * service user is taken to be the state directory's owner; the apiserver's
 * user is read from a running kube-apiserver's /proc entry, and the daemon
 * is asked Status, Encrypt and Decrypt as that user, so the socket's
 * permissions are tested as the apiserver meets them.
 * Must not: change anything (it reads, asks, and reports). */
#ifndef TPM2KMS_DOCTOR_H
#define TPM2KMS_DOCTOR_H

#include "cli/settings.h"

/* Exit statuses: the worst finding. */
#define DOCTOR_EXIT_WARNING 3
#define DOCTOR_EXIT_ERROR   4

/* Runs every check and prints the report (text, or JSON with --output
 * json) on standard output. Returns 0, DOCTOR_EXIT_WARNING or
 * DOCTOR_EXIT_ERROR, or a negative errno when it could not run. */
int doctor_run(const struct settings *s);

#endif
