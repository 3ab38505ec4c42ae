/* trafficgen: picosnitch test traffic generator - moves exact, known numbers of payload bytes through many kinds of sockets (TCP, UDP, ICMP, raw, AF_PACKET, sendfile, splice, io_uring) and reports the byte counts as one JSON line. */
/*
 * Build:  gcc -O2 -static -Wall -Werror -o trafficgen trafficgen.c
 * Usage:  trafficgen CASE [options]      (trafficgen --help lists cases and options)
 *
 * Every case prints exactly one JSON line on stdout when it succeeds and exits
 * 0. "sent"/"received" are what the CLIENT process sent/received, measured as
 * the sum of the return values of the data-moving syscalls. On any error the
 * program prints a message on stderr and exits with status 1.
 *
 * Where a server is needed it runs in a fork()ed child (same executable,
 * different PID). The child reports its own counts back through a pipe; they
 * appear as "server_sent"/"server_received".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536          /* largest single send/recv */
#define PAT_PERIOD 251       /* payload byte i of a stream is (i % 251) */
#define MAX_DGRAM 65507
#define MMSG_BATCH 8

/* from <linux/icmp.h>, which clashes with the glibc network headers */
#ifndef ICMP_FILTER
#define ICMP_FILTER 1
struct icmp_filter { uint32_t data; };
#endif

/* ------------------------------------------------------------------ */
/* errors                                                             */

static const char *g_case = "?";

static void vdie(int err, const char *fmt, va_list ap)
{
    fprintf(stderr, "trafficgen %s [pid %d]: ", g_case, (int)getpid());
    vfprintf(stderr, fmt, ap);
    if (err)
        fprintf(stderr, ": %s", strerror(err));
    fputc('\n', stderr);
    /* _exit: never flush stdio buffers a fork()ed child may share */
    _exit(1);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdie(0, fmt, ap);
    va_end(ap);
    _exit(1);
}

/* like die(), appends strerror(errno) */
__attribute__((noreturn, format(printf, 1, 2)))
static void die_sys(const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    vdie(err, fmt, ap);
    va_end(ap);
    _exit(1);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* ------------------------------------------------------------------ */
/* options                                                            */

enum io_mode { IO_SEND, IO_RW, IO_MSG, IO_VEC };
static const char *const io_names[] = { "send", "rw", "msg", "vec" };

struct opts {
    const char *case_name;
    long long bytes;        /* -1: case default */
    long long count;        /* -1: case default */
    long long size;         /* -1: case default */
    long long interval_ms;
    long long timeout_ms;
    int port;               /* -1: let the kernel choose */
    const char *addr;       /* NULL: 127.0.0.1 */
    const char *ifname;
    const char *mode;       /* serve-tcp / serve-udp */
    int proto;              /* raw-proto */
    int ethertype;          /* packet */
    long long conns;        /* connections the forked TCP echo server accepts */
    int no_server;          /* client only, talk to --addr/--port */
    int quiet;              /* one-shot: no JSON */
};

static enum io_mode g_io = IO_SEND;
static int g_verify = 1;    /* check received payload against the pattern */
static long long g_timeout_ms = 30000;

/* ------------------------------------------------------------------ */
/* payload pattern                                                    */

static unsigned char g_pat[CHUNK + PAT_PERIOD];

static void pattern_init(void)
{
    for (size_t i = 0; i < sizeof g_pat; i++)
        g_pat[i] = (unsigned char)(i % PAT_PERIOD);
}

/* CHUNK bytes of stream payload starting at stream offset off */
static const unsigned char *pat_at(uint64_t off) { return g_pat + off % PAT_PERIOD; }

static void pat_check(const void *buf, size_t n, uint64_t off, const char *who)
{
    if (g_verify && n <= CHUNK && memcmp(buf, pat_at(off), n) != 0)
        die("%s: payload mismatch in %zu bytes at stream offset %" PRIu64, who, n, off);
}

/* ------------------------------------------------------------------ */
/* result / JSON                                                      */

struct counts { uint64_t sent, received; };

struct result {
    pid_t client_pid, server_pid;  /* 0: null */
    struct counts c;               /* client counts */
    int lport, rport;              /* -1: null */
    char raddr[128];               /* "": null */
    int have_server_counts;
    struct counts srv;
    char *extra;                   /* extra ,"key":value members */
};

static void result_init(struct result *r)
{
    memset(r, 0, sizeof *r);
    r->client_pid = getpid();
    r->lport = r->rport = -1;
}

__attribute__((format(printf, 2, 3)))
static void result_extra(struct result *r, const char *fmt, ...)
{
    char *add, *joined;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&add, fmt, ap) < 0)
        die("out of memory");
    va_end(ap);
    if (asprintf(&joined, "%s,%s", r->extra ? r->extra : "", add) < 0)
        die("out of memory");
    free(add);
    free(r->extra);
    r->extra = joined;
}

static void print_pid(const char *key, pid_t pid)
{
    if (pid)
        printf(",\"%s\":%d", key, (int)pid);
    else
        printf(",\"%s\":null", key);
}

static void print_port(const char *key, int port)
{
    if (port >= 0)
        printf(",\"%s\":%d", key, port);
    else
        printf(",\"%s\":null", key);
}

static void print_result(const char *case_name, const struct result *r)
{
    printf("{\"case\":\"%s\"", case_name);
    print_pid("client_pid", r->client_pid);
    print_pid("server_pid", r->server_pid);
    printf(",\"sent\":%" PRIu64 ",\"received\":%" PRIu64, r->c.sent, r->c.received);
    print_port("lport", r->lport);
    print_port("rport", r->rport);
    if (r->raddr[0])
        printf(",\"raddr\":\"%s\"", r->raddr);
    else
        printf(",\"raddr\":null");
    if (r->have_server_counts)
        printf(",\"server_sent\":%" PRIu64 ",\"server_received\":%" PRIu64,
               r->srv.sent, r->srv.received);
    printf(",\"io\":\"%s\"%s}\n", io_names[g_io], r->extra ? r->extra : "");
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* addresses and sockets                                              */

struct addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

static int addr_family(const struct addr *a) { return a->ss.ss_family; }

/* Numeric IPv4/IPv6 address, IPv6 may carry a %ifname / %index scope. */
static void parse_addr(const char *host, int port, struct addr *a)
{
    memset(a, 0, sizeof *a);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        a->len = sizeof *s4;
        return;
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s", host);
    char *scope = strchr(buf, '%');
    if (scope)
        *scope++ = '\0';
    if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1)
        die("not a numeric IPv4/IPv6 address: '%s'", host);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    if (scope) {
        unsigned idx = if_nametoindex(scope);
        if (!idx)
            idx = (unsigned)strtoul(scope, NULL, 10);
        if (!idx)
            die("unknown IPv6 scope '%s'", scope);
        s6->sin6_scope_id = idx;
    }
    a->len = sizeof *s6;
}

