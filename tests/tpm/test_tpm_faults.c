/* TPM conditions swtpm does not produce on demand (NV_RATE, RETRY, YIELDED,
 * memory warnings, a TCTI failure mid-command), injected by wrapping the
 * tpm2-tss calls at link time (-Wl,--wrap) in front of a real swtpm. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/log.h"
#include "swtpm.h"
#include "tpm/tpm.h"
#include "base/util.h"

#include <errno.h>
#include <stdlib.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_sys.h>

#define NV_INDEX 0x01800101u

/* Per wrapped call: how many times to fail (-1: always) and with what. */
struct fault {
	int times;
	TSS2_RC rc;
	unsigned injected;
};

static struct fault f_increment, f_read, f_load, f_unseal;

static bool inject(struct fault *f, TSS2_RC *rc)
{
	if (f->times == 0)
		return false;
	if (f->times > 0)
		f->times--;
	f->injected++;
	*rc = f->rc;
	return true;
}

/* tpm.c increments through SAPI (see nv_increment there). */
TSS2_RC __real_Tss2_Sys_NV_Increment(TSS2_SYS_CONTEXT *sys, TPMI_RH_NV_AUTH a, TPMI_RH_NV_INDEX n,
				     const TSS2L_SYS_AUTH_COMMAND *cmd,
				     TSS2L_SYS_AUTH_RESPONSE *rsp);
TSS2_RC __wrap_Tss2_Sys_NV_Increment(TSS2_SYS_CONTEXT *sys, TPMI_RH_NV_AUTH a, TPMI_RH_NV_INDEX n,
				     const TSS2L_SYS_AUTH_COMMAND *cmd,
				     TSS2L_SYS_AUTH_RESPONSE *rsp);
TSS2_RC __wrap_Tss2_Sys_NV_Increment(TSS2_SYS_CONTEXT *sys, TPMI_RH_NV_AUTH a, TPMI_RH_NV_INDEX n,
				     const TSS2L_SYS_AUTH_COMMAND *cmd,
				     TSS2L_SYS_AUTH_RESPONSE *rsp)
{
	TSS2_RC rc;

	if (inject(&f_increment, &rc))
		return rc;
	return __real_Tss2_Sys_NV_Increment(sys, a, n, cmd, rsp);
}

TSS2_RC __real_Esys_NV_Read(ESYS_CONTEXT *e, ESYS_TR a, ESYS_TR n, ESYS_TR s1, ESYS_TR s2,
			    ESYS_TR s3, UINT16 size, UINT16 off, TPM2B_MAX_NV_BUFFER **d);
TSS2_RC __wrap_Esys_NV_Read(ESYS_CONTEXT *e, ESYS_TR a, ESYS_TR n, ESYS_TR s1, ESYS_TR s2,
			    ESYS_TR s3, UINT16 size, UINT16 off, TPM2B_MAX_NV_BUFFER **d);
TSS2_RC __wrap_Esys_NV_Read(ESYS_CONTEXT *e, ESYS_TR a, ESYS_TR n, ESYS_TR s1, ESYS_TR s2,
			    ESYS_TR s3, UINT16 size, UINT16 off, TPM2B_MAX_NV_BUFFER **d)
{
	TSS2_RC rc;

	if (inject(&f_read, &rc))
		return rc;
	return __real_Esys_NV_Read(e, a, n, s1, s2, s3, size, off, d);
}

TSS2_RC __real_Esys_Load(ESYS_CONTEXT *e, ESYS_TR p, ESYS_TR s1, ESYS_TR s2, ESYS_TR s3,
			 const TPM2B_PRIVATE *priv, const TPM2B_PUBLIC *pub, ESYS_TR *o);
TSS2_RC __wrap_Esys_Load(ESYS_CONTEXT *e, ESYS_TR p, ESYS_TR s1, ESYS_TR s2, ESYS_TR s3,
			 const TPM2B_PRIVATE *priv, const TPM2B_PUBLIC *pub, ESYS_TR *o);
TSS2_RC __wrap_Esys_Load(ESYS_CONTEXT *e, ESYS_TR p, ESYS_TR s1, ESYS_TR s2, ESYS_TR s3,
			 const TPM2B_PRIVATE *priv, const TPM2B_PUBLIC *pub, ESYS_TR *o)
{
	TSS2_RC rc;

	if (inject(&f_load, &rc))
		return rc;
	return __real_Esys_Load(e, p, s1, s2, s3, priv, pub, o);
}

TSS2_RC __real_Esys_Unseal(ESYS_CONTEXT *e, ESYS_TR i, ESYS_TR s1, ESYS_TR s2, ESYS_TR s3,
			   TPM2B_SENSITIVE_DATA **out);
TSS2_RC __wrap_Esys_Unseal(ESYS_CONTEXT *e, ESYS_TR i, ESYS_TR s1, ESYS_TR s2, ESYS_TR s3,
			   TPM2B_SENSITIVE_DATA **out);
