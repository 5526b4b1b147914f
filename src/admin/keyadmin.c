#include "config.h"

#include "keys/auditrec.h"
#include "keys/envelope.h"
#include "keys/escrow.h"
#include "keys/kekpolicy.h"
#include "admin/keyadmin.h"
#include "base/log.h"
#include "keys/unseal.h"
#include "tpm/policy.h"
#include "keys/provenance.h"
#include "keys/sealfile.h"
#include "base/secmem.h"
#include "keys/sharelog.h"
#include "keys/signer.h"
#include "tpm/tpm.h"
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Unseals a generation into kek (secure heap) and checks it against its
 * key_id. The pcr kinds need b and a signature of this node's boot
 * state. */
int keyadmin_unseal_sealed(tpm *t, const struct pcr_binding *b, const struct tpm_sealed *sealed,
			   enum tpm_kek_kind kind, uint32_t number, const char *key_id,
			   uint8_t kek[TPM_KEK_BYTES])
{
	char id[ENVELOPE_KEY_ID_MAX];
	struct tpm_pcr_values v;
	int r;

	r = unseal_kek(t, b, sealed, kind, kek, &v);
	if (r == -ENOKEY) {
		char why[24 * 80 + 64];

		unseal_describe(&v, why, sizeof(why));
		log_error("generation %u: %s (add its signature to the PCR signature "
			  "directory)",
			  (unsigned)number, why);
	}
	if (r < 0)
		return r;
	r = envelope_key_id(kek, number, id);
	if (r == 0 && strcmp(id, key_id) != 0)
		r = -EKEYREJECTED;
	return r;
}

int keyadmin_unseal(tpm *t, const char *dir, const struct pcr_binding *b,
		    const struct state_generation *g, struct tpm_sealed *ret_sealed,
		    uint8_t kek[TPM_KEK_BYTES])
{
	struct tpm_sealed sealed;
	int r;

	r = state_generation_read(dir, g, &sealed);
	if (r < 0) {
		log_error("generation %u: %s/%s is missing or damaged", (unsigned)g->number, dir,
			  g->file);
		return r;
	}
	r = keyadmin_unseal_sealed(t, b, &sealed, g->kind, g->number, g->key_id, kek);
	if (r < 0 && r != -ENOKEY)
		log_error("generation %u: cannot unseal it or it does not match key_id %s",
			  (unsigned)g->number, g->key_id);
	if (r == 0)
		*ret_sealed = sealed;
	util_wipe(&sealed, sizeof(sealed));
	return r;
}

/* Certifies a duplicable generation with this node's signing key and
 * writes its certificate: -ENOENT (logged) when the node's approval is not
 * recorded yet. */
static int certify(tpm *t, const char *dir, const struct state *s, const struct state_generation *g,
		   const struct tpm_sealed *sealed)
{
	struct certifier *c = calloc(1, sizeof(*c));
	struct provenance p;
	int r;

	if (!c)
		return -ENOMEM;
	r = provenance_certifier(dir, s, c);
	if (r == -ENOENT)
		log_warning("generation %u is not certified: this node's approval is not recorded "
			    "(tpm2-kms certify --approval APPROVAL); no other node or recovery will "
			    "take it until it is",
			    (unsigned)g->number);
	if (r == 0)
		r = provenance_certify(t, c, g, sealed, &p);
	if (r == 0)
		r = provenance_save(dir, g->number, &p);
	util_freezero(c, sizeof(*c));
	return r;
}

/* Seals generation `number` and writes its file (not yet the state).
 * With escrow configured, a `dup` generation is escrowed at once;
 * *ret_escrowed says whether that worked (true when not asked). */
static int create_generation(tpm *t, const char *dir, const struct state *s, uint32_t number,
			     struct state_generation *ret, bool *ret_escrowed)
{
	struct state_generation g = {.number = number};
	struct tpm_sealed sealed;
	struct tpm_or_list or;
	uint8_t *kek = secmem_alloc(TPM_KEK_BYTES), policy[32];
	char *pem = NULL;
	size_t pem_len = 0;
	int r;

