/* Allocation failure along real Status, Encrypt and Decrypt calls: the
 * whole daemon stack (HTTP/2 by nghttp2, gRPC, protobuf-c, the plugin,
 * OpenSSL, the TPM worker with tpm2-tss, libuv) in one process against a
 * private swtpm, with malloc failing at the N-th allocation for every N
 * along each call. Nothing may crash or leak, and the next call succeeds.
 *
 * malloc/calloc/realloc/free are defined here, in the executable, so they
 * interpose for every shared library too; they forward to glibc's
 * __libc_* functions and keep the set of live blocks to find leaks. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "keys/envelope.h"
#include "transport/grpc.h"
#include "transport/h2.h"
#include "h2client.h"
#include "admin/keyadmin.h"
#include "kms/kms.h"
#include "base/log.h"
#include "pbwire.h"
#include "kms/backend.h"
#include "base/secmem.h"
#include "swtpm.h"


#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);

/* --- the counting allocator ---------------------------------------------- */

#define SLOTS (1u << 20)
static void *live[SLOTS]; /* open addressing; NULL empty, (void *)1 deleted */
static size_t n_live;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic long fail_at;   /* 0: off; else fail when count reaches it */
static _Atomic bool armed;     /* only the server's work counts, not the test's */
static _Atomic long counted;
static _Atomic long injected;
/* Set when the failed allocation was OpenSSL's, working for tpm2-tss's
 * ESAPI crypto backend (OSSL_LIB_CTX_new, EVP_MD_fetch, ...): with
 * tss2-esys 3.2.1 and OpenSSL 3.0 those paths lose a few blocks when an
 * allocation fails half-way. A leak outside this project, reported by name
 * instead of hidden; any other leak fails the test. */
static _Atomic bool third_party_site;

static bool in_esys_openssl(void)
{
	void *frames[32];
	int n = backtrace(frames, 32);
	bool crypto_first = false, seen_foreign = false;

	for (int i = 0; i < n; i++) {
		Dl_info info;
		const char *lib;

		if (!dladdr(frames[i], &info) || !info.dli_fname)
			continue;
		lib = info.dli_fname;
		if (!seen_foreign && !strstr(lib, ".so")) /* this test's allocator */
			continue;
		if (!seen_foreign) {
			seen_foreign = true;
			crypto_first = strstr(lib, "libcrypto") != NULL;
			if (!crypto_first)
				return false;
			continue;
		}
		if (strstr(lib, "libtss2-esys"))
			return true;
		if (!strstr(lib, ".so")) /* back in our code without ESAPI */
			return false;
	}
	return false;
}

