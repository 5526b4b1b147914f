#include "config.h"

#include "keys/approval.h"
#include "keys/bundle.h"
#include "keys/duplicate.h"
#include "keys/envelope.h"
#include "admin/exchange.h"
#include "keys/attest.h"
#include "keys/kekpolicy.h"
#include "admin/keyadmin.h"
#include "base/files.h"
#include "base/log.h"
#include "keys/nodefile.h"
#include "keys/unseal.h"
#include "keys/provenance.h"
#include "keys/sealfile.h"
#include "base/secmem.h"
#include "keys/sharelog.h"
#include "keys/signer.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"
#include "tpm/dupcodec.h"
#include "base/util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The node's state directory (made and locked: a node about to join has
 * no state yet, but gets its signing key there) and its TPM. */
static int node_open(const char *dir, const char *tcti, int *ret_lock, struct state *ret_state,
		     tpm **ret_tpm)
{
	int r = statedir_open(dir, true);

	if (r == 0)
		r = statedir_lock(dir, ret_lock);
	if (r == 0)
		r = state_load(dir, ret_state);
	if (r < 0 && r != -ENOENT)
		return r;
	return tpm_open(tcti, ret_tpm);
}

/* The EKs and their certificates, for an attested join, where the TPM has
 * them; a TPM without is said so, and its node file is as before. */
static int append_eks(tpm *t, char **pem, size_t *len)
{
	struct tpm_ek *ek = calloc(1, sizeof(*ek));
	size_t found = 0;
	int r = ek ? 0 : -ENOMEM;

	for (size_t i = 0; r == 0 && i < TPM_EK_KINDS; i++) {
		r = tpm_ek_read(t, tpm_ek_cert_index(i), ek);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		if (r == 0)
			r = nodefile_append_ek(ek, pem, len);
		if (r == 0) {
			log_info("the node file carries the %s and its certificate",
			         tpm_ek_describe(ek->cert_index));
			found++;
		}
	}
	if (r == 0 && !found)
		log_info("this TPM has no endorsement key certificate (NV 0x01c00002, 0x01c0000a, "
		         "0x01c00016): the node file cannot be attested");
	free(ek);
	return r;
}

int exchange_node_key(const char *dir, const char *tcti, char **ret_pem, size_t *ret_len,
		      struct node *ret_node)
{
	struct tpm_sealed signkey;
	struct node n = {0};
	struct state s = {0};
	const char *why;
	tpm *t = NULL;
	int lock = -1, r;

	r = node_open(dir, tcti, &lock, &s, &t);
	if (r < 0)
		goto out;
	if (s.n_gens) {
		r = tpm_srk_public(t, &s.srk_name, n.pub, &n.pub_len);
		if (r == -EKEYREJECTED)
			log_error("the TPM's storage root key is not the one %s/state was "
				  "provisioned with",
				  dir);
	} else {
		r = tpm_srk_provision(t, &n.name);
		if (r == 0)
			r = tpm_srk_public(t, &n.name, n.pub, &n.pub_len);
	}
	if (r < 0)
		goto out;
	r = tpmobj_storage_key_check(n.pub, n.pub_len, &why);
	if (r == 0)
		r = tpmobj_name(n.pub, n.pub_len, &n.name);
	if (r < 0) {
		log_error("the SRK at 0x81000001 cannot be a duplication target: %s", why);
		goto out;
	}
	r = provenance_signkey(t, dir, true, &signkey);
	if (r < 0)
		goto out;
	memcpy(n.sign_pub, signkey.pub, signkey.pub_len);
	n.sign_pub_len = signkey.pub_len;
	r = tpmobj_name(n.sign_pub, n.sign_pub_len, &n.sign_name);
	if (r == 0)
		r = nodefile_encode(n.pub, n.pub_len, n.sign_pub, n.sign_pub_len, ret_pem, ret_len);
	if (r == 0)
		r = append_eks(t, ret_pem, ret_len);
	if (r == 0)
		*ret_node = n;
out:
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

int exchange_node_key_public(const char *public_key_path, char **ret_pem, size_t *ret_len,
			     struct node *ret_node)
{
	struct node n = {0};
	crypto_key *key = NULL;
	int r;

