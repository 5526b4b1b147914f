#include "config.h"

#include "transport/dial.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct dial {
	int fd;
	bool own_fd;
	SSL_CTX *ctx;
	SSL *ssl;
	char authority[300];
	char error[DIAL_ERROR_MAX]; /* why the last send or receive failed */
};

static void say(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(char *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, DIAL_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* OpenSSL's reason for the last failure, for a message. */
static const char *tls_reason(void)
{
	static char buf[160];
	unsigned long e = ERR_peek_last_error();

	if (!e)
		return "TLS failure";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

static int wait_fd(int fd, short events, uint64_t deadline_us)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		uint64_t now = util_now_monotonic_us();
		int n;

		if (now >= deadline_us)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)((deadline_us - now + 999) / 1000));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n > 0)
			return 0;
	}
}

static uint64_t deadline_of(int timeout_ms)
{
	return util_now_monotonic_us() + (uint64_t)timeout_ms * 1000u;
}

/* A non-blocking connect, finished within the deadline. */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len, uint64_t deadline)
{
	socklen_t sl = sizeof(int);
	int r, e = 0;

	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN)
		return -errno;
	r = wait_fd(fd, POLLOUT, deadline);
	if (r < 0)
		return r;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
		return -errno;
	return -e;
}

static int open_unix(dial *d, const char *path, uint64_t deadline, char *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int r;

	if (!*path || strlen(path) >= sizeof(sa.sun_path)) {
		say(err, "not a usable socket path");
		return -EINVAL;
	}
	strcpy(sa.sun_path, path);
	d->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (d->fd < 0)
		return -errno;
	r = connect_within(d->fd, (struct sockaddr *)&sa, sizeof(sa), deadline);
	if (r < 0)
		say(err, "cannot connect: %s", strerror(-r));
	snprintf(d->authority, sizeof(d->authority), "localhost");
	return r;
}

