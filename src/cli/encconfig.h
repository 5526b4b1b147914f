/* Reading kube-apiserver's EncryptionConfiguration (its
 * --encryption-provider-config file) for `doctor`: which providers the
 * entries covering Secrets list, in order, and what a KMS provider says.
 * YAML in block style, as kube-apiserver's documentation and
 * `tpm2-kms encryption-config` write it; flow collections beyond `{}` and
 * multi-document files are reported as unreadable, never guessed at.
 * Must not: talk to anything. */
#ifndef TPM2KMS_ENCCONFIG_H
#define TPM2KMS_ENCCONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define ENCCONFIG_MAX_PROVIDERS 16

struct encconfig_provider {
	char type[32];      /* kms, identity, aescbc, aesgcm, secretbox */
	char name[128];     /* kms: name */
	char endpoint[512]; /* kms: endpoint */
	char api_version[16];
	char timeout[32];
};

/* The providers of the first resources entry that covers secrets. */
struct encconfig {
	bool is_encryption_config; /* apiVersion and kind as expected */
	bool covers_secrets;
	struct encconfig_provider providers[ENCCONFIG_MAX_PROVIDERS];
	size_t n_providers;
};

/* Parses text (len bytes, NUL after). -EINVAL with a reason (and its line
 * number in *ret_line) for what it cannot read. */
int encconfig_parse(const char *text, size_t len, struct encconfig *ret, const char **ret_why,
		    unsigned *ret_line);

/* A Go duration as kube-apiserver takes it ("3s", "500ms", "1m30s") in
 * milliseconds; -EINVAL for anything else. */
int encconfig_duration_ms(const char *s, unsigned long *ret_ms);

#endif
