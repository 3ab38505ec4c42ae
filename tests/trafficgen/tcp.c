/* tcp.c: the TCP stream cases - tcp-up/down/duplex, sendfile, splice-recv, short-conns, drip, storm + one-shot - and the serve-tcp server. */
#include "trafficgen.h"

#include <sys/sendfile.h>

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
void srv_echo(int lfd, const struct opts *o, struct counts *c)
{
    for (long long i = 0; i < o->conns; i++) {
        int fd = accept_one(lfd);
        echo_stream(fd, c);
        close(fd);
    }
}

/* ------------------------------------------------------------------ */
/* TCP cases                                                          */

void case_tcp_up(struct opts *o, struct result *r)
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

void case_tcp_down(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_source);
    int fd = tcp_connect(&s.peer);
    r->c.received = recv_to_eof(fd, 0, "client");
    expect_eq("client", "received", r->c.received, (uint64_t)o->bytes);
    session_finish(&s, r, fd);
    close(fd);
}

void case_tcp_duplex(struct opts *o, struct result *r)
{
    struct session s;
    session_start(&s, o, SOCK_STREAM, srv_duplex);
    int fd = tcp_connect(&s.peer);
    duplex(fd, (uint64_t)o->bytes, &r->c, "client");
    expect_eq("client", "received", r->c.received, (uint64_t)o->bytes);
    session_finish(&s, r, fd);
    close(fd);
}

void case_sendfile(struct opts *o, struct result *r)
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

void case_splice_recv(struct opts *o, struct result *r)
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

void case_short_conns(struct opts *o, struct result *r)
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

void case_drip(struct opts *o, struct result *r)
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
void case_one_shot(struct opts *o, struct result *r)
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

void case_storm(struct opts *o, struct result *r)
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
/* standalone TCP server (for clients in other network namespaces)    */

void case_serve_tcp(struct opts *o, struct result *r)
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
