#include "config.h"

#include "base/crypto.h"
#include "base/files.h"
#include "base/log.h"
#include "base/util.h"
#include "keys/bundle.h"
#include "keys/provenance.h"
#include "keys/sealfile.h"
#include "keys/signer.h"
#include "tpm/dupcodec.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUNDLE_FORMAT 1
#define MAC_LABEL     "tpm2-kms bundle v1\n"
#define PEM_BEGIN     "-----BEGIN TSS2 PRIVATE KEY-----"
#define PEM_END       "-----END TSS2 PRIVATE KEY-----"

static int mac(const uint8_t kek[TPM_KEK_BYTES], const char *body, size_t len,
	       uint8_t out[BUNDLE_MAC_BYTES])
{
	return dupcodec_hmac_sha256(kek, TPM_KEK_BYTES, (const uint8_t *)MAC_LABEL,
				   strlen(MAC_LABEL), (const uint8_t *)body, len, out);
}

/* Appends to a growing buffer. */
struct text {
	char *buf;
	size_t len, cap;
};

static int append(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = (t->len + n + 1) * 2;
		char *buf = realloc(t->buf, cap);

		if (!buf)
			return -ENOMEM;
		t->buf = buf;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	t->buf[t->len] = '\0';
	return 0;
}

static int appendf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int appendf(struct text *t, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -EOVERFLOW;
	return append(t, line, (size_t)n);
}

static int append_hex(struct text *t, const uint8_t *p, size_t n)
{
	char *hex = malloc(2 * n + 1);
	int r;

	if (!hex)
		return -ENOMEM;
	util_hex(p, n, hex);
	r = append(t, hex, 2 * n);
	free(hex);
	return r;
}

/* The PCR signer's lines: its key and selection, and the literal PCRs. */
static int encode_pcr_lines(struct text *t, const struct anchors *a)
{
	char pcrs[100], lit[POLICY_PCR_MAX * 80];
	int r;

	policy_pcrs_format(&a->pcrs, pcrs, sizeof(pcrs));
	r = appendf(t, "pcr-key ");
	if (r == 0)
		r = append_hex(t, a->pcr_key, a->pcr_key_len);
	if (r == 0)
		r = appendf(t, "\npcrs %s\n", pcrs);
	if (r < 0 || !a->literal.n)
		return r;
	policy_pcr_values_format(&a->literal, (const uint8_t(*)[POLICY_DIGEST_BYTES])a->literal_values,
				 lit, sizeof(lit));
	r = append(t, "pcr-literal ", 12);
	if (r == 0)
		r = append(t, lit, strlen(lit));
	return r == 0 ? append(t, "\n", 1) : r;
}

/* A generation: who made it (a comment), its line, its key, its
 * certificate. */
static int encode_generation(struct text *t, const struct bundle_generation *g)
{
	char who[PROVENANCE_DESCRIPTION_MAX], *pem = NULL, *line = NULL;
	size_t pem_len;
	int r = 0;

	if (g->certified) {
		provenance_describe(&g->cert, who);
		r = appendf(t, "# generation %u was made by %s\n", (unsigned)g->number, who);
	}
	if (r == 0)
		r = appendf(t, "generation %u created %llu key-id %s policy %s%s\n",
			    (unsigned)g->number, (unsigned long long)g->created, g->key_id,
			    state_kind_name(g->kind), g->write ? " write" : "");
	if (r == 0)
		r = sealfile_encode_importable(&g->dup, &pem, &pem_len);
	if (r == 0)
		r = append(t, pem, pem_len);
	if (r == 0 && g->certified)
		r = provenance_format(g->number, &g->cert, &line);
	/* Appended piecewise: a certificate line is longer than appendf's
	 * buffer. */
	if (r == 0 && g->certified)
		r = append(t, "certificate ", 12);
	if (r == 0 && g->certified)
		r = append(t, line, strlen(line));
	if (r == 0 && g->certified)
		r = append(t, "\n", 1);
	free(pem);
	free(line);
	return r;
}

