#include "config.h"

#include "audit/report.h"
#include "base/util.h"

#include <stdbool.h>
#include <string.h>
#include <time.h>

static uint64_t encrypted_of(const struct audit_resource *r)
{
	uint64_t n = 0;

	for (int p = 0; p < STORED_N_PROVIDERS; p++)
		if (p != STORED_IDENTITY)
			n += r->by_provider[p];
	return n;
}

/* A stored-in-clear object among encrypted ones of its resource. */
static bool mixed(const struct audit_resource *r)
{
	return r->by_provider[STORED_IDENTITY] && encrypted_of(r);
}

/* <prefix>/[<group>/]<resource>/[<ns>/]<name> -> "-n ns name" or "name". */
static void name_args(const char *key, const char *prefix, char *out, size_t size)
{
	const char *seg[8], *p = key + strlen(prefix);
	size_t len[8], n = 0, first = 1;

	while (*p == '/')
		p++;
	while (*p && n < 8) {
		const char *slash = strchr(p, '/');

		seg[n] = p;
		len[n++] = slash ? (size_t)(slash - p) : strlen(p);
		if (!slash)
			break;
		p = slash + 1;
	}
	if (n && memchr(seg[0], '.', len[0]))
		first = 2;
	if (n >= first + 2)
		snprintf(out, size, "-n %.*s %.*s", (int)len[n - 2], seg[n - 2], (int)len[n - 1],
		         seg[n - 1]);
	else if (n == first + 1)
		snprintf(out, size, "%.*s", (int)len[n - 1], seg[n - 1]);
	else
		snprintf(out, size, "%s", key);
}

static void next_steps(FILE *out, const struct audit_result *a)
{
	bool any = false, warned = false;

	fprintf(out, "\nNext steps:\n");
	if (!a->complete) {
		fprintf(out, "  The audit is incomplete: fix what stopped it and run it again. "
		             "Nothing can be retired on its word.\n");
		return;
	}
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct audit_key *k = &a->keys[i];

		if (k->in_state && !k->write && k->objects == 0) {
			fprintf(
			    out, "  Generation %u protects nothing in etcd: tpm2-kms retire %u%s\n",
			    (unsigned)k->generation, (unsigned)k->generation,
			    k->escrowed ? " (its escrow file stays for backups made before)" : "");
			any = true;
		}
	}
	for (size_t i = 0; i < a->n_resources; i++) {
		const struct audit_resource *r = &a->resources[i];
		const char *dot = strchr(r->name, '.');

		if (!r->stale)
			continue;
		fprintf(out,
		        "  %llu %s are not under the write key (generation %u): re-encrypt them\n"
		        "    kubectl get %s --all-namespaces -o json | kubectl replace -f -\n"
		        "  or, where the StorageVersionMigration API is served:\n"
		        "    apiVersion: storagemigration.k8s.io/v1alpha1\n"
		        "    kind: StorageVersionMigration\n"
		        "    metadata:\n"
		        "      name: tpm2-kms-reencrypt-%.*s\n"
		        "    spec:\n"
		        "      resource:\n"
		        "        group: \"%s\"\n"
		        "        version: v1   # the resource's storage version\n"
		        "        resource: %.*s\n",
		        (unsigned long long)r->stale, r->name, (unsigned)a->write_generation,
		        r->name, (int)(dot ? (size_t)(dot - r->name) : strlen(r->name)), r->name,
		        dot ? dot + 1 : "", (int)(dot ? (size_t)(dot - r->name) : strlen(r->name)),
		        r->name);
		any = true;
	}
	for (size_t i = 0; i < a->n_resources; i++) {
		const struct audit_resource *r = &a->resources[i];
		char args[512];

		if (!r->n_lost)
			continue;
		if (!warned)
			fprintf(
			    out,
			    "  Objects that no key here decrypts block every read of their kind.\n"
			    "  First try to get their key back (another node, tpm2-kms recover).\n"
			    "  If none holds it, Kubernetes 1.32+ can remove them (KEP-3926):\n"
			    "  enable the kube-apiserver feature gate\n"
			    "  AllowUnsafeMalformedObjectDeletion, then delete each with\n"
			    "  ignoreStoreReadErrorWithClusterBreakingPotential. WARNING: this\n"
			    "  skips finalizers and may break workloads that use the object.\n");
		warned = true;
		for (size_t j = 0; j < r->n_lost; j++) {
			name_args(r->lost[j], a->prefix, args, sizeof(args));
			fprintf(out,
			        "    kubectl delete %s %s "
			        "--ignore-store-read-error-with-cluster-breaking-potential=true\n",
			        r->name, args);
		}
		any = true;
	}
	if (!any)
		fprintf(out, "  None: every object is under the write key.\n");
}

/* A backup restores when every generation its objects are under is here
 * (now) or escrowed (after this TPM is lost). */
