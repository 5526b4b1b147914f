#include "config.h"

#include "base/crypto.h"
#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/approval.h"
#include "keys/nodefile.h"
#include "keys/provenance.h"
#include "keys/sealfile.h"
#include "tpm/tpmobj.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CERT_FILE_MAX (PROVENANCE_LINE_MAX + 256)

size_t provenance_message(uint32_t number, enum tpm_kek_kind kind, uint64_t created,
			  const char *key_id, const struct tpm_name *object,
			  uint8_t out[PROVENANCE_MESSAGE_MAX])
{
	static const char tag[] = "tpm2-kms generation v1\n";
	const char *kind_name = state_kind_name(kind);
	size_t n = 0, k;

	memcpy(out, tag, sizeof(tag) - 1);
	n += sizeof(tag) - 1;
	util_put_be32(out + n, number);
	n += 4;
	k = strlen(kind_name);
	memcpy(out + n, kind_name, k);
	out[n + k] = '\n';
	n += k + 1;
	util_put_be64(out + n, created);
	n += 8;
	k = strnlen(key_id, 63);
	memcpy(out + n, key_id, k);
	out[n + k] = '\n';
	n += k + 1;
	util_put_be16(out + n, (uint16_t)object->len);
	memcpy(out + n + 2, object->bytes, object->len);
	return n + 2 + object->len;
}

int provenance_check(const struct provenance *p, crypto_key *admin, uint32_t number,
		     enum tpm_kek_kind kind, uint64_t created, const char *key_id,
		     const uint8_t *obj_pub, size_t obj_pub_len, const char **ret_why)
{
	uint8_t msg[PROVENANCE_MESSAGE_MAX];
	struct tpm_name sign_name, object;
	crypto_key *creator = NULL;
	int r = -EKEYREJECTED;

	if (tpmobj_signkey_check(p->signing_pub, p->signing_pub_len, ret_why) < 0 ||
	    tpmobj_name(p->signing_pub, p->signing_pub_len, &sign_name) < 0 ||
	    tpmobj_signkey_public(p->signing_pub, p->signing_pub_len, &creator) < 0) {
		*ret_why = "its creator's signing key is not a node signing key";
		goto out;
	}
	/* The admin approved the creator: its storage and signing keys. */
	if (approval_statement_verify(admin, &p->storage, &sign_name, p->statement,
				      p->statement_len) < 0) {
		*ret_why = "the node that made it is not one the admin key approved";
		goto out;
	}
	if (p->attestation_len &&
	    approval_attestation_verify(admin, &p->storage, &sign_name, p->attested_root,
					p->attestation, p->attestation_len) < 0) {
		*ret_why = "its creator's attestation record is not signed by the admin key";
		goto out;
	}
	if (tpmobj_name(obj_pub, obj_pub_len, &object) < 0) {
		*ret_why = "its sealed object's public area is not canonical";
		goto out;
	}
	if (signer_verify(creator, msg,
			  provenance_message(number, kind, created, key_id, &object, msg), p->sig,
			  p->sig_len) < 0) {
		*ret_why = "its certificate is not the creating node's signature of this "
			   "generation (number, kind, time, key_id, sealed object)";
		goto out;
	}
	r = 0;
out:
	crypto_key_free(creator);
	return r;
}

void provenance_describe(const struct provenance *p, char out[PROVENANCE_DESCRIPTION_MAX])
{
	char fp[NODE_FINGERPRINT_MAX];

	node_fingerprint(&p->storage, fp);
	if (p->attestation_len)
		snprintf(out, PROVENANCE_DESCRIPTION_MAX,
			 "node %s, attested (its EK certificate chains to %s)", fp,
			 p->attested_root);
	else
		snprintf(out, PROVENANCE_DESCRIPTION_MAX, "node %s, not attested", fp);
}

int provenance_format(uint32_t number, const struct provenance *p, char **ret)
{
	size_t cap = PROVENANCE_LINE_MAX;
	char *out = malloc(cap), *w;

	if (!out)
		return -ENOMEM;
	w = out + snprintf(out, cap, "%u ", (unsigned)number);
	util_hex(p->signing_pub, p->signing_pub_len, w);
	w += 2 * p->signing_pub_len;
	*w++ = ' ';
	util_hex(p->storage.bytes, p->storage.len, w);
	w += 2 * p->storage.len;
	*w++ = ' ';
	util_hex(p->statement, p->statement_len, w);
	w += 2 * p->statement_len;
	*w++ = ' ';
	util_hex(p->sig, p->sig_len, w);
	w += 2 * p->sig_len;
	if (p->attestation_len) {
		*w++ = ' ';
		util_hex((const uint8_t *)p->attested_root, strlen(p->attested_root), w);
		w += 2 * strlen(p->attested_root);
		*w++ = ' ';
		util_hex(p->attestation, p->attestation_len, w);
	}
	*ret = out;
	return 0;
}