static int sa_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return -1;
}

static void sa_set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static void sa_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    const void *src = ss->ss_family == AF_INET
        ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
        : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (!inet_ntop(ss->ss_family, src, buf, (socklen_t)len))
        die_sys("inet_ntop");
}

/* same address and port? */
static int sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family || sa_port(a) != sa_port(b))
        return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die_sys("getsockname");
    return sa_port(&ss);
}

static void set_timeouts(int fd, long long ms)
{
    if (ms <= 0)
        return;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        die_sys("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
}

static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
        die_sys("fcntl(O_NONBLOCK)");
}

/* Bound (and for TCP listening) server socket; a->port is updated to the
 * port actually bound. */
static int server_socket(struct addr *a, int type, long long timeout_ms)
{
    int fd = socket(addr_family(a), type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die_sys("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die_sys("setsockopt(SO_REUSEADDR)");
    if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0)
        die_sys("bind to port %d", sa_port(&a->ss));
    if (type == SOCK_STREAM && listen(fd, 4096) < 0)
        die_sys("listen");
    set_timeouts(fd, timeout_ms);   /* bounds accept()/recvfrom() */
    sa_set_port(&a->ss, local_port(fd));
    return fd;
}

static int tcp_connect(const struct addr *a)
{
    int fd = socket(addr_family(a), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die_sys("socket");
    set_timeouts(fd, g_timeout_ms);
    while (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
        if (errno != EINTR)
            die_sys("connect to port %d", sa_port(&a->ss));
    return fd;
}

static int accept_one(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            set_timeouts(fd, g_timeout_ms);
            return fd;
        }
        if (errno != EINTR)
            die_sys("accept");
    }
}

static void shut_wr(int fd)
{
    if (shutdown(fd, SHUT_WR) < 0)
        die_sys("shutdown(SHUT_WR)");
}

/* ------------------------------------------------------------------ */
/* stream I/O (TCP); syscall family selected by --io                  */

static ssize_t io_send(int fd, const void *buf, size_t n)
{
    struct iovec iov[2] = {
        { (void *)buf, n / 2 },
        { (char *)buf + n / 2, n - n / 2 },
    };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    switch (g_io) {
    case IO_RW:  return write(fd, buf, n);
    case IO_MSG: return sendmsg(fd, &m, MSG_NOSIGNAL);
    case IO_VEC: return writev(fd, iov, 2);
    default:     return send(fd, buf, n, MSG_NOSIGNAL);
    }
}

static ssize_t io_recv(int fd, void *buf, size_t n)
{
    struct iovec iov[2] = {
        { buf, n / 2 },
        { (char *)buf + n / 2, n - n / 2 },
    };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    switch (g_io) {
    case IO_RW:  return read(fd, buf, n);
    case IO_MSG: return recvmsg(fd, &m, 0);
    case IO_VEC: return readv(fd, iov, 2);
    default:     return recv(fd, buf, n, 0);
    }
}

/* write exactly n bytes of buf; returns n */
static uint64_t write_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = io_send(fd, (const char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die_sys("send");
        }
        if (r == 0)
            die("send returned 0");
        done += (size_t)r;
    }
    return done;
}

/* send exactly n pattern bytes starting at stream offset off; returns n */
static uint64_t send_pattern(int fd, uint64_t n, uint64_t off)
{
    uint64_t done = 0;
    while (done < n) {
        size_t len = (size_t)min_u64(n - done, CHUNK);
        done += write_all(fd, pat_at(off + done), len);
    }
    return done;
}

/* one receive of at most n bytes, retried on EINTR; dies on error */
static size_t recv_some(int fd, void *buf, size_t n, const char *who)
{
    for (;;) {
        ssize_t r = io_recv(fd, buf, n);
        if (r >= 0)
            return (size_t)r;
        if (errno != EINTR)
            die_sys("%s: recv", who);
    }
}

/* receive exactly n bytes (pattern checked); dies on early EOF */
static uint64_t recv_exact(int fd, uint64_t n, uint64_t off, const char *who)
{
    static unsigned char buf[CHUNK];
    uint64_t done = 0;
    while (done < n) {
        size_t r = recv_some(fd, buf, (size_t)min_u64(n - done, CHUNK), who);
        if (r == 0)
            die("%s: EOF after %" PRIu64 " of %" PRIu64 " bytes", who, done, n);
        pat_check(buf, r, off + done, who);
        done += r;
    }
    return done;
}

/* receive until EOF (pattern checked); returns the byte count */
static uint64_t recv_to_eof(int fd, uint64_t off, const char *who)
{
    static unsigned char buf[CHUNK];
    uint64_t done = 0;
    for (;;) {
        size_t r = recv_some(fd, buf, CHUNK, who);
        if (r == 0)
            return done;
        pat_check(buf, r, off + done, who);
        done += r;
    }
}

/* echo everything back until EOF */
static void echo_stream(int fd, struct counts *c)
{
    static unsigned char buf[CHUNK];
    for (;;) {
        size_t r = recv_some(fd, buf, CHUNK, "echo");
        if (r == 0)
            return;
        c->received += r;
        c->sent += write_all(fd, buf, r);
    }
}

/* Send n_out pattern bytes (then SHUT_WR) while receiving until EOF, both
 * at once, driven by poll() on a non-blocking socket. */
