/* The HTTP/2 + gRPC + KMS routing stack, driven in memory by an nghttp2
 * client, with the fake backend behind it. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fake_backend.h"
#include "transport/grpc.h"
#include "transport/h2.h"
#include "h2client.h"
#include "kms/kms.h"
#include "pbwire.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct fixture {
	uv_loop_t loop;
	grpc_server *g;
	kms_service *svc;
	fake_backend *fb;
	h2_conn *conn;
	h2client *client;
};

static struct h2_limits limits = {
	.max_concurrent_streams = 100,
	.max_header_list_bytes = 8192,
	.max_pings_per_s = 20,
	.max_settings_per_s = 20,
	.max_resets_per_s = 50,
};

static int setup_full(void **state, uint32_t max_inflight, bool starting)
{
	struct fixture *f = calloc(1, sizeof(*f));
	/* 80 KB of request bytes buffered at most. */
	struct grpc_limits gl = {.max_inflight = max_inflight,
				 .max_timeout_ms = 10000,
				 .max_buffered_bytes = 80000};

	uv_loop_init(&f->loop);
	assert_int_equal(grpc_server_new(&f->loop, &gl, &f->g), 0);
	assert_int_equal(fake_backend_new(&f->loop, &f->fb), 0);
	assert_int_equal(kms_service_new(f->g,
					 starting ? fake_backend_starting_ops(f->fb)
						  : fake_backend_ops(),
					 f->fb, &f->svc),
			 0);
	assert_int_equal(h2_conn_new(&limits, grpc_stream_callbacks(), f->g, NULL, NULL, &f->conn), 0);
	assert_int_equal(h2client_new(&f->client), 0);
	*state = f;
	return 0;
}

static int setup_with(void **state, uint32_t max_inflight)
{
	return setup_full(state, max_inflight, false);
}

static int setup_starting(void **state)
{
	return setup_full(state, 100, true);
}

static int setup(void **state)
{
	return setup_with(state, 100);
}

static int setup_one_inflight(void **state)
{
	return setup_with(state, 1);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	fake_backend_stop(f->fb);
	h2_conn_free(f->conn);
	h2client_free(f->client);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	kms_service_free(f->svc);
	grpc_server_free(f->g);
	fake_backend_free(f->fb);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	return 0;
}