	if (!kek)
		return -ENOMEM;
	g.kind = kekpolicy_new_kind(&s->anchors);
	r = kekpolicy_of(&s->anchors, g.kind, policy, &or);
	if (r < 0) {
		log_error("%s/state: the admin or PCR key is not usable", dir);
		goto out;
	}
	r = tpm_kek_create(t, g.kind, policy, kek, &sealed);
	if (r < 0)
		goto out;
	r = envelope_key_id(kek, number, g.key_id);
	if (r < 0)
		goto out;
	r = sealfile_encode(&sealed, &pem, &pem_len);
	if (r < 0)
		goto out;
	statedir_gen_file(number, g.file);
	r = statedir_write(dir, g.file, pem, pem_len);
	if (r < 0)
		goto out;
	g.created = util_now_realtime_s();
	*ret_escrowed = true;
	if (tpm_kek_duplicable(g.kind)) {
		bool certified = certify(t, dir, s, &g, &sealed) == 0;

		/* An escrow file without a certificate would be refused by
		 * recover: such a generation counts as not escrowed. */
		if (escrow_configured(dir))
			*ret_escrowed = certified &&
					escrow_generation(t, dir, s, &g, &sealed, kek) == 0;
	}
	*ret = g;
out:
	util_wipe(&sealed, sizeof(sealed));
	secmem_free(kek, TPM_KEK_BYTES);
	free(pem);
	return r;
}

/* Escrows the `dup` generations that have no escrow file yet (escrow set
 * up after they were made, or a failed escrow being retried). */
static int escrow_missing(tpm *t, const char *dir, const char *pcr_dir, const struct state *s,
			  size_t *ret_done)
{
	struct pcr_binding *binding = NULL;
	uint8_t *kek = secmem_alloc(TPM_KEK_BYTES);
	int r = 0;

	*ret_done = 0;
	if (!kek)
		return -ENOMEM;
	if (s->anchors.pcr_key_len) {
		r = unseal_load_binding(&s->anchors, pcr_dir, &binding);
		if (r < 0) {
			secmem_free(kek, TPM_KEK_BYTES);
			return r;
		}
	}
	for (size_t i = 0; r == 0 && i < s->n_gens; i++) {
		const struct state_generation *g = &s->gens[i];
		struct tpm_sealed sealed;
		struct provenance cert;

		if (!tpm_kek_duplicable(g->kind) ||
		    escrow_has(dir, g->number))
			continue;
		if (provenance_load(dir, g->number, &cert) < 0) {
			log_error("generation %u is not certified, so it is not escrowed: tpm2-kms "
				  "certify first",
				  (unsigned)g->number);
			r = -EPERM;
			break;
		}
		/* The escrow file's MAC needs the key. */
		r = keyadmin_unseal(t, dir, binding, g, &sealed, kek);
		if (r == 0)
			r = escrow_generation(t, dir, s, g, &sealed, kek);
		util_wipe(&sealed, sizeof(sealed));
		if (r < 0)
			log_error("generation %u could not be escrowed", (unsigned)g->number);
		else
			(*ret_done)++;
	}
	secmem_free(kek, TPM_KEK_BYTES);
	unseal_binding_unref(binding);
	return r;
}

/* The PCR signer and selection, when given, are recorded if the state has
 * none; others are refused. */
static int adopt_pcr_key(const char *dir, struct state *s, const struct keyadmin_config *c,
			 bool *changed)
{
	if (!c->pcr_key_len && !c->pcrs.n)
		return 0;
	if (!c->pcr_key_len || !c->pcrs.n) {
		log_error("boot-state binding needs both pcr-key and pcrs");
		return -EINVAL;
	}
	if (s->anchors.pcr_key_len == c->pcr_key_len &&
	    memcmp(s->anchors.pcr_key, c->pcr_key, c->pcr_key_len) == 0 &&
	    policy_pcrs_equal(&s->anchors.pcrs, &c->pcrs))
		return 0;
	if (s->anchors.pcr_key_len) {
		log_error("%s already binds its generations to another PCR signer or other PCRs; "
			  "they cannot be replaced in place",
			  dir);
		return -EEXIST;
	}
	memcpy(s->anchors.pcr_key, c->pcr_key, c->pcr_key_len);
	s->anchors.pcr_key_len = c->pcr_key_len;
	s->anchors.pcrs = c->pcrs;
	*changed = true;
	return 0;
}

/* Literal PCRs, when given, are recorded with their values now, if the
 * state has none; others are refused. */