static void duplex(int fd, uint64_t n_out, struct counts *c, const char *who)
{
    static unsigned char buf[CHUNK];
    int wr_open = 1, rd_open = 1;
    set_nonblock(fd, 1);
    if (n_out == 0) {
        shut_wr(fd);
        wr_open = 0;
    }
    while (wr_open || rd_open) {
        struct pollfd p = { .fd = fd, .events = (short)((wr_open ? POLLOUT : 0) | (rd_open ? POLLIN : 0)) };
        int n = poll(&p, 1, g_timeout_ms > 0 ? (int)min_u64((uint64_t)g_timeout_ms, INT32_MAX) : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die_sys("%s: poll", who);
        }
        if (n == 0)
            die("%s: timeout (sent %" PRIu64 ", received %" PRIu64 ")", who, c->sent, c->received);
        if (rd_open && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = io_recv(fd, buf, CHUNK);
            if (r < 0 && errno != EAGAIN && errno != EINTR)
                die_sys("%s: recv", who);
            if (r == 0)
                rd_open = 0;
            if (r > 0) {
                pat_check(buf, (size_t)r, c->received, who);
                c->received += (uint64_t)r;
            }
        }
        if (wr_open && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            size_t len = (size_t)min_u64(n_out - c->sent, CHUNK);
            ssize_t r = io_send(fd, pat_at(c->sent), len);
            if (r < 0 && errno != EAGAIN && errno != EINTR)
                die_sys("%s: send", who);
            if (r > 0) {
                c->sent += (uint64_t)r;
                if (c->sent == n_out) {
                    shut_wr(fd);
                    wr_open = 0;
                }
            }
        }
    }
    set_nonblock(fd, 0);
}

static void expect_eq(const char *who, const char *what, uint64_t got, uint64_t want)
{
    if (got != want)
        die("%s: %s %" PRIu64 " bytes, expected %" PRIu64, who, what, got, want);
}

/* ------------------------------------------------------------------ */
/* forked server child                                                */

typedef void (*server_fn)(int fd, const struct opts *o, struct counts *c);

struct server {
    pid_t pid;
    int report_fd;
};

/* Fork a child that runs fn(fd, ...) and reports its counts through a pipe.
 * The parent's copy of fd is closed. */
static struct server start_server(int fd, server_fn fn, const struct opts *o)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die_sys("pipe");
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die_sys("fork");
    if (pid == 0) {
        close(p[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        struct counts c = { 0, 0 };
        fn(fd, o, &c);
        if (write(p[1], &c, sizeof c) != (ssize_t)sizeof c)
            die_sys("report to parent");
        _exit(0);
    }
    close(p[1]);
    close(fd);
    return (struct server){ .pid = pid, .report_fd = p[0] };
}

static void wait_ok(pid_t pid, const char *what)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die_sys("waitpid %s %d", what, (int)pid);
    if (WIFSIGNALED(st))
        die("%s %d killed by signal %d", what, (int)pid, WTERMSIG(st));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("%s %d failed (exit status %d)", what, (int)pid, WEXITSTATUS(st));
}

static struct counts finish_server(struct server *s)
{
    struct counts c;
    size_t got = 0;
    while (got < sizeof c) {
        ssize_t r = read(s->report_fd, (char *)&c + got, sizeof c - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(s->report_fd);
    wait_ok(s->pid, "server child");
    if (got != sizeof c)
        die("server child %d did not report its counts", (int)s->pid);
    return c;
}

/* A client/server session over IP: either a forked server child bound to
 * --addr (port 0 unless --port), or with --no-server an external server at
 * --addr/--port. */
struct session {
    struct addr peer;
    int have_server;
    struct server srv;
};

static void session_start(struct session *s, const struct opts *o, int type, server_fn fn)
{
    parse_addr(o->addr, o->port < 0 ? 0 : o->port, &s->peer);
    s->have_server = 0;
    if (o->no_server) {
        if (o->port <= 0)
            die("--no-server needs --port");
        return;
    }
    int fd = server_socket(&s->peer, type, g_timeout_ms);
    s->srv = start_server(fd, fn, o);
    s->have_server = 1;
}

/* wait for the server child and fill in the common result fields */
static void session_finish(struct session *s, struct result *r, int fd)
{
    if (fd >= 0)
        r->lport = local_port(fd);
    r->rport = sa_port(&s->peer.ss);
    sa_str(&s->peer.ss, r->raddr, sizeof r->raddr);
    if (s->have_server) {
        r->srv = finish_server(&s->srv);
        r->server_pid = s->srv.pid;
        r->have_server_counts = 1;
    }
}

/* ------------------------------------------------------------------ */
/* TCP server bodies (run in the child)                               */

static void srv_sink(int lfd, const struct opts *o, struct counts *c)
{
    int fd = accept_one(lfd);
    c->received = recv_to_eof(fd, 0, "server");
    expect_eq("server", "received", c->received, (uint64_t)o->bytes);
    close(fd);
}

static void srv_source(int lfd, const struct opts *o, struct counts *c)
{
    int fd = accept_one(lfd);
    c->sent = send_pattern(fd, (uint64_t)o->bytes, 0);
    close(fd);
}

static void srv_duplex(int lfd, const struct opts *o, struct counts *c)
{
    int fd = accept_one(lfd);
    duplex(fd, (uint64_t)o->bytes, c, "server");
    expect_eq("server", "received", c->received, (uint64_t)o->bytes);
    close(fd);
}

/* o->conns connections, each echoed until EOF */
static void srv_echo(int lfd, const struct opts *o, struct counts *c)
{
    for (long long i = 0; i < o->conns; i++) {
        int fd = accept_one(lfd);
        echo_stream(fd, c);
        close(fd);
    }
}

/* ------------------------------------------------------------------ */
/* TCP cases                                                          */

static void case_tcp_up(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_sink);
    int fd = tcp_connect(&s.peer);
    r->c.sent = send_pattern(fd, (uint64_t)o->bytes, 0);
    shut_wr(fd);
    r->c.received = recv_to_eof(fd, 0, "client");
    session_finish(&s, r, fd);
    close(fd);
}

static void case_tcp_down(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_source);
    int fd = tcp_connect(&s.peer);
    r->c.received = recv_to_eof(fd, 0, "client");
    expect_eq("client", "received", r->c.received, (uint64_t)o->bytes);
    session_finish(&s, r, fd);
    close(fd);
}

static void case_tcp_duplex(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_duplex);
    int fd = tcp_connect(&s.peer);
    duplex(fd, (uint64_t)o->bytes, &r->c, "client");
    expect_eq("client", "received", r->c.received, (uint64_t)o->bytes);
    session_finish(&s, r, fd);
    close(fd);
}

