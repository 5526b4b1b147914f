#include "config.h"

#include "kms/kms_proto.h"
#include "base/util.h"

#include "v1beta1/api.pb-c.h"
#include "v2/api.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* protobuf-c allocator that wipes what it frees: decoded requests hold DEK
 * seeds. The size lives in a header in front of each block. */
struct block_header {
	size_t size;
	max_align_t align;
};

static void *wiping_alloc(void *data, size_t size)
{
	struct block_header *h = malloc(offsetof(struct block_header, align) + size);

	if (!h)
		return NULL;
	h->size = size;
	return &h->align;
}

static void wiping_free(void *data, void *p)
{
	struct block_header *h;

	if (!p)
		return;
	h = (struct block_header *)((char *)p - offsetof(struct block_header, align));
	util_freezero(h, offsetof(struct block_header, align) + h->size);
}

static ProtobufCAllocator wiping_allocator = {
	.alloc = wiping_alloc,
	.free = wiping_free,
};

static int copy_bytes(const ProtobufCBinaryData *in, uint8_t **ret, size_t *ret_len)
{
	uint8_t *p = malloc(in->len ? in->len : 1);

	if (!p)
		return -ENOMEM;
	if (in->len)
		memcpy(p, in->data, in->len);
	*ret = p;
	*ret_len = in->len;
	return 0;
}

static int copy_str(const char *in, char **ret)
{
	*ret = strdup(in ? in : "");
	return *ret ? 0 : -ENOMEM;
}

static int decode_v2(enum kms_method method, const uint8_t *buf, size_t len,
		     struct kms_request *req)
{
	int r = -EBADMSG;

	switch (method) {
	case KMS_METHOD_STATUS: {
		V2__StatusRequest *m = v2__status_request__unpack(&wiping_allocator, len, buf);

		if (!m)
			return -EBADMSG;
		v2__status_request__free_unpacked(m, &wiping_allocator);
		return 0;
	}
	case KMS_METHOD_ENCRYPT: {
		V2__EncryptRequest *m = v2__encrypt_request__unpack(&wiping_allocator, len, buf);

		if (!m)
			return -EBADMSG;
		r = copy_bytes(&m->plaintext, &req->data, &req->data_len);
		if (r == 0)
			r = copy_str(m->uid, &req->uid);
		v2__encrypt_request__free_unpacked(m, &wiping_allocator);
		return r;
	}
	case KMS_METHOD_DECRYPT: {
		V2__DecryptRequest *m = v2__decrypt_request__unpack(&wiping_allocator, len, buf);

		if (!m)
			return -EBADMSG;
		r = copy_bytes(&m->ciphertext, &req->data, &req->data_len);
		if (r == 0)
			r = copy_str(m->uid, &req->uid);
		if (r == 0)
			r = copy_str(m->key_id, &req->key_id);
		req->n_annotations = m->n_annotations;
		v2__decrypt_request__free_unpacked(m, &wiping_allocator);
		return r;
	}
	case KMS_METHOD_VERSION:
		break;
	}
	return -EBADMSG;
}

static int decode_v1(enum kms_method method, const uint8_t *buf, size_t len,
		     struct kms_request *req)
{
	int r;

	switch (method) {
	case KMS_METHOD_VERSION: {
		V1beta1__VersionRequest *m =
			v1beta1__version_request__unpack(&wiping_allocator, len, buf);

		if (!m)
			return -EBADMSG;
		r = copy_str(m->version, &req->version);
		v1beta1__version_request__free_unpacked(m, &wiping_allocator);
		return r;
	}
	case KMS_METHOD_ENCRYPT: {
		V1beta1__EncryptRequest *m =
			v1beta1__encrypt_request__unpack(&wiping_allocator, len, buf);

		if (!m)
			return -EBADMSG;
		r = copy_bytes(&m->plain, &req->data, &req->data_len);
		if (r == 0)
			r = copy_str(m->version, &req->version);
		v1beta1__encrypt_request__free_unpacked(m, &wiping_allocator);
		return r;
	}
	case KMS_METHOD_DECRYPT: {
		V1beta1__DecryptRequest *m =
			v1beta1__decrypt_request__unpack(&wiping_allocator, len, buf);

		if (!m)
			return -EBADMSG;
		r = copy_bytes(&m->cipher, &req->data, &req->data_len);
		if (r == 0)
			r = copy_str(m->version, &req->version);
		v1beta1__decrypt_request__free_unpacked(m, &wiping_allocator);
		return r;
	}
	case KMS_METHOD_STATUS:
		break;
	}
	return -EBADMSG;
}

