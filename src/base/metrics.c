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

struct rpc_timing {
	char api[16], method[16];
	struct histogram h;
};

struct tpm_series {
	char op[16];
	char error[24];
	uint64_t count;
};

struct tpm_timing {
	char op[16];
	struct histogram h;
};

#define MAX_SERIES 128

static struct rpc_series rpcs[MAX_SERIES];
static size_t n_rpcs;
static struct rpc_timing rpc_times[MAX_SERIES];
static size_t n_rpc_times;
static struct tpm_series tpm_errors[MAX_SERIES];
static size_t n_tpm_errors;
static struct tpm_timing tpm_times[8];
static size_t n_tpm_times;
static struct {
	char command[24];
	struct histogram h;
} tpm_commands[32];
static size_t n_tpm_commands;

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
	n_rpcs = n_rpc_times = n_tpm_errors = n_tpm_times = n_tpm_commands = 0;
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
	char api[16], method[16];
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

	for (i = 0; i < n_rpc_times; i++)
		if (strcmp(rpc_times[i].api, api) == 0 && strcmp(rpc_times[i].method, method) == 0)
			break;
	if (i == n_rpc_times && n_rpc_times < MAX_SERIES) {
		strcpy(rpc_times[i].api, api);
		strcpy(rpc_times[i].method, method);
		n_rpc_times++;
	}
	if (i < n_rpc_times)
		observe(&rpc_times[i].h, duration_us);
}

void metrics_tpm(const char *op, uint64_t duration_us, const char *error)
{
	size_t i;

	for (i = 0; i < n_tpm_times; i++)
		if (strcmp(tpm_times[i].op, op) == 0)
			break;
	if (i == n_tpm_times && n_tpm_times < 8) {
		snprintf(tpm_times[i].op, sizeof(tpm_times[i].op), "%s", op);
		n_tpm_times++;
	}
	if (i < n_tpm_times)
		observe(&tpm_times[i].h, duration_us);
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
	size_t i;

	for (i = 0; i < n_tpm_commands; i++)
		if (strcmp(tpm_commands[i].command, command) == 0)
			break;
	if (i == n_tpm_commands) {
		if (n_tpm_commands == sizeof(tpm_commands) / sizeof(tpm_commands[0]))
			return;
		snprintf(tpm_commands[i].command, sizeof(tpm_commands[i].command), "%s", command);
		n_tpm_commands++;
	}
	observe(&tpm_commands[i].h, duration_us);
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

int metrics_render(char **ret, size_t *ret_len)
{
	struct metrics_out out = {.cap = 8192};
	char labels[96];

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
	metrics_family(&out, "tpm2kms_request_duration_seconds", "histogram",
		       "Time from request headers to response, by API and method.");
	for (size_t i = 0; i < n_rpc_times; i++) {
		snprintf(labels, sizeof(labels), "api=\"%.15s\",method=\"%.15s\"", rpc_times[i].api,
			 rpc_times[i].method);
		print_histogram(&out, "tpm2kms_request_duration_seconds", labels,
				&rpc_times[i].h);
	}
	metrics_family(&out, "tpm2kms_tpm_command_duration_seconds", "histogram",
		       "TPM commands, sent to answer received, by command.");
	for (size_t i = 0; i < n_tpm_commands; i++) {
		snprintf(labels, sizeof(labels), "command=\"%.23s\"", tpm_commands[i].command);
		print_histogram(&out, "tpm2kms_tpm_command_duration_seconds", labels,
				&tpm_commands[i].h);
	}
	metrics_family(&out, "tpm2kms_tpm_operation_duration_seconds", "histogram",
		       "TPM worker jobs (counter: NV_Increment+NV_Read; unseal; probe), by "
		       "operation.");
	for (size_t i = 0; i < n_tpm_times; i++) {
		snprintf(labels, sizeof(labels), "op=\"%.15s\"", tpm_times[i].op);
		print_histogram(&out, "tpm2kms_tpm_operation_duration_seconds", labels,
				&tpm_times[i].h);
	}
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
