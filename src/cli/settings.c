#include "config.h"

#include "cli/settings.h"
#include "base/util.h"

#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>

#define ALL_TPM     (CMD_SERVE | CMD_INIT | CMD_ROTATE | CMD_NODE_KEY | CMD_EXPORT | CMD_IMPORT | \
		     CMD_PCR_READ | CMD_CERTIFY | CMD_PCR_REVOKE | CMD_DOCTOR)
#define ALL_STATE   (ALL_TPM | CMD_KEYS | CMD_RETIRE | CMD_PROMOTE | CMD_AUDIT)
#define ALL         (ALL_STATE | CMD_STATUS | CMD_APPROVE | CMD_RECOVER | CMD_PCR_SIGN | \
		     CMD_ENCRYPTION_CONFIG)
/* Commands that may unseal a generation bound to PCRs. */
#define ALL_UNSEAL  (CMD_SERVE | CMD_INIT | CMD_ROTATE | CMD_EXPORT | CMD_IMPORT | CMD_CERTIFY | \
		     CMD_DOCTOR)

enum kind {
	K_STRING,
	K_U32,
	K_MODE,
	K_NV_INDEX,
	K_LOG_FORMAT,
	K_LOG_LEVEL,
	K_UID,
	K_FLAG,
	K_GENERATION,
};

struct option_def {
	const char *name;
	enum kind kind;
	unsigned commands;
	/* Only on the command line: what names one run's input or output. */
	bool flag_only;
	size_t offset;
	size_t size; /* strings; max for numbers */
	const char *arg, *help;
};

#define STR(field)  offsetof(struct settings, field), sizeof(((struct settings *)0)->field)
#define NUM(field, max) offsetof(struct settings, field), (max)

