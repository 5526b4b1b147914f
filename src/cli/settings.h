/* Command line and configuration file: one table of settings, each settable
 * as --name VALUE on the command line or as "name value" in the config file
 * (flags win). Strict: unknown names, bad values and settings that do not
 * apply to the subcommand are errors, with line numbers for the file.
 * Must not: act on a setting (callers do). */
#ifndef TPM2KMS_SETTINGS_H
#define TPM2KMS_SETTINGS_H

#include "base/log.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define SETTINGS_DEFAULT_CONFIG "/etc/tpm2-kms/tpm2-kms.conf"
#define SETTINGS_MAX_ALLOW_UIDS 16

enum command {
	CMD_SERVE = 1 << 0,
	CMD_INIT = 1 << 1,
	CMD_ROTATE = 1 << 2,
	CMD_KEYS = 1 << 3,
	CMD_RETIRE = 1 << 4,
	CMD_STATUS = 1 << 5,
	CMD_NODE_KEY = 1 << 6,
	CMD_APPROVE = 1 << 7,
	CMD_EXPORT = 1 << 8,
	CMD_IMPORT = 1 << 9,
	CMD_PROMOTE = 1 << 10,
	CMD_RECOVER = 1 << 11,
	CMD_PCR_READ = 1 << 12,
	CMD_PCR_SIGN = 1 << 13,
	CMD_CERTIFY = 1 << 14,
	CMD_PCR_REVOKE = 1 << 15,
	CMD_AUDIT = 1 << 16,
	CMD_ENCRYPTION_CONFIG = 1 << 17,
	CMD_DOCTOR = 1 << 18,
};

#define SETTINGS_MAX_GENERATIONS 64
#define SETTINGS_MAX_ARGS 4096

struct settings {
	enum command command;
	char config[4096];
	bool config_given;
	char listen[256];
	char tcti[512];
	char state_dir[4096];
	uint32_t nv_index; /* 0: default / the state's */
	mode_t socket_mode;
	char socket_group[64];
	char metrics_listen[256];
	enum log_format log_format;
	enum log_level log_level;
	uint32_t max_connections;
	uint32_t max_streams;
	uint32_t max_inflight;
	uint32_t idle_timeout_s;
	uint32_t probe_interval_ms;
	uint32_t tpm_command_timeout_ms;
	uint32_t timeout_ms; /* status */
	uid_t allow_uids[SETTINGS_MAX_ALLOW_UIDS];
	size_t n_allow_uids;
	bool force;
	bool stage;
	bool legacy;      /* pcr-sign: for 0.2.0 generations */
	uint32_t epoch;   /* pcr-sign, pcr-revoke */
	bool print_config;
	char admin_key[4096];
	char output[4096];     /* -o: "" for standard output; audit: text or json */
	char to[4096];         /* export: the node file */
	char approval[4096];   /* export */
	uint32_t generations[SETTINGS_MAX_GENERATIONS]; /* export; none: every dup one */
	size_t n_generations;
	uint32_t generation; /* retire, promote */
	uint32_t write_generation; /* recover; 0: the highest */
	char recovery_key[4096];
	char pcr_key[4096];     /* serve, init: the PCR signer's public key */
	char pcrs[2048];        /* "7,11"; pcr-sign: "7=<hex>,11=<hex>" */
	char pcr_literal[128];  /* "7": literal PCRs */
	char passphrase_file[4096];
	char pcr_signatures[4096];
	char key[4096];       /* pcr-sign: the PCR signer's private key; audit: etcd's client key */
	char endpoints[4096]; /* audit: etcd URLs */
	char cacert[4096], cert[4096];
	char prefix[256];    /* audit: the etcd prefix, /registry */
	char snapshot[4096]; /* audit: an etcd snapshot file */
	char provider_name[64]; /* encryption-config --name */
	char phase[8];          /* encryption-config: 1, 2 or off */
	char encryption_config[4096]; /* doctor: kube-apiserver's EncryptionConfiguration */
	/* doctor: the configuration file did not parse (said on stderr); the
	 * defaults and flags stand in, and doctor reports it. */
	bool config_bad;
	char escrow_to[4096];
	char escrow_approval[4096];
	char owner_auth_file[4096]; /* serve, init: the owner password, to provision */
	char public_key[4096]; /* node-key --public */
	char answer[4096];     /* node-key --answer: a challenge */
	char ek_ca[4096];      /* approve: the TPM manufacturers' roots */
	char response[4096];   /* approve: the node's answer */
	/* approve NODE, import BUNDLE, recover BUNDLE...: pointers into argv */
	const char *args[SETTINGS_MAX_ARGS];
	size_t n_args;
};

/* Returns 0 to go on, 1 when --help or --version was printed (exit 0), or
 * -EINVAL after printing a one-line error (exit 2). */
int settings_parse(int argc, char **argv, struct settings *ret);

void settings_print(const struct settings *s, FILE *out);
void settings_usage(FILE *out);
const char *settings_command_name(enum command c);

#endif
