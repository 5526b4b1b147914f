/* The audit of what etcd holds (brief section 10): every key under the
 * prefix, counted by resource, provider and key_id; each distinct KMS v2
 * DEK source decrypted once through the running daemon's Decrypt (as the
 * apiserver does), and every object's AES-GCM tag checked under the DEK
 * it gives. The findings go to report.c and, as a record, to the state
 * directory (keys/auditrec.h).
 * Must not: write to etcd, use the TPM, or keep a seed outside the secure
 * heap. */
#ifndef TPM2KMS_AUDIT_H
#define TPM2KMS_AUDIT_H

#include "audit/storedobj.h"
#include "transport/dial.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_options {
	const char *endpoints; /* comma-separated URLs */
	struct dial_tls tls;
	const char *prefix; /* default /registry */
	const char *listen; /* the daemon's socket */
	const char *state_dir;
	const char *snapshot; /* when auditing a snapshot: its file, for the record */
	int timeout_ms;
	bool progress; /* a progress line on stderr */
};

/* Limits of what the audit keeps while it reads; what passes them is
 * counted, and the report says how many were left out. */
#define AUDIT_MAX_KEY_IDS   1024
#define AUDIT_MAX_RESOURCES 1024
#define AUDIT_MAX_FAILURES  1000
#define AUDIT_EXAMPLES      5 /* etcd keys named per resource and finding */

/* A key_id seen in etcd, or a generation of the state. */
struct audit_key {
	char key_id[128];
	char provider[64];   /* the provider name of the prefix */
	uint32_t generation; /* from the key_id; 0: not ours in form */
	bool in_state;       /* the key_id is one of this node's generations */
	bool write;          /* ... and its write key */
	bool escrowed;
	uint64_t objects, decrypted, failed;
	char why[160]; /* for key_ids not in the state: what they are */
};

struct audit_resource {
	char name[STORED_RESOURCE_MAX];
	uint64_t by_provider[STORED_N_PROVIDERS];
	uint64_t stale; /* KMS v2 objects under a key other than the write key */
	uint64_t undecryptable;
	char *clear[AUDIT_EXAMPLES]; /* identity objects' etcd keys */
	size_t n_clear;
	char *lost[AUDIT_EXAMPLES]; /* undecryptable objects' etcd keys */
	size_t n_lost;
};

struct audit_failure {
	char *key; /* the etcd key */
	char reason[200];
};

struct audit_result {
	uint64_t started, finished;
	bool snapshot; /* the source is a snapshot (a backup) */
	char source[512];
	char prefix[256];
	int64_t revision;
	bool complete;
	uint32_t write_generation;
	uint64_t objects, by_provider[STORED_N_PROVIDERS];
	uint64_t decrypted, undecryptable, dek_sources;
	struct audit_key keys[AUDIT_MAX_KEY_IDS];
	size_t n_keys;
	uint64_t keys_left_out; /* objects under key_ids past the limit */
	struct audit_resource *resources;
	size_t n_resources;
	uint64_t resources_left_out;
	struct audit_failure failures[AUDIT_MAX_FAILURES];
	size_t n_failures;
	uint64_t failures_left_out;
};

/* Runs the audit and records it in the state directory. 0 with the
 * findings in *ret (free with audit_result_free), complete or not;
 * negative errno, logged, when it could not start. */
int audit_run(const struct audit_options *o, struct audit_result **ret);
void audit_result_free(struct audit_result *a);

/* Whether every KMS v2 object decrypts here. */
bool audit_all_decrypt(const struct audit_result *a);

#endif
