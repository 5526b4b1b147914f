#include "config.h"

#include "audit/audit.h"
#include "audit/etcd.h"
#include "base/log.h"
#include "base/secmem.h"
#include "base/util.h"
#include "keys/auditrec.h"
#include "keys/escrow.h"
#include "keys/statedir.h"
#include "kms/kms_proto.h"
#include "transport/grpc.h"
#include "transport/h2.h"
#include "transport/listen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DECRYPT_PATH "/v2.KeyManagementService/Decrypt"
#define SEED_MAX     64
/* Distinct DEK sources remembered with their seeds. An apiserver makes a
 * new seed per start and per key change, so a cluster has few; past this
 * the table starts over (more Decrypt calls, never a wrong answer). */
#define CACHE_SLOTS 1024

struct cached_source {
	uint8_t *source; /* NULL: free slot */
	size_t len;
	uint64_t hash;
	uint8_t *seed; /* secure heap, SEED_MAX bytes */
	size_t seed_len;
	int status; /* 0, or why the daemon did not decrypt it */
	char message[160];
};

struct run {
	const struct audit_options *o;
	struct audit_result *a;
	size_t prefix_len;
	h2_client *daemon;
	dial *daemon_io;
	int daemon_fd;
	struct cached_source cache[CACHE_SLOTS];
	size_t cached;
	uint64_t next_uid;
	uint64_t progress_at, progress_objects;
	int fatal; /* the daemon failed as a whole: stop */
};

/* --- the DEK source cache --------------------------------------------- */

static uint64_t fnv1a(const uint8_t *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static void cache_clear(struct run *run)
{
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		free(run->cache[i].source);
		secmem_free(run->cache[i].seed, SEED_MAX);
		run->cache[i] = (struct cached_source){0};
	}
	run->cached = 0;
}

/* The slot that holds source, or the free slot it goes into. */
static struct cached_source *cache_slot(struct run *run, const uint8_t *source, size_t len,
                                        uint64_t hash)
{
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		struct cached_source *c = &run->cache[(hash + i) % CACHE_SLOTS];

		if (!c->source ||
		    (c->hash == hash && c->len == len && memcmp(c->source, source, len) == 0))
			return c;
	}
	return NULL;
}

/* Asks the daemon to decrypt one DEK source, as the apiserver would. A
 * refusal is the source's answer (kept in c); a failure of the call
 * itself is the run's. */
static int daemon_decrypt(struct run *run, const struct stored_kmsv2 *o, struct cached_source *c)
{
	uint8_t *req = NULL, *resp = NULL;
	size_t req_len = 0, resp_len = 0;
	const char *message = NULL;
	char uid[48];
	int status = -1, r;

	snprintf(uid, sizeof(uid), "tpm2-kms-audit-%llu", (unsigned long long)++run->next_uid);
	r = kms_proto_encode_decrypt_request(o->dek_source, o->dek_source_len, uid, o->key_id,
	                                     o->annotations, o->n_annotations, &req, &req_len);
	if (r < 0)
		return r;
	r = grpc_client_unary(run->daemon, DECRYPT_PATH, req, req_len, GRPC_MAX_MESSAGE_BYTES,
	                      run->o->timeout_ms, &status, &message, &resp, &resp_len);
	free(req);
	if (r < 0) {
		log_error("Decrypt call to the daemon at %s failed: %s", run->o->listen,
		          strerror(-r));
		return r;
	}
	if (status == GRPC_UNAVAILABLE || status == GRPC_DEADLINE_EXCEEDED ||
	    status == GRPC_RESOURCE_EXHAUSTED || status == GRPC_UNIMPLEMENTED) {
		/* Not an answer about this source: the audit cannot go on. */
		log_error("the daemon at %s cannot decrypt now: grpc-status %d: %s", run->o->listen,
		          status, message);
		return -EAGAIN;
	}
	if (status != GRPC_OK) {
		c->status = -EBADMSG;
		snprintf(c->message, sizeof(c->message), "the daemon refused its DEK source: %s",
		         message);
		return 0;
	}
	r = kms_proto_decode_decrypt_response(resp, resp_len, c->seed, SEED_MAX, &c->seed_len);
	util_freezero(resp, resp_len);
	if (r < 0) {
		c->status = -EBADMSG;
		snprintf(c->message, sizeof(c->message),
		         "the daemon's Decrypt answer for its DEK source is not a DEK seed");
		return 0;
	}
	c->status = 0;
	return 0;
}

