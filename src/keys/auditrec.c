#include "config.h"

#include "keys/auditrec.h"
#include "base/log.h"
#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_FORMAT 1
#define RECORD_MAX    (64 * 1024)

int auditrec_save(const char *dir, const char *name, const struct auditrec *a)
{
	size_t cap = 2048 + a->n_gens * 48, len;
	char *buf = malloc(cap);
	int r;

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(
	    buf, cap,
	    "format %d\nstarted %llu\nfinished %llu\nsource %s\nprefix %s\n"
	    "revision %lld\ncomplete %s\nobjects %llu\nencrypted %llu\n"
	    "undecryptable %llu\nforeign %llu\n",
	    RECORD_FORMAT, (unsigned long long)a->started, (unsigned long long)a->finished,
	    a->source, a->prefix, (long long)a->revision, a->complete ? "yes" : "no",
	    (unsigned long long)a->objects, (unsigned long long)a->encrypted,
	    (unsigned long long)a->undecryptable, (unsigned long long)a->foreign);
	for (size_t i = 0; i < a->n_gens && len < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, "generation %u %llu\n",
		                        (unsigned)a->gen[i], (unsigned long long)a->gen_objects[i]);
	r = len < cap ? statedir_write(dir, name, buf, len) : -ENOBUFS;
	free(buf);
	return r;
}

/* A value with no newline or NUL, copied whole or refused. */
static int copy_text(const char *val, char *out, size_t size)
{
	if (strlen(val) >= size)
		return -EINVAL;
	strcpy(out, val);
	return 0;
}

static int parse_line(char *key, char *val, struct auditrec *a)
{
	uint64_t v;
	unsigned g;
	unsigned long long n;

	if (strcmp(key, "format") == 0)
		return util_parse_u64(val, UINT32_MAX, &v) == 0 && v == RECORD_FORMAT ? 0 : -EINVAL;
	if (strcmp(key, "source") == 0)
		return copy_text(val, a->source, sizeof(a->source));
	if (strcmp(key, "prefix") == 0)
		return copy_text(val, a->prefix, sizeof(a->prefix));
	if (strcmp(key, "complete") == 0) {
		a->complete = strcmp(val, "yes") == 0;
		return a->complete || strcmp(val, "no") == 0 ? 0 : -EINVAL;
	}
	if (strcmp(key, "revision") == 0) {
		if (util_parse_u64(val, INT64_MAX, &v) < 0)
			return -EINVAL;
		a->revision = (int64_t)v;
		return 0;
	}
	if (strcmp(key, "generation") == 0) {
		if (sscanf(val, "%u %llu", &g, &n) != 2 || a->n_gens == AUDITREC_MAX_GENS)
			return -EINVAL;
		a->gen[a->n_gens] = g;
		a->gen_objects[a->n_gens++] = n;
		return 0;
	}
	if (util_parse_u64(val, UINT64_MAX, &v) < 0)
		return -EINVAL;
	if (strcmp(key, "started") == 0)
		a->started = v;
	else if (strcmp(key, "finished") == 0)
		a->finished = v;
	else if (strcmp(key, "objects") == 0)
		a->objects = v;
	else if (strcmp(key, "encrypted") == 0)
		a->encrypted = v;
	else if (strcmp(key, "undecryptable") == 0)
		a->undecryptable = v;
	else if (strcmp(key, "foreign") == 0)
		a->foreign = v;
	else
		return -EINVAL;
	return 0;
}

int auditrec_load(const char *dir, const char *name, struct auditrec *ret)
{
	struct auditrec *a = calloc(1, sizeof(*a));
	char *buf = NULL, *save = NULL;
	size_t len, lineno = 0;
	int r;

	if (!a)
		return -ENOMEM;
	r = statedir_read(dir, name, RECORD_MAX, &buf, &len);
	if (r < 0)
		goto out;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *val = strchr(line, ' ');

		lineno++;
		if (!val || (*val++ = '\0', parse_line(line, val, a) < 0)) {
			log_error("%s/%s: line %zu is not valid", dir, name, lineno);
			r = -EBADMSG;
			goto out;
		}
	}
	if (!a->started || !a->source[0]) {
		log_error("%s/%s: incomplete record", dir, name);
		r = -EBADMSG;
		goto out;
	}
	*ret = *a;
	r = 0;
out:
	free(buf);
	free(a);
	return r;
}

bool auditrec_count(const struct auditrec *a, uint32_t gen, uint64_t *ret_objects)
{
	for (size_t i = 0; i < a->n_gens; i++)
		if (a->gen[i] == gen) {
			*ret_objects = a->gen_objects[i];
			return true;
		}
	return false;
}
