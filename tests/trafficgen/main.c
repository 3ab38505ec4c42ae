/* main.c: trafficgen entry point - the case table, command-line options and parsing, and the JSON result line. */
/*
 * trafficgen: picosnitch test traffic generator - moves exact, known numbers
 * of payload bytes through many kinds of sockets (TCP, UDP, ICMP, raw,
 * AF_PACKET, sendfile, splice, io_uring) and reports the byte counts as one
 * JSON line.
 *
 * Build:  gcc -O2 -static -Wall -Werror -o trafficgen *.c
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
#include "trafficgen.h"
#include <sys/prctl.h>

#define MAX_DGRAM 65507

/* ------------------------------------------------------------------ */
/* options                                                            */

const char *const io_names[] = { "send", "rw", "msg", "vec" };

enum io_mode g_io = IO_SEND;
int g_verify = 1;    /* check received payload against the pattern */
long long g_timeout_ms = 30000;

/* ------------------------------------------------------------------ */
/* result / JSON                                                      */

static void result_init(struct result *r)
{
    memset(r, 0, sizeof *r);
    r->client_pid = getpid();
    r->lport = r->rport = -1;
}

__attribute__((format(printf, 2, 3)))
void result_extra(struct result *r, const char *fmt, ...)
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

/* first line of serve-tcp / serve-udp: where the standalone server listens */
void announce(const char *case_name, const struct addr *a)
{
    char host[128];
    sa_str(&a->ss, host, sizeof host);
    printf("{\"case\":\"%s\",\"listening\":true,\"server_pid\":%d,\"addr\":\"%s\",\"port\":%d}\n",
           case_name, (int)getpid(), host, sa_port(&a->ss));
    fflush(stdout);
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
    { "udp-nosrc", case_udp_nosrc, -1, 100, 1000, "sendto, then recv()/recvfrom(NULL) in turn: --count datagrams of --size, echoed" },
    { "udp-mmsg", case_udp_mmsg, -1, 100, 1000, "sendmmsg/recvmmsg batches of 8, --count datagrams of --size, echoed" },
    { "icmp-ping", case_icmp_ping, -1, 10, 56, "ICMP ping socket, --count echo requests with --size payload" },
    { "icmp-raw", case_icmp_raw, -1, 10, 56, "raw ICMP socket, --count echo requests with --size payload" },
    { "raw-proto", case_raw_proto, -1, 10, 500, "raw IP protocol --proto (253): send --count packets of --size, receive on a 2nd raw socket" },
    { "packet", case_packet, -1, 10, 200, "AF_PACKET SOCK_DGRAM on --ifname, ethertype --ethertype: --count frames of --size" },
    { "sctp-stream", case_sctp_stream, -1, 100, 1000, "SCTP one-to-one socket: connect()+send/recv --count messages of --size, echoed" },
    { "sctp-seqpacket", case_sctp_seqpacket, -1, 100, 1000, "SCTP one-to-many socket: sendto/recvfrom --count messages of --size, echoed" },
    { "sendfile", case_sendfile, 1000000, -1, -1, "client sendfile()s a --bytes temp file, server reads all" },
    { "splice-recv", case_splice_recv, 1000000, -1, -1, "server sends --bytes, client splice()s socket->pipe->/dev/null" },
    { "uring", case_uring, 1000000, -1, -1, "io_uring IORING_OP_SEND/RECV --bytes each way, server echoes" },
    { "short-conns", case_short_conns, 100, 500, -1, "--count sequential connections, each --bytes up and --bytes echoed back" },
    { "drip", case_drip, 10, 60, -1, "one connection, --bytes every --interval-ms, --count times, echoed" },
    { "storm", case_storm, 1234, 200, -1, "--count exec()ed children each send --bytes to the parent's server" },
    { "one-shot", case_one_shot, 1234, -1, -1, NULL /* hidden: storm child */ },
    { "serve-tcp", case_serve_tcp, 1000000, 1, -1, "TCP server only: --mode echo|sink|source|duplex, --count connections (0: forever)" },
    { "serve-udp", case_serve_udp, -1, 100, 1000, "UDP server only: --mode echo|sink|source, --count datagrams" },
    { "serve-dns", case_serve_dns, -1, 0, -1, "DNS server only (UDP+TCP, port 53): --zone records, --count queries (0: forever)" },
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
            "  --mode M           serve-tcp / serve-udp mode (echo)\n"
            "  --rename NAME      prctl(PR_SET_NAME) before running\n"
            "  --resolve NAME     first look NAME up with a DNS query made by hand (as static\n"
            "                     programs do) and use its first address as --addr\n"
            "  --qtype A|AAAA     record type --resolve asks for (A)\n"
            "  --dns ADDR         DNS server for --resolve (first nameserver of /etc/resolv.conf)\n"
            "  --dns-tcp          --resolve asks over TCP\n"
            "  --zone SPEC        serve-dns records: NAME=IPv4,NAME=IPv6,ALIAS=@TARGET,...\n");
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
        if (!strcmp(a, "--dns-tcp")) { o->dns_tcp = 1; continue; }
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
        else if (!strcmp(a, "--rename")) o->rename = v;
        else if (!strcmp(a, "--resolve")) o->resolve = v;
        else if (!strcmp(a, "--dns")) o->dns_server = v;
        else if (!strcmp(a, "--zone")) o->zone = v;
        else if (!strcmp(a, "--qtype")) {
            if (strcasecmp(v, "A") && strcasecmp(v, "AAAA"))
                die("bad --qtype '%s' (A|AAAA)", v);
            o->qtype = strcasecmp(v, "A") ? 6 : 4;
        }
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
    if (o.rename && prctl(PR_SET_NAME, o.rename, 0, 0, 0))
        die("prctl(PR_SET_NAME): %s", strerror(errno));
    result_init(&r);
    if (o.resolve)
        dns_resolve(&o, &r);
    cd->run(&o, &r);
    if (!o.quiet)
        print_result(cd->name, &r);
    return 0;
}
