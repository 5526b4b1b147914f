/* Guest side of the VM snapshot test: a small KMS v2 client that runs
 * inside the QEMU guest next to tpm2-kms. For each of COUNT random seeds it
 * calls Encrypt, then Decrypt with the returned key_id, and prints
 *
 *   KMS tag=TAG n=I key_id=K seed=BASE64 env=BASE64 dec=ok|fail
 *
 * on stdout (the serial console), for the host to check. Uses the
 * project's own HTTP/2 + gRPC client (grpc_client_call). */
#include "config.h"

#include "transport/grpc.h"
#include "transport/listen.h"
#include "base/log.h"
#include "pbwire.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static int call(const struct listen_addr *a, const char *path, const uint8_t *req, size_t len,
		uint8_t **ret, size_t *ret_len)
{
	const char *message;
	int fd, status, r;

	r = listen_connect(a, &fd);
	if (r < 0)
		return r;
	r = grpc_client_call(fd, path, req, len, 10000, &status, &message, ret, ret_len);
	close(fd);
	if (r == 0 && status != 0) {
		fprintf(stderr, "guest-client: %s: grpc-status %d: %s\n", path, status, message);
		r = -EPROTO;
	}
	return r;
}

int main(int argc, char **argv)
{
	struct listen_addr a;
	const char *tag;
	int count;

	if (argc != 4 || listen_addr_parse(argv[1], &a) < 0) {
		fprintf(stderr, "usage: guest-client SOCKET TAG COUNT\n");
		return 2;
	}
	tag = argv[2];
	count = atoi(argv[3]);
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_WARNING);
	for (int i = 0; i < count; i++) {
		uint8_t seed[32], req[2048], *resp = NULL, *dec = NULL;
		const uint8_t *env, *key_id, *pt;
		size_t n, resp_len, env_len = 0, key_id_len = 0, dec_len, pt_len = 0;
		char seed_b64[64], env_b64[1400], kid[128];
		bool ok;

		if (getrandom(seed, sizeof(seed), 0) != sizeof(seed))
			return 1;
		n = pbwire_put(req, 1, seed, sizeof(seed));
		n += pbwire_put(req + n, 2, "vm-test", 7);
		if (call(&a, "/v2.KeyManagementService/Encrypt", req, n, &resp, &resp_len) < 0)
			return 1;
		env = pbwire_field(resp, resp_len, 1, &env_len);
		key_id = pbwire_field(resp, resp_len, 2, &key_id_len);
		if (!env || !key_id || env_len > 1024 || key_id_len >= sizeof(kid))
			return 1;
		memcpy(kid, key_id, key_id_len);
		kid[key_id_len] = '\0';
		n = pbwire_put(req, 1, env, env_len);
		n += pbwire_put(req + n, 3, kid, key_id_len);
		ok = call(&a, "/v2.KeyManagementService/Decrypt", req, n, &dec, &dec_len) == 0 &&
		     (pt = pbwire_field(dec, dec_len, 1, &pt_len)) && pt_len == sizeof(seed) &&
		     memcmp(pt, seed, sizeof(seed)) == 0;
		EVP_EncodeBlock((unsigned char *)seed_b64, seed, sizeof(seed));
		EVP_EncodeBlock((unsigned char *)env_b64, env, (int)env_len);
		printf("KMS tag=%s n=%d key_id=%s seed=%s env=%s dec=%s\n", tag, i, kid, seed_b64,
		       env_b64, ok ? "ok" : "fail");
		fflush(stdout);
		free(resp);
		free(dec);
	}
	return 0;
}
