/* udp_child: tiny static program that sends one 100-byte UDP datagram to 127.0.0.1:PORT and exits 0. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	static char buf[100];
	struct sockaddr_in a = { .sin_family = AF_INET };
	if (argc < 2)
		return 2;
	a.sin_port = htons(atoi(argv[1]));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0 || sendto(s, buf, sizeof buf, 0, (struct sockaddr *)&a, sizeof a) != sizeof buf)
		return 1;
	return 0;
}
