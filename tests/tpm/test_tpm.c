/* The TPM layer against a real swtpm (one per test, private temp dir). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/log.h"
#include "swtpm.h"
#include "tpm/tpm.h"
#include "tpm/tpmobj.h"
#include "base/util.h"

#include <errno.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NV_INDEX 0x01800101u

static int setup(void **state)
{
	struct swtpm *s = calloc(1, sizeof(*s));

	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_WARNING);
	assert_int_equal(swtpm_init(s, false), 0);
	assert_int_equal(swtpm_start(s), 0);
	*state = s;
	return 0;
}

static int setup_with_spk(void **state)
{
	struct swtpm *s = calloc(1, sizeof(*s));

	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_WARNING);
	assert_int_equal(swtpm_init(s, true), 0);
	assert_int_equal(swtpm_start(s), 0);
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	swtpm_cleanup(*state);
	free(*state);
	return 0;
}

static tpm *open_tpm(struct swtpm *s)
{
	tpm *t = NULL;

	assert_int_equal(tpm_open(s->tcti, &t), 0);
	return t;
}

static void test_seal_unseal_round_trip(void **state)
{
	struct swtpm *s = *state;
	struct tpm_name name;
	struct tpm_sealed sealed;
	uint8_t kek[32], back[32], zero[32] = {0};
	tpm *t = open_tpm(s);

	assert_int_equal(tpm_srk_provision(t, &name), 0);
	assert_int_equal(name.len, 34); /* SHA-256 name alg + digest */
	assert_int_equal(tpm_kek_create(t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
	assert_memory_not_equal(kek, zero, 32);
	assert_int_equal(tpmobj_sealed_check(&sealed, TPM_KEK_NONE, NULL), 0);
	assert_int_equal(tpm_kek_unseal(t, &sealed, TPM_KEK_NONE, back), 0);
	assert_memory_equal(kek, back, 32);
	tpm_close(t);

	/* Another connection (as after a process restart). */
	t = open_tpm(s);
	memset(back, 0, sizeof(back));
	assert_int_equal(tpm_srk_check(t, &name), 0);
	assert_int_equal(tpm_kek_unseal(t, &sealed, TPM_KEK_NONE, back), 0);
	assert_memory_equal(kek, back, 32);

	/* A different KEK each time. */
	assert_int_equal(tpm_kek_create(t, TPM_KEK_NONE, NULL, back, &sealed), 0);
	assert_memory_not_equal(kek, back, 32);
	tpm_close(t);
}

static void test_srk_provision_is_idempotent(void **state)
{
	struct swtpm *s = *state;
	struct tpm_name a, b;
	tpm *t = open_tpm(s);

	assert_int_equal(tpm_srk_provision(t, &a), 0);
	assert_int_equal(tpm_srk_provision(t, &b), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.bytes, b.bytes, a.len);
	tpm_close(t);
}

static void test_srk_name_change_refused(void **state)
{
	struct swtpm *s = *state, other;
	struct tpm_name name;
	struct tpm_sealed sealed;
	uint8_t kek[32];
	tpm *t = open_tpm(s);

	assert_int_equal(tpm_srk_provision(t, &name), 0);
	assert_int_equal(tpm_kek_create(t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
	tpm_close(t);

	/* A fresh TPM (cleared, or another machine): its SRK differs. */
	assert_int_equal(swtpm_init(&other, false), 0);
	assert_int_equal(swtpm_start(&other), 0);
	t = open_tpm(&other);
	assert_int_equal(tpm_srk_check(t, &name), -ENOENT);
	{
		struct tpm_name fresh;

		assert_int_equal(tpm_srk_provision(t, &fresh), 0);
		assert_memory_not_equal(fresh.bytes, name.bytes, name.len);
	}
	assert_int_equal(tpm_srk_check(t, &name), -EKEYREJECTED);
	/* And the sealed key cannot be loaded under another SRK. */
	assert_int_equal(tpm_kek_unseal(t, &sealed, TPM_KEK_NONE, kek), -EKEYREJECTED);
	tpm_close(t);
	swtpm_cleanup(&other);
}

static int read_file(const char *path, uint8_t *buf, size_t size, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");

	if (!f)
		return -errno;
	*ret_len = fread(buf, 1, size, f);
	fclose(f);
	return 0;
}

static void test_srk_from_swtpm_setup_is_reused(void **state)
{
	struct swtpm *s = *state;
	struct tpm_name name;
	char cmd[512], name_path[128];
	uint8_t tools_name[128];
	size_t len;
	tpm *t;

	/* tpm2-tools tells the Name of what swtpm_setup put there. */
	snprintf(name_path, sizeof(name_path), "%s/srk.name", s->dir);
	snprintf(cmd, sizeof(cmd), "tpm2_readpublic -T '%s' -c 0x81000001 -n '%s' >/dev/null",
		 s->tcti, name_path);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(read_file(name_path, tools_name, sizeof(tools_name), &len), 0);

	t = open_tpm(s);
	assert_int_equal(tpm_srk_provision(t, &name), 0);
	assert_int_equal(name.len, len);
	assert_memory_equal(name.bytes, tools_name, len);
	{
		struct tpm_sealed sealed;
		uint8_t kek[32], back[32];

		assert_int_equal(tpm_kek_create(t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
		assert_int_equal(tpm_kek_unseal(t, &sealed, TPM_KEK_NONE, back), 0);
		assert_memory_equal(kek, back, 32);
	}
	tpm_close(t);
}

static void test_counter_strictly_increases(void **state)
{
	struct swtpm *s = *state;
	uint64_t last = 0, v, deadline;
	tpm *t = open_tpm(s);

	assert_int_equal(tpm_nv_counter_provision(t, NV_INDEX), 0);
	assert_int_equal(tpm_nv_counter_provision(t, NV_INDEX), 0); /* idempotent */
	deadline = util_now_monotonic_us() + 60u * 1000000u;
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(tpm_nv_counter_next(t, NV_INDEX, deadline, &v), 0);
		assert_true(v > last);
		last = v;
	}
	tpm_close(t);

	/* Across a reconnect... */
	t = open_tpm(s);
	assert_int_equal(tpm_nv_counter_next(t, NV_INDEX, deadline, &v), 0);
	assert_true(v > last);
	last = v;
	tpm_close(t);

	/* ... and across an unorderly TPM death and restart. */
	for (int round = 0; round < 3; round++) {
		swtpm_kill(s, SIGKILL);
		assert_int_equal(swtpm_start(s), 0);
		t = open_tpm(s);
		assert_int_equal(tpm_nv_counter_next(t, NV_INDEX, deadline, &v), 0);
		assert_true(v > last);
		last = v;
		tpm_close(t);
	}
}

static void test_counter_index_checks(void **state)
{
	struct swtpm *s = *state;
	char cmd[256];
	tpm *t;

	/* An ordinary 8-byte index is not a counter. */
	snprintf(cmd, sizeof(cmd),
		 "tpm2_nvdefine -T '%s' 0x01800200 -C o -s 8 -a 'ownerread|ownerwrite' >/dev/null",
		 s->tcti);
	assert_int_equal(system(cmd), 0);
	t = open_tpm(s);
	assert_int_equal(tpm_nv_counter_provision(t, 0x01800200), -EEXIST);
	assert_int_equal(tpm_nv_counter_provision(t, 0x01000000), -ERANGE);
	assert_int_equal(tpm_nv_counter_provision(t, 0x01c00000), -ERANGE);
	tpm_close(t);
}

static void test_unreachable_tpm(void **state)
{
	struct swtpm *s = *state;
	uint64_t v;
	tpm *t = open_tpm(s);

	assert_int_equal(tpm_nv_counter_provision(t, NV_INDEX), 0);
	swtpm_kill(s, SIGKILL);
	assert_int_equal(tpm_nv_counter_next(t, NV_INDEX, util_now_monotonic_us() + 1000000u, &v),
			 -EIO);
	tpm_close(t);
	assert_int_equal(tpm_open(s->tcti, &t), -EIO);
}

/* A process killed mid-operation on a TPM without a resource manager
 * leaves its sessions and objects loaded. Simulated here by loading them
 * until the TPM is full and disconnecting without flushing. */
static void test_leftovers_of_dead_processes_are_flushed(void **state)
{
	struct swtpm *s = *state;
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
	TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
	struct tpm_name name;
	struct tpm_sealed sealed;
	uint8_t kek[32], back[32];
	int sessions = 0;
	tpm *t;

	assert_int_equal(Tss2_TctiLdr_Initialize(s->tcti, &tcti), TSS2_RC_SUCCESS);
	assert_int_equal(Esys_Initialize(&esys, tcti, NULL), TSS2_RC_SUCCESS);
	for (;;) {
		ESYS_TR session;
		TSS2_RC rc = Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
						   ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_HMAC,
						   &sym, TPM2_ALG_SHA256, &session);

		if (rc != TSS2_RC_SUCCESS) {
			assert_int_equal(rc & 0xfff, TPM2_RC_SESSION_MEMORY);
			break;
		}
		sessions++;
		assert_true(sessions < 100);
	}
	assert_true(sessions > 0);
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tcti);

	t = open_tpm(s);
	assert_int_equal(tpm_srk_provision(t, &name), 0);
	assert_int_equal(tpm_kek_create(t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
	assert_int_equal(tpm_kek_unseal(t, &sealed, TPM_KEK_NONE, back), 0);
	assert_memory_equal(kek, back, 32);
	tpm_close(t);
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
	for (size_t i = 0; i + m <= n; i++)
		if (memcmp(hay + i, needle, m) == 0)
			return true;
	return false;
}

/* Records the TPM command stream with tpm2-tss's pcap TCTI and looks for
 * the key bytes in it. */
static void test_kek_never_in_clear_on_the_bus(void **state)
{
	struct swtpm *s = *state;
	char pcap_conf[256], pcap_path[128];
	static uint8_t capture[4 * 1024 * 1024];
	struct tpm_name name;
	struct tpm_sealed sealed;
	uint8_t kek[32], back[32], be[8];
	size_t len;
	uint64_t v;
	tpm *t;

	snprintf(pcap_path, sizeof(pcap_path), "%s/bus.pcap", s->dir);
	setenv("TCTI_PCAP_FILE", pcap_path, 1);
	snprintf(pcap_conf, sizeof(pcap_conf), "pcap:%s", s->tcti);
	assert_int_equal(tpm_open(pcap_conf, &t), 0);
	assert_int_equal(tpm_srk_provision(t, &name), 0);
	assert_int_equal(tpm_kek_create(t, TPM_KEK_NONE, NULL, kek, &sealed), 0);
	assert_int_equal(tpm_kek_unseal(t, &sealed, TPM_KEK_NONE, back), 0);
	assert_memory_equal(kek, back, 32);
	/* Positive control: an unencrypted response value must be visible,
	 * or the capture proves nothing. */
	assert_int_equal(tpm_nv_counter_provision(t, NV_INDEX), 0);
	assert_int_equal(tpm_nv_counter_next(t, NV_INDEX, util_now_monotonic_us() + 10000000u, &v),
			 0);
	tpm_close(t);
	unsetenv("TCTI_PCAP_FILE");

	assert_int_equal(read_file(pcap_path, capture, sizeof(capture), &len), 0);
	assert_true(len > 1000);
	util_put_be64(be, v);
	assert_true(contains(capture, len, be, 8));
	assert_false(contains(capture, len, kek, 32));
	/* Nor any 8-byte window of it. */
	for (size_t i = 0; i + 8 <= 32; i++)
		assert_false(contains(capture, len, kek + i, 8));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_seal_unseal_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_srk_provision_is_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_srk_name_change_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_srk_from_swtpm_setup_is_reused,
						setup_with_spk, teardown),
		cmocka_unit_test_setup_teardown(test_counter_strictly_increases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counter_index_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable_tpm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kek_never_in_clear_on_the_bus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftovers_of_dead_processes_are_flushed, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
