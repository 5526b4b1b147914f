#include "config.h"

#include "sealfile.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#define PEM_NAME "TSS2 PRIVATE KEY"

static const uint8_t oid_sealed[] = {0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x05};
static const uint8_t empty_auth_true[] = {0xa0, 0x03, 0x01, 0x01, 0xff};
static const uint8_t parent_srk[] = {0x02, 0x05, 0x00, 0x81, 0x00, 0x00, 0x01};

static size_t put_len(uint8_t *p, size_t len)
{
	if (len < 0x80) {
		p[0] = (uint8_t)len;
		return 1;
	}
	if (len < 0x100) {
		p[0] = 0x81;
		p[1] = (uint8_t)len;
		return 2;
	}
	p[0] = 0x82;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	return 3;
}

static size_t put_octets(uint8_t *p, const uint8_t *data, size_t len)
{
	size_t n = 0;

	p[n++] = 0x04;
	n += put_len(p + n, len);
	memcpy(p + n, data, len);
	return n + len;
}

int sealfile_encode(const struct tpm_sealed *s, char **ret_pem, size_t *ret_len)
{
	uint8_t body[2 * TPM_BLOB_MAX + 64], der[2 * TPM_BLOB_MAX + 72];
	size_t n = 0, d = 0;
	BIO *bio = NULL;
	BUF_MEM *mem;
	char *pem;
	int r = -ENOMEM;

	memcpy(body + n, oid_sealed, sizeof(oid_sealed));
	n += sizeof(oid_sealed);
	memcpy(body + n, empty_auth_true, sizeof(empty_auth_true));
	n += sizeof(empty_auth_true);
	memcpy(body + n, parent_srk, sizeof(parent_srk));
	n += sizeof(parent_srk);
	n += put_octets(body + n, s->pub, s->pub_len);
	n += put_octets(body + n, s->priv, s->priv_len);
	der[d++] = 0x30;
	d += put_len(der + d, n);
	memcpy(der + d, body, n);
	d += n;

	bio = BIO_new(BIO_s_mem());
	if (!bio || PEM_write_bio(bio, PEM_NAME, "", der, (long)d) <= 0)
		goto out;
	BIO_get_mem_ptr(bio, &mem);
	pem = malloc(mem->length + 1);
	if (!pem)
		goto out;
	memcpy(pem, mem->data, mem->length);
	pem[mem->length] = '\0';
	*ret_pem = pem;
	*ret_len = mem->length;
	r = 0;
out:
	BIO_free(bio);
	return r;
}

/* Reads one DER tag and length at *p; advances past them. */
static int get_tl(const uint8_t **p, const uint8_t *end, uint8_t tag, size_t *ret_len)
{
	const uint8_t *q = *p;
	size_t len;

	if (end - q < 2 || q[0] != tag)
		return -EINVAL;
	q++;
	if (*q < 0x80) {
		len = *q++;
	} else if (*q == 0x81) {
		if (end - q < 2 || q[1] < 0x80)
			return -EINVAL;
		len = q[1];
		q += 2;
	} else if (*q == 0x82) {
		if (end - q < 3 || q[1] == 0)
			return -EINVAL;
		len = (size_t)q[1] << 8 | q[2];
		q += 3;
	} else {
		return -EINVAL;
	}
	if ((size_t)(end - q) < len)
		return -EINVAL;
	*p = q;
	*ret_len = len;
	return 0;
}

static int expect(const uint8_t **p, const uint8_t *end, const uint8_t *want, size_t len)
{
	if ((size_t)(end - *p) < len || memcmp(*p, want, len) != 0)
		return -EINVAL;
	*p += len;
	return 0;
}

static int get_octets(const uint8_t **p, const uint8_t *end, uint8_t *out, size_t *ret_len)
{
	size_t len;

	if (get_tl(p, end, 0x04, &len) < 0 || len > TPM_BLOB_MAX)
		return -EINVAL;
	memcpy(out, *p, len);
	*p += len;
	*ret_len = len;
	return 0;
}

int sealfile_decode(const char *pem, size_t len, struct tpm_sealed *ret)
{
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	long der_len = 0;
	const uint8_t *p, *end;
	struct tpm_sealed s;
	size_t seq_len;
	BIO *bio;
	int r = -EINVAL;

	if (len > SEALFILE_MAX_BYTES)
		return -EINVAL;
	bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio)
		return -ENOMEM;
	if (PEM_read_bio(bio, &name, &header, &der, &der_len) != 1 ||
	    strcmp(name, PEM_NAME) != 0 || header[0] != '\0')
		goto out;
	p = der;
	end = der + der_len;
	if (get_tl(&p, end, 0x30, &seq_len) < 0 || p + seq_len != end)
		goto out;
	if (expect(&p, end, oid_sealed, sizeof(oid_sealed)) < 0 ||
	    expect(&p, end, empty_auth_true, sizeof(empty_auth_true)) < 0 ||
	    expect(&p, end, parent_srk, sizeof(parent_srk)) < 0 ||
	    get_octets(&p, end, s.pub, &s.pub_len) < 0 ||
	    get_octets(&p, end, s.priv, &s.priv_len) < 0 || p != end)
		goto out;
	*ret = s;
	r = 0;
out:
	if (r < 0)
		ERR_clear_error();
	BIO_free(bio);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	return r;
}
