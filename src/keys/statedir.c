#include "config.h"

#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/sealfile.h"
#include "keys/signer.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int statedir_open(const char *dir, bool create)
{
	struct stat st;

	if (lstat(dir, &st) < 0) {
		if (errno != ENOENT || !create) {
			int r = -errno;

			log_error("state directory %s: %s", dir, strerror(errno));
			return r;
		}
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			int r = -errno;

			log_error("cannot create state directory %s: %s", dir, strerror(errno));
			return r;
		}
		if (lstat(dir, &st) < 0) {
			int r = -errno;

			log_error("state directory %s: %s", dir, strerror(errno));
			return r;
		}
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("state directory %s is not a directory", dir);
		return -ENOTDIR;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		log_error("state directory %s is group- or world-writable (mode %04o); refusing "
			  "to use it (chmod 0700 %s)",
			  dir, (unsigned)(st.st_mode & 07777), dir);
		return -EPERM;
	}
	/* root may administer a directory the service user owns (files it
	 * writes there are given to that user, see files_give_to_owner). */
	if (st.st_uid != geteuid() && st.st_uid != 0 && geteuid() != 0) {
		log_error("state directory %s belongs to uid %u, not to us (uid %u)", dir,
			  (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (access(dir, R_OK | X_OK) < 0) {
		int r = -errno;

		log_error("state directory %s: %s", dir, strerror(errno));
		return r;
	}
	return 0;
}

int statedir_mkdir(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st, parent;
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_error("cannot create %s: %s", path, strerror(errno));
		return r;
	}
	if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_error("%s is not a directory", path);
		return -ENOTDIR;
	}
	/* Also repairs one an earlier version made as root. */
	if (geteuid() == 0 && stat(dir, &parent) == 0 &&
	    (st.st_uid != parent.st_uid || st.st_gid != parent.st_gid) &&
	    lchown(path, parent.st_uid, parent.st_gid) < 0) {
		r = -errno;
		log_error("cannot give %s to the owner of %s: %s", path, dir, strerror(errno));
		return r;
	}
	return 0;
}

static int path_in(const char *dir, const char *name, char out[PATH_MAX])
{
	if ((size_t)snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

int statedir_claim(const char *dir, int *ret_fd)
{
	struct decrypt_counts *other;
	int fd, r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		log_error("state directory %s: %s", dir, strerror(errno));
		return r;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		*ret_fd = fd;
		return 0;
	}
	r = errno == EWOULDBLOCK ? -EBUSY : -errno;
	close(fd);
	if (r != -EBUSY) {
		log_error("cannot lock state directory %s: %s", dir, strerror(-r));
		return r;
	}
	/* The daemon that holds it writes its pid into decrypt-counts. */
	other = calloc(1, sizeof(*other));
	if (other && counts_load(dir, other) == 0 && other->pid > 0)
		log_error("another tpm2-kms serve (pid %d) uses %s: two daemons on one state "
			  "directory would draw the same nonce counter values; stop it first",
			  (int)other->pid, dir);
	else
		log_error("another tpm2-kms serve uses %s (in another PID namespace?): two daemons "
			  "on one state directory would draw the same nonce counter values; stop it "
			  "first",
			  dir);
	free(other);
	return -EBUSY;
}

int statedir_lock(const char *dir, int *ret_fd)
{
	char path[PATH_MAX];
	int fd, r;

	r = path_in(dir, "lock", path);
	if (r < 0)
		return r;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	/* On a read-only state directory the daemon can still serve: flock()
	 * works on a descriptor opened for reading. */
	if (fd < 0 && errno == EROFS)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		r = -errno;
		log_error("cannot open lock file %s: %s", path, strerror(errno));
		return r;
	}
	(void)files_give_to_owner(dir, fd); /* best effort: flock works either way */
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		r = -errno;
		log_error("cannot lock %s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

void statedir_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

int statedir_write(const char *dir, const char *name, const void *data, size_t len)
{
	return files_write_atomic(dir, name, data, len, true, dir, 0600);
}

int statedir_read(const char *dir, const char *name, size_t max, char **ret, size_t *ret_len)
{
	char path[PATH_MAX];
	int r;

	r = path_in(dir, name, path);
	if (r < 0)
		return r;
	return files_read(path, true, max, ret, ret_len);
}

int statedir_unlink(const char *dir, const char *name)
{
	char path[PATH_MAX];
	int r = path_in(dir, name, path);

	if (r < 0)
		return r;
	if (unlink(path) < 0 && errno != ENOENT) {
		r = -errno;
		log_error("cannot remove %s: %s", path, strerror(errno));
		return r;
	}
	return 0;
}

void statedir_sweep(const char *dir, const struct state *s)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		const char *tmp = strstr(e->d_name, ".tmp.");
		unsigned g;
		char tail;
		bool stale = false;

		if (e->d_name[0] == '.' && tmp) {
			uint64_t pid;

			stale = util_parse_u64(tmp + 5, INT32_MAX, &pid) == 0 &&
				kill((pid_t)pid, 0) < 0 && errno == ESRCH;
		} else if (sscanf(e->d_name, "gen-%u.pe%c", &g, &tail) == 2 && tail == 'm') {
			const struct state_generation *sg = state_find(s, g);

			stale = !sg || strcmp(sg->file, e->d_name) != 0;
		}
		if (stale) {
			log_info("removing leftover %s/%s", dir, e->d_name);
			statedir_unlink(dir, e->d_name);
		}
	}
	closedir(d);
}

