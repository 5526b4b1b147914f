/* Logging to stderr: text or JSON lines. When stderr is the journal, each
 * line starts with its syslog priority (journald keeps levels) and text
 * lines leave out the time and level the journal records itself. Never
 * pass key bytes or plaintext here. */
#ifndef TPM2KMS_LOG_H
#define TPM2KMS_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
	LOG_LEVEL_ERROR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

enum log_format {
	LOG_FORMAT_TEXT,
	LOG_FORMAT_JSON,
};

void log_setup(enum log_format format, enum log_level max_level);
/* The text of the last error logged ("" if none): for a final status. */
const char *log_last_error(void);
int log_parse_level(const char *s, enum log_level *ret);
int log_parse_format(const char *s, enum log_format *ret);
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...)   log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)   log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* One line per RPC. Any string may be NULL. */
struct log_call {
	const char *method;  /* gRPC path */
	const char *uid;     /* request uid from the apiserver */
	const char *key_id;
	int grpc_status;
	const char *message; /* grpc-message, if any */
	uint64_t duration_us;
};

void log_call(const struct log_call *c);

#endif
