#include "config.h"

#include "base/log.h"
#include "base/secmem.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int secmem_init(size_t bytes)
{
	/* 1: fully set up; 2: set up without locking or guard pages. */
	int r = CRYPTO_secure_malloc_init(bytes, 32);

	if (r != 1) {
		log_error("cannot set up a locked secure heap of %zu bytes for key material%s",
			  bytes, r == 2 ? " (memory could not be locked: raise RLIMIT_MEMLOCK)" : "");
		if (r == 2)
			CRYPTO_secure_malloc_done();
		return -ENOMEM;
	}
	return 0;
}

void secmem_finish(void)
{
	CRYPTO_secure_malloc_done();
}

void *secmem_alloc(size_t len)
{
	return OPENSSL_secure_zalloc(len);
}

void secmem_free(void *p, size_t len)
{
	if (p)
		OPENSSL_secure_clear_free(p, len);
}

bool secmem_owns(const void *p)
{
	return CRYPTO_secure_allocated(p) == 1;
}

int secmem_harden_process(void)
{
	struct rlimit no_core = {0, 0};
	int r = 0;

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		r = -errno;
		log_error("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	}
	if (setrlimit(RLIMIT_CORE, &no_core) < 0) {
		r = -errno;
		log_error("setrlimit(RLIMIT_CORE): %s", strerror(errno));
	}
	return r;
}
