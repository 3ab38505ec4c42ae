/* util.c: errors (die), the payload byte pattern, sleeping, and IP address / socket setup helpers (bind, connect, accept, timeouts). */
#include "trafficgen.h"

/* ------------------------------------------------------------------ */
/* errors                                                             */

const char *g_case = "?";

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
void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdie(0, fmt, ap);
    va_end(ap);
    _exit(1);
}

/* like die(), appends strerror(errno) */
__attribute__((noreturn, format(printf, 1, 2)))
void die_sys(const char *fmt, ...)
{
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    vdie(err, fmt, ap);
    va_end(ap);
    _exit(1);
}

/* ------------------------------------------------------------------ */
/* payload pattern                                                    */

static unsigned char g_pat[CHUNK + PAT_PERIOD];

void pattern_init(void)
{
    for (size_t i = 0; i < sizeof g_pat; i++)
        g_pat[i] = (unsigned char)(i % PAT_PERIOD);
}

/* CHUNK bytes of stream payload starting at stream offset off */
const unsigned char *pat_at(uint64_t off) { return g_pat + off % PAT_PERIOD; }

void pat_check(const void *buf, size_t n, uint64_t off, const char *who)
{
    if (g_verify && n <= CHUNK && memcmp(buf, pat_at(off), n) != 0)
        die("%s: payload mismatch in %zu bytes at stream offset %" PRIu64, who, n, off);
}

/* ------------------------------------------------------------------ */
/* addresses and sockets                                              */

/* Numeric IPv4/IPv6 address, IPv6 may carry a %ifname / %index scope. */
void parse_addr(const char *host, int port, struct addr *a)
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

int sa_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return -1;
}

void sa_set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

void sa_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    const void *src = ss->ss_family == AF_INET
        ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
        : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (!inet_ntop(ss->ss_family, src, buf, (socklen_t)len))
        die_sys("inet_ntop");
}

/* same address and port? */
int sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family || sa_port(a) != sa_port(b))
        return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die_sys("getsockname");
    return sa_port(&ss);
}

void set_timeouts(int fd, long long ms)
{
    if (ms <= 0)
        return;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        die_sys("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
}

void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
        die_sys("fcntl(O_NONBLOCK)");
}

/* Bound (and for TCP listening) server socket; a->port is updated to the
 * port actually bound. */
int server_socket(struct addr *a, int type, long long timeout_ms)
{
    return server_socket_proto(a, type, 0, timeout_ms);
}

int server_socket_proto(struct addr *a, int type, int protocol, long long timeout_ms)
{
    int fd = socket(addr_family(a), type | SOCK_CLOEXEC, protocol);
    if (fd < 0)
        die_sys("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die_sys("setsockopt(SO_REUSEADDR)");
    if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0)
        die_sys("bind to port %d", sa_port(&a->ss));
    if ((type == SOCK_STREAM || type == SOCK_SEQPACKET) && listen(fd, 4096) < 0)
        die_sys("listen");
    set_timeouts(fd, timeout_ms);   /* bounds accept()/recvfrom() */
    sa_set_port(&a->ss, local_port(fd));
    return fd;
}

int tcp_connect(const struct addr *a)
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

int accept_one(int lfd)
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

void shut_wr(int fd)
{
    if (shutdown(fd, SHUT_WR) < 0)
        die_sys("shutdown(SHUT_WR)");
}

/* ------------------------------------------------------------------ */
/* misc                                                               */

void sleep_ms(long long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}
