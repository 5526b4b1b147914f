/* State directory files and sealed-key files, without a TPM. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/log.h"
#include "keys/sealfile.h"
#include "keys/statedir.h"
#include "tpm/tpmobj.h"
#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static int setup(void **state)
{
	strcpy(dir, "/tmp/tpm2kms-state-XXXXXX");
	assert_non_null(mkdtemp(dir));
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void sample(struct state *s)
{
	struct state_generation g = {.number = 1, .created = 1700000000};

	memset(s, 0, sizeof(*s));
	s->srk_name.len = 34;
	memset(s->srk_name.bytes, 0xab, 34);
	s->nv_index = 0x01800101;
	strcpy(g.key_id, "tpm2-kms-g1-0123456789abcdef0123456789abcdef");
	statedir_gen_file(1, g.file);
	assert_int_equal(state_add(s, &g), 0);
	g.number = 3;
	strcpy(g.key_id, "tpm2-kms-g3-fedcba9876543210fedcba9876543210");
	statedir_gen_file(3, g.file);
	assert_int_equal(state_add(s, &g), 0);
	s->write_generation = 3;
}

static void write_text(const char *name, const char *text)
{
	assert_int_equal(statedir_write(dir, name, text, strlen(text)), 0);
}

static void test_round_trip(void **state)
{
	struct state s, back;
	struct stat st;
	char path[128];

	sample(&s);
	assert_int_equal(state_save(dir, &s), 0);
	snprintf(path, sizeof(path), "%s/state", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(state_load(dir, &back), 0);
	assert_int_equal(back.n_gens, 2);
	assert_int_equal(back.write_generation, 3);
	assert_int_equal(back.nv_index, 0x01800101);
	assert_memory_equal(back.srk_name.bytes, s.srk_name.bytes, 34);
	assert_string_equal(state_find(&back, 3)->key_id, s.gens[1].key_id);
	assert_string_equal(state_find(&back, 1)->file, "gen-000001.pem");
	assert_int_equal(state_remove(&back, 1), 0);
	assert_null(state_find(&back, 1));
	state_free(&s);
	state_free(&back);
}

static void test_damaged_state(void **state)
{
	static const char *const head = "format 1\nsrk-name 000b1234\nnv-index 0x01800101\n";
	static const char *const bad[] = {
		"write-generation 1\n", /* no generation line */
		"write-generation 1\ngeneration 1 created 1 key-id x file gen-000001.pem policy "
		"none\n",
		"write-generation 1\ngeneration 1 created 1 key-id "
		"tpm2-kms-g2-0123456789abcdef0123456789abcdef file gen-000001.pem policy none\n",
		"write-generation 1\ngeneration 1 created 1 key-id "
		"tpm2-kms-g1-0123456789abcdef0123456789abcdef file ../etc/passwd policy none\n",
		"write-generation 1\ngeneration 1 created 1 key-id "
		"tpm2-kms-g1-0123456789abcdef0123456789abcdef file gen-000001.pem policy frob\n",
		/* an admin key that is not a key */
		"admin-key 3059\nwrite-generation 1\ngeneration 1 created 1 key-id "
		"tpm2-kms-g1-0123456789abcdef0123456789abcdef file gen-000001.pem policy none\n",
		"write-generation 1\nsurprise 1\n",
	};
	struct state s;
	char text[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "%s%s", head, bad[i]);
		write_text("state", text);
		assert_int_equal(state_load(dir, &s), -EBADMSG);
	}
	write_text("state", "format 4\n"); /* past STATE_FORMAT_MAX */
	assert_int_equal(state_load(dir, &s), -EPROTONOSUPPORT);
	unlink(strcat(strcpy(text, dir), "/state"));
	assert_int_equal(state_load(dir, &s), -ENOENT);
}

