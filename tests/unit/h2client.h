/* An in-memory HTTP/2 client (nghttp2) wired straight to an h2_conn of
 * src/h2.c, for unit tests of the transport without sockets. */
#ifndef TPM2KMS_TEST_H2CLIENT_H
#define TPM2KMS_TEST_H2CLIENT_H

#include "transport/h2.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H2C_MAX_STREAMS 256

struct h2c_response {
	int32_t stream_id;
	char status[8];       /* :status */
	char content_type[64];
	int grpc_status;      /* -1 when absent */
	char grpc_message[256];
	bool trailers_only;   /* grpc-status came in the first HEADERS */
	uint8_t data[70000];
	size_t data_len;
	bool closed;
	uint32_t rst_code;    /* error code of the stream close */
	int header_blocks;
};

typedef struct h2client h2client;

int h2client_new(h2client **ret);
void h2client_free(h2client *c);

/* Starts a request; headers end with {NULL, NULL}. body may be NULL.
 * Returns the stream id. */
int32_t h2client_request(h2client *c, const struct h2_nv *headers, const uint8_t *body,
			 size_t len, bool end_stream);

/* gRPC POST to path with one length-prefixed message. */
int32_t h2client_grpc(h2client *c, const char *path, const uint8_t *msg, size_t len);

/* Sends raw frames the client library would refuse to build. */
void h2client_inject(h2client *c, const uint8_t *bytes, size_t len);

/* Called around every call into the server's h2_conn (recv, pull): lets a
 * test tell the server's work from the client's. */
void h2client_set_server_hooks(h2client *c, void (*enter)(void), void (*leave)(void));

/* Feed the server one byte per h2_conn_recv. */
void h2client_set_bytewise(h2client *c, bool on);

void h2client_rst(h2client *c, int32_t stream_id);
void h2client_ping(h2client *c);

/* Moves bytes both ways until neither side has anything to say. Returns
 * the last h2_conn_recv result (negative: server closed the connection). */
int h2client_pump(h2client *c, h2_conn *server);

const struct h2c_response *h2client_response(h2client *c, int32_t stream_id);

/* GOAWAY received from the server, and its error code. */
bool h2client_goaway(const h2client *c, uint32_t *ret_code);

#endif
