/* icmp_raw.c: the ICMP and raw IP cases - icmp-ping (ping socket), icmp-raw (SOCK_RAW ICMP), raw-proto (SOCK_RAW IP protocol). */
#include "trafficgen.h"

#include <linux/filter.h>
#include <netinet/icmp6.h>
#include <netinet/ip_icmp.h>

/* from <linux/icmp.h>, which clashes with the glibc network headers */
#ifndef ICMP_FILTER
#define ICMP_FILTER 1
struct icmp_filter { uint32_t data; };
#endif

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

void case_icmp_ping(struct opts *o, struct result *r)
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

void case_icmp_raw(struct opts *o, struct result *r)
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
/* raw IP protocol                                                    */

/* the socket never receives anything */
static void attach_drop_all(int fd)
{
    struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
    struct sock_fprog prog = { .len = 1, .filter = code };
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
        die_sys("setsockopt(SO_ATTACH_FILTER)");
}

void case_raw_proto(struct opts *o, struct result *r)
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