static int adopt_literal(tpm *t, const char *dir, struct state *s, const struct keyadmin_config *c,
			 bool *changed)
{
	struct tpm_pcr_values v;
	int r;

	if (!c->literal.n)
		return 0;
	if (!s->anchors.pcr_key_len) {
		log_error("literal PCRs go with a PCR signer (pcr-key and pcrs)");
		return -EINVAL;
	}
	if (s->anchors.literal.n) {
		if (policy_pcrs_equal(&s->anchors.literal, &c->literal))
			return 0;
		log_error("%s already checks other literal PCRs; they cannot be replaced in place",
			  dir);
		return -EEXIST;
	}
	r = tpm_pcr_read(t, c->literal.index, c->literal.n, &v);
	if (r < 0)
		return r;
	s->anchors.literal = c->literal;
	memcpy(s->anchors.literal_values, v.value, c->literal.n * 32);
	*changed = true;
	return 0;
}

/* escrow-to and escrow-approval, when given, are recorded (replacing what
 * was recorded before). */
static int configure_escrow(const char *dir, const struct state *s,
			    const struct keyadmin_config *c)
{
	if (!c->escrow_to && !c->escrow_approval)
		return 0;
	if (!c->escrow_to || !c->escrow_approval) {
		log_error("escrow needs both escrow-to and escrow-approval");
		return -EINVAL;
	}
	return escrow_configure(dir, s, c->escrow_to, c->escrow_approval);
}

int keyadmin_open(const char *dir, bool create, uint32_t nv_index, int *ret_lock,
		  struct state *ret, bool *ret_fresh)
{
	struct state s = {0};
	int lock = -1, r;

	r = statedir_open(dir, create);
	if (r < 0)
		return r;
	r = statedir_lock(dir, &lock);
	if (r < 0)
		return r;
	r = state_load(dir, &s);
	if (r == -ENOENT && !create)
		log_error("%s holds no keys yet: run tpm2-kms init first", dir);
	if (r < 0 && (r != -ENOENT || !create))
		goto fail;
	if (r == 0 && nv_index && nv_index != s.nv_index) {
		log_error("%s was provisioned with NV index 0x%08x, not 0x%08x", dir,
			  (unsigned)s.nv_index, (unsigned)nv_index);
		state_free(&s);
		r = -EINVAL;
		goto fail;
	}
	if (ret_fresh)
		*ret_fresh = r == -ENOENT;
	*ret_lock = lock;
	*ret = s;
	return 0;
fail:
	statedir_unlock(lock);
	return r;
}

static int open_locked(const char *dir, int *ret_lock, struct state *ret)
{
	return keyadmin_open(dir, false, 0, ret_lock, ret, NULL);
}

/* open_locked, and the generation numbered so in it; hint follows the
 * message that it is not there. */
static int open_generation(const char *dir, uint32_t generation, const char *hint,
			   int *ret_lock, struct state *ret, const struct state_generation **ret_g)
{
	const struct state_generation *g;
	struct state s = {0};
	int lock = -1, r;

	r = open_locked(dir, &lock, &s);
	if (r < 0)
		return r;
	g = state_find(&s, generation);
	if (!g) {
		log_error("%s has no generation %u%s", dir, (unsigned)generation, hint);
		state_free(&s);
		statedir_unlock(lock);
		return -ENOENT;
	}
	*ret_lock = lock;
	*ret = s; /* g points into the generations array, which *ret now holds */
	*ret_g = g;
	return 0;
}

/* Hands the TPM the owner password in path: the file's bytes exactly, as
 * tpm2-tools reads `file:PATH`, so one file serves both. It stays on the
 * stack only while copied, and is wiped. */
static int owner_auth_load(tpm *t, const char *path)
{
	uint8_t buf[TPM_OWNER_AUTH_MAX + 1];
	size_t len = 0;
	struct stat st;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		log_error("owner password %s: %s", path, strerror(errno));
		return r;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_error("owner password %s: not a regular file", path);
		r = -EINVAL;
		goto out;
	}
	if (st.st_mode & 0077)
		log_warning("owner password %s can be read by others than its owner: chmod 0600 it",
			    path);
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			log_error("owner password %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == 0 || len > TPM_OWNER_AUTH_MAX) {
		log_error("owner password %s: %s", path,
			  len ? "longer than 64 bytes" : "the file is empty");
		r = -EINVAL;
		goto out;
	}
	r = tpm_set_owner_auth(t, buf, len);
