/* etcd's v3 KV API, read-only: a client that walks every key under a
 * prefix with serializable, paged Range calls at one revision, over
 * HTTP/2 (h2c, TLS with client certificates, or a Unix socket). The only
 * module that includes the generated etcd protobuf header.
 * Must not: write to etcd, or hold more than one page in memory. */
#ifndef TPM2KMS_ETCD_H
#define TPM2KMS_ETCD_H

#include "transport/dial.h"

#include <stddef.h>
#include <stdint.h>

typedef struct etcd etcd;

/* endpoints: a comma-separated list of URLs, tried in order until one
 * answers. Logs why none did. */
int etcd_open(const char *endpoints, const struct dial_tls *tls, int timeout_ms, etcd **ret);
void etcd_close(etcd *e);
/* The URL of the endpoint in use. */
const char *etcd_endpoint(const etcd *e);

struct etcd_kv {
	const uint8_t *key, *value;
	size_t key_len, value_len;
};

/* Called once per key, in key order; a negative return stops the walk and
 * becomes etcd_scan's. The pointers are valid during the call only. */
typedef int (*etcd_visit)(void *arg, const struct etcd_kv *kv);

/* Walks every key under prefix (taken as a directory: "/registry" reads
 * "/registry/..."), page by page at the revision of the first page, so
 * the walk sees one consistent state whatever is written meanwhile.
 * *ret_revision is that revision. Logs its failures. */
int etcd_scan(etcd *e, const char *prefix, etcd_visit fn, void *arg, int64_t *ret_revision);

/* A page never exceeds this; a single larger value is an error. */
#define ETCD_MAX_PAGE_BYTES (16u * 1024u * 1024u)

#endif
