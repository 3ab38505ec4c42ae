/* uring.c: the uring case - TCP send/recv through io_uring driven by raw syscalls (no liburing). */
#include "trafficgen.h"

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>

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
void case_uring(struct opts *o, struct result *r)
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