/* One space-separated hex field into out (at most max bytes); advances. */
static int hex_field(const char **text, uint8_t *out, size_t max, size_t *ret_len)
{
	const char *end = strchr(*text, ' ');
	size_t n = end ? (size_t)(end - *text) : strlen(*text);
	char buf[2 * TPM_BLOB_MAX + 1];

	if (n == 0 || n % 2 || n / 2 > max || n >= sizeof(buf))
		return -EBADMSG;
	memcpy(buf, *text, n);
	buf[n] = '\0';
	if (util_unhex(buf, out, n / 2) < 0)
		return -EBADMSG;
	*ret_len = n / 2;
	*text += n + (end ? 1 : 0);
	return end ? 1 : 0; /* 1: more fields follow */
}

int provenance_parse(const char *text, uint32_t *ret_number, struct provenance *ret)
{
	struct provenance p = {0};
	uint64_t number;
	const char *sp = strchr(text, ' ');
	char num[16];
	int more;

	if (!sp || sp == text || (size_t)(sp - text) >= sizeof(num))
		return -EBADMSG;
	memcpy(num, text, (size_t)(sp - text));
	num[sp - text] = '\0';
	if (util_parse_u64(num, UINT32_MAX, &number) < 0 || number == 0)
		return -EBADMSG;
	text = sp + 1;
	if (hex_field(&text, p.signing_pub, sizeof(p.signing_pub), &p.signing_pub_len) != 1 ||
	    hex_field(&text, p.storage.bytes, sizeof(p.storage.bytes), &p.storage.len) != 1 ||
	    hex_field(&text, p.statement, sizeof(p.statement), &p.statement_len) != 1)
		return -EBADMSG;
	more = hex_field(&text, p.sig, sizeof(p.sig), &p.sig_len);
	if (more == 1) {
		size_t n = 0;

		if (hex_field(&text, (uint8_t *)p.attested_root, sizeof(p.attested_root) - 1, &n) !=
			    1 ||
		    memchr(p.attested_root, '\0', n) ||
		    hex_field(&text, p.attestation, sizeof(p.attestation), &p.attestation_len) != 0)
			return -EBADMSG;
	} else if (more < 0) {
		return -EBADMSG;
	}
	*ret_number = (uint32_t)number;
	*ret = p;
	return 0;
}

void provenance_file(uint32_t number, char out[32])
{
	snprintf(out, 32, "gen-%06u.cert", (unsigned)number);
}

int provenance_load(const char *dir, uint32_t number, struct provenance *ret)
{
	static const char key[] = "certificate ";
	char file[32], *text = NULL, *line, *save = NULL;
	struct provenance p;
	uint32_t n = 0;
	size_t len;
	int r;

	provenance_file(number, file);
	r = statedir_read(dir, file, CERT_FILE_MAX, &text, &len);
	if (r < 0)
		return r;
	r = -EBADMSG;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (*line == '#')
			continue;
		if (r == 0 || strncmp(line, key, sizeof(key) - 1) != 0 ||
		    provenance_parse(line + sizeof(key) - 1, &n, &p) < 0 || n != number) {
			r = -EBADMSG;
			break;
		}
		r = 0;
	}
	free(text);
	if (r < 0) {
		log_error("%s/%s: damaged", dir, file);
		return r;
	}
	*ret = p;
	return 0;
}

int provenance_save(const char *dir, uint32_t number, const struct provenance *p)
{
	char file[32], *line = NULL, *text = NULL;
	int r, n;

	r = provenance_format(number, p, &line);
	if (r < 0)
		return r;
	n = asprintf(&text,
		     "# tpm2-kms generation certificate: the admin-approved node that created "
		     "generation %u signed it\ncertificate %s\n",
		     (unsigned)number, line);
	free(line);
	if (n < 0)
		return -ENOMEM;
	provenance_file(number, file);
	r = statedir_write(dir, file, text, (size_t)n);
	free(text);
	return r;
}

int provenance_signkey(tpm *t, const char *dir, bool create, struct tpm_sealed *ret)
{
	char *pem = NULL;
	size_t len;
	int r;

	r = statedir_read(dir, PROVENANCE_SIGNKEY_FILE, SEALFILE_MAX_BYTES, &pem, &len);
	if (r == 0) {
		r = sealfile_decode_loadable(pem, len, ret);
		if (r < 0)
			log_error("%s/%s: damaged", dir, PROVENANCE_SIGNKEY_FILE);
		free(pem);
		return r;
	}
	if (r != -ENOENT || !create)
		return r;
	r = tpm_signkey_create(t, ret);
	if (r < 0) {
		log_error("cannot create this node's signing key in the TPM");
		return r;
	}
	r = sealfile_encode_loadable(ret, &pem, &len);
	if (r == 0)
		r = statedir_write(dir, PROVENANCE_SIGNKEY_FILE, pem, len);
	free(pem);
	if (r == 0)
		log_info("created this node's signing key (%s/%s)", dir, PROVENANCE_SIGNKEY_FILE);
	return r;
}

