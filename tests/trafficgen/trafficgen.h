/* trafficgen.h: declarations shared by the trafficgen modules - options, counts and result, addresses, server sessions, helpers and the case entry points. */
#ifndef TRAFFICGEN_H
#define TRAFFICGEN_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536          /* largest single send/recv */
#define PAT_PERIOD 251       /* payload byte i of a stream is (i % 251) */

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* ------------------------------------------------------------------ */
/* options (main.c)                                                   */

enum io_mode { IO_SEND, IO_RW, IO_MSG, IO_VEC };
extern const char *const io_names[4];

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
    const char *rename;     /* prctl(PR_SET_NAME) before running (client and forked server) */
    const char *resolve;    /* --resolve NAME: look NAME up by hand first, use it as --addr */
    int qtype;              /* 4: A, 6: AAAA */
    const char *dns_server; /* NULL: first nameserver of /etc/resolv.conf */
    int dns_tcp;            /* ask over TCP */
    const char *zone;       /* serve-dns records */
};

extern enum io_mode g_io;
extern int g_verify;        /* check received payload against the pattern */
extern long long g_timeout_ms;

/* ------------------------------------------------------------------ */
/* result / JSON (main.c)                                             */

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

__attribute__((format(printf, 2, 3)))
void result_extra(struct result *r, const char *fmt, ...);

/* ------------------------------------------------------------------ */
/* errors, payload pattern, addresses and sockets (util.c)            */

extern const char *g_case;

__attribute__((noreturn, format(printf, 1, 2)))
void die(const char *fmt, ...);
/* like die(), appends strerror(errno) */
__attribute__((noreturn, format(printf, 1, 2)))
void die_sys(const char *fmt, ...);

void pattern_init(void);
const unsigned char *pat_at(uint64_t off);
void pat_check(const void *buf, size_t n, uint64_t off, const char *who);

void sleep_ms(long long ms);

struct addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

static inline int addr_family(const struct addr *a) { return a->ss.ss_family; }

void parse_addr(const char *host, int port, struct addr *a);
int sa_port(const struct sockaddr_storage *ss);
void sa_set_port(struct sockaddr_storage *ss, int port);
void sa_str(const struct sockaddr_storage *ss, char *buf, size_t len);
int sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
int local_port(int fd);
void set_timeouts(int fd, long long ms);
void set_nonblock(int fd, int on);
int server_socket(struct addr *a, int type, long long timeout_ms);
/* the same for a socket of IP protocol `protocol` (0: the type's default) */
int server_socket_proto(struct addr *a, int type, int protocol, long long timeout_ms);
int tcp_connect(const struct addr *a);
int accept_one(int lfd);
void shut_wr(int fd);

/* JSON "listening" line of serve-tcp / serve-udp (main.c) */
void announce(const char *case_name, const struct addr *a);

/* ------------------------------------------------------------------ */
/* stream I/O, syscall family selected by --io (stream.c)             */

uint64_t send_pattern(int fd, uint64_t n, uint64_t off);
uint64_t recv_exact(int fd, uint64_t n, uint64_t off, const char *who);
uint64_t recv_to_eof(int fd, uint64_t off, const char *who);
void echo_stream(int fd, struct counts *c);
void duplex(int fd, uint64_t n_out, struct counts *c, const char *who);
void expect_eq(const char *who, const char *what, uint64_t got, uint64_t want);

/* ------------------------------------------------------------------ */
/* forked server child and client/server sessions (session.c)         */

typedef void (*server_fn)(int fd, const struct opts *o, struct counts *c);

struct server {
    pid_t pid;
    int report_fd;
};

/* A client/server session over IP: either a forked server child bound to
 * --addr (port 0 unless --port), or with --no-server an external server at
 * --addr/--port. */
struct session {
    struct addr peer;
    int have_server;
    struct server srv;
};

void wait_ok(pid_t pid, const char *what);
void session_start(struct session *s, const struct opts *o, int type, server_fn fn);
void session_start_proto(struct session *s, const struct opts *o, int type, int protocol,
                         server_fn fn);
void session_finish(struct session *s, struct result *r, int fd);

/* ------------------------------------------------------------------ */
/* cases                                                              */

typedef void case_fn(struct opts *o, struct result *r);

/* tcp.c; srv_echo is the forked TCP echo server body, also used by uring */
void srv_echo(int lfd, const struct opts *o, struct counts *c);
case_fn case_tcp_up, case_tcp_down, case_tcp_duplex, case_sendfile, case_splice_recv,
        case_short_conns, case_drip, case_one_shot, case_storm, case_serve_tcp;
/* uring.c */
case_fn case_uring;
/* udp.c */
case_fn case_udp_connected, case_udp_unconnected, case_udp_nosrc, case_udp_mmsg, case_serve_udp;
/* icmp_raw.c */
case_fn case_icmp_ping, case_icmp_raw, case_raw_proto;
/* sctp.c */
case_fn case_sctp_stream, case_sctp_seqpacket;
/* packet.c */
case_fn case_packet;
/* dns.c: dns_resolve runs before the case when --resolve is given */
case_fn case_serve_dns, dns_resolve;

#endif
