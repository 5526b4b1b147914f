#include "config.h"

#include "base/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in microseconds, from 10 µs: TPM-free calls take tens of
 * microseconds, TPM ones milliseconds. */
static const uint64_t buckets_us[] = {10,    25,    50,     100,    250,    500,     1000,
				      2500,  5000,  10000,  25000,  50000,  100000,  250000,
				      500000, 1000000, 2500000, 5000000, 10000000};
#define N_BUCKETS (sizeof(buckets_us) / sizeof(buckets_us[0]))

struct histogram {
	uint64_t counts[N_BUCKETS + 1]; /* last: +Inf */
	uint64_t sum_us;
	uint64_t count;
};

struct rpc_series {
	char api[16], method[16];
	int code;
	uint64_t count;
};

struct tpm_series {
	char op[16];
	char error[24];
	uint64_t count;
};

/* The histograms of one family: a series per label set, at most max (a
 * label set past them is not counted). */
struct histogram_series {
	char labels[64]; /* as rendered: api="v2",method="Encrypt" */
	struct histogram h;
};

struct histograms {
	struct histogram_series *series;
	size_t n, max;
};

#define MAX_SERIES 128

static struct rpc_series rpcs[MAX_SERIES];
static size_t n_rpcs;
static struct histogram_series rpc_time_series[MAX_SERIES];
static struct histograms rpc_times = {rpc_time_series, 0, MAX_SERIES};
static struct tpm_series tpm_errors[MAX_SERIES];
static size_t n_tpm_errors;
static struct histogram_series tpm_time_series[8];
static struct histograms tpm_times = {tpm_time_series, 0, 8};
static struct histogram_series tpm_command_series[32];
static struct histograms tpm_commands = {tpm_command_series, 0, 32};

static struct {
	metrics_collector fn;
	void *arg;
} collectors[8];
static size_t n_collectors;

struct metrics_out {
	char *buf;
	size_t len, cap;
	int failed;
};

void metrics_reset(void)
{
	n_rpcs = n_tpm_errors = 0;
	rpc_times.n = tpm_times.n = tpm_commands.n = 0;
}

static void observe(struct histogram *h, uint64_t us)
{
	size_t i = 0;

	while (i < N_BUCKETS && us > buckets_us[i])
		i++;
	h->counts[i]++;
	h->sum_us += us;
	h->count++;
}

static void observe_labelled(struct histograms *f, const char *labels, uint64_t us)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		if (strcmp(f->series[i].labels, labels) == 0)
			break;
	if (i == f->n) {
		if (f->n == f->max)
			return;
		memset(&f->series[i], 0, sizeof(f->series[i]));
		snprintf(f->series[i].labels, sizeof(f->series[i].labels), "%s", labels);
		f->n++;
	}
	observe(&f->series[i].h, us);
}

/* "/v2.KeyManagementService/Status" -> "v2", "Status"; anything else is
 * "unknown", so clients cannot create series at will. */
static void split_path(const char *path, char api[16], char method[16])
{
	static const char *const apis[] = {"v2", "v2beta1", "v1beta1"};
	static const char *const methods[] = {"Status", "Encrypt", "Decrypt", "Version"};

	strcpy(api, "unknown");
	strcpy(method, "unknown");
	for (size_t a = 0; a < 3; a++) {
		size_t al = strlen(apis[a]);

		if (path[0] != '/' || strncmp(path + 1, apis[a], al) != 0 ||
		    strncmp(path + 1 + al, ".KeyManagementService/", 22) != 0)
			continue;
		for (size_t m = 0; m < 4; m++) {
			if (strcmp(path + 1 + al + 22, methods[m]) == 0) {
				strcpy(api, apis[a]);
				strcpy(method, methods[m]);
			}
		}
	}
}

void metrics_rpc(const char *path, int grpc_status, uint64_t duration_us)
{
	char api[16], method[16], labels[64];
	size_t i;

	split_path(path ? path : "", api, method);
	for (i = 0; i < n_rpcs; i++)
		if (rpcs[i].code == grpc_status && strcmp(rpcs[i].api, api) == 0 &&
		    strcmp(rpcs[i].method, method) == 0)
			break;
	if (i == n_rpcs && n_rpcs < MAX_SERIES) {
		strcpy(rpcs[i].api, api);
		strcpy(rpcs[i].method, method);
		rpcs[i].code = grpc_status;
		n_rpcs++;
	}
	if (i < n_rpcs)
		rpcs[i].count++;
	snprintf(labels, sizeof(labels), "api=\"%s\",method=\"%s\"", api, method);
	observe_labelled(&rpc_times, labels, duration_us);
}