static const struct option_def options[] = {
	{"listen", K_STRING, CMD_SERVE | CMD_STATUS | CMD_AUDIT | CMD_ENCRYPTION_CONFIG | CMD_DOCTOR,
	 false, STR(listen), "ADDRESS",
	 "socket: PATH, unix:///PATH or unix:///@ABSTRACT (default /run/tpm2-kms/kms.sock)"},
	{"tcti", K_STRING, ALL_TPM, false, STR(tcti), "TCTI",
	 "TPM access, as for the TCTI loader (default device:/dev/tpmrm0)"},
	{"state-dir", K_STRING, ALL_STATE, false, STR(state_dir), "DIR",
	 "keys and state (default /var/lib/tpm2-kms)"},
	{"nv-index", K_NV_INDEX, CMD_SERVE | CMD_INIT | CMD_IMPORT, false, NUM(nv_index, 0),
	 "HANDLE", "NV counter index for new state, 0x01800000-0x01BFFFFF (default 0x01800101)"},
	{"admin-key", K_STRING, CMD_SERVE | CMD_INIT | CMD_APPROVE | CMD_IMPORT | CMD_RECOVER, false,
	 STR(admin_key), "PEM",
	 "admin key: its public half (serve, init: new generations become duplicable to "
	 "nodes it approves; import into an empty state directory, recover: the only admin key "
	 "trusted); its private half (approve)"},
	{"pcr-key", K_STRING, CMD_SERVE | CMD_INIT, false, STR(pcr_key), "PEM",
	 "the PCR signer's public key: new generations unseal only for PCR values it signed"},
	{"pcrs", K_STRING, CMD_SERVE | CMD_INIT | CMD_PCR_READ | CMD_PCR_SIGN, false, STR(pcrs),
	 "LIST", "PCRs (SHA-256 bank) the signatures cover, 7 or 7,11; pcr-sign: 7=HEX,..."},
	{"pcr-literal", K_STRING, CMD_SERVE | CMD_INIT, false, STR(pcr_literal), "LIST",
	 "PCRs (SHA-256 bank) new generations also check as they are now, beside the signed "
	 "ones (7, say, with pcrs 11)"},
	{"pcr-signatures", K_STRING, ALL_UNSEAL, false, STR(pcr_signatures), "DIR",
	 "signatures of PCR values (pcr-sign, systemd-measure) (default "
	 "/etc/tpm2-kms/pcr-signatures)"},
	{"key", K_STRING, CMD_PCR_SIGN | CMD_AUDIT, false, STR(key), "PEM",
	 "pcr-sign: the PCR signer's private key; audit: the private key of --cert"},
	{"endpoints", K_STRING, CMD_AUDIT, false, STR(endpoints), "URL[,URL]",
	 "etcd's client URLs (https://, http:// or unix://), tried in order"},
	{"cacert", K_STRING, CMD_AUDIT, false, STR(cacert), "PEM",
	 "the CA that signed etcd's server certificate (default: the system's)"},
	{"cert", K_STRING, CMD_AUDIT, false, STR(cert), "PEM",
	 "the client certificate etcd asks for (kubeadm: apiserver-etcd-client.crt)"},
	{"prefix", K_STRING, CMD_AUDIT, false, STR(prefix), "PREFIX",
	 "kube-apiserver's --etcd-prefix (default /registry)"},
	{"name", K_STRING, CMD_ENCRYPTION_CONFIG, true, STR(provider_name), "NAME",
	 "the KMS provider's name in the configuration (default tpm2-kms; no ':')"},
	{"phase", K_STRING, CMD_ENCRYPTION_CONFIG, true, STR(phase), "1|2|off",
	 "1: read both, write plaintext (every apiserver first); 2: write encrypted (the "
	 "default); off: write plaintext again, to leave encryption"},
	{"snapshot", K_STRING, CMD_AUDIT, true, STR(snapshot), "FILE",
	 "audit an etcd snapshot (a backup) by restoring it into a private etcd"},
	{"passphrase-file", K_STRING, CMD_APPROVE | CMD_RECOVER | CMD_PCR_SIGN, true,
	 STR(passphrase_file), "FILE",
	 "the private key file's passphrase (default: the systemd credential passphrase, else "
	 "asked on the terminal)"},
	{"legacy", K_FLAG, CMD_PCR_SIGN, true, offsetof(struct settings, legacy), 0, NULL,
	 "sign for generations made before 0.3.0, whose policy does not name the PCRs"},
	{"epoch", K_U32, CMD_PCR_SIGN | CMD_PCR_REVOKE, true, NUM(epoch, 64), "N",
	 "pcr-sign: the epoch the signature is for, valid until a node's epoch passes it "
	 "(default 0; pcr-read prints a node's); pcr-revoke: the epoch to raise the node to "
	 "(default: one more than now)"},
	{"escrow-to", K_STRING, CMD_SERVE | CMD_INIT | CMD_ROTATE, false, STR(escrow_to), "NODE",
	 "escrow every new dup generation to this recovery node (from node-key --public)"},
	{"escrow-approval", K_STRING, CMD_SERVE | CMD_INIT | CMD_ROTATE, false,
	 STR(escrow_approval), "APPROVAL", "the admin key's approval of the recovery node"},
	{"owner-auth-file", K_STRING, CMD_SERVE | CMD_INIT | CMD_PCR_REVOKE, false,
	 STR(owner_auth_file), "FILE",
	 "the TPM owner hierarchy's password, if it has one, used only to provision (default: "
	 "systemd credential owner-auth)"},
	{"stage", K_FLAG, CMD_ROTATE, true, offsetof(struct settings, stage), 0, NULL,
	 "add the new generation decrypt-only, for promote once every node has it"},
	{"to", K_STRING, CMD_EXPORT | CMD_RECOVER, true, STR(to), "NODE",
	 "the node file (from node-key) of the node to export (or recover) to"},
	{"approval", K_STRING, CMD_EXPORT | CMD_INIT | CMD_CERTIFY, true, STR(approval), "APPROVAL",
	 "the admin key's approval of that node (export), or of this node: recorded, so that "
	 "it certifies the generations it makes (init, certify)"},
	{"generation", K_GENERATION, CMD_EXPORT, true, 0, 0, "N",
	 "export this generation (repeatable; default: every dup generation)"},
	{"public", K_STRING, CMD_NODE_KEY, true, STR(public_key), "PEM",
	 "make the node file from this public key (an offline recovery key) instead of the TPM"},
	{"answer", K_STRING, CMD_NODE_KEY, true, STR(answer), "CHALLENGE",
	 "answer an attestation challenge (approve --ek-ca) with this TPM, as the response"},
	{"ek-ca", K_STRING, CMD_APPROVE, true, STR(ek_ca), "FILE|DIR",
	 "TPM manufacturers' CA certificates: check the node's EK certificate and write a "
	 "challenge (with --response: approve once it is answered)"},
	{"response", K_STRING, CMD_APPROVE, true, STR(response), "RESPONSE",
	 "the node's answer to the challenge (node-key --answer), with --ek-ca"},
	{"recovery-key", K_STRING, CMD_RECOVER, true, STR(recovery_key), "PEM",
	 "the recovery private key the bundles were exported to"},
	{"write-generation", K_U32, CMD_RECOVER, true, NUM(write_generation, UINT32_MAX), "N",
	 "the generation the new node writes with (default: the highest)"},
	{"output", K_STRING,
	 CMD_NODE_KEY | CMD_APPROVE | CMD_EXPORT | CMD_RECOVER | CMD_PCR_SIGN | CMD_AUDIT |
	     CMD_DOCTOR,
	 true, STR(output), "FILE",
	 "write to FILE (atomically, mode 0600) instead of standard output; also -o (audit, "
	 "doctor: text or json, the report's form)"},
	{"encryption-config", K_STRING, CMD_DOCTOR, true, STR(encryption_config), "FILE",
	 "kube-apiserver's EncryptionConfiguration, checked against this plugin"},
	{"socket-mode", K_MODE, CMD_SERVE, false, NUM(socket_mode, 0777), "MODE",
	 "permissions of the socket (default 0600)"},
	{"socket-group", K_STRING, CMD_SERVE, false, STR(socket_group), "GROUP",
	 "group of the socket (default: unchanged)"},
	{"metrics-listen", K_STRING, CMD_SERVE, false, STR(metrics_listen), "ADDRESS",
	 "serve Prometheus metrics on 127.0.0.1:PORT, [::1]:PORT or a socket path (default off)"},
	{"allow-uid", K_UID, CMD_SERVE, false, 0, 0, "UID",
	 "only this peer uid may connect (repeatable; default: anyone the socket mode allows)"},
	{"max-connections", K_U32, CMD_SERVE, false, NUM(max_connections, 1u << 20), "N",
	 "connections at once (default 1024)"},
	{"max-streams", K_U32, CMD_SERVE, false, NUM(max_streams, 1u << 16), "N",
	 "concurrent streams per connection (default 128)"},
	{"max-inflight", K_U32, CMD_SERVE, false, NUM(max_inflight, 1u << 20), "N",
	 "calls being answered at once, server-wide (default 4096)"},
	{"idle-timeout", K_U32, CMD_SERVE, false, NUM(idle_timeout_s, 86400), "SECONDS",
	 "close connections idle this long (default 300)"},
	{"probe-interval", K_U32, CMD_SERVE, false, NUM(probe_interval_ms, 3600000), "MS",
	 "TPM health probe interval (default 5000)"},
	{"tpm-command-timeout", K_U32, CMD_SERVE, false, NUM(tpm_command_timeout_ms, 3600000),
	 "MS", "a TPM command unanswered this long makes the TPM unhealthy (default 10000)"},
	{"timeout", K_U32, CMD_STATUS | CMD_AUDIT | CMD_DOCTOR, false, NUM(timeout_ms, 3600000), "MS",
	 "how long to wait for the answer; a starting daemon holds it up to 10 s (default "
	 "12000)"},
	{"log-format", K_LOG_FORMAT, ALL, false, 0, 0, "FORMAT", "text or json (default text)"},
	{"log-level", K_LOG_LEVEL, ALL, false, 0, 0, "LEVEL",
	 "error, warning, info or debug (default info)"},
	{"force", K_FLAG, CMD_RETIRE | CMD_PROMOTE, false, offsetof(struct settings, force), 0, NULL,
	 "retire: even a generation used since the daemon started; promote: even one never "
	 "exported to a node this node exports to"},
};