static void backup_verdict(const struct audit_result *a, bool *ret_here, bool *ret_escrow)
{
	*ret_here = *ret_escrow = true;
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct audit_key *k = &a->keys[i];

		if (!k->objects)
			continue;
		if (!k->in_state)
			*ret_here = false;
		if (!k->escrowed)
			*ret_escrow = false;
	}
}

static void backup_text(FILE *out, const struct audit_result *a)
{
	bool here, escrow;

	backup_verdict(a, &here, &escrow);
	fprintf(out, "\nThis backup needs the keys of:");
	for (size_t i = 0; i < a->n_keys; i++)
		if (a->keys[i].objects)
			fprintf(out, " %s", a->keys[i].key_id);
	fprintf(out,
	        "\n  restorable with this node's keys now: %s\n"
	        "  restorable after losing this TPM (from escrow): %s\n",
	        here ? "yes" : "no", escrow ? "yes" : "NO: not every key it needs is escrowed");
}

void report_text(FILE *out, const struct audit_result *a)
{
	char t1[32], t2[32];

	fprintf(out, "audit of %s (prefix %s) at revision %lld, %s to %s: %s\n", a->source,
	        a->prefix, (long long)a->revision, util_utc(a->started, t1), util_utc(a->finished, t2),
	        a->complete ? "complete" : "INCOMPLETE");
	fprintf(out, "%llu objects:", (unsigned long long)a->objects);
	for (int p = 0; p < STORED_N_PROVIDERS; p++)
		if (a->by_provider[p])
			fprintf(out, " %llu %s", (unsigned long long)a->by_provider[p],
			        stored_provider_name(p));
	fprintf(out,
	        "; %llu KMS v2 objects decrypt here, %llu do not (%llu DEK sources "
	        "asked of the daemon)\n",
	        (unsigned long long)a->decrypted, (unsigned long long)a->undecryptable,
	        (unsigned long long)a->dek_sources);

	fprintf(out, "\n%-10s  %-45s  %-12s  %-7s  %9s  %9s\n", "GENERATION", "KEY_ID", "STATE",
	        "ESCROW", "OBJECTS", "DECRYPTED");
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct audit_key *k = &a->keys[i];

		if (!k->in_state)
			continue;
		fprintf(out, "%-10u  %-45s  %-12s  %-7s  %9llu  %9llu\n", (unsigned)k->generation,
		        k->key_id, k->write ? "write" : "decrypt-only", k->escrowed ? "yes" : "no",
		        (unsigned long long)k->objects, (unsigned long long)k->decrypted);
	}
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct audit_key *k = &a->keys[i];

		if (k->in_state)
			continue;
		fprintf(out, "key_id %s (provider %s): %llu objects, not this node's: %s\n",
		        k->key_id, k->provider, (unsigned long long)k->objects, k->why);
	}
	if (a->keys_left_out)
		fprintf(out, "%llu objects under further key_ids (more than %d)\n",
		        (unsigned long long)a->keys_left_out, AUDIT_MAX_KEY_IDS);

	for (size_t i = 0; i < a->n_resources; i++) {
		const struct audit_resource *r = &a->resources[i];

		if (!mixed(r))
			continue;
		fprintf(out, "\n%s: %llu stored unencrypted while %llu are encrypted, e.g.:\n",
		        r->name, (unsigned long long)r->by_provider[STORED_IDENTITY],
		        (unsigned long long)encrypted_of(r));
		for (size_t j = 0; j < r->n_clear; j++)
			fprintf(out, "  %s\n", r->clear[j]);
	}
	if (a->n_failures)
		fprintf(out, "\nObjects that do not decrypt here:\n");
	for (size_t i = 0; i < a->n_failures; i++)
		fprintf(out, "  %s: %s\n", a->failures[i].key, a->failures[i].reason);
	if (a->failures_left_out)
		fprintf(out, "  ... and %llu more (the first %d are named)\n",
		        (unsigned long long)a->failures_left_out, AUDIT_MAX_FAILURES);
	if (a->snapshot && a->complete)
		backup_text(out, a);
	next_steps(out, a);
}