static void test_directory_checks(void **state)
{
	char sub[128];

	snprintf(sub, sizeof(sub), "%s/new", dir);
	assert_int_equal(statedir_open(sub, false), -ENOENT);
	assert_int_equal(statedir_open(sub, true), 0);
	chmod(sub, 0770);
	assert_int_equal(statedir_open(sub, false), -EPERM);
	chmod(sub, 0707);
	assert_int_equal(statedir_open(sub, false), -EPERM);
	chmod(sub, 0700);
	assert_int_equal(statedir_open(sub, false), 0);
	snprintf(sub, sizeof(sub), "%s/file", dir);
	write_text("file", "x");
	assert_int_equal(statedir_open(sub, false), -ENOTDIR);
}

static void test_sweep(void **state)
{
	struct state s;
	char path[128];

	sample(&s);
	write_text("gen-000001.pem", "a");
	write_text("gen-000003.pem", "b");
	write_text("gen-000004.pem", "orphan of a killed rotate");
	write_text(".state.tmp.999999999", "temp of a dead writer");
	statedir_sweep(dir, &s);
	snprintf(path, sizeof(path), "%s/gen-000004.pem", dir);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/.state.tmp.999999999", dir);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/gen-000003.pem", dir);
	assert_int_equal(access(path, F_OK), 0);
	state_free(&s);
}

static void test_counts(void **state)
{
	struct decrypt_counts *c = calloc(1, sizeof(*c)), *back = calloc(1, sizeof(*back));

	c->pid = getpid();
	c->n = 2;
	c->gen[0] = 1;
	c->count[0] = 5;
	c->gen[1] = 2;
	c->count[1] = 0;
	assert_int_equal(counts_save(dir, c), 0);
	assert_int_equal(counts_load(dir, back), 0);
	assert_int_equal(counts_get(back, 1), 5);
	assert_int_equal(counts_get(back, 3), 0);
	/* Counts of a daemon that is gone do not count. */
	c->pid = 999999999;
	assert_int_equal(counts_save(dir, c), 0);
	assert_int_equal(counts_load(dir, back), 0);
	assert_int_equal(counts_get(back, 1), 0);
	free(c);
	free(back);
}

static void test_sealfile(void **state)
{
	struct tpm_sealed s = {0}, back;
	char *pem;
	size_t len;

	s.pub_len = 90;
	s.priv_len = 160;
	for (size_t i = 0; i < 160; i++) {
		s.pub[i % 90] = (uint8_t)i;
		s.priv[i] = (uint8_t)(255 - i);
	}
	assert_int_equal(sealfile_encode(&s, &pem, &len), 0);
	assert_non_null(strstr(pem, "-----BEGIN TSS2 PRIVATE KEY-----\n"));
	assert_int_equal(sealfile_decode(pem, len, &back), 0);
	assert_int_equal(back.pub_len, 90);
	assert_int_equal(back.priv_len, 160);
	assert_memory_equal(back.pub, s.pub, 90);
	assert_memory_equal(back.priv, s.priv, 160);
	/* Damaged: truncated base64, other PEM type, garbage. */
	assert_int_equal(sealfile_decode(pem, len / 2, &back), -EINVAL);
	{
		char *other = strdup(pem);
		char *p;

		while ((p = strstr(other, "TSS2 PRIVATE KEY")))
			memcpy(p, "TSS2 PRIVATE KEZ", 16);
		assert_int_equal(sealfile_decode(other, len, &back), -EINVAL);
		free(other);
	}
	assert_int_equal(sealfile_decode("not a pem", 9, &back), -EINVAL);
	free(pem);
}

/* An admin key and `dup` generations need format 2; without them the file
 * stays format 1, readable by older versions. */
