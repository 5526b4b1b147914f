#include "config.h"

#include "base/files.h"
#include "base/log.h"
#include "keys/approval.h"
#include "keys/bundle.h"
#include "keys/duplicate.h"
#include "keys/escrow.h"
#include "keys/kekpolicy.h"
#include "keys/nodefile.h"
#include "keys/provenance.h"
#include "keys/signer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int escrow_path(const char *dir, char out[PATH_MAX])
{
	if ((size_t)snprintf(out, PATH_MAX, "%s/" ESCROW_DIR, dir) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* A regular file in the escrow directory (not whatever else is named so). */
static bool exists_in(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	if ((size_t)snprintf(path, sizeof(path), "%s/" ESCROW_DIR "/%s", dir, name) >=
	    sizeof(path))
		return false;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool escrow_configured(const char *dir)
{
	return exists_in(dir, "node.pem") && exists_in(dir, "approval");
}

int escrow_examine(const char *dir, char *why, size_t size)
{
	char path[PATH_MAX];
	int r;

	r = escrow_path(dir, path);
	if (r < 0)
		return r;
	*why = '\0';
	if (access(path, R_OK | X_OK) == 0 || errno != EACCES)
		return 0;
	files_describe_access(path, why, size);
	return -EACCES;
}

bool escrow_has(const char *dir, uint32_t generation)
{
	char name[32];

	statedir_gen_file(generation, name);
	return exists_in(dir, name);
}

/* The recorded node and approval, checked against the admin key. */
static int load_config(const char *dir, const char *node_path, const char *approval_path,
		       const struct state *s, struct node *ret_node, struct approval *ret_approval,
		       crypto_key **ret_admin)
{
	crypto_key *admin = NULL;
	const char *why;
	int r;

	r = signer_state_admin(dir, &s->anchors, "escrow needs one (tpm2-kms init --admin-key)",
			       &admin);
	if (r < 0)
		return r;
	r = nodefile_load(node_path, ret_node);
	if (r == 0)
		r = approval_load(approval_path, ret_approval, NULL, NULL);
	if (r == 0) {
		r = approval_check(ret_approval, admin, &ret_node->name, &why);
		if (r < 0)
			log_error("escrow approval %s does not allow escrow to %s: %s", approval_path,
				  node_path, why);
	}
	if (r < 0) {
		crypto_key_free(admin);
		return r;
	}
	*ret_admin = admin;
	return 0;
}

int escrow_configure(const char *dir, const struct state *s, const char *node_path,
		     const char *approval_path)
{
	char edir[PATH_MAX], *node_text = NULL, *approval_text = NULL;
	size_t node_len, approval_len;
	struct approval a;
	struct node n;
	crypto_key *admin = NULL;
	int r;

	r = load_config(dir, node_path, approval_path, s, &n, &a, &admin);
	if (r < 0)
		return r;
	crypto_key_free(admin);
	r = escrow_path(dir, edir);
	if (r < 0)
		return r;
	r = statedir_mkdir(dir, ESCROW_DIR);
	if (r < 0)
		return r;
	r = files_read_input("node file", node_path, NODEFILE_MAX_BYTES, &node_text, &node_len);
	if (r == 0)
		r = files_read_input("approval", approval_path, APPROVAL_MAX_BYTES,
				     &approval_text, &approval_len);
	/* The approval names the node: write the node file last, so a
	 * configuration is complete only when both are there. */
	if (r == 0)
		r = statedir_write(edir, "approval", approval_text, approval_len);
	if (r == 0)
		r = statedir_write(edir, "node.pem", node_text, node_len);
	free(node_text);
	free(approval_text);
	return r;
}

int escrow_generation(tpm *t, const char *dir, const struct state *s,
		      const struct state_generation *g, const struct tpm_sealed *sealed,
		      const uint8_t kek[TPM_KEK_BYTES])
{
	char edir[PATH_MAX], node_path[PATH_MAX + 16], approval_path[PATH_MAX + 16], name[32];
	struct bundle_generation bg;
	struct bundle b = {.gens = &bg, .n_gens = 1};
	const uint8_t *keks[1] = {kek};
	struct tpm_approval ta;
	struct approval a;
	struct node n;
	crypto_key *admin = NULL;
	char *text = NULL;
	size_t len;
	int r;

	r = escrow_path(dir, edir);
	if (r == 0)
		r = statedir_mkdir(dir, ESCROW_DIR); /* also gives an older one to its owner */
	if (r < 0)
		return r;
	snprintf(node_path, sizeof(node_path), "%s/node.pem", edir);
	snprintf(approval_path, sizeof(approval_path), "%s/approval", edir);
	r = load_config(dir, node_path, approval_path, s, &n, &a, &admin);
	if (r < 0)
		return r;
	r = approval_to_tpm(&a, admin, &ta);
	/* Recovery takes only what an approved node certified: an
	 * uncertified one is escrowed all the same, and recover says so. */
	if (r == 0)
		r = duplicate_generation(t, dir, &s->anchors, g, sealed, n.pub, n.pub_len, &ta,
					 "the recovery node", &bg);
	if (r < 0)
		goto out;
	b.node = n.name;
	b.anchors = s->anchors;
	r = bundle_encode(&b, keks, &text, &len);
	if (r < 0)
		goto out;
	statedir_gen_file(g->number, name);
	r = statedir_write(edir, name, text, len);
	if (r == 0)
		log_info("generation %u escrowed to the recovery node (%s/%s)", (unsigned)g->number,
			 edir, name);
out:
	free(text);
	crypto_key_free(admin);
	return r;
}
