/* The configuration file parser, fed through a memfd as --config. */
#include "config.h"

#include "fuzz.h"
#include "base/log.h"
#include "cli/settings.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const commands[] = {"serve", "status", "retire"};
	struct settings s;
	char path[64];
	char *argv[] = {"tpm2-kms", NULL, "--config", path, "1", NULL};
	int fd = memfd_create("fuzz-config", MFD_CLOEXEC);

	if (fd < 0)
		return 0;
	if (write(fd, data, size) == (ssize_t)size) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		argv[1] = (char *)commands[size % 3];
		(void)settings_parse(size % 3 == 2 ? 5 : 4, argv, &s);
	}
	close(fd);
	return 0;
}