static void test_admin_key_and_kinds(void **state)
{
	/* An ECC P-256 SubjectPublicKeyInfo (openssl genpkey; pkey -pubout). */
	static const char admin_hex[] =
		"3059301306072a8648ce3d020106082a8648ce3d03010703420004e0f12d008b65cf000d8ec7f2"
		"3b456b367c9f7b809058213a1f83c171616700dfaee406076e3f57b1c1f8044954e4cb85d114b3"
		"2ddf10a5c21e60a4b4c506d0bf";
	struct state s, back;
	struct state_generation g = {.number = 4, .created = 5, .kind = TPM_KEK_DUP};
	char *text;
	size_t len;

	sample(&s);
	assert_int_equal(state_save(dir, &s), 0);
	assert_int_equal(statedir_read(dir, "state", 4096, &text, &len), 0);
	assert_non_null(strstr(text, "\nformat 1\n"));
	free(text);

	s.anchors.admin_key_len = (sizeof(admin_hex) - 1) / 2;
	assert_int_equal(util_unhex(admin_hex, s.anchors.admin_key, s.anchors.admin_key_len), 0);
	strcpy(g.key_id, "tpm2-kms-g4-00112233445566778899aabbccddeeff");
	statedir_gen_file(4, g.file);
	assert_int_equal(state_add(&s, &g), 0);
	assert_int_equal(state_save(dir, &s), 0);
	assert_int_equal(statedir_read(dir, "state", 4096, &text, &len), 0);
	assert_non_null(strstr(text, "\nformat 2\n"));
	assert_non_null(strstr(text, "policy dup\n"));
	free(text);
	assert_int_equal(state_load(dir, &back), 0);
	assert_int_equal(back.anchors.admin_key_len, s.anchors.admin_key_len);
	assert_memory_equal(back.anchors.admin_key, s.anchors.admin_key, s.anchors.admin_key_len);
	assert_int_equal(state_find(&back, 4)->kind, TPM_KEK_DUP);
	assert_int_equal(state_find(&back, 1)->kind, TPM_KEK_NONE);
	state_free(&back);
	state_free(&s);
}

/* Files written by tpm2-kms 0.1.0, before the codec moved to OpenSSL's
 * ASN.1 templates: they load unchanged and encode back to the same bytes. */
static void test_files_of_0_1_0(void **state)
{
	const char *src = getenv("TOP_SRCDIR");
	char fixture[4096], *pem, *again;
	size_t len, again_len;
	struct tpm_sealed s;
	struct state st;

	snprintf(fixture, sizeof(fixture), "%s/tests/fixtures/v0.1.0/state", src ? src : "..");
	assert_int_equal(state_load(fixture, &st), 0);
	assert_int_equal(st.write_generation, 2);
	assert_int_equal(st.n_gens, 2);
	assert_int_equal(st.gens[0].kind, TPM_KEK_NONE);
	assert_int_equal(st.anchors.admin_key_len, 0);
	for (size_t i = 0; i < st.n_gens; i++) {
		assert_int_equal(statedir_read(fixture, st.gens[i].file, SEALFILE_MAX_BYTES, &pem,
					       &len),
				 0);
		assert_int_equal(sealfile_decode(pem, len, &s), 0);
		assert_int_equal(tpmobj_sealed_check(&s, TPM_KEK_NONE, NULL), 0);
		assert_int_equal(tpmobj_sealed_check(&s, TPM_KEK_DUP, NULL), -EINVAL);
		assert_int_equal(sealfile_encode(&s, &again, &again_len), 0);
		assert_int_equal(again_len, len);
		assert_memory_equal(again, pem, len);
		free(again);
		free(pem);
	}
	state_free(&st);
}

static void test_sealfile_refuses_policy(void **state)
{
	/* A TSS2 key with a [1] policy element (0xa1): a kind this version
	 * does not unseal. DER: SEQ { OID sealed, [0] TRUE, [1] {}, INT
	 * 0x81000001, OCTET "", OCTET "" } */
	static const char pem[] = "-----BEGIN TSS2 PRIVATE KEY-----\n"
				  "MBoGBmeBBQoBBaADAQH/oQACBQCBAAABBAAEAA==\n"
				  "-----END TSS2 PRIVATE KEY-----\n";
	struct tpm_sealed back;

	assert_int_equal(sealfile_decode(pem, sizeof(pem) - 1, &back), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_directory_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
		cmocka_unit_test(test_sealfile),
		cmocka_unit_test(test_sealfile_refuses_policy),
		cmocka_unit_test_setup_teardown(test_admin_key_and_kinds, setup, teardown),
		cmocka_unit_test(test_files_of_0_1_0),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