static size_t slot_of(void *p)
{
	return (size_t)(((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull) & (SLOTS - 1);
}

static void track(void *p)
{
	size_t i;

	pthread_mutex_lock(&lock);
	for (i = slot_of(p); live[i] && live[i] != (void *)1; i = (i + 1) & (SLOTS - 1))
		;
	live[i] = p;
	n_live++;
	pthread_mutex_unlock(&lock);
}

static void untrack(void *p)
{
	pthread_mutex_lock(&lock);
	for (size_t i = slot_of(p); live[i]; i = (i + 1) & (SLOTS - 1)) {
		if (live[i] == p) {
			live[i] = (void *)1;
			n_live--;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

static bool should_fail(void)
{
	long n;

	if (!atomic_load(&fail_at) || !atomic_load(&armed))
		return false;
	n = atomic_fetch_add(&counted, 1) + 1;
	if (n == atomic_load(&fail_at)) {
		atomic_fetch_add(&injected, 1);
		atomic_store(&third_party_site, in_esys_openssl());
		if (getenv("ALLOC_FAIL_TRACE")) {
			/* Where the failure hits, for debugging a finding. */
			void *frames[24];

			backtrace_symbols_fd(frames, backtrace(frames, 24), 2);
		}
		return true;
	}
	return false;
}

void *malloc(size_t n)
{
	void *p;

	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	p = __libc_malloc(n);
	if (p)
		track(p);
	return p;
}

void *calloc(size_t a, size_t b)
{
	void *p;

	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	p = __libc_calloc(a, b);
	if (p)
		track(p);
	return p;
}

void *realloc(void *old, size_t n)
{
	void *p;

	if (!old)
		return malloc(n);
	if (n == 0) {
		free(old);
		return NULL;
	}
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	p = __libc_realloc(old, n);
	if (p) {
		untrack(old);
		track(p);
	}
	return p;
}

void free(void *p)
{
	if (!p)
		return;
	untrack(p);
	__libc_free(p);
}

static size_t live_blocks(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = n_live;
	pthread_mutex_unlock(&lock);
	return n;
}

/* --- the stack ----------------------------------------------------------- */

static struct swtpm tpm_sim;
static char state_dir[128];
static uv_loop_t loop;
static grpc_server *g;
static kms_service *svc;
static backend *p;
static bool ready;
static uint8_t ciphertext[128];
static size_t ciphertext_len;
static char key_id[80];

static const struct h2_limits limits = {
	.max_concurrent_streams = 16,
	.max_header_list_bytes = 8192,
	.max_pings_per_s = 50,
	.max_settings_per_s = 50,
	.max_resets_per_s = 50,
};

static void on_ready(void *arg)
{
	ready = true;
}

static int setup(void **state)
{
	struct backend_config pc = {
		.state_dir = state_dir,
		.probe_interval_ms = 3600 * 1000, /* no probes in the middle */
		.max_tpm_queue = 16,
		.on_ready = on_ready,
	};
	struct grpc_limits gl = {.max_inflight = 16, .max_timeout_ms = 30000};
	struct state st;

	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR + 0);
	assert_int_equal(secmem_init(256 * 1024), 0);
	assert_int_equal(envelope_init(), 0);
	assert_int_equal(swtpm_init(&tpm_sim, false), 0);
	assert_int_equal(swtpm_start(&tpm_sim), 0);
	snprintf(state_dir, sizeof(state_dir), "%s/keys", tpm_sim.dir);
	assert_int_equal(keyadmin_provision(state_dir, tpm_sim.tcti, &(struct keyadmin_config){0}, &st), 0);
	pc.tcti = tpm_sim.tcti;
	uv_loop_init(&loop);
	assert_int_equal(grpc_server_new(&loop, &gl, &g), 0);
	assert_int_equal(backend_new(&loop, &pc, &st, &p), 0);
	assert_int_equal(kms_service_new(g, backend_ops(), p, &svc), 0);
	state_free(&st);
	while (!ready)
		uv_run(&loop, UV_RUN_ONCE);
	return 0;
}

static int teardown(void **state)
{
	backend_stop(p);
	uv_run(&loop, UV_RUN_DEFAULT);
	kms_service_free(svc);
	grpc_server_free(g);
	uv_loop_close(&loop);
	envelope_finish();
	swtpm_cleanup(&tpm_sim);
	return 0;
}

enum call { CALL_STATUS, CALL_ENCRYPT, CALL_DECRYPT };

static void arm(void)
{
	atomic_store(&armed, true);
}

static void disarm(void)
{
	atomic_store(&armed, false);
}

/* The loop runs the server's side: the backend's completions. */
static void run_loop(uv_run_mode mode)
{
	arm();
	uv_run(&loop, mode);
	disarm();
}

/* One call on a fresh connection. Returns its grpc-status, or -1 when the
 * connection died first. On OK, keeps an Encrypt's ciphertext. */
static int one_call(enum call kind)
{
	static const char *paths[] = {"/v2.KeyManagementService/Status",
				      "/v2.KeyManagementService/Encrypt",
				      "/v2.KeyManagementService/Decrypt"};
	uint8_t req[256];
	size_t n = 0;
	h2client *c = NULL;
	h2_conn *conn = NULL;
	const struct h2c_response *r;
	int32_t id;
	int status = -1, n_conn;

	if (kind == CALL_ENCRYPT)
		n = pbwire_put(req, 1, "0123456789abcdef0123456789abcdef", 32);
	else if (kind == CALL_DECRYPT) {
		n = pbwire_put(req, 1, ciphertext, ciphertext_len);
		n += pbwire_put(req + n, 3, key_id, strlen(key_id));
	}
	if (h2client_new(&c) < 0)
		return -1;
	h2client_set_server_hooks(c, arm, disarm);
	arm();
	n_conn = h2_conn_new(&limits, grpc_stream_callbacks(), g, NULL, NULL, &conn);
	disarm();
	if (n_conn < 0)
		goto out;
	id = h2client_grpc(c, paths[kind], req, n);
	for (int i = 0; i < 10000; i++) {
		if (h2client_pump(c, conn) < 0)
			break;
		r = h2client_response(c, id);
		if (!r || r->closed) {
			if (r && r->grpc_status >= 0)
				status = r->grpc_status;
			if (r && status == 0 && kind == CALL_ENCRYPT && r->data_len > 7) {
				ciphertext_len = r->data[6];
				memcpy(ciphertext, r->data + 7, ciphertext_len);
			}
			break;
		}
		if (!h2_conn_alive(conn))
			break;
		/* Nothing more to move: wait for the backend. */
		if (grpc_server_inflight(g) == 0)
			break;
		run_loop(UV_RUN_ONCE);
	}
out:
	h2_conn_free(conn);
	if (c)
		h2client_free(c);
	/* Calls still with the backend finish; their handles close. */
	while (grpc_server_inflight(g) > 0)
		run_loop(UV_RUN_ONCE);
	run_loop(UV_RUN_NOWAIT);
	return status;
}

/* Fails the n-th allocation of one call, then waits for a call to succeed.
 * Returns the failed call's status, or INT_MIN when fewer than n
 * allocations happened. */
static void recover(enum call kind, const char *name, long n);

static int fail_and_recover(enum call kind, const char *name, long n)
{
	int status;

	for (int attempt = 0;; attempt++) {
		atomic_store(&counted, 0);
		atomic_store(&injected, 0);
		atomic_store(&third_party_site, false);
		atomic_store(&fail_at, n);
		status = one_call(kind);
		atomic_store(&fail_at, 0);
		if (atomic_load(&injected) > 0)
			break;
		if (status == 0)
			return INT_MIN;
		/* Refused early (the last failure hit a health probe and the
		 * TPM is being reconnected): recover, try this n again. */
		if (attempt == 5)
			fail_msg("%s: call fails without allocating (n=%ld)", name, n);
		recover(kind, name, n);
	}
	recover(kind, name, n);
	return status;
}

static void recover(enum call kind, const char *name, long n)
{
	/* The next call works (after a TPM reconnect, if the failure broke
	 * the TPM connection). */
	for (int tries = 0; one_call(kind) != 0; tries++) {
		if (tries == 100)
			fail_msg("%s: no recovery after allocation %ld failed", name, n);
		/* Give the TPM health probe its turn. */
		run_loop(UV_RUN_ONCE);
	}
}

static void sweep(enum call kind, const char *name)
{
	long n;
	unsigned failed_calls = 0, third_party = 0;
	size_t cached = 0;

	/* Warm-up: lazily built state (OpenSSL method caches...) is made
	 * before counting. */
	assert_int_equal(one_call(kind), 0);
	assert_int_equal(one_call(kind), 0);
	for (n = 1;; n++) {
		size_t before = live_blocks();
		int status;

		if (getenv("ALLOC_FAIL_PROGRESS"))
			fprintf(stderr, "%s n=%ld live=%zu\n", name, n, live_blocks());
		status = fail_and_recover(kind, name, n);
		if (status == INT_MIN) {
			/* The call made fewer than n allocations: every one
			 * has failed once. */
			break;
		}
		if (status != 0)
			failed_calls++;
		/* Nothing leaked: the state is the one before. A TPM
		 * reconnect may fill one-time caches (the TCTI loader's
		 * dlopen) the first time; a leak grows on every repeat. */
		if (live_blocks() != before) {
			size_t again = live_blocks();

			fail_and_recover(kind, name, n);
			if (live_blocks() != again && atomic_load(&third_party_site)) {
				print_message("%s: allocation %ld (OpenSSL inside tss2-esys) "
					      "failing loses %zd blocks in those libraries\n",
					      name, n, (ssize_t)live_blocks() - (ssize_t)again);
				third_party++;
				continue;
			}
			if (live_blocks() != again)
				fail_msg("%s: allocation %ld failing leaks %zd blocks each time",
					 name, n, (ssize_t)live_blocks() - (ssize_t)again);
			cached += live_blocks() - before;
		}
	}
	print_message("%s: %ld allocations along the call, each failed once; %u calls "
		      "answered with an error, the rest recovered; %zu blocks kept by one-time "
		      "caches after reconnects; leaks: none of ours, %u at the tss2-esys site\n",
		      name, n - 1, failed_calls, cached, third_party);
}

static void test_status(void **state)
{
	sweep(CALL_STATUS, "Status");
}

static void test_encrypt(void **state)
{
	sweep(CALL_ENCRYPT, "Encrypt");
}

static void test_decrypt(void **state)
{
	const struct kms_backend_ops *ops = backend_ops();
	const char *h, *k;

	ops->status(p, &h, &k);
	snprintf(key_id, sizeof(key_id), "%s", k);
	assert_int_equal(one_call(CALL_ENCRYPT), 0);
	sweep(CALL_DECRYPT, "Decrypt");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_encrypt),
		cmocka_unit_test(test_decrypt),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