static void json_keys(FILE *out, const struct audit_result *a)
{
	bool first = true;

	fprintf(out, "\"generations\":[");
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct audit_key *k = &a->keys[i];

		if (!k->in_state)
			continue;
		fprintf(out, "%s{\"generation\":%u,\"key_id\":", first ? "" : ",",
		        (unsigned)k->generation);
		util_json_string(out, k->key_id);
		fprintf(out,
		        ",\"write\":%s,\"escrowed\":%s,\"objects\":%llu,\"decrypted\":%llu,"
		        "\"undecryptable\":%llu,\"retirable\":%s}",
		        k->write ? "true" : "false", k->escrowed ? "true" : "false",
		        (unsigned long long)k->objects, (unsigned long long)k->decrypted,
		        (unsigned long long)k->failed,
		        a->complete && !k->write && k->objects == 0 ? "true" : "false");
		first = false;
	}
	fprintf(out, "],\"other_key_ids\":[");
	first = true;
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct audit_key *k = &a->keys[i];

		if (k->in_state)
			continue;
		fprintf(out, "%s{\"key_id\":", first ? "" : ",");
		util_json_string(out, k->key_id);
		fprintf(out, ",\"provider\":");
		util_json_string(out, k->provider);
		fprintf(out, ",\"objects\":%llu,\"decrypted\":%llu,\"why\":",
		        (unsigned long long)k->objects, (unsigned long long)k->decrypted);
		util_json_string(out, k->why);
		fputc('}', out);
		first = false;
	}
	fprintf(out, "],\"objects_under_key_ids_left_out\":%llu",
	        (unsigned long long)a->keys_left_out);
}

static void json_list(FILE *out, const char *name, char *const *list, size_t n)
{
	fprintf(out, ",\"%s\":[", name);
	for (size_t j = 0; j < n; j++) {
		if (j)
			fputc(',', out);
		util_json_string(out, list[j]);
	}
	fputc(']', out);
}

static void json_resources(FILE *out, const struct audit_result *a)
{
	fprintf(out, ",\"resources\":[");
	for (size_t i = 0; i < a->n_resources; i++) {
		const struct audit_resource *r = &a->resources[i];

		fprintf(out, "%s{\"resource\":", i ? "," : "");
		util_json_string(out, r->name);
		fprintf(out, ",\"by_provider\":{");
		for (int p = 0, k = 0; p < STORED_N_PROVIDERS; p++)
			if (r->by_provider[p])
				fprintf(out, "%s\"%s\":%llu", k++ ? "," : "",
				        stored_provider_name(p),
				        (unsigned long long)r->by_provider[p]);
		fprintf(out,
		        "},\"not_under_write_key\":%llu,\"undecryptable\":%llu,"
		        "\"unencrypted_among_encrypted\":%s",
		        (unsigned long long)r->stale, (unsigned long long)r->undecryptable,
		        mixed(r) ? "true" : "false");
		json_list(out, "unencrypted_examples", mixed(r) ? r->clear : NULL,
		          mixed(r) ? r->n_clear : 0);
		json_list(out, "undecryptable_examples", r->lost, r->n_lost);
		fputc('}', out);
	}
	fprintf(out, "],\"resources_left_out\":%llu", (unsigned long long)a->resources_left_out);
}

void report_json(FILE *out, const struct audit_result *a)
{
	fprintf(out, "{\"source\":");
	util_json_string(out, a->source);
	fprintf(out, ",\"snapshot\":%s", a->snapshot ? "true" : "false");
	fprintf(out, ",\"prefix\":");
	util_json_string(out, a->prefix);
	fprintf(out,
	        ",\"revision\":%lld,\"started\":%llu,\"finished\":%llu,\"complete\":%s,"
	        "\"all_decrypt\":%s,\"write_generation\":%u,\"objects\":%llu,\"by_provider\":{",
	        (long long)a->revision, (unsigned long long)a->started,
	        (unsigned long long)a->finished, a->complete ? "true" : "false",
	        audit_all_decrypt(a) ? "true" : "false", (unsigned)a->write_generation,
	        (unsigned long long)a->objects);
	for (int p = 0, k = 0; p < STORED_N_PROVIDERS; p++)
		if (a->by_provider[p])
			fprintf(out, "%s\"%s\":%llu", k++ ? "," : "", stored_provider_name(p),
			        (unsigned long long)a->by_provider[p]);
	fprintf(out, "},\"decrypted\":%llu,\"undecryptable\":%llu,\"dek_sources\":%llu,",
	        (unsigned long long)a->decrypted, (unsigned long long)a->undecryptable,
	        (unsigned long long)a->dek_sources);
	json_keys(out, a);
	json_resources(out, a);
	fprintf(out, ",\"failures\":[");
	for (size_t i = 0; i < a->n_failures; i++) {
		fprintf(out, "%s{\"key\":", i ? "," : "");
		util_json_string(out, a->failures[i].key);
		fprintf(out, ",\"reason\":");
		util_json_string(out, a->failures[i].reason);
		fputc('}', out);
	}
	fprintf(out, "],\"failures_left_out\":%llu", (unsigned long long)a->failures_left_out);
	if (a->snapshot) {
		bool here, escrow;

		backup_verdict(a, &here, &escrow);
		fprintf(out, ",\"backup\":{\"restorable_here\":%s,\"restorable_from_escrow\":%s}",
		        here ? "true" : "false", escrow ? "true" : "false");
	}
	fprintf(out, "}\n");
}