	r = signer_load_public(public_key_path, "recovery key", &key);
	if (r < 0)
		return r;
	r = tpmobj_storage_public(key, n.pub, &n.pub_len);
	if (r == 0)
		r = tpmobj_name(n.pub, n.pub_len, &n.name);
	if (r == 0)
		r = nodefile_encode(n.pub, n.pub_len, NULL, 0, ret_pem, ret_len);
	if (r == 0)
		*ret_node = n;
	crypto_key_free(key);
	return r;
}

/* Where approve keeps its open challenges: beside the admin key. */
static void journal_dir(const char *admin_key_path, char out[PATH_MAX])
{
	const char *slash = strrchr(admin_key_path, '/');

	if (slash)
		snprintf(out, PATH_MAX, "%.*s/tpm2-kms-challenges", (int)(slash - admin_key_path),
		         admin_key_path);
	else
		snprintf(out, PATH_MAX, "tpm2-kms-challenges");
}

/* The node file's EKs, every one checked against the manufacturer roots
 * (a node file with one that does not is refused: it was tampered with,
 * or the roots given lack one of the TPM maker's); the first is the one
 * challenged. */
static int node_ek_checked(const char *node_path, const char *ek_ca, struct tpm_ek *ek,
                           char root[ATTEST_ROOT_MAX])
{
	struct tpm_ek *eks = calloc(TPM_EK_KINDS, sizeof(*eks));
	const char *why = NULL;
	char *text = NULL;
	size_t len, n = 0;
	int r;

	if (!eks)
		return -ENOMEM;
	r = files_read_input("node file", node_path, NODEFILE_MAX_BYTES, &text, &len);
	if (r < 0)
		goto out;
	r = nodefile_eks(text, len, eks, TPM_EK_KINDS, &n, &why);
	if (r == -ENOENT)
		log_error("node file %s carries no EK certificate: nothing to attest (node-key "
		          "writes it where the TPM has one; see docs/operations.md 9.2)",
		          node_path);
	else if (r == -EINVAL)
		log_error("node file %s: %s", node_path, why);
	for (size_t i = n; r == 0 && i > 0; i--)
		r = attest_ek_check(&eks[i - 1], ek_ca, root);
	if (r == 0)
		*ek = eks[0];
out:
	free(text);
	free(eks);
	return r;
}

int exchange_approve(const char *admin_key_path, const char *passphrase_file, const char *node_path,
                     const char *ek_ca, const char *response_path, char **ret_text, size_t *ret_len,
                     struct node *ret_node, bool *ret_challenge)
{
	struct tpm_ek *ek = NULL;
	crypto_key *admin = NULL;
	struct approval a;
	struct node n;
	char journal[PATH_MAX], root[ATTEST_ROOT_MAX], *response = NULL;
	size_t response_len = 0;
	int r;

	r = nodefile_load(node_path, &n);
	if (r < 0)
		return r;
	journal_dir(admin_key_path, journal);
	if (ek_ca) {
		ek = calloc(1, sizeof(*ek));
		r = ek ? node_ek_checked(node_path, ek_ca, ek, root) : -ENOMEM;
		if (r < 0)
			goto out;
	}
	if (ek && !response_path) {
		r = attest_challenge(&n, ek, journal, ret_text, ret_len);
		if (r == 0) {
			log_info("the EK certificate chains to %s: have the node answer the "
			         "challenge (tpm2-kms node-key --answer)",
			         root);
			*ret_node = n;
			*ret_challenge = true;
		}
		goto out;
	}
	if (ek) {
		r = files_read_input("response", response_path, 16384, &response, &response_len);
		if (r == 0)
			r = attest_response_check(&n, response, response_len, journal);
		if (r < 0)
			goto out;
	}
	r = signer_load_private(admin_key_path, "admin key", passphrase_file, &admin);
	if (r < 0)
		goto out;
	r = approval_sign(admin, &n.name, &n.sign_name, &a);
	if (r == 0 && ek)
		r = approval_attest(admin, root, &a);
	if (r < 0) {
		log_error("cannot sign with the admin key %s", admin_key_path);
		goto out;
	}
	r = approval_encode(&a, ret_text, ret_len);
	if (r < 0)
		goto out;
	if (ek)
		log_info("attested: the node's storage and signing keys are in the TPM whose EK "
		         "certificate chains to %s",
		         root);
	else
		log_warning("nothing was attested: this approval trusts the node file as it came "
		            "(approve --ek-ca checks the node's TPM)");
	*ret_node = n;
	*ret_challenge = false;
out:
	free(response);
	free(ek);
	crypto_key_free(admin);
	return r;
}

int exchange_node_key_answer(const char *dir, const char *tcti, const char *challenge_path,
                             char **ret_pem, size_t *ret_len)
{
	struct attest_request *req = calloc(1, sizeof(*req));
	struct tpm_certification *c = calloc(2, sizeof(*c));
	struct tpm_sealed signkey;
	struct state s = {0};
	struct tpm_name srk;
	char *text = NULL;
	size_t len;
	tpm *t = NULL;
	int lock = -1, r = -ENOMEM;

	if (!req || !c)
		goto out;
	r = files_read_input("challenge", challenge_path, 16384, &text, &len);
	if (r < 0)
		goto out;
	r = attest_challenge_decode(text, len, req);
	if (r < 0) {
		log_error("%s is not a challenge approve --ek-ca wrote", challenge_path);
		goto out;
	}
	r = node_open(dir, tcti, &lock, &s, &t);
	if (r < 0)
		goto out;
	r = tpm_srk_public(t, s.n_gens ? &s.srk_name : NULL, signkey.pub, &signkey.pub_len);
	if (r == 0)
		r = tpmobj_name(signkey.pub, signkey.pub_len, &srk);
	if (r < 0)
		goto out;
	if (!tpm_name_equal(&srk, &req->node)) {
		log_error("this challenge is for another node (its storage key is not this TPM's)");
		r = -EPERM;
		goto out;
	}
	r = provenance_signkey(t, dir, false, &signkey);
	if (r == 0)
		r = tpm_attest_answer(t, &srk, &req->ek, &req->key, &signkey, req->nonce,
		                      sizeof(req->nonce),
		                      &c[0], &c[1]);
	if (r == -EPROTO || r == -EKEYREJECTED)
		log_error("this TPM cannot open the challenge: it was made for another TPM's EK");
	if (r == 0)
		r = attest_response_encode(req, &c[0], &c[1], ret_pem, ret_len);
out:
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	free(text);
	free(req);
	free(c);
	return r;
}

/* The state's generations to export: the requested ones, or every `dup`
 * one. */
static int pick_generations(const char *dir, const struct state *s, const uint32_t *want,
			    size_t n_want, const struct state_generation ***ret, size_t *ret_n)
{
	const struct state_generation **out = calloc(s->n_gens ? s->n_gens : 1, sizeof(*out));
	size_t n = 0;

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_gens; i++) {
		const struct state_generation *g = &s->gens[i];
		bool asked = n_want == 0;

		for (size_t k = 0; k < n_want; k++)
			asked |= want[k] == g->number;
		bool duplicable = tpm_kek_duplicable(g->kind);

		if (!asked || (n_want == 0 && !duplicable))
			continue;
		if (!duplicable) {
			log_error("generation %u is of kind %s: it can never leave this TPM; "
				  "rotate to make a dup generation, re-encrypt and retire this one "
				  "(docs/operations.md)",
				  (unsigned)g->number, state_kind_name(g->kind));
			free(out);
			return -EPERM;
		}
		out[n++] = g;
	}
	for (size_t k = 0; k < n_want; k++) {
		if (!state_find(s, want[k])) {
			log_error("%s has no generation %u", dir, (unsigned)want[k]);
			free(out);
			return -ENOENT;
		}
	}
	if (n == 0) {
		log_error("%s has no dup generation to export: record an admin key (init "
			  "--admin-key) and rotate first",
			  dir);
		free(out);
		return -ENOENT;
	}
	*ret = out;
	*ret_n = n;
	return 0;
}