int bundle_encode(const struct bundle *b, const uint8_t *const *keks, char **ret, size_t *ret_len)
{
	struct text t = {0};
	char node[2 * TPM_NAME_MAX + 1];
	size_t body_len;
	int r;

	util_hex(b->node.bytes, b->node.len, node);
	r = appendf(&t,
		    "# tpm2-kms bundle: key generations duplicated to one node; take them with "
		    "tpm2-kms import\nformat %d\nnode %s\nadmin-key ",
		    BUNDLE_FORMAT, node);
	if (r == 0)
		r = append_hex(&t, b->anchors.admin_key, b->anchors.admin_key_len);
	if (r == 0)
		r = append(&t, "\n", 1);
	if (r == 0 && b->anchors.pcr_key_len)
		r = encode_pcr_lines(&t, &b->anchors);
	for (size_t i = 0; r == 0 && i < b->n_gens; i++)
		r = encode_generation(&t, &b->gens[i]);
	body_len = t.len;
	for (size_t i = 0; r == 0 && i < b->n_gens; i++) {
		uint8_t m[BUNDLE_MAC_BYTES];

		r = mac(keks[i], t.buf, body_len, m);
		if (r == 0)
			r = appendf(&t, "mac %u ", (unsigned)b->gens[i].number);
		if (r == 0)
			r = append_hex(&t, m, sizeof(m));
		if (r == 0)
			r = append(&t, "\n", 1);
	}
	if (r < 0) {
		free(t.buf);
		return r;
	}
	*ret = t.buf;
	*ret_len = t.len;
	return 0;
}

void bundle_free(struct bundle *b)
{
	if (b->gens)
		util_freezero(b->gens, b->n_gens * sizeof(*b->gens));
	b->gens = NULL;
	b->n_gens = 0;
}

/* The next line: [*p, end of line), advancing *p past its newline. Every
 * line must end with one. */
static int next_line(const char **p, const char *end, const char **ret, size_t *ret_len)
{
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));

	if (!nl)
		return -EBADMSG;
	*ret = *p;
	*ret_len = (size_t)(nl - *p);
	*p = nl + 1;
	return 0;
}

static int parse_generation_line(char *line, struct bundle_generation *g)
{
	char *f[10], *save = NULL, *tok;
	size_t n = 0;
	uint64_t v;
	char prefix[32];
	int pl;

	for (tok = strtok_r(line, " ", &save); tok && n < 10; tok = strtok_r(NULL, " ", &save))
		f[n++] = tok;
	if ((n != 8 && n != 9) || strcmp(f[0], "generation") != 0 ||
	    strcmp(f[2], "created") != 0 || strcmp(f[4], "key-id") != 0 ||
	    strcmp(f[6], "policy") != 0 || (n == 9 && strcmp(f[8], "write") != 0))
		return -EBADMSG;
	if (util_parse_u64(f[1], UINT32_MAX, &v) < 0 || v == 0)
		return -EBADMSG;
	g->number = (uint32_t)v;
	if (util_parse_u64(f[3], UINT64_MAX, &g->created) < 0)
		return -EBADMSG;
	pl = snprintf(prefix, sizeof(prefix), "tpm2-kms-g%u-", (unsigned)g->number);
	if (strncmp(f[5], prefix, (size_t)pl) != 0 || strlen(f[5]) != (size_t)pl + 32)
		return -EBADMSG;
	for (const char *c = f[5] + pl; *c; c++)
		if (util_hex_digit(*c) < 0 || (*c >= 'A' && *c <= 'F'))
			return -EBADMSG;
	strcpy(g->key_id, f[5]);
	if (state_kind_parse(f[7], &g->kind) < 0)
		return -EBADMSG;
	g->write = n == 9;
	return 0;
}

/* Where bundle_parse is in the text: the current line and its number. */
struct cursor {
	const char *p, *end, *line;
	size_t len, lineno;
};

static int cursor_next(struct cursor *c)
{
	if (next_line(&c->p, c->end, &c->line, &c->len) < 0)
		return -EBADMSG;
	c->lineno++;
	return 0;
}

/* The current line's text after prefix, as a string in buf (size bytes):
 * -EBADMSG unless the line starts with prefix and fits. */
static int cursor_value(const struct cursor *c, const char *prefix, char *buf, size_t size)
{
	size_t n = strlen(prefix);

	if (c->len < n || c->len - n >= size || memcmp(c->line, prefix, n) != 0)
		return -EBADMSG;
	memcpy(buf, c->line + n, c->len - n);
	buf[c->len - n] = '\0';
	return 0;
}

