#include "config.h"

#include "audit/storedobj.h"
#include "base/util.h"
#include "keys/envelope.h"

#include "kubestore/kmsv2.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define GCM_NONCE_BYTES 12
#define GCM_TAG_BYTES   16
#define HKDF_INFO_BYTES 32
#define DEK_BYTES       32

static const struct {
	const char *prefix;
	enum stored_provider provider;
	bool named; /* "<name>:" follows */
} prefixes[] = {
    {"k8s:enc:kms:v2:", STORED_KMS_V2, true},
    {"k8s:enc:kms:v1:", STORED_KMS_V1, true},
    {"k8s:enc:aescbc:v1:", STORED_AESCBC, false},
    {"k8s:enc:aesgcm:v1:", STORED_AESGCM, false},
    {"k8s:enc:secretbox:v1:", STORED_SECRETBOX, false},
};

const char *stored_provider_name(enum stored_provider p)
{
	static const char *const names[] = {
	    [STORED_IDENTITY] = "identity", [STORED_KMS_V2] = "kms-v2",
	    [STORED_KMS_V1] = "kms-v1",     [STORED_AESCBC] = "aescbc",
	    [STORED_AESGCM] = "aesgcm",     [STORED_SECRETBOX] = "secretbox",
	};

	return p < STORED_N_PROVIDERS ? names[p] : "?";
}

void stored_classify(const uint8_t *value, size_t len, struct stored_value *ret)
{
	struct stored_value v = {.provider = STORED_IDENTITY, .payload = value, .payload_len = len};

	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
		size_t n = strlen(prefixes[i].prefix);
		const uint8_t *colon;

		if (len < n || memcmp(value, prefixes[i].prefix, n) != 0)
			continue;
		v.provider = prefixes[i].provider;
		if (prefixes[i].named) {
			/* The provider's name ends at the next ':'. */
			colon = memchr(value + n, ':', len - n);
			if (!colon) {
				v.provider = STORED_IDENTITY;
				break;
			}
			v.name = (const char *)value + n;
			v.name_len = (size_t)(colon - (value + n));
			n = (size_t)(colon - value) + 1;
		}
		v.payload = value + n;
		v.payload_len = len - n;
		break;
	}
	*ret = v;
}

int stored_resource(const uint8_t *key, size_t key_len, size_t prefix_len,
                    char out[STORED_RESOURCE_MAX])
{
	const char *p = (const char *)key + prefix_len, *end = (const char *)key + key_len;
	const char *s1 = p, *e1, *s2, *e2;

	if (prefix_len >= key_len)
		return -EINVAL;
	e1 = memchr(s1, '/', (size_t)(end - s1));
	if (!e1)
		e1 = end;
	if (e1 == s1)
		return -EINVAL;
	if (!memchr(s1, '.', (size_t)(e1 - s1)) || e1 == end) {
		if ((size_t)(e1 - s1) >= STORED_RESOURCE_MAX)
			return -EINVAL;
		memcpy(out, s1, (size_t)(e1 - s1));
		out[e1 - s1] = '\0';
		return 0;
	}
	/* <group>/<resource>/...: kubectl's "resource.group". */
	s2 = e1 + 1;
	e2 = memchr(s2, '/', (size_t)(end - s2));
	if (!e2)
		e2 = end;
	if (e2 == s2 || (size_t)(e2 - s2) + 1 + (size_t)(e1 - s1) >= STORED_RESOURCE_MAX)
		return -EINVAL;
	memcpy(out, s2, (size_t)(e2 - s2));
	out[e2 - s2] = '.';
	memcpy(out + (e2 - s2) + 1, s1, (size_t)(e1 - s1));
	out[(e2 - s2) + 1 + (e1 - s1)] = '\0';
	return 0;
}

int stored_kmsv2_decode(const uint8_t *payload, size_t len, struct stored_kmsv2 *ret)
{
	Kubestore__EncryptedObject *m = kubestore__encrypted_object__unpack(NULL, len, payload);
	struct kms_annotation *ann = NULL;

	if (!m)
		return -EBADMSG;
	if (!m->encrypteddata.len || !m->keyid || !*m->keyid || !m->encrypteddeksource.len) {
		kubestore__encrypted_object__free_unpacked(m, NULL);
		return -EBADMSG;
	}
	if (m->n_annotations) {
		ann = calloc(m->n_annotations, sizeof(*ann));
		if (!ann) {
			kubestore__encrypted_object__free_unpacked(m, NULL);
			return -ENOMEM;
		}
		for (size_t i = 0; i < m->n_annotations; i++)
			ann[i] = (struct kms_annotation){m->annotations[i]->key,
			                                 m->annotations[i]->value.data,
			                                 m->annotations[i]->value.len};
	}
	*ret = (struct stored_kmsv2){
	    .data = m->encrypteddata.data,
	    .data_len = m->encrypteddata.len,
	    .key_id = m->keyid,
	    .dek_source = m->encrypteddeksource.data,
	    .dek_source_len = m->encrypteddeksource.len,
	    .dek_type = m->encrypteddeksourcetype,
	    .annotations = ann,
	    .n_annotations = m->n_annotations,
	    .msg = m,
	};
	return 0;
}

void stored_kmsv2_free(struct stored_kmsv2 *o)
{
	if (o->msg)
		kubestore__encrypted_object__free_unpacked(o->msg, NULL);
	free(o->annotations);
	*o = (struct stored_kmsv2){0};
}

int stored_kmsv2_check(const struct stored_kmsv2 *o, const uint8_t *seed, size_t seed_len,
                       const uint8_t *aad, size_t aad_len)
{
	const uint8_t *p = o->data;
	size_t n = o->data_len;
	uint8_t dek[DEK_BYTES];
	const uint8_t *key = seed;
	int r;

	if (seed_len != DEK_BYTES)
		return -EINVAL;
	if (o->dek_type == STORED_DEK_HKDF_SEED) {
		/* info || nonce || ciphertext || tag; DEK = HKDF-Expand(seed, info). */
		if (n < HKDF_INFO_BYTES + GCM_NONCE_BYTES + GCM_TAG_BYTES)
			return -EINVAL;
		r = envelope_hkdf_expand32(seed, p, HKDF_INFO_BYTES, dek);
		if (r < 0)
			return r;
		key = dek;
		p += HKDF_INFO_BYTES;
		n -= HKDF_INFO_BYTES;
	} else if (o->dek_type != STORED_DEK_AES_GCM_KEY || n < GCM_NONCE_BYTES + GCM_TAG_BYTES) {
		return -EINVAL;
	}
	r = envelope_gcm_check(key, p, aad, aad_len, p + GCM_NONCE_BYTES,
	                       n - GCM_NONCE_BYTES - GCM_TAG_BYTES, p + n - GCM_TAG_BYTES);
	util_wipe(dek, sizeof(dek));
	return r;
}
