/* The memory floor under "RSS with 200 idle connections", from the libraries
 * tpm2-kms must use: the RSS of a process that has only loaded OpenSSL 3 and
 * fetched SHA-256 and AES-256-GCM, and the RSS that one nghttp2 server
 * session adds once a client's preface and SETTINGS are answered (the state
 * an idle HTTP/2 connection holds in nghttp2 alone).
 *
 *   rss_floor openssl_rss_kb=5164 nghttp2_session_kb=13.1
 *
 * usage: rss-floor */
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#define SESSIONS 1000

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;

	if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
		exit(1);
	fclose(f);
	return resident * 4;
}

int main(void)
{
	static const uint8_t hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
				       "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
	nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128}};
	nghttp2_session_callbacks *cb;
	nghttp2_session **s;
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
	EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	long base, after;

	if (!md || !c || nghttp2_session_callbacks_new(&cb) != 0)
		return 1;
	base = rss_kb();
	s = calloc(SESSIONS, sizeof(*s));
	if (!s)
		return 1;
	for (int i = 0; i < SESSIONS; i++) {
		const uint8_t *out;

		if (nghttp2_session_server_new(&s[i], cb, NULL) != 0 ||
		    nghttp2_submit_settings(s[i], NGHTTP2_FLAG_NONE, iv, 1) != 0 ||
		    nghttp2_session_mem_recv(s[i], hello, sizeof(hello) - 1) < 0)
			return 1;
		while (nghttp2_session_mem_send(s[i], &out) > 0)
			;
	}
	after = rss_kb();
	printf("rss_floor openssl_rss_kb=%ld nghttp2_session_kb=%.1f\n", base,
	       (double)(after - base) / SESSIONS);
	for (int i = 0; i < SESSIONS; i++)
		nghttp2_session_del(s[i]);
	free(s);
	nghttp2_session_callbacks_del(cb);
	EVP_CIPHER_free(c);
	EVP_MD_free(md);
	return 0;
}
