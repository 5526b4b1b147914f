/* Replays every file of tests/fuzz/corpus/FUZZ_NAME (or the paths given)
 * through the fuzz target: the corpus and every crash found become
 * regression inputs of make check. */
#include "config.h"

#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;

	if (!f) {
		perror(path);
		return -1;
	}
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc(len > 0 ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	char dir[4096], path[8192];
	const char *src = getenv("TOP_SRCDIR");
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			if (replay_file(argv[i]) < 0)
				return 1;
		printf("%d passed, 0 failed\n", argc - 1);
		return 0;
	}
	snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src ? src : ".", FUZZ_NAME);
	d = opendir(dir);
	if (!d) {
		perror(dir);
		return 1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (replay_file(path) < 0)
			return 1;
		n++;
	}
	closedir(d);
	if (n == 0) {
		fprintf(stderr, "%s: empty corpus\n", dir);
		return 1;
	}
	printf("replayed %d inputs of %s\n%d passed, 0 failed\n", n, FUZZ_NAME, n);
	return 0;
}
