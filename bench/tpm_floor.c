/* The TPM floor of an Encrypt, two ways, on the same TPM:
 *
 *   esapi:   Esys_NV_Increment + Esys_NV_Read, nothing else;
 *   kms:     the same two commands as tpm2-kms issues them
 *            (tpm_nv_counter_next: NV_Increment through ESAPI's SAPI context,
 *            see nv_increment in src/tpm.c).
 *
 * Prints p50 and p99 over COUNT rounds for each:
 *
 *   tpm_floor rounds=1000 esapi_p50_us=702 esapi_p99_us=1166 kms_p50_us=245 kms_p99_us=480
 *
 * usage: tpm-floor TCTI COUNT [NV_INDEX]
 * (a benchmark program, so it may use tpm2-tss directly; src/ may not) */
#include "config.h"

#include "base/log.h"
#include "tpm/tpm.h"
#include "base/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void percentiles(uint64_t *us, int count, uint64_t *ret_p50, uint64_t *ret_p99)
{
	qsort(us, (size_t)count, sizeof(*us), cmp);
	*ret_p50 = us[count / 2];
	*ret_p99 = us[(size_t)(count * 0.99)];
}

/* Plain ESAPI, password authorisation, on a counter that exists. */
static int esapi_rounds(const char *tcti_conf, uint32_t index, int count, uint64_t *us)
{
	TSS2_TCTI_CONTEXT *tcti = NULL;
	ESYS_CONTEXT *esys = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	int r = -1;

	if (Tss2_TctiLdr_Initialize(tcti_conf, &tcti) != TSS2_RC_SUCCESS ||
	    Esys_Initialize(&esys, tcti, NULL) != TSS2_RC_SUCCESS ||
	    Esys_TR_FromTPMPublic(esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv) !=
		    TSS2_RC_SUCCESS)
		goto out;
	for (int i = 0; i < count; i++) {
		uint64_t t0 = util_now_monotonic_us();
		TPM2B_MAX_NV_BUFFER *data = NULL;

		if (Esys_NV_Increment(esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE) !=
			    TSS2_RC_SUCCESS ||
		    Esys_NV_Read(esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, 8, 0,
				 &data) != TSS2_RC_SUCCESS)
			goto out;
		Esys_Free(data);
		us[i] = util_now_monotonic_us() - t0;
	}
	r = 0;
out:
	if (nv != ESYS_TR_NONE)
		Esys_TR_Close(esys, &nv);
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tcti);
	return r;
}

int main(int argc, char **argv)
{
	uint32_t index = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 0x01800ffeu;
	int count = argc > 2 ? atoi(argv[2]) : 0;
	uint64_t *us, v, e50, e99, k50, k99;
	tpm *t;

	if (argc < 3 || count < 1) {
		fprintf(stderr, "usage: tpm-floor TCTI COUNT [NV_INDEX]\n");
		return 2;
	}
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
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
	tpm_close(t);
	percentiles(us, count, &k50, &k99);
	if (esapi_rounds(argv[1], index, count, us) < 0) {
		fprintf(stderr, "tpm-floor: ESAPI rounds failed\n");
		return 1;
	}
	percentiles(us, count, &e50, &e99);
	printf("tpm_floor rounds=%d esapi_p50_us=%llu esapi_p99_us=%llu kms_p50_us=%llu "
	       "kms_p99_us=%llu\n",
	       count, (unsigned long long)e50, (unsigned long long)e99, (unsigned long long)k50,
	       (unsigned long long)k99);
	free(us);
	return 0;
}
