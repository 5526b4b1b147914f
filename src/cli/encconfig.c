#include "config.h"

#include "cli/encconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 8

/* One key of the path to the current line, at its column. */
struct level {
	unsigned col;
	char key[32];
};

/* The entry of `resources` being read: its providers, and whether it
 * covers Secrets. */
struct entry {
	bool covers_secrets;
	struct encconfig_provider providers[ENCCONFIG_MAX_PROVIDERS];
	size_t n;
};

struct parser {
	struct level path[DEPTH_MAX];
	size_t depth;
	struct entry cur;
	bool in_entry;
	bool have_api_version, have_kind;
	struct encconfig out;
	bool taken; /* out holds the first entry covering secrets */
};

/* Unquotes a scalar in place ("x" or 'x'). */
static char *scalar(char *v)
{
	size_t n = strlen(v);

	while (n && isspace((unsigned char)v[n - 1]))
		v[--n] = '\0';
	if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
		v[n - 1] = '\0';
		v++;
	}
	return v;
}

static bool path_is(const struct parser *p, const char *a, const char *b, const char *c)
{
	const char *want[3] = {a, b, c};
	size_t n = c ? 3 : b ? 2 : a ? 1 : 0;

	if (p->depth != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(p->path[i].key, want[i]) != 0)
			return false;
	return true;
}

static void entry_end(struct parser *p)
{
	if (p->in_entry && p->cur.covers_secrets && !p->taken) {
		p->out.covers_secrets = true;
		memcpy(p->out.providers, p->cur.providers, sizeof(p->cur.providers));
		p->out.n_providers = p->cur.n;
		p->taken = true;
	}
	memset(&p->cur, 0, sizeof(p->cur));
	p->in_entry = false;
}

static void resource_name(struct parser *p, const char *name)
{
	/* "*." is every resource of the core group, "*.*" every resource. */
	if (strcmp(name, "secrets") == 0 || strcmp(name, "*.") == 0 || strcmp(name, "*.*") == 0)
		p->cur.covers_secrets = true;
}

