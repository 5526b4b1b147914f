/* tpm2-kms: subcommand dispatch and the fixed start/stop order of the
 * daemon. */
#include "config.h"

#include "admin/exchange.h"
#include "audit/audit.h"
#include "audit/report.h"
#include "audit/snapshot.h"
#include "admin/keyadmin.h"
#include "base/files.h"
#include "base/log.h"
#include "base/notify.h"
#include "base/secmem.h"
#include "base/util.h"
#include "base/vmgenid.h"
#include "cli/daemon.h"
#include "cli/settings.h"
#include "cli/startup.h"
#include "cli/doctor.h"
#include "keys/approval.h"
#include "keys/auditrec.h"
#include "keys/envelope.h"
#include "keys/escrow.h"
#include "keys/provenance.h"
#include "keys/sharelog.h"
#include "keys/signer.h"
#include "keys/statedir.h"
#include "keys/unseal.h"
#include "kms/backend.h"
#include "kms/kms_proto.h"
#include "kms/tpmworker.h"
#include "tpm/tpm.h"
#include "transport/grpc.h"
#include "transport/listen.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The daemon's secure heap: half for plaintexts waiting for the TPM (the
 * plugin caps them there, PLUGIN_QUEUED_SECURE_MAX), half for keys (4096
 * generations take 128 KiB), unseals in progress and Decrypt's buffer,
 * so requests can never crowd a key out. */
#define SERVE_SECURE_HEAP_BYTES (1024u * 1024u)
/* The commands: a bundle's keys, one at a time where they are large. */
#define SECURE_HEAP_BYTES (256u * 1024u)
/* serve's exit status for errors restarting cannot fix: EX_CONFIG, which
 * systemd shows as "CONFIG". */
#define EXIT_PERMANENT 78

static gid_t group_id(const char *name)
{
	struct group *g;
	uint64_t v;

	if (util_parse_u64(name, UINT32_MAX - 1, &v) == 0)
		return (gid_t)v;
	g = getgrnam(name);
	return g ? g->gr_gid : (gid_t)-1;
}

/* --admin-key (serve, init): the public key as DER, or nothing. */
static int admin_key_der(const struct settings *s, uint8_t der[SIGNER_DER_MAX], size_t *ret_len)
{
	crypto_key *key = NULL;
	int r;

	*ret_len = 0;
	if (!*s->admin_key)
		return 0;
	r = signer_load_public(s->admin_key, "admin key", &key);
	if (r == 0)
		r = signer_to_der(key, der, ret_len);
	crypto_key_free(key);
	return r;
}

/* --pcrs as a list of PCR indexes, or a logged error. */
static int pcrs_of(const struct settings *s, struct policy_pcrs *ret)
{
	if (policy_pcrs_parse(s->pcrs, ret) < 0) {
		log_error("--pcrs %s: a list of PCR indexes 0-23, ascending, such as 7 or 7,11",
			  s->pcrs);
		return -EINVAL;
	}
	return 0;
}

/* --owner-auth-file, else the credential systemd passes as owner-auth
 * (LoadCredential=owner-auth:FILE), else NULL. */
static const char *owner_auth_file(const struct settings *s)
{
	static char cred[PATH_MAX];
	const char *dir = getenv("CREDENTIALS_DIRECTORY");

	if (*s->owner_auth_file)
		return s->owner_auth_file;
	if (!dir || *dir != '/')
		return NULL;
	if ((size_t)snprintf(cred, sizeof(cred), "%s/owner-auth", dir) >= sizeof(cred) ||
	    access(cred, F_OK) < 0)
		return NULL;
	return cred;
}

/* What serve, init and rotate pass to provisioning and rotation. */
static int keyadmin_config_of(const struct settings *s, uint8_t admin[SIGNER_DER_MAX],
			      struct keyadmin_config *ret)
{
	struct keyadmin_config c = {.nv_index = s->nv_index};
	int r;

	r = admin_key_der(s, admin, &c.admin_key_len);
	if (r < 0)
		return r;
	c.admin_key = c.admin_key_len ? admin : NULL;
	if (*s->pcr_key) {
		crypto_key *key = NULL;

		r = signer_load_public(s->pcr_key, "PCR signer", &key);
		if (r == 0)
			r = signer_to_der(key, c.pcr_key, &c.pcr_key_len);
		crypto_key_free(key);
		if (r < 0)
			return r;
	}
	if (*s->pcrs) {
		r = pcrs_of(s, &c.pcrs);
		if (r < 0)
			return r;
	}
	if (*s->pcr_literal && policy_pcrs_parse(s->pcr_literal, &c.literal) < 0) {
		log_error("--pcr-literal %s: a list of PCRs of the SHA-256 bank, 7 or 0,7",
			  s->pcr_literal);
		return -EINVAL;
	}
	c.pcr_dir = s->pcr_signatures;
	c.escrow_to = *s->escrow_to ? s->escrow_to : NULL;
	c.escrow_approval = *s->escrow_approval ? s->escrow_approval : NULL;
	c.owner_auth_file = owner_auth_file(s);
	c.node_approval = *s->approval ? s->approval : NULL;
	*ret = c;
	return 0;
}