/* The seed of o's DEK source: decrypted once, then remembered. */
static int seed_of(struct run *run, const struct stored_kmsv2 *o, struct cached_source **ret)
{
	uint64_t hash = fnv1a(o->dek_source, o->dek_source_len);
	struct cached_source *c = cache_slot(run, o->dek_source, o->dek_source_len, hash);
	int r;

	if (c && c->source) {
		*ret = c;
		return 0;
	}
	if (!c || run->cached >= CACHE_SLOTS * 3 / 4) {
		cache_clear(run);
		c = cache_slot(run, o->dek_source, o->dek_source_len, hash);
	}
	c->seed = secmem_alloc(SEED_MAX);
	c->source = malloc(o->dek_source_len);
	if (!c->seed || !c->source) {
		free(c->source);
		secmem_free(c->seed, SEED_MAX);
		*c = (struct cached_source){0};
		return -ENOMEM;
	}
	memcpy(c->source, o->dek_source, o->dek_source_len);
	c->len = o->dek_source_len;
	c->hash = hash;
	run->cached++;
	run->a->dek_sources++;
	r = daemon_decrypt(run, o, c);
	if (r < 0) {
		free(c->source);
		secmem_free(c->seed, SEED_MAX);
		*c = (struct cached_source){0};
		run->cached--;
		return r;
	}
	*ret = c;
	return 0;
}

/* --- what is found ------------------------------------------------------ */

static char *key_text(const struct etcd_kv *kv)
{
	char *s = malloc(kv->key_len + 1);

	if (s) {
		memcpy(s, kv->key, kv->key_len);
		s[kv->key_len] = '\0';
	}
	return s;
}

static void add_failure(struct run *run, const struct etcd_kv *kv, const char *reason)
{
	struct audit_result *a = run->a;
	struct audit_failure *f;

	if (a->n_failures == AUDIT_MAX_FAILURES) {
		a->failures_left_out++;
		return;
	}
	f = &a->failures[a->n_failures];
	f->key = key_text(kv);
	if (!f->key) {
		a->failures_left_out++;
		return;
	}
	snprintf(f->reason, sizeof(f->reason), "%s", reason);
	a->n_failures++;
}

static void add_example(char **list, size_t *n, const struct etcd_kv *kv)
{
	if (*n < AUDIT_EXAMPLES && (list[*n] = key_text(kv)))
		(*n)++;
}

static struct audit_resource *resource_of(struct run *run, const struct etcd_kv *kv)
{
	struct audit_result *a = run->a;
	char name[STORED_RESOURCE_MAX];

	if (stored_resource(kv->key, kv->key_len, run->prefix_len, name) < 0)
		strcpy(name, "(no resource in the key)");
	/* Keys come in order, so the last resource is nearly always it. */
	if (a->n_resources && strcmp(a->resources[a->n_resources - 1].name, name) == 0)
		return &a->resources[a->n_resources - 1];
	for (size_t i = 0; i < a->n_resources; i++)
		if (strcmp(a->resources[i].name, name) == 0)
			return &a->resources[i];
	if (a->n_resources == AUDIT_MAX_RESOURCES) {
		a->resources_left_out++;
		return NULL;
	}
	strcpy(a->resources[a->n_resources].name, name);
	return &a->resources[a->n_resources++];
}

/* What a key_id that is not one of ours is, in words. */
static void explain_key_id(struct audit_key *k, const struct state *st)
{
	unsigned g;
	int n = 0;

	if (sscanf(k->key_id, "tpm2-kms-g%u-%n", &g, &n) != 1 || n == 0 || g == 0) {
		snprintf(k->why, sizeof(k->why), "not a tpm2-kms key_id: another KMS plugin's");
		return;
	}
	k->generation = g;
	if (state_find(st, g))
		snprintf(k->why, sizeof(k->why),
		         "generation %u of another key: another cluster's, or a node that "
		         "did not import this node's keys",
		         g);
	else
		snprintf(k->why, sizeof(k->why),
		         "generation %u is not in this state directory: retired here, or "
		         "another node's or cluster's",
		         g);
}

static struct audit_key *key_of(struct run *run, const struct stored_kmsv2 *o,
                                const struct stored_value *v, const struct state *st)
{
	struct audit_result *a = run->a;
	struct audit_key *k;

	for (size_t i = 0; i < a->n_keys; i++)
		if (strcmp(a->keys[i].key_id, o->key_id) == 0)
			return &a->keys[i];
	if (a->n_keys == AUDIT_MAX_KEY_IDS || strlen(o->key_id) >= sizeof(k->key_id))
		return NULL;
	k = &a->keys[a->n_keys++];
	snprintf(k->key_id, sizeof(k->key_id), "%s", o->key_id);
	snprintf(k->provider, sizeof(k->provider), "%.*s", (int)v->name_len, v->name);
	explain_key_id(k, st);
	/* Retired here, its escrow file kept for backups: recover restores it. */
	if (k->generation && !state_find(st, k->generation) &&
	    escrow_has(run->o->state_dir, k->generation)) {
		size_t n = strlen(k->why);

		k->escrowed = true;
		snprintf(k->why + n, sizeof(k->why) - n, "; its escrow file is kept");
	}
	return k;
}

