#include "config.h"

#include "audit/etcd.h"
#include "base/log.h"
#include "transport/grpc.h"
#include "transport/h2.h"

#include "etcd/kv.pb-c.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANGE_PATH "/etcdserverpb.KV/Range"
/* Keys per page to start with: about a megabyte of typical objects. A
 * page that would pass ETCD_MAX_PAGE_BYTES is asked again, smaller. */
#define FIRST_PAGE_KEYS 1000

struct etcd {
	dial *io;
	h2_client *h2;
	char *endpoint;
	int timeout_ms;
};

static void drop_connection(etcd *e)
{
	h2_client_free(e->h2);
	dial_close(e->io);
	e->h2 = NULL;
	e->io = NULL;
}

static int connect_one(etcd *e, const char *url, const struct dial_tls *tls)
{
	char why[DIAL_ERROR_MAX];
	int r;

	r = dial_open(url, tls, e->timeout_ms, &e->io, why);
	if (r < 0) {
		log_warning("etcd %s: %s", url, why);
		return r;
	}
	r = h2_client_new(e->io, &e->h2);
	if (r < 0) {
		drop_connection(e);
		return r;
	}
	e->endpoint = strdup(url);
	if (!e->endpoint) {
		drop_connection(e);
		return -ENOMEM;
	}
	return 0;
}

int etcd_open(const char *endpoints, const struct dial_tls *tls, int timeout_ms, etcd **ret)
{
	char *list = strdup(endpoints), *save = NULL;
	etcd *e = calloc(1, sizeof(*e));
	int r = -ENOMEM;

	if (!list || !e)
		goto out;
	e->timeout_ms = timeout_ms;
	r = -EINVAL;
	for (char *url = strtok_r(list, ",", &save); url; url = strtok_r(NULL, ",", &save)) {
		r = connect_one(e, url, tls);
		if (r == 0)
			break;
	}
	if (r < 0) {
		log_error("no etcd endpoint of %s could be reached", endpoints);
		goto out;
	}
	*ret = e;
	e = NULL;
out:
	etcd_close(e);
	free(list);
	return r;
}

void etcd_close(etcd *e)
{
	if (!e)
		return;
	drop_connection(e);
	free(e->endpoint);
	free(e);
}

const char *etcd_endpoint(const etcd *e)
{
	return e->endpoint;
}

/* One Range call; *ret is the decoded page. */
static int range(etcd *e, const uint8_t *key, size_t key_len, const uint8_t *end, size_t end_len,
                 int64_t limit, int64_t revision, Etcdserverpb__RangeResponse **ret)
{
	Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
	uint8_t *buf = NULL, *resp = NULL;
	size_t len, resp_len = 0;
	const char *message = NULL;
	int status = -1, r;

	req.key.data = (uint8_t *)key;
	req.key.len = key_len;
	req.range_end.data = (uint8_t *)end;
	req.range_end.len = end_len;
	req.limit = limit;
	req.revision = revision;
	/* The member answers from its own store: no quorum round, and the
	 * audit still works on a cluster that has lost its leader. */
	req.serializable = true;
	len = etcdserverpb__range_request__get_packed_size(&req);
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	etcdserverpb__range_request__pack(&req, buf);
	r = grpc_client_unary(e->h2, RANGE_PATH, buf, len, ETCD_MAX_PAGE_BYTES, e->timeout_ms,
	                      &status, &message, &resp, &resp_len);
	free(buf);
	if (r == -EMSGSIZE)
		return r;
	if (r < 0) {
		/* With TLS 1.3 a refused client certificate shows only now: as
		 * etcd's alert, or as the connection it closed. */
		bool cut =
		    (r == -EPIPE || r == -ECONNRESET) && strncmp(e->endpoint, "https:", 6) == 0;

		log_error("etcd %s: Range failed: %s%s%s%s", e->endpoint, strerror(-r),
		          *dial_error(e->io) ? ": " : "", dial_error(e->io),
		          cut ? " (etcd closed the connection: does it accept this client "
		                "certificate, --cert and --key?)"
		              : "");
		return r;
	}
	if (status != GRPC_OK) {
		log_error("etcd %s: Range failed: grpc-status %d: %s", e->endpoint, status,
		          message);
		return -EIO;
	}
	*ret = etcdserverpb__range_response__unpack(NULL, resp_len, resp);
	free(resp);
	if (!*ret) {
		log_error("etcd %s: Range answered something that is not a RangeResponse",
		          e->endpoint);
		return -EBADMSG;
	}
	return 0;
}

/* The range [prefix/, prefix0): every key under the directory. */
static int prefix_range(const char *prefix, uint8_t **ret_key, size_t *ret_key_len,
                        uint8_t **ret_end)
{
	size_t n = strlen(prefix);
	bool slash = n > 0 && prefix[n - 1] == '/';
	uint8_t *k = malloc(n + 2), *end = malloc(n + 2);

	if (!k || !end) {
		free(k);
		free(end);
		return -ENOMEM;
	}
	memcpy(k, prefix, n);
	if (!slash)
		k[n++] = '/';
	memcpy(end, k, n);
	end[n - 1]++; /* '/' + 1 = '0' */
	*ret_key = k;
	*ret_key_len = n;
	*ret_end = end;
	return 0;
}

int etcd_scan(etcd *e, const char *prefix, etcd_visit fn, void *arg, int64_t *ret_revision)
{
	Etcdserverpb__RangeResponse *page = NULL;
	uint8_t *key = NULL, *end = NULL;
	size_t key_len = 0, end_len;
	int64_t limit = FIRST_PAGE_KEYS, revision = 0;
	int r;

	r = prefix_range(prefix, &key, &key_len, &end);
	if (r < 0)
		return r;
	end_len = key_len;
	for (;;) {
		const Etcdserverpb__KeyValue *last;
		uint8_t *next;

		r = range(e, key, key_len, end, end_len, limit, revision, &page);
		if (r == -EMSGSIZE && limit > 1) {
			limit = limit / 4 > 0 ? limit / 4 : 1;
			continue;
		}
		if (r == -EMSGSIZE)
			log_error("etcd %s: the value after %.*s is over %u MiB, the audit's limit",
			          e->endpoint, (int)key_len, (const char *)key,
			          ETCD_MAX_PAGE_BYTES >> 20);
		if (r < 0)
			goto out;
		if (revision == 0)
			revision = page->header ? page->header->revision : 0;
		for (size_t i = 0; i < page->n_kvs; i++) {
			const Etcdserverpb__KeyValue *kv = page->kvs[i];
			struct etcd_kv v = {kv->key.data, kv->value.data, kv->key.len,
			                    kv->value.len};

			r = fn(arg, &v);
			if (r < 0)
				goto out;
		}
		if (!page->more || page->n_kvs == 0)
			break;
		/* The next page starts just after the last key. */
		last = page->kvs[page->n_kvs - 1];
		next = realloc(key, last->key.len + 1);
		if (!next) {
			r = -ENOMEM;
			goto out;
		}
		key = next;
		memcpy(key, last->key.data, last->key.len);
		key[last->key.len] = '\0';
		key_len = last->key.len + 1;
		etcdserverpb__range_response__free_unpacked(page, NULL);
		page = NULL;
	}
	*ret_revision = revision;
	r = 0;
out:
	if (page)
		etcdserverpb__range_response__free_unpacked(page, NULL);
	free(key);
	free(end);
	return r;
}
