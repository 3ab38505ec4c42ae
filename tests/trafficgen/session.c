/* session.c: the fork()ed server child that reports its counts through a pipe, and client/server sessions (forked or --no-server). */
#include "trafficgen.h"

/* ------------------------------------------------------------------ */
/* forked server child                                                */

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

void wait_ok(pid_t pid, const char *what)
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

/* ------------------------------------------------------------------ */
/* client/server session (struct session in trafficgen.h)             */

void session_start(struct session *s, const struct opts *o, int type, server_fn fn)
{
    session_start_proto(s, o, type, 0, fn);
}

void session_start_proto(struct session *s, const struct opts *o, int type, int protocol,
                         server_fn fn)
{
    parse_addr(o->addr, o->port < 0 ? 0 : o->port, &s->peer);
    s->have_server = 0;
    if (o->no_server) {
        if (o->port <= 0)
            die("--no-server needs --port");
        return;
    }
    int fd = server_socket_proto(&s->peer, type, protocol, g_timeout_ms);
    s->srv = start_server(fd, fn, o);
    s->have_server = 1;
}

/* wait for the server child and fill in the common result fields */
void session_finish(struct session *s, struct result *r, int fd)
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