/* What systemd hears: READY=1 as soon as the socket is bound, so a slow
 * or absent TPM never holds up the start (calls arriving meanwhile wait
 * for the keys, bounded; Status says what is missing); STATUS= says what
 * the daemon waits for. */
struct serve_ctx {
	backend *p;
	bool listening, keys_ready;
};

static void on_listening(void *arg)
{
	struct serve_ctx *ctx = arg;

	ctx->listening = true;
	notify_send(ctx->keys_ready ? "READY=1\nSTATUS=serving KMS v2"
				    : "READY=1\nSTATUS=serving; waiting for the TPM to unseal the write "
				      "key (Status says what is missing)");
}

static void on_keys_ready(void *arg)
{
	struct serve_ctx *ctx = arg;

	ctx->keys_ready = true;
	if (ctx->listening)
		notify_send("STATUS=serving KMS v2");
}

/* STATUS= follows the TPM's health once serving: "serving KMS v2" stayed
 * while the TPM was unreachable. */
static void on_tpm_health(void *arg, const char *problem)
{
	struct serve_ctx *ctx = arg;
	char status[256];

	if (!ctx->listening)
		return;
	if (!*problem) {
		notify_send("STATUS=serving KMS v2");
		return;
	}
	snprintf(status, sizeof(status), "STATUS=serving; not healthy: %s", problem);
	notify_send(status);
}

static void on_stopping(void *arg)
{
	struct serve_ctx *ctx = arg;

	/* A start that never got ready is not stopping: it failed, and
	 * serve_failed says so. */
	if (ctx->listening)
		notify_send("STOPPING=1\nSTATUS=finishing in-flight calls");
	backend_stop(ctx->p);
}

static void on_reload(void *arg)
{
	struct serve_ctx *ctx = arg;

	backend_reload(ctx->p);
}

/* serve's transport settings, and the sockets systemd passed. Logs. */
static int daemon_config_of(const struct settings *s, struct daemon_config *ret)
{
	struct notify_socket passed[] = {{"kms", AF_UNIX, -1}, {"metrics", AF_UNSPEC, -1}};
	struct daemon_config dc;
	int r;

	daemon_config_defaults(&dc);
	r = listen_addr_parse(s->listen, &dc.listen);
	if (r < 0) {
		log_error("--listen %s: not a Unix socket address (%s)", s->listen, strerror(-r));
		return r;
	}
	r = notify_listen_fds(passed, sizeof(passed) / sizeof(passed[0]));
	if (r < 0)
		return r;
	dc.listen_fd = passed[0].fd;
	dc.metrics_fd = passed[1].fd;
	/* systemd made the socket: its unit says who may use it. */
	if (dc.listen_fd >= 0 && (s->socket_mode != 0600 || *s->socket_group))
		log_warning("socket-mode and socket-group do not apply to the socket systemd "
			    "passed: set SocketMode= and SocketGroup= in a drop-in for "
			    "tpm2-kms.socket instead");
	if (dc.metrics_fd >= 0 && *s->metrics_listen)
		log_warning("metrics-listen %s is not used: systemd passed the metrics socket",
			    s->metrics_listen);
	dc.socket_mode = s->socket_mode;
	if (*s->socket_group) {
		dc.socket_gid = group_id(s->socket_group);
		if (dc.socket_gid == (gid_t)-1) {
			log_error("--socket-group %s: no such group", s->socket_group);
			return -EINVAL;
		}
	}
	dc.server.max_connections = s->max_connections;
	dc.server.h2.max_concurrent_streams = s->max_streams;
	dc.server.idle_timeout_ms = s->idle_timeout_s * 1000u;
	dc.server.allow_uids = s->allow_uids;
	dc.server.n_allow_uids = s->n_allow_uids;
	dc.grpc.max_inflight = s->max_inflight;
	dc.metrics_listen = *s->metrics_listen ? s->metrics_listen : NULL;
	*ret = dc;
	return 0;
}

/* Commands that hold key material in clear, serve first: no core dumps,
 * no ptrace by other users, keys in the locked secure heap of heap_bytes,
 * then the ciphers. */
static int key_command_begin_heap(size_t heap_bytes)
{
	int r = secmem_harden_process();

	if (r == 0)
		r = secmem_init(heap_bytes);
	if (r == 0) {
		r = envelope_init();
		if (r < 0) {
			log_error("OpenSSL lacks HKDF, HMAC or AES-256-GCM");
			secmem_finish();
		}
	}
	return r;
}