/* One KMS v2 object: its key_id counted, its DEK source decrypted (once
 * per source), its tag checked. */
static int audit_kmsv2(struct run *run, const struct etcd_kv *kv, const struct stored_value *v,
                       struct audit_resource *res, const struct state *st)
{
	struct audit_result *a = run->a;
	struct stored_kmsv2 o = {0};
	struct cached_source *c = NULL;
	struct audit_key *k = NULL;
	char reason[200];
	int r;

	r = stored_kmsv2_decode(v->payload, v->payload_len, &o);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		add_failure(run, kv,
		            "malformed: not an EncryptedObject with data, key_id and DEK "
		            "source");
		goto undecryptable;
	}
	k = key_of(run, &o, v, st);
	if (!k)
		a->keys_left_out++;
	else
		k->objects++;
	if (res && !(k && k->write))
		res->stale++;
	r = seed_of(run, &o, &c);
	if (r < 0)
		goto out;
	if (c->status < 0) {
		/* Under a key_id that is not ours, the refusal is the finding
		 * the key_id list gives; under one of ours it is a failure. */
		if (!k || k->in_state)
			add_failure(run, kv, c->message);
		goto undecryptable;
	}
	r = stored_kmsv2_check(&o, c->seed, c->seed_len, kv->key, kv->key_len);
	if (r == 0) {
		a->decrypted++;
		if (k)
			k->decrypted++;
		goto out;
	}
	if (r == -ENOMEM || r == -EIO)
		goto out;
	snprintf(reason, sizeof(reason), "%s (key_id %s, DEK source type %d)",
	         r == -EBADMSG
	             ? "tag mismatch: the data does not authenticate under its DEK "
	               "with its etcd key"
	             : "malformed: encryptedData too short, or an unknown DEK source type",
	         o.key_id, o.dek_type);
	add_failure(run, kv, reason);
undecryptable:
	a->undecryptable++;
	if (k && o.msg)
		k->failed++;
	if (res) {
		res->undecryptable++;
		add_example(res->lost, &res->n_lost, kv);
	}
	r = 0;
out:
	stored_kmsv2_free(&o);
	return r;
}

static void progress(struct run *run, bool last)
{
	uint64_t now = util_now_monotonic_us();
	uint64_t n = run->a->objects;

	if (!run->o->progress || (!last && now - run->progress_at < 500000))
		return;
	fprintf(stderr, "\raudit: %llu objects read, %llu DEK sources decrypted%s",
	        (unsigned long long)n, (unsigned long long)run->a->dek_sources, last ? "\n" : "");
	run->progress_at = now;
}

struct visit_ctx {
	struct run *run;
	const struct state *st;
};

static int visit(void *arg, const struct etcd_kv *kv)
{
	struct visit_ctx *ctx = arg;
	struct run *run = ctx->run;
	struct audit_result *a = run->a;
	struct audit_resource *res = resource_of(run, kv);
	struct stored_value v;

	stored_classify(kv->value, kv->value_len, &v);
	a->objects++;
	a->by_provider[v.provider]++;
	if (res) {
		res->by_provider[v.provider]++;
		if (v.provider == STORED_IDENTITY)
			add_example(res->clear, &res->n_clear, kv);
	}
	if ((a->objects & 1023) == 0)
		progress(run, false);
	if (v.provider != STORED_KMS_V2)
		return 0;
	return audit_kmsv2(run, kv, &v, res, ctx->st);
}

/* --- the run -------------------------------------------------------------- */

static int load_keys(struct run *run, struct state *st)
{
	struct audit_result *a = run->a;
	bool escrow = escrow_configured(run->o->state_dir);
	int r;

	r = statedir_open(run->o->state_dir, false);
	if (r < 0)
		return r;
	r = state_load(run->o->state_dir, st);
	if (r == -ENOENT)
		log_error("%s holds no keys: the audit maps key_ids to this node's generations",
		          run->o->state_dir);
	if (r < 0)
		return r;
	a->write_generation = st->write_generation;
	for (size_t i = 0; i < st->n_gens && i < AUDIT_MAX_KEY_IDS; i++) {
		struct audit_key *k = &a->keys[a->n_keys++];
		const struct state_generation *g = &st->gens[i];

		snprintf(k->key_id, sizeof(k->key_id), "%s", g->key_id);
		k->generation = g->number;
		k->in_state = true;
		k->write = g->number == st->write_generation;
		k->escrowed = escrow && tpm_kek_duplicable(g->kind) &&
		              escrow_has(run->o->state_dir, g->number);
	}
	return 0;
}

