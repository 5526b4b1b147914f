/* Prometheus metrics: counters and histograms fed by the layers through
 * small calls, rendered in the text exposition format. Loop thread only.
 * Must not: take labels from callers' input unbounded. */
#ifndef TPM2KMS_METRICS_H
#define TPM2KMS_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* A finished RPC (path as called, gRPC status; -1 for an HTTP refusal). */
void metrics_rpc(const char *path, int grpc_status, uint64_t duration_us);

/* A finished TPM job: op is "counter", "unseal" or "probe"; error is "" on
 * success or a short name of the failure. */
void metrics_tpm(const char *op, uint64_t duration_us, const char *error);

/* One TPM command as seen on the wire (name like "NV_Increment"). */
void metrics_tpm_command(const char *command, uint64_t duration_us);

/* Producers of point-in-time values (gauges, info) append their lines. */
struct metrics_out;
void metrics_printf(struct metrics_out *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A HELP/TYPE header, once per family. */
void metrics_family(struct metrics_out *out, const char *name, const char *type,
		    const char *help);
/* A gauge family of one unlabelled value. */
void metrics_gauge(struct metrics_out *out, const char *name, const char *help,
		   unsigned long long value);
typedef void (*metrics_collector)(void *arg, struct metrics_out *out);
int metrics_add_collector(metrics_collector fn, void *arg);
void metrics_remove_collector(metrics_collector fn, void *arg);

/* Renders everything into a new buffer (free it). */
int metrics_render(char **ret, size_t *ret_len);

void metrics_reset(void); /* tests */

#endif
