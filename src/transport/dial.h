/* Client byte streams: a connection to a URL (http://host:port,
 * https://host:port with TLS, unix:///path) or around a connected socket,
 * with blocking send and receive bounded by a timeout. The one module that
 * includes OpenSSL's TLS; the HTTP/2 client (h2.h) runs over it.
 * Must not: log (callers say what a failure costs), or speak HTTP. */
#ifndef TPM2KMS_DIAL_H
#define TPM2KMS_DIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct dial dial;

/* Files for TLS; NULL: none (the system's CA store without cacert). A
 * client certificate needs its key. */
struct dial_tls {
	const char *cacert, *cert, *key;
};

#define DIAL_ERROR_MAX 256

/* Connects to url within timeout_ms. https verifies the server's
 * certificate against cacert and its name (or IP) against the URL's host,
 * and requires ALPN h2. On failure, ret_error (DIAL_ERROR_MAX bytes) says
 * why in words, for the caller's message. */
int dial_open(const char *url, const struct dial_tls *tls, int timeout_ms, dial **ret,
              char ret_error[DIAL_ERROR_MAX]);
/* A stream over a connected socket the caller keeps and closes. */
int dial_wrap_fd(int fd, dial **ret);
void dial_close(dial *d);

/* "host:port" (or "localhost" for Unix sockets), for :authority. */
const char *dial_authority(const dial *d);

/* Why the last send or receive failed, when TLS says more than errno
 * ("" otherwise): the peer's alert, say. */
const char *dial_error(const dial *d);

/* Sends all of buf; 0 or negative errno. */
int dial_send(dial *d, const uint8_t *buf, size_t len, int timeout_ms);
/* Up to len bytes: their number, 0 at end of stream, -ETIMEDOUT when
 * nothing came within timeout_ms. */
ssize_t dial_recv(dial *d, uint8_t *buf, size_t len, int timeout_ms);

#endif