int kms_proto_decode(enum kms_api api, enum kms_method method, const uint8_t *buf, size_t len,
		     struct kms_request **ret)
{
	struct kms_request *req = calloc(1, sizeof(*req));
	int r;

	if (!req)
		return -ENOMEM;
	req->api = api;
	req->method = method;
	r = api == KMS_API_V1BETA1 ? decode_v1(method, buf, len, req)
				   : decode_v2(method, buf, len, req);
	if (r < 0) {
		kms_proto_request_free(req);
		return r;
	}
	*ret = req;
	return 0;
}

void kms_proto_request_free(struct kms_request *req)
{
	if (!req)
		return;
	util_freezero(req->data, req->data_len);
	free(req->uid);
	free(req->key_id);
	free(req->version);
	free(req);
}

/* Packs any message into a fresh buffer. */
/* Packs into small when it fits, else into a new heap buffer. */
static int pack(const ProtobufCMessage *m, uint8_t *small, size_t small_cap, uint8_t **ret_buf,
		size_t *ret_len)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = len <= small_cap ? small : malloc(len);

	if (!buf)
		return -ENOMEM;
	protobuf_c_message_pack(m, buf);
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

static ProtobufCBinaryData bytes_of(const struct kms_response *resp)
{
	return (ProtobufCBinaryData){.len = resp->data_len, .data = (uint8_t *)resp->data};
}

static char *str_of(const char *s)
{
	return (char *)(s ? s : "");
}

int kms_proto_encode(enum kms_api api, enum kms_method method, const struct kms_response *resp,
		     uint8_t *small, size_t small_cap, uint8_t **ret_buf, size_t *ret_len)
{
	if (api == KMS_API_V1BETA1) {
		switch (method) {
		case KMS_METHOD_VERSION: {
			V1beta1__VersionResponse m = V1BETA1__VERSION_RESPONSE__INIT;

			m.version = str_of(resp->version);
			m.runtime_name = str_of(resp->runtime_name);
			m.runtime_version = str_of(resp->runtime_version);
			return pack(&m.base, small, small_cap, ret_buf, ret_len);
		}
		case KMS_METHOD_ENCRYPT: {
			V1beta1__EncryptResponse m = V1BETA1__ENCRYPT_RESPONSE__INIT;

			m.cipher = bytes_of(resp);
			return pack(&m.base, small, small_cap, ret_buf, ret_len);
		}
		case KMS_METHOD_DECRYPT: {
			V1beta1__DecryptResponse m = V1BETA1__DECRYPT_RESPONSE__INIT;

			m.plain = bytes_of(resp);
			return pack(&m.base, small, small_cap, ret_buf, ret_len);
		}
		case KMS_METHOD_STATUS:
			break;
		}
		return -EINVAL;
	}
	switch (method) {
	case KMS_METHOD_STATUS: {
		V2__StatusResponse m = V2__STATUS_RESPONSE__INIT;

		m.version = str_of(resp->version);
		m.healthz = str_of(resp->healthz);
		m.key_id = str_of(resp->key_id);
		return pack(&m.base, small, small_cap, ret_buf, ret_len);
	}
	case KMS_METHOD_ENCRYPT: {
		V2__EncryptResponse m = V2__ENCRYPT_RESPONSE__INIT;

		m.ciphertext = bytes_of(resp);
		m.key_id = str_of(resp->key_id);
		return pack(&m.base, small, small_cap, ret_buf, ret_len);
	}
	case KMS_METHOD_DECRYPT: {
		V2__DecryptResponse m = V2__DECRYPT_RESPONSE__INIT;

		m.plaintext = bytes_of(resp);
		return pack(&m.base, small, small_cap, ret_buf, ret_len);
	}
	case KMS_METHOD_VERSION:
		break;
	}
	return -EINVAL;
}

void kms_proto_buffer_free(uint8_t *buf, size_t len, const uint8_t *small)
{
	util_wipe(buf, len);
	if (buf != small)
		free(buf);
}

int kms_proto_decode_status_response(const uint8_t *buf, size_t len, char **ret_version,
				     char **ret_healthz, char **ret_key_id)
{
	V2__StatusResponse *m = v2__status_response__unpack(NULL, len, buf);
	char *v = NULL, *h = NULL, *k = NULL;
	int r = -ENOMEM;

	if (!m)
		return -EBADMSG;
	if (copy_str(m->version, &v) < 0 || copy_str(m->healthz, &h) < 0 ||
	    copy_str(m->key_id, &k) < 0)
		goto out;
	*ret_version = v;
	*ret_healthz = h;
	*ret_key_id = k;
	v = h = k = NULL;
	r = 0;
out:
	free(v);
	free(h);
	free(k);
	v2__status_response__free_unpacked(m, NULL);
	return r;
}

