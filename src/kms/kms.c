#include "config.h"

#include "kms/kms.h"
#include "kms/kms_proto.h"
#include "base/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kms_route {
	kms_service *svc;
	enum kms_api api;
	enum kms_method method;
	const char *path;
};

struct kms_service {
	const struct kms_backend_ops *ops;
	void *backend;
	struct kms_route routes[9];
};

/* One request waiting for the backend. */
struct pending {
	grpc_call *call;
	enum kms_api api;
	enum kms_method method;
};

enum grpc_status kms_status_of(int error)
{
	switch (error) {
	case 0:
		return GRPC_OK;
	case -EINVAL:
	case -EBADMSG:
	case -EMSGSIZE:
	case -ENOKEY:
		return GRPC_INVALID_ARGUMENT;
	case -ENODEV:
	case -EIO:
	case -EAGAIN:
	case -ECONNREFUSED:
		return GRPC_UNAVAILABLE;
	case -ETIMEDOUT:
		return GRPC_DEADLINE_EXCEEDED;
	case -ENOMEM:
	case -ENOBUFS:
		return GRPC_RESOURCE_EXHAUSTED;
	default:
		return GRPC_INTERNAL;
	}
}

static void finish(grpc_call *call, enum kms_api api, enum kms_method method,
		   const struct kms_response *resp)
{
	/* Every response of this plugin fits: a ciphertext under 1 KiB, a
	 * key_id and short strings. */
	uint8_t small[2048], *buf = NULL;
	size_t len = 0;

	if (kms_proto_encode(api, method, resp, small, sizeof(small), &buf, &len) < 0) {
		grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
		return;
	}
	grpc_call_finish(call, GRPC_OK, NULL, buf, len);
	kms_proto_buffer_free(buf, len, small);
}

static void on_backend_done(void *token, const struct kms_result *res)
{
	struct pending *p = token;
	struct kms_response resp = {0};

	if (res->key_id)
		grpc_call_set_log_fields(p->call, NULL, res->key_id);
	if (res->error < 0) {
		grpc_call_finish(p->call, kms_status_of(res->error),
				 res->message ? res->message : strerror(-res->error), NULL, 0);
		goto out;
	}
	resp.data = res->data;
	resp.data_len = res->data_len;
	resp.key_id = res->key_id;
	finish(p->call, p->api, p->method, &resp);
out:
	free(p);
}

/* A request held until the backend has started. */
struct held {
	grpc_call *call;
	const struct kms_route *route;
	struct kms_request *req;
};

static void dispatch(grpc_call *call, const struct kms_route *route, struct kms_request *req)
{
	kms_service *svc = route->svc;
	struct kms_response resp = {0};
	struct pending *p;

	switch (route->method) {
	case KMS_METHOD_STATUS:
		svc->ops->status(svc->backend, &resp.healthz, &resp.key_id);
		/* The version must never change while running; each package
		 * reports its own. */
		resp.version = route->api == KMS_API_V2 ? "v2" : "v2beta1";
		grpc_call_set_log_fields(call, NULL, resp.key_id);
		finish(call, route->api, route->method, &resp);
		goto out;
	case KMS_METHOD_VERSION:
		if (req->version && *req->version && strcmp(req->version, "v1beta1") != 0) {
			grpc_call_finish(call, GRPC_INVALID_ARGUMENT, "unsupported version", NULL, 0);
			goto out;
		}
		resp.version = "v1beta1";
		resp.runtime_name = PACKAGE_NAME;
		resp.runtime_version = PACKAGE_VERSION;
		finish(call, route->api, route->method, &resp);
		goto out;
	case KMS_METHOD_ENCRYPT:
	case KMS_METHOD_DECRYPT:
		break;
	}

	if (req->data_len == 0) {
		grpc_call_finish(call, GRPC_INVALID_ARGUMENT,
				 route->method == KMS_METHOD_ENCRYPT ? "empty plaintext"
								     : "empty ciphertext",
				 NULL, 0);
		goto out;
	}
	p = malloc(sizeof(*p));
	if (!p) {
		grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
		goto out;
	}
	p->call = call;
	p->api = route->api;
	p->method = route->method;
	if (route->method == KMS_METHOD_ENCRYPT)
		svc->ops->encrypt(svc->backend, req->data, req->data_len, grpc_call_deadline(call),
				  on_backend_done, p);
	else
		svc->ops->decrypt(svc->backend, req->data, req->data_len,
				  route->api == KMS_API_V1BETA1 ? NULL : req->key_id,
				  on_backend_done, p);
out:
	return;
}

static void resume(void *token)
{
	struct held *h = token;

	dispatch(h->call, h->route, h->req);
	kms_proto_request_free(h->req);
	free(h);
}