/* Splits "host:port" or "[v6]:port" into host and port. */
static int split_host_port(const char *hp, char *host, size_t host_size, char *port,
                           size_t port_size)
{
	const char *colon, *h = hp;
	size_t hl;

	if (*hp == '[') {
		const char *close = strchr(hp, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = hp + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(hp, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - hp);
	}
	if (hl == 0 || hl >= host_size || strlen(colon + 1) == 0 ||
	    strlen(colon + 1) >= port_size || strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static int open_tcp(dial *d, const char *host, const char *port, uint64_t deadline, char *err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int r, one = 1;

	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		say(err, "cannot resolve %s: %s", host, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	r = -ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		d->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (d->fd < 0) {
			r = -errno;
			continue;
		}
		r = connect_within(d->fd, ai->ai_addr, ai->ai_addrlen, deadline);
		if (r == 0)
			break;
		close(d->fd);
		d->fd = -1;
	}
	freeaddrinfo(res);
	if (r < 0) {
		say(err, "cannot connect: %s", strerror(-r));
		return r;
	}
	(void)setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

static int tls_setup(dial *d, const char *host, const struct dial_tls *tls, char *err)
{
	static const unsigned char alpn[] = {2, 'h', '2'};
	struct in6_addr ip;
	bool is_ip = inet_pton(AF_INET, host, &ip) == 1 || inet_pton(AF_INET6, host, &ip) == 1;

	d->ctx = SSL_CTX_new(TLS_client_method());
	if (!d->ctx) {
		say(err, "%s", tls_reason());
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(d->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(d->ctx, SSL_VERIFY_PEER, NULL);
	if (tls && tls->cacert) {
		if (SSL_CTX_load_verify_locations(d->ctx, tls->cacert, NULL) != 1) {
			say(err, "cannot load --cacert %s: %s", tls->cacert, tls_reason());
			return -EINVAL;
		}
	} else if (SSL_CTX_set_default_verify_paths(d->ctx) != 1) {
		say(err, "cannot load the system's CA certificates: %s", tls_reason());
		return -EINVAL;
	}
	if (tls && tls->cert) {
		if (SSL_CTX_use_certificate_chain_file(d->ctx, tls->cert) != 1) {
			say(err, "cannot load --cert %s: %s", tls->cert, tls_reason());
			return -EINVAL;
		}
		if (!tls->key ||
		    SSL_CTX_use_PrivateKey_file(d->ctx, tls->key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(d->ctx) != 1) {
			say(err, "cannot load --key %s for --cert %s: %s",
			    tls->key ? tls->key : "(none)", tls->cert,
			    tls->key ? tls_reason() : "a client certificate needs its key");
			return -EINVAL;
		}
	}
	if (SSL_CTX_set_alpn_protos(d->ctx, alpn, sizeof(alpn)) != 0)
		return -ENOMEM;
	d->ssl = SSL_new(d->ctx);
	if (!d->ssl || SSL_set_fd(d->ssl, d->fd) != 1)
		return -ENOMEM;
	if (is_ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(d->ssl), host) != 1)
			return -EINVAL;
	} else if (SSL_set_tlsext_host_name(d->ssl, host) != 1 ||
	           SSL_set1_host(d->ssl, host) != 1) {
		return -EINVAL;
	}
	return 0;
}

/* Waits for the socket in the direction OpenSSL asked for; 1 to retry,
 * 0 when the call failed for good. */
static int tls_wait(dial *d, int ret, uint64_t deadline, int *r)
{
	int e = SSL_get_error(d->ssl, ret);

	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*r = wait_fd(d->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
		return *r == 0;
	}
	*r = e == SSL_ERROR_ZERO_RETURN ? 0 : e == SSL_ERROR_SYSCALL && errno ? -errno : -EPROTO;
	if (*r == -EPROTO)
		say(d->error, "TLS: %s", tls_reason());
	return 0;
}

static int tls_handshake(dial *d, uint64_t deadline, char *err)
{
	const unsigned char *proto = NULL;
	unsigned proto_len = 0;
	int ret, r;

	while ((ret = SSL_connect(d->ssl)) != 1) {
		if (!tls_wait(d, ret, deadline, &r)) {
			long v = SSL_get_verify_result(d->ssl);

			if (v != X509_V_OK)
				say(err, "TLS handshake: the server's certificate: %s",
				    X509_verify_cert_error_string(v));
			else if (r == -ETIMEDOUT)
				say(err, "TLS handshake: no answer in time");
			else
				say(err, "TLS handshake: %s", tls_reason());
			return r < 0 ? r : -EPROTO;
		}
	}
	SSL_get0_alpn_selected(d->ssl, &proto, &proto_len);
	if (proto_len != 2 || memcmp(proto, "h2", 2) != 0) {
		say(err, "the server did not agree to HTTP/2 (ALPN h2)");
		return -EPROTO;
	}
	return 0;
}

int dial_open(const char *url, const struct dial_tls *tls, int timeout_ms, dial **ret,
              char ret_error[DIAL_ERROR_MAX])
{
	uint64_t deadline = deadline_of(timeout_ms);
	char host[256], port[8];
	bool https = strncmp(url, "https://", 8) == 0;
	dial *d;
	int r;

	ret_error[0] = '\0';
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->fd = -1;
	d->own_fd = true;
	if (strncmp(url, "unix://", 7) == 0) {
		r = open_unix(d, url + 7, deadline, ret_error);
		goto out;
	}
	if (!https && strncmp(url, "http://", 7) != 0) {
		say(ret_error, "not an http://, https:// or unix:// URL");
		r = -EINVAL;
		goto out;
	}
	r = split_host_port(url + (https ? 8 : 7), host, sizeof(host), port, sizeof(port));
	if (r < 0) {
		say(ret_error, "not a URL with a host and a port");
		goto out;
	}
	snprintf(d->authority, sizeof(d->authority), "%s", url + (https ? 8 : 7));
	r = open_tcp(d, host, port, deadline, ret_error);
	if (r < 0 || !https)
		goto out;
	r = tls_setup(d, host, tls, ret_error);
	if (r == 0)
		r = tls_handshake(d, deadline, ret_error);
	if (r < 0 && !ret_error[0])
		say(ret_error, "TLS: %s", tls_reason());
out:
	if (r < 0) {
		dial_close(d);
		return r;
	}
	*ret = d;
	return 0;
}

int dial_wrap_fd(int fd, dial **ret)
{
	dial *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->fd = fd;
	snprintf(d->authority, sizeof(d->authority), "localhost");
	*ret = d;
	return 0;
}

void dial_close(dial *d)
{
	if (!d)
		return;
	SSL_free(d->ssl);
	SSL_CTX_free(d->ctx);
	if (d->own_fd && d->fd >= 0)
		close(d->fd);
	ERR_clear_error();
	free(d);
}

const char *dial_authority(const dial *d)
{
	return d->authority;
}

const char *dial_error(const dial *d)
{
	return d->error;
}

int dial_send(dial *d, const uint8_t *buf, size_t len, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	int r;

	while (len > 0) {
		ssize_t n;

		if (d->ssl) {
			size_t w = 0;
			int ret = SSL_write_ex(d->ssl, buf, len, &w);

			if (ret != 1) {
				if (tls_wait(d, ret, deadline, &r))
					continue;
				return r < 0 ? r : -ECONNRESET;
			}
			n = (ssize_t)w;
		} else {
			n = send(d->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				r = wait_fd(d->fd, POLLOUT, deadline);
				if (r < 0)
					return r;
				continue;
			}
			if (n < 0)
				return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t dial_recv(dial *d, uint8_t *buf, size_t len, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	int r;

	for (;;) {
		ssize_t n;

		if (d->ssl) {
			size_t got = 0;
			int ret = SSL_read_ex(d->ssl, buf, len, &got);

			if (ret == 1)
				return (ssize_t)got;
			if (tls_wait(d, ret, deadline, &r))
				continue;
			return r;
		}
		/* Poll first: a wrapped socket may be blocking. */
		r = wait_fd(d->fd, POLLIN, deadline);
		if (r < 0)
			return r;
		n = recv(d->fd, buf, len, MSG_DONTWAIT);
		if (n >= 0)
			return n;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
}