TSS2_RC __wrap_Esys_Unseal(ESYS_CONTEXT *e, ESYS_TR i, ESYS_TR s1, ESYS_TR s2, ESYS_TR s3,
			   TPM2B_SENSITIVE_DATA **out)
{
	TSS2_RC rc;

	if (inject(&f_unseal, &rc))
		return rc;
	return __real_Esys_Unseal(e, i, s1, s2, s3, out);
}

struct fixture {
	struct swtpm s;
	tpm *t;
	uint64_t last;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct tpm_name name;

	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
	f_increment = f_read = f_load = f_unseal = (struct fault){0};
	assert_int_equal(swtpm_init(&f->s, false), 0);
	assert_int_equal(swtpm_start(&f->s), 0);
	assert_int_equal(tpm_open(f->s.tcti, &f->t), 0);
	assert_int_equal(tpm_srk_provision(f->t, &name), 0);
	assert_int_equal(tpm_nv_counter_provision(f->t, NV_INDEX), 0);
	assert_int_equal(
		tpm_nv_counter_next(f->t, NV_INDEX, util_now_monotonic_us() + 5000000u, &f->last),
		0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tpm_close(f->t);
	swtpm_cleanup(&f->s);
	free(f);
	return 0;
}

static uint64_t soon(void)
{
	return util_now_monotonic_us() + 5000000u;
}

static void test_nv_rate_is_retried(void **state)
{
	struct fixture *f = *state;
	uint64_t v;

	f_increment = (struct fault){.times = 3, .rc = TPM2_RC_NV_RATE};
	assert_int_equal(tpm_nv_counter_next(f->t, NV_INDEX, soon(), &v), 0);
	assert_int_equal(f_increment.injected, 3);
	/* The refused attempts did not reach the TPM: exactly one increment. */
	assert_true(v == f->last + 1);
}

static void test_retry_and_yielded(void **state)
{
	struct fixture *f = *state;
	uint64_t v;

	f_increment = (struct fault){.times = 1, .rc = TPM2_RC_YIELDED};
	f_read = (struct fault){.times = 2, .rc = TPM2_RC_RETRY};
	assert_int_equal(tpm_nv_counter_next(f->t, NV_INDEX, soon(), &v), 0);
	assert_int_equal(f_read.injected, 2);
	assert_true(v == f->last + 1);
	f_read = (struct fault){.times = 1, .rc = TPM2_RC_NV_UNAVAILABLE};
	assert_int_equal(tpm_nv_counter_next(f->t, NV_INDEX, soon(), &v), 0);
	assert_true(v == f->last + 2);
}

static void test_deadline_bounds_retries(void **state)
{
	struct fixture *f = *state;
	uint64_t v, after;

	f_increment = (struct fault){.times = -1, .rc = TPM2_RC_NV_RATE};
	assert_int_equal(
		tpm_nv_counter_next(f->t, NV_INDEX, util_now_monotonic_us() + 200000u, &v),
		-ETIMEDOUT);
	assert_true(f_increment.injected > 1);
	/* The TPM recovered: the next value is still fresh. */
	f_increment = (struct fault){0};
	assert_int_equal(tpm_nv_counter_next(f->t, NV_INDEX, soon(), &after), 0);
	assert_true(after == f->last + 1);
}

static void test_tcti_failure_mid_command(void **state)
{
	struct fixture *f = *state;
	uint64_t v;

	/* The increment happened; the read's transport broke. */
	f_read = (struct fault){.times = 1, .rc = TSS2_TCTI_RC_IO_ERROR};
	assert_int_equal(tpm_nv_counter_next(f->t, NV_INDEX, soon(), &v), -EIO);
	/* The lost value is never handed out: the next one is beyond it. */
	assert_int_equal(tpm_nv_counter_next(f->t, NV_INDEX, soon(), &v), 0);
	assert_true(v == f->last + 2);
}

static void test_memory_warnings_on_unseal(void **state)
{
	struct fixture *f = *state;
	struct tpm_sealed sealed;
	uint8_t kek[32], back[32];

	assert_int_equal(tpm_kek_create(f->t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
	f_load = (struct fault){.times = 1, .rc = TPM2_RC_OBJECT_MEMORY};
	f_unseal = (struct fault){.times = 1, .rc = TPM2_RC_SESSION_MEMORY};
	assert_int_equal(tpm_kek_unseal(f->t, &sealed, TPM_KEK_NONE, back), 0);
	assert_memory_equal(kek, back, 32);
	assert_int_equal(f_load.injected + f_unseal.injected, 2);
}

static void test_integrity_failure_is_key_rejected(void **state)
{
	struct fixture *f = *state;
	struct tpm_sealed sealed;
	uint8_t kek[32];

	assert_int_equal(tpm_kek_create(f->t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
	/* Format-one code with a parameter number, as a TPM sends it. */
	f_load = (struct fault){.times = 1, .rc = TPM2_RC_INTEGRITY + TPM2_RC_P + TPM2_RC_1};
	assert_int_equal(tpm_kek_unseal(f->t, &sealed, TPM_KEK_NONE, kek), -EKEYREJECTED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_nv_rate_is_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_and_yielded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline_bounds_retries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcti_failure_mid_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_warnings_on_unseal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_integrity_failure_is_key_rejected, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