/* resources: [secrets, configmaps] */
static int flow_names(struct parser *p, char *v)
{
	char *save = NULL, *tok;
	size_t n = strlen(v);

	if (n < 2 || v[n - 1] != ']')
		return -EINVAL;
	v[n - 1] = '\0';
	for (tok = strtok_r(v + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (isspace((unsigned char)*tok))
			tok++;
		resource_name(p, scalar(tok));
	}
	return 0;
}

static int kms_field(struct encconfig_provider *k, const char *key, const char *v)
{
	char *dst = strcmp(key, "name") == 0	     ? k->name
		    : strcmp(key, "endpoint") == 0   ? k->endpoint
		    : strcmp(key, "apiVersion") == 0 ? k->api_version
		    : strcmp(key, "timeout") == 0    ? k->timeout
						     : NULL;
	size_t size = strcmp(key, "name") == 0	       ? sizeof(k->name)
		      : strcmp(key, "endpoint") == 0   ? sizeof(k->endpoint)
		      : strcmp(key, "apiVersion") == 0 ? sizeof(k->api_version)
						       : sizeof(k->timeout);

	if (!dst)
		return 0; /* cachesize and the like */
	if (strlen(v) >= size)
		return -EINVAL;
	strcpy(dst, v);
	return 0;
}

/* One line: col is the column of its key (past "- " for a list item). */
static int line_do(struct parser *p, unsigned dash_col, bool item, unsigned col, char *key,
		   char *value, const char **why)
{
	/* Leave the keys this line is not under. A list item may sit at its
	 * parent key's column. */
	while (p->depth && (item ? p->path[p->depth - 1].col > dash_col
				 : p->path[p->depth - 1].col >= col))
		p->depth--;
	if (item && path_is(p, "resources", NULL, NULL)) {
		entry_end(p);
		p->in_entry = true;
	}
	if (item && !key) {
		if (path_is(p, "resources", "resources", NULL))
			resource_name(p, scalar(value));
		return 0;
	}
	if (item && path_is(p, "resources", "providers", NULL)) {
		struct encconfig_provider *pr;

		if (p->cur.n == ENCCONFIG_MAX_PROVIDERS) {
			*why = "more providers than doctor reads (16)";
			return -EINVAL;
		}
		pr = &p->cur.providers[p->cur.n++];
		snprintf(pr->type, sizeof(pr->type), "%s", key);
	} else if (path_is(p, "resources", "providers", "kms") && p->cur.n) {
		if (kms_field(&p->cur.providers[p->cur.n - 1], key, scalar(value)) < 0) {
			*why = "a kms setting longer than doctor reads";
			return -EINVAL;
		}
	} else if (p->depth == 0 && strcmp(key, "apiVersion") == 0) {
		p->have_api_version = strcmp(scalar(value), "apiserver.config.k8s.io/v1") == 0;
	} else if (p->depth == 0 && strcmp(key, "kind") == 0) {
		p->have_kind = strcmp(scalar(value), "EncryptionConfiguration") == 0;
	} else if (path_is(p, "resources", NULL, NULL) && strcmp(key, "resources") == 0 &&
		   *value == '[') {
		if (flow_names(p, value) < 0) {
			*why = "a flow list doctor cannot read";
			return -EINVAL;
		}
		return 0;
	}
	if (*value == '[' || (*value == '{' && strcmp(scalar(value), "{}") != 0)) {
		*why = "flow style (write the configuration in block style)";
		return -EINVAL;
	}
	if (p->depth == DEPTH_MAX) {
		*why = "nested deeper than an EncryptionConfiguration";
		return -EINVAL;
	}
	p->path[p->depth].col = col;
	snprintf(p->path[p->depth].key, sizeof(p->path[p->depth].key), "%s", key);
	p->depth++;
	return 0;
}

/* Splits "key: value" (value may be empty); NULL key for a plain scalar. */
static void split(char *s, char **ret_key, char **ret_value)
{
	char *colon = strstr(s, ": ");
	size_t n = strlen(s);

	if (!colon && n && s[n - 1] == ':') {
		s[n - 1] = '\0';
		*ret_key = s;
		*ret_value = s + n;
	} else if (colon && s[0] != '"' && s[0] != '\'') {
		*colon = '\0';
		*ret_key = s;
		*ret_value = colon + 2;
		while (**ret_value == ' ')
			(*ret_value)++;
	} else {
		*ret_key = NULL;
		*ret_value = s;
	}
}

int encconfig_parse(const char *text, size_t len, struct encconfig *ret, const char **ret_why,
		    unsigned *ret_line)
{
	struct parser *p = calloc(1, sizeof(*p));
	char *copy = strndup(text, len), *line, *save = NULL;
	unsigned no = 0;
	bool content = false;
	int r = -ENOMEM;

	if (!p || !copy)
		goto out;
	r = -EINVAL;
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *s = line, *hash, *key, *value;
		unsigned col = 0, dash = 0;
		bool item = false;

		no++;
		/* A comment starts the line or follows a blank. */
		for (hash = strchr(s, '#'); hash; hash = strchr(hash + 1, '#'))
			if (hash == s || isspace((unsigned char)hash[-1])) {
				*hash = '\0';
				break;
			}
		while (*s == ' ')
			s++, col++;
		if (*s == '\t') {
			*ret_why = "a tab in the indentation";
			goto fail;
		}
		if (*s == '\0' || (*s == '\r' && s[1] == '\0'))
			continue;
		if (strncmp(s, "---", 3) == 0 && col == 0) {
			if (content) {
				*ret_why = "more than one YAML document";
				goto fail;
			}
			continue;
		}
		content = true;
		if (s[0] == '-' && (s[1] == ' ' || s[1] == '\0')) {
			item = true;
			dash = col;
			s++, col++;
			while (*s == ' ')
				s++, col++;
		}
		split(s, &key, &value);
		if (!item && !key) {
			*ret_why = "neither a key nor a list item";
			goto fail;
		}
		if (line_do(p, dash, item, col, key, value, ret_why) < 0)
			goto fail;
	}
	entry_end(p);
	p->out.is_encryption_config = p->have_api_version && p->have_kind;
	*ret = p->out;
	r = 0;
	goto out;
fail:
	*ret_line = no;
out:
	free(copy);
	free(p);
	return r;
}

int encconfig_duration_ms(const char *s, unsigned long *ret_ms)
{
	unsigned long total = 0;

	if (!*s)
		return -EINVAL;
	while (*s) {
		char *end;
		unsigned long v = strtoul(s, &end, 10), mult;

		if (end == s)
			return -EINVAL;
		if (strncmp(end, "ms", 2) == 0)
			mult = 1, end += 2;
		else if (*end == 's')
			mult = 1000, end++;
		else if (*end == 'm')
			mult = 60000, end++;
		else if (*end == 'h')
			mult = 3600000, end++;
		else
			return -EINVAL;
		if (v > 86400000ul / mult)
			return -ERANGE;
		total += v * mult;
		s = end;
	}
	*ret_ms = total;
	return 0;
}
