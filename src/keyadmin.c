#include "config.h"

#include "envelope.h"
#include "keyadmin.h"
#include "log.h"
#include "sealfile.h"
#include "secmem.h"
#include "tpm.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Seals generation `number` and writes its file (not yet the state). */
static int create_generation(tpm *t, const char *dir, uint32_t number,
			     struct state_generation *ret)
{
	struct state_generation g = {.number = number};
	struct tpm_sealed sealed;
	uint8_t *kek = secmem_alloc(TPM_KEK_BYTES);
	char *pem = NULL;
	size_t pem_len = 0;
	int r;

	if (!kek)
		return -ENOMEM;
	r = tpm_kek_create(t, kek, &sealed);
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
	*ret = g;
out:
	secmem_free(kek, TPM_KEK_BYTES);
	free(pem);
	return r;
}

/* Opens an existing state directory, takes its lock and loads its state. */
static int open_locked(const char *dir, int *ret_lock, struct state *ret)
{
	int lock = -1, r;

	r = statedir_open(dir, false);
	if (r < 0)
		return r;
	r = statedir_lock(dir, &lock);
	if (r < 0)
		return r;
	r = state_load(dir, ret);
	if (r == -ENOENT)
		log_error("%s holds no keys yet: run tpm2-kms init first", dir);
	if (r < 0) {
		statedir_unlock(lock);
		return r;
	}
	*ret_lock = lock;
	return 0;
}

static void log_srk_mismatch(const char *dir)
{
	log_error("the TPM's storage root key is not the one %s/state was provisioned with: "
		  "the TPM was cleared or this is another machine's state directory; its keys "
		  "cannot be unsealed here",
		  dir);
}

int keyadmin_provision(const char *dir, const char *tcti, uint32_t nv_index, struct state *ret)
{
	struct state s = {0};
	struct tpm_name srk_name;
	struct state_generation g;
	tpm *t = NULL;
	int lock = -1, r;
	bool fresh;

	r = statedir_open(dir, true);
	if (r < 0)
		return r;
	r = statedir_lock(dir, &lock);
	if (r < 0)
		return r;
	r = state_load(dir, &s);
	if (r < 0 && r != -ENOENT)
		goto out;
	fresh = r == -ENOENT;
	if (!fresh && nv_index && nv_index != s.nv_index) {
		log_error("%s was provisioned with NV index 0x%08x, not 0x%08x", dir,
			  (unsigned)s.nv_index, (unsigned)nv_index);
		r = -EINVAL;
		goto out;
	}
	r = tpm_open(tcti, &t);
	if (r < 0)
		goto out;
	r = tpm_srk_provision(t, &srk_name);
	if (r < 0)
		goto out;
	if (!fresh && (srk_name.len != s.srk_name.len ||
		       memcmp(srk_name.bytes, s.srk_name.bytes, srk_name.len) != 0)) {
		log_srk_mismatch(dir);
		r = -EKEYREJECTED;
		goto out;
	}
	if (fresh) {
		s.srk_name = srk_name;
		s.nv_index = nv_index ? nv_index : TPM_NV_INDEX_DEFAULT;
	}
	r = tpm_nv_counter_provision(t, s.nv_index);
	if (r < 0)
		goto out;
	if (!fresh)
		statedir_sweep(dir, &s);
	if (fresh) {
		r = create_generation(t, dir, 1, &g);
		if (r < 0)
			goto out;
		r = state_add(&s, &g);
		if (r < 0)
			goto out;
		s.write_generation = 1;
		r = state_save(dir, &s);
		if (r < 0)
			goto out;
		log_info("provisioned %s: generation 1, key_id %s, NV counter 0x%08x", dir, g.key_id,
			 (unsigned)s.nv_index);
	}
	*ret = s;
	s.gens = NULL;
	r = 0;
out:
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}

int keyadmin_rotate(const char *dir, const char *tcti, struct state_generation *ret)
{
	struct state s = {0};
	struct state_generation g;
	tpm *t = NULL;
	uint32_t next;
	int lock = -1, r;

	r = open_locked(dir, &lock, &s);
	if (r < 0)
		return r;
	statedir_sweep(dir, &s);
	next = s.gens[s.n_gens - 1].number + 1;
	if (next == 0) {
		r = -EOVERFLOW;
		goto out;
	}
	r = tpm_open(tcti, &t);
	if (r < 0)
		goto out;
	r = tpm_srk_check(t, &s.srk_name);
	if (r == -EKEYREJECTED)
		log_srk_mismatch(dir);
	if (r < 0)
		goto out;
	/* The file first, then the state that names it: a crash in between
	 * leaves an unused file and the old state. */
	r = create_generation(t, dir, next, &g);
	if (r < 0)
		goto out;
	r = state_add(&s, &g);
	if (r < 0)
		goto out;
	s.write_generation = next;
	r = state_save(dir, &s);
	if (r < 0) {
		statedir_unlink(dir, g.file);
		goto out;
	}
	log_info("rotated %s: generation %u, key_id %s is the write key", dir, (unsigned)next,
		 g.key_id);
	*ret = g;
out:
	tpm_close(t);
	state_free(&s);
	statedir_unlock(lock);
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

	r = open_locked(dir, &lock, &s);
	if (r < 0)
		return r;
	g = state_find(&s, generation);
	if (!g) {
		log_error("%s has no generation %u", dir, (unsigned)generation);
		r = -ENOENT;
		goto out;
	}
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
	if (used > 0 && !force) {
		log_error("generation %u served %llu Decrypt calls since the daemon (pid %d) "
			  "started: data still depends on it; re-encrypt it (see "
			  "docs/operations.md) or use --force",
			  (unsigned)generation, (unsigned long long)used, (int)counts->pid);
		r = -EBUSY;
		goto out;
	}
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
	log_info("retired generation %u", (unsigned)generation);
out:
	free(counts);
	state_free(&s);
	statedir_unlock(lock);
	return r;
}