/* What a command takes besides options. */
enum positional {
	POS_NONE,
	POS_GENERATION, /* a generation number into generation */
	POS_PATH,       /* a file into args */
	POS_PATHS,      /* one file or more into args */
};

static const struct {
	const char *name;
	enum command cmd;
	enum positional pos;
	/* Offline admin tools do not read the host's configuration file. */
	bool no_config;
	const char *args, *summary;
} commands[] = {
	{"serve", CMD_SERVE, POS_NONE, false, "",
	 "serve the KMS v2 API (provisions an empty state directory)"},
	{"init", CMD_INIT, POS_NONE, false, "",
	 "provision SRK, NV counter and key generation 1 (idempotent)"},
	{"rotate", CMD_ROTATE, POS_NONE, false, "",
	 "seal a new key generation and make it the write key (--stage: decrypt-only)"},
	{"promote", CMD_PROMOTE, POS_GENERATION, false, " GENERATION",
	 "make a staged generation the write key"},
	{"keys", CMD_KEYS, POS_NONE, false, "", "list key generations"},
	{"retire", CMD_RETIRE, POS_GENERATION, false, " GENERATION",
	 "remove a key generation that is not the write key"},
	{"node-key", CMD_NODE_KEY, POS_NONE, false, "",
	 "write this node's storage key as a node file; its fingerprint goes to stderr"},
	{"approve", CMD_APPROVE, POS_PATH, true, " NODE",
	 "sign a node file with the admin key (offline, no TPM)"},
	{"export", CMD_EXPORT, POS_NONE, false, "",
	 "duplicate key generations to an approved node, as a bundle"},
	{"import", CMD_IMPORT, POS_PATH, false, " BUNDLE",
	 "take the key generations of a bundle into this node's TPM"},
	{"certify", CMD_CERTIFY, POS_NONE, false, "",
	 "record this node's approval and certify the generations it holds that have no "
	 "certificate"},
	{"pcr-read", CMD_PCR_READ, POS_NONE, false, "",
	 "print the PCR values of the selection, as pcr-sign takes them"},
	{"pcr-revoke", CMD_PCR_REVOKE, POS_NONE, false, "",
	 "raise this node's PCR signature epoch: signatures for lower epochs unseal nothing"},
	{"pcr-sign", CMD_PCR_SIGN, POS_NONE, true, "",
	 "sign PCR values with the PCR signer's key (offline, no TPM)"},
	{"recover", CMD_RECOVER, POS_PATHS, true, " BUNDLE...",
	 "re-wrap escrowed generations to a new node with the recovery key (offline)"},
	{"audit", CMD_AUDIT, POS_NONE, false, "",
	 "read etcd (or a snapshot) and prove which generations its objects need; retire relies "
	 "on it"},
	{"encryption-config", CMD_ENCRYPTION_CONFIG, POS_NONE, false, "",
	 "print kube-apiserver's EncryptionConfiguration for this plugin, for each phase of "
	 "turning encryption on or off"},
	{"doctor", CMD_DOCTOR, POS_NONE, false, "",
	 "check what operators get wrong (TPM, state and permissions, keys, escrow, the daemon "
	 "as kube-apiserver sees it, its EncryptionConfiguration, the last audit); exit 0, 3 "
	 "(warnings) or 4 (errors)"},
	{"status", CMD_STATUS, POS_NONE, false, "",
	 "ask a running daemon for Status; exit 0 iff healthz is ok"},
};

