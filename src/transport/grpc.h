/* gRPC unary calls over the HTTP/2 streams of h2.h: request validation,
 * length-prefixed message reassembly, deadlines (grpc-timeout), routing by
 * path, and status/trailer encoding. Knows nothing of KMS, TPMs or crypto. */
#ifndef TPM2KMS_GRPC_H
#define TPM2KMS_GRPC_H

#include "transport/h2.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

/* A KMS message is small; anything larger is refused. */
#define GRPC_MAX_MESSAGE_BYTES (64u * 1024u)

typedef struct grpc_server grpc_server;
typedef struct grpc_call grpc_call;

/* Called once per complete request message. The message is only valid
 * during the call. The handler must eventually call grpc_call_finish
 * exactly once, now or later on the loop. */
typedef void (*grpc_handler)(grpc_call *call, const uint8_t *msg, size_t len, void *user);

struct grpc_limits {
	uint32_t max_inflight;     /* dispatched, unfinished calls, server-wide */
	uint32_t max_timeout_ms;   /* grpc-timeout above this is clamped */
	uint32_t default_timeout_ms; /* used when the client sends none; 0: none */
	size_t max_buffered_bytes; /* request bytes still arriving, server-wide; 0: none */
};

int grpc_server_new(uv_loop_t *loop, const struct grpc_limits *limits, grpc_server **ret);
void grpc_server_free(grpc_server *g);

/* Called once per answered call (status -1: refused at the HTTP level). */
typedef void (*grpc_observer)(void *arg, const char *path, int status, uint64_t duration_us);
void grpc_server_set_observer(grpc_server *g, grpc_observer fn, void *arg);

/* Routes are matched exactly; user is passed to the handler. */
int grpc_server_add_route(grpc_server *g, const char *path, grpc_handler handler, void *user);

/* The stream callbacks to give h2_conn_new, with g as their user. */
const struct h2_stream_callbacks *grpc_stream_callbacks(void);

/* Calls handed to a handler and not yet finished. */
size_t grpc_server_inflight(const grpc_server *g);

/* Completes a call. OK sends resp as the one response message; any other
 * status sends trailers only, with message (may be NULL) as grpc-message.
 * A call whose deadline passed or whose client went away is dropped
 * quietly. */
void grpc_call_finish(grpc_call *call, enum grpc_status status, const char *message,
		      const uint8_t *resp, size_t resp_len);

/* Counts bytes the handler keeps for the call (a request held for later)
 * against the server-wide request budget until the call ends; -ENOBUFS,
 * counting nothing, when they do not fit. */
int grpc_call_charge(grpc_call *call, size_t bytes);

/* Absolute deadline on the loop clock (uv_now, ms); 0: none. */
uint64_t grpc_call_deadline(const grpc_call *call);

const char *grpc_call_path(const grpc_call *call);

/* Fields for the call's log line; strings are copied. */
void grpc_call_set_log_fields(grpc_call *call, const char *uid, const char *key_id);

/* Blocking unary call on an HTTP/2 client session. On return 0,
 * *ret_status holds the grpc-status, *ret_message its message (per-thread
 * storage, valid until the next call) and, when OK, *ret_msg the response
 * message (free it; NULL otherwise). A response message over max_response
 * bytes: -EMSGSIZE, the session still usable. */
int grpc_client_unary(h2_client *c, const char *path, const uint8_t *msg, size_t len,
                      size_t max_response, int timeout_ms, int *ret_status,
                      const char **ret_message, uint8_t **ret_msg, size_t *ret_len);
/* The same on a connected socket, for one call (`tpm2-kms status`). */
int grpc_client_call(int fd, const char *path, const uint8_t *msg, size_t len, int timeout_ms,
		     int *ret_status, const char **ret_message, uint8_t **ret_msg, size_t *ret_len);

/* Parses a grpc-timeout value ("100m", "3S", ...) to milliseconds, rounded
 * up. Exposed for tests. */
int grpc_parse_timeout(const char *value, size_t len, uint64_t *ret_ms);

/* Percent-encodes a grpc-message value; out must hold 3*strlen(in)+1. */
void grpc_percent_encode(const char *in, char *out);

#endif
