#include "config.h"

#include "cli/doctor.h"
#include "admin/keyadmin.h"
#include "base/files.h"
#include "base/log.h"
#include "base/secmem.h"
#include "base/util.h"
#include "cli/encconfig.h"
#include "keys/auditrec.h"
#include "keys/escrow.h"
#include "keys/statedir.h"
#include "keys/unseal.h"
#include "kms/kms_proto.h"
#include "tpm/tpm.h"
#include "transport/grpc.h"
#include "transport/listen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FINDINGS_MAX   64
#define GROUPS_MAX     64
#define AUDIT_STALE_S  (7 * 86400)
#define TIMEOUT_MIN_MS 1000

enum level { LEVEL_OK, LEVEL_SKIPPED, LEVEL_WARNING, LEVEL_ERROR };
static const char *const LEVEL_NAME[] = {"ok", "skipped", "warning", "error"};

struct finding {
	char id[32];
	enum level level;
	char text[768];
	char fix[512];
};

/* Who is meant to reach something: a uid and its groups. */
struct who {
	uid_t uid;
	gid_t gids[GROUPS_MAX];
	int n_gids;
	char name[64];
};

struct doctor {
	const struct settings *s;
	struct finding f[FINDINGS_MAX];
	size_t n;
	struct who service; /* the state directory's owner */
	bool have_service;
	struct who apiserver;
	pid_t apiserver_pid; /* 0: none runs */
	struct state st;
	bool have_state;
};

static void add(struct doctor *d, const char *id, enum level level, const char *fix,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void add(struct doctor *d, const char *id, enum level level, const char *fix,
		const char *fmt, ...)
{
	struct finding *f;
	va_list ap;

	if (d->n == FINDINGS_MAX)
		return;
	f = &d->f[d->n++];
	snprintf(f->id, sizeof(f->id), "%s", id);
	f->level = level;
	snprintf(f->fix, sizeof(f->fix), "%s", fix ? fix : "");
	va_start(ap, fmt);
	vsnprintf(f->text, sizeof(f->text), fmt, ap);
	va_end(ap);
}

/* --- users and permissions ---------------------------------------------- */

static void who_of_uid(uid_t uid, gid_t gid, struct who *ret)
{
	struct passwd *pw = getpwuid(uid);

	ret->uid = uid;
	ret->n_gids = GROUPS_MAX;
	if (pw) {
		snprintf(ret->name, sizeof(ret->name), "%s", pw->pw_name);
		if (getgrouplist(pw->pw_name, pw->pw_gid, ret->gids, &ret->n_gids) < 0)
			ret->n_gids = 0;
	} else {
		snprintf(ret->name, sizeof(ret->name), "uid %u", (unsigned)uid);
		ret->gids[0] = gid;
		ret->n_gids = 1;
	}
}

/* Whether w may read (4), write (2) or search (1) what st describes, by
 * its mode bits (root passes, as the kernel lets it). */
static bool may(const struct who *w, const struct stat *st, unsigned want)
{
	unsigned bits;

	if (w->uid == 0)
		return true;
	if (st->st_uid == w->uid) {
		bits = (st->st_mode >> 6) & 7;
	} else {
		bool in_group = false;

		for (int i = 0; i < w->n_gids; i++)
			in_group |= w->gids[i] == st->st_gid;
		bits = in_group ? (st->st_mode >> 3) & 7 : st->st_mode & 7;
	}
	return (bits & want) == want;
}

/* Whether w can reach path: search on every directory above it. The
 * first one it cannot search goes to blocked. */
static bool may_reach(const struct who *w, const char *path, char *blocked, size_t size)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	for (slash = strchr(dir + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		struct stat st;

		*slash = '\0';
		if (stat(dir, &st) == 0 && !may(w, &st, 1)) {
			snprintf(blocked, size, "%s", dir);
			return false;
		}
		*slash = '/';
	}
	return true;
}

static void owner_name(uid_t uid, char *out, size_t size)
{
	struct passwd *pw = getpwuid(uid);

	if (pw)
		snprintf(out, size, "%s", pw->pw_name);
	else
		snprintf(out, size, "uid %u", (unsigned)uid);
}

/* --- the configuration and the state directory ------------------------- */

static void check_config(struct doctor *d)
{
	if (d->s->config_bad)
		add(d, "config.parse", LEVEL_ERROR,
		    "correct the line named above; tpm2-kms serve --print-config shows what the "
		    "daemon reads",
		    "the configuration file %s does not parse (stderr says where); doctor goes on "
		    "with the defaults and flags",
		    d->s->config);
	else if (access(d->s->config, F_OK) == 0)
		add(d, "config.parse", LEVEL_OK, NULL, "the configuration file %s parses",
		    d->s->config);
	else
		add(d, "config.parse", LEVEL_OK, NULL, "no configuration file (%s): the defaults",
		    d->s->config);
}

static void check_state_dir(struct doctor *d)
{
	const char *dir = d->s->state_dir;
	struct stat st;
	char fix[PATH_MAX + 64];

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		add(d, "state.dir", LEVEL_ERROR,
		    "tpm2-kms init, as the service user (docs/operations.md section 2)",
		    "no state directory %s: this node was never initialised", dir);
		return;
	}
	who_of_uid(st.st_uid, st.st_gid, &d->service);
	d->have_service = true;
	snprintf(fix, sizeof(fix), "chmod 0700 %s", dir);
	if (st.st_mode & 022)
		add(d, "state.dir", LEVEL_ERROR, fix,
		    "%s is writable by group or others (mode %04o): the daemon refuses it", dir,
		    (unsigned)(st.st_mode & 07777));
	else if (st.st_mode & 055)
		add(d, "state.dir", LEVEL_WARNING, fix,
		    "%s can be listed by group or others (mode %04o)", dir,
		    (unsigned)(st.st_mode & 07777));
	else if (st.st_uid == 0)
		add(d, "state.dir", LEVEL_WARNING,
		    "run the daemon as its own user: docs/operations.md section 1",
		    "%s is owned by root: the service user is root (the units run it as "
		    "tpm2-kms)",
		    dir);
	else
		add(d, "state.dir", LEVEL_OK, NULL, "%s: owner %s (the service user), mode %04o",
		    dir, d->service.name, (unsigned)(st.st_mode & 07777));
}