static void free_keks(uint8_t **keks, size_t n)
{
	if (!keks)
		return;
	for (size_t i = 0; i < n; i++)
		secmem_free(keks[i], TPM_KEK_BYTES);
	free(keks);
}

/* Who the export is for: the node file, checked against the approval the
 * state's admin key signed. Logs. */
static int export_target(const char *dir, const struct state *s, const char *node_path,
                         const char *approval_path, crypto_key **ret_admin, struct node *ret_node,
                         struct tpm_approval *ret_ta, bool *ret_attested)
{
	char fp[NODE_FINGERPRINT_MAX];
	struct tpm_approval ta;
	struct approval a;
	struct node node;
	const char *why;
	crypto_key *admin = NULL;
	int r;

	r = signer_state_admin(dir, &s->anchors,
			       "nothing here can be exported (tpm2-kms init --admin-key "
			       "ADMIN.pub.pem, then rotate)",
			       &admin);
	if (r < 0)
		return r;
	r = nodefile_load(node_path, &node);
	if (r == 0)
		r = approval_load(approval_path, &a, NULL, NULL);
	if (r < 0)
		goto out;
	node_fingerprint(&node.name, fp);
	r = approval_check(&a, admin, &node.name, &why);
	if (r < 0) {
		log_error("approval %s does not allow export to node %s: %s", approval_path, fp,
			  why);
		goto out;
	}
	r = approval_to_tpm(&a, admin, &ta);
	if (r < 0)
		goto out;
	if (a.attestation_len)
		log_info("node %s: attested, its EK certificate chains to %s", fp,
		         a.attested_root);
	else
		log_warning("node %s was approved without attestation: the admin trusted its node "
		            "file as it came (approve --ek-ca)",
		            fp);
	*ret_attested = a.attestation_len > 0;
	*ret_admin = admin;
	admin = NULL;
	*ret_node = node;
	*ret_ta = ta;
out:
	crypto_key_free(admin);
	return r;
}

/* Generation g duplicated to node into *bg, its KEK (for the bundle's
 * MAC) into kek; only a generation with a certificate that checks out
 * under the admin key goes. Logs. */
static int export_one(tpm *t, const char *dir, const struct state *s,
                      const struct pcr_binding *binding, crypto_key *admin, const struct node *node,
                      const struct tpm_approval *ta, const struct state_generation *g,
                      uint8_t kek[TPM_KEK_BYTES], struct bundle_generation *bg)
{
	char fp[NODE_FINGERPRINT_MAX], to_whom[NODE_FINGERPRINT_MAX + 8];
	struct tpm_sealed sealed;
	const char *why;
	int r;

	/* The MACs need the keys; unsealing also proves the file is the
	 * generation the state names. */
	r = keyadmin_unseal(t, dir, binding, g, &sealed, kek);
	if (r < 0)
		return r;
	node_fingerprint(&node->name, fp);
	snprintf(to_whom, sizeof(to_whom), "node %s", fp);
	r = duplicate_generation(t, dir, &s->anchors, g, &sealed, node->pub, node->pub_len, ta,
	                         to_whom, bg);
	util_wipe(&sealed, sizeof(sealed));
	if (r < 0)
		return r;
	bg->write = g->number == s->write_generation;
	if (!bg->certified) {
		log_error("generation %u has no certificate: no node would take it; record "
		          "this node's approval and certify it (tpm2-kms certify --approval "
		          "APPROVAL)",
		          (unsigned)g->number);
		return -ENOENT;
	}
	r = provenance_check(&bg->cert, admin, bg->number, bg->kind, bg->created, bg->key_id,
	                     bg->dup.pub, bg->dup.pub_len, &why);
	if (r < 0)
		log_error("generation %u: its certificate does not check out: %s",
		          (unsigned)g->number, why);
	return r;
}