static int key_command_begin(void)
{
	return key_command_begin_heap(SECURE_HEAP_BYTES);
}

static void key_command_end(void)
{
	envelope_finish();
	secmem_finish();
}

/* The state to serve, provisioned first if need be. A TPM that does not
 * answer must not hold up the start: past the command timeout the state's
 * keys are served, loading when it answers. */
static int serve_state(const struct settings *s, const struct keyadmin_config *kc,
		       struct state *ret)
{
	int r;

	r = startup_provision(s->state_dir, s->tcti, kc,
			      s->tpm_command_timeout_ms ? s->tpm_command_timeout_ms : 10000, ret);
	if (r != -EIO && r != -ETIMEDOUT)
		return r;
	r = state_load(s->state_dir, ret);
	if (r == -ENOENT)
		log_error("cannot provision %s without a TPM", s->state_dir);
	if (r == 0)
		log_warning("TPM unavailable at start; serving, keys load when it answers");
	return r;
}

static int cmd_serve(const struct settings *s)
{
	struct serve_ctx ctx = {0};
	struct daemon_config dc;
	struct backend_config pc = {
	    .state_dir = s->state_dir,
	    .tcti = s->tcti,
	    .probe_interval_ms = s->probe_interval_ms,
	    .max_tpm_queue = 1024,
	    .tpm_command_timeout_ms = s->tpm_command_timeout_ms,
	    .pcr_signatures = s->pcr_signatures,
	    .on_ready = on_keys_ready,
	    .on_health = on_tpm_health,
	    .ready_arg = &ctx,
	};
	struct daemon_hooks hooks = {0};
	struct state st = {0};
	uv_loop_t *loop = uv_default_loop();
	uint8_t admin[SIGNER_DER_MAX];
	struct keyadmin_config kc;
	backend *p = NULL;
	int claim = -1, r;

	r = daemon_config_of(s, &dc);
	if (r < 0)
		return r;

	/* Order: process hardening, secure heap, crypto, keys, transport. */
	r = key_command_begin_heap(SERVE_SECURE_HEAP_BYTES);
	if (r < 0)
		return r;
	if (vmgenid_probe() == VMGENID_MISSING)
		log_warning("this VM has no VM generation ID device: if it is ever restored from a "
			    "snapshot, envelope salts may repeat (see docs/security.md); give it "
			    "one (QEMU: -device vmgenid, libvirt: <genid/>)");
	/* One daemon per state directory, for its whole life. */
	r = statedir_open(s->state_dir, true);
	if (r == 0)
		r = statedir_claim(s->state_dir, &claim);
	if (r < 0)
		goto out;
	r = keyadmin_config_of(s, admin, &kc);
	if (r < 0)
		goto out;
	r = serve_state(s, &kc, &st);
	if (r == 0)
		r = backend_new(loop, &pc, &st, &p);
	if (r < 0)
		goto out;
	ctx.p = p;
	hooks.ready = on_listening;
	hooks.stopping = on_stopping;
	hooks.reload = on_reload;
	hooks.arg = &ctx;
	/* On failure too, daemon_run has stopped the plugin via the hook. */
	r = daemon_run(loop, &dc, backend_ops(), p, &hooks);
out:
	state_free(&st);
	uv_loop_close(loop);
	key_command_end();
	if (claim >= 0)
		close(claim);
	return r;
}

/* What a command made (r its result), to standard output or -o FILE
 * written atomically with mode: 0644 for public keys and signatures (the
 * service user reads what an operator made as root), 0600 for bundles.
 * Frees data either way; returns r, or the write's error. */
static int output_result(const struct settings *s, int r, char *data, size_t len, mode_t mode)
{
	if (r < 0)
		goto out;
	if (*s->output) {
		r = files_write_output(s->output, data, len, mode);
	} else if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0) {
		log_error("cannot write to standard output");
		r = -EIO;
	}
out:
	free(data);
	return r;
}

/* init and rotate: make a key, print its key_id. */
static int cmd_make_key(const struct settings *s)
{
	struct state_generation g;
	struct state st;
	uint8_t admin[SIGNER_DER_MAX];
	struct keyadmin_config kc;
	int r;

	r = key_command_begin();
	if (r < 0)
		return r;
	r = keyadmin_config_of(s, admin, &kc);
	if (r == 0 && s->command == CMD_INIT) {
		r = keyadmin_provision(s->state_dir, s->tcti, &kc, &st);
		if (r == 0) {
			g = *state_find(&st, st.write_generation);
			state_free(&st);
		}
	} else if (r == 0) {
		r = keyadmin_rotate(s->state_dir, s->tcti, &kc, s->stage, &g);
	}
	if (r == 0)
		printf("%s\n", g.key_id);
	key_command_end();
	return r;
}