const char *settings_command_name(enum command c)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (commands[i].cmd == c)
			return commands[i].name;
	return "?";
}

void settings_usage(FILE *out)
{
	fprintf(out, "Usage: tpm2-kms COMMAND [OPTIONS]\n\n"
		     "Kubernetes KMS v2 plugin with its root key in a TPM 2.0.\n\nCommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(out, "  %-9s%-12s %s\n", commands[i].name, commands[i].args,
			commands[i].summary);
	fprintf(out, "\n'tpm2-kms COMMAND --help' lists a command's options. See tpm2-kms(8).\n");
}

static void command_usage(enum command c, FILE *out)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(commands); i++)
		if (commands[i].cmd == c)
			break;
	fprintf(out, "Usage: tpm2-kms %s [OPTIONS]%s\n\n%s.\n\nOptions:\n", commands[i].name,
		commands[i].args, commands[i].summary);
	for (size_t k = 0; k < ARRAY_SIZE(options); k++) {
		char left[64];

		if (!(options[k].commands & c))
			continue;
		snprintf(left, sizeof(left), "--%s%s%s", options[k].name, options[k].arg ? " " : "",
			 options[k].arg ? options[k].arg : "");
		fprintf(out, "  %-28s %s\n", left, options[k].help);
	}
	if (!commands[i].no_config)
		fprintf(out, "  %-28s %s\n", "--config PATH",
			"configuration file (default " SETTINGS_DEFAULT_CONFIG ")");
	if (c == CMD_SERVE || c == CMD_INIT || c == CMD_ROTATE)
		fprintf(out, "  %-28s %s\n", "--print-config",
			"print the effective settings and exit");
	fprintf(out, "  %-28s %s\n", "--help", "show this help");
}

