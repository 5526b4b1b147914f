/* The state directory's "state" file parser; what parses must be written
 * out (state_format, what state_save writes) and parse again to the same
 * state. */
#include "config.h"

#include "fuzz.h"
#include "base/log.h"
#include "keys/statedir.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state s;
	char *buf = malloc(size + 1);

	if (!buf)
		return 0;
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR);
	memcpy(buf, data, size);
	buf[size] = '\0';
	if (state_parse("fuzz", buf, size, &s) == 0) {
		struct state t;
		char *text = NULL;
		size_t len;

		if (!state_find(&s, s.write_generation))
			abort();
		if (state_format(&s, &text, &len) < 0)
			abort();
		if (state_parse("fuzz", text, len, &t) != 0 || t.n_gens != s.n_gens ||
		    t.write_generation != s.write_generation || t.nv_index != s.nv_index ||
		    t.anchors.admin_key_len != s.anchors.admin_key_len ||
		    memcmp(t.anchors.admin_key, s.anchors.admin_key, s.anchors.admin_key_len) !=
		        0 ||
		    t.srk_name.len != s.srk_name.len ||
		    memcmp(t.srk_name.bytes, s.srk_name.bytes, s.srk_name.len) != 0)
			abort();
		for (size_t i = 0; i < s.n_gens; i++)
			if (memcmp(&t.gens[i], &s.gens[i], sizeof(s.gens[i])) != 0)
				abort();
		free(text);
		state_free(&t);
		state_free(&s);
	}
	free(buf);
	return 0;
}