/* certify: this node vouches for the generations it holds. */
static int cmd_certify(const struct settings *s)
{
	uint8_t admin[SIGNER_DER_MAX];
	struct keyadmin_config kc;
	size_t n = 0;
	int r;

	r = key_command_begin();
	if (r < 0)
		return r;
	r = keyadmin_config_of(s, admin, &kc);
	if (r == 0)
		r = keyadmin_certify(s->state_dir, s->tcti, &kc, &n);
	if (r == 0)
		printf("%zu generation%s certified\n", n, n == 1 ? "" : "s");
	key_command_end();
	return r;
}

/* An encrypted private key's passphrase: --passphrase-file, else the
 * systemd credential `passphrase`, else NULL (asked on the terminal). */
static const char *passphrase_file(const struct settings *s)
{
	static char cred[PATH_MAX];
	const char *dir = getenv("CREDENTIALS_DIRECTORY");

	if (*s->passphrase_file)
		return s->passphrase_file;
	if (dir && (size_t)snprintf(cred, sizeof(cred), "%s/passphrase", dir) < sizeof(cred) &&
	    access(cred, F_OK) == 0)
		return cred;
	return NULL;
}

/* The fingerprints an admin compares out of band. */
static void print_node(const char *prefix, const struct node *n)
{
	char fp[NODE_FINGERPRINT_MAX];

	node_fingerprint(&n->name, fp);
	fprintf(stderr, "%snode fingerprint: %s\n", prefix, fp);
	if (n->sign_name.len) {
		node_fingerprint(&n->sign_name, fp);
		fprintf(stderr, "%snode signing key: %s\n", prefix, fp);
	}
}

static int cmd_node_key(const struct settings *s)
{
	struct node n;
	char *pem = NULL;
	size_t len = 0;
	int r;

	if (*s->answer) {
		r = exchange_node_key_answer(s->state_dir, s->tcti, s->answer, &pem, &len);
		return output_result(s, r, pem, len, 0644);
	}
	if (*s->public_key)
		r = exchange_node_key_public(s->public_key, &pem, &len, &n);
	else
		r = exchange_node_key(s->state_dir, s->tcti, &pem, &len, &n);
	r = output_result(s, r, pem, len, 0644);
	if (r == 0)
		print_node("", &n);
	return r;
}

static int cmd_approve(const struct settings *s)
{
	struct node n;
	char *text = NULL;
	size_t len = 0;
	bool challenge = false;
	int r;

	r = key_command_begin();
	if (r < 0)
		return r;
	r = exchange_approve(s->admin_key, passphrase_file(s), s->args[0],
	                     *s->ek_ca ? s->ek_ca : NULL, *s->response ? s->response : NULL, &text,
	                     &len, &n, &challenge);
	r = output_result(s, r, text, len, 0644);
	if (r == 0)
		print_node(challenge ? "challenged " : "approved ", &n);
	key_command_end();
	return r;
}

/* export and recover: a bundle for one node, 0600. */
static int cmd_bundle(const struct settings *s)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	r = key_command_begin();
	if (r < 0)
		return r;
	if (s->command == CMD_EXPORT)
		r = exchange_export(s->state_dir, s->tcti, s->pcr_signatures, s->to, s->approval,
				    s->generations, s->n_generations, &text, &len);
	else
		r = exchange_recover(s->recovery_key, passphrase_file(s), s->admin_key, s->to,
				     s->args, s->n_args, s->write_generation, &text, &len);
	r = output_result(s, r, text, len, 0600);
	key_command_end();
	return r;
}

static int cmd_pcr_read(const struct settings *s)
{
	struct tpm_pcr_values v;
	struct policy_pcrs pcrs;
	char out[24 * 80];
	unsigned epoch;
	tpm *t = NULL;
	int r;

	r = pcrs_of(s, &pcrs);
	if (r < 0)
		return r;
	r = tpm_open(s->tcti, &t);
	if (r == 0)
		r = tpm_pcr_read(t, pcrs.index, pcrs.n, &v);
	/* The epoch pcr-sign --epoch needs, on stderr (stdout stays what
	 * pcr-sign takes). */
	if (r == 0 && tpm_epoch_read(t, &epoch) == 0)
		fprintf(stderr, "epoch %u\n", epoch);
	tpm_close(t);
	if (r < 0)
		return r;
	unseal_format_values(&v, out, sizeof(out));
	printf("%s\n", out);
	return 0;
}

