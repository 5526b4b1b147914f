/* HTTP/2 connection framing: the only module that includes nghttp2.
 *
 * Bytes in (h2_conn_recv) become per-stream callbacks; responses go in with
 * h2_conn_respond and come out as bytes (h2_conn_pull) for the socket layer
 * to write. HTTP semantics that nghttp2 would enforce are checked by the
 * layer above instead: nghttp2's own validation rejects the raw socket path
 * that kube-apiserver 1.27-1.31 send as :authority.
 * Must not: interpret gRPC or KMS. */
#ifndef TPM2KMS_H2_H
#define TPM2KMS_H2_H

#include "transport/dial.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct h2_conn h2_conn;

struct h2_nv {
	const char *name;
	const char *value;
};

struct h2_limits {
	uint32_t max_concurrent_streams;
	uint32_t max_header_list_bytes;
	/* Peer frames that cost us work without making progress; more than
	 * this many per second (after a burst of the same size) ends the
	 * connection with ENHANCE_YOUR_CALM. */
	uint32_t max_pings_per_s;
	uint32_t max_settings_per_s;
	uint32_t max_resets_per_s;
};

/* Stream events, all called from inside h2_conn_recv (or h2_conn_free for
 * close). A negative return from header/headers_end/data resets the stream. */
struct h2_stream_callbacks {
	/* A new request stream; returns its context, or NULL to refuse it. */
	void *(*open)(void *user, h2_conn *conn, int32_t stream_id);
	int (*header)(void *stream, const char *name, size_t name_len, const char *value,
		      size_t value_len);
	int (*headers_end)(void *stream, bool end_stream);
	int (*data)(void *stream, const uint8_t *data, size_t len);
	/* The peer finished sending (END_STREAM). */
	void (*end)(void *stream);
	/* The stream is gone: answered, reset, or its connection closed. */
	void (*close)(void *stream);
};

/* want_write is called when a response was queued outside h2_conn_recv, so
 * the owner knows to pull and write. */
int h2_conn_new(const struct h2_limits *limits, const struct h2_stream_callbacks *cb,
		void *cb_user, void (*want_write)(void *owner), void *owner, h2_conn **ret);

/* Closes every stream (close callbacks run) and frees. */
void h2_conn_free(h2_conn *c);

/* Feeds received bytes. Negative: the connection must be closed (after
 * writing what h2_conn_pull still returns). */
int h2_conn_recv(h2_conn *c, const uint8_t *data, size_t len);

/* Returns the next chunk of bytes to write (valid until the next call), 0
 * when there is nothing, negative on a fatal error. */
ssize_t h2_conn_pull(h2_conn *c, const uint8_t **ret_data);

/* False once both sides are done (GOAWAY exchanged, or a fatal error). */
bool h2_conn_alive(const h2_conn *c);

/* A response body: head then data (either may be empty), so that a framing
 * prefix needs no buffer of the caller's. */
struct h2_body {
	const uint8_t *head;
	size_t head_len;
	const uint8_t *data;
	size_t data_len;
};

/* Queues a response. body == NULL: the headers end the stream
 * (trailers-only). Otherwise body (copied once, wiped once sent) then
 * trailers. When reset_after is set the stream is reset with NO_ERROR after
 * the response, for a request the peer is still sending that we no longer
 * want. */
int h2_conn_respond(h2_conn *c, int32_t stream_id, const struct h2_nv *headers, size_t n_headers,
		    const struct h2_body *body, const struct h2_nv *trailers, size_t n_trailers,
		    bool reset_after);

void h2_conn_reset_stream(h2_conn *c, int32_t stream_id);

/* Graceful shutdown: GOAWAY naming the last stream we accepted. */
void h2_conn_goaway(h2_conn *c);
/* GOAWAY with the largest stream id: shutdown is coming, but streams the
 * client has already sent are still served. h2_conn_goaway follows. */
void h2_conn_shutdown_notice(h2_conn *c);

size_t h2_conn_open_streams(const h2_conn *c);

/* Blocking client side (the CLI's calls: `status`, the audit's etcd
 * reads and Decrypts): one HTTP/2 session over a dial stream the caller
 * keeps open for as long as the client lives, one request at a time. */
typedef struct h2_client h2_client;
int h2_client_new(dial *io, h2_client **ret);
void h2_client_free(h2_client *c);
const char *h2_client_authority(const h2_client *c);

/* One request. Response headers and trailers go to header_cb; the body is
 * returned in a new buffer (free()). -EMSGSIZE when the body would exceed
 * max_response (the stream is cancelled, the session stays usable);
 * -ETIMEDOUT after timeout_ms; after any other failure the session is
 * unusable. */
int h2_client_request(h2_client *c, const struct h2_nv *headers, size_t n_headers,
                      const uint8_t *body, size_t body_len, size_t max_response, int timeout_ms,
                      void (*header_cb)(void *arg, const char *name, const char *value), void *arg,
                      uint8_t **ret_body, size_t *ret_len);

#endif
