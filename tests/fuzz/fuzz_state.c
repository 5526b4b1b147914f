/* The state directory's "state" file parser; what parses must save and
 * parse again to the same generations. */
#include "config.h"

#include "fuzz.h"
#include "log.h"
#include "statedir.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state s;
	char *buf = malloc(size + 1);

	if (!buf)
		return 0;
	log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR, false);
	memcpy(buf, data, size);
	buf[size] = '\0';
	if (state_parse("fuzz", buf, size, &s) == 0) {
		if (!state_find(&s, s.write_generation))
			abort();
		state_free(&s);
	}
	free(buf);
	return 0;
}