/* What went to node fp, for promote (sharelog.h). */
static int export_record(const char *dir, const struct tpm_name *node, bool attested,
                         const struct state_generation *const *gens, size_t n)
{
	char fp[NODE_FINGERPRINT_MAX];
	uint32_t numbers[SHARELOG_MAX_GENS];
	size_t k = 0;

	for (size_t i = 0; i < n && k < SHARELOG_MAX_GENS; i++)
		numbers[k++] = gens[i]->number;
	node_fingerprint(node, fp);
	return sharelog_record(dir, fp, attested, numbers, k);
}

int exchange_export(const char *dir, const char *tcti, const char *pcr_dir, const char *node_path,
                    const char *approval_path, const uint32_t *want, size_t n_want,
                    char **ret_bundle, size_t *ret_len)
{
	struct pcr_binding *binding = NULL;
	const struct state_generation **gens = NULL;
	struct bundle b = {0};
	struct state s = {0};
	struct tpm_approval ta;
	struct node node;
	char fp[NODE_FINGERPRINT_MAX], *text = NULL;
	size_t text_len = 0;
	bool attested = false;
	crypto_key *admin = NULL;
	uint8_t **keks = NULL;
	size_t n = 0;
	tpm *t = NULL;
	int lock = -1, r;

	r = keyadmin_open(dir, false, 0, &lock, &s, NULL);
	if (r < 0)
		return r;
	r = export_target(dir, &s, node_path, approval_path, &admin, &node, &ta, &attested);
	if (r == 0)
		r = pick_generations(dir, &s, want, n_want, &gens, &n);
	if (r == 0 && s.anchors.pcr_key_len)
		r = unseal_load_binding(&s.anchors, pcr_dir, &binding);
	if (r < 0)
		goto out;
	b.node = node.name;
	b.anchors = s.anchors;
	b.gens = calloc(n, sizeof(*b.gens));
	keks = calloc(n, sizeof(*keks));
	if (!b.gens || !keks) {
		r = -ENOMEM;
		goto out;
	}
	b.n_gens = n;
	r = keyadmin_tpm_open(dir, tcti, &s, &t);
	for (size_t i = 0; r == 0 && i < n; i++) {
		keks[i] = secmem_alloc(TPM_KEK_BYTES);
		r = keks[i] ? export_one(t, dir, &s, binding, admin, &node, &ta, gens[i], keks[i],
		                         &b.gens[i])
		            : -ENOMEM;
	}
	if (r == 0)
		r = bundle_encode(&b, (const uint8_t *const *)keks, &text, &text_len);
	if (r == 0)
		r = export_record(dir, &node.name, attested, gens, n);
	if (r < 0)
		goto out;
	node_fingerprint(&node.name, fp);
	log_info("exported %zu generation%s to node %s", n, n == 1 ? "" : "s", fp);
	*ret_bundle = text;
	*ret_len = text_len;
	text = NULL;
out:
	free(text);
	free_keks(keks, n);
	unseal_binding_unref(binding);
	tpm_close(t);
	bundle_free(&b);
	free(gens);
	crypto_key_free(admin);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

/* Before the TPM: what the bundle asks of this state directory. Sets
 * *ret_new for each generation the state does not have yet. */
static int import_plan(const char *path, const char *dir, const struct bundle *b,
		       const struct state *s, bool fresh, bool *is_new)
{
	struct tpm_or_list or;
	bool any_write = false;
	int r = 0;

	if (!fresh && s->anchors.admin_key_len && !anchors_same_admin(&s->anchors, &b->anchors)) {
		log_error("%s was made under another admin key than the one %s records", path,
			  dir);
		r = -EPERM;
		goto out;
	}
	if (!fresh && s->anchors.pcr_key_len && b->anchors.pcr_key_len &&
	    !anchors_same_binding(&s->anchors, &b->anchors)) {
		log_error("%s binds its generations to another PCR signer, other PCRs or other "
			  "literal PCR values than %s records",
			  path, dir);
		r = -EPERM;
		goto out;
	}
	/* The objects' policies must be those of the bundle's anchors. */
	for (size_t i = 0; i < b->n_gens; i++) {
		const struct bundle_generation *g = &b->gens[i];
		const struct state_generation *have = fresh ? NULL : state_find(s, g->number);

		enum kekpolicy_version version;

		if (!tpm_kek_duplicable(g->kind) ||
		    kekpolicy_match(&b->anchors, g->kind, g->dup.pub, g->dup.pub_len, &version,
		                    &or) < 0 ||
		    tpmobj_duplicate_check(&g->dup, g->kind, NULL) < 0) {
			log_error("%s: generation %u is not a duplicable generation under the "
				  "bundle's keys",
				  path, (unsigned)g->number);
			r = -EBADMSG;
			goto out;
		}
		if (have && strcmp(have->key_id, g->key_id) != 0) {
			log_error("%s: generation %u exists here as %s, the bundle's is %s: "
				  "refusing to replace a key",
				  path, (unsigned)g->number, have->key_id, g->key_id);
			r = -EEXIST;
			goto out;
		}
		is_new[i] = !have;
		any_write |= g->write;
	}
	if (fresh && !any_write) {
		log_error("%s holds no write generation: an empty state directory needs one "
			  "(export without --generation, or include the write generation)",
			  path);
		r = -EINVAL;
	}
out:
	return r;
}

/* The admin key this import trusts: the one the state records, else the
 * operator's (never the bundle's own: brief §9.1). The bundle must be made
 * under it and every generation certified by a node it approved. */
static int import_trust(const char *path, const char *dir, const struct state *s,
			const char *admin_key_path, const struct bundle *b, crypto_key **ret)
{
	uint8_t der[SIGNER_DER_MAX];
	size_t der_len;
	crypto_key *given = NULL, *anchor = NULL;
	const char *why;
	int r;

	if (admin_key_path) {
		r = signer_load_public(admin_key_path, "admin key", &given);
		if (r < 0)
			return r;
	}
	if (s->anchors.admin_key_len) {
		r = signer_from_der(s->anchors.admin_key, s->anchors.admin_key_len, &anchor);
		if (r < 0) {
			log_error("%s/state: the admin key is not usable", dir);
			goto out;
		}
		if (given && !signer_equal(given, anchor)) {
			log_error("--admin-key %s is not the admin key %s records", admin_key_path,
				  dir);
			r = -EPERM;
			goto out;
		}
	} else if (given) {
		anchor = given;
		given = NULL;
	} else {
		log_error("%s records no admin key: give the admin's public key (import "
			  "--admin-key ADMIN.pub.pem); the bundle's own is never trusted",
			  dir);
		r = -EPERM;
		goto out;
	}
	r = signer_to_der(anchor, der, &der_len);
	if (r < 0)
		goto out;
	if (der_len != b->anchors.admin_key_len ||
	    memcmp(der, b->anchors.admin_key, der_len) != 0) {
		log_error("%s was made under another admin key than the one this node trusts; "
			  "nothing imported",
			  path);
		r = -EPERM;
		goto out;
	}
	for (size_t i = 0; i < b->n_gens; i++) {
		const struct bundle_generation *g = &b->gens[i];
		char who[PROVENANCE_DESCRIPTION_MAX];

		if (!g->certified) {
			log_error("%s: generation %u carries no certificate of the node that made "
				  "it; nothing imported (on that node: tpm2-kms certify, then "
				  "export again)",
				  path, (unsigned)g->number);
			r = -EKEYREJECTED;
			goto out;
		}
		r = provenance_check(&g->cert, anchor, g->number, g->kind, g->created, g->key_id,
				     g->dup.pub, g->dup.pub_len, &why);
		if (r < 0) {
			log_error("%s: generation %u: %s; nothing imported", path,
				  (unsigned)g->number, why);
			goto out;
		}
		provenance_describe(&g->cert, who);
		log_info("%s: generation %u was made by %s", path, (unsigned)g->number, who);
	}
	*ret = anchor;
	anchor = NULL;
	r = 0;
out:
	crypto_key_free(given);
	crypto_key_free(anchor);
	return r;
}

/* Generation i of b, checked before anything is written: it imports
 * into this TPM, unseals to its key_id (a dup+pcr one through a signature
 * of this node's PCR values), and its MAC covers the whole bundle. The
 * imported object into *ret_sealed; kek is scratch, wiped. Logs. */
static int import_verify(tpm *t, const char *path, const struct bundle *b, const char *text,
                         size_t i, const struct pcr_binding *binding, uint8_t kek[TPM_KEK_BYTES],
                         struct tpm_sealed *ret_sealed)
{
	const struct bundle_generation *g = &b->gens[i];
	int r;

	r = tpm_kek_import(t, &g->dup, ret_sealed);
	if (r < 0) {
		log_error("%s: generation %u does not import into this TPM (altered, or made "
		          "for another node)",
		          path, (unsigned)g->number);
		return r;
	}
	r = keyadmin_unseal_sealed(t, binding, ret_sealed, g->kind, g->number, g->key_id, kek);
	if (r == -ENOKEY)
		return r;
	if (r == 0)
		r = bundle_check_mac(b, text, i, kek);
	util_wipe(kek, TPM_KEK_BYTES);
	if (r < 0) {
		log_error("%s: generation %u does not match its key_id or the bundle was "
		          "altered; nothing imported",
		          path, (unsigned)g->number);
		return -EBADMSG;
	}
	return 0;
}

/* One imported generation's sealed file and certificate written, and the
 * generation added to s (saved by the caller). *ret_written says whether
 * its file is on disk, for import_undo. Logs. */
static int import_write(const char *dir, struct state *s, const struct bundle_generation *g,
                        const struct tpm_sealed *sealed, bool *ret_written)
{
	struct state_generation sg = {.number = g->number, .created = g->created, .kind = g->kind};
	char *pem = NULL;
	size_t len;
	int r;

	strcpy(sg.key_id, g->key_id);
	statedir_gen_file(g->number, sg.file);
	r = sealfile_encode(sealed, &pem, &len);
	if (r == 0)
		r = statedir_write(dir, sg.file, pem, len);
	free(pem);
	*ret_written = r == 0;
	/* The certificate travels on with the generation. */
	if (r == 0)
		r = provenance_save(dir, g->number, &g->cert);
	if (r == 0)
		r = state_add(s, &sg);
	return r;
}

/* A refused import removes the files it wrote, unless a state that made
 * it to disk names them. */
static void import_undo(const char *dir, const struct bundle *b, const bool *written)
{
	for (size_t i = 0; i < b->n_gens; i++) {
		char file[32];

		if (!written[i] || state_names(dir, b->gens[i].number))
			continue;
		statedir_gen_file(b->gens[i].number, file);
		statedir_unlink(dir, file);
		provenance_file(b->gens[i].number, file);
		statedir_unlink(dir, file);
	}
}

/* The bundle must be for this node (its SRK srk); a state without trust
 * anchors takes the bundle's. */
static int import_target(const char *path, const struct bundle *b, const struct tpm_name *srk,
                         struct state *s)
{
	char fp[NODE_FINGERPRINT_MAX], here[NODE_FINGERPRINT_MAX];

	if (!tpm_name_equal(&b->node, srk)) {
		node_fingerprint(&b->node, fp);
		node_fingerprint(srk, here);
		log_error("%s was exported for node %s; this node is %s", path, fp, here);
		return -EKEYREJECTED;
	}
	if (!s->anchors.admin_key_len)
		anchors_set_admin(&s->anchors, &b->anchors);
	if (!s->anchors.pcr_key_len && b->anchors.pcr_key_len)
		anchors_set_binding(&s->anchors, &b->anchors);
	return 0;
}

/* The files first, then the state that names them: a crash in between
 * leaves unused files, swept later, and the old state. written[i] says
 * which files import_undo removes after a failure. */
static int import_commit(const char *dir, struct state *s, const struct bundle *b,
                         const bool *is_new, const struct tpm_sealed *sealed, bool fresh,
                         bool *written, size_t *ret_added)
{
	size_t added = 0;
	int r;

	for (size_t i = 0; i < b->n_gens; i++) {
		if (!is_new[i])
			continue;
		r = import_write(dir, s, &b->gens[i], &sealed[i], &written[i]);
		if (r < 0)
			return r;
		if (fresh && b->gens[i].write)
			s->write_generation = b->gens[i].number;
		added++;
	}
	if (added) {
		r = state_save(dir, s);
		if (r < 0)
			return r;
	}
	*ret_added = added;
	return 0;
}

/* Every generation of the bundle imported under this TPM's SRK and checked
 * (import_verify) into sealed[]. Under PCR binding the epoch index comes
 * first: signatures of PCR values name it. */
static int import_all(tpm *t, const char *path, const struct bundle *b, const char *text,
		      const struct state *s, const char *pcr_dir, struct tpm_sealed *sealed)
{
	struct pcr_binding *binding = NULL;
	uint8_t *kek = secmem_alloc(TPM_KEK_BYTES);
	int r = kek ? 0 : -ENOMEM;

	if (r == 0 && s->anchors.pcr_key_len) {
		r = tpm_epoch_provision(t);
		if (r == 0)
			r = unseal_load_binding(&s->anchors, pcr_dir, &binding);
	}
	for (size_t i = 0; r == 0 && i < b->n_gens; i++)
		r = import_verify(t, path, b, text, i, binding, kek, &sealed[i]);
	unseal_binding_unref(binding);
	secmem_free(kek, TPM_KEK_BYTES);
	return r;
}

static void import_report(const struct bundle *b, const bool *is_new, bool fresh)
{
	for (size_t i = 0; i < b->n_gens; i++)
		log_info("generation %u (%s): %s", (unsigned)b->gens[i].number, b->gens[i].key_id,
			 !is_new[i]		     ? "already here"
			 : fresh && b->gens[i].write ? "imported, write key"
						     : "imported, decrypt-only");
}

int exchange_import(const char *dir, const char *tcti, const char *pcr_dir, uint32_t nv_index,
		    const char *admin_key_path, const char *bundle_path, size_t *ret_added)
{
	crypto_key *anchor = NULL;
	struct tpm_sealed *sealed = NULL;
	struct bundle b = {0};
	struct state s = {0};
	struct tpm_name srk;
	char *text = NULL;
	bool *is_new = NULL, *written = NULL, fresh, existed;
	size_t added = 0;
	tpm *t = NULL;
	int lock = -1, r;

	r = bundle_load(bundle_path, &text, &b);
	if (r < 0)
		return r;
	existed = access(dir, F_OK) == 0;
	r = keyadmin_open(dir, true, nv_index, &lock, &s, &fresh);
	if (r < 0)
		goto out;
	is_new = calloc(b.n_gens, sizeof(*is_new));
	sealed = calloc(b.n_gens, sizeof(*sealed));
	if (!is_new || !sealed) {
		r = -ENOMEM;
		goto out;
	}
	r = import_trust(bundle_path, dir, &s, admin_key_path, &b, &anchor);
	if (r < 0)
		goto out;
	r = import_plan(bundle_path, dir, &b, &s, fresh, is_new);
	if (r < 0)
		goto out;

	r = keyadmin_tpm_pinned(dir, tcti, fresh ? NULL : &s, &srk, &t);
	if (r == 0)
		r = import_target(bundle_path, &b, &srk, &s);
	if (r == 0)
		r = import_all(t, bundle_path, &b, text, &s, pcr_dir, sealed);
	if (r < 0)
		goto out;
	if (fresh) {
		s.srk_name = srk;
		s.nv_index = nv_index ? nv_index : TPM_NV_INDEX_DEFAULT;
		r = tpm_nv_counter_provision(t, s.nv_index);
		if (r < 0)
			goto out;
	} else {
		statedir_sweep(dir, &s);
	}
	written = calloc(b.n_gens, sizeof(*written));
	r = written ? import_commit(dir, &s, &b, is_new, sealed, fresh, written, &added) : -ENOMEM;
	if (r < 0)
		goto out;
	import_report(&b, is_new, fresh);
	*ret_added = added;
	r = 0;
out:
	if (r < 0 && written)
		import_undo(dir, &b, written);
	free(written);
	crypto_key_free(anchor);
	/* A refused import leaves no state directory it made itself. */
	if (r < 0 && !existed && lock >= 0) {
		statedir_unlink(dir, "lock");
		rmdir(dir);
	}
	if (sealed)
		util_freezero(sealed, b.n_gens * sizeof(*sealed));
	free(is_new);
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	bundle_free(&b);
	free(text);
	return r;
}

/* Ascending by number, each KEK staying with its generation. */
static void sort_generations(struct bundle_generation *g, uint8_t **keks, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		for (size_t k = i; k > 0 && g[k - 1].number > g[k].number; k--) {
			struct bundle_generation t = g[k];
			uint8_t *kt = keks[k];

			g[k] = g[k - 1];
			g[k - 1] = t;
			keks[k] = keks[k - 1];
			keks[k - 1] = kt;
		}
	}
}

