/* tcp_storm: N short loopback TCP connections (connect, send 100 bytes, close), reports connections/s. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"

#define PAYLOAD 100



int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	char buf[4096] = { 0 };
	int pfd[2];

	/* A fresh listening port per run: the client's TIME_WAIT sockets of earlier runs do not collide. */
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096) ||
	    getsockname(ls, (struct sockaddr *)&a, &alen) || pipe(pfd))
		die("listen");

	pid_t srv = fork();
	if (srv < 0)
		die("fork");
	if (srv == 0) { /* server: accept, read to EOF, close; report the bytes received */
		unsigned long long total = 0;
		for (long i = 0; i < n; i++) {
			int c = accept(ls, NULL, NULL);
			ssize_t r;
			if (c < 0)
				die("accept");
			while ((r = read(c, buf, sizeof buf)) > 0)
				total += r;
			close(c);
		}
		if (write(pfd[1], &total, sizeof total) != sizeof total)
			die("pipe");
		_exit(0);
	}
	close(ls);

	double t0 = now();
	for (long i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a))
			die("connect");
		if (write(s, buf, PAYLOAD) != PAYLOAD)
			die("write");
		close(s);
	}
	unsigned long long got = 0;
	if (read(pfd[0], &got, sizeof got) != sizeof got)
		die("pipe read");
	double t1 = now();
	waitpid(srv, NULL, 0);
	if (got != (unsigned long long)n * PAYLOAD) {
		fprintf(stderr, "tcp_storm: server received %llu bytes, expected %llu\n", got,
			(unsigned long long)n * PAYLOAD);
		return 1;
	}
	printf("conns_per_s %.0f conns %ld seconds %.3f\n", n / (t1 - t0), n, t1 - t0);
	return 0;
}