void statedir_gen_file(uint32_t g, char out[32])
{
	snprintf(out, 32, "gen-%06u.pem", (unsigned)g);
}

void state_free(struct state *s)
{
	free(s->gens);
	s->gens = NULL;
	s->n_gens = 0;
}

const struct state_generation *state_find(const struct state *s, uint32_t number)
{
	for (size_t i = 0; i < s->n_gens; i++)
		if (s->gens[i].number == number)
			return &s->gens[i];
	return NULL;
}

bool state_names(const char *dir, uint32_t number)
{
	struct state s;
	bool named;

	if (state_load(dir, &s) < 0)
		return true; /* cannot tell: keep the file */
	named = state_find(&s, number) != NULL;
	state_free(&s);
	return named;
}

int state_add(struct state *s, const struct state_generation *g)
{
	struct state_generation *gens;
	size_t i;

	if (state_find(s, g->number))
		return -EEXIST;
	if (s->n_gens >= STATE_MAX_GENERATIONS)
		return -E2BIG;
	gens = realloc(s->gens, (s->n_gens + 1) * sizeof(*gens));
	if (!gens)
		return -ENOMEM;
	s->gens = gens;
	for (i = s->n_gens; i > 0 && gens[i - 1].number > g->number; i--)
		gens[i] = gens[i - 1];
	gens[i] = *g;
	s->n_gens++;
	return 0;
}

int state_remove(struct state *s, uint32_t number)
{
	for (size_t i = 0; i < s->n_gens; i++) {
		if (s->gens[i].number == number) {
			memmove(&s->gens[i], &s->gens[i + 1],
				(s->n_gens - i - 1) * sizeof(s->gens[0]));
			s->n_gens--;
			return 0;
		}
	}
	return -ENOENT;
}

static const char *const kind_names[] = {
	[TPM_KEK_NONE] = "none",
	[TPM_KEK_DUP] = "dup",
	[TPM_KEK_PCR] = "pcr",
	[TPM_KEK_DUP_PCR] = "dup+pcr",
};

const char *state_kind_name(enum tpm_kek_kind kind)
{
	return (size_t)kind < ARRAY_SIZE(kind_names) ? kind_names[kind] : "?";
}

