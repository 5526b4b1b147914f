/* Envelope parsing and opening under a fixed KEK (the one of the known
 * answer test, so the corpus reaches tag verification). */
#include "config.h"

#include "keys/envelope.h"
#include "fuzz.h"

#include <stdbool.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	uint8_t kek[ENVELOPE_KEK_BYTES], out[ENVELOPE_MAX_BYTES];
	size_t len;
	uint32_t gen;

	if (!ready) {
		if (envelope_init() < 0)
			abort();
		ready = true;
	}
	for (int i = 0; i < ENVELOPE_KEK_BYTES; i++)
		kek[i] = (uint8_t)i;
	if (envelope_generation(data, size, &gen) == 0) {
		(void)envelope_counter(data);
		if (envelope_open(kek, data, size, out, &len) == 0 && len != size - ENVELOPE_OVERHEAD)
			abort();
	}
	return 0;
}
