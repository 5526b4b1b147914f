/* The kernel's floor for one request/response over a Unix stream socket:
 * a child process that does nothing but wait in epoll_wait, read and write
 * the bytes back (the system calls a KMS plugin makes per call at
 * concurrency 1), and a parent that sends and waits, ROUNDS times. Prints
 * the round trip's p50 and the child's CPU time per round trip: what any
 * server pays on this machine before it parses a byte.
 *
 *   pingpong mode=echo rounds=20000 p50_us=79 server_cpu_us_per_call=28.7
 *
 * The two processes are pinned to different CPUs (when there are two):
 * whether a wake-up crosses CPUs decides the cost (on a VM, ~30 µs across
 * against ~3 µs on one CPU), and a daemon and its client normally run on
 * different CPUs, as in every load run of bench/run.sh.
 *
 * With "hop", the child hands every message to a worker thread (mutex and
 * condition variable) that hands it back through an eventfd in the epoll
 * set, as tpm2-kms does with each TPM command (the worker shares the
 * server's CPU here, so this is a lower bound).
 *
 * usage: pingpong ROUNDS [BYTES [hop]] */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool job;
	int done_fd;
} hop = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, -1};

static void *worker(void *arg)
{
	uint64_t one = 1;

	(void)arg;
	pthread_mutex_lock(&hop.lock);
	for (;;) {
		while (!hop.job)
			pthread_cond_wait(&hop.cond, &hop.lock);
		hop.job = false;
		if (write(hop.done_fd, &one, sizeof(one)) != sizeof(one))
			_exit(1);
	}
	return NULL;
}

/* Echoes until the peer closes, then reports its CPU time in µs. */
static void echo(int fd, int report, bool with_hop)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd}, got;
	char buf[4096];
	struct rusage ru;
	int ep = epoll_create1(0);
	ssize_t n = 0;
	pthread_t t;
	double us;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		_exit(1);
	if (with_hop) {
		hop.done_fd = eventfd(0, EFD_NONBLOCK);
		ev.data.fd = hop.done_fd;
		if (hop.done_fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, hop.done_fd, &ev) < 0 ||
		    pthread_create(&t, NULL, worker, NULL) != 0)
			_exit(1);
	}
	for (;;) {
		uint64_t v;

		if (epoll_wait(ep, &got, 1, -1) < 0)
			_exit(1);
		if (with_hop && got.data.fd == hop.done_fd) {
			if (read(hop.done_fd, &v, sizeof(v)) != sizeof(v) ||
			    write(fd, buf, (size_t)n) != n)
				_exit(1);
			continue;
		}
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (with_hop) {
			pthread_mutex_lock(&hop.lock);
			hop.job = true;
			pthread_cond_signal(&hop.cond);
			pthread_mutex_unlock(&hop.lock);
		} else if (write(fd, buf, (size_t)n) != n) {
			_exit(1);
		}
	}
	getrusage(RUSAGE_SELF, &ru);
	us = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	     (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
	if (write(report, &us, sizeof(us)) != sizeof(us))
		_exit(1);
	_exit(0);
}

/* Runs the calling thread (and the threads it starts) on one CPU, if the
 * machine has it. */
static void pin(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(0, sizeof(set), &set);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 0;
	size_t bytes = argc > 2 ? (size_t)atoi(argv[2]) : 100;
	bool with_hop = argc > 3 && strcmp(argv[3], "hop") == 0;
	int sv[2], rep[2], status;
	char buf[4096] = {0};
	uint64_t *lat;
	double child_us;
	pid_t pid;

	if (rounds < 1 || bytes < 1 || bytes > sizeof(buf)) {
		fprintf(stderr, "usage: pingpong ROUNDS [BYTES <= 4096 [hop]]\n");
		return 2;
	}
	lat = calloc((size_t)rounds, sizeof(*lat));
	if (!lat || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || pipe(rep) < 0)
		return 1;
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		close(sv[0]);
		pin(0);
		echo(sv[1], rep[1], with_hop);
	}
	pin(1);
	close(sv[1]);
	for (int i = 0; i < rounds; i++) {
		uint64_t t0 = now_ns();
		size_t got = 0;

		if (write(sv[0], buf, bytes) != (ssize_t)bytes)
			return 1;
		while (got < bytes) {
			ssize_t n = read(sv[0], buf, sizeof(buf));

			if (n <= 0)
				return 1;
			got += (size_t)n;
		}
		lat[i] = now_ns() - t0;
	}
	close(sv[0]);
	if (read(rep[0], &child_us, sizeof(child_us)) != sizeof(child_us) ||
	    waitpid(pid, &status, 0) != pid || status != 0)
		return 1;
	qsort(lat, (size_t)rounds, sizeof(*lat), cmp);
	printf("pingpong mode=%s rounds=%d p50_us=%llu server_cpu_us_per_call=%.1f\n",
	       with_hop ? "hop" : "echo", rounds,
	       (unsigned long long)(lat[rounds / 2] / 1000), child_us / rounds);
	free(lat);
	return 0;
}
