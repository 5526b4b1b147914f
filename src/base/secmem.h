/* Memory for key material: OpenSSL's secure heap (mlock'd, excluded from
 * core dumps, wiped on free), and process hardening against dumps.
 * Must not: hand out memory that outlives secmem_finish. */
#ifndef TPM2KMS_SECMEM_H
#define TPM2KMS_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

/* Sets up the secure heap; fails (logged) when memory cannot be locked. */
int secmem_init(size_t bytes);
void secmem_finish(void);

void *secmem_alloc(size_t len);       /* zeroed; NULL on failure */
void secmem_free(void *p, size_t len); /* wipes; NULL is fine */
bool secmem_owns(const void *p);

/* PR_SET_DUMPABLE 0 and RLIMIT_CORE 0. */
int secmem_harden_process(void);

#endif