out:
	util_wipe(buf, sizeof(buf));
	close(fd);
	return r;
}

/* The TPM refused the owner hierarchy's authorization while provisioning. */
static void log_owner_auth_refused(const struct keyadmin_config *c, uint32_t nv_index)
{
	if (c->owner_auth_file) {
		log_error("the TPM refused the owner password in %s (its exact bytes, a final "
			  "newline included, are the password)",
			  c->owner_auth_file);
		return;
	}
	log_error("the TPM's owner hierarchy has a password: give it with --owner-auth-file "
		  "FILE (or the systemd credential owner-auth), or provision it yourself: "
		  "tpm2_createprimary -C o -P file:FILE -c srk.ctx && tpm2_evictcontrol -C o "
		  "-P file:FILE -c srk.ctx 0x81000001; tpm2_nvdefine -C o -P file:FILE -s 8 -a "
		  "\"authread|authwrite|no_da|nt=counter\" 0x%08x",
		  (unsigned)nv_index);
}

static void log_srk_mismatch(const char *dir)
{
	log_error("the TPM's storage root key is not the one %s/state was provisioned with: "
		  "the TPM was cleared or this is another machine's state directory; its keys "
		  "cannot be unsealed here",
		  dir);
}

/* Records the admin key in s when it has none; refuses another one. Sets
 * *changed when s needs saving. */
static int adopt_admin_key(const char *dir, struct state *s, const uint8_t *key, size_t len,
			   bool *changed)
{
	if (!len)
		return 0;
	if (s->anchors.admin_key_len == len && memcmp(s->anchors.admin_key, key, len) == 0)
		return 0;
	if (s->anchors.admin_key_len) {
		log_error("%s already records another admin key; an admin key cannot be "
			  "replaced in place (see docs/operations.md)",
			  dir);
		return -EEXIST;
	}
	if (len > sizeof(s->anchors.admin_key))
		return -EINVAL;
	memcpy(s->anchors.admin_key, key, len);
	s->anchors.admin_key_len = len;
	*changed = true;
	return 0;
}

int keyadmin_tpm_open(const char *dir, const char *tcti, const struct state *s, tpm **ret)
{
	return keyadmin_tpm_pinned(dir, tcti, s, NULL, ret);
}

int keyadmin_tpm_pinned(const char *dir, const char *tcti, const struct state *s,
			struct tpm_name *ret_srk, tpm **ret)
{
	struct tpm_name srk;
	tpm *t = NULL;
	int r;

	r = tpm_open(tcti, &t);
	if (r < 0)
		return r;
	if (s) {
		srk = s->srk_name;
		r = tpm_srk_check(t, &srk);
		if (r == -EKEYREJECTED)
			log_srk_mismatch(dir);
	} else {
		r = tpm_srk_provision(t, &srk);
	}
	if (r < 0) {
		tpm_close(t);
		return r;
	}
	if (ret_srk)
		*ret_srk = srk;
	*ret = t;
	return 0;
}

/* A fresh state's generation 1, the write key, and the state saved.
 * Logs. */
static int provision_first_generation(tpm *t, const char *dir, struct state *s)
{
	struct state_generation g;
	bool escrowed;
	int r;

	r = create_generation(t, dir, s, 1, &g, &escrowed);
	if (r < 0)
		return r;
	if (!escrowed) {
		/* Generation 1 must be the write key: no escrow, no state. */
		log_error("cannot provision %s: generation 1 could not be escrowed", dir);
		statedir_unlink(dir, g.file);
		return -EIO;
	}
	r = state_add(s, &g);
	if (r < 0)
		return r;
	s->write_generation = 1;
	r = state_save(dir, s);
	if (r < 0)
		return r;
	log_info("provisioned %s: generation 1 (%s), key_id %s, NV counter 0x%08x", dir,
	         state_kind_name(g.kind), g.key_id, (unsigned)s->nv_index);
	return 0;
}

/* An existing state: what escrow misses is escrowed, and the state saved
 * when that or the recorded keys (changed) changed it. Logs. */
static int provision_catch_up(tpm *t, const char *dir, const struct keyadmin_config *c,
                              struct state *s, bool changed)
{
	size_t n_escrowed = 0;
	int r;