/* Comment lines, "format 1", "node", "admin-key". -EINVAL: logged. */
static int parse_header(struct cursor *c, const char *name, struct bundle *b, char *buf,
			size_t size)
{
	do {
		if (cursor_next(c) < 0)
			return -EBADMSG;
	} while (c->len && c->line[0] == '#');
	if (c->len != 8 || memcmp(c->line, "format 1", 8) != 0) {
		log_error("%s:%zu: not a bundle of format %d", name, c->lineno, BUNDLE_FORMAT);
		return -EINVAL;
	}
	if (cursor_next(c) < 0 || cursor_value(c, "node ", buf, size) < 0)
		return -EBADMSG;
	b->node.len = strlen(buf) / 2;
	if (b->node.len < 3 || b->node.len > sizeof(b->node.bytes) ||
	    util_unhex(buf, b->node.bytes, b->node.len) < 0)
		return -EBADMSG;
	if (cursor_next(c) < 0 || cursor_value(c, "admin-key ", buf, size) < 0 ||
	    signer_parse_hex(buf, b->anchors.admin_key, sizeof(b->anchors.admin_key),
			     &b->anchors.admin_key_len) < 0)
		return -EBADMSG;
	return 0;
}

/* The PCR signer's lines, before the first generation: "pcr-key" then
 * "pcrs", and "pcr-literal". 1 when the line was one of them. */
static int parse_pcr_lines(struct cursor *c, struct bundle *b, char *buf, size_t size)
{
	if (b->n_gens)
		return 0;
	if (!b->anchors.pcr_key_len && cursor_value(c, "pcr-key ", buf, size) == 0) {
		if (!*buf ||
		    signer_parse_hex(buf, b->anchors.pcr_key, sizeof(b->anchors.pcr_key),
				     &b->anchors.pcr_key_len) < 0 ||
		    cursor_next(c) < 0 || cursor_value(c, "pcrs ", buf, size) < 0 ||
		    policy_pcrs_parse(buf, &b->anchors.pcrs) < 0)
			return -EBADMSG;
		return 1;
	}
	if (b->anchors.pcr_key_len && !b->anchors.literal.n &&
	    cursor_value(c, "pcr-literal ", buf, size) == 0) {
		if (!*buf ||
		    policy_pcr_values_parse(buf, &b->anchors.literal, b->anchors.literal_values) < 0)
			return -EBADMSG;
		return 1;
	}
	return 0;
}

/* A generation's line (in buf) and the PEM block of its key after it.
 * -EINVAL: logged. */
static int parse_generation(struct cursor *c, const char *name, struct bundle *b, char *buf)
{
	struct bundle_generation *gens, g = {0};
	const char *pem_start;

	if (parse_generation_line(buf, &g) < 0)
		return -EBADMSG;
	if (b->n_gens && g.number <= b->gens[b->n_gens - 1].number) {
		log_error("%s:%zu: generations must be listed once each, in ascending order", name,
			  c->lineno);
		return -EINVAL;
	}
	pem_start = c->p;
	if (cursor_next(c) < 0 || c->len != strlen(PEM_BEGIN) ||
	    memcmp(c->line, PEM_BEGIN, c->len) != 0)
		return -EBADMSG;
	do {
		if (cursor_next(c) < 0)
			return -EBADMSG;
	} while (c->len != strlen(PEM_END) || memcmp(c->line, PEM_END, c->len) != 0);
	if (sealfile_decode_importable(pem_start, (size_t)(c->p - pem_start), &g.dup) < 0) {
		log_error("%s:%zu: generation %u's key is not a valid importable TSS2 key", name,
			  c->lineno, (unsigned)g.number);
		return -EINVAL;
	}
	if (b->n_gens >= STATE_MAX_GENERATIONS)
		return -EBADMSG;
	gens = realloc(b->gens, (b->n_gens + 1) * sizeof(*gens));
	if (!gens)
		return -ENOMEM;
	b->gens = gens;
	b->gens[b->n_gens++] = g;
	return 0;
}

/* Generations, each a line and a PEM block (its certificate after it),
 * until the first mac line, which is current on return; the PCR signer's
 * lines may come first, comments anywhere. -EINVAL: logged. */
