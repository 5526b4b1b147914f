#include "config.h"

#include "audit/etcd.h"
#include "base/log.h"
#include "transport/grpc.h"
#include "transport/h2.h"

#include "etcd/kv.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANGE_PATH "/etcdserverpb.KV/Range"
/* Pages aim at PAGE_BYTES, whatever the objects' size: the first asks for
 * FIRST_PAGE_KEYS keys, the next as many as the sizes seen so far fit. A
 * page that would pass ETCD_MAX_PAGE_BYTES is asked again, smaller. Large
 * pages matter: each Range costs etcd a fixed share (bench/audit.py). */
#define PAGE_BYTES      (6u * 1024u * 1024u)
#define FIRST_PAGE_KEYS 100
#define MAX_PAGE_KEYS   10000

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

/* Pages are fetched on a thread of their own, two ahead at most: etcd
 * serialises the next page while this thread checks the current one, and
 * memory stays at three pages. */
#define PAGES_AHEAD 2

struct fetch {
	etcd *e;
	uint8_t *key, *end;
	size_t key_len, end_len;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	Etcdserverpb__RangeResponse *queue[PAGES_AHEAD];
	size_t head, n;
	bool done; /* the fetcher ended: no page after those queued */
	bool stop; /* the reader stopped: fetch no more */
	int error; /* the fetcher's failure */
	int64_t revision;
};

/* Hands a page to the reader; false when the reader has stopped. */
static bool queue_page(struct fetch *f, Etcdserverpb__RangeResponse *page)
{
	bool taken;

	pthread_mutex_lock(&f->lock);
	while (f->n == PAGES_AHEAD && !f->stop)
		pthread_cond_wait(&f->cond, &f->lock);
	taken = !f->stop;
	if (taken) {
		f->queue[(f->head + f->n) % PAGES_AHEAD] = page;
		f->n++;
		pthread_cond_broadcast(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	return taken;
}

/* The page after page starts just after its last key. */
static int advance(struct fetch *f, const Etcdserverpb__RangeResponse *page)
{
	const Etcdserverpb__KeyValue *last = page->kvs[page->n_kvs - 1];
	uint8_t *next = realloc(f->key, last->key.len + 1);

	if (!next)
		return -ENOMEM;
	f->key = next;
	memcpy(f->key, last->key.data, last->key.len);
	f->key[last->key.len] = '\0';
	f->key_len = last->key.len + 1;
	return 0;
}

/* How many keys the next page may ask for, from the sizes in this one. */
static int64_t next_limit(const Etcdserverpb__RangeResponse *page, int64_t limit)
{
	uint64_t bytes = 0, keys;

	for (size_t i = 0; i < page->n_kvs; i++)
		bytes += page->kvs[i]->key.len + page->kvs[i]->value.len + 16;
	if (page->n_kvs == 0 || bytes == 0)
		return limit;
	keys = PAGE_BYTES / (bytes / page->n_kvs + 1);
	return keys < 1 ? 1 : keys > MAX_PAGE_KEYS ? MAX_PAGE_KEYS : (int64_t)keys;
}

static void *fetch_pages(void *arg)
{
	struct fetch *f = arg;
	etcd *e = f->e;
	int64_t limit = FIRST_PAGE_KEYS;
	int r;

	for (;;) {
		Etcdserverpb__RangeResponse *page = NULL;
		bool last;

		r = range(e, f->key, f->key_len, f->end, f->end_len, limit, f->revision, &page);
		if (r == -EMSGSIZE && limit > 1) {
			limit = limit / 4 > 0 ? limit / 4 : 1;
			continue;
		}
		if (r == -EMSGSIZE)
			log_error("etcd %s: the value after %.*s is over %u MiB, the audit's limit",
			          e->endpoint, (int)f->key_len, (const char *)f->key,
			          ETCD_MAX_PAGE_BYTES >> 20);
		if (r < 0)
			break;
		if (f->revision == 0 && page->header)
			f->revision = page->header->revision;
		limit = next_limit(page, limit);
		last = !page->more || page->n_kvs == 0;
		r = last ? 0 : advance(f, page);
		if (!queue_page(f, page)) {
			etcdserverpb__range_response__free_unpacked(page, NULL);
			break;
		}
		if (last || r < 0)
			break;
	}
	pthread_mutex_lock(&f->lock);
	f->done = true;
	f->error = r;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* The next page, or NULL once the fetcher is done. */
static Etcdserverpb__RangeResponse *next_page(struct fetch *f)
{
	Etcdserverpb__RangeResponse *page = NULL;

	pthread_mutex_lock(&f->lock);
	while (f->n == 0 && !f->done)
		pthread_cond_wait(&f->cond, &f->lock);
	if (f->n) {
		page = f->queue[f->head];
		f->head = (f->head + 1) % PAGES_AHEAD;
		f->n--;
		pthread_cond_broadcast(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	return page;
}

int etcd_scan(etcd *e, const char *prefix, etcd_visit fn, void *arg, int64_t *ret_revision)
{
	struct fetch f = {.e = e};
	Etcdserverpb__RangeResponse *page;
	pthread_t thread;
	int r;

	r = prefix_range(prefix, &f.key, &f.key_len, &f.end);
	if (r < 0)
		return r;
	f.end_len = f.key_len;
	pthread_mutex_init(&f.lock, NULL);
	pthread_cond_init(&f.cond, NULL);
	r = -pthread_create(&thread, NULL, fetch_pages, &f);
	if (r < 0)
		goto out;
	while ((page = next_page(&f))) {
		for (size_t i = 0; i < page->n_kvs && r == 0; i++) {
			const Etcdserverpb__KeyValue *kv = page->kvs[i];
			struct etcd_kv v = {kv->key.data, kv->value.data, kv->key.len,
			                    kv->value.len};

			r = fn(arg, &v);
		}
		etcdserverpb__range_response__free_unpacked(page, NULL);
		if (r < 0)
			break;
	}
	/* The visitor stopped: the fetcher must not wait for room. */
	pthread_mutex_lock(&f.lock);
	f.stop = true;
	pthread_cond_broadcast(&f.cond);
	pthread_mutex_unlock(&f.lock);
	pthread_join(thread, NULL);
	while (f.n) {
		etcdserverpb__range_response__free_unpacked(f.queue[f.head], NULL);
		f.head = (f.head + 1) % PAGES_AHEAD;
		f.n--;
	}
	if (r == 0)
		r = f.error;
	if (r == 0)
		*ret_revision = f.revision;
out:
	pthread_cond_destroy(&f.cond);
	pthread_mutex_destroy(&f.lock);
	free(f.key);
	free(f.end);
	return r;
}