static void defaults(struct settings *s)
{
	memset(s, 0, sizeof(*s));
	strcpy(s->config, SETTINGS_DEFAULT_CONFIG);
	strcpy(s->listen, "/run/tpm2-kms/kms.sock");
	strcpy(s->tcti, "device:/dev/tpmrm0");
	strcpy(s->state_dir, "/var/lib/tpm2-kms");
	strcpy(s->prefix, "/registry");
	strcpy(s->provider_name, "tpm2-kms");
	strcpy(s->phase, "2");
	s->socket_mode = 0600;
	s->log_format = LOG_FORMAT_TEXT;
	s->log_level = LOG_LEVEL_INFO;
	s->max_connections = 1024;
	s->max_streams = 128;
	s->max_inflight = 4096;
	s->idle_timeout_s = 300;
	s->probe_interval_ms = 5000;
	strcpy(s->pcr_signatures, "/etc/tpm2-kms/pcr-signatures");
	s->tpm_command_timeout_ms = 10000;
	/* A daemon still starting holds Status until its keys load (at most
	 * 10 s): a probe run right after the start hears "ok", not a timeout. */
	s->timeout_ms = 12000;
}

/* Applies one setting; where is "--name" or "FILE:LINE" for errors. Long
 * for a reason: one case per kind of value, each its check and its
 * message, side by side. */
static int apply(struct settings *s, const struct option_def *o, const char *value,
		 const char *where)
{
	char *base = (char *)s;
	uint64_t v;

	switch (o->kind) {
	case K_STRING:
		if (strlen(value) >= o->size || !*value) {
			fprintf(stderr, "tpm2-kms: %s: value for %s is empty or too long\n", where,
				o->name);
			return -EINVAL;
		}
		strcpy(base + o->offset, value);
		return 0;
	case K_U32:
		if (util_parse_u64(value, o->size, &v) < 0 || v == 0) {
			fprintf(stderr, "tpm2-kms: %s: %s takes a number from 1 to %zu, not \"%s\"\n",
				where, o->name, o->size, value);
			return -EINVAL;
		}
		*(uint32_t *)(base + o->offset) = (uint32_t)v;
		return 0;
	case K_MODE: {
		char *end;
		unsigned long m;

		errno = 0;
		m = strtoul(value, &end, 8);
		if (errno || *end || !*value || m > 0777) {
			fprintf(stderr, "tpm2-kms: %s: %s takes an octal mode such as 0660, not \"%s\"\n",
				where, o->name, value);
			return -EINVAL;
		}
		s->socket_mode = (mode_t)m;
		return 0;
	}
	case K_NV_INDEX:
		if (util_parse_u64(value, 0x01bfffff, &v) < 0 || v < 0x01800000) {
			fprintf(stderr,
				"tpm2-kms: %s: %s must be in the owner range 0x01800000-0x01BFFFFF, "
				"not \"%s\"\n",
				where, o->name, value);
			return -EINVAL;
		}
		s->nv_index = (uint32_t)v;
		return 0;
	case K_LOG_FORMAT:
		if (log_parse_format(value, &s->log_format) < 0) {
			fprintf(stderr, "tpm2-kms: %s: %s is text or json, not \"%s\"\n", where,
				o->name, value);
			return -EINVAL;
		}
		return 0;
	case K_LOG_LEVEL:
		if (log_parse_level(value, &s->log_level) < 0) {
			fprintf(stderr,
				"tpm2-kms: %s: %s is error, warning, info or debug, not \"%s\"\n",
				where, o->name, value);
			return -EINVAL;
		}
		return 0;
	case K_UID:
		if (util_parse_u64(value, UINT32_MAX - 1, &v) < 0) {
			fprintf(stderr, "tpm2-kms: %s: %s takes a numeric uid, not \"%s\"\n", where,
				o->name, value);
			return -EINVAL;
		}
		if (s->n_allow_uids >= SETTINGS_MAX_ALLOW_UIDS) {
			fprintf(stderr, "tpm2-kms: %s: at most %d %s settings\n", where,
				SETTINGS_MAX_ALLOW_UIDS, o->name);
			return -EINVAL;
		}
		s->allow_uids[s->n_allow_uids++] = (uid_t)v;
		return 0;
	case K_GENERATION:
		if (util_parse_u64(value, UINT32_MAX, &v) < 0 || v == 0) {
			fprintf(stderr, "tpm2-kms: %s: %s takes a generation number, not \"%s\"\n",
				where, o->name, value);
			return -EINVAL;
		}
		if (s->n_generations >= SETTINGS_MAX_GENERATIONS) {
			fprintf(stderr, "tpm2-kms: %s: at most %d %s settings\n", where,
				SETTINGS_MAX_GENERATIONS, o->name);
			return -EINVAL;
		}
		s->generations[s->n_generations++] = (uint32_t)v;
		return 0;
	case K_FLAG:
		if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0)
			*(bool *)(base + o->offset) = true;
		else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0)
			*(bool *)(base + o->offset) = false;
		else {
			fprintf(stderr, "tpm2-kms: %s: %s is yes or no, not \"%s\"\n", where,
				o->name, value);
			return -EINVAL;
		}
		return 0;
	}
	return -EINVAL;
}

