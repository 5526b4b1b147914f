/* The state directory: a 0700 directory holding
 *   state              the versioned list of key generations (text)
 *   gen-NNNNNN.pem     one sealed KEK per generation (TSS2 PRIVATE KEY)
 *   decrypt-counts     per-generation Decrypt counts of the running daemon
 *   lock               flock()ed while provisioning, rotating or retiring
 *   write-since        when the write generation became the write key
 * Every file is written atomically (temp file, fsync, rename, fsync of the
 * directory), mode 0600. Functions log their errors.
 * Must not: write outside the state directory except -o outputs, or leave a partly written file. */
#ifndef TPM2KMS_STATEDIR_H
#define TPM2KMS_STATEDIR_H

#include "keys/anchors.h"
#include "tpm/policy.h"
#include "tpm/tpm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Format 1 has `none` generations only; format 2 adds the admin key and
 * other kinds. We write the lowest that holds the state, so a directory
 * that uses nothing new stays readable by older versions. */
#define STATE_FORMAT_MIN  1
#define STATE_FORMAT_MAX      3
#define STATE_MAX_GENERATIONS 4096
#define STATE_FILE_MAX    (1024 * 1024)
#define WRITE_SINCE_FILE      "write-since"

struct state_generation {
	uint32_t number;
	uint64_t created;  /* Unix time */
	char key_id[64];
	char file[32];     /* gen-NNNNNN.pem */
	enum tpm_kek_kind kind;
};

struct state {
	struct tpm_name srk_name;
	uint32_t nv_index;
	uint32_t write_generation;
	struct anchors anchors;
	struct state_generation *gens; /* ascending by number */
	size_t n_gens;
};

/* Creates the directory (0700) if create and it is missing; refuses one
 * that is not a directory, is group- or world-writable, or is owned by
 * another user than us or root. */
int statedir_open(const char *dir, bool create);

/* Claims the directory for one daemon for as long as fd stays open (a
 * lock on the directory itself, apart from the lock file the commands
 * take): -EBUSY, logged with the other daemon's pid, when another holds
 * it. Two daemons on one state directory would draw the same nonce
 * counter values. */
int statedir_claim(const char *dir, int *ret_fd);

/* Takes the lock file (blocking). Release with statedir_unlock. */
int statedir_lock(const char *dir, int *ret_fd);
void statedir_unlock(int fd);

/* -ENOENT when there is no state yet; -EBADMSG (logged with the line) when
 * the file is damaged. */
int state_load(const char *dir, struct state *ret);
int state_save(const char *dir, const struct state *s);
/* When write_generation became the write key (Unix time): state_save
 * records it in write-since whenever the write key changes. Without a
 * record for it (a state older than the record), the state file's time,
 * which is no earlier. Logs. */
int statedir_write_since(const char *dir, uint32_t write_generation, uint64_t *ret_time);
/* The text state_save writes (free()). */
int state_format(const struct state *s, char **ret, size_t *ret_len);
/* The parser behind state_load: buf holds len bytes and a NUL after them;
 * it is modified. dir only names the file in messages. */
int state_parse(const char *dir, char *buf, size_t len, struct state *ret);
void state_free(struct state *s);

const struct state_generation *state_find(const struct state *s, uint32_t number);

/* After a failed state_save: whether the state on disk names generation
 * number anyway (the rename happened, the directory sync did not), in
 * which case its file must be kept. */
bool state_names(const char *dir, uint32_t number);
int state_add(struct state *s, const struct state_generation *g);
int state_remove(struct state *s, uint32_t number);

/* "none", "dup", "pcr", "dup+pcr"; state_kind_parse: -EINVAL for names it does not know. */
const char *state_kind_name(enum tpm_kek_kind kind);
int state_kind_parse(const char *name, enum tpm_kek_kind *ret);

/* Generation g's sealed object, read from its file in dir, decoded and
 * checked against its kind; -ENOENT, -EBADMSG or -EINVAL when it is
 * missing or damaged. Does not log (callers say what it costs). */
int state_generation_read(const char *dir, const struct state_generation *g,
                          struct tpm_sealed *ret);

/* Atomic whole-file write and bounded read of a file in dir. */
int statedir_write(const char *dir, const char *name, const void *data, size_t len);
int statedir_read(const char *dir, const char *name, size_t max, char **ret, size_t *ret_len);
int statedir_unlink(const char *dir, const char *name);

/* Creates (or adopts) the subdirectory name of dir, mode 0700, owned like
 * dir: root administering a service user's state must not leave it
 * directories the daemon cannot enter. Logs. */
int statedir_mkdir(const char *dir, const char *name);

/* With the lock held: removes what interrupted writers left behind, that
 * is temp files of processes that are gone and sealed files the state does
 * not name (a rotation killed before its state was written, a retirement
 * killed after). */
void statedir_sweep(const char *dir, const struct state *s);

/* Generation g's sealed file name. */
void statedir_gen_file(uint32_t g, char out[32]);

/* decrypt-counts: written by the daemon, read by `keys` and `retire`:
 * per generation it knows, the Decrypts since it started and whether it
 * has the key loaded (so an operator promotes a generation only once every
 * node's daemon can decrypt with it). */
struct decrypt_counts {
	pid_t pid;         /* daemon that wrote them; 0 if none */
	size_t n;
	uint32_t gen[STATE_MAX_GENERATIONS];
	uint64_t count[STATE_MAX_GENERATIONS];
	bool loaded[STATE_MAX_GENERATIONS];
};
int counts_save(const char *dir, const struct decrypt_counts *c);
/* Zero counts when there is no file or its daemon is gone. */
int counts_load(const char *dir, struct decrypt_counts *ret);
uint64_t counts_get(const struct decrypt_counts *c, uint32_t gen);
/* "loaded", "not loaded", or "-" when no daemon runs or it does not know
 * the generation yet. */
const char *counts_loaded(const struct decrypt_counts *c, uint32_t gen);

#endif