/* Pumps bytes and runs loop timers until the stream closes. */
static const struct h2c_response *wait_for(struct fixture *f, int32_t id)
{
	const struct h2c_response *r;

	for (int i = 0; i < 1000; i++) {
		h2client_pump(f->client, f->conn);
		r = h2client_response(f->client, id);
		assert_non_null(r);
		if (r->closed)
			return r;
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	fail_msg("stream %d never closed", id);
	return NULL;
}

/* Response message of a successful unary call. */
static const uint8_t *message_of(const struct h2c_response *r, size_t *ret_len)
{
	assert_int_equal(r->grpc_status, 0);
	assert_false(r->trailers_only);
	assert_true(r->data_len >= 5);
	assert_int_equal(r->data[0], 0);
	*ret_len = (size_t)r->data[1] << 24 | (size_t)r->data[2] << 16 | (size_t)r->data[3] << 8 |
		   r->data[4];
	assert_int_equal(*ret_len + 5, r->data_len);
	return r->data + 5;
}

static void assert_field_str(const uint8_t *msg, size_t len, unsigned field, const char *want)
{
	const uint8_t *v;
	size_t vl = 0;

	v = pbwire_field(msg, len, field, &vl);
	assert_non_null(v);
	assert_int_equal(vl, strlen(want));
	assert_memory_equal(v, want, vl);
}

static void assert_status(const struct h2c_response *r, int grpc_status)
{
	assert_string_equal(r->status, "200");
	assert_string_equal(r->content_type, "application/grpc");
	assert_int_equal(r->grpc_status, grpc_status);
}

static void test_status_v2(void **state)
{
	struct fixture *f = *state;
	int32_t id = h2client_grpc(f->client, "/v2.KeyManagementService/Status", NULL, 0);
	const struct h2c_response *r = wait_for(f, id);
	const uint8_t *msg;
	size_t len;

	msg = message_of(r, &len);
	assert_field_str(msg, len, 1, "v2");
	assert_field_str(msg, len, 2, "ok");
	assert_field_str(msg, len, 3, FAKE_KEY_ID);
	assert_int_equal(r->rst_code, 0);
}

static void test_status_v2beta1_and_version_v1(void **state)
{
	struct fixture *f = *state;
	int32_t a = h2client_grpc(f->client, "/v2beta1.KeyManagementService/Status", NULL, 0);
	int32_t b = h2client_grpc(f->client, "/v1beta1.KeyManagementService/Version", NULL, 0);
	const uint8_t *msg;
	size_t len;

	msg = message_of(wait_for(f, a), &len);
	assert_field_str(msg, len, 1, "v2beta1");
	msg = message_of(wait_for(f, b), &len);
	assert_field_str(msg, len, 1, "v1beta1");
	assert_field_str(msg, len, 2, "tpm2-kms");
}

static void round_trip(struct fixture *f, const char *prefix, size_t pt_len)
{
	char path[80];
	uint8_t *pt = malloc(pt_len), *req = malloc(pt_len + 64), ct[70000];
	const uint8_t *msg, *v;
	size_t len, vl = 0, n, ct_len;
	int32_t id;

	for (size_t i = 0; i < pt_len; i++)
		pt[i] = (uint8_t)(i * 7 + 1);
	snprintf(path, sizeof(path), "/%s.KeyManagementService/Encrypt", prefix);
	n = pbwire_put(req, strcmp(prefix, "v1beta1") == 0 ? 2 : 1, pt, pt_len);
	id = h2client_grpc(f->client, path, req, n);
	msg = message_of(wait_for(f, id), &len);
	v = pbwire_field(msg, len, 1, &vl);
	assert_non_null(v);
	assert_int_equal(vl, pt_len + 4);
	memcpy(ct, v, vl);
	ct_len = vl;
	if (strcmp(prefix, "v1beta1") != 0)
		assert_field_str(msg, len, 2, FAKE_KEY_ID);

	snprintf(path, sizeof(path), "/%s.KeyManagementService/Decrypt", prefix);
	if (strcmp(prefix, "v1beta1") == 0) {
		n = pbwire_put(req, 2, ct, ct_len);
	} else {
		n = pbwire_put(req, 1, ct, ct_len);
		n += pbwire_put(req + n, 3, FAKE_KEY_ID, strlen(FAKE_KEY_ID));
	}
	req = realloc(req, n);
	id = h2client_grpc(f->client, path, req, n);
	msg = message_of(wait_for(f, id), &len);
	v = pbwire_field(msg, len, 1, &vl);
	assert_non_null(v);
	assert_int_equal(vl, pt_len);
	assert_memory_equal(v, pt, pt_len);
	free(pt);
	free(req);
}

static void test_round_trips(void **state)
{
	struct fixture *f = *state;

	round_trip(f, "v2", 32);
	round_trip(f, "v2beta1", 32);
	round_trip(f, "v1beta1", 32);
}

static void test_reassembly_across_frames(void **state)
{
	/* 40000 bytes span three DATA frames at the default 16 KiB size. */
	round_trip(*state, "v2", 40000);
}

static void test_unknown_method(void **state)
{
	struct fixture *f = *state;
	const struct h2c_response *r =
		wait_for(f, h2client_grpc(f->client, "/v2.KeyManagementService/Nope", NULL, 0));

	assert_status(r, 12);
	assert_true(r->trailers_only);
	assert_string_equal(r->grpc_message, "unknown method");
}

static void test_http_errors(void **state)
{
	struct fixture *f = *state;
	const struct h2_nv get[] = {{":method", "GET"}, {":scheme", "http"},
				    {":path", "/v2.KeyManagementService/Status"},
				    {":authority", "x"}, {NULL, NULL}};
	const struct h2_nv json[] = {{":method", "POST"}, {":scheme", "http"},
				     {":path", "/v2.KeyManagementService/Status"},
				     {":authority", "localhost"},
				     {"content-type", "application/json"}, {NULL, NULL}};
	uint8_t empty[5] = {0};
	int32_t a = h2client_request(f->client, get, NULL, 0, true);
	int32_t b = h2client_request(f->client, json, empty, 5, true);

	assert_string_equal(wait_for(f, a)->status, "405");
	assert_string_equal(wait_for(f, b)->status, "415");
}

static void test_malformed_requests_reset(void **state)
{
	struct fixture *f = *state;
	const struct h2_nv bad_te[] = {{":method", "POST"}, {":scheme", "http"},
				       {":path", "/v2.KeyManagementService/Status"},
				       {"content-type", "application/grpc"},
				       {"te", "gzip"}, {NULL, NULL}};
	const struct h2_nv no_path[] = {{":method", "POST"}, {":scheme", "http"},
					{"content-type", "application/grpc"}, {NULL, NULL}};
	/* (nghttp2's client lowercases names, so upper case cannot be sent
	 * from here; a pseudo-header after a regular one can.) */
	const struct h2_nv late_pseudo[] = {{":method", "POST"}, {":scheme", "http"},
					    {"content-type", "application/grpc"},
					    {":path", "/v2.KeyManagementService/Status"},
					    {NULL, NULL}};
	const struct h2_nv two_paths[] = {{":method", "POST"}, {":scheme", "http"},
					  {":path", "/v2.KeyManagementService/Status"},
					  {":path", "/v2.KeyManagementService/Status"},
					  {"content-type", "application/grpc"}, {NULL, NULL}};
	const struct h2_nv conn_hdr[] = {{":method", "POST"}, {":scheme", "http"},
					 {":path", "/v2.KeyManagementService/Status"},
					 {"connection", "close"}, {NULL, NULL}};
	const struct h2_nv *cases[] = {bad_te, no_path, late_pseudo, two_paths, conn_hdr};

	for (size_t i = 0; i < 5; i++) {
		int32_t id = h2client_request(f->client, cases[i], NULL, 0, true);
		const struct h2c_response *r = wait_for(f, id);

		assert_int_not_equal(r->rst_code, 0);
		assert_int_equal(r->grpc_status, -1);
	}
	/* The connection still serves. */
	test_status_v2(state);
}

static void test_oversized_message(void **state)
{
	struct fixture *f = *state;
	size_t n = 65537;
	uint8_t *big = calloc(1, n);
	const struct h2c_response *r;

	r = wait_for(f, h2client_grpc(f->client, "/v2.KeyManagementService/Encrypt", big, n));
	assert_status(r, 8);
	assert_true(r->trailers_only);
	free(big);
	test_status_v2(state);
}

static void grpc_raw(struct fixture *f, const char *encoding, const char *timeout,
		     const uint8_t *body, size_t len, int want_status, const char *want_message)
{
	struct h2_nv h[10] = {{":method", "POST"}, {":scheme", "http"},
			      {":path", "/v2.KeyManagementService/Encrypt"},
			      {":authority", "%2Frun%2Fkms.sock"},
			      {"content-type", "application/grpc+proto"}, {"te", "trailers"}};
	size_t n = 6;
	const struct h2c_response *r;

	if (encoding)
		h[n++] = (struct h2_nv){"grpc-encoding", encoding};
	if (timeout)
		h[n++] = (struct h2_nv){"grpc-timeout", timeout};
	h[n] = (struct h2_nv){NULL, NULL};
	r = wait_for(f, h2client_request(f->client, h, body, len, true));
	assert_status(r, want_status);
	if (want_message)
		assert_string_equal(r->grpc_message, want_message);
}

static void test_compression(void **state)
{
	struct fixture *f = *state;
	const uint8_t compressed[] = {1, 0, 0, 0, 2, 0x0a, 0x00};

	grpc_raw(f, NULL, NULL, compressed, sizeof(compressed), 13,
		 "compressed message without grpc-encoding");
	grpc_raw(f, "gzip", NULL, compressed, sizeof(compressed), 12, "unsupported grpc-encoding");
}

static void test_message_framing_errors(void **state)
{
	struct fixture *f = *state;
	const uint8_t truncated[] = {0, 0, 0, 0, 10, 0x0a, 0x01};
	const uint8_t two[] = {0, 0, 0, 0, 3, 0x0a, 0x01, 'x', 0, 0, 0, 0, 0};
	const uint8_t bad_flag[] = {7, 0, 0, 0, 0};
	const uint8_t garbage_pb[] = {0, 0, 0, 0, 2, 0x0a, 0x09};
	const uint8_t empty_pt[] = {0, 0, 0, 0, 0};

	grpc_raw(f, NULL, NULL, truncated, sizeof(truncated), 13, "truncated request message");
	grpc_raw(f, NULL, NULL, two, sizeof(two), 12,
		 "more than one request message on a unary call");
	grpc_raw(f, NULL, NULL, bad_flag, sizeof(bad_flag), 13, "invalid message flags");
	grpc_raw(f, NULL, NULL, truncated, 0, 12, "unary call without a request message");
	grpc_raw(f, NULL, NULL, garbage_pb, sizeof(garbage_pb), 13,
		 "cannot decode request message");
	grpc_raw(f, NULL, NULL, empty_pt, sizeof(empty_pt), 3, "empty plaintext");
	grpc_raw(f, NULL, "soon", empty_pt, sizeof(empty_pt), 13, "malformed grpc-timeout");
}

static void test_deadline(void **state)
{
	struct fixture *f = *state;
	uint8_t body[64];
	size_t n;

	body[0] = 0;
	n = pbwire_put(body + 5, 1, "slow:2000", 9);
	body[1] = body[2] = body[3] = 0;
	body[4] = (uint8_t)n;
	grpc_raw(f, NULL, "20m", body, n + 5, 4, "deadline exceeded");
	/* The late result is dropped; the connection goes on. */
	test_status_v2(state);
}

/* The headers of an Encrypt with a grpc-timeout. */
static void encrypt_headers(struct h2_nv h[8], const char *timeout)
{
	struct h2_nv proto[] = {{":method", "POST"},
				{":scheme", "http"},
				{":path", "/v2.KeyManagementService/Encrypt"},
				{":authority", "localhost"},
				{"content-type", "application/grpc"},
				{"te", "trailers"},
				{"grpc-timeout", timeout},
				{NULL, NULL}};

	memcpy(h, proto, sizeof(proto));
}

static void test_zero_timeout_has_expired(void **state)
{
	/* A body that never ends, under a zero timeout in each unit: the
	 * call is over at once (it used to have no deadline at all). */
	static const char *const zeros[] = {"0m", "0S", "0n", "00000000H"};
	struct fixture *f = *state;
	uint8_t body[5 + 100] = {0, 0, 0, 1, 0};
	struct h2_nv h[8];

	for (size_t i = 0; i < sizeof(zeros) / sizeof(zeros[0]); i++) {
		const struct h2c_response *r;

		encrypt_headers(h, zeros[i]);
		r = wait_for(f, h2client_request(f->client, h, body, sizeof(body), false));
		assert_status(r, 4);
	}
	test_status_v2(state);
}

/* How many of the n calls were refused for the request budget; the others
 * must still be open. */
static size_t count_budget_refusals(struct fixture *f, const int32_t *id, size_t n)
{
	size_t refused = 0;

	for (size_t i = 0; i < n; i++) {
		const struct h2c_response *r = h2client_response(f->client, id[i]);

		if (!r->closed)
			continue;
		assert_status(r, 8);
		assert_string_equal(r->grpc_message, "too many request bytes buffered, server-wide");
		refused++;
	}
	return refused;
}

static void test_buffered_bytes_budget(void **state)
{
	/* Bodies that never end, each under a long deadline, each taking a
	 * 32 KB buffer: the third would take the server past its 80 KB. */
	struct fixture *f = *state;
	size_t n = 30000;
	uint8_t *body = calloc(1, n);
	struct h2_nv h[8];
	int32_t id[3];
	size_t refused;

	body[3] = 0xfa; /* a 64000-byte message announced */
	encrypt_headers(h, "9S");
	for (int i = 0; i < 3; i++)
		id[i] = h2client_request(f->client, h, body, n, false);
	for (int i = 0; i < 20; i++) {
		h2client_pump(f->client, f->conn);
		uv_run(&f->loop, UV_RUN_NOWAIT);
	}
	/* Which one is refused depends on how the client interleaves DATA
	 * frames; exactly one is, and the others stay open. */
	refused = count_budget_refusals(f, id, 3);
	assert_int_equal(refused, 1);
	/* Freed buffers count no more: another call goes through. */
	for (int i = 0; i < 3; i++)
		if (!h2client_response(f->client, id[i])->closed)
			h2client_rst(f->client, id[i]);
	h2client_pump(f->client, f->conn);
	round_trip(f, "v2", 32);
	free(body);
}

static void test_held_calls_count_against_the_budget(void **state)
{
	/* Calls held through the start kept their requests outside the
	 * request budget: thousands of them grew the daemon without bound. */
	struct fixture *f = *state;
	uint8_t pt[1000], req[1100];
	int32_t id[100];
	size_t n, held, refused, answered = 0;
	const struct h2c_response *r;

	memset(pt, 0x5a, sizeof(pt));
	n = pbwire_put(req, 1, pt, sizeof(pt));
	for (int i = 0; i < 100; i++)
		id[i] = h2client_grpc(f->client, "/v2.KeyManagementService/Encrypt", req, n);
	for (int i = 0; i < 50; i++) {
		h2client_pump(f->client, f->conn);
		uv_run(&f->loop, UV_RUN_NOWAIT);
	}
	held = fake_backend_waiting(f->fb);
	/* 80 KB hold about 70 of these; the rest are refused at once. */
	assert_true(held > 50 && held < 80);
	refused = count_budget_refusals(f, id, 100);
	assert_int_equal(refused + held, 100);
	/* A plaintext the backend would refuse is refused now, not held. */
	{
		uint8_t big[1001], breq[1100];
		size_t bn;

		memset(big, 1, sizeof(big));
		bn = pbwire_put(breq, 1, big, sizeof(big));
		r = wait_for(f, h2client_grpc(f->client, "/v2.KeyManagementService/Encrypt", breq,
					      bn));
		assert_status(r, 3);
		assert_string_equal(r->grpc_message, "plaintext larger than 1000 bytes");
		assert_int_equal(fake_backend_waiting(f->fb), held);
	}
	fake_backend_finish_start(f->fb);
	for (int i = 0; i < 100; i++) {
		r = wait_for(f, id[i]);
		answered += r->grpc_status == 0;
	}
	assert_int_equal(answered, held);
	/* Answered calls count no more: the budget is whole again. */
	round_trip(f, "v2", 900);
}

static void test_inflight_limit(void **state)
{
	struct fixture *f = *state;
	uint8_t body[64];
	size_t n;
	int32_t slow;
	const struct h2c_response *r;

	body[0] = body[1] = body[2] = body[3] = 0;
	n = pbwire_put(body + 5, 1, "slow:30", 7);
	body[4] = (uint8_t)n;
	slow = h2client_grpc(f->client, "/v2.KeyManagementService/Encrypt", body + 5, n);
	h2client_pump(f->client, f->conn);
	r = wait_for(f, h2client_grpc(f->client, "/v2.KeyManagementService/Encrypt", body + 5, n));
	assert_status(r, 8);
	assert_string_equal(r->grpc_message, "too many calls in flight");
	assert_int_equal(wait_for(f, slow)->grpc_status, 0);
}

static void test_backend_error(void **state)
{
	struct fixture *f = *state;
	uint8_t body[64];
	size_t n = pbwire_put(body, 1, "fail", 4);
	const struct h2c_response *r =
		wait_for(f, h2client_grpc(f->client, "/v2.KeyManagementService/Encrypt", body, n));

	assert_status(r, 14);
	assert_string_equal(r->grpc_message, "fake backend unavailable");
}

static void test_decrypt_wrong_key_id(void **state)
{
	struct fixture *f = *state;
	uint8_t body[64];
	size_t n = pbwire_put(body, 1, "FAKEabc", 7);
	const struct h2c_response *r;

	n += pbwire_put(body + n, 3, "other-key", 9);
	r = wait_for(f, h2client_grpc(f->client, "/v2.KeyManagementService/Decrypt", body, n));
	assert_status(r, 3);
}

static void test_header_list_limit(void **state)
{
	struct fixture *f = *state;
	char *big = malloc(9000);
	const struct h2c_response *r;

	memset(big, 'a', 8999);
	big[8999] = '\0';
	struct h2_nv h[] = {{":method", "POST"}, {":scheme", "http"},
			    {":path", "/v2.KeyManagementService/Status"},
			    {"content-type", "application/grpc"}, {"x-big", big}, {NULL, NULL}};
	r = wait_for(f, h2client_request(f->client, h, NULL, 0, true));
	assert_int_not_equal(r->rst_code, 0);
	free(big);
	test_status_v2(state);
}

static void test_ping_flood_ends_connection(void **state)
{
	struct fixture *f = *state;
	uint32_t code = 0;

	for (int i = 0; i < 100; i++)
		h2client_ping(f->client);
	h2client_pump(f->client, f->conn);
	assert_true(h2client_goaway(f->client, &code));
	assert_int_equal(code, 0xb); /* ENHANCE_YOUR_CALM */
	assert_false(h2_conn_alive(f->conn));
}

static void test_pings_after_data_are_not_a_flood(void **state)
{
	struct fixture *f = *state;

	/* gRPC clients ping after data (BDP estimation): 100 calls, each
	 * followed by a PING, stay well within the idle-ping limit of 20. */
	for (int i = 0; i < 100; i++) {
		int32_t id = h2client_grpc(f->client, "/v2.KeyManagementService/Status", NULL, 0);

		h2client_ping(f->client);
		assert_int_equal(wait_for(f, id)->grpc_status, 0);
	}
	assert_false(h2client_goaway(f->client, NULL));
}

static void test_reset_flood_ends_connection(void **state)
{
	struct fixture *f = *state;
	uint32_t code = 0;

	const struct h2_nv h[] = {{":method", "POST"}, {":scheme", "http"},
				  {":path", "/v2.KeyManagementService/Status"},
				  {"content-type", "application/grpc"}, {NULL, NULL}};

	/* Open (request not finished) then reset, again and again. */
	for (int i = 0; i < 80 && !h2client_goaway(f->client, NULL); i++) {
		int32_t id = h2client_request(f->client, h, NULL, 0, false);

		h2client_pump(f->client, f->conn);
		h2client_rst(f->client, id);
		h2client_pump(f->client, f->conn);
	}
	h2client_pump(f->client, f->conn);
	assert_true(h2client_goaway(f->client, &code));
	assert_int_equal(code, 0xb);
}

/* A request on its way when shutdown begins: the notice (GOAWAY with the
 * largest stream id) lets it be served. A final GOAWAY alone, as stop
 * used to send at once, refuses it (REFUSED_STREAM): a restart under
 * socket activation failed such calls. */
static void test_graceful_shutdown(void **state)
{
	struct fixture *f = *state;
	int32_t a, b;
	const struct h2c_response *r;
	uint32_t code = 99;

	a = h2client_grpc(f->client, "/v2.KeyManagementService/Status", NULL, 0);
	h2_conn_shutdown_notice(f->conn); /* before the server read it */
	r = wait_for(f, a);
	assert_status(r, 0);
	assert_true(h2client_goaway(f->client, &code));
	assert_int_equal(code, 0);

	b = h2client_grpc(f->client, "/v2.KeyManagementService/Status", NULL, 0);
	h2_conn_goaway(f->conn);
	r = wait_for(f, b);
	assert_int_equal(r->rst_code, 7); /* REFUSED_STREAM */
	assert_int_equal(r->grpc_status, -1);
}

static void test_garbage_preface(void **state)
{
	struct fixture *f = *state;
	h2_conn *c;
	const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

	assert_int_equal(h2_conn_new(&limits, grpc_stream_callbacks(), f->g, NULL, NULL, &c), 0);
	assert_true(h2_conn_recv(c, (const uint8_t *)junk, sizeof(junk) - 1) < 0);
	h2_conn_free(c);
}

static void test_byte_at_a_time(void **state)
{
	struct fixture *f = *state;

	/* Every read delivers one byte: headers and messages are reassembled
	 * across reads as well as frames. */
	h2client_set_bytewise(f->client, true);
	test_status_v2(state);
	round_trip(f, "v2", 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_status_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_v2beta1_and_version_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reassembly_across_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_method, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_requests_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compression, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_framing_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_timeout_has_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buffered_bytes_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_calls_count_against_the_budget,
						setup_starting, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_limit, setup_one_inflight, teardown),
		cmocka_unit_test_setup_teardown(test_backend_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_decrypt_wrong_key_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_list_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_flood_ends_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pings_after_data_are_not_a_flood, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_reset_flood_ends_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_graceful_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_preface, setup, teardown),
		cmocka_unit_test_setup_teardown(test_byte_at_a_time, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