static const struct option_def *find_option(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++)
		if (strcmp(options[i].name, name) == 0)
			return &options[i];
	return NULL;
}

/* "key value" lines; '#' starts a comment line. Settings for other
 * commands are allowed in the file (one file serves all commands) but
 * their values are still checked. */
static int load_file(struct settings *s, const bool *set_by_flag)
{
	FILE *f = fopen(s->config, "re");
	char line[8192], where[4200];
	size_t lineno = 0;
	int r = 0;

	if (!f) {
		if (errno == ENOENT && !s->config_given)
			return 0;
		fprintf(stderr, "tpm2-kms: cannot read configuration file %s: %s\n", s->config,
			strerror(errno));
		return -EINVAL;
	}
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *key, *value, *end;
		const struct option_def *o;
		struct settings scratch;

		lineno++;
		snprintf(where, sizeof(where), "%s:%zu", s->config, lineno);
		if (!strchr(line, '\n') && !feof(f)) {
			fprintf(stderr, "tpm2-kms: %s: line too long\n", where);
			r = -EINVAL;
			break;
		}
		line[strcspn(line, "\n")] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		key = p;
		p += strcspn(p, " \t");
		if (*p)
			*p++ = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		value = p;
		end = value + strlen(value);
		while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		o = find_option(key);
		if (!o || o->flag_only) {
			fprintf(stderr, "tpm2-kms: %s: unknown setting \"%s\"\n", where, key);
			r = -EINVAL;
			break;
		}
		if (!*value) {
			fprintf(stderr, "tpm2-kms: %s: %s needs a value\n", where, key);
			r = -EINVAL;
			break;
		}
		/* Flags win: check the value, keep the flag's. */
		if (set_by_flag[o - options] || !(o->commands & s->command)) {
			scratch = *s;
			r = apply(&scratch, o, value, where);
		} else {
			r = apply(s, o, value, where);
		}
		if (r < 0)
			break;
	}
	fclose(f);
	return r;
}

/* What no single option says wrong: values and options that only make
 * sense together, and what a command cannot go without. Prints why. */
static int check_combinations(const struct settings *s)
{
	if (s->command == CMD_ENCRYPTION_CONFIG &&
	    ((strcmp(s->phase, "1") != 0 && strcmp(s->phase, "2") != 0 && strcmp(s->phase, "off") != 0) ||
	     !*s->provider_name || strpbrk(s->provider_name, ": \t\"'\\#") != NULL)) {
		fprintf(stderr, "tpm2-kms: encryption-config: %s\n",
			!*s->provider_name || strpbrk(s->provider_name, ": \t\"'\\#")
				? "--name must be a plain name without ':' (kube-apiserver refuses one)"
				: "--phase is 1, 2 or off");
		return -EINVAL;
	}
	if (s->command == CMD_APPROVE && *s->response && !*s->ek_ca) {
		fprintf(stderr, "tpm2-kms: approve --response needs --ek-ca\n");
		return -EINVAL;
	}
	if ((s->command == CMD_AUDIT || s->command == CMD_DOCTOR) && *s->output &&
	    strcmp(s->output, "text") != 0 && strcmp(s->output, "json") != 0) {
		fprintf(stderr, "tpm2-kms: %s --output: \"%s\" is not text or json\n",
			settings_command_name(s->command), s->output);
		return -EINVAL;
	}
	if (s->command == CMD_AUDIT && (s->prefix[0] != '/' || (*s->cert != '\0') != (*s->key != '\0'))) {
		fprintf(stderr, "tpm2-kms: audit: %s\n",
			s->prefix[0] != '/' ? "--prefix must start with /"
					   : "--cert and --key go together");
		return -EINVAL;
	}
	if ((s->command == CMD_APPROVE && !*s->admin_key) ||
	    (s->command == CMD_AUDIT && !*s->endpoints && !*s->snapshot) ||
	    (s->command == CMD_EXPORT && (!*s->to || !*s->approval)) ||
	    (s->command == CMD_RECOVER && (!*s->to || !*s->recovery_key || !*s->admin_key)) ||
	    (s->command == CMD_PCR_SIGN && (!*s->key || !*s->pcrs)) ||
	    (s->command == CMD_PCR_READ && !*s->pcrs)) {
		fprintf(stderr, "tpm2-kms: %s needs %s (see tpm2-kms %s --help)\n",
			settings_command_name(s->command),
			s->command == CMD_APPROVE    ? "--admin-key"
			: s->command == CMD_EXPORT   ? "--to and --approval"
			: s->command == CMD_RECOVER  ? "--recovery-key, --admin-key and --to"
			: s->command == CMD_PCR_SIGN ? "--key and --pcrs"
			: s->command == CMD_AUDIT    ? "--endpoints (or --snapshot)"
						    : "--pcrs",
			settings_command_name(s->command));
		return -EINVAL;
	}
	return 0;
}

