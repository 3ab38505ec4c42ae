/* gai_connect.c: looks a name up with the C library's getaddrinfo (musl's own resolver when built
 * with musl-gcc -static), connects to the first IPv4 address and sends bytes; prints
 * {"addr":"A","lport":L,"rport":P,"sent":N}. Usage: gai_connect NAME PORT BYTES */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: gai_connect NAME PORT BYTES\n");
        return 2;
    }
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
    int err = getaddrinfo(argv[1], argv[2], &hints, &res);
    if (err) {
        fprintf(stderr, "getaddrinfo %s: %s\n", argv[1], gai_strerror(err));
        return 1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen)) {
        perror("connect");
        return 1;
    }
    long n = atol(argv[3]);
    char buf[1024];
    memset(buf, 'x', sizeof buf);
    for (long left = n; left > 0;) {
        ssize_t k = send(fd, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf, 0);
        if (k <= 0) {
            perror("send");
            return 1;
        }
        left -= k;
    }
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &len);
    char addr[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, addr, sizeof addr);
    close(fd);
    printf("{\"addr\":\"%s\",\"lport\":%d,\"rport\":%s,\"sent\":%ld}\n", addr, ntohs(local.sin_port),
           argv[2], n);
    return 0;
}