/* Every generation of the bundles, opened with the recovery key and
 * wrapped again to the target; keks[i] (secure heap) for each of out->gens. */
/* Generation i of bundle b (its text): certified by a node the admin
 * approved, opened with the recovery key into sens and kek, the key_id and
 * the bundle's MAC checked with it. Logs. */
static int recover_open(const char *path, const struct bundle *b, const char *text, size_t i,
                        crypto_key *key, crypto_key *admin, const uint8_t *rec_pub, size_t rec_len,
                        struct dupcodec_sensitive *sens, uint8_t kek[TPM_KEK_BYTES])
{
	const struct bundle_generation *g = &b->gens[i];
	char id[ENVELOPE_KEY_ID_MAX];
	const char *why;
	int r;

	if (!g->certified ||
	    provenance_check(&g->cert, admin, g->number, g->kind, g->created, g->key_id,
	                     g->dup.pub, g->dup.pub_len, &why) < 0) {
		log_error("%s: generation %u: %s; nothing written", path, (unsigned)g->number,
		          g->certified ? why : "it carries no certificate of the node that made it");
		return -EKEYREJECTED;
	}
	r = dupcodec_unwrap(key, rec_pub, rec_len, &g->dup, sens, kek);
	if (r == 0)
		r = envelope_key_id(kek, g->number, id);
	if (r == 0 && strcmp(id, g->key_id) != 0)
		r = -EBADMSG;
	if (r == 0)
		r = bundle_check_mac(b, text, i, kek);
	if (r < 0) {
		log_error("%s: generation %u does not open with this recovery key, or the "
		          "bundle was altered; nothing written",
		          path, (unsigned)g->number);
		return -EBADMSG;
	}
	return 0;
}

