#include "config.h"

#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum log_format log_fmt = LOG_FORMAT_TEXT;
static enum log_level log_max = LOG_LEVEL_INFO;
static bool log_journal;
static char log_last[512];

/* Whether stderr is the stream $JOURNAL_STREAM names (its "device:inode"),
 * as systemd.exec(5) documents: a child that inherited the variable but
 * writes elsewhere is not logging to the journal. */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int n = 0;

	if (!e || sscanf(e, "%llu:%llu%n", &dev, &ino, &n) != 2 || e[n] != '\0')
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(enum log_format format, enum log_level max_level)
{
	log_fmt = format;
	log_max = max_level;
	log_journal = stderr_is_journal();
}

const char *log_last_error(void)
{
	return log_last;
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

/* Field values from a peer (uid, key_id, path, message) are shown at most
 * this long. */
#define LOG_FIELD_MAX 256

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and what lies past Unicode. */
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/* Appends s as the inside of a quoted string, at most max bytes of it
 * ("..." marks the cut): for JSON, valid UTF-8 kept and any other
 * byte as U+FFFD, controls as \u00XX; for text, printable ASCII kept and
 * any other byte as \xHH. Either way a value is one field on one line:
 * a peer cannot forge a line, a field or invalid JSON. */
static void escape_max(char *buf, size_t size, size_t *pos, const char *str, bool json,
		       size_t max)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), i = 0;

	for (; i < n && i < max && *pos + 16 < size;) {
		unsigned char c = s[i];
		size_t u;

		if (c == '"' || c == '\\') {
			buf[(*pos)++] = '\\';
			buf[(*pos)++] = (char)c;
			i++;
		} else if (c >= 0x20 && c < 0x7f) {
			buf[(*pos)++] = (char)c;
			i++;
		} else if (!json) {
			*pos += (size_t)snprintf(buf + *pos, size - *pos, "\\x%02x", c);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			*pos += (size_t)snprintf(buf + *pos, size - *pos, "\\u%04x", c);
			i++;
		} else if ((u = utf8_len(s + i, n - i)) > 0) {
			memcpy(buf + *pos, s + i, u);
			*pos += u;
			i += u;
		} else {
			*pos += (size_t)snprintf(buf + *pos, size - *pos, "\\ufffd");
			i++;
		}
	}
	if (i < n && *pos + 4 < size) {
		memcpy(buf + *pos, "...", 3);
		*pos += 3;
	}
	buf[*pos] = '\0';
}

static void escape(char *buf, size_t size, size_t *pos, const char *s, bool json)
{
	escape_max(buf, size, pos, s, json, LOG_FIELD_MAX);
}

/* Our own messages, whole (as much as the line holds). */
static void json_escape(char *buf, size_t size, size_t *pos, const char *s)
{
	escape_max(buf, size, pos, s, true, SIZE_MAX);
}

/* A text message as it is, but for control characters (\xHH): a value
 * inside it (a file name, say) cannot end the line, start a forged one or,
 * under journald, a "<0>" priority prefix. */
static void controls_escape(char *buf, size_t size, size_t *pos, const char *s)
{
	for (; *s && *pos + 5 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			*pos += (size_t)snprintf(buf + *pos, size - *pos, "\\x%02x", c);
		else
			buf[(*pos)++] = (char)c;
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
	char line[8192], ts[64];
	size_t pos = 0;
	int saved = errno;

	timestamp(ts, sizeof(ts));
	if (log_journal)
		append(line, sizeof(line), &pos, "<%d>", (int)level);
	if (log_fmt == LOG_FORMAT_JSON) {
		append(line, sizeof(line), &pos, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
		       level_name(level));
		json_escape(line, sizeof(line), &pos, text);
		append(line, sizeof(line), &pos, "\"%s%s}", *fields_json ? "," : "", fields_json);
	} else {
		if (!log_journal)
			append(line, sizeof(line), &pos, "%s %s ", ts, level_name(level));
		controls_escape(line, sizeof(line), &pos, text);
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
	if (level == LOG_LEVEL_ERROR) {
		size_t n = strnlen(text, sizeof(log_last) - 1);

		memcpy(log_last, text, n);
		log_last[n] = '\0';
	}
	emit(level, text, "");
}

void log_call(const struct log_call *c)
{
	char text[6144], fields[6144];
	size_t pos = 0;
	bool json = log_fmt == LOG_FORMAT_JSON;
	char *out = json ? fields : text;
	size_t size = json ? sizeof(fields) : sizeof(text);

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	/* Every value a peer chose is escaped, and quoted in text. */
	append(out, size, &pos, json ? "\"method\":\"" : "rpc method=\"");
	escape(out, size, &pos, c->method ? c->method : "", json);
	append(out, size, &pos, json ? "\",\"uid\":\"" : "\" uid=\"");
	escape(out, size, &pos, c->uid ? c->uid : "", json);
	append(out, size, &pos,
	       json ? "\",\"grpc_status\":%d,\"duration_us\":%llu,\"key_id\":\""
		    : "\" status=%d duration_us=%llu key_id=\"",
	       c->grpc_status, (unsigned long long)c->duration_us);
	escape(out, size, &pos, c->key_id ? c->key_id : "", json);
	append(out, size, &pos, "\"");
	if (c->message) {
		append(out, size, &pos, json ? ",\"grpc_message\":\"" : " message=\"");
		escape(out, size, &pos, c->message, json);
		append(out, size, &pos, "\"");
	}
	if (json)
		emit(LOG_LEVEL_INFO, "rpc", fields);
	else
		emit(LOG_LEVEL_INFO, text, "");
}
