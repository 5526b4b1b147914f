/* The TPM floor of an Encrypt: NV_Increment + NV_Read through ESAPI on the
 * same TPM, nothing else. Prints p50 and p99 over COUNT rounds.
 * usage: tpm-floor TCTI COUNT [NV_INDEX] */
#include "config.h"

#include "log.h"
#include "tpm.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	uint32_t index = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 0x01800ffeu;
	int count = argc > 2 ? atoi(argv[2]) : 0;
	uint64_t *us, v;
	tpm *t;

	if (argc < 3 || count < 1) {
		fprintf(stderr, "usage: tpm-floor TCTI COUNT [NV_INDEX]\n");
		return 2;
	}
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR, false);
	setenv("TSS2_LOG", "all+NONE", 0); /* the first lookup of the index fails by design */
	us = calloc((size_t)count, sizeof(*us));
	if (!us || tpm_open(argv[1], &t) < 0 || tpm_nv_counter_provision(t, index) < 0)
		return 1;
	for (int i = 0; i < count; i++) {
		uint64_t t0 = util_now_monotonic_us();

		if (tpm_nv_counter_next(t, index, t0 + 10000000u, &v) < 0)
			return 1;
		us[i] = util_now_monotonic_us() - t0;
	}
	qsort(us, (size_t)count, sizeof(*us), cmp);
	printf("tpm_floor rounds=%d p50_us=%llu p99_us=%llu\n", count,
	       (unsigned long long)us[count / 2], (unsigned long long)us[(size_t)(count * 0.99)]);
	tpm_close(t);
	free(us);
	return 0;
}