/* What recovery has gathered from its bundles so far. The arrays grow a
 * generation at a time: a recovery takes a handful, and sizing them for
 * STATE_MAX_GENERATIONS up front zeroed 23 MB on every run. */
struct recovered {
	struct bundle b;
	uint8_t **keks; /* keks[i]: b.gens[i]'s KEK, in the secure heap */
};

static void recovered_free(struct recovered *rc)
{
	free_keks(rc->keks, rc->b.n_gens);
	bundle_free(&rc->b);
}

/* Adds g, wrapped to the target from the plaintext sensitive area in sens
 * (the caller wipes it), with its KEK; takes kek on success. */
static int recovered_add(struct recovered *rc, const char *path, const struct bundle_generation *g,
			 const struct node *target, struct dupcodec_sensitive *sens, uint8_t *kek)
{
	struct bundle_generation *gens, *add;
	uint8_t **keks;
	size_t n = rc->b.n_gens;
	int r;

	if (n >= STATE_MAX_GENERATIONS) {
		log_error("more than %d generations", STATE_MAX_GENERATIONS);
		return -E2BIG;
	}
	gens = realloc(rc->b.gens, (n + 1) * sizeof(*gens));
	if (gens)
		rc->b.gens = gens;
	keks = realloc(rc->keks, (n + 1) * sizeof(*keks));
	if (keks)
		rc->keks = keks;
	if (!gens || !keks)
		return -ENOMEM;
	add = &rc->b.gens[n];
	*add = (struct bundle_generation){
		.number = g->number,
		.created = g->created,
		.kind = g->kind,
		.certified = true,
		.cert = g->cert,
	};
	strcpy(add->key_id, g->key_id);
	r = dupcodec_wrap(target->pub, target->pub_len, g->dup.pub, g->dup.pub_len, sens,
			  &add->dup);
	if (r < 0) {
		log_error("%s: cannot wrap generation %u to the new node", path,
			  (unsigned)g->number);
		return r;
	}
	rc->keks[n] = kek;
	rc->b.n_gens = n + 1;
	return 0;
}