/* pcr-revoke: the node's PCR signature epoch, raised. */
static int cmd_pcr_revoke(const struct settings *s)
{
	uint8_t admin[SIGNER_DER_MAX];
	struct keyadmin_config kc;
	unsigned now = 0;
	int r;

	r = keyadmin_config_of(s, admin, &kc);
	if (r == 0)
		r = keyadmin_epoch_raise(s->tcti, &kc, s->epoch, &now);
	if (r == 0)
		printf("epoch %u\n", now);
	return r;
}

static int cmd_pcr_sign(const struct settings *s)
{
	uint8_t values[POLICY_PCR_MAX][POLICY_DIGEST_BYTES];
	struct policy_pcrs pcrs;
	struct approval *a = calloc(1, sizeof(*a));
	crypto_key *key = NULL;
	char *text = NULL;
	size_t len = 0;
	int r;

	if (!a)
		return -ENOMEM;
	if (policy_pcr_values_parse(s->pcrs, &pcrs, values) < 0) {
		log_error("--pcrs: PCR values as pcr-read prints them, 7=<64 hex digits>,...");
		r = -EINVAL;
		goto out;
	}
	r = key_command_begin();
	if (r < 0)
		goto out;
	r = signer_load_private(s->key, "PCR signer", passphrase_file(s), &key);
	if (r == 0)
		r = approval_sign_pcrs(key, &pcrs, (const uint8_t(*)[POLICY_DIGEST_BYTES])values,
				       s->legacy, s->epoch, a);
	if (r == 0)
		r = approval_encode(a, &text, &len);
	r = output_result(s, r, text, len, 0644);
	crypto_key_free(key);
	key_command_end();
out:
	free(a);
	return r;
}

static int cmd_import(const struct settings *s)
{
	size_t added = 0;
	int r;

	r = key_command_begin();
	if (r < 0)
		return r;
	r = exchange_import(s->state_dir, s->tcti, s->pcr_signatures, s->nv_index,
			    *s->admin_key ? s->admin_key : NULL, s->args[0], &added);
	if (r == 0)
		printf("%zu generation%s added\n", added, added == 1 ? "" : "s");
	key_command_end();
	return r;
}

/* A signing key kept as DER in the state, by its TPM Name in hex. */
static void print_key_name(const char *label, const uint8_t *der, size_t len)
{
	char hex[NODE_FINGERPRINT_MAX] = "(not usable)";
	struct tpm_name name;
	crypto_key *key = NULL;

	if (signer_from_der(der, len, &key) == 0 && signer_name(key, &name) == 0)
		node_fingerprint(&name, hex);
	crypto_key_free(key);
	printf("%-13s %s\n", label, hex);
}

/* What a node trusts and is, for the out-of-band comparisons of
 * docs/operations.md §9.5. */
static void print_anchors(const char *dir, const struct state *st)
{
	char path[PATH_MAX], fp[NODE_FINGERPRINT_MAX];
	struct tpm_name sign;
	char root[APPROVAL_ROOT_MAX];
	struct node n;

	printf("\n");
	if (st->anchors.admin_key_len)
		print_key_name("admin key:", st->anchors.admin_key, st->anchors.admin_key_len);
	else
		printf("%-13s none recorded (generations are `none`: they never leave this TPM)\n",
		       "admin key:");
	if (st->anchors.pcr_key_len) {
		char pcrs[100], lit[100] = "";

		print_key_name("PCR signer:", st->anchors.pcr_key, st->anchors.pcr_key_len);
		policy_pcrs_format(&st->anchors.pcrs, pcrs, sizeof(pcrs));
		if (st->anchors.literal.n)
			policy_pcrs_format(&st->anchors.literal, lit, sizeof(lit));
		printf("%-13s signed sha256:%s%s%s\n", "PCRs:", pcrs, *lit ? ", literal " : "", lit);
	}
	if (escrow_configured(dir) &&
	    (size_t)snprintf(path, sizeof(path), "%s/%s/node.pem", dir, ESCROW_DIR) < sizeof(path) &&
	    nodefile_load(path, &n) == 0) {
		node_fingerprint(&n.name, fp);
		printf("%-13s %s\n", "escrow to:", fp);
	}
	{
		char *shared = NULL;

		if (sharelog_describe(dir, &shared) == 0)
			fputs(shared, stdout);
		free(shared);
	}
	/* Generations no node would take (made before their node's approval
	 * was recorded): certify says how. */
	printf("%-13s", "uncertified:");
	for (size_t i = 0, none = 1; i < st->n_gens; i++) {
		struct provenance cert;

		if (tpm_kek_duplicable(st->gens[i].kind) &&
		    provenance_load(dir, st->gens[i].number, &cert) < 0) {
			printf("%s%u", none ? " " : ", ", (unsigned)st->gens[i].number);
			none = 0;
		}
		if (i + 1 == st->n_gens && none)
			printf(" none");
	}
	printf("\n");
	node_fingerprint(&st->srk_name, fp);
	printf("%-13s %s\n", "this node:", fp);
	if (provenance_approved_signing_key(dir, st, &sign, root) == 0) {
		node_fingerprint(&sign, fp);
		printf("%-13s %s (approval recorded: it certifies what it makes)\n", "signing key:",
		       fp);
		if (*root)
			printf("%-13s yes: the EK certificate chains to %s\n", "attested:", root);
		else
			printf("%-13s no: the admin approved this node's keys as they came\n",
			       "attested:");
	} else {
		printf("%-13s no approval of this node recorded (tpm2-kms certify --approval)\n",
		       "signing key:");
	}
}

