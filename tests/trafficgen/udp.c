/* udp.c: the UDP cases - udp-connected, udp-unconnected, udp-nosrc, udp-mmsg - and the serve-udp
 * server. */
#include "trafficgen.h"

#define MMSG_BATCH 8

/* ------------------------------------------------------------------ */
/* UDP                                                                */

static int udp_socket(int family)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die_sys("socket(SOCK_DGRAM)");
    set_timeouts(fd, g_timeout_ms);
    return fd;
}

/* echo --count datagrams back to their source */
static void srv_udp_echo(int fd, const struct opts *o, struct counts *c)
{
    static unsigned char buf[CHUNK];
    for (long long i = 0; i < o->count; i++) {
        struct sockaddr_storage src;
        socklen_t len = sizeof src;
        ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &len);
        if (r < 0 && errno == EINTR) {
            i--;
            continue;
        }
        if (r < 0)
            die_sys("server: recvfrom (datagram %lld of %lld)", i + 1, o->count);
        c->received += (uint64_t)r;
        ssize_t w = sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&src, len);
        if (w != r)
            die_sys("server: sendto");
        c->sent += (uint64_t)w;
    }
}

/* check one echoed datagram */
static void check_dgram(ssize_t got, const void *buf, long long size, long long idx,
                        const struct sockaddr_storage *src, const struct addr *peer)
{
    if (got < 0)
        die_sys("client: receive datagram %lld", idx);
    if (got != size)
        die("client: datagram %lld has %zd bytes, expected %lld", idx, got, size);
    if (buf)
        pat_check(buf, (size_t)got, (uint64_t)(idx * size), "client");
    if (src && !sa_equal(src, &peer->ss))
        die("client: datagram %lld from an unexpected address", idx);
}

void case_udp_connected(struct opts *o, struct result *r)
{
    static unsigned char buf[CHUNK];
    struct session s;
    session_start(&s, o, SOCK_DGRAM, srv_udp_echo);
    int fd = udp_socket(addr_family(&s.peer));
    if (connect(fd, (struct sockaddr *)&s.peer.ss, s.peer.len) < 0)
        die_sys("connect");
    for (long long i = 0; i < o->count; i++) {
        ssize_t w = send(fd, pat_at((uint64_t)(i * o->size)), (size_t)o->size, 0);
        if (w != o->size)
            die_sys("send datagram %lld", i);
        r->c.sent += (uint64_t)w;
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        check_dgram(got, buf, o->size, i, NULL, NULL);
        r->c.received += (uint64_t)got;
    }
    session_finish(&s, r, fd);
    close(fd);
}

/* sendto() each datagram on an unconnected socket and read the echo: with recvfrom() and its
 * source (checked), or, `ask_source` false, with recv() and recvfrom(fd, buf, len, 0, NULL, NULL)
 * in turn. */
static void udp_unconnected(struct opts *o, struct result *r, int ask_source)
{
    static unsigned char buf[CHUNK];
    struct session s;
    session_start(&s, o, SOCK_DGRAM, srv_udp_echo);
    int fd = udp_socket(addr_family(&s.peer));
    for (long long i = 0; i < o->count; i++) {
        ssize_t w = sendto(fd, pat_at((uint64_t)(i * o->size)), (size_t)o->size, 0,
                           (struct sockaddr *)&s.peer.ss, s.peer.len);
        if (w != o->size)
            die_sys("sendto datagram %lld", i);
        r->c.sent += (uint64_t)w;
        struct sockaddr_storage src;
        socklen_t len = sizeof src;
        ssize_t got;
        if (ask_source)
            got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &len);
        else
            got = i % 2 ? recvfrom(fd, buf, sizeof buf, 0, NULL, NULL)
                        : recv(fd, buf, sizeof buf, 0);
        check_dgram(got, buf, o->size, i, ask_source ? &src : NULL, ask_source ? &s.peer : NULL);
        r->c.received += (uint64_t)got;
    }
    session_finish(&s, r, fd);
    close(fd);
}

void case_udp_unconnected(struct opts *o, struct result *r)
{
    udp_unconnected(o, r, 1);
}

/* Like udp-unconnected, but the client never asks for the source. */
void case_udp_nosrc(struct opts *o, struct result *r)
{
    udp_unconnected(o, r, 0);
}

