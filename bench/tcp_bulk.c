/* tcp_bulk: loopback TCP bulk throughput, one sender and one receiver process, 128 KiB writes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"

#define CHUNK (128 * 1024)



int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 10.0;
	static char buf[CHUNK];
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	int pfd[2];

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
	    getsockname(ls, (struct sockaddr *)&a, &alen) || pipe(pfd))
		die("listen");

	pid_t rx = fork();
	if (rx < 0)
		die("fork");
	if (rx == 0) { /* receiver: read until EOF, report the byte count through the pipe */
		int c = accept(ls, NULL, NULL);
		unsigned long long total = 0;
		ssize_t n;
		if (c < 0)
			die("accept");
		while ((n = read(c, buf, sizeof buf)) > 0)
			total += n;
		if (write(pfd[1], &total, sizeof total) != sizeof total)
			die("pipe");
		_exit(0);
	}
	close(ls);

	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a))
		die("connect");
	memset(buf, 'x', sizeof buf);
	unsigned long long sent = 0;
	double t0 = now(), end = t0 + seconds, t1;
	unsigned i = 0;
	for (;;) {
		ssize_t n = write(s, buf, sizeof buf);
		if (n < 0)
			die("write");
		sent += n;
		if ((++i & 63) == 0 && now() >= end)
			break;
	}
	close(s);
	unsigned long long got = 0;
	if (read(pfd[0], &got, sizeof got) != sizeof got)
		die("pipe read");
	t1 = now();
	waitpid(rx, NULL, 0);
	if (got != sent) {
		fprintf(stderr, "tcp_bulk: sent %llu but received %llu\n", sent, got);
		return 1;
	}
	printf("gbps %.3f bytes %llu seconds %.3f\n", got * 8 / (t1 - t0) / 1e9, got, t1 - t0);
	return 0;
}
