#include "config.h"

#include "base/armor.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

int armor_encode(const char *label, const uint8_t *data, size_t len, char **ret_text,
		 size_t *ret_len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	BUF_MEM *mem;
	char *text;
	int r = -ENOMEM;

	if (!bio || PEM_write_bio(bio, label, "", data, (long)len) <= 0)
		goto out;
	BIO_get_mem_ptr(bio, &mem);
	text = malloc(mem->length + 1);
	if (!text)
		goto out;
	memcpy(text, mem->data, mem->length);
	text[mem->length] = '\0';
	*ret_text = text;
	*ret_len = mem->length;
	r = 0;
out:
	ERR_clear_error();
	BIO_free(bio);
	return r;
}

int armor_decode(const char *label, const char *text, size_t len, uint8_t **ret_data,
		 size_t *ret_len)
{
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long data_len = 0;
	BIO *bio;
	int r = -EINVAL;

	if (len > INT32_MAX)
		return -EINVAL;
	bio = BIO_new_mem_buf(text, (int)len);
	if (!bio)
		return -ENOMEM;
	if (PEM_read_bio(bio, &name, &header, &data, &data_len) == 1 && strcmp(name, label) == 0 &&
	    header[0] == '\0' && data_len > 0) {
		*ret_data = data;
		*ret_len = (size_t)data_len;
		data = NULL;
		r = 0;
	}
	ERR_clear_error();
	BIO_free(bio);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	return r;
}

int armor_each(const char *text, size_t len,
               int (*fn)(void *arg, const char *label, const uint8_t *data, size_t len), void *arg)
{
	BIO *bio;
	int r = 0, blocks = 0;

	if (len > INT32_MAX)
		return -EINVAL;
	bio = BIO_new_mem_buf(text, (int)len);
	if (!bio)
		return -ENOMEM;
	for (;;) {
		char *name = NULL, *header = NULL;
		unsigned char *data = NULL;
		long data_len = 0;

		if (PEM_read_bio(bio, &name, &header, &data, &data_len) != 1)
			break;
		blocks++;
		r = header[0] == '\0' && data_len > 0 ? fn(arg, name, data, (size_t)data_len)
		                                      : -EINVAL;
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_clear_free(data, data_len > 0 ? (size_t)data_len : 0);
		if (r < 0)
			break;
	}
	ERR_clear_error();
	BIO_free(bio);
	return r < 0 ? r : blocks ? 0 : -EINVAL;
}

int armor_base64_decode(const char *in, uint8_t *out, size_t max, size_t *ret_len)
{
	size_t len = strlen(in), pad = 0;
	int n;

	if (len == 0 || len % 4 || len / 4 * 3 > max)
		return -EINVAL;
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0)
		return -EINVAL;
	while (pad < 2 && in[len - 1 - pad] == '=')
		pad++;
	*ret_len = (size_t)n - pad;
	return 0;
}

void armor_free(uint8_t *data)
{
	OPENSSL_free(data);
}
