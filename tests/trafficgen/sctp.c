/* sctp.c: the SCTP cases - sctp-stream (one-to-one socket) and sctp-seqpacket (one-to-many) -
 * each --count messages of --size sent by the client and echoed by a forked server. */
#include "trafficgen.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

static int sctp_socket(int family, int type)
{
    int fd = socket(family, type | SOCK_CLOEXEC, IPPROTO_SCTP);
    if (fd < 0)
        die_sys("socket(IPPROTO_SCTP) (is the sctp module loaded?)");
    set_timeouts(fd, g_timeout_ms);
    return fd;
}

/* one message of `size` bytes received whole (a one-to-one socket may split it) */
static uint64_t recv_msg(int fd, unsigned char *buf, long long size, long long idx,
                         struct sockaddr_storage *src, const char *who)
{
    uint64_t got = 0;
    while (got < (uint64_t)size) {
        socklen_t len = sizeof *src;
        ssize_t r = recvfrom(fd, buf + got, (size_t)size - got, 0, (struct sockaddr *)src, &len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die_sys("%s: receive message %lld", who, idx);
        got += (uint64_t)r;
    }
    pat_check(buf, (size_t)got, (uint64_t)(idx * size), who);
    return got;
}

/* one-to-one: accept one association, echo --count messages */
static void srv_sctp_stream(int lfd, const struct opts *o, struct counts *c)
{
    static unsigned char buf[CHUNK];
    int fd = accept_one(lfd);
    for (long long i = 0; i < o->count; i++) {
        struct sockaddr_storage src;
        c->received += recv_msg(fd, buf, o->size, i, &src, "server");
        ssize_t w = send(fd, buf, (size_t)o->size, 0);
        if (w != o->size)
            die_sys("server: send message %lld", i);
        c->sent += (uint64_t)w;
    }
    close(fd);
}

/* one-to-many: echo --count messages to their source */
static void srv_sctp_seqpacket(int fd, const struct opts *o, struct counts *c)
{
    static unsigned char buf[CHUNK];
    for (long long i = 0; i < o->count; i++) {
        struct sockaddr_storage src;
        c->received += recv_msg(fd, buf, o->size, i, &src, "server");
        ssize_t w = sendto(fd, buf, (size_t)o->size, 0, (struct sockaddr *)&src,
                           src.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                     : sizeof(struct sockaddr_in));
        if (w != o->size)
            die_sys("server: sendto message %lld", i);
        c->sent += (uint64_t)w;
    }
}

static void sctp_case(struct opts *o, struct result *r, int type)
{
    static unsigned char buf[CHUNK];
    if (o->size <= 0 || o->size > CHUNK)
        die("--size must be 1..%d", CHUNK);
    struct session s;
    session_start_proto(&s, o, type, IPPROTO_SCTP,
                        type == SOCK_STREAM ? srv_sctp_stream : srv_sctp_seqpacket);
    int fd = sctp_socket(addr_family(&s.peer), type);
    if (type == SOCK_STREAM)
        while (connect(fd, (struct sockaddr *)&s.peer.ss, s.peer.len) < 0)
            if (errno != EINTR)
                die_sys("connect to port %d", sa_port(&s.peer.ss));
    for (long long i = 0; i < o->count; i++) {
        const unsigned char *p = pat_at((uint64_t)(i * o->size));
        ssize_t w = type == SOCK_STREAM
                        ? send(fd, p, (size_t)o->size, 0)
                        : sendto(fd, p, (size_t)o->size, 0, (struct sockaddr *)&s.peer.ss, s.peer.len);
        if (w != o->size)
            die_sys("send message %lld", i);
        r->c.sent += (uint64_t)w;
        struct sockaddr_storage src;
        r->c.received += recv_msg(fd, buf, o->size, i, &src, "client");
        if (type == SOCK_SEQPACKET && sa_port(&src) != sa_port(&s.peer.ss))
            die("client: message %lld from port %d, not the server's", i, sa_port(&src));
    }
    session_finish(&s, r, fd);
    close(fd);
}

void case_sctp_stream(struct opts *o, struct result *r)
{
    sctp_case(o, r, SOCK_STREAM);
}

void case_sctp_seqpacket(struct opts *o, struct result *r)
{
    sctp_case(o, r, SOCK_SEQPACKET);
}