static void case_sendfile(struct opts *o, struct result *r)
{
    char path[] = "/tmp/trafficgen.XXXXXX";
    int file = mkstemp(path);
    if (file < 0)
        die_sys("mkstemp");
    unlink(path);
    uint64_t n = (uint64_t)o->bytes;
    for (uint64_t done = 0; done < n;) {   /* file write: not socket traffic */
        ssize_t w = write(file, pat_at(done), (size_t)min_u64(n - done, CHUNK));
        if (w <= 0)
            die_sys("write temp file");
        done += (uint64_t)w;
    }

    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_sink);
    int fd = tcp_connect(&s.peer);
    off_t off = 0;
    while (r->c.sent < n) {
        ssize_t w = sendfile(fd, file, &off, (size_t)min_u64(n - r->c.sent, 1 << 20));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die_sys("sendfile");
        r->c.sent += (uint64_t)w;
    }
    shut_wr(fd);
    r->c.received = recv_to_eof(fd, 0, "client");
    session_finish(&s, r, fd);
    close(fd);
    close(file);
}

static void case_splice_recv(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_source);
    int fd = tcp_connect(&s.peer);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    int p[2];
    if (null < 0 || pipe2(p, O_CLOEXEC) < 0)
        die_sys("open /dev/null / pipe");
    uint64_t n = (uint64_t)o->bytes;
    for (;;) {
        /* ask for one byte more than expected so the final call sees EOF */
        ssize_t k = splice(fd, NULL, p[1], NULL, (size_t)min_u64(n - min_u64(r->c.received, n) + 1, CHUNK),
                           SPLICE_F_MOVE);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die_sys("splice socket->pipe");
        if (k == 0)
            break;
        r->c.received += (uint64_t)k;
        while (k > 0) {   /* drain the pipe into /dev/null */
            ssize_t m = splice(p[0], NULL, null, NULL, (size_t)k, SPLICE_F_MOVE);
            if (m < 0 && errno == EINTR)
                continue;
            if (m <= 0)
                die_sys("splice pipe->/dev/null");
            k -= m;
        }
    }
    expect_eq("client", "received", r->c.received, n);
    session_finish(&s, r, fd);
    close(fd);
    close(null);
    close(p[0]);
    close(p[1]);
}

static void case_short_conns(struct opts *o, struct result *r)
{
    struct session s;
    o->conns = o->count;
    session_start(&s, o, SOCK_STREAM, srv_echo);
    uint64_t n = (uint64_t)o->bytes;
    for (long long i = 0; i < o->count; i++) {
        int fd = tcp_connect(&s.peer);
        r->c.sent += send_pattern(fd, n, 0);
        r->c.received += recv_exact(fd, n, 0, "client");
        close(fd);
    }
    session_finish(&s, r, -1);
    result_extra(r, "\"connections\":%lld", o->count);
}

static void sleep_ms(long long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void case_drip(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_echo);
    int fd = tcp_connect(&s.peer);
    uint64_t n = (uint64_t)o->bytes;
    for (long long i = 0; i < o->count; i++) {
        if (i > 0)
            sleep_ms(o->interval_ms);
        r->c.sent += send_pattern(fd, n, (uint64_t)i * n);
        r->c.received += recv_exact(fd, n, (uint64_t)i * n, "client");
    }
    shut_wr(fd);
    r->c.received += recv_to_eof(fd, 0, "client");
    session_finish(&s, r, fd);
    close(fd);
    result_extra(r, "\"iterations\":%lld,\"interval_ms\":%lld", o->count, o->interval_ms);
}

/* hidden helper for storm: connect, send --bytes, exit without closing */
static void case_one_shot(struct opts *o, struct result *r)
{
    if (o->port <= 0)
        die("one-shot needs --port");
    struct addr a;
    parse_addr(o->addr, o->port, &a);
    int fd = tcp_connect(&a);
    r->c.sent = send_pattern(fd, (uint64_t)o->bytes, 0);
    if (o->quiet)
        _exit(0);   /* the kernel closes the socket */
    r->lport = local_port(fd);
    r->rport = o->port;
    sa_str(&a.ss, r->raddr, sizeof r->raddr);
}

static void case_storm(struct opts *o, struct result *r)
{
    struct addr a;
    parse_addr(o->addr, o->port < 0 ? 0 : o->port, &a);
    int lfd = -1;
    if (o->no_server) {
        if (o->port <= 0)
            die("--no-server needs --port");
    } else {
        lfd = server_socket(&a, SOCK_STREAM, g_timeout_ms);
    }
    char port[16], bytes[32];
    snprintf(port, sizeof port, "%d", sa_port(&a.ss));
    snprintf(bytes, sizeof bytes, "%lld", o->bytes);
    char *argv[] = { "trafficgen", "one-shot", "--quiet", "--bytes", bytes, "--port", port,
                     "--addr", (char *)o->addr, "--io", (char *)io_names[g_io], NULL };

    pid_t *kids = calloc((size_t)o->count, sizeof *kids);
    if (!kids)
        die("out of memory");
    fflush(NULL);
    for (long long i = 0; i < o->count; i++) {
        kids[i] = fork();
        if (kids[i] < 0)
            die_sys("fork");
        if (kids[i] == 0) {
            execv("/proc/self/exe", argv);
            die_sys("exec /proc/self/exe");
        }
    }

    /* the parent is the server: every connection must deliver exactly --bytes */
    if (lfd >= 0) {
        for (long long i = 0; i < o->count; i++) {
            int fd = accept_one(lfd);
            uint64_t got = recv_to_eof(fd, 0, "storm server");
            expect_eq("storm server", "received on one connection", got, (uint64_t)o->bytes);
            r->srv.received += got;
            close(fd);
        }
        close(lfd);
        r->have_server_counts = 1;
        r->server_pid = getpid();
    }
    for (long long i = 0; i < o->count; i++)
        wait_ok(kids[i], "storm child");

    /* every child exited 0, i.e. sent exactly --bytes */
    r->c.sent = (uint64_t)o->count * (uint64_t)o->bytes;
    r->client_pid = 0;
    r->rport = sa_port(&a.ss);
    sa_str(&a.ss, r->raddr, sizeof r->raddr);

    size_t cap = (size_t)o->count * 12 + 16, len = 0;
    char *list = malloc(cap);
    if (!list)
        die("out of memory");
    len += (size_t)snprintf(list + len, cap - len, "\"children\":[");
    for (long long i = 0; i < o->count; i++)
        len += (size_t)snprintf(list + len, cap - len, "%s%d", i ? "," : "", (int)kids[i]);
    snprintf(list + len, cap - len, "]");
    result_extra(r, "%s", list);
    free(list);
    free(kids);
}

