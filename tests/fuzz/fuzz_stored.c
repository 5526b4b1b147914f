/* What the audit reads from etcd, as an attacker with write access to etcd
 * might shape it: byte 0 is the key's length, then the key, then the value.
 * The value is classified, its resource parsed from the key and, for KMS
 * v2, decoded and its tag checked under a fixed seed (bytes 0..31, the
 * corpus's, so the corpus reaches the AES-GCM pass). */
#include "config.h"

#include "audit/storedobj.h"
#include "keys/envelope.h"
#include "fuzz.h"

#include <stdbool.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct stored_value v;
	struct stored_kmsv2 o;
	char resource[STORED_RESOURCE_MAX];
	uint8_t seed[32];
	size_t key_len;

	if (!ready) {
		if (envelope_init() < 0)
			abort();
		ready = true;
	}
	if (size < 1 || (size_t)data[0] + 1 > size)
		return 0;
	key_len = data[0];
	for (int i = 0; i < 32; i++)
		seed[i] = (uint8_t)i;
	(void)stored_resource(data + 1, key_len, key_len < 10 ? key_len : 10, resource);
	stored_classify(data + 1 + key_len, size - 1 - key_len, &v);
	if (v.provider != STORED_KMS_V2 || stored_kmsv2_decode(v.payload, v.payload_len, &o) < 0)
		return 0;
	(void)stored_kmsv2_check(&o, seed, sizeof(seed), data + 1, key_len);
	stored_kmsv2_free(&o);
	return 0;
}