int state_kind_parse(const char *name, enum tpm_kek_kind *ret)
{
	for (size_t i = 0; i < ARRAY_SIZE(kind_names); i++) {
		if (strcmp(name, kind_names[i]) == 0) {
			*ret = (enum tpm_kek_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

static bool key_id_ok(const char *k, uint32_t gen)
{
	char prefix[32];
	size_t pl = (size_t)snprintf(prefix, sizeof(prefix), "tpm2-kms-g%u-", (unsigned)gen);

	if (strncmp(k, prefix, pl) != 0 || strlen(k) != pl + 32)
		return false;
	for (const char *p = k + pl; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

/* Parses one "generation" line's fields (after the keyword). */
static int parse_generation(char *rest, struct state_generation *g)
{
	char *save = NULL, *tok;
	char *fields[10];
	size_t n = 0;
	uint64_t v;
	char want_file[32];

	memset(g, 0, sizeof(*g));
	for (tok = strtok_r(rest, " ", &save); tok && n < 10; tok = strtok_r(NULL, " ", &save))
		fields[n++] = tok;
	if (n != 9 || strcmp(fields[1], "created") != 0 || strcmp(fields[3], "key-id") != 0 ||
	    strcmp(fields[5], "file") != 0 || strcmp(fields[7], "policy") != 0)
		return -EBADMSG;
	if (util_parse_u64(fields[0], UINT32_MAX, &v) < 0 || v == 0)
		return -EBADMSG;
	g->number = (uint32_t)v;
	if (util_parse_u64(fields[2], UINT64_MAX, &g->created) < 0)
		return -EBADMSG;
	if (!key_id_ok(fields[4], g->number))
		return -EBADMSG;
	strcpy(g->key_id, fields[4]);
	statedir_gen_file(g->number, want_file);
	if (strcmp(fields[6], want_file) != 0)
		return -EBADMSG;
	strcpy(g->file, want_file);
	/* Generation kinds this version can unseal. */
	if (state_kind_parse(fields[8], &g->kind) < 0)
		return -EBADMSG;
	return 0;
}

int state_load(const char *dir, struct state *ret)
{
	char *buf = NULL;
	size_t len;
	int r;

	r = statedir_read(dir, "state", STATE_FILE_MAX, &buf, &len);
	if (r < 0)
		return r;
	r = state_parse(dir, buf, len, ret);
	free(buf);
	return r;
}

/* A signer's public key (DER, in hex), once: the admin key, the PCR
 * signer. */
static int parse_signer(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
	if (*len || signer_parse_hex(hex, out, cap, len) < 0)
		return -EBADMSG;
	return 0;
}

/* A trust anchor's line: 1 when key is one and val is good, 0 when key is
 * not an anchor's, -EBADMSG for a bad or repeated one. */
static int parse_anchor(struct anchors *a, const char *key, const char *val)
{
	int r;

	if (strcmp(key, "admin-key") == 0)
		r = parse_signer(val, a->admin_key, sizeof(a->admin_key), &a->admin_key_len);
	else if (strcmp(key, "pcr-key") == 0)
		r = parse_signer(val, a->pcr_key, sizeof(a->pcr_key), &a->pcr_key_len);
	else if (strcmp(key, "pcrs") == 0)
		r = a->pcrs.n || policy_pcrs_parse(val, &a->pcrs) < 0 ? -EBADMSG : 0;
	else if (strcmp(key, "pcr-literal") == 0)
		r = a->literal.n || policy_pcr_values_parse(val, &a->literal, a->literal_values) < 0
			? -EBADMSG
			: 0;
	else
		return 0;
	return r < 0 ? r : 1;
}

enum { HAVE_FORMAT = 1, HAVE_SRK = 2, HAVE_NV = 4, HAVE_WRITE = 8 };

/* One "key value" line of the state file into s, noting in have the
 * required keys seen. -EINVAL: the line is not valid (the caller names
 * it); other errors are logged here. */
static int state_parse_line(const char *dir, const char *key, char *val, struct state *s,
			    unsigned *have)
{
	struct state_generation g;
	uint64_t v;
	int r;

	if (strcmp(key, "format") == 0) {
		if (util_parse_u64(val, UINT32_MAX, &v) < 0)
			return -EINVAL;
		if (v < STATE_FORMAT_MIN || v > STATE_FORMAT_MAX) {
			log_error("%s/state: format %llu is not supported by this version (it "
				  "reads formats %d to %d)",
				  dir, (unsigned long long)v, STATE_FORMAT_MIN, STATE_FORMAT_MAX);
			return -EPROTONOSUPPORT;
		}
		*have |= HAVE_FORMAT;
	} else if (strcmp(key, "srk-name") == 0) {
		size_t n = strlen(val) / 2;

		if (n == 0 || n > sizeof(s->srk_name.bytes) ||
		    util_unhex(val, s->srk_name.bytes, n) < 0)
			return -EINVAL;
		s->srk_name.len = n;
		*have |= HAVE_SRK;
	} else if (strcmp(key, "nv-index") == 0) {
		if (util_parse_u64(val, TPM_NV_INDEX_LAST, &v) < 0 || v < TPM_NV_INDEX_FIRST)
			return -EINVAL;
		s->nv_index = (uint32_t)v;
		*have |= HAVE_NV;
	} else if (strcmp(key, "write-generation") == 0) {
		if (util_parse_u64(val, UINT32_MAX, &v) < 0 || v == 0)
			return -EINVAL;
		s->write_generation = (uint32_t)v;
		*have |= HAVE_WRITE;
	} else if ((r = parse_anchor(&s->anchors, key, val)) != 0) {
		if (r < 0)
			return -EINVAL;
	} else if (strcmp(key, "generation") == 0) {
		if (parse_generation(val, &g) < 0 || state_add(s, &g) < 0)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	return 0;
}

int state_parse(const char *dir, char *buf, size_t len, struct state *ret)
{
	struct state s = {0};
	char *line, *save = NULL;
	size_t lineno = 0;
	unsigned have = 0;
	int r = 0;

	if (strlen(buf) != len) {
		log_error("%s/state: contains NUL bytes", dir);
		r = -EBADMSG;
		goto out;
	}
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *val;

		lineno++;
		if (*line == '#' || *line == '\0')
			continue;
		val = strchr(line, ' ');
		if (val) {
			*val++ = '\0';
			r = state_parse_line(dir, line, val, &s, &have);
		}
		if (!val || r == -EINVAL) {
			log_error("%s/state: line %zu is not valid", dir, lineno);
			r = -EBADMSG;
		}
		if (r < 0)
			goto out;
	}
	if (have != (HAVE_FORMAT | HAVE_SRK | HAVE_NV | HAVE_WRITE) ||
	    !state_find(&s, s.write_generation) ||
	    (s.anchors.pcr_key_len != 0) != (s.anchors.pcrs.n != 0) ||
	    (s.anchors.literal.n && !s.anchors.pcr_key_len)) {
		log_error("%s/state: incomplete (format, srk-name, nv-index, write-generation and "
			  "its generation line are required; pcr-key and pcrs go together)",
			  dir);
		r = -EBADMSG;
		goto out;
	}
	*ret = s;
	s.gens = NULL;
out:
	state_free(&s);
	return r;
}

int state_format(const struct state *s, char **ret, size_t *ret_len)
{
	size_t cap = 512 + 2 * (s->anchors.admin_key_len + s->anchors.pcr_key_len) +
	             POLICY_PCR_MAX * 80 + s->n_gens * 192,
	       len = 0;
	char *buf = malloc(cap), srk_hex[2 * TPM_NAME_MAX + 1], pcrs[100];
	/* 3 only with literal PCRs, which 0.2.0 would not take. */
	int format = s->anchors.literal.n                                 ? 3
	             : s->anchors.admin_key_len || s->anchors.pcr_key_len ? 2
	                                                                  : 1;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_gens; i++)
		if (s->gens[i].kind != TPM_KEK_NONE && format < 2)
			format = 2;
	util_hex(s->srk_name.bytes, s->srk_name.len, srk_hex);
	len += (size_t)snprintf(buf + len, cap - len,
				"# tpm2-kms state directory; written by tpm2-kms, do not edit\n"
				"format %d\nsrk-name %s\nnv-index 0x%08x\nwrite-generation %u\n",
				format, srk_hex, (unsigned)s->nv_index,
				(unsigned)s->write_generation);
	if (s->anchors.admin_key_len) {
		len += (size_t)snprintf(buf + len, cap - len, "admin-key ");
		util_hex(s->anchors.admin_key, s->anchors.admin_key_len, buf + len);
		len += 2 * s->anchors.admin_key_len;
		buf[len++] = '\n';
	}
	if (s->anchors.pcr_key_len) {
		len += (size_t)snprintf(buf + len, cap - len, "pcr-key ");
		util_hex(s->anchors.pcr_key, s->anchors.pcr_key_len, buf + len);
		len += 2 * s->anchors.pcr_key_len;
		policy_pcrs_format(&s->anchors.pcrs, pcrs, sizeof(pcrs));
		len += (size_t)snprintf(buf + len, cap - len, "\npcrs %s\n", pcrs);
	}
	if (s->anchors.literal.n) {
		char lit[POLICY_PCR_MAX * 80];

		policy_pcr_values_format(
		    &s->anchors.literal,
		    (const uint8_t(*)[POLICY_DIGEST_BYTES])s->anchors.literal_values, lit,
		    sizeof(lit));
		len += (size_t)snprintf(buf + len, cap - len, "pcr-literal %s\n", lit);
	}
	for (size_t i = 0; i < s->n_gens; i++) {
		const struct state_generation *g = &s->gens[i];

		len += (size_t)snprintf(buf + len, cap - len,
					"generation %u created %llu key-id %s file %s policy %s\n",
					(unsigned)g->number, (unsigned long long)g->created,
					g->key_id, g->file, state_kind_name(g->kind));
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* write-since: "generation N since T", when N became the write key. */
static int write_since_read(const char *dir, uint32_t *ret_gen, uint64_t *ret_time)
{
	char *buf = NULL;
	size_t len;
	unsigned gen;
	unsigned long long t;
	int r;

	r = statedir_read(dir, WRITE_SINCE_FILE, 128, &buf, &len);
	if (r < 0)
		return r;
	r = sscanf(buf, "generation %u since %llu\n", &gen, &t) == 2 ? 0 : -EBADMSG;
	free(buf);
	if (r == 0) {
		*ret_gen = gen;
		*ret_time = t;
	}
	return r;
}

int state_save(const char *dir, const struct state *s)
{
	char *buf = NULL, line[64];
	size_t len;
	uint32_t gen = 0;
	uint64_t since;
	int r;

	r = state_format(s, &buf, &len);
	if (r == 0)
		r = statedir_write(dir, "state", buf, len);
	free(buf);
	if (r < 0 || (write_since_read(dir, &gen, &since) == 0 && gen == s->write_generation))
		return r;
	/* After the state: a crash in between leaves an older record, which
	 * statedir_write_since sees through (it names another generation). */
	len = (size_t)snprintf(line, sizeof(line), "generation %u since %llu\n",
	                       (unsigned)s->write_generation,
	                       (unsigned long long)util_now_realtime_s());
	return statedir_write(dir, WRITE_SINCE_FILE, line, len);
}

int statedir_write_since(const char *dir, uint32_t write_generation, uint64_t *ret_time)
{
	char path[PATH_MAX];
	struct stat st;
	uint32_t gen;
	uint64_t t;

	if (write_since_read(dir, &gen, &t) == 0 && gen == write_generation) {
		*ret_time = t;
		return 0;
	}
	/* No record (a state older than it): the state file was written no
	 * earlier than the write key last changed. */
	snprintf(path, sizeof(path), "%s/state", dir);
	if (stat(path, &st) < 0) {
		log_error("cannot stat %s: %s", path, strerror(errno));
		return -errno;
	}
	*ret_time = (uint64_t)st.st_mtime;
	return 0;
}

int counts_save(const char *dir, const struct decrypt_counts *c)
{
	size_t cap = 64 + c->n * 40, len = 0;
	char *buf = malloc(cap);
	int r;

	if (!buf)
		return -ENOMEM;
	len += (size_t)snprintf(buf, cap, "pid %d\n", (int)c->pid);
	for (size_t i = 0; i < c->n; i++)
		len += (size_t)snprintf(buf + len, cap - len, "generation %u %llu %s\n",
					(unsigned)c->gen[i], (unsigned long long)c->count[i],
					c->loaded[i] ? "loaded" : "loading");
	/* The counts describe the running daemon (its pid is in the file):
	 * `retire` must see them at once, which rename gives, but they need
	 * not survive a power loss. No fsync, then: the daemon writes them
	 * from its loop, once a second under Decrypt load. */
	r = files_write_atomic(dir, "decrypt-counts", buf, len, false, dir, 0600);
	free(buf);
	return r;
}

int counts_load(const char *dir, struct decrypt_counts *ret)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = statedir_read(dir, "decrypt-counts", STATE_FILE_MAX, &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned g;
		unsigned long long n;
		char state[16] = "";
		int pid;

		if (sscanf(line, "pid %d", &pid) == 1)
			ret->pid = pid;
		else if (sscanf(line, "generation %u %llu %15s", &g, &n, state) >= 2 &&
			 ret->n < STATE_MAX_GENERATIONS) {
			ret->gen[ret->n] = g;
			ret->count[ret->n] = n;
			ret->loaded[ret->n] = strcmp(state, "loaded") == 0;
			ret->n++;
		}
	}
	free(buf);
	/* Counts are "since the daemon started": a dead daemon's are void. */
	if (ret->pid <= 0 || (kill(ret->pid, 0) < 0 && errno == ESRCH))
		memset(ret, 0, sizeof(*ret));
	return 0;
}

const char *counts_loaded(const struct decrypt_counts *c, uint32_t gen)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->gen[i] == gen)
			return c->loaded[i] ? "loaded" : "not loaded";
	return "-";
}

uint64_t counts_get(const struct decrypt_counts *c, uint32_t gen)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->gen[i] == gen)
			return c->count[i];
	return 0;
}

int state_generation_read(const char *dir, const struct state_generation *g, struct tpm_sealed *ret)
{
	struct tpm_sealed sealed;
	char *pem = NULL;
	size_t len;
	int r;

	r = statedir_read(dir, g->file, SEALFILE_MAX_BYTES, &pem, &len);
	if (r == 0)
		r = sealfile_decode(pem, len, &sealed);
	if (r == 0)
		r = tpmobj_sealed_check(&sealed, g->kind, NULL);
	free(pem);
	if (r == 0)
		*ret = sealed;
	util_wipe(&sealed, sizeof(sealed));
	return r;
}