	if (escrow_configured(dir)) {
		r = escrow_missing(t, dir, c->pcr_dir, s, &n_escrowed);
		if (r < 0)
			return r;
	}
	/* Saving the state (even unchanged) makes a running daemon look again,
	 * at the escrow files too. */
	if (changed || n_escrowed) {
		r = state_save(dir, s);
		if (r < 0)
			return r;
	}
	if (changed)
		log_info("%s: keys recorded; generations made from now on are `%s` (rotate to "
		         "make one)",
		         dir, state_kind_name(kekpolicy_new_kind(&s->anchors)));
	return 0;
}

/* The SRK made or found, and pinned: a state provisioned before must find
 * the SRK it recorded. The owner password's file is read only when
 * something must be created: the guide has it removed after provisioning. */
static int provision_srk(tpm *t, const char *dir, const struct keyadmin_config *c, bool fresh,
			 struct state *s)
{
	uint32_t nv_index = c->nv_index   ? c->nv_index
			    : s->nv_index ? s->nv_index
					  : TPM_NV_INDEX_DEFAULT;
	struct tpm_name srk_name;
	bool needed = true;
	int r = 0;

	if (c->owner_auth_file) {
		r = tpm_needs_provisioning(t, nv_index, s->anchors.pcr_key_len || c->pcr_key_len,
					   &needed);
		if (r == 0 && needed)
			r = owner_auth_load(t, c->owner_auth_file);
		if (r < 0)
			return r;
	}
	r = tpm_srk_provision(t, &srk_name);
	if (r == -EACCES)
		log_owner_auth_refused(c, nv_index);
	if (r < 0)
		return r;
	if (!fresh && !tpm_name_equal(&srk_name, &s->srk_name)) {
		log_srk_mismatch(dir);
		return -EKEYREJECTED;
	}
	if (fresh) {
		s->srk_name = srk_name;
		s->nv_index = nv_index;
	}
	return 0;
}

/* The nonce counter, and under PCR binding the epoch index that
 * signatures of PCR values name. */
static int provision_indices(tpm *t, const struct keyadmin_config *c, const struct state *s)
{
	int r;

	r = tpm_nv_counter_provision(t, s->nv_index);
	if (r == -EACCES)
		log_owner_auth_refused(c, s->nv_index);
	if (r < 0 || !s->anchors.pcr_key_len)
		return r;
	r = tpm_epoch_provision(t);
	if (r == -EACCES)
		log_owner_auth_refused(c, TPM_NV_EPOCH_INDEX);
	return r;
}

int keyadmin_provision(const char *dir, const char *tcti, const struct keyadmin_config *c,
		       struct state *ret)
{
	struct state s = {0};
	tpm *t = NULL;
	int lock = -1, r;
	bool fresh, changed = false;

	r = keyadmin_open(dir, true, c->nv_index, &lock, &s, &fresh);
	if (r < 0)
		return r;
	r = tpm_open_watched(tcti, c->watch, &t);
	if (r == 0)
		r = provision_srk(t, dir, c, fresh, &s);
	if (r == 0)
		r = adopt_admin_key(dir, &s, c->admin_key, c->admin_key_len, &changed);
	if (r == 0)
		r = adopt_pcr_key(dir, &s, c, &changed);
	if (r == 0)
		r = adopt_literal(t, dir, &s, c, &changed);
	if (r == 0)
		r = configure_escrow(dir, &s, c);
	if (r == 0 && c->node_approval)
		r = provenance_record_approval(t, dir, &s, c->node_approval);
	if (r == 0)
		r = provision_indices(t, c, &s);
	if (r < 0)
		goto out;
	if (fresh) {
		r = provision_first_generation(t, dir, &s);
	} else {
		statedir_sweep(dir, &s);
		r = provision_catch_up(t, dir, c, &s, changed);
	}
	if (r < 0)
		goto out;
	*ret = s;
	s.gens = NULL;
out:
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

int keyadmin_rotate(const char *dir, const char *tcti, const struct keyadmin_config *c, bool stage,
		    struct state_generation *ret)
{
	struct state s = {0};
	struct state_generation g;
	tpm *t = NULL;
	uint32_t next;
	int lock = -1, r;
	bool escrowed;

