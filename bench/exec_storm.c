/* exec_storm: fork+execs CHILD PORT at a paced RATE per second for SECONDS, next to a UDP sink. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"



static long ok, failed;

/* Reaps exited children; with block set, waits for at least one (the sink never exits by itself). */
static void reap(int block)
{
	int st;
	while (waitpid(-1, &st, block ? 0 : WNOHANG) > 0) {
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			ok++;
		else
			failed++;
		block = 0;
	}
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: exec_storm CHILD RATE SECONDS\n");
		return 2;
	}
	const char *child = argv[1];
	double rate = atof(argv[2]), seconds = atof(argv[3]);
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	char port[16], buf[2048];

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int r = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 8 << 20;
	setsockopt(r, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	if (r < 0 || bind(r, (struct sockaddr *)&a, sizeof a) || getsockname(r, (struct sockaddr *)&a, &alen))
		die("bind");
	snprintf(port, sizeof port, "%d", ntohs(a.sin_port));

	pid_t sink = fork();
	if (sink < 0)
		die("fork");
	if (sink == 0) { /* sink: drain datagrams until killed */
		for (;;)
			recv(r, buf, sizeof buf, 0);
	}
	close(r);

	long launched = 0;
	double t0 = now(), end = t0 + seconds, t;
	while ((t = now()) < end) {
		double next = t0 + launched / rate;
		if (next > t) {
			struct timespec d = { (time_t)(next - t), (long)((next - t - (time_t)(next - t)) * 1e9) };
			nanosleep(&d, NULL);
		}
		pid_t p = fork();
		if (p < 0) {
			if (errno == EAGAIN) {
				reap(1);
				continue;
			}
			die("fork child");
		}
		if (p == 0) {
			execl(child, child, port, (char *)NULL);
			_exit(127);
		}
		launched++;
		reap(0);
	}
	double t1 = now();
	while (ok + failed < launched)
		reap(1);
	kill(sink, SIGKILL);
	waitpid(sink, NULL, 0);
	printf("execs_per_s %.1f launched %ld ok %ld failed %ld seconds %.3f\n", launched / (t1 - t0), launched, ok,
	       failed, t1 - t0);
	return failed != 0;
}
