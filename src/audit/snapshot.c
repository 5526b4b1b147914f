#include "config.h"

#include "audit/snapshot.h"
#include "base/log.h"
#include "base/util.h"
#include "transport/dial.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* etcd makes a unix:// URL's host:port a socket file in its working
 * directory: these, in the private directory. */
#define CLIENT_URL "unix://localhost:2379"
#define PEER_URL   "unix://localhost:2380"
#define NAME       "tpm2-kms-audit"
#define CLUSTER    NAME "=" PEER_URL
#define LOG_FILE   "etcd.log"

struct snapshot {
	char dir[PATH_MAX];
	char endpoint[PATH_MAX + 32];
	pid_t etcd;
};

/* Runs argv in dir with its output to dir/LOG_FILE; with wait, returns
 * its exit status (negative errno when it could not run), else its pid. */
static int spawn(const char *dir, char *const argv[], bool wait, pid_t *ret_pid)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd;

		/* The private etcd goes when we go, however we go. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (chdir(dir) < 0)
			_exit(126);
		fd = open(LOG_FILE, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0)
			dup2(fd, 0);
		setenv("ETCDCTL_API", "3", 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (!wait) {
		*ret_pid = pid;
		return 0;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The tool's own words, for the error message: the log's last lines. */
static void log_tool_output(const snapshot *s)
{
	char path[PATH_MAX + 16], line[512];
	FILE *f;
	long size;

	snprintf(path, sizeof(path), "%s/%s", s->dir, LOG_FILE);
	f = fopen(path, "re");
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > 2048 ? size - 2048 : 0, SEEK_SET);
	if (size > 2048 && !fgets(line, sizeof(line), f)) /* skip a partial line */
		line[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		log_error("  %s", line);
	}
	fclose(f);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

/* Polls the private etcd's socket until it accepts, it exits, or the
 * deadline passes. */
static int wait_ready(snapshot *s, int timeout_ms)
{
	uint64_t deadline = util_now_monotonic_us() + (uint64_t)timeout_ms * 1000u;
	char why[DIAL_ERROR_MAX];

	for (;;) {
		dial *d = NULL;
		int status;

		if (dial_open(s->endpoint, NULL, 1000, &d, why) == 0) {
			dial_close(d);
			return 0;
		}
		if (waitpid(s->etcd, &status, WNOHANG) == s->etcd) {
			s->etcd = 0;
			log_error("the private etcd for the snapshot exited at start:");
			return -ECHILD;
		}
		if (util_now_monotonic_us() >= deadline) {
			log_error("the private etcd for the snapshot did not answer in %d ms:",
			          timeout_ms);
			return -ETIMEDOUT;
		}
		nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
	}
}

int snapshot_open(const char *file, int timeout_ms, snapshot **ret)
{
	char abs[PATH_MAX], data[PATH_MAX + 8];
	const char *tmp = getenv("TMPDIR");
	snapshot *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	if (!realpath(file, abs)) {
		r = -errno;
		log_error("snapshot %s: %s", file, strerror(errno));
		goto out;
	}
	snprintf(s->dir, sizeof(s->dir), "%s/tpm2-kms-snapshot-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(s->dir)) {
		r = -errno;
		log_error("cannot make a private directory for the snapshot: %s", strerror(errno));
		s->dir[0] = '\0';
		goto out;
	}
	snprintf(s->endpoint, sizeof(s->endpoint), "unix://%s/localhost:2379", s->dir);
	snprintf(data, sizeof(data), "%s/data", s->dir);
	{
		char *argv[] = {"etcdctl",
		                "snapshot",
		                "restore",
		                abs,
		                "--data-dir",
		                data,
		                "--name",
		                NAME,
		                "--initial-cluster",
		                CLUSTER,
		                "--initial-advertise-peer-urls",
		                PEER_URL,
		                NULL};

		r = spawn(s->dir, argv, true, NULL);
	}
	if (r != 0) {
		log_error("etcdctl snapshot restore %s failed (%s):", abs,
		          r == 127 ? "etcdctl not found: install etcd-client" : "see its output");
		log_tool_output(s);
		r = -EIO;
		goto out;
	}
	{
		char *argv[] = {"etcd",     "--name",
		                NAME,       "--data-dir",
		                data,       "--listen-client-urls",
		                CLIENT_URL, "--advertise-client-urls",
		                CLIENT_URL, "--listen-peer-urls",
		                PEER_URL,   "--initial-advertise-peer-urls",
		                PEER_URL,   "--initial-cluster",
		                CLUSTER,    NULL};

		r = spawn(s->dir, argv, false, &s->etcd);
	}
	if (r == 0)
		r = wait_ready(s, timeout_ms);
	if (r < 0) {
		log_tool_output(s);
		goto out;
	}
	*ret = s;
	s = NULL;
out:
	snapshot_close(s);
	return r;
}

const char *snapshot_endpoint(const snapshot *s)
{
	return s->endpoint;
}

void snapshot_close(snapshot *s)
{
	if (!s)
		return;
	if (s->etcd > 0) {
		kill(s->etcd, SIGTERM);
		while (waitpid(s->etcd, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (s->dir[0])
		nftw(s->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(s);
}
