/* The Prometheus endpoint: GET /metrics over HTTP/1.1 on a loopback TCP
 * address ("127.0.0.1:9464", "[::1]:9464") or a Unix socket path. Requests
 * are parsed by http-parser; one response per connection, then close.
 * Must not: let a slow or idle client keep others out. */
#ifndef TPM2KMS_METRICS_HTTP_H
#define TPM2KMS_METRICS_HTTP_H

#include <uv.h>

typedef struct metrics_http metrics_http;

/* Logs its errors. Refuses non-loopback TCP addresses. */
int metrics_http_start(uv_loop_t *loop, const char *address, metrics_http **ret);
/* The same on a listening socket systemd passed (Unix, or loopback TCP);
 * it is never unlinked. Takes fd, also on failure. */
int metrics_http_start_fd(uv_loop_t *loop, int fd, metrics_http **ret);
void metrics_http_stop(metrics_http *m); /* frees once closed */

#endif
