/* LD_PRELOAD shim for tests: finds a secret left in memory handed back to
 * the allocator. $FREED_SECRET_HEX is the test's own copy of a key (a KEK
 * unsealed by tpm2-tools); every free(3) of a block that still holds its
 * first or last 16 bytes appends a line to $FREED_SECRET_LOG. A memory scan
 * of the running process misses such blocks once they are reused; this
 * sees each one as it is freed. Not for sanitizer builds (they replace
 * the allocator). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WINDOW 16

static void (*real_free)(void *);
static unsigned char secret[64];
static size_t secret_len;
static int log_fd = -1;

__attribute__((constructor)) static void setup(void)
{
	const char *hex = getenv("FREED_SECRET_HEX"), *log = getenv("FREED_SECRET_LOG");

	real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	if (!hex || !log)
		return;
	for (size_t i = 0; hex[2 * i] && hex[2 * i + 1] && i < sizeof(secret); i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return;
		secret[i] = (unsigned char)v;
		secret_len = i + 1;
	}
	log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (secret_len < 2 * WINDOW)
		secret_len = 0;
}

void free(void *p)
{
	if (!real_free)
		return; /* before setup: leak rather than recurse */
	if (p && secret_len && log_fd >= 0) {
		size_t n = malloc_usable_size(p);

		if (memmem(p, n, secret, WINDOW) ||
		    memmem(p, n, secret + secret_len - WINDOW, WINDOW)) {
			char line[64];
			int len = snprintf(line, sizeof(line), "secret in a freed block of %zu bytes\n", n);

			if (write(log_fd, line, (size_t)len) < 0)
				abort();
		}
	}
	real_free(p);
}