/* --help and --config, wherever they are: 1 when help was printed. */
static int first_pass(int argc, char **argv, bool config, struct settings *s)
{
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			command_usage(s->command, stdout);
			return 1;
		}
		if (strncmp(argv[i], "--config", 8) == 0 && config &&
		    (argv[i][8] == '\0' || argv[i][8] == '=')) {
			const char *path = argv[i][8] == '=' ? argv[i] + 9
					   : i + 1 < argc   ? argv[++i]
							    : "";

			if (!*path || strlen(path) >= sizeof(s->config)) {
				fprintf(stderr, "tpm2-kms: --config needs a path\n");
				return -EINVAL;
			}
			strcpy(s->config, path);
			s->config_given = true;
		}
	}
	return 0;
}

/* A positional argument a: a file (POS_PATH, POS_PATHS) or a generation
 * number (POS_GENERATION); more than the command takes is an error. */
static int take_positional(struct settings *s, enum positional pos, const char *a,
			   bool *have_positional)
{
	uint64_t g;

	if (pos == POS_NONE || (*have_positional && pos != POS_PATHS)) {
		fprintf(stderr, "tpm2-kms: %s: unexpected argument \"%s\"\n",
			settings_command_name(s->command), a);
		return -EINVAL;
	}
	*have_positional = true;
	if (pos != POS_GENERATION) {
		if (!*a || s->n_args >= SETTINGS_MAX_ARGS) {
			fprintf(stderr, "tpm2-kms: %s: empty file name, or more than %d\n",
				settings_command_name(s->command), SETTINGS_MAX_ARGS);
			return -EINVAL;
		}
		s->args[s->n_args++] = a;
		return 0;
	}
	if (util_parse_u64(a, UINT32_MAX, &g) < 0 || g == 0) {
		fprintf(stderr, "tpm2-kms: %s: GENERATION is a number, not \"%s\"\n",
			settings_command_name(s->command), a);
		return -EINVAL;
	}
	s->generation = (uint32_t)g;
	return 0;
}

/* The option argv[*i] (--name value, --name=value as manifests tend to
 * write it, or -o value); *i moves past its value. */
static int take_option(struct settings *s, int argc, char **argv, int *i, bool *set_by_flag)
{
	const char *a = argv[*i], *value = NULL, *eq;
	const struct option_def *o;
	char name[64];

	eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
	if (eq) {
		size_t n = (size_t)(eq - (a + 2));

		snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) ? n : 0), a + 2);
		value = eq + 1;
	}
	o = find_option(strcmp(a, "-o") == 0 ? "output" : eq ? name : a + 2);
	if (!o || !(o->commands & s->command)) {
		fprintf(stderr, "tpm2-kms: %s: unknown option %s (see tpm2-kms %s --help)\n",
			settings_command_name(s->command), a, settings_command_name(s->command));
		return -EINVAL;
	}
	set_by_flag[o - options] = true;
	if (o->kind == K_FLAG) {
		if (value) {
			fprintf(stderr, "tpm2-kms: --%s takes no value\n", o->name);
			return -EINVAL;
		}
		*(bool *)((char *)s + o->offset) = true;
		return 0;
	}
	if (!value && *i + 1 >= argc) {
		fprintf(stderr, "tpm2-kms: %s needs a value\n", a);
		return -EINVAL;
	}
	return apply(s, o, value ? value : argv[++*i], a);
}

