#include "config.h"

#include "swtpm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int run(char *const argv[])
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		int null = open("/dev/null", 1);

		dup2(null, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int swtpm_init(struct swtpm *s, bool with_setup_spk)
{
	memset(s, 0, sizeof(*s));
	strcpy(s->dir, "/tmp/tpm2kms-swtpm-XXXXXX");
	if (!mkdtemp(s->dir))
		return -errno;
	snprintf(s->state, sizeof(s->state), "%s/state", s->dir);
	snprintf(s->sock, sizeof(s->sock), "%s/tpm.sock", s->dir);
	snprintf(s->tcti, sizeof(s->tcti), "swtpm:path=%s", s->sock);
	if (mkdir(s->state, 0700) < 0)
		return -errno;
	if (with_setup_spk) {
		char *argv[] = {"swtpm_setup", "--tpm2", "--tpmstate", s->state, "--create-spk",
				"--overwrite", "--display", NULL};

		if (run(argv) != 0)
			return -EIO;
	}
	return 0;
}

static bool listening(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	bool ok;

	strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int swtpm_start(struct swtpm *s)
{
	char tpmstate[128], server[128], ctrl[128];
	pid_t pid;

	snprintf(tpmstate, sizeof(tpmstate), "dir=%s", s->state);
	snprintf(server, sizeof(server), "type=unixio,path=%s", s->sock);
	snprintf(ctrl, sizeof(ctrl), "type=unixio,path=%s.ctrl", s->sock);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char *argv[] = {"swtpm", "socket", "--tpm2", "--tpmstate", tpmstate, "--server",
				server, "--ctrl", ctrl, "--flags", "not-need-init,startup-clear",
				NULL};
		int null = open("/dev/null", 1);

		dup2(null, 1);
		dup2(null, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	s->pid = pid;
	for (int i = 0; i < 2000; i++) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		int status;

		if (listening(s->sock))
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			s->pid = 0;
			return -EIO;
		}
		nanosleep(&ts, NULL); /* polling interval, not a readiness guess */
	}
	return -ETIMEDOUT;
}

void swtpm_kill(struct swtpm *s, int sig)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, sig);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
	unlink(s->sock);
}

void swtpm_cleanup(struct swtpm *s)
{
	char cmd[128];

	swtpm_kill(s, SIGTERM);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", s->dir);
}
