#include "config.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_format log_fmt = LOG_FORMAT_TEXT;
static enum log_level log_max = LOG_LEVEL_INFO;
static bool log_syslog_prefix;

void log_setup(enum log_format format, enum log_level max_level, bool syslog_prefix)
{
	log_fmt = format;
	log_max = max_level;
	log_syslog_prefix = syslog_prefix;
}

int log_parse_level(const char *s, enum log_level *ret)
{
	static const struct {
		const char *name;
		enum log_level level;
	} levels[] = {
		{"error", LOG_LEVEL_ERROR},
		{"warning", LOG_LEVEL_WARNING},
		{"info", LOG_LEVEL_INFO},
		{"debug", LOG_LEVEL_DEBUG},
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (strcmp(s, levels[i].name) == 0) {
			*ret = levels[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

int log_parse_format(const char *s, enum log_format *ret)
{
	if (strcmp(s, "text") == 0)
		*ret = LOG_FORMAT_TEXT;
	else if (strcmp(s, "json") == 0)
		*ret = LOG_FORMAT_JSON;
	else
		return -EINVAL;
	return 0;
}

bool log_enabled(enum log_level level)
{
	return level <= log_max;
}

static const char *level_name(enum log_level level)
{
	switch (level) {
	case LOG_LEVEL_ERROR:
		return "error";
	case LOG_LEVEL_WARNING:
		return "warning";
	case LOG_LEVEL_INFO:
		return "info";
	case LOG_LEVEL_DEBUG:
		return "debug";
	}
	return "info";
}

/* Appends s to buf as the inside of a JSON string. */
static void json_escape(char *buf, size_t size, size_t *pos, const char *s)
{
	for (; *s && *pos + 7 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[(*pos)++] = '\\';
			buf[(*pos)++] = (char)c;
		} else if (c < 0x20) {
			*pos += (size_t)snprintf(buf + *pos, size - *pos, "\\u%04x", c);
		} else {
			buf[(*pos)++] = (char)c;
		}
	}
	buf[*pos] = '\0';
}

static void append(char *buf, size_t size, size_t *pos, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t size, size_t *pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*pos >= size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *pos, size - *pos, fmt, ap);
	va_end(ap);
	if (n > 0)
		*pos = (size_t)n >= size - *pos ? size - 1 : *pos + (size_t)n;
}

static void timestamp(char *out, size_t size)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (long)(ts.tv_nsec / 1000000) % 1000);
}

/* Writes one finished line. fields_json is a JSON object body fragment (may be
 * empty) used only in JSON mode; text is the human text. */
static void emit(enum log_level level, const char *text, const char *fields_json)
{
	char line[4096], ts[64];
	size_t pos = 0;
	int saved = errno;

	timestamp(ts, sizeof(ts));
	if (log_syslog_prefix)
		append(line, sizeof(line), &pos, "<%d>", (int)level);
	if (log_fmt == LOG_FORMAT_JSON) {
		append(line, sizeof(line), &pos, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
		       level_name(level));
		json_escape(line, sizeof(line), &pos, text);
		append(line, sizeof(line), &pos, "\"%s%s}", *fields_json ? "," : "", fields_json);
	} else {
		append(line, sizeof(line), &pos, "%s %s %s", ts, level_name(level), text);
	}
	append(line, sizeof(line), &pos, "\n");
	fputs(line, stderr);
	errno = saved;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char text[2048];
	va_list ap;
	int saved = errno;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	errno = saved;
	emit(level, text, "");
}

void log_call(const struct log_call *c)
{
	char text[2048], fields[2048];
	size_t pos = 0;

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	snprintf(text, sizeof(text), "rpc method=%s uid=%s status=%d duration_us=%llu key_id=%s%s%s%s",
		 c->method ? c->method : "-", c->uid && *c->uid ? c->uid : "-", c->grpc_status,
		 (unsigned long long)c->duration_us, c->key_id && *c->key_id ? c->key_id : "-",
		 c->message ? " message=\"" : "", c->message ? c->message : "",
		 c->message ? "\"" : "");
	if (log_fmt == LOG_FORMAT_JSON) {
		append(fields, sizeof(fields), &pos, "\"method\":\"");
		json_escape(fields, sizeof(fields), &pos, c->method ? c->method : "");
		append(fields, sizeof(fields), &pos, "\",\"uid\":\"");
		json_escape(fields, sizeof(fields), &pos, c->uid ? c->uid : "");
		append(fields, sizeof(fields), &pos, "\",\"grpc_status\":%d,\"duration_us\":%llu,\"key_id\":\"",
		       c->grpc_status, (unsigned long long)c->duration_us);
		json_escape(fields, sizeof(fields), &pos, c->key_id ? c->key_id : "");
		append(fields, sizeof(fields), &pos, "\"");
		if (c->message) {
			append(fields, sizeof(fields), &pos, ",\"grpc_message\":\"");
			json_escape(fields, sizeof(fields), &pos, c->message);
			append(fields, sizeof(fields), &pos, "\"");
		}
		emit(LOG_LEVEL_INFO, "rpc", fields);
	} else {
		emit(LOG_LEVEL_INFO, text, "");
	}
}