	r = open_locked(dir, &lock, &s);
	if (r < 0)
		return r;
	statedir_sweep(dir, &s);
	r = configure_escrow(dir, &s, c);
	if (r < 0)
		goto out;
	next = s.gens[s.n_gens - 1].number + 1;
	if (next == 0) {
		r = -EOVERFLOW;
		goto out;
	}
	r = keyadmin_tpm_open(dir, tcti, &s, &t);
	if (r < 0)
		goto out;
	/* The file first, then the state that names it: a crash in between
	 * leaves an unused file and the old state. */
	r = create_generation(t, dir, &s, next, &g, &escrowed);
	if (r < 0)
		goto out;
	r = state_add(&s, &g);
	if (r < 0)
		goto out;
	/* A generation that could not be escrowed must not become the write
	 * key: it is kept decrypt-only until escrowed (init) and promoted. */
	if (!stage && escrowed)
		s.write_generation = next;
	r = state_save(dir, &s);
	if (r < 0) {
		/* Once the new state is in place, its key file stays. */
		if (state_names(dir, next))
			log_error("generation %u is in the state, but the state directory may not "
				  "be on disk: check the disk",
				  (unsigned)next);
		else
			statedir_unlink(dir, g.file);
		goto out;
	}
	if (!escrowed) {
		log_error("generation %u was made but could not be escrowed: it stays "
			  "decrypt-only; fix the cause, run tpm2-kms init to escrow it, then "
			  "tpm2-kms promote %u",
			  (unsigned)next, (unsigned)next);
		r = -EIO;
		goto out;
	}
	if (stage)
		log_info("staged %s: generation %u (%s), key_id %s, decrypt-only until promoted",
			 dir, (unsigned)next, state_kind_name(g.kind), g.key_id);
	else
		log_info("rotated %s: generation %u (%s), key_id %s is the write key", dir,
			 (unsigned)next, state_kind_name(g.kind), g.key_id);
	*ret = g;
out:
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

int keyadmin_promote(const char *dir, uint32_t generation, bool force)
{
	struct state s = {0};
	const struct state_generation *g;
	char missing[512];
	size_t n_missing = 0;
	int lock = -1, r;

	r = open_generation(dir, generation,
			    ": stage it here, or import it from the node that staged it, first", &lock,
			    &s, &g);
	if (r < 0)
		return r;
	if (generation == s.write_generation) {
		log_info("generation %u is already the write key", (unsigned)generation);
		r = 0;
		goto out;
	}
	if (tpm_kek_duplicable(g->kind) && escrow_configured(dir) &&
	    !escrow_has(dir, generation)) {
		log_error("generation %u is not escrowed: run tpm2-kms init to escrow it, then "
			  "promote it",
			  (unsigned)generation);
		r = -EPERM;
		goto out;
	}
	/* The nodes this one shares keys with must have it before anything
	 * is written under it: they could not decrypt it. */
	r = sharelog_missing(dir, generation, missing, sizeof(missing), &n_missing);
	if (r < 0)
		goto out;
	if (n_missing && !force) {
		log_error("generation %u was never exported to %zu node%s this node exports to (%s): "
			  "they could not decrypt what this node writes under it. Export it and "
			  "import it there first (docs/operations.md section 9.3), or promote with "
			  "--force if those nodes have it from elsewhere or are gone",
			  (unsigned)generation, n_missing, n_missing == 1 ? "" : "s", missing);
		r = -EPERM;
		goto out;
	}
	if (n_missing)
		log_warning("promoting generation %u, never exported to %s (--force)",
			    (unsigned)generation, missing);
	s.write_generation = generation;
	r = state_save(dir, &s);
	if (r < 0)
		goto out;
	log_info("promoted %s: generation %u, key_id %s is the write key", dir,
		 (unsigned)generation, g->key_id);
out:
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

/* kube-apiserver asks for the key_id about once a minute: until it has
 * seen the new write key it still writes under the old one. An audit
 * counts for a generation only when it began this long after the write
 * key changed. */
#define AUDIT_SETTLE_S 120

/* retire trusts the last complete audit of etcd (tpm2-kms audit), and
 * nothing else: Decrypt counts since the daemon started miss every object
 * nobody read since. Logs the refusal, or with force the warning. */
static int audit_allows_retire(const char *dir, uint32_t generation, uint32_t write_generation,
                               uint64_t decrypts, pid_t daemon, bool force)
{
	struct auditrec *a = calloc(1, sizeof(*a));
	char why[1024], t1[UTIL_UTC_MAX], t2[UTIL_UTC_MAX], t3[UTIL_UTC_MAX];
	uint64_t since, objects = 0;
	int r;

	if (!a)
		return -ENOMEM;
	r = statedir_write_since(dir, write_generation, &since);
	if (r < 0)
		goto out;
	r = auditrec_load(dir, AUDITREC_LIVE, a);
	if (r == -ENOENT)
		snprintf(why, sizeof(why), "no audit of etcd is recorded: run tpm2-kms audit");
	else if (r < 0)
		snprintf(why, sizeof(why), "the audit record cannot be read: run tpm2-kms audit");
	else if (!a->complete)
		snprintf(why, sizeof(why),
		         "the last audit (%s, %s) is incomplete: run tpm2-kms audit again",
		         a->source, util_utc(a->started, t1));
	else if (a->started < since + AUDIT_SETTLE_S)
		snprintf(why, sizeof(why),
		         "the last audit (%s, %s) began less than %d s after generation %u became "
		         "the write key (%s); kube-apiserver may have written under the old key "
		         "until it saw the new key_id: run tpm2-kms audit after %s",
		         a->source, util_utc(a->started, t1), AUDIT_SETTLE_S, (unsigned)write_generation,
		         util_utc(since, t2), util_utc(since + AUDIT_SETTLE_S, t3));
	else if (!auditrec_count(a, generation, &objects))
		snprintf(why, sizeof(why),
		         "the last audit (%s, %s) was made before this node had generation %u: "
		         "run tpm2-kms audit",
		         a->source, util_utc(a->started, t1), (unsigned)generation);
	else if (objects > 0)
		snprintf(why, sizeof(why),
		         "the last audit (%s, %s, revision %lld) found %llu objects under "
		         "generation %u: re-encrypt them (docs/operations.md section 5) and audit "
		         "again",
		         a->source, util_utc(a->started, t1), (long long)a->revision,
		         (unsigned long long)objects, (unsigned)generation);
	else {
		log_info("the audit of %s at %s found no object under generation %u", a->source,
		         util_utc(a->started, t1), (unsigned)generation);
		r = 0;
		goto out;
	}
	if (decrypts > 0)
		log_info("generation %u served %llu Decrypt calls since the daemon (pid %d) "
		         "started",
		         (unsigned)generation, (unsigned long long)decrypts, (int)daemon);
	if (force) {
		log_warning("retiring generation %u although %s (--force)", (unsigned)generation,
		            why);
		r = 0;
	} else {
		log_error("generation %u may still protect data: %s; --force retires it anyway",
		          (unsigned)generation, why);
		r = -EBUSY;
	}
out:
	free(a);
	return r;
}

int keyadmin_retire(const char *dir, uint32_t generation, bool force)
{
	struct state s = {0};
	struct decrypt_counts *counts = NULL;
	const struct state_generation *g;
	char file[32];
	uint64_t used;
	int lock = -1, r;

	r = open_generation(dir, generation, "", &lock, &s, &g);
	if (r < 0)
		return r;
	if (generation == s.write_generation) {
		log_error("generation %u is the write key; rotate first", (unsigned)generation);
		r = -EBUSY;
		goto out;
	}
	counts = calloc(1, sizeof(*counts));
	if (!counts) {
		r = -ENOMEM;
		goto out;
	}
	r = counts_load(dir, counts);
	if (r < 0)
		goto out;
	used = counts_get(counts, generation);
	r = audit_allows_retire(dir, generation, s.write_generation, used, counts->pid, force);
	if (r < 0)
		goto out;
	strcpy(file, g->file);
	/* The state first, then the file: a crash in between leaves a file
	 * nothing refers to. */
	state_remove(&s, generation);
	r = state_save(dir, &s);
	if (r < 0)
		goto out;
	r = statedir_unlink(dir, file);
	if (r < 0)
		goto out;
	provenance_file(generation, file);
	r = statedir_unlink(dir, file);
	if (r < 0)
		goto out;
	log_info("retired generation %u", (unsigned)generation);
	/* Kept on purpose: etcd backups made while it was in use need it. */
	if (escrow_has(dir, generation))
		log_info("its escrow file %s/%s/gen-%06u.pem is kept: a backup of etcd made while "
			 "generation %u was in use needs it to be recovered; remove it yourself "
			 "once no backup does",
			 dir, ESCROW_DIR, (unsigned)generation, (unsigned)generation);
out:
	free(counts);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

int keyadmin_certify(const char *dir, const char *tcti, const struct keyadmin_config *c,
		     size_t *ret_certified)
{
	struct pcr_binding *binding = NULL;
	struct state s = {0};
	uint8_t *kek = secmem_alloc(TPM_KEK_BYTES);
	size_t done = 0, escrowed = 0;
	tpm *t = NULL;
	int lock = -1, r;

	if (!kek)
		return -ENOMEM;
	r = open_locked(dir, &lock, &s);
	if (r < 0)
		goto out;
	r = keyadmin_tpm_open(dir, tcti, &s, &t);
	if (r < 0)
		goto out;
	if (c->node_approval) {
		r = provenance_record_approval(t, dir, &s, c->node_approval);
		if (r < 0)
			goto out;
	}
	if (s.anchors.pcr_key_len) {
		r = unseal_load_binding(&s.anchors, c->pcr_dir, &binding);
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; i < s.n_gens; i++) {
		const struct state_generation *g = &s.gens[i];
		struct provenance have;
		struct tpm_sealed sealed;

		if (!tpm_kek_duplicable(g->kind) ||
		    provenance_load(dir, g->number, &have) == 0)
			continue;
		/* Only what this TPM holds under the key_id the state names is
		 * vouched for. */
		r = keyadmin_unseal(t, dir, binding, g, &sealed, kek);
		if (r < 0)
			goto out;
		r = certify(t, dir, &s, g, &sealed);
		if (r < 0) {
			util_wipe(&sealed, sizeof(sealed));
			goto out;
		}
		done++;
		/* An escrow file made before carries no certificate: again. */
		if (escrow_configured(dir)) {
			r = escrow_generation(t, dir, &s, g, &sealed, kek);
			if (r == 0)
				escrowed++;
		}
		util_wipe(&sealed, sizeof(sealed));
		util_wipe(kek, TPM_KEK_BYTES);
		if (r < 0)
			goto out;
		log_info("certified generation %u (%s)", (unsigned)g->number, g->key_id);
	}
	/* Saving the state makes a running daemon look at escrow again. */
	if (escrowed) {
		r = state_save(dir, &s);
		if (r < 0)
			goto out;
	}
	*ret_certified = done;
	r = 0;
out:
	unseal_binding_unref(binding);
	secmem_free(kek, TPM_KEK_BYTES);
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

int keyadmin_epoch_raise(const char *tcti, const struct keyadmin_config *c, unsigned epoch,
			 unsigned *ret_epoch)
{
	unsigned now;
	tpm *t = NULL;
	int r;

	r = tpm_open(tcti, &t);
	if (r < 0)
		return r;
	r = tpm_epoch_read(t, &now);
	if (r == -ENOENT)
		log_error("this TPM has no PCR signature epoch: run tpm2-kms init with the PCR "
			  "signer first");
	if (r < 0)
		goto out;
	if (epoch == 0)
		epoch = now + 1;
	if (epoch > TPM_EPOCH_MAX) {
		log_error("the epoch is %u: it cannot be raised past %d", now, TPM_EPOCH_MAX);
		r = -ERANGE;
		goto out;
	}
	if (epoch <= now) {
		log_info("the epoch is %u already: signatures for epochs below it are revoked",
			 now);
		*ret_epoch = now;
		goto out;
	}
	if (c->owner_auth_file) {
		r = owner_auth_load(t, c->owner_auth_file);
		if (r < 0)
			goto out;
	}
	r = tpm_epoch_raise(t, epoch);
	if (r == -EACCES)
		log_owner_auth_refused(c, TPM_NV_EPOCH_INDEX);
	if (r < 0)
		goto out;
	log_info("PCR signature epoch raised from %u to %u: signatures for epochs below %u "
		 "unseal nothing from now on",
		 now, epoch, epoch);
	*ret_epoch = epoch;
out:
	tpm_close(t);
	return r;
}