/* Files of dir/sub that the service user does not own, or others may
 * read. */
static void check_files(struct doctor *d, const char *id, const char *sub, const char *what)
{
	char path[PATH_MAX], first[PATH_MAX] = "", first_mode[PATH_MAX] = "", owner[64] = "";
	size_t wrong_owner = 0, open_mode = 0, n = 0;
	struct dirent *e;
	DIR *dir;

	if ((size_t)snprintf(path, sizeof(path), "%s%s%s", d->s->state_dir, sub ? "/" : "",
			     sub ? sub : "") >= sizeof(path))
		return;
	dir = opendir(path);
	if (!dir) {
		if (sub && errno == ENOENT)
			add(d, id, LEVEL_OK, NULL, "no %s (%s)", what, path);
		else
			add(d, id, LEVEL_ERROR, NULL, "cannot read %s: %s", path, strerror(errno));
		return;
	}
	while ((e = readdir(dir))) {
		char file[PATH_MAX];
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		if ((size_t)snprintf(file, sizeof(file), "%s/%s", path, e->d_name) >= sizeof(file) ||
		    lstat(file, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		n++;
		if (st.st_uid != d->service.uid) {
			if (!wrong_owner++) {
				snprintf(first, sizeof(first), "%s", file);
				owner_name(st.st_uid, owner, sizeof(owner));
			}
		} else if (st.st_mode & 077) {
			if (!open_mode++)
				snprintf(first_mode, sizeof(first_mode), "%s", file);
		}
	}
	closedir(dir);
	if (wrong_owner) {
		char fix[PATH_MAX + 128];

		snprintf(fix, sizeof(fix), "chown -R %s: %s", d->service.name, d->s->state_dir);
		add(d, id, LEVEL_ERROR, fix,
		    "%zu of the %s are not the service user's (%s is %s's): the daemon cannot "
		    "replace them",
		    wrong_owner, what, first, owner);
	} else if (open_mode) {
		char fix[PATH_MAX + 32];

		snprintf(fix, sizeof(fix), "chmod go= %s/*", path);
		add(d, id, LEVEL_WARNING, fix, "%zu of the %s can be read by group or others (%s)",
		    open_mode, what, first_mode);
	} else {
		add(d, id, LEVEL_OK, NULL, "%zu %s, all the service user's, private", n, what);
	}
}

static void check_state(struct doctor *d)
{
	int r = state_load(d->s->state_dir, &d->st);

	if (r == -ENOENT)
		add(d, "state.load", LEVEL_ERROR, "tpm2-kms init",
		    "%s holds no state: this node was never initialised", d->s->state_dir);
	else if (r < 0)
		add(d, "state.load", LEVEL_ERROR,
		    "restore it from a backup of the state directory, or recover the node "
		    "(docs/operations.md section 7)",
		    "%s/state is damaged or unreadable (stderr says where)", d->s->state_dir);
	else
		add(d, "state.load", LEVEL_OK, NULL, "state: %zu generation%s, write key %u",
		    d->st.n_gens, d->st.n_gens == 1 ? "" : "s", (unsigned)d->st.write_generation);
	d->have_state = r == 0;
}

static void check_pcr_dir(struct doctor *d)
{
	const char *dir = d->s->pcr_signatures;
	struct stat st;

	if (!d->have_state || !d->st.anchors.pcr_key_len) {
		add(d, "pcr.dir", LEVEL_SKIPPED, NULL, "no generation is bound to PCR signatures");
		return;
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		add(d, "pcr.dir", LEVEL_ERROR, "mkdir it and put the PCR signatures there",
		    "the PCR signature directory %s is missing", dir);
	else if (d->have_service && !may(&d->service, &st, 5))
		add(d, "pcr.dir", LEVEL_ERROR, "chmod 0755 it (signatures are public)",
		    "the service user %s cannot read %s", d->service.name, dir);
	else if (st.st_mode & 002)
		add(d, "pcr.dir", LEVEL_WARNING, "chmod o-w it",
		    "anyone can write to %s: a signature can be removed (it cannot be forged)",
		    dir);
	else
		add(d, "pcr.dir", LEVEL_OK, NULL, "PCR signatures in %s, readable by %s", dir,
		    d->have_service ? d->service.name : "the daemon");
}

/* --- the TPM and the keys ------------------------------------------------ */

static void check_tpm_device(struct doctor *d)
{
	const char *tcti = d->s->tcti;
	struct stat st;

	if (strncmp(tcti, "device:", 7) != 0 || !d->have_service)
		return;
	if (stat(tcti + 7, &st) < 0)
		add(d, "tpm.device", LEVEL_ERROR,
		    "is the TPM enabled in the firmware, and tpm_tis or tpm_crb loaded?",
		    "%s: %s", tcti + 7, strerror(errno));
	else if (!may(&d->service, &st, 6))
		add(d, "tpm.device", LEVEL_ERROR, "usermod -a -G tss the service user",
		    "the service user %s cannot open %s (owner %u, group %u, mode %04o)",
		    d->service.name, tcti + 7, (unsigned)st.st_uid, (unsigned)st.st_gid,
		    (unsigned)(st.st_mode & 07777));
	else
		add(d, "tpm.device", LEVEL_OK, NULL, "the service user %s can open %s",
		    d->service.name, tcti + 7);
}

static void check_generations(struct doctor *d, tpm *t)
{
	struct pcr_binding *b = NULL;
	uint8_t *kek = secmem_alloc(TPM_KEK_BYTES);
	size_t ok = 0, pcr_missing = 0, bad = 0;
	char first[160] = "";
	int r = 0;

	if (!kek)
		return;
	if (d->st.anchors.pcr_key_len)
		r = unseal_load_binding(&d->st.anchors, d->s->pcr_signatures, &b);
	if (r < 0 && r != -ENOENT) {
		add(d, "keys.unseal", LEVEL_ERROR, NULL,
		    "the PCR signatures in %s cannot be read (stderr says why)",
		    d->s->pcr_signatures);
		goto out;
	}
	for (size_t i = 0; i < d->st.n_gens; i++) {
		const struct state_generation *g = &d->st.gens[i];
		struct tpm_sealed sealed;

		r = keyadmin_unseal(t, d->s->state_dir, b, g, &sealed, kek);
		util_wipe(&sealed, sizeof(sealed));
		util_wipe(kek, TPM_KEK_BYTES);
		if (r == 0) {
			ok++;
			continue;
		}
		if (!*first)
			snprintf(first, sizeof(first), "generation %u (%s)", (unsigned)g->number,
				 state_kind_name(g->kind));
		if (r == -ENOKEY)
			pcr_missing++;
		else
			bad++;
	}
	if (pcr_missing)
		add(d, "keys.pcr", LEVEL_ERROR,
		    "tpm2-kms pcr-read, sign the values (pcr-sign), put the signature in the "
		    "signature directory (docs/operations.md section 10)",
		    "%zu generation%s bound to PCRs cannot unseal in this boot state: no signature "
		    "approves it (%s first)",
		    pcr_missing, pcr_missing == 1 ? "" : "s", first);
	if (bad)
		add(d, "keys.unseal", LEVEL_ERROR,
		    "restore the sealed file from a backup, or take the generation again from "
		    "another node or the escrow (docs/operations.md sections 7 and 9)",
		    "%zu generation%s do%s not unseal or do%s not match the key_id (%s first)", bad,
		    bad == 1 ? "" : "s", bad == 1 ? "es" : "", bad == 1 ? "es" : "", first);
	if (!pcr_missing && !bad)
		add(d, "keys.unseal", LEVEL_OK, NULL, "%s %zu generation%s unseal%s to %s key_id",
		    ok == 1 ? "the" : "all", ok, ok == 1 ? "" : "s", ok == 1 ? "s" : "",
		    ok == 1 ? "its" : "each its");
out:
	unseal_binding_unref(b);
	secmem_free(kek, TPM_KEK_BYTES);
}

static void check_tpm(struct doctor *d)
{
	tpm *t = NULL;
	int r;

	check_tpm_device(d);
	r = tpm_open(d->s->tcti, &t);
	if (r < 0) {
		add(d, "tpm.reachable", LEVEL_ERROR,
		    "check the TPM (ls -l /dev/tpmrm0) and --tcti; journalctl -u tpm2-kms shows "
		    "what the daemon met",
		    "the TPM does not answer on %s: %s", d->s->tcti, strerror(-r));
		return;
	}
	add(d, "tpm.reachable", LEVEL_OK, NULL, "the TPM answers on %s", d->s->tcti);
	if (!d->have_state) {
		add(d, "tpm.srk", LEVEL_SKIPPED, NULL, "no state to compare the SRK with");
		goto out;
	}
	r = tpm_srk_check(t, &d->st.srk_name);
	if (r == -ENOENT)
		add(d, "tpm.srk", LEVEL_ERROR,
		    "if the TPM was cleared, recover the node (docs/operations.md section 7)",
		    "the TPM has no storage root key at 0x81000001: it was cleared, or it is "
		    "another TPM");
	else if (r == -EKEYREJECTED)
		add(d, "tpm.srk", LEVEL_ERROR,
		    "use the TPM the state was made with, or recover the node "
		    "(docs/operations.md section 7)",
		    "the storage root key is not the one %s was provisioned with: another TPM, or "
		    "the TPM was cleared",
		    d->s->state_dir);
	else if (r < 0)
		add(d, "tpm.srk", LEVEL_ERROR, NULL, "cannot read the storage root key: %s",
		    strerror(-r));
	else
		add(d, "tpm.srk", LEVEL_OK, NULL, "the storage root key is the provisioned one");
	if (r == 0)
		check_generations(d, t);
out:
	tpm_close(t);
}

static void check_escrow(struct doctor *d)
{
	char why[256] = "";
	size_t missing = 0, dup = 0;
	uint32_t first = 0;

	if (!d->have_state)
		return;
	if (escrow_examine(d->s->state_dir, why, sizeof(why)) < 0) {
		add(d, "escrow.keys", LEVEL_ERROR, NULL, "%s", why);
		return;
	}
	if (!escrow_configured(d->s->state_dir)) {
		add(d, "escrow.keys", LEVEL_SKIPPED, NULL,
		    "escrow is not configured (docs/operations.md section 6 says why you want it)");
		return;
	}
	for (size_t i = 0; i < d->st.n_gens; i++) {
		const struct state_generation *g = &d->st.gens[i];

		if (!tpm_kek_duplicable(g->kind))
			continue;
		dup++;
		if (!escrow_has(d->s->state_dir, g->number) && !missing++)
			first = g->number;
	}
	if (missing)
		add(d, "escrow.keys", LEVEL_ERROR,
		    "tpm2-kms init (it escrows the generations not escrowed yet)",
		    "%zu duplicable generation%s not escrowed (generation %u first): losing this "
		    "node loses %s",
		    missing, missing == 1 ? " is" : "s are", (unsigned)first,
		    missing == 1 ? "it" : "them");
	else
		add(d, "escrow.keys", LEVEL_OK, NULL, "all %zu duplicable generation%s escrowed",
		    dup, dup == 1 ? "" : "s");
}

/* --- the daemon, as the apiserver meets it ------------------------------ */

/* The first process whose name is kube-apiserver, and its ids. */
static void find_apiserver(struct doctor *d)
{
	DIR *proc = opendir("/proc");
	struct dirent *e;

	while (proc && (e = readdir(proc))) {
		char path[64], line[512], comm[64] = "";
		uid_t uid = 0;
		gid_t gid = 0;
		FILE *f;
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = '\0';
		fclose(f);
		comm[strcspn(comm, "\n")] = '\0';
		if (strcmp(comm, "kube-apiserver") != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/status", pid);
		f = fopen(path, "re");
		if (!f)
			continue;
		d->apiserver.n_gids = 0;
		while (fgets(line, sizeof(line), f)) {
			unsigned long v;

			if (sscanf(line, "Uid: %lu", &v) == 1)
				uid = (uid_t)v;
			else if (sscanf(line, "Gid: %lu", &v) == 1)
				gid = (gid_t)v;
			else if (strncmp(line, "Groups:", 7) == 0) {
				char *p = line + 7, *q;

				for (v = strtoul(p, &q, 10); q != p && d->apiserver.n_gids < GROUPS_MAX;
				     p = q, v = strtoul(p, &q, 10))
					d->apiserver.gids[d->apiserver.n_gids++] = (gid_t)v;
			}
		}
		fclose(f);
		d->apiserver.uid = uid;
		if (d->apiserver.n_gids < GROUPS_MAX)
			d->apiserver.gids[d->apiserver.n_gids++] = gid;
		owner_name(uid, d->apiserver.name, sizeof(d->apiserver.name));
		d->apiserver_pid = (pid_t)pid;
		break;
	}
	if (proc)
		closedir(proc);
	if (d->apiserver_pid)
		add(d, "apiserver.found", LEVEL_OK, NULL,
		    "kube-apiserver runs (pid %ld) as %s: the daemon is asked as that user",
		    (long)d->apiserver_pid, d->apiserver.name);
	else
		add(d, "apiserver.found", LEVEL_SKIPPED, NULL,
		    "no kube-apiserver runs here: the daemon is asked as doctor's own user");
}

static void check_socket(struct doctor *d, const struct listen_addr *a)
{
	char blocked[PATH_MAX];
	struct stat st;

	if (a->abstract) {
		add(d, "socket.perm", LEVEL_SKIPPED, NULL,
		    "@%s is an abstract socket: no file permissions (allow-uid decides)", a->name);
		return;
	}
	if (stat(a->name, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		add(d, "socket.perm", LEVEL_ERROR,
		    "systemctl start tpm2-kms.socket tpm2-kms.service (or check --listen)",
		    "no socket at %s: the daemon is not listening there", a->name);
		return;
	}
	if (d->apiserver_pid && !may(&d->apiserver, &st, 2))
		add(d, "socket.perm", LEVEL_ERROR,
		    "give the socket a group kube-apiserver has (socket-group, socket-mode 0660)",
		    "kube-apiserver's user %s cannot write to %s (owner %u, group %u, mode %04o)",
		    d->apiserver.name, a->name, (unsigned)st.st_uid, (unsigned)st.st_gid,
		    (unsigned)(st.st_mode & 07777));
	else if (d->apiserver_pid && !may_reach(&d->apiserver, a->name, blocked, sizeof(blocked)))
		add(d, "socket.perm", LEVEL_ERROR, "let it search that directory (chmod o+x, or a group)",
		    "kube-apiserver's user %s cannot reach %s: %s is closed to it", d->apiserver.name,
		    a->name, blocked);
	else if (st.st_mode & 002)
		add(d, "socket.perm", LEVEL_WARNING, "socket-mode 0660 with socket-group, or 0600",
		    "any local user may connect to %s (mode %04o): only allow-uid stands between "
		    "them and Decrypt",
		    a->name, (unsigned)(st.st_mode & 07777));
	else
		add(d, "socket.perm", LEVEL_OK, NULL, "%s: mode %04o%s", a->name,
		    (unsigned)(st.st_mode & 07777),
		    d->apiserver_pid ? ", open to kube-apiserver's user" : "");
}

/* What the child learnt on the socket. */
struct probe {
	int err;       /* negative errno of the step that failed */
	int step;      /* 0 connect, 1 Status, 2 Encrypt, 3 Decrypt, 4 compare */
	int grpc_status;
	char healthz[64], key_id[128], message[160];
};

/* One call on a connection of its own, as `status` makes it. */
static int call(const struct listen_addr *a, const char *method, const uint8_t *msg, size_t len,
		int timeout_ms, struct probe *p, uint8_t **ret, size_t *ret_len)
{
	const char *message = NULL;
	int fd = -1, r;

	r = listen_connect(a, &fd);
	if (r < 0)
		return r;
	r = grpc_client_call(fd, method, msg, len, timeout_ms, &p->grpc_status, &message, ret,
			     ret_len);
	if (r == 0 && p->grpc_status != GRPC_OK) {
		snprintf(p->message, sizeof(p->message), "%s", message ? message : "");
		r = -EPROTO;
	}
	close(fd);
	return r;
}

/* In the child, as the apiserver's user: Status, then the round trip
 * kube-apiserver makes with a fresh data key. */
static void probe_run(const struct listen_addr *a, int timeout_ms, struct probe *p)
{
	uint8_t plain[32], *req = NULL, *resp = NULL, back[64];
	size_t req_len = 0, resp_len = 0, back_len = 0;
	char *version = NULL, *healthz = NULL, *key_id = NULL;
	int fd = -1, r;

	p->step = 0;
	r = listen_connect(a, &fd);
	if (r < 0)
		goto out;
	close(fd);
	fd = -1;
	p->step = 1;
	r = call(a, "/v2.KeyManagementService/Status", NULL, 0, timeout_ms, p, &resp, &resp_len);
	if (r == 0)
		r = kms_proto_decode_status_response(resp, resp_len, &version, &healthz, &key_id);
	if (r < 0)
		goto out;
	snprintf(p->healthz, sizeof(p->healthz), "%s", healthz);
	snprintf(p->key_id, sizeof(p->key_id), "%s", key_id);
	free(resp);
	resp = NULL;
	p->step = 2;
	if (getentropy(plain, sizeof(plain)) < 0) {
		r = -errno;
		goto out;
	}
	r = kms_proto_encode_encrypt_request(plain, sizeof(plain), "tpm2-kms-doctor", &req, &req_len);
	if (r == 0)
		r = call(a, "/v2.KeyManagementService/Encrypt", req, req_len, timeout_ms, p, &resp,
			 &resp_len);
	free(req);
	req = NULL;
	if (r < 0)
		goto out;
	p->step = 3;
	free(key_id);
	key_id = NULL;
	r = kms_proto_decrypt_request_for(resp, resp_len, "tpm2-kms-doctor", &req, &req_len, &key_id);
	free(resp);
	resp = NULL;
	if (r == 0)
		r = call(a, "/v2.KeyManagementService/Decrypt", req, req_len, timeout_ms, p, &resp,
			 &resp_len);
	if (r == 0)
		r = kms_proto_decode_decrypt_response(resp, resp_len, back, sizeof(back), &back_len);
	if (r < 0)
		goto out;
	p->step = 4;
	if (back_len != sizeof(plain) || memcmp(back, plain, sizeof(plain)) != 0)
		r = -EBADMSG;
out:
	util_wipe(plain, sizeof(plain));
	util_wipe(back, sizeof(back));
	p->err = r;
	free(req);
	free(resp);
	free(version);
	free(healthz);
	free(key_id);
	if (fd >= 0)
		close(fd);
}

/* Runs probe_run in a child that has taken on the apiserver's ids (when
 * one runs and doctor is root), so the kernel applies the socket's
 * permissions and the daemon's allow-uid as they apply to kube-apiserver. */
static int probe_as(struct doctor *d, const struct listen_addr *a, struct probe *ret)
{
	int fds[2], status = 0;
	struct pollfd pfd;
	struct probe p = {.err = -EIO};
	pid_t pid;
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -errno;
	}
	if (pid == 0) {
		close(fds[0]);
		if (d->apiserver_pid && geteuid() == 0 &&
		    (setgroups((size_t)d->apiserver.n_gids, d->apiserver.gids) < 0 ||
		     setgid(d->apiserver.gids[d->apiserver.n_gids - 1]) < 0 ||
		     setuid(d->apiserver.uid) < 0))
			p.err = -errno;
		else
			probe_run(a, (int)d->s->timeout_ms, &p);
		n = write(fds[1], &p, sizeof(p));
		_exit(n == (ssize_t)sizeof(p) ? 0 : 1);
	}
	close(fds[1]);
	pfd = (struct pollfd){.fd = fds[0], .events = POLLIN};
	/* Three calls, each within the timeout. */
	if (poll(&pfd, 1, 3 * (int)d->s->timeout_ms + 1000) == 1 &&
	    read(fds[0], &p, sizeof(p)) == (ssize_t)sizeof(p)) {
		*ret = p;
	} else {
		kill(pid, SIGKILL);
		ret->err = -ETIMEDOUT;
		ret->step = 1;
	}
	close(fds[0]);
	waitpid(pid, &status, 0);
	return 0;
}

static void check_daemon(struct doctor *d)
{
	static const char *const STEP[] = {"connect", "Status", "Encrypt", "Decrypt",
					   "the plaintext Decrypt gave back"};
	struct listen_addr a;
	struct probe p = {0};
	/* Only root can take on the apiserver's ids. */
	const char *as = d->apiserver_pid && geteuid() == 0 ? d->apiserver.name : "doctor's user";

	if (listen_addr_parse(d->s->listen, &a) < 0) {
		add(d, "daemon.status", LEVEL_ERROR, "correct listen", "--listen %s is not a Unix socket",
		    d->s->listen);
		return;
	}
	check_socket(d, &a);
	if (probe_as(d, &a, &p) < 0) {
		add(d, "daemon.status", LEVEL_ERROR, NULL, "cannot start the probe: %s",
		    strerror(errno));
		return;
	}
	if (p.step <= 1 && p.err < 0) {
		add(d, "daemon.status", LEVEL_ERROR,
		    p.err == -EACCES || p.err == -EPERM
			? "socket-group and socket-mode, or allow-uid for kube-apiserver's uid"
			: "systemctl status tpm2-kms; journalctl -u tpm2-kms",
		    "%s on %s as %s failed: %s%s%s", STEP[p.step], listen_addr_str(&a), as,
		    p.err == -EPROTO ? "the daemon refused: " : strerror(-p.err),
		    p.err == -EPROTO ? p.message : "", "");
		add(d, "daemon.roundtrip", LEVEL_SKIPPED, NULL, "the daemon did not answer Status");
		return;
	}
	if (strcmp(p.healthz, "ok") != 0)
		add(d, "daemon.status", LEVEL_ERROR, "journalctl -u tpm2-kms says why",
		    "the daemon answers Status as %s, but healthz is \"%s\"", as, p.healthz);
	else
		add(d, "daemon.status", LEVEL_OK, NULL, "Status as %s: healthz ok, key_id %s", as,
		    p.key_id);
	if (p.err < 0)
		add(d, "daemon.roundtrip", LEVEL_ERROR, "journalctl -u tpm2-kms says why",
		    "%s as %s failed: %s%s", STEP[p.step], as,
		    p.err == -EPROTO ? "the daemon refused: " : strerror(-p.err),
		    p.err == -EPROTO ? p.message : "");
	else
		add(d, "daemon.roundtrip", LEVEL_OK, NULL,
		    "Encrypt and Decrypt of a fresh 32-byte key as %s: the same key came back", as);
}

/* --- kube-apiserver's EncryptionConfiguration --------------------------- */

/* What kube-apiserver does with the kms provider that names this socket. */
static void check_kms_provider(struct doctor *d, const struct encconfig_provider *ours)
{
	unsigned long ms = 0;

	if (strcmp(ours->api_version, "v2") != 0)
		add(d, "encconfig.kms", LEVEL_ERROR, "apiVersion: v2",
		    "the kms provider's apiVersion is \"%s\": KMS v1 is deprecated and off by "
		    "default since Kubernetes 1.29",
		    ours->api_version);
	else if (!*ours->name || strchr(ours->name, ':'))
		add(d, "encconfig.kms", LEVEL_ERROR, "a plain name, such as tpm2-kms",
		    "the kms provider's name \"%s\" is empty or has a ':' (kube-apiserver refuses it)",
		    ours->name);
	else if (*ours->timeout && encconfig_duration_ms(ours->timeout, &ms) < 0)
		add(d, "encconfig.kms", LEVEL_ERROR, "timeout: 3s",
		    "the kms provider's timeout \"%s\" is not a duration", ours->timeout);
	else if (*ours->timeout && ms < TIMEOUT_MIN_MS)
		add(d, "encconfig.kms", LEVEL_WARNING, "timeout: 3s (the default)",
		    "the kms provider's timeout %s is under a second: a TPM under load answers "
		    "later",
		    ours->timeout);
	else
		add(d, "encconfig.kms", LEVEL_OK, NULL, "apiVersion v2, name %s, timeout %s", ours->name,
		    *ours->timeout ? ours->timeout : "3s (the default)");
}

static void check_encryption_config(struct doctor *d)
{
	const char *path = d->s->encryption_config;
	struct encconfig *c = calloc(1, sizeof(*c));
	const struct encconfig_provider *ours = NULL;
	struct listen_addr a;
	char want[sizeof(a.name) + 16], *text = NULL;
	const char *why = "";
	unsigned line = 0;
	size_t len = 0, pos = 0;

	if (!*path) {
		add(d, "encconfig.endpoint", LEVEL_SKIPPED, NULL,
		    "no --encryption-config FILE given (kube-apiserver's "
		    "--encryption-provider-config)");
		goto out;
	}
	if (!c || files_read_input("encryption configuration", path, 1 << 20, &text, &len) < 0) {
		add(d, "encconfig.parse", LEVEL_ERROR, NULL, "cannot read %s", path);
		goto out;
	}
	if (encconfig_parse(text, len, c, &why, &line) < 0) {
		add(d, "encconfig.parse", LEVEL_ERROR,
		    "tpm2-kms encryption-config writes one in block style", "%s:%u: %s", path, line,
		    why);
		goto out;
	}
	if (!c->is_encryption_config || !c->covers_secrets) {
		add(d, "encconfig.parse", LEVEL_ERROR, "tpm2-kms encryption-config --phase 1 writes one",
		    "%s is %s", path,
		    !c->is_encryption_config
			? "not an EncryptionConfiguration (apiVersion apiserver.config.k8s.io/v1)"
			: "an EncryptionConfiguration whose resources do not include secrets");
		goto out;
	}
	add(d, "encconfig.parse", LEVEL_OK, NULL, "%s: %zu provider%s for secrets", path,
	    c->n_providers, c->n_providers == 1 ? "" : "s");
	listen_addr_parse(d->s->listen, &a);
	snprintf(want, sizeof(want), "unix://%s%s", a.abstract ? "@" : "", a.name);
	for (size_t i = 0; i < c->n_providers && !ours; i++)
		if (strcmp(c->providers[i].type, "kms") == 0 &&
		    strcmp(c->providers[i].endpoint, want) == 0) {
			ours = &c->providers[i];
			pos = i;
		}
	if (!ours) {
		add(d, "encconfig.endpoint", LEVEL_ERROR,
		    "tpm2-kms encryption-config --listen ... writes the endpoint",
		    "no kms provider for secrets has endpoint %s", want);
		goto out;
	}
	add(d, "encconfig.endpoint", LEVEL_OK, NULL, "kms provider \"%s\" points at %s", ours->name,
	    want);
	if (pos == 0)
		add(d, "encconfig.order", LEVEL_OK, NULL,
		    "this plugin is first: new Secrets are encrypted by it");
	else if (strcmp(c->providers[0].type, "identity") == 0)
		add(d, "encconfig.order", LEVEL_WARNING,
		    "once every apiserver has phase 1: tpm2-kms encryption-config --phase 2",
		    "identity comes first: new Secrets are written unencrypted (phase 1 of turning "
		    "encryption on, or a leftover)");
	else
		add(d, "encconfig.order", LEVEL_WARNING,
		    "put this plugin first once every apiserver can read its objects",
		    "provider %s comes first: new Secrets are written with it, not this plugin",
		    c->providers[0].type);
	check_kms_provider(d, ours);
out:
	free(text);
	free(c);
}

/* --- the last audit ------------------------------------------------------ */

static void check_audit(struct doctor *d)
{
	struct auditrec *a = calloc(1, sizeof(*a));
	uint64_t now = util_now_realtime_s();
	int r;

	if (!a || !d->have_state)
		goto out;
	r = auditrec_load(d->s->state_dir, AUDITREC_LIVE, a);
	if (r == -ENOENT && d->st.n_gens <= 1)
		add(d, "audit.age", LEVEL_OK, NULL,
		    "no audit of etcd yet; one generation, nothing to retire");
	else if (r == -ENOENT)
		add(d, "audit.age", LEVEL_WARNING, "tpm2-kms audit --endpoints ... (docs/operations.md section 5)",
		    "%zu generations and no audit of etcd: which of them data still needs is not "
		    "known",
		    d->st.n_gens);
	else if (r < 0)
		add(d, "audit.age", LEVEL_ERROR, "run the audit again", "the audit record is damaged");
	else if (a->undecryptable)
		add(d, "audit.age", LEVEL_ERROR,
		    "tpm2-kms audit shows which objects and what to do (docs/operations.md section 5)",
		    "the last audit found %llu object%s this node cannot decrypt",
		    (unsigned long long)a->undecryptable, a->undecryptable == 1 ? "" : "s");
	else if (!a->complete)
		add(d, "audit.age", LEVEL_WARNING, "run the audit again",
		    "the last audit of etcd (%s) did not finish", a->source);
	else if (now > a->finished + AUDIT_STALE_S)
		add(d, "audit.age", LEVEL_WARNING, "tpm2-kms audit --endpoints ... (weekly, say)",
		    "the last audit of etcd is %llu days old", (unsigned long long)((now - a->finished) / 86400));
	else
		add(d, "audit.age", LEVEL_OK, NULL,
		    "the last audit of etcd (%llu h ago) read %llu objects, all decryptable",
		    (unsigned long long)((now - a->finished) / 3600), (unsigned long long)a->objects);
out:
	free(a);
}

/* --- the report ---------------------------------------------------------- */

static enum level report(const struct doctor *d, bool json)
{
	enum level worst = LEVEL_OK;

	for (size_t i = 0; i < d->n; i++)
		if (d->f[i].level > worst)
			worst = d->f[i].level;
	if (worst == LEVEL_SKIPPED)
		worst = LEVEL_OK;
	if (json) {
		printf("{\"worst\":\"%s\",\"findings\":[", LEVEL_NAME[worst]);
		for (size_t i = 0; i < d->n; i++) {
			printf("%s{\"id\":", i ? "," : "");
			util_json_string(stdout, d->f[i].id);
			printf(",\"level\":\"%s\",\"finding\":", LEVEL_NAME[d->f[i].level]);
			util_json_string(stdout, d->f[i].text);
			printf(",\"fix\":");
			util_json_string(stdout, d->f[i].fix);
			printf("}");
		}
		printf("]}\n");
		return worst;
	}
	for (size_t i = 0; i < d->n; i++) {
		printf("%-8s %-19s %s\n", LEVEL_NAME[d->f[i].level], d->f[i].id, d->f[i].text);
		if (*d->f[i].fix && d->f[i].level >= LEVEL_WARNING)
			printf("%-8s %-19s fix: %s\n", "", "", d->f[i].fix);
	}
	return worst;
}

int doctor_run(const struct settings *s)
{
	struct doctor *d = calloc(1, sizeof(*d));
	enum level worst;

	if (!d)
		return -ENOMEM;
	d->s = s;
	check_config(d);
	check_state_dir(d);
	if (d->have_service) {
		check_files(d, "state.files", NULL, "files of the state directory");
		check_files(d, "escrow.files", ESCROW_DIR, "escrow files");
		check_state(d);
	}
	check_pcr_dir(d);
	check_tpm(d);
	check_escrow(d);
	find_apiserver(d);
	check_daemon(d);
	check_encryption_config(d);
	check_audit(d);
	worst = report(d, strcmp(s->output, "json") == 0);
	if (d->have_state)
		state_free(&d->st);
	free(d);
	return worst == LEVEL_ERROR ? DOCTOR_EXIT_ERROR
	       : worst == LEVEL_WARNING ? DOCTOR_EXIT_WARNING
				       : 0;
}