/* ------------------------------------------------------------------ */
/* io_uring (raw syscalls)                                            */

struct uring {
    int fd;
    unsigned sq_entries;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned to_submit;
};

static void *ring_map(int fd, size_t len, off_t off)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, off);
    if (p == MAP_FAILED)
        die_sys("mmap io_uring");
    return p;
}

static void uring_init(struct uring *u, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    memset(u, 0, sizeof *u);
    u->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (u->fd < 0)
        die_sys("io_uring_setup (see sysctl kernel.io_uring_disabled)");
    u->sq_entries = p.sq_entries;

    char *sq = ring_map(u->fd, p.sq_off.array + p.sq_entries * sizeof(unsigned), IORING_OFF_SQ_RING);
    char *cq = ring_map(u->fd, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), IORING_OFF_CQ_RING);
    u->sqes = ring_map(u->fd, p.sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);

    u->sq_head = (unsigned *)(sq + p.sq_off.head);
    u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    u->sq_array = (unsigned *)(sq + p.sq_off.array);
    u->cq_head = (unsigned *)(cq + p.cq_off.head);
    u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
}

static void uring_queue(struct uring *u, int op, int fd, void *buf, unsigned len, uint64_t tag)
{
    unsigned tail = *u->sq_tail;
    if (tail - __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE) >= u->sq_entries)
        die("io_uring submission queue full");
    unsigned idx = tail & *u->sq_mask;
    struct io_uring_sqe *sqe = &u->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = (uint8_t)op;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->user_data = tag;
    u->sq_array[idx] = idx;
    __atomic_store_n(u->sq_tail, tail + 1, __ATOMIC_RELEASE);
    u->to_submit++;
}

/* submit queued SQEs and wait for at least one completion */
static void uring_enter(struct uring *u)
{
    for (;;) {
        long r = syscall(__NR_io_uring_enter, u->fd, u->to_submit, 1, IORING_ENTER_GETEVENTS, NULL, 0);
        if (r >= 0) {
            u->to_submit -= (unsigned)r;
            return;
        }
        if (errno != EINTR)
            die_sys("io_uring_enter");
    }
}

static int uring_reap(struct uring *u, struct io_uring_cqe *out)
{
    unsigned head = *u->cq_head;
    if (head == __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE))
        return 0;
    *out = u->cqes[head & *u->cq_mask];
    __atomic_store_n(u->cq_head, head + 1, __ATOMIC_RELEASE);
    return 1;
}

enum { TAG_SEND = 1, TAG_RECV = 2 };

/* One IORING_OP_SEND and one IORING_OP_RECV in flight at a time until
 * n bytes went each way; the server echoes. */
static void case_uring(struct opts *o, struct result *r)
{
    static unsigned char rbuf[CHUNK];
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_echo);
    int fd = tcp_connect(&s.peer);
    struct uring u;
    uring_init(&u, 8);

    uint64_t n = (uint64_t)o->bytes;
    int send_busy = 0, recv_busy = 0;
    while (r->c.sent < n || r->c.received < n) {
        if (!send_busy && r->c.sent < n) {
            uring_queue(&u, IORING_OP_SEND, fd, (void *)pat_at(r->c.sent),
                        (unsigned)min_u64(n - r->c.sent, CHUNK), TAG_SEND);
            send_busy = 1;
        }
        if (!recv_busy && r->c.received < n) {
            uring_queue(&u, IORING_OP_RECV, fd, rbuf,
                        (unsigned)min_u64(n - r->c.received, CHUNK), TAG_RECV);
            recv_busy = 1;
        }
        uring_enter(&u);
        struct io_uring_cqe cqe;
        while (uring_reap(&u, &cqe)) {
            if (cqe.res < 0) {
                errno = -cqe.res;
                die_sys("io_uring %s", cqe.user_data == TAG_SEND ? "send" : "recv");
            }
            if (cqe.user_data == TAG_SEND) {
                send_busy = 0;
                r->c.sent += (uint64_t)cqe.res;
            } else {
                recv_busy = 0;
                if (cqe.res == 0)
                    die("io_uring recv: EOF after %" PRIu64 " bytes", r->c.received);
                pat_check(rbuf, (size_t)cqe.res, r->c.received, "client");
                r->c.received += (uint64_t)cqe.res;
            }
        }
    }
    shut_wr(fd);
    if (recv_to_eof(fd, 0, "client") != 0)   /* plain recv(): expect EOF, no data */
        die("unexpected data after echo");
    session_finish(&s, r, fd);
    close(fd);
    close(u.fd);
}

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

static void case_udp_connected(struct opts *o, struct result *r)
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

static void case_udp_unconnected(struct opts *o, struct result *r)
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
        ssize_t got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &len);
        check_dgram(got, buf, o->size, i, &src, &s.peer);
        r->c.received += (uint64_t)got;
    }
    session_finish(&s, r, fd);
    close(fd);
}

static void case_udp_mmsg(struct opts *o, struct result *r)
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
/* ICMP                                                               */

struct echo_hdr {
    uint8_t type, code;
    uint16_t cksum, id, seq;
};

static uint16_t inet_cksum(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t sum = 0;
    for (; len > 1; p += 2, len -= 2)
        sum += (uint32_t)(p[0] << 8 | p[1]);
    if (len)
        sum += (uint32_t)(p[0] << 8);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return htons((uint16_t)~sum);
}

/* Make sure our gid may open ICMP ping sockets; returns 1 if changed. */
static int ensure_ping_group(void)
{
    const char *path = "/proc/sys/net/ipv4/ping_group_range";
    unsigned long lo = 1, hi = 0;
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%lu %lu", &lo, &hi) != 2)
        die_sys("read %s", path);
    fclose(f);
    unsigned long gid = getegid();
    if (lo <= gid && gid <= hi)
        return 0;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    const char *val = "0 2147483647\n";
    if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val))
        die_sys("write %s", path);
    close(fd);
    return 1;
}