/* The last audit of etcd, which retire relies on: when, where, and what
 * it found under each generation. */
static void print_audit(const char *dir)
{
	struct auditrec *a = calloc(1, sizeof(*a));
	char when[UTIL_UTC_MAX];
	uint64_t now = util_now_realtime_s();

	if (!a)
		return;
	if (auditrec_load(dir, AUDITREC_LIVE, a) < 0) {
		printf("%-13s none recorded (tpm2-kms audit)\n", "last audit:");
		free(a);
		return;
	}
	util_utc(a->started, when);
	printf("%-13s %s at %s (%llu h ago), %s, revision %lld: %llu objects, %llu under this "
	       "node's keys that do not decrypt, %llu under other key_ids\n",
	       "last audit:", a->source, when,
	       (unsigned long long)(now > a->started ? (now - a->started) / 3600 : 0),
	       a->complete ? "complete" : "INCOMPLETE", (long long)a->revision,
	       (unsigned long long)a->objects, (unsigned long long)a->undecryptable,
	       (unsigned long long)a->foreign);
	for (size_t i = 0; i < a->n_gens; i++)
		printf("%-13s generation %u: %llu objects\n", "", (unsigned)a->gen[i],
		       (unsigned long long)a->gen_objects[i]);
	free(a);
}

static int cmd_keys(const struct settings *s)
{
	struct decrypt_counts *counts = calloc(1, sizeof(*counts));
	struct state st;
	bool escrow;
	int r;

	if (!counts)
		return -ENOMEM;
	r = statedir_open(s->state_dir, false);
	if (r < 0)
		goto out;
	r = state_load(s->state_dir, &st);
	if (r == -ENOENT)
		log_error("%s holds no keys yet: run tpm2-kms init", s->state_dir);
	if (r < 0)
		goto out;
	r = counts_load(s->state_dir, counts);
	if (r < 0) {
		state_free(&st);
		goto out;
	}
	escrow = escrow_configured(s->state_dir);
	printf("%-10s  %-45s  %-20s  %-12s  %-7s  %-6s  %-10s  %s\n", "GENERATION", "KEY_ID",
	       "CREATED", "STATE", "KIND", "ESCROW", "DAEMON",
	       counts->pid ? "DECRYPTS" : "DECRYPTS(no daemon)");
	for (size_t i = 0; i < st.n_gens; i++) {
		const struct state_generation *g = &st.gens[i];
		char created[UTIL_UTC_MAX];

		util_utc(g->created, created);
		printf("%-10u  %-45s  %-20s  %-12s  %-7s  %-6s  %-10s  %llu\n", (unsigned)g->number,
		       g->key_id, created, g->number == st.write_generation ? "write" : "decrypt-only",
		       state_kind_name(g->kind),
		       !escrow || !tpm_kek_duplicable(g->kind) ? "-"
		       : escrow_has(s->state_dir, g->number) ? "yes"
							     : "no",
		       counts_loaded(counts, g->number), (unsigned long long)counts_get(counts, g->number));
	}
	print_anchors(s->state_dir, &st);
	print_audit(s->state_dir);
	state_free(&st);
out:
	free(counts);
	return r;
}

static int cmd_retire(const struct settings *s)
{
	if (s->command == CMD_PROMOTE)
		return keyadmin_promote(s->state_dir, s->generation, s->force);
	return keyadmin_retire(s->state_dir, s->generation, s->force);
}

/* kube-apiserver's EncryptionConfiguration for this node's socket. Turning
 * encryption on takes two phases across the control plane: every
 * apiserver first reads both (identity still writes), then all write with
 * the plugin; leaving it is phase 1's order again, then rewriting every
 * Secret, then removing the kms provider. */