/* The generation numbered like g that an earlier bundle gave, if any; one
 * that differs from g is refused. */
static int recovered_find(const struct recovered *rc, const char *path,
			  const struct bundle_generation *g, bool *ret_have)
{
	for (size_t k = 0; k < rc->b.n_gens; k++) {
		const struct bundle_generation *have = &rc->b.gens[k];

		if (have->number != g->number)
			continue;
		if (strcmp(have->key_id, g->key_id) != 0) {
			log_error("%s: generation %u is %s here and %s in another bundle", path,
				  (unsigned)g->number, g->key_id, have->key_id);
			return -EINVAL;
		}
		*ret_have = true;
		return 0;
	}
	*ret_have = false;
	return 0;
}

static int recover_bundle(const char *path, crypto_key *key, crypto_key *admin,
			  const uint8_t *rec_pub, size_t rec_len, const struct tpm_name *rec_name,
			  const struct node *target, struct recovered *rc)
{
	uint8_t admin_der[SIGNER_DER_MAX];
	size_t admin_der_len;
	struct dupcodec_sensitive *sens = secmem_alloc(sizeof(*sens));
	char fp[NODE_FINGERPRINT_MAX];
	struct bundle b = {0};
	char *text = NULL;
	uint8_t *kek = NULL;
	bool have;
	int r;

	if (!sens)
		return -ENOMEM;
	r = bundle_load(path, &text, &b);
	if (r < 0)
		goto out;
	node_fingerprint(&b.node, fp);
	if (!tpm_name_equal(&b.node, rec_name)) {
		log_error("%s was exported to node %s, not to this recovery key", path, fp);
		r = -EKEYREJECTED;
		goto out;
	}
	/* The operator's admin key, never the file's own (brief §9.1). */
	r = signer_to_der(admin, admin_der, &admin_der_len);
	if (r < 0)
		goto out;
	if (admin_der_len != b.anchors.admin_key_len ||
	    memcmp(admin_der, b.anchors.admin_key, admin_der_len) != 0) {
		log_error("%s was made under another admin key than --admin-key; nothing "
			  "written",
			  path);
		r = -EKEYREJECTED;
		goto out;
	}
	anchors_set_admin(&rc->b.anchors, &b.anchors);
	if (b.anchors.pcr_key_len)
		anchors_set_binding(&rc->b.anchors, &b.anchors);
	for (size_t i = 0; i < b.n_gens; i++) {
		r = recovered_find(rc, path, &b.gens[i], &have);
		if (r < 0)
			goto out;
		kek = secmem_alloc(TPM_KEK_BYTES);
		/* Opened even when an earlier bundle gave it: every bundle
		 * named must be whole. */
		r = kek ? recover_open(path, &b, text, i, key, admin, rec_pub, rec_len, sens, kek)
			: -ENOMEM;
		if (r == 0 && !have) {
			r = recovered_add(rc, path, &b.gens[i], target, sens, kek);
			if (r == 0)
				kek = NULL;
		}
		util_wipe(sens, sizeof(*sens));
		secmem_free(kek, TPM_KEK_BYTES);
		kek = NULL;
		if (r < 0)
			goto out;
	}
out:
	secmem_free(kek, TPM_KEK_BYTES);
	secmem_free(sens, sizeof(*sens));
	bundle_free(&b);
	free(text);
	return r;
}