/* Build an echo request of 8 + size bytes. */
static size_t build_echo(unsigned char *pkt, int v6, uint16_t id, uint16_t seq, long long size)
{
    struct echo_hdr h = { .type = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO, .id = htons(id), .seq = htons(seq) };
    memcpy(pkt, &h, sizeof h);
    memcpy(pkt + sizeof h, pat_at(0), (size_t)size);
    size_t len = sizeof h + (size_t)size;
    if (!v6) {   /* ICMPv6 checksums are filled in by the kernel */
        uint16_t ck = inet_cksum(pkt, len);
        memcpy(pkt + 2, &ck, 2);
    }
    return len;
}

/* Send --count echo requests, waiting for each reply. raw: a SOCK_RAW socket
 * (raw IPv4 receives return the IP header in front of the ICMP message;
 * raw sockets see every echo reply, so match on our id). */
static void ping_loop(int fd, const struct addr *dst, int v6, int raw, const struct opts *o,
                      struct result *r, long long *foreign)
{
    static unsigned char pkt[CHUNK], buf[CHUNK];
    uint16_t id = (uint16_t)getpid();   /* ping sockets replace this with their ident */
    uint8_t reply = v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY;

    for (long long i = 0; i < o->count; i++) {
        uint16_t seq = (uint16_t)(i + 1);
        size_t len = build_echo(pkt, v6, id, seq, o->size);
        ssize_t w = sendto(fd, pkt, len, 0, (const struct sockaddr *)&dst->ss, dst->len);
        if (w != (ssize_t)len)
            die_sys("sendto echo request %lld", i);
        r->c.sent += (uint64_t)w;
        if (i == 0 && !raw)
            r->lport = local_port(fd);   /* ping socket ident */
        for (;;) {
            /* Like ping(8): ask for the source address of each reply. */
            struct sockaddr_storage src;
            socklen_t srclen = sizeof src;
            ssize_t got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &srclen);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                die_sys("recv echo reply %lld", i);
            r->c.received += (uint64_t)got;
            size_t off = (raw && !v6) ? (size_t)(buf[0] & 0x0f) * 4 : 0;
            struct echo_hdr h;
            if ((size_t)got < off + sizeof h) {
                ++*foreign;
                continue;
            }
            memcpy(&h, buf + off, sizeof h);
            if (h.type == reply && ntohs(h.seq) == seq && (!raw || ntohs(h.id) == id)) {
                if ((size_t)got - off != len)
                    die("echo reply %lld has %zu ICMP bytes, expected %zu", i, (size_t)got - off, len);
                break;
            }
            ++*foreign;   /* someone else's reply: counted in received, reported */
        }
    }
}

static void case_icmp_ping(struct opts *o, struct result *r)
{
    struct addr dst;
    parse_addr(o->addr, 0, &dst);
    int v6 = addr_family(&dst) == AF_INET6;
    int changed = ensure_ping_group();
    int fd = socket(addr_family(&dst), SOCK_DGRAM | SOCK_CLOEXEC, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
    if (fd < 0)
        die_sys("socket(SOCK_DGRAM, IPPROTO_ICMP%s)", v6 ? "V6" : "");
    set_timeouts(fd, g_timeout_ms);
    long long foreign = 0;
    ping_loop(fd, &dst, v6, 0, o, r, &foreign);
    sa_str(&dst.ss, r->raddr, sizeof r->raddr);
    close(fd);
    result_extra(r, "\"ping_group_range_changed\":%s,\"foreign_packets\":%lld",
                 changed ? "true" : "false", foreign);
}

static void case_icmp_raw(struct opts *o, struct result *r)
{
    struct addr dst;
    parse_addr(o->addr, 0, &dst);
    int v6 = addr_family(&dst) == AF_INET6;
    int fd = socket(addr_family(&dst), SOCK_RAW | SOCK_CLOEXEC, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
    if (fd < 0)
        die_sys("socket(SOCK_RAW, IPPROTO_ICMP%s)", v6 ? "V6" : "");
    set_timeouts(fd, g_timeout_ms);
    /* deliver only echo replies (a raw socket sees our own request too) */
    if (v6) {
        struct icmp6_filter f;
        ICMP6_FILTER_SETBLOCKALL(&f);
        ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
        if (setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f) < 0)
            die_sys("setsockopt(ICMP6_FILTER)");
    } else {
        struct icmp_filter f = { .data = ~(1U << ICMP_ECHOREPLY) };
        if (setsockopt(fd, SOL_RAW, ICMP_FILTER, &f, sizeof f) < 0)
            die_sys("setsockopt(ICMP_FILTER)");
    }
    long long foreign = 0;
    ping_loop(fd, &dst, v6, 1, o, r, &foreign);
    sa_str(&dst.ss, r->raddr, sizeof r->raddr);
    close(fd);
    result_extra(r, "\"foreign_packets\":%lld", foreign);
}

/* ------------------------------------------------------------------ */
/* raw IP protocol and AF_PACKET                                      */

/* the socket never receives anything */
static void attach_drop_all(int fd)
{
    struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
    struct sock_fprog prog = { .len = 1, .filter = code };
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
        die_sys("setsockopt(SO_ATTACH_FILTER)");
}

static void case_raw_proto(struct opts *o, struct result *r)
{
    static unsigned char buf[CHUNK];
    struct addr dst;
    parse_addr(o->addr, 0, &dst);
    int fam = addr_family(&dst);
    int rx = socket(fam, SOCK_RAW | SOCK_CLOEXEC, o->proto);
    int tx = socket(fam, SOCK_RAW | SOCK_CLOEXEC, o->proto);
    if (rx < 0 || tx < 0)
        die_sys("socket(SOCK_RAW, %d)", o->proto);
    attach_drop_all(tx);   /* the sender would get a copy of every packet too */
    set_timeouts(rx, g_timeout_ms);
    size_t hdr = fam == AF_INET ? 20 : 0;
    long long foreign = 0;

    for (long long i = 0; i < o->count; i++) {
        ssize_t w = sendto(tx, pat_at((uint64_t)(i * o->size)), (size_t)o->size, 0,
                           (struct sockaddr *)&dst.ss, dst.len);
        if (w != o->size)
            die_sys("sendto raw packet %lld", i);
        r->c.sent += (uint64_t)w;
        for (;;) {
            struct sockaddr_storage src;
            socklen_t len = sizeof src;
            ssize_t got = recvfrom(rx, buf, sizeof buf, 0, (struct sockaddr *)&src, &len);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                die_sys("recvfrom raw packet %lld", i);
            r->c.received += (uint64_t)got;
            if (fam == AF_INET)
                hdr = (size_t)(buf[0] & 0x0f) * 4;
            sa_set_port(&src, 0);
            if (sa_equal(&src, &dst.ss) && (size_t)got == hdr + (size_t)o->size &&
                memcmp(buf + hdr, pat_at((uint64_t)(i * o->size)), (size_t)o->size) == 0)
                break;
            foreign++;
        }
    }
    sa_str(&dst.ss, r->raddr, sizeof r->raddr);
    close(tx);
    close(rx);
    result_extra(r, "\"proto\":%d,\"foreign_packets\":%lld", o->proto, foreign);
}

static void case_packet(struct opts *o, struct result *r)
{
    static unsigned char buf[CHUNK];
    unsigned ifindex = if_nametoindex(o->ifname);
    if (!ifindex)
        die_sys("interface '%s'", o->ifname);
    uint16_t proto = htons((uint16_t)o->ethertype);

    /* protocol 0: tx never receives; rx gets only our ethertype on ifname */
    int tx = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int rx = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, proto);
    if (tx < 0 || rx < 0)
        die_sys("socket(AF_PACKET, SOCK_DGRAM)");
    struct sockaddr_ll bind_ll = { .sll_family = AF_PACKET, .sll_protocol = proto, .sll_ifindex = (int)ifindex };
    if (bind(rx, (struct sockaddr *)&bind_ll, sizeof bind_ll) < 0)
        die_sys("bind AF_PACKET to %s", o->ifname);
    set_timeouts(rx, g_timeout_ms);

    struct sockaddr_ll dst = { .sll_family = AF_PACKET, .sll_protocol = proto, .sll_ifindex = (int)ifindex,
                               .sll_halen = 6, .sll_addr = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff } };
    long long foreign = 0;
    for (long long i = 0; i < o->count; i++) {
        const unsigned char *payload = pat_at((uint64_t)(i * o->size));
        ssize_t w = sendto(tx, payload, (size_t)o->size, 0, (struct sockaddr *)&dst, sizeof dst);
        if (w != o->size)
            die_sys("sendto AF_PACKET frame %lld", i);
        r->c.sent += (uint64_t)w;
        for (;;) {
            struct sockaddr_ll src;
            socklen_t len = sizeof src;
            ssize_t got = recvfrom(rx, buf, sizeof buf, 0, (struct sockaddr *)&src, &len);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                die_sys("recvfrom AF_PACKET frame %lld", i);
            r->c.received += (uint64_t)got;
            if (got == o->size && memcmp(buf, payload, (size_t)o->size) == 0)
                break;
            foreign++;
        }
    }
    snprintf(r->raddr, sizeof r->raddr, "ff:ff:ff:ff:ff:ff");
    close(tx);
    close(rx);
    result_extra(r, "\"ifname\":\"%s\",\"ethertype\":\"0x%04x\",\"foreign_packets\":%lld",
                 o->ifname, o->ethertype, foreign);
}

