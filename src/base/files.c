#include "config.h"

#include "base/files.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* When root writes into a directory owned by the service user (an operator
 * running rotate), the new file must belong to that user, or the daemon
 * could not read it. */
int files_give_to_owner(const char *dir, int fd)
{
	struct stat st;

	if (geteuid() != 0 || stat(dir, &st) < 0 || st.st_uid == 0)
		return 0;
	if (fchown(fd, st.st_uid, st.st_gid) < 0)
		return -errno;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len, const char *what)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			int r = -errno;

			if (errno == EINTR)
				continue;
			log_error("cannot write %s: %s", what, strerror(errno));
			return r;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int files_write_atomic(const char *dir, const char *name, const void *data, size_t len,
		       bool durable, const char *owner_of, mode_t mode)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	const uint8_t *p = data;
	int fd = -1, dfd = -1, r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", dir, name, (int)getpid()) >=
	    sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = -errno;
		log_error("cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	r = owner_of ? files_give_to_owner(owner_of, fd) : 0;
	if (r < 0) {
		log_error("cannot give %s to the owner of %s: %s", tmp, owner_of, strerror(-r));
		goto out;
	}
	/* Exactly mode, whatever the umask. */
	if (mode != 0600 && fchmod(fd, mode) < 0) {
		r = -errno;
		log_error("cannot chmod %s: %s", tmp, strerror(errno));
		goto out;
	}
	r = write_all(fd, p, len, tmp);
	if (r < 0)
		goto out;
	if (durable && fsync(fd) < 0) {
		r = -errno;
		log_error("cannot write %s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		log_error("cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		log_error("cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	if (durable) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) < 0) {
			r = -errno;
			log_error("cannot sync directory %s: %s", dir, strerror(errno));
			goto out;
		}
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	if (r < 0)
		unlink(tmp);
	return r;
}

int files_write_output(const char *path, const void *data, size_t len, mode_t mode)
{
	char d[PATH_MAX], b[PATH_MAX];
	struct stat st;

	if (strlen(path) >= PATH_MAX || !*path || path[strlen(path) - 1] == '/') {
		log_error("%s: not a file name", path);
		return -EINVAL;
	}
	/* A device or a pipe (/dev/stdout, a FIFO) is written to, never
	 * replaced by a file. */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		int fd = open(path, O_WRONLY | O_CLOEXEC), r;

		if (fd < 0) {
			r = -errno;
			log_error("cannot open %s: %s", path, strerror(errno));
			return r;
		}
		r = write_all(fd, data, len, path);
		close(fd);
		return r;
	}
	strcpy(d, path);
	strcpy(b, path);
	return files_write_atomic(dirname(d), basename(b), data, len, true, NULL, mode);
}

int files_read(const char *path, bool nofollow, size_t max, char **ret, size_t *ret_len)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, r;

	/* Non-blocking: a FIFO put where a file was expected must not hang
	 * us in open(); fstat below refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
	if (fd < 0) {
		r = -errno;
		if (r == -ELOOP && nofollow) {
			log_error("%s is a symbolic link: not followed", path);
		} else if (r == -EACCES) {
			char why[200];

			files_describe_access(path, why, sizeof(why));
			log_error("cannot open %s: %s (%s)", path, strerror(-r), why);
		} else if (r != -ENOENT) {
			log_error("cannot open %s: %s", path, strerror(-r));
		}
		return r;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_error("%s is not a regular file", path);
		r = -EINVAL;
		goto out;
	}
	if ((size_t)st.st_size > max) {
		log_error("%s is too large (%lld bytes, at most %zu)", path,
			  (long long)st.st_size, max);
		r = -EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			log_error("cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}

void files_describe_access(const char *path, char *out, size_t size)
{
	struct stat st;
	uid_t me = geteuid();

	*out = '\0';
	if (access(path, R_OK) == 0 || errno != EACCES)
		return;
	if (stat(path, &st) < 0) {
		/* A directory on the way cannot be entered. */
		snprintf(out, size, "a directory above it cannot be entered by uid %u",
			 (unsigned)me);
		return;
	}
	snprintf(out, size,
		 "owner uid %u, group %u, mode %04o; this process runs as uid %u: give it to "
		 "uid %u (chown) or make it readable (chmod)",
		 (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777),
		 (unsigned)me, (unsigned)me);
}

int files_read_input(const char *what, const char *path, size_t max, char **ret,
		     size_t *ret_len)
{
	int r = files_read(path, false, max, ret, ret_len);

	if (r == -ENOENT)
		log_error("%s %s: no such file", what, path);
	return r;
}

int files_parse_input(const char *what, const char *path, size_t max, files_parser *parse,
		      void *ret, char **ret_text, size_t *ret_len)
{
	const char *why = "damaged";
	char *text = NULL;
	size_t len;
	int r;

	r = files_read_input(what, path, max, &text, &len);
	if (r < 0)
		return r;
	r = parse(text, len, ret, &why);
	if (r < 0) {
		log_error("%s %s: %s", what, path, why);
		goto out;
	}
	if (ret_text) {
		*ret_text = text;
		*ret_len = len;
		text = NULL;
	}
out:
	free(text);
	return r;
}

int files_read_nofollow(const char *path, size_t max, char **ret, size_t *ret_len)
{
	return files_read(path, true, max, ret, ret_len);
}
