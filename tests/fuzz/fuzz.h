/* libFuzzer entry point, implemented by each tests/fuzz/fuzz_*.c. Built
 * twice: with libFuzzer (--enable-fuzzing, clang) to search, and with
 * replay.c as main() to replay the committed corpus in make check. */
#ifndef TPM2KMS_FUZZ_H
#define TPM2KMS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
