#include "config.h"

#include "base/log.h"
#include "keys/sharelog.h"
#include "keys/statedir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARELOG_MAX_BYTES (SHARELOG_MAX_NODES * (NODE_FINGERPRINT_MAX + 8 + 11 * SHARELOG_MAX_GENS) + 128)

struct shared {
	char fp[NODE_FINGERPRINT_MAX];
	bool attested; /* by the approval the last export checked */
	uint32_t gens[SHARELOG_MAX_GENS];
	size_t n;
};

struct sharelog {
	struct shared *nodes; /* SHARELOG_MAX_NODES */
	size_t n;
};

static bool has(const struct shared *sh, uint32_t g)
{
	for (size_t i = 0; i < sh->n; i++)
		if (sh->gens[i] == g)
			return true;
	return false;
}

/* "node FP [attested] G G ...", one per line; anything else is damage. */
static int parse(const char *dir, const char *text, struct sharelog *log_)
{
	const char *line = text;
	unsigned no = 0;

	while (*line) {
		const char *end = strchr(line, '\n');
		char buf[NODE_FINGERPRINT_MAX + 8 + 11 * SHARELOG_MAX_GENS], *save = NULL, *tok;
		size_t len = end ? (size_t)(end - line) : strlen(line);
		struct shared *sh;

		no++;
		if (len == 0 || line[0] == '#')
			goto next;
		if (len >= sizeof(buf) || log_->n == SHARELOG_MAX_NODES)
			goto bad;
		memcpy(buf, line, len);
		buf[len] = '\0';
		tok = strtok_r(buf, " ", &save);
		if (!tok || strcmp(tok, "node") != 0)
			goto bad;
		tok = strtok_r(NULL, " ", &save);
		if (!tok || strlen(tok) >= NODE_FINGERPRINT_MAX)
			goto bad;
		sh = &log_->nodes[log_->n++];
		strcpy(sh->fp, tok);
		sh->n = 0;
		sh->attested = false;
		while ((tok = strtok_r(NULL, " ", &save))) {
			char *e;
			unsigned long g;

			if (sh->n == 0 && !sh->attested && strcmp(tok, "attested") == 0) {
				sh->attested = true;
				continue;
			}
			g = strtoul(tok, &e, 10);

			if (*e || g == 0 || g > UINT32_MAX || sh->n == SHARELOG_MAX_GENS)
				goto bad;
			sh->gens[sh->n++] = (uint32_t)g;
		}
next:
		if (!end)
			break;
		line = end + 1;
	}
	return 0;
bad:
	log_error("%s/" SHARELOG_FILE ": line %u is damaged", dir, no);
	return -EBADMSG;
}

static int load(const char *dir, struct sharelog *ret)
{
	struct sharelog l = {0};
	char *text = NULL;
	size_t len;
	int r;

	l.nodes = calloc(SHARELOG_MAX_NODES, sizeof(*l.nodes));
	if (!l.nodes)
		return -ENOMEM;
	r = statedir_read(dir, SHARELOG_FILE, SHARELOG_MAX_BYTES, &text, &len);
	if (r == -ENOENT)
		r = 0;
	else if (r == 0)
		r = parse(dir, text, &l);
	free(text);
	if (r < 0) {
		free(l.nodes);
		return r;
	}
	*ret = l;
	return 0;
}

int sharelog_record(const char *dir, const char *fp, bool attested, const uint32_t *gens,
		    size_t n)
{
	struct sharelog l;
	struct shared *sh = NULL;
	char *text = NULL;
	size_t cap = SHARELOG_MAX_BYTES, pos = 0;
	int r;

	r = load(dir, &l);
	if (r < 0)
		return r;
	for (size_t i = 0; i < l.n && !sh; i++)
		if (strcmp(l.nodes[i].fp, fp) == 0)
			sh = &l.nodes[i];
	if (!sh) {
		if (l.n == SHARELOG_MAX_NODES) {
			log_error("%s/" SHARELOG_FILE ": more than %d nodes", dir, SHARELOG_MAX_NODES);
			r = -E2BIG;
			goto out;
		}
		sh = &l.nodes[l.n++];
		snprintf(sh->fp, sizeof(sh->fp), "%s", fp);
	}
	sh->attested = attested;
	for (size_t i = 0; i < n; i++) {
		if (has(sh, gens[i]))
			continue;
		if (sh->n == SHARELOG_MAX_GENS) {
			r = -E2BIG;
			goto out;
		}
		sh->gens[sh->n++] = gens[i];
	}
	text = malloc(cap);
	if (!text) {
		r = -ENOMEM;
		goto out;
	}
	pos = (size_t)snprintf(text, cap, "# generations this node exported, by node (promote "
					  "checks it)\n");
	for (size_t i = 0; i < l.n; i++) {
		pos += (size_t)snprintf(text + pos, cap - pos, "node %s%s", l.nodes[i].fp,
					l.nodes[i].attested ? " attested" : "");
		for (size_t k = 0; k < l.nodes[i].n; k++)
			pos += (size_t)snprintf(text + pos, cap - pos, " %u",
						(unsigned)l.nodes[i].gens[k]);
		pos += (size_t)snprintf(text + pos, cap - pos, "\n");
	}
	r = statedir_write(dir, SHARELOG_FILE, text, pos);
out:
	free(text);
	free(l.nodes);
	return r;
}

int sharelog_missing(const char *dir, uint32_t generation, char *out, size_t size,
		     size_t *ret_n)
{
	struct sharelog l;
	size_t n = 0, pos = 0;
	int r;

	r = load(dir, &l);
	if (r < 0)
		return r;
	*out = '\0';
	for (size_t i = 0; i < l.n; i++) {
		if (has(&l.nodes[i], generation))
			continue;
		if (pos < size)
			pos += (size_t)snprintf(out + pos, size - pos, "%s%s", n ? ", " : "",
						l.nodes[i].fp);
		n++;
	}
	free(l.nodes);
	*ret_n = n;
	return 0;
}

int sharelog_describe(const char *dir, char **ret_text)
{
	struct sharelog l;
	char *text;
	size_t cap = SHARELOG_MAX_BYTES, pos = 0;
	int r;

	r = load(dir, &l);
	if (r < 0)
		return r;
	text = malloc(cap);
	if (!text) {
		free(l.nodes);
		return -ENOMEM;
	}
	text[0] = '\0';
	for (size_t i = 0; i < l.n; i++) {
		pos += (size_t)snprintf(text + pos, cap - pos, "%-13s node %s (%s), generation%s",
					"exported to:", l.nodes[i].fp,
					l.nodes[i].attested ? "attested" : "not attested",
					l.nodes[i].n == 1 ? "" : "s");
		for (size_t k = 0; k < l.nodes[i].n; k++)
			pos += (size_t)snprintf(text + pos, cap - pos, "%s %u", k ? "," : "",
						(unsigned)l.nodes[i].gens[k]);
		pos += (size_t)snprintf(text + pos, cap - pos, "\n");
	}
	free(l.nodes);
	*ret_text = text;
	return 0;
}