/* Sizes are refused before a call is held: a plaintext too large waited
 * out the start before hearing so. */
static int check_size(kms_service *svc, grpc_call *call, enum kms_method method, size_t len)
{
	char message[64];
	size_t max = method == KMS_METHOD_ENCRYPT   ? svc->ops->max_plaintext
		     : method == KMS_METHOD_DECRYPT ? svc->ops->max_ciphertext
						    : 0;

	if (!max || len <= max)
		return 0;
	snprintf(message, sizeof(message), "%s larger than %zu bytes",
		 method == KMS_METHOD_ENCRYPT ? "plaintext" : "ciphertext", max);
	grpc_call_finish(call, GRPC_INVALID_ARGUMENT, message, NULL, 0);
	return -EMSGSIZE;
}

/* What a held call keeps: the decoded request and its bookkeeping. */
static size_t held_bytes(const struct kms_request *req)
{
	return sizeof(struct held) + sizeof(*req) + req->data_len +
	       (req->key_id ? strlen(req->key_id) + 1 : 0) + (req->uid ? strlen(req->uid) + 1 : 0);
}

static void handle(grpc_call *call, const uint8_t *msg, size_t len, void *user)
{
	const struct kms_route *route = user;
	kms_service *svc = route->svc;
	struct kms_request *req = NULL;
	struct held *h;
	int r;

	r = kms_proto_decode(route->api, route->method, msg, len, &req);
	if (r < 0) {
		grpc_call_finish(call, r == -ENOMEM ? GRPC_RESOURCE_EXHAUSTED : GRPC_INTERNAL,
				 r == -ENOMEM ? "out of memory" : "cannot decode request message",
				 NULL, 0);
		return;
	}
	grpc_call_set_log_fields(call, req->uid, req->key_id && *req->key_id ? req->key_id : NULL);
	r = check_size(svc, call, route->method, req->data_len);
	if (r < 0)
		goto out;
	/* Calls that arrive while the backend starts wait for it (within
	 * their deadline) rather than hear "not ready" for it. What they hold
	 * meanwhile counts against the request budget. */
	if (svc->ops->started && route->method != KMS_METHOD_VERSION &&
	    !svc->ops->started(svc->backend)) {
		if (grpc_call_charge(call, held_bytes(req)) < 0) {
			grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED,
					 "too many request bytes buffered, server-wide", NULL, 0);
			goto out;
		}
		h = malloc(sizeof(*h));
		if (h) {
			*h = (struct held){call, route, req};
			svc->ops->when_started(svc->backend, grpc_call_deadline(call), resume, h);
			return;
		}
	}
	dispatch(call, route, req);
out:
	kms_proto_request_free(req);
}

int kms_service_new(grpc_server *g, const struct kms_backend_ops *ops, void *backend,
		    kms_service **ret)
{
	static const struct {
		enum kms_api api;
		enum kms_method method;
		const char *path;
	} table[9] = {
		{KMS_API_V2, KMS_METHOD_STATUS, "/v2.KeyManagementService/Status"},
		{KMS_API_V2, KMS_METHOD_ENCRYPT, "/v2.KeyManagementService/Encrypt"},
		{KMS_API_V2, KMS_METHOD_DECRYPT, "/v2.KeyManagementService/Decrypt"},
		{KMS_API_V2BETA1, KMS_METHOD_STATUS, "/v2beta1.KeyManagementService/Status"},
		{KMS_API_V2BETA1, KMS_METHOD_ENCRYPT, "/v2beta1.KeyManagementService/Encrypt"},
		{KMS_API_V2BETA1, KMS_METHOD_DECRYPT, "/v2beta1.KeyManagementService/Decrypt"},
		{KMS_API_V1BETA1, KMS_METHOD_VERSION, "/v1beta1.KeyManagementService/Version"},
		{KMS_API_V1BETA1, KMS_METHOD_ENCRYPT, "/v1beta1.KeyManagementService/Encrypt"},
		{KMS_API_V1BETA1, KMS_METHOD_DECRYPT, "/v1beta1.KeyManagementService/Decrypt"},
	};
	kms_service *svc = calloc(1, sizeof(*svc));
	int r;

	if (!svc)
		return -ENOMEM;
	svc->ops = ops;
	svc->backend = backend;
	for (size_t i = 0; i < 9; i++) {
		svc->routes[i] = (struct kms_route){svc, table[i].api, table[i].method,
						     table[i].path};
		r = grpc_server_add_route(g, table[i].path, handle, &svc->routes[i]);
		if (r < 0) {
			free(svc);
			return r;
		}
	}
	*ret = svc;
	return 0;
}

void kms_service_free(kms_service *svc)
{
	free(svc);
}