/* The node's own approval, checked against the state's admin key, this
 * node's SRK and the given signing key. */
static int check_own_approval(const struct approval *a, const struct state *s,
			      const struct tpm_sealed *key, const char **ret_why)
{
	struct tpm_name sign_name;
	crypto_key *admin = NULL;
	int r;

	if (!s->anchors.admin_key_len) {
		*ret_why = "the state records no admin key (tpm2-kms init --admin-key)";
		return -EPERM;
	}
	if (signer_from_der(s->anchors.admin_key, s->anchors.admin_key_len, &admin) < 0) {
		*ret_why = "the state's admin key is not usable";
		return -EINVAL;
	}
	r = approval_check(a, admin, &s->srk_name, ret_why);
	if (r == 0)
		r = approval_check_statement(a, admin, ret_why);
	if (r == 0 && (tpmobj_name(key->pub, key->pub_len, &sign_name) < 0 ||
		       !tpm_name_equal(&sign_name, &a->sign_name))) {
		*ret_why = "it approves another signing key than this node's";
		r = -EACCES;
	}
	crypto_key_free(admin);
	return r;
}

int provenance_certifier(const char *dir, const struct state *s, struct certifier *ret)
{
	struct certifier c = {0};
	struct approval a;
	const char *why;
	char *text = NULL;
	size_t len;
	int r;

	r = statedir_read(dir, PROVENANCE_APPROVAL_FILE, APPROVAL_MAX_BYTES, &text, &len);
	if (r < 0)
		return r;
	r = approval_parse(text, len, &a, &why);
	free(text);
	if (r == 0)
		r = provenance_signkey(NULL, dir, false, &c.key);
	if (r == 0)
		r = check_own_approval(&a, s, &c.key, &why);
	if (r < 0) {
		log_error("%s/%s: %s", dir, PROVENANCE_APPROVAL_FILE,
			  r == -ENOENT ? "the node's signing key is missing" : why);
		util_wipe(&c, sizeof(c));
		return r == -ENOENT ? -EBADMSG : r;
	}
	memcpy(c.self.signing_pub, c.key.pub, c.key.pub_len);
	c.self.signing_pub_len = c.key.pub_len;
	c.self.storage = s->srk_name;
	memcpy(c.self.statement, a.statement, a.statement_len);
	c.self.statement_len = a.statement_len;
	if (a.attestation_len) {
		strcpy(c.attested_root, a.attested_root);
		strcpy(c.self.attested_root, a.attested_root);
		memcpy(c.self.attestation, a.attestation, a.attestation_len);
		c.self.attestation_len = a.attestation_len;
	}
	*ret = c;
	return 0;
}

int provenance_record_approval(tpm *t, const char *dir, const struct state *s,
			       const char *approval_path)
{
	struct tpm_sealed key;
	struct approval a;
	const char *why = "this node's signing key file is damaged";
	char *text = NULL;
	size_t len;
	int r;

	r = approval_load(approval_path, &a, &text, &len);
	if (r < 0)
		return r;
	r = provenance_signkey(t, dir, false, &key);
	if (r == -ENOENT)
		why = "this node has no signing key yet: run tpm2-kms node-key, and have the admin "
		      "approve the node file it writes";
	else if (r == 0)
		r = check_own_approval(&a, s, &key, &why);
	if (r < 0) {
		log_error("approval %s cannot be this node's: %s", approval_path, why);
		free(text);
		return r;
	}
	r = statedir_write(dir, PROVENANCE_APPROVAL_FILE, text, len);
	free(text);
	return r;
}

int provenance_certify(tpm *t, const struct certifier *c, const struct state_generation *g,
		       const struct tpm_sealed *sealed, struct provenance *ret)
{
	uint8_t msg[PROVENANCE_MESSAGE_MAX], digest[CRYPTO_SHA256_BYTES];
	struct provenance p = c->self;
	struct tpm_name object;
	int r;

	r = tpmobj_name(sealed->pub, sealed->pub_len, &object);
	if (r < 0)
		return r;
	crypto_sha256(msg, provenance_message(g->number, g->kind, g->created, g->key_id, &object, msg),
	       digest);
	r = tpm_signkey_sign(t, &c->key, digest, p.sig, &p.sig_len);
	if (r < 0) {
		log_error("generation %u: the TPM could not certify it with this node's signing "
			  "key",
			  (unsigned)g->number);
		return r;
	}
	*ret = p;
	return 0;
}

int provenance_approved_signing_key(const char *dir, const struct state *s, struct tpm_name *ret,
				    char ret_root[APPROVAL_ROOT_MAX])
{
	struct certifier *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	r = provenance_certifier(dir, s, c);
	if (r == 0)
		r = tpmobj_name(c->key.pub, c->key.pub_len, ret);
	if (r == 0)
		strcpy(ret_root, c->attested_root);
	util_freezero(c, sizeof(*c));
	return r;
}