/* ------------------------------------------------------------------ */
/* standalone servers (for clients in other network namespaces)       */

static void announce(const char *case_name, const struct addr *a)
{
    char host[128];
    sa_str(&a->ss, host, sizeof host);
    printf("{\"case\":\"%s\",\"listening\":true,\"server_pid\":%d,\"addr\":\"%s\",\"port\":%d}\n",
           case_name, (int)getpid(), host, sa_port(&a->ss));
    fflush(stdout);
}

static void case_serve_tcp(struct opts *o, struct result *r)
{
    struct addr a;
    parse_addr(o->addr, o->port < 0 ? 0 : o->port, &a);
    int lfd = server_socket(&a, SOCK_STREAM, 0);
    announce(o->case_name, &a);
    g_verify = 0;   /* any client may connect */
    for (long long i = 0; o->count == 0 || i < o->count; i++) {
        int fd = accept_one(lfd);
        struct counts c = { 0, 0 };
        if (!strcmp(o->mode, "sink"))
            c.received = recv_to_eof(fd, 0, "server");
        else if (!strcmp(o->mode, "source"))
            c.sent = send_pattern(fd, (uint64_t)o->bytes, 0);
        else if (!strcmp(o->mode, "duplex"))
            duplex(fd, (uint64_t)o->bytes, &c, "server");
        else
            echo_stream(fd, &c);
        close(fd);
        r->c.sent += c.sent;
        r->c.received += c.received;
    }
    close(lfd);
    r->client_pid = 0;
    r->server_pid = getpid();
    r->lport = sa_port(&a.ss);
    result_extra(r, "\"mode\":\"%s\",\"connections\":%lld,\"counts_are\":\"server\"", o->mode, o->count);
}

static void case_serve_udp(struct opts *o, struct result *r)
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

/* ------------------------------------------------------------------ */
/* case table, argument parsing                                       */

struct case_def {
    const char *name;
    void (*run)(struct opts *o, struct result *r);
    long long bytes, count, size;   /* defaults, -1: unused */
    const char *help;
};