static int cmd_encryption_config(const struct settings *s)
{
	static const char *const notes[] = {
		("# Phase 1 of 2: every kube-apiserver can read what the plugin encrypts;\n"
		 "# writes stay in plaintext. Roll it out to every control-plane node,\n"
		 "# then phase 2 (tpm2-kms encryption-config --phase 2).\n"),
		("# Phase 2 of 2: new Secrets are encrypted by the plugin; identity keeps\n"
		 "# those written before readable until they are rewritten:\n"
		 "#   kubectl get secrets --all-namespaces -o json | kubectl replace -f -\n"),
		("# Leaving encryption: writes go back to plaintext while the plugin still\n"
		 "# decrypts. Rewrite every Secret (as above), then remove the kms provider.\n"),
	};
	struct listen_addr a;
	int phase = strcmp(s->phase, "1") == 0 ? 0 : strcmp(s->phase, "2") == 0 ? 1 : 2;
	int r;

	r = listen_addr_parse(s->listen, &a);
	if (r < 0 || a.abstract) {
		log_error("--listen %s: kube-apiserver needs the plugin's socket as a path",
			  s->listen);
		return -EINVAL;
	}
	printf("# kube-apiserver --encryption-provider-config, by tpm2-kms encryption-config.\n%s"
	       "apiVersion: apiserver.config.k8s.io/v1\n"
	       "kind: EncryptionConfiguration\n"
	       "resources:\n"
	       "  - resources:\n"
	       "      - secrets\n"
	       "    providers:\n",
	       notes[phase]);
	if (phase != 1)
		printf("      - identity: {}\n");
	printf("      - kms:\n"
	       "          apiVersion: v2\n"
	       "          name: %s\n"
	       "          endpoint: unix://%s\n"
	       "          timeout: 3s\n",
	       s->provider_name, a.name);
	if (phase == 1)
		printf("      - identity: {}\n");
	if (fflush(stdout) != 0) {
		log_error("cannot write to standard output");
		return -EIO;
	}
	return 0;
}

/* Exit 0 when every KMS v2 object decrypts here, AUDIT_SOME_UNDECRYPTABLE
 * when the audit is complete but some do not, 1 when it could not be
 * completed. */
#define AUDIT_SOME_UNDECRYPTABLE 3

static int cmd_audit(const struct settings *s)
{
	struct audit_options o = {
	    .endpoints = s->endpoints,
	    .tls = {*s->cacert ? s->cacert : NULL, *s->cert ? s->cert : NULL,
	            *s->key ? s->key : NULL},
	    .prefix = s->prefix,
	    .listen = s->listen,
	    .state_dir = s->state_dir,
	    .timeout_ms = (int)s->timeout_ms,
	    .progress = isatty(STDERR_FILENO),
	};
	struct audit_result *a = NULL;
	snapshot *snap = NULL;
	int r;

	/* OpenSSL writes to the TLS socket with write(2): etcd closing the
	 * connection (a refused client certificate) would kill us with
	 * SIGPIPE instead of giving an error to report. */
	signal(SIGPIPE, SIG_IGN);
	r = key_command_begin();
	if (r < 0)
		return r;
	if (*s->snapshot) {
		r = snapshot_open(s->snapshot, (int)s->timeout_ms, &snap);
		if (r < 0)
			goto out;
		o.endpoints = snapshot_endpoint(snap);
		o.tls = (struct dial_tls){0};
		o.snapshot = s->snapshot;
	}
	r = audit_run(&o, &a);
	if (r < 0)
		goto out;
	if (strcmp(s->output, "json") == 0)
		report_json(stdout, a);
	else
		report_text(stdout, a);
	r = !a->complete ? -EIO : audit_all_decrypt(a) ? 0 : AUDIT_SOME_UNDECRYPTABLE;
out:
	audit_result_free(a);
	snapshot_close(snap);
	key_command_end();
	return r;
}

/* doctor unseals every generation to check it: a key command. */
static int cmd_doctor(const struct settings *s)
{
	int r = key_command_begin();

	if (r < 0)
		return r;
	r = doctor_run(s);
	key_command_end();
	return r;
}

static int cmd_status(const struct settings *s)
{
	struct listen_addr a;
	uint8_t *msg = NULL;
	size_t len = 0;
	const char *message = NULL;
	char *version = NULL, *healthz = NULL, *key_id = NULL;
	int fd = -1, status = -1, r;

	r = listen_addr_parse(s->listen, &a);
	if (r < 0) {
		log_error("--listen %s: not a Unix socket address", s->listen);
		return r;
	}
	r = listen_connect(&a, &fd);
	if (r < 0) {
		log_error("cannot connect to %s: %s", listen_addr_str(&a), strerror(-r));
		return r;
	}
	r = grpc_client_call(fd, "/v2.KeyManagementService/Status", NULL, 0, (int)s->timeout_ms,
			     &status, &message, &msg, &len);
	if (r < 0) {
		log_error("Status call to %s failed: %s", listen_addr_str(&a), strerror(-r));
		goto out;
	}
	if (status != GRPC_OK) {
		log_error("Status call failed: grpc-status %d: %s", status, message);
		r = -EPROTO;
		goto out;
	}
	r = kms_proto_decode_status_response(msg, len, &version, &healthz, &key_id);
	if (r < 0) {
		log_error("undecodable Status response");
		goto out;
	}
	printf("version: %s\nhealthz: %s\nkey_id: %s\n", version, healthz, key_id);
	r = strcmp(healthz, "ok") == 0 ? 0 : -EAGAIN;
out:
	free(version);
	free(healthz);
	free(key_id);
	free(msg);
	close(fd);
	return r;
}

