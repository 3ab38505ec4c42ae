/* udp_rate: rate of sendto() of 64-byte datagrams on loopback for a fixed time to a draining receiver. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"



int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 10.0;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	char buf[2048] = { 0 };
	int pfd[2];

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int r = socket(AF_INET, SOCK_DGRAM, 0);
	if (r < 0 || bind(r, (struct sockaddr *)&a, sizeof a) ||
	    getsockname(r, (struct sockaddr *)&a, &alen) || pipe(pfd))
		die("bind");

	pid_t rx = fork();
	if (rx < 0)
		die("fork");
	if (rx == 0) { /* receiver: drain until the 1-byte end marker, report the count */
		unsigned long long got = 0;
		ssize_t n;
		while ((n = recv(r, buf, sizeof buf, 0)) != 1)
			if (n > 0)
				got++;
		if (write(pfd[1], &got, sizeof got) != sizeof got)
			die("pipe");
		_exit(0);
	}

	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		die("socket");
	unsigned long long sent = 0, calls = 0;
	double t0 = now(), end = t0 + seconds, t1;
	for (;;) {
		if (sendto(s, buf, 64, 0, (struct sockaddr *)&a, sizeof a) == 64)
			sent++;
		if ((++calls & 1023) == 0 && now() >= end)
			break;
	}
	t1 = now();
	unsigned long long got = 0;
	for (int i = 0; i < 100 && got == 0; i++) { /* the marker may be dropped when the queue is full */
		sendto(s, buf, 1, 0, (struct sockaddr *)&a, sizeof a);
		struct timespec ms = { 0, 10 * 1000 * 1000 };
		nanosleep(&ms, NULL);
		struct timeval tv = { 0, 0 };
		fd_set fds;
		FD_ZERO(&fds);
		FD_SET(pfd[0], &fds);
		if (select(pfd[0] + 1, &fds, NULL, NULL, &tv) == 1 && read(pfd[0], &got, sizeof got) != sizeof got)
			die("pipe read");
	}
	kill(rx, SIGKILL);
	waitpid(rx, NULL, 0);
	printf("dgrams_per_s %.0f sent %llu received %llu seconds %.3f\n", sent / (t1 - t0), sent, got, t1 - t0);
	return 0;
}