void case_udp_mmsg(struct opts *o, struct result *r)
{
    static unsigned char rbufs[MMSG_BATCH][CHUNK];
    struct session s;
    session_start(&s, o, SOCK_DGRAM, srv_udp_echo);
    int fd = udp_socket(addr_family(&s.peer));
    long long batches = 0;

    for (long long base = 0; base < o->count; base += MMSG_BATCH, batches++) {
        unsigned n = (unsigned)(o->count - base < MMSG_BATCH ? o->count - base : MMSG_BATCH);
        struct mmsghdr msgs[MMSG_BATCH];
        struct iovec iovs[MMSG_BATCH];
        struct sockaddr_storage srcs[MMSG_BATCH];

        memset(msgs, 0, sizeof msgs);
        for (unsigned j = 0; j < n; j++) {
            iovs[j] = (struct iovec){ (void *)pat_at((uint64_t)((base + j) * o->size)), (size_t)o->size };
            msgs[j].msg_hdr = (struct msghdr){ .msg_name = &s.peer.ss, .msg_namelen = s.peer.len,
                                               .msg_iov = &iovs[j], .msg_iovlen = 1 };
        }
        for (unsigned done = 0; done < n;) {
            int k = sendmmsg(fd, msgs + done, n - done, 0);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                die_sys("sendmmsg");
            for (unsigned j = done; j < done + (unsigned)k; j++)
                r->c.sent += msgs[j].msg_len;
            done += (unsigned)k;
        }

        memset(msgs, 0, sizeof msgs);
        for (unsigned j = 0; j < n; j++) {
            iovs[j] = (struct iovec){ rbufs[j], CHUNK };
            msgs[j].msg_hdr = (struct msghdr){ .msg_name = &srcs[j], .msg_namelen = sizeof srcs[j],
                                               .msg_iov = &iovs[j], .msg_iovlen = 1 };
        }
        for (unsigned got = 0; got < n;) {
            int k = recvmmsg(fd, msgs + got, n - got, MSG_WAITFORONE, NULL);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                die_sys("recvmmsg");
            for (unsigned j = got; j < got + (unsigned)k; j++) {
                /* payload not compared: loopback may reorder datagrams */
                check_dgram((ssize_t)msgs[j].msg_len, NULL, o->size, base + j, &srcs[j], &s.peer);
                r->c.received += msgs[j].msg_len;
            }
            got += (unsigned)k;
        }
    }
    session_finish(&s, r, fd);
    close(fd);
    result_extra(r, "\"batches\":%lld", batches);
}

/* ------------------------------------------------------------------ */
/* standalone UDP server (for clients in other network namespaces)    */

void case_serve_udp(struct opts *o, struct result *r)
{
    static unsigned char buf[CHUNK];
    struct addr a;
    parse_addr(o->addr, o->port < 0 ? 0 : o->port, &a);
    int fd = server_socket(&a, SOCK_DGRAM, 0);
    announce(o->case_name, &a);
    if (!strcmp(o->mode, "echo")) {
        srv_udp_echo(fd, o, &r->c);
    } else {
        /* sink: receive --count datagrams; source: wait for one trigger
         * datagram, then send --count datagrams of --size to its sender */
        long long want = !strcmp(o->mode, "sink") ? o->count : 1;
        struct sockaddr_storage src;
        socklen_t len = sizeof src;
        for (long long i = 0; i < want; i++) {
            len = sizeof src;
            ssize_t got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &len);
            if (got < 0)
                die_sys("recvfrom");
            r->c.received += (uint64_t)got;
        }
        if (!strcmp(o->mode, "source")) {
            for (long long i = 0; i < o->count; i++) {
                ssize_t w = sendto(fd, pat_at((uint64_t)(i * o->size)), (size_t)o->size, 0,
                                   (struct sockaddr *)&src, len);
                if (w != o->size)
                    die_sys("sendto");
                r->c.sent += (uint64_t)w;
            }
        }
    }
    close(fd);
    r->client_pid = 0;
    r->server_pid = getpid();
    r->lport = sa_port(&a.ss);
    result_extra(r, "\"mode\":\"%s\",\"datagrams\":%lld,\"counts_are\":\"server\"", o->mode, o->count);
}