static int connect_daemon(struct run *run)
{
	struct listen_addr addr;
	int r;

	r = listen_addr_parse(run->o->listen, &addr);
	if (r < 0) {
		log_error("--listen %s: not a Unix socket address", run->o->listen);
		return r;
	}
	r = listen_connect(&addr, &run->daemon_fd);
	if (r < 0) {
		log_error("cannot connect to the daemon at %s: %s (the audit decrypts through it)",
		          listen_addr_str(&addr), strerror(-r));
		return r;
	}
	r = dial_wrap_fd(run->daemon_fd, &run->daemon_io);
	if (r == 0)
		r = h2_client_new(run->daemon_io, &run->daemon);
	return r;
}

static int record(const struct audit_result *a, const char *dir, bool snapshot)
{
	struct auditrec *rec = calloc(1, sizeof(*rec));
	int r;

	if (!rec)
		return -ENOMEM;
	rec->started = a->started;
	rec->finished = a->finished;
	snprintf(rec->source, sizeof(rec->source), "%s", a->source);
	snprintf(rec->prefix, sizeof(rec->prefix), "%s", a->prefix);
	rec->revision = a->revision;
	rec->complete = a->complete;
	rec->objects = a->objects;
	rec->encrypted = a->by_provider[STORED_KMS_V2];
	rec->undecryptable = a->undecryptable;
	for (size_t i = 0; i < a->n_keys; i++) {
		if (!a->keys[i].in_state)
			rec->foreign += a->keys[i].objects;
		else if (rec->n_gens < AUDITREC_MAX_GENS) {
			rec->gen[rec->n_gens] = a->keys[i].generation;
			rec->gen_objects[rec->n_gens++] = a->keys[i].objects;
		}
	}
	r = auditrec_save(dir, snapshot ? AUDITREC_SNAPSHOT : AUDITREC_LIVE, rec);
	free(rec);
	return r;
}

int audit_run(const struct audit_options *o, struct audit_result **ret)
{
	struct run *run = calloc(1, sizeof(*run));
	struct state st = {0};
	struct visit_ctx ctx = {.run = run, .st = &st};
	etcd *e = NULL;
	int r = -ENOMEM;

	if (!run)
		return -ENOMEM;
	run->o = o;
	run->daemon_fd = -1;
	run->a = calloc(1, sizeof(*run->a));
	if (!run->a)
		goto out;
	run->a->resources = calloc(AUDIT_MAX_RESOURCES, sizeof(*run->a->resources));
	if (!run->a->resources)
		goto out;
	run->prefix_len = strlen(o->prefix) + (o->prefix[strlen(o->prefix) - 1] != '/');
	snprintf(run->a->prefix, sizeof(run->a->prefix), "%s", o->prefix);
	r = load_keys(run, &st);
	if (r < 0)
		goto out;
	r = connect_daemon(run);
	if (r < 0)
		goto out;
	r = etcd_open(o->endpoints, &o->tls, o->timeout_ms, &e);
	if (r < 0)
		goto out;
	snprintf(run->a->source, sizeof(run->a->source), "%s",
	         o->snapshot ? o->snapshot : etcd_endpoint(e));
	run->a->started = util_now_realtime_s();
	run->a->snapshot = o->snapshot != NULL;
	r = etcd_scan(e, o->prefix, visit, &ctx, &run->a->revision);
	run->a->finished = util_now_realtime_s();
	run->a->complete = r == 0;
	progress(run, true);
	if (r < 0)
		log_error("the audit stopped after %llu objects: it is incomplete and proves "
		          "nothing about the rest",
		          (unsigned long long)run->a->objects);
	r = record(run->a, o->state_dir, o->snapshot != NULL);
	if (r < 0)
		goto out;
	*ret = run->a;
	run->a = NULL;
out:
	etcd_close(e);
	cache_clear(run);
	h2_client_free(run->daemon);
	dial_close(run->daemon_io);
	if (run->daemon_fd >= 0)
		close(run->daemon_fd);
	state_free(&st);
	audit_result_free(run->a);
	free(run);
	return r;
}

void audit_result_free(struct audit_result *a)
{
	if (!a)
		return;
	for (size_t i = 0; a->resources && i < a->n_resources; i++) {
		for (size_t j = 0; j < a->resources[i].n_clear; j++)
			free(a->resources[i].clear[j]);
		for (size_t j = 0; j < a->resources[i].n_lost; j++)
			free(a->resources[i].lost[j]);
	}
	for (size_t i = 0; i < a->n_failures; i++)
		free(a->failures[i].key);
	free(a->resources);
	free(a);
}

bool audit_all_decrypt(const struct audit_result *a)
{
	return a->complete && a->undecryptable == 0;
}
