#include "config.h"

#include "base/armor.h"
#include "base/crypto.h"
#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/approval.h"
#include "keys/kekpolicy.h"
#include "keys/signer.h"
#include "keys/unseal.h"
#include "tpm/tpmobj.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* A cursor over JSON text: just enough JSON for systemd-measure's file
 * (objects, arrays, strings without \u escapes beyond ASCII, integers,
 * literals), refusing anything deeper than it needs. */
struct json {
	const char *p, *end;
	int depth;
};

#define JSON_MAX_DEPTH 8

static void json_space(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool json_take(struct json *j, char c)
{
	json_space(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

/* A string into out (NUL-terminated, at most size-1 bytes). */
static int json_string(struct json *j, char *out, size_t size)
{
	size_t n = 0;

	if (!json_take(j, '"'))
		return -EINVAL;
	while (j->p < j->end && *j->p != '"') {
		char c = *j->p++;

		if (c == '\\') {
			if (j->p >= j->end)
				return -EINVAL;
			c = *j->p++;
			if (c == 'n')
				c = '\n';
			else if (c == 't')
				c = '\t';
			else if (c != '"' && c != '\\' && c != '/')
				return -EINVAL;
		} else if ((unsigned char)c < 0x20) {
			return -EINVAL;
		}
		if (n + 1 >= size)
			return -EINVAL;
		out[n++] = c;
	}
	if (!json_take(j, '"'))
		return -EINVAL;
	out[n] = '\0';
	return 0;
}

static int json_uint(struct json *j, uint32_t *ret)
{
	uint64_t v = 0;
	const char *start;

	json_space(j);
	start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9' && j->p - start < 9)
		v = v * 10 + (uint64_t)(*j->p++ - '0');
	if (j->p == start)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

static int json_skip(struct json *j)
{
	char tmp[4096];
	uint32_t u;

	json_space(j);
	if (j->p >= j->end || ++j->depth > JSON_MAX_DEPTH)
		return -EINVAL;
	if (json_take(j, '{')) {
		if (!json_take(j, '}')) {
			do {
				if (json_string(j, tmp, sizeof(tmp)) < 0 || !json_take(j, ':') ||
				    json_skip(j) < 0)
					return -EINVAL;
			} while (json_take(j, ','));
			if (!json_take(j, '}'))
				return -EINVAL;
		}
	} else if (json_take(j, '[')) {
		if (!json_take(j, ']')) {
			do {
				if (json_skip(j) < 0)
					return -EINVAL;
			} while (json_take(j, ','));
			if (!json_take(j, ']'))
				return -EINVAL;
		}
	} else if (*j->p == '"') {
		if (json_string(j, tmp, sizeof(tmp)) < 0)
			return -EINVAL;
	} else if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) {
		if (*j->p == '-')
			j->p++;
		if (json_uint(j, &u) < 0)
			return -EINVAL;
	} else {
		static const char *const words[] = {"true", "false", "null"};
		size_t i;

		for (i = 0; i < ARRAY_SIZE(words); i++) {
			size_t n = strlen(words[i]);

			if ((size_t)(j->end - j->p) >= n && memcmp(j->p, words[i], n) == 0) {
				j->p += n;
				break;
			}
		}
		if (i == ARRAY_SIZE(words))
			return -EINVAL;
	}
	j->depth--;
	return 0;
}

/* One entry of systemd's "sha256" array. */
struct systemd_entry {
	struct policy_pcrs pcrs;
	char pkfp[80], pol[80], sig[2048];
	bool have_pcrs, have_pkfp, have_pol, have_sig;
};

static int json_entry(struct json *j, struct systemd_entry *e)
{
	char key[32];

	memset(e, 0, sizeof(*e));
	if (!json_take(j, '{'))
		return -EINVAL;
	if (json_take(j, '}'))
		return -EINVAL;
	do {
		if (json_string(j, key, sizeof(key)) < 0 || !json_take(j, ':'))
			return -EINVAL;
		if (strcmp(key, "pcrs") == 0) {
			if (!json_take(j, '['))
				return -EINVAL;
			do {
				uint32_t v;

				if (json_uint(j, &v) < 0 || v >= POLICY_PCR_MAX ||
				    e->pcrs.n >= POLICY_PCR_MAX ||
				    (e->pcrs.n && v <= e->pcrs.index[e->pcrs.n - 1]))
					return -EINVAL;
				e->pcrs.index[e->pcrs.n++] = v;
			} while (json_take(j, ','));
			if (!json_take(j, ']'))
				return -EINVAL;
			e->have_pcrs = true;
		} else if (strcmp(key, "pkfp") == 0) {
			if (json_string(j, e->pkfp, sizeof(e->pkfp)) < 0)
				return -EINVAL;
			e->have_pkfp = true;
		} else if (strcmp(key, "pol") == 0) {
			if (json_string(j, e->pol, sizeof(e->pol)) < 0)
				return -EINVAL;
			e->have_pol = true;
		} else if (strcmp(key, "sig") == 0) {
			if (json_string(j, e->sig, sizeof(e->sig)) < 0)
				return -EINVAL;
			e->have_sig = true;
		} else if (json_skip(j) < 0) {
			return -EINVAL;
		}
	} while (json_take(j, ','));
	if (!json_take(j, '}') || !e->have_pcrs || !e->have_pkfp || !e->have_pol || !e->have_sig)
		return -EINVAL;
	return 0;
}

/* Adds one checked signature to b (epoch: NULL for none). */
static int add(struct pcr_binding *b, const char *source, const uint8_t approved[32],
	       const unsigned *epoch, struct tpm_approval *ta)
{
	struct pcr_signature *sig;

	if (b->n_sigs == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 8;
		struct pcr_signature *sigs = realloc(b->sigs, cap * sizeof(*sigs));

		if (!sigs) {
			log_warning("pcr signature %s: ignored: out of memory", source);
			return -ENOMEM;
		}
		b->sigs = sigs;
		b->cap = cap;
	}
	sig = &b->sigs[b->n_sigs++];
	snprintf(sig->source, sizeof(sig->source), "%s", source);
	memcpy(sig->approved, approved, 32);
	sig->has_epoch = epoch != NULL;
	sig->operand = epoch ? policy_epoch_operand(*epoch) : 0;
	sig->tpm = *ta;
	return 0;
}

static void load_systemd(struct pcr_binding *b, const char *path, const char *text, size_t len,
			 crypto_key *signer)
{
	struct json j = {.p = text, .end = text + len};
	struct systemd_entry *e = calloc(1, sizeof(*e));
	char key[32], fp[65], source[PATH_MAX + 32];
	const char *why = "not a systemd-measure signature file";
	bool any = false;

	if (!e)
		return;
	if (!json_take(&j, '{'))
		goto bad;
	if (!json_take(&j, '}')) {
		do {
			if (json_string(&j, key, sizeof(key)) < 0 || !json_take(&j, ':'))
				goto bad;
			if (strcmp(key, "sha256") != 0) {
				if (json_skip(&j) < 0)
					goto bad;
				continue;
			}
			if (!json_take(&j, '['))
				goto bad;
			for (size_t k = 0; !json_take(&j, ']'); k++) {
				struct tpm_approval ta = {0};
				uint8_t pol[32], sig[512];
				size_t sig_len;

				if (k && !json_take(&j, ','))
					goto bad;
				if (json_entry(&j, e) < 0)
					goto bad;
				snprintf(source, sizeof(source), "%s (entry %zu)", path, k);
				any = true;
				if (signer_systemd_fingerprint(signer, fp) < 0 ||
				    strcmp(e->pkfp, fp) != 0) {
					log_warning("pcr signature %s: ignored: made with another key "
						    "than the PCR signer",
						    source);
					continue;
				}
				if (!policy_pcrs_equal(&e->pcrs, &b->pcrs)) {
					log_warning("pcr signature %s: ignored: it covers other PCRs "
						    "than the state's selection",
						    source);
					continue;
				}
				if (util_unhex(e->pol, pol, 32) < 0 ||
				    armor_base64_decode(e->sig, sig, sizeof(sig), &sig_len) < 0 ||
				    signer_verify(signer, pol, 32, sig, sig_len) < 0) {
					log_warning("pcr signature %s: ignored: its signature does not "
						    "check out",
						    source);
					continue;
				}
				memcpy(ta.approved_policy, pol, 32);
				ta.policy_ref_len = 0; /* systemd signs with an empty ref */
				if (tpmobj_signer_public(signer, ta.signer_pub, &ta.signer_pub_len) < 0 ||
				    tpmobj_signature(signer, sig, sig_len, ta.signature,
						     &ta.signature_len) < 0)
					continue;
				add(b, source, pol, NULL, &ta);
			}
		} while (json_take(&j, ','));
		if (!json_take(&j, '}'))
			goto bad;
	}
	json_space(&j);
	if (j.p != j.end)
		goto bad;
	if (!any)
		log_warning("pcr signature %s: ignored: no sha256 entries", path);
	free(e);
	return;
bad:
	log_warning("pcr signature %s: ignored: %s", path, why);
	free(e);
}

static void load_ours(struct pcr_binding *b, const char *path, const char *text, size_t len,
		      crypto_key *signer)
{
	struct approval *a = calloc(1, sizeof(*a));
	struct tpm_approval ta;
	const char *why;

	if (!a)
		return;
	if (approval_parse(text, len, a, &why) < 0) {
		/* approval_parse's reasons speak of approvals: not what this is. */
		log_warning("pcr signature %s: ignored: not a PCR signature as tpm2-kms pcr-sign "
			    "writes it",
			    path);
	} else if (approval_check_pcrs(a, signer, &why) < 0) {
		log_warning("pcr signature %s: ignored: %s", path, why);
	} else if (!policy_pcrs_equal(&a->pcrs, &b->pcrs)) {
		log_warning("pcr signature %s: ignored: it covers other PCRs than the state's "
			    "selection",
			    path);
	} else if (approval_to_tpm(a, signer, &ta) == 0) {
		add(b, path, a->approved_policy, a->has_epoch ? &a->epoch : NULL, &ta);
	}
	free(a);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void note_unreadable(struct pcr_binding *b, const char *path)
{
	char why[200];

	if (b->n_unreadable++ == 0) {
		files_describe_access(path, why, sizeof(why));
		/* Truncation only shortens a message. */
		if (snprintf(b->unreadable, sizeof(b->unreadable), "%.*s (%s)", 100, path, why) < 0)
			b->unreadable[0] = '\0';
	}
}

/* Whether path is there but not readable by us. */
static bool errno_of_access(const char *path)
{
	return access(path, R_OK) < 0 && errno == EACCES;
}

/* Every file of dir in name order (so which ones a cap leaves out does not
 * depend on the file system), each read without following links or
 * blocking on a FIFO. */
static void load_dir(struct pcr_binding *b, const char *dir, crypto_key *signer)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0, skipped = 0;

	if (!d) {
		if (errno == EACCES)
			note_unreadable(b, dir);
		if (errno != ENOENT)
			log_warning("pcr signatures %s: %s", dir, strerror(errno));
		return;
	}
	while ((e = readdir(d))) {
		char **grown;

		if (e->d_name[0] == '.')
			continue;
		/* Names are collected (bounded) and sorted before the cap. */
		if (n == 64 * UNSEAL_MAX_FILES) {
			skipped++;
			continue;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 32;
			grown = realloc(names, cap * sizeof(*names));
			if (!grown)
				break;
			names = grown;
		}
		names[n] = strdup(e->d_name);
		if (!names[n])
			break;
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), compare_names);
	skipped += n > UNSEAL_MAX_FILES ? n - UNSEAL_MAX_FILES : 0;
	if (skipped)
		log_warning("pcr signatures %s: more than %d files; %zu were not looked at (remove "
			    "signatures you no longer need)",
			    dir, UNSEAL_MAX_FILES, skipped);
	for (size_t i = 0; i < n && i < UNSEAL_MAX_FILES; i++) {
		char path[PATH_MAX], *text = NULL;
		const char *p;
		size_t len;

		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path))
			continue;
		if (files_read_nofollow(path, UNSEAL_FILE_MAX, &text, &len) < 0) {
			if (errno_of_access(path))
				note_unreadable(b, path);
			continue;
		}
		for (p = text; *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'; p++)
			;
		if (*p == '{')
			load_systemd(b, path, text, len, signer);
		else
			load_ours(b, path, text, len, signer);
		free(text);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

struct pcr_binding *unseal_binding_ref(struct pcr_binding *b)
{
	b->refs++;
	return b;
}

void unseal_binding_unref(struct pcr_binding *b)
{
	if (!b || --b->refs > 0)
		return;
	free(b->sigs);
	free(b);
}

int unseal_load_binding(const struct anchors *a, const char *dir, struct pcr_binding **ret)
{
	struct pcr_binding *b;
	struct tpm_or_list or;
	uint8_t policy[32];
	crypto_key *signer = NULL;
	int r;

	if (!a->pcr_key_len)
		return -ENOENT;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->refs = 1;
	b->pcrs = a->pcrs;
	b->keys = *a;
	r = kekpolicy_of(a, TPM_KEK_PCR, policy, &or);
	if (r == 0)
		r = signer_from_der(a->pcr_key, a->pcr_key_len, &signer);
	if (r < 0) {
		log_error("the state's PCR signer or admin key is not usable");
		free(b);
		return r;
	}
	load_dir(b, dir, signer);
	crypto_key_free(signer);
	*ret = b;
	return 0;
}

/* The state's literal PCRs as the TPM layer takes them. */
static void literal_of(const struct anchors *a, struct tpm_pcr_literal *ret)
{
	uint8_t all[POLICY_PCR_MAX * 32];

	memset(ret, 0, sizeof(*ret));
	for (size_t i = 0; i < a->literal.n; i++) {
		ret->index[i] = a->literal.index[i];
		memcpy(all + 32 * i, a->literal_values[i], 32);
	}
	ret->n = a->literal.n;
	crypto_sha256(all, 32 * a->literal.n, ret->digest);
}

int unseal_kek(tpm *t, const struct pcr_binding *b, const struct tpm_sealed *s,
		     enum tpm_kek_kind kind, uint8_t kek[TPM_KEK_BYTES],
		     struct tpm_pcr_values *ret_values)
{
	struct tpm_pcr_values v;
	struct tpm_pcr_literal literal;
	struct tpm_or_list or;
	enum kekpolicy_version version;
	uint8_t now[POLICY_DIGEST_BYTES];
	int r;

	if (!tpm_kek_pcr_bound(kind))
		return tpm_kek_unseal(t, s, kind, kek);
	if (!b)
		return -EINVAL;
	/* The object's own policy (a generation made before 0.3.0 has the
	 * first version) says which signatures can satisfy it. */
	r = kekpolicy_match(&b->keys, kind, s->pub, s->pub_len, &version, &or);
	if (r < 0)
		return -EINVAL;
	literal_of(&b->keys, &literal);
	if (kekpolicy_has_literal(version)) {
		uint8_t all[POLICY_PCR_MAX * 32], digest[32];

		/* The TPM checks them; looking first says which PCRs moved. */
		r = tpm_pcr_read(t, b->keys.literal.index, b->keys.literal.n, &v);
		if (r < 0)
			return r;
		for (size_t i = 0; i < v.n; i++)
			memcpy(all + 32 * i, v.value[i], 32);
		crypto_sha256(all, 32 * v.n, digest);
		if (memcmp(digest, literal.digest, 32) != 0) {
			v.literal = true;
			if (ret_values)
				*ret_values = v;
			return -ENOKEY;
		}
	}
	r = tpm_pcr_read(t, b->pcrs.index, b->pcrs.n, &v);
	if (r < 0)
		return r;
	policy_pcr(&b->pcrs, (const uint8_t(*)[32])v.value, now);
	for (size_t i = 0; i < b->n_sigs; i++) {
		const struct pcr_signature *sig = &b->sigs[i];
		const struct tpm_approval *a = &sig->tpm;
		uint8_t want[POLICY_DIGEST_BYTES];

		if (sig->has_epoch)
			policy_epoch(now, sig->operand, want);
		else
			memcpy(want, now, sizeof(want));
		if (memcmp(sig->approved, want, sizeof(want)) != 0 ||
		    !kekpolicy_ref_allowed(&b->keys, version, a->policy_ref, a->policy_ref_len))
			continue;
		r = tpm_kek_unseal_signed(t, s, kind, b->pcrs.index, b->pcrs.n, a,
					  sig->has_epoch ? &sig->operand : NULL,
					  kekpolicy_has_literal(version) ? &literal : NULL, &or, kek);
		/* A revoked signature (the epoch passed it): try the others. */
		if (r != -EACCES || !sig->has_epoch)
			return r;
	}
	if (ret_values)
		*ret_values = v;
	return -ENOKEY;
}

void unseal_format_values(const struct tpm_pcr_values *v, char *out, size_t size)
{
	size_t pos = 0;

	out[0] = '\0';
	for (size_t i = 0; i < v->n && pos + 80 < size; i++) {
		pos += (size_t)snprintf(out + pos, size - pos, "%s%u=", i ? "," : "",
					(unsigned)v->index[i]);
		util_hex(v->value[i], 32, out + pos);
		pos += 64;
	}
}

void unseal_describe(const struct tpm_pcr_values *v, char *out, size_t size)
{
	char values[24 * 80];

	unseal_format_values(v, values, sizeof(values));
	if (v->literal)
		snprintf(out, size, "the literal PCRs do not hold the values the key was sealed "
				    "to: pcr %s",
			 values);
	else
		snprintf(out, size, "no PCR signature approves the boot state: pcr %s", values);
}