int settings_parse(int argc, char **argv, struct settings *ret)
{
	struct settings s;
	bool set_by_flag[ARRAY_SIZE(options)] = {false};
	bool have_positional = false;
	size_t cmd = 0;
	int i, r;

	defaults(&s);
	if (argc < 2) {
		settings_usage(stderr);
		return -EINVAL;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		settings_usage(stdout);
		return 1;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("tpm2-kms %s\n", PACKAGE_VERSION);
		return 1;
	}
	for (size_t c = 0; c < ARRAY_SIZE(commands); c++) {
		if (strcmp(argv[1], commands[c].name) == 0) {
			s.command = commands[c].cmd;
			cmd = c;
		}
	}
	if (!s.command) {
		fprintf(stderr, "tpm2-kms: unknown command \"%s\" (see tpm2-kms --help)\n", argv[1]);
		return -EINVAL;
	}

	r = first_pass(argc, argv, !commands[cmd].no_config, &s);
	if (r != 0)
		return r;

	for (i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--config") == 0 && !commands[cmd].no_config) {
			i++;
			continue;
		}
		if (strncmp(a, "--config=", 9) == 0 && !commands[cmd].no_config)
			continue;
		if (strcmp(a, "--print-config") == 0 &&
		    (s.command & (CMD_SERVE | CMD_INIT | CMD_ROTATE))) {
			s.print_config = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0 && strcmp(a, "-o") != 0) {
			r = take_positional(&s, commands[cmd].pos, a, &have_positional);
			if (r < 0)
				return r;
			continue;
		}
		r = take_option(&s, argc, argv, &i, set_by_flag);
		if (r < 0)
			return r;
	}
	if (commands[cmd].pos != POS_NONE && !have_positional) {
		fprintf(stderr, "tpm2-kms: %s: which%s? (see tpm2-kms %s --help)\n",
			settings_command_name(s.command), commands[cmd].args,
			settings_command_name(s.command));
		return -EINVAL;
	}
	if (!commands[cmd].no_config) {
		r = load_file(&s, set_by_flag);
		if (r < 0 && s.command != CMD_DOCTOR)
			return r;
		s.config_bad = r < 0;
	}
	r = check_combinations(&s);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

void settings_print(const struct settings *s, FILE *out)
{
	fprintf(out, "# effective settings for tpm2-kms %s\n", settings_command_name(s->command));
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		const struct option_def *o = &options[i];
		const char *base = (const char *)s;

		if (!(o->commands & s->command) || o->flag_only)
			continue;
		switch (o->kind) {
		case K_STRING:
			if (*(base + o->offset))
				fprintf(out, "%s %s\n", o->name, base + o->offset);
			break;
		case K_U32:
			fprintf(out, "%s %u\n", o->name, *(const uint32_t *)(base + o->offset));
			break;
		case K_MODE:
			fprintf(out, "%s %04o\n", o->name, (unsigned)s->socket_mode);
			break;
		case K_NV_INDEX:
			if (s->nv_index)
				fprintf(out, "%s 0x%08x\n", o->name, (unsigned)s->nv_index);
			break;
		case K_LOG_FORMAT:
			fprintf(out, "%s %s\n", o->name,
				s->log_format == LOG_FORMAT_JSON ? "json" : "text");
			break;
		case K_LOG_LEVEL:
			fprintf(out, "%s %s\n", o->name,
				s->log_level == LOG_LEVEL_DEBUG     ? "debug"
				: s->log_level == LOG_LEVEL_WARNING ? "warning"
				: s->log_level == LOG_LEVEL_ERROR   ? "error"
								    : "info");
			break;
		case K_UID:
			for (size_t u = 0; u < s->n_allow_uids; u++)
				fprintf(out, "%s %u\n", o->name, (unsigned)s->allow_uids[u]);
			break;
		case K_FLAG:
			fprintf(out, "%s %s\n", o->name,
				*(const bool *)(base + o->offset) ? "yes" : "no");
			break;
		case K_GENERATION:
			for (size_t g = 0; g < s->n_generations; g++)
				fprintf(out, "%s %u\n", o->name, (unsigned)s->generations[g]);
			break;
		}
	}
}