void metrics_tpm(const char *op, uint64_t duration_us, const char *error)
{
	char labels[64];
	size_t i;

	snprintf(labels, sizeof(labels), "op=\"%.15s\"", op);
	observe_labelled(&tpm_times, labels, duration_us);
	if (!error || !*error)
		return;
	for (i = 0; i < n_tpm_errors; i++)
		if (strcmp(tpm_errors[i].op, op) == 0 && strcmp(tpm_errors[i].error, error) == 0)
			break;
	if (i == n_tpm_errors && n_tpm_errors < MAX_SERIES) {
		snprintf(tpm_errors[i].op, sizeof(tpm_errors[i].op), "%s", op);
		snprintf(tpm_errors[i].error, sizeof(tpm_errors[i].error), "%s", error);
		n_tpm_errors++;
	}
	if (i < n_tpm_errors)
		tpm_errors[i].count++;
}

void metrics_tpm_command(const char *command, uint64_t duration_us)
{
	char labels[64];

	snprintf(labels, sizeof(labels), "command=\"%.23s\"", command);
	observe_labelled(&tpm_commands, labels, duration_us);
}

int metrics_add_collector(metrics_collector fn, void *arg)
{
	if (n_collectors >= sizeof(collectors) / sizeof(collectors[0]))
		return -ENOSPC;
	collectors[n_collectors].fn = fn;
	collectors[n_collectors].arg = arg;
	n_collectors++;
	return 0;
}

void metrics_remove_collector(metrics_collector fn, void *arg)
{
	for (size_t i = 0; i < n_collectors; i++) {
		if (collectors[i].fn == fn && collectors[i].arg == arg) {
			collectors[i] = collectors[--n_collectors];
			return;
		}
	}
}

void metrics_printf(struct metrics_out *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(out->buf + out->len, out->cap - out->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			out->failed = 1;
			return;
		}
		if ((size_t)n < out->cap - out->len) {
			out->len += (size_t)n;
			return;
		}
		{
			size_t cap = out->cap * 2 + (size_t)n;
			char *b = realloc(out->buf, cap);

			if (!b) {
				out->failed = 1;
				return;
			}
			out->buf = b;
			out->cap = cap;
		}
	}
}

void metrics_family(struct metrics_out *out, const char *name, const char *type,
		    const char *help)
{
	metrics_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_gauge(struct metrics_out *out, const char *name, const char *help,
		   unsigned long long value)
{
	metrics_family(out, name, "gauge", help);
	metrics_printf(out, "%s %llu\n", name, value);
}

static void print_histogram(struct metrics_out *out, const char *name, const char *labels,
			    const struct histogram *h)
{
	uint64_t cum = 0;

	for (size_t b = 0; b < N_BUCKETS; b++) {
		cum += h->counts[b];
		metrics_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
			       (double)buckets_us[b] / 1e6, (unsigned long long)cum);
	}
	cum += h->counts[N_BUCKETS];
	metrics_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
		       (unsigned long long)cum);
	metrics_printf(out, "%s_sum{%s} %.6f\n", name, labels, (double)h->sum_us / 1e6);
	metrics_printf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

static void print_histograms(struct metrics_out *out, const char *name, const char *help,
			     const struct histograms *f)
{
	metrics_family(out, name, "histogram", help);
	for (size_t i = 0; i < f->n; i++)
		print_histogram(out, name, f->series[i].labels, &f->series[i].h);
}

int metrics_render(char **ret, size_t *ret_len)
{
	struct metrics_out out = {.cap = 8192};

	out.buf = malloc(out.cap);
	if (!out.buf)
		return -ENOMEM;
	out.buf[0] = '\0';

	metrics_family(&out, "tpm2kms_build_info", "gauge", "Build information.");
	metrics_printf(&out, "tpm2kms_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

	metrics_family(&out, "tpm2kms_requests_total", "counter",
		       "KMS calls answered, by API, method and gRPC status code (-1: HTTP refusal).");
	for (size_t i = 0; i < n_rpcs; i++)
		metrics_printf(&out, "tpm2kms_requests_total{api=\"%s\",method=\"%s\",code=\"%d\"} %llu\n",
			       rpcs[i].api, rpcs[i].method, rpcs[i].code,
			       (unsigned long long)rpcs[i].count);
	print_histograms(&out, "tpm2kms_request_duration_seconds",
			 "Time from request headers to response, by API and method.", &rpc_times);
	print_histograms(&out, "tpm2kms_tpm_command_duration_seconds",
			 "TPM commands, sent to answer received, by command.", &tpm_commands);
	print_histograms(&out, "tpm2kms_tpm_operation_duration_seconds",
			 "TPM worker jobs (counter: NV_Increment+NV_Read; unseal; probe), by "
			 "operation.",
			 &tpm_times);
	metrics_family(&out, "tpm2kms_tpm_errors_total", "counter",
		       "Failed TPM operations, by operation and error.");
	for (size_t i = 0; i < n_tpm_errors; i++)
		metrics_printf(&out, "tpm2kms_tpm_errors_total{op=\"%s\",error=\"%s\"} %llu\n",
			       tpm_errors[i].op, tpm_errors[i].error,
			       (unsigned long long)tpm_errors[i].count);
	for (size_t i = 0; i < n_collectors; i++)
		collectors[i].fn(collectors[i].arg, &out);
	if (out.failed) {
		free(out.buf);
		return -ENOMEM;
	}
	*ret = out.buf;
	*ret_len = out.len;
	return 0;
}
