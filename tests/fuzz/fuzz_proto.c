/* Protobuf decoding of every request type: the first byte picks the API
 * and method, the rest is the message. */
#include "config.h"

#include "fuzz.h"
#include "kms/kms_proto.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct {
		enum kms_api api;
		enum kms_method method;
	} kinds[] = {
		{KMS_API_V2, KMS_METHOD_STATUS},      {KMS_API_V2, KMS_METHOD_ENCRYPT},
		{KMS_API_V2, KMS_METHOD_DECRYPT},     {KMS_API_V1BETA1, KMS_METHOD_VERSION},
		{KMS_API_V1BETA1, KMS_METHOD_ENCRYPT}, {KMS_API_V1BETA1, KMS_METHOD_DECRYPT},
	};
	struct kms_request *req;
	char *v, *h, *k;

	if (size < 1)
		return 0;
	if (data[0] == 0xff) {
		/* The client side: a Status response. */
		if (kms_proto_decode_status_response(data + 1, size - 1, &v, &h, &k) == 0) {
			free(v);
			free(h);
			free(k);
		}
		return 0;
	}
	if (kms_proto_decode(kinds[data[0] % 6].api, kinds[data[0] % 6].method, data + 1,
			     size - 1, &req) == 0)
		kms_proto_request_free(req);
	return 0;
}