static int parse_generations(struct cursor *c, const char *name, struct bundle *b, char *buf,
			     size_t size)
{
	size_t n_write = 0;
	int r;

	for (;;) {
		if (cursor_next(c) < 0 || c->len >= size)
			return -EBADMSG;
		/* Who made the next generation, for people; the certificate is
		 * what counts. */
		if (c->len && c->line[0] == '#')
			continue;
		r = parse_pcr_lines(c, b, buf, size);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		if (c->len > 4 && memcmp(c->line, "mac ", 4) == 0)
			break;
		if (cursor_value(c, "certificate ", buf, size) == 0) {
			struct bundle_generation *last = b->n_gens ? &b->gens[b->n_gens - 1] : NULL;
			uint32_t number;

			/* Right after its generation's key, once. */
			if (!*buf || !last || last->certified ||
			    provenance_parse(buf, &number, &last->cert) < 0 ||
			    number != last->number)
				return -EBADMSG;
			last->certified = true;
			continue;
		}
		memcpy(buf, c->line, c->len);
		buf[c->len] = '\0';
		r = parse_generation(c, name, b, buf);
		if (r < 0)
			return r;
		n_write += b->gens[b->n_gens - 1].write;
	}
	if (b->n_gens == 0) {
		log_error("%s: holds no key generation", name);
		return -EINVAL;
	}
	if (n_write > 1) {
		log_error("%s: more than one generation is marked as the write key", name);
		return -EINVAL;
	}
	return 0;
}

/* One mac line per generation, in the same order, from the current line;
 * nothing after. */
static int parse_macs(struct cursor *c, struct bundle *b)
{
	size_t n_macs = 0;

	for (;;) {
		char want[32], hex[2 * BUNDLE_MAC_BYTES + 1];
		int pl;

		if (n_macs >= b->n_gens)
			return -EBADMSG;
		pl = snprintf(want, sizeof(want), "mac %u ", (unsigned)b->gens[n_macs].number);
		if (c->len != (size_t)pl + 2 * BUNDLE_MAC_BYTES || memcmp(c->line, want, (size_t)pl))
			return -EBADMSG;
		memcpy(hex, c->line + pl, 2 * BUNDLE_MAC_BYTES);
		hex[2 * BUNDLE_MAC_BYTES] = '\0';
		/* Lower case only: the MAC lines are outside what the MACs
		 * cover, so no byte of them may change and still parse. */
		if (strspn(hex, "0123456789abcdef") != 2 * BUNDLE_MAC_BYTES ||
		    util_unhex(hex, b->gens[n_macs].mac, BUNDLE_MAC_BYTES) < 0)
			return -EBADMSG;
		n_macs++;
		if (c->p == c->end)
			break;
		if (cursor_next(c) < 0)
			return -EBADMSG;
	}
	return n_macs == b->n_gens ? 0 : -EBADMSG;
}

int bundle_parse(const char *name, const char *text, size_t len, struct bundle *ret)
{
	struct bundle b = {0};
	struct cursor c = {.p = text, .end = text + len};
	char buf[4096];
	int r;

	if (len > BUNDLE_MAX_BYTES || strlen(text) != len) {
		log_error("%s: not a bundle (too large, or binary)", name);
		return -EBADMSG;
	}
	r = parse_header(&c, name, &b, buf, sizeof(buf));
	if (r == 0)
		r = parse_generations(&c, name, &b, buf, sizeof(buf));
	if (r == 0) {
		b.body_len = (size_t)(c.line - text);
		r = parse_macs(&c, &b);
	}
	if (r == -EBADMSG)
		log_error("%s:%zu: not a valid bundle line (truncated or altered?)", name, c.lineno);
	if (r == 0) {
		*ret = b;
		b.gens = NULL;
	} else if (r == -EINVAL) {
		r = -EBADMSG; /* said already */
	}
	bundle_free(&b);
	return r;
}

int bundle_load(const char *path, char **ret_text, struct bundle *ret)
{
	char *text = NULL;
	size_t len;
	int r;

	r = files_read_input("bundle", path, BUNDLE_MAX_BYTES, &text, &len);
	if (r < 0)
		return r;
	r = bundle_parse(path, text, len, ret);
	if (r < 0) {
		free(text);
		return r;
	}
	*ret_text = text;
	return 0;
}

int bundle_check_mac(const struct bundle *b, const char *text, size_t i,
		     const uint8_t kek[TPM_KEK_BYTES])
{
	uint8_t m[BUNDLE_MAC_BYTES];
	int r;

	r = mac(kek, text, b->body_len, m);
	if (r < 0)
		return r;
	r = crypto_equal(m, b->gens[i].mac, sizeof(m)) ? 0 : -EBADMSG;
	util_wipe(m, sizeof(m));
	return r;
}