static const struct case_def cases[] = {
    { "tcp-up", case_tcp_up, 1000000, -1, -1, "client sends --bytes, server reads all" },
    { "tcp-down", case_tcp_down, 1000000, -1, -1, "server sends --bytes, client reads all" },
    { "tcp-duplex", case_tcp_duplex, 1000000, -1, -1, "both send --bytes at the same time (poll)" },
    { "udp-connected", case_udp_connected, -1, 100, 1000, "connect()+send/recv --count datagrams of --size, echoed" },
    { "udp-unconnected", case_udp_unconnected, -1, 100, 1000, "sendto/recvfrom --count datagrams of --size, echoed" },
    { "udp-mmsg", case_udp_mmsg, -1, 100, 1000, "sendmmsg/recvmmsg batches of 8, --count datagrams of --size, echoed" },
    { "icmp-ping", case_icmp_ping, -1, 10, 56, "ICMP ping socket, --count echo requests with --size payload" },
    { "icmp-raw", case_icmp_raw, -1, 10, 56, "raw ICMP socket, --count echo requests with --size payload" },
    { "raw-proto", case_raw_proto, -1, 10, 500, "raw IP protocol --proto (253): send --count packets of --size, receive on a 2nd raw socket" },
    { "packet", case_packet, -1, 10, 200, "AF_PACKET SOCK_DGRAM on --ifname, ethertype --ethertype: --count frames of --size" },
    { "sendfile", case_sendfile, 1000000, -1, -1, "client sendfile()s a --bytes temp file, server reads all" },
    { "splice-recv", case_splice_recv, 1000000, -1, -1, "server sends --bytes, client splice()s socket->pipe->/dev/null" },
    { "uring", case_uring, 1000000, -1, -1, "io_uring IORING_OP_SEND/RECV --bytes each way, server echoes" },
    { "short-conns", case_short_conns, 100, 500, -1, "--count sequential connections, each --bytes up and --bytes echoed back" },
    { "drip", case_drip, 10, 60, -1, "one connection, --bytes every --interval-ms, --count times, echoed" },
    { "storm", case_storm, 1234, 200, -1, "--count exec()ed children each send --bytes to the parent's server" },
    { "one-shot", case_one_shot, 1234, -1, -1, NULL /* hidden: storm child */ },
    { "serve-tcp", case_serve_tcp, 1000000, 1, -1, "TCP server only: --mode echo|sink|source|duplex, --count connections (0: forever)" },
    { "serve-udp", case_serve_udp, -1, 100, 1000, "UDP server only: --mode echo|sink|source, --count datagrams" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: trafficgen CASE [options]\n\ncases:\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i].help)
            fprintf(f, "  %-16s %s\n", cases[i].name, cases[i].help);
    fprintf(f,
            "\noptions:\n"
            "  --bytes N          stream payload bytes (per connection / per drip)\n"
            "  --count K          datagrams, packets, connections, iterations or children\n"
            "  --size S           bytes per datagram / packet / ICMP payload\n"
            "  --addr A           server/destination address (default 127.0.0.1; -6 = ::1)\n"
            "  --port P           server port (default: chosen by the kernel)\n"
            "  --no-server        do not fork a server; use the one at --addr/--port\n"
            "  --io MODE          TCP syscalls: send (send/recv), rw (write/read),\n"
            "                     msg (sendmsg/recvmsg), vec (writev/readv)\n"
            "  --interval-ms MS   drip interval (1000)\n"
            "  --timeout-ms MS    socket timeout, 0 = none (30000)\n"
            "  --proto P          raw-proto IP protocol (253)\n"
            "  --ifname IF        packet interface (lo)\n"
            "  --ethertype E      packet ethertype (0x88b5)\n"
            "  --mode M           serve-tcp / serve-udp mode (echo)\n");
}

static long long parse_num(const char *s, long long min, long long max, const char *name)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end || v < min || v > max)
        die("bad value for %s: '%s' (allowed %lld..%lld)", name, s, min, max);
    return v;
}

static void parse_args(int argc, char **argv, struct opts *o, const struct case_def **cd)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    *o = (struct opts){ .case_name = argv[1], .bytes = -1, .count = -1, .size = -1,
                        .interval_ms = 1000, .conns = 1, .port = -1, .ifname = "lo", .mode = "echo",
                        .proto = 253, .ethertype = 0x88b5 };
    *cd = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(argv[1], cases[i].name))
            *cd = &cases[i];
    if (!*cd) {
        usage(stderr);
        die("unknown case '%s'", argv[1]);
    }
    g_case = (*cd)->name;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--no-server")) { o->no_server = 1; continue; }
        if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (!strcmp(a, "-6")) { o->addr = "::1"; continue; }
        if (i + 1 >= argc)
            die("unknown option or missing value: %s", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--bytes")) o->bytes = parse_num(v, 0, 1LL << 50, a);
        else if (!strcmp(a, "--count")) o->count = parse_num(v, 0, 1LL << 40, a);
        else if (!strcmp(a, "--size")) o->size = parse_num(v, 0, MAX_DGRAM, a);
        else if (!strcmp(a, "--interval-ms")) o->interval_ms = parse_num(v, 0, 1LL << 40, a);
        else if (!strcmp(a, "--timeout-ms")) g_timeout_ms = parse_num(v, 0, 1LL << 40, a);
        else if (!strcmp(a, "--port")) o->port = (int)parse_num(v, 0, 65535, a);
        else if (!strcmp(a, "--addr")) o->addr = v;
        else if (!strcmp(a, "--ifname")) o->ifname = v;
        else if (!strcmp(a, "--mode")) o->mode = v;
        else if (!strcmp(a, "--proto")) o->proto = (int)parse_num(v, 1, 255, a);
        else if (!strcmp(a, "--ethertype")) o->ethertype = (int)parse_num(v, 0x600, 0xffff, a);
        else if (!strcmp(a, "--io")) {
            size_t m;
            for (m = 0; m < sizeof io_names / sizeof io_names[0]; m++)
                if (!strcmp(v, io_names[m]))
                    break;
            if (m == sizeof io_names / sizeof io_names[0])
                die("bad --io '%s' (send|rw|msg|vec)", v);
            g_io = (enum io_mode)m;
        } else
            die("unknown option %s", a);
    }

    if (o->bytes < 0) o->bytes = (*cd)->bytes;
    if (o->count < 0) o->count = (*cd)->count;
    if (o->size < 0) o->size = (*cd)->size;
    if (!o->addr) o->addr = "127.0.0.1";
    if (!strcmp(g_case, "serve-tcp") &&
        strcmp(o->mode, "echo") && strcmp(o->mode, "sink") && strcmp(o->mode, "source") && strcmp(o->mode, "duplex"))
        die("bad --mode '%s' (echo|sink|source|duplex)", o->mode);
    if (!strcmp(g_case, "serve-udp") &&
        strcmp(o->mode, "echo") && strcmp(o->mode, "sink") && strcmp(o->mode, "source"))
        die("bad --mode '%s' (echo|sink|source)", o->mode);
    if (!strcmp(g_case, "drip") && g_timeout_ms > 0)
        g_timeout_ms += o->interval_ms;   /* the echo server waits a whole interval */
    if (o->count < 0) o->count = 1;
    if (o->size < 0) o->size = 0;
    if (o->bytes < 0) o->bytes = 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    const struct case_def *cd;
    struct result r;

    signal(SIGPIPE, SIG_IGN);
    pattern_init();
    parse_args(argc, argv, &o, &cd);
    result_init(&r);
    cd->run(&o, &r);
    if (!o.quiet)
        print_result(cd->name, &r);
    return 0;
}