/* serve could not start. Errors only an operator can fix (the TPM is not
 * the one provisioned, damaged state, bad settings, refused authorization)
 * exit EXIT_PERMANENT, which the unit's RestartPreventExitStatus= keeps
 * from restarting for ever; anything else may pass (a TPM not there yet)
 * and exits 1, to be restarted. STATUS= carries the reason either way. */
static int serve_failed(int err)
{
	/* Also what only the operator can change: another admin key than
	 * the state's, an NV index or socket path holding something else, a
	 * --listen that is no Unix socket address or too long for one. */
	bool permanent = err == -EKEYREJECTED || err == -EBADMSG || err == -EINVAL ||
			 err == -EACCES || err == -EPERM || err == -EEXIST || err == -ENOTSOCK ||
			 err == -ELOOP || err == -EAFNOSUPPORT || err == -ENAMETOOLONG;
	char status[640];
	size_t n;

	n = (size_t)snprintf(status, sizeof(status), "STATUS=%s: %s",
			     permanent ? "stopped, not restarting" : "stopped",
			     *log_last_error() ? log_last_error() : strerror(-err));
	/* One line: STATUS= is shown as it is. */
	for (size_t i = 0; i < n && i < sizeof(status); i++)
		if ((unsigned char)status[i] < 0x20)
			status[i] = ' ';
	notify_send(status);
	return permanent ? EXIT_PERMANENT : 1;
}

/* Long for a reason: the order things start in and stop in, read top to
 * bottom in one place (chrony's main.c does the same). */
int main(int argc, char **argv)
{
	struct settings s;
	int r;

	/* Freed heap memory is overwritten: libraries free buffers that held
	 * KEK bytes without wiping them (tpm2-tss's ESAPI context held the
	 * sealed KEK of a first start's provisioning in clear until reused).
	 * Our own secrets live in the secure heap and are wiped anyway. */
	mallopt(M_PERTURB, 0xa5);

	r = settings_parse(argc, argv, &s);
	if (r != 0)
		return r > 0 ? 0 : 2;
	log_setup(s.log_format, s.log_level);
	if (s.print_config) {
		settings_print(&s, stdout);
		return 0;
	}
	/* tpm2-tss would print its own errors (ours carry the decoded code),
	 * and at trace level it hex-dumps command parameters, unsealed KEKs
	 * among them: whatever the caller's environment says, it logs
	 * nothing. */
	setenv("TSS2_LOG", "all+NONE", 1);

	switch (s.command) {
	case CMD_SERVE:
		r = cmd_serve(&s);
		break;
	case CMD_INIT:
	case CMD_ROTATE:
		r = cmd_make_key(&s);
		break;
	case CMD_KEYS:
		r = cmd_keys(&s);
		break;
	case CMD_RETIRE:
	case CMD_PROMOTE:
		r = cmd_retire(&s);
		break;
	case CMD_NODE_KEY:
		r = cmd_node_key(&s);
		break;
	case CMD_APPROVE:
		r = cmd_approve(&s);
		break;
	case CMD_EXPORT:
	case CMD_RECOVER:
		r = cmd_bundle(&s);
		break;
	case CMD_IMPORT:
		r = cmd_import(&s);
		break;
	case CMD_CERTIFY:
		r = cmd_certify(&s);
		break;
	case CMD_PCR_READ:
		r = cmd_pcr_read(&s);
		break;
	case CMD_PCR_REVOKE:
		r = cmd_pcr_revoke(&s);
		break;
	case CMD_PCR_SIGN:
		r = cmd_pcr_sign(&s);
		break;
	case CMD_STATUS:
		r = cmd_status(&s);
		break;
	case CMD_AUDIT:
		r = cmd_audit(&s);
		break;
	case CMD_ENCRYPTION_CONFIG:
		r = cmd_encryption_config(&s);
		break;
	case CMD_DOCTOR:
		r = cmd_doctor(&s);
		break;
	}
	if (r < 0 && s.command == CMD_SERVE)
		r = serve_failed(r);
	else
		r = r < 0 ? 1 : r; /* a positive r is the exit status (audit) */
	/* A thread stuck in a TPM command still runs: exit handlers must not
	 * tear down what it uses. */
	if (tpm_worker_left_behind() || startup_left_behind()) {
		fflush(NULL);
		_exit(r);
	}
	return r;
}