int exchange_recover(const char *recovery_key_path, const char *passphrase_file,
		     const char *admin_key_path, const char *node_path, const char *const *bundles,
		     size_t n_bundles, uint32_t write_gen, char **ret_bundle, size_t *ret_len)
{
	crypto_key *admin = NULL;
	struct recovered rc = {0};
	struct tpm_name rec_name;
	struct node target;
	uint8_t rec_pub[TPM_BLOB_MAX];
	size_t rec_len, write_i;
	crypto_key *key = NULL;
	int r;

	r = nodefile_load(node_path, &target);
	if (r < 0)
		return r;
	r = signer_load_public(admin_key_path, "admin key", &admin);
	if (r < 0)
		return r;
	r = signer_load_private(recovery_key_path, "recovery key", passphrase_file, &key);
	if (r < 0)
		goto out;
	r = tpmobj_storage_public(key, rec_pub, &rec_len);
	if (r == 0)
		r = tpmobj_name(rec_pub, rec_len, &rec_name);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n_bundles; i++) {
		r = recover_bundle(bundles[i], key, admin, rec_pub, rec_len, &rec_name, &target,
				   &rc);
		if (r < 0)
			goto out;
	}
	if (rc.b.n_gens == 0) { /* no bundle named: parsing refuses an empty one */
		log_error("no bundle to recover from");
		r = -EINVAL;
		goto out;
	}
	sort_generations(rc.b.gens, rc.keks, rc.b.n_gens);
	write_i = rc.b.n_gens - 1;
	if (write_gen) {
		for (write_i = 0; write_i < rc.b.n_gens && rc.b.gens[write_i].number != write_gen;
		     write_i++)
			;
		if (write_i == rc.b.n_gens) {
			log_error("--write-generation %u: no such generation in the bundles",
				  (unsigned)write_gen);
			r = -ENOENT;
			goto out;
		}
	}
	rc.b.gens[write_i].write = true;
	rc.b.node = target.name;
	r = bundle_encode(&rc.b, (const uint8_t *const *)rc.keks, ret_bundle, ret_len);
	if (r == 0)
		log_info("recovered %zu generation%s for node %s; import the bundle there",
			 rc.b.n_gens, rc.b.n_gens == 1 ? "" : "s", node_path);
out:
	recovered_free(&rc);
	crypto_key_free(key);
	crypto_key_free(admin);
	return r;
}
