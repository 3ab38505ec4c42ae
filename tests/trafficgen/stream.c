/* stream.c: TCP stream I/O with the syscall family chosen by --io - exact send/receive loops, receive to EOF, echo, poll()-driven duplex. */
#include "trafficgen.h"

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
uint64_t send_pattern(int fd, uint64_t n, uint64_t off)
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
uint64_t recv_exact(int fd, uint64_t n, uint64_t off, const char *who)
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
uint64_t recv_to_eof(int fd, uint64_t off, const char *who)
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
void echo_stream(int fd, struct counts *c)
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
void duplex(int fd, uint64_t n_out, struct counts *c, const char *who)
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

void expect_eq(const char *who, const char *what, uint64_t got, uint64_t want)
{
    if (got != want)
        die("%s: %s %" PRIu64 " bytes, expected %" PRIu64, who, what, got, want);
}