int kms_proto_encode_decrypt_request(const uint8_t *ciphertext, size_t len, const char *uid,
                                     const char *key_id, const struct kms_annotation *annotations,
                                     size_t n_annotations, uint8_t **ret, size_t *ret_len)
{
	V2__DecryptRequest m = V2__DECRYPT_REQUEST__INIT;
	V2__DecryptRequest__AnnotationsEntry *entries = NULL, **ptrs = NULL;
	uint8_t *buf = NULL;
	size_t n;
	int r = -ENOMEM;

	if (n_annotations) {
		entries = calloc(n_annotations, sizeof(*entries));
		ptrs = calloc(n_annotations, sizeof(*ptrs));
		if (!entries || !ptrs)
			goto out;
	}
	for (size_t i = 0; i < n_annotations; i++) {
		v2__decrypt_request__annotations_entry__init(&entries[i]);
		entries[i].key = (char *)annotations[i].key;
		entries[i].value.data = (uint8_t *)annotations[i].value;
		entries[i].value.len = annotations[i].len;
		ptrs[i] = &entries[i];
	}
	m.ciphertext.data = (uint8_t *)ciphertext;
	m.ciphertext.len = len;
	m.uid = (char *)uid;
	m.key_id = (char *)key_id;
	m.n_annotations = n_annotations;
	m.annotations = ptrs;
	n = v2__decrypt_request__get_packed_size(&m);
	buf = malloc(n ? n : 1);
	if (!buf)
		goto out;
	v2__decrypt_request__pack(&m, buf);
	*ret = buf;
	*ret_len = n;
	r = 0;
out:
	free(entries);
	free(ptrs);
	return r;
}

int kms_proto_decode_decrypt_response(const uint8_t *buf, size_t len, uint8_t *out, size_t cap,
                                      size_t *ret_len)
{
	V2__DecryptResponse *m = v2__decrypt_response__unpack(&wiping_allocator, len, buf);
	int r = -EMSGSIZE;

	if (!m)
		return -EBADMSG;
	if (m->plaintext.len <= cap) {
		memcpy(out, m->plaintext.data, m->plaintext.len);
		*ret_len = m->plaintext.len;
		r = 0;
	}
	v2__decrypt_response__free_unpacked(m, &wiping_allocator);
	return r;
}

int kms_proto_encode_encrypt_request(const uint8_t *plaintext, size_t len, const char *uid,
                                     uint8_t **ret, size_t *ret_len)
{
	V2__EncryptRequest m = V2__ENCRYPT_REQUEST__INIT;
	size_t n;
	uint8_t *buf;

	m.plaintext.data = (uint8_t *)plaintext;
	m.plaintext.len = len;
	m.uid = (char *)uid;
	n = v2__encrypt_request__get_packed_size(&m);
	buf = malloc(n ? n : 1);
	if (!buf)
		return -ENOMEM;
	v2__encrypt_request__pack(&m, buf);
	*ret = buf;
	*ret_len = n;
	return 0;
}

int kms_proto_decrypt_request_for(const uint8_t *encrypt_response, size_t len, const char *uid,
                                  uint8_t **ret, size_t *ret_len, char **ret_key_id)
{
	V2__EncryptResponse *m = v2__encrypt_response__unpack(NULL, len, encrypt_response);
	struct kms_annotation *a = NULL;
	char *key_id = NULL;
	int r = -EBADMSG;

	if (!m)
		return -EBADMSG;
	if (!m->key_id || !*m->key_id)
		goto out;
	r = -ENOMEM;
	if (m->n_annotations && !(a = calloc(m->n_annotations, sizeof(*a))))
		goto out;
	for (size_t i = 0; i < m->n_annotations; i++)
		a[i] = (struct kms_annotation){m->annotations[i]->key, m->annotations[i]->value.data,
		                               m->annotations[i]->value.len};
	if (copy_str(m->key_id, &key_id) < 0)
		goto out;
	r = kms_proto_encode_decrypt_request(m->ciphertext.data, m->ciphertext.len, uid, key_id, a,
	                                     m->n_annotations, ret, ret_len);
	if (r == 0) {
		*ret_key_id = key_id;
		key_id = NULL;
	}
out:
	free(key_id);
	free(a);
	v2__encrypt_response__free_unpacked(m, NULL);
	return r;
}
