/* dns.c: DNS by hand - the --resolve stub resolver (one query over UDP or TCP, as statically linked
 * programs with their own resolver do) and serve-dns, a server for a fixed zone given on the
 * command line (A, AAAA and CNAME records). */
#include "trafficgen.h"
#include <ctype.h>

#define T_A 1
#define T_CNAME 5
#define T_AAAA 28
#define DNS_MAX 4096
#define ZONE_MAX 64

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }

/* Writes `name` (dotted, trailing dot optional) as DNS labels; returns the bytes written. */
static size_t put_name(uint8_t *p, size_t cap, const char *name)
{
    size_t n = 0;
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        if (l == 0 || l > 63 || n + l + 2 > cap)
            die("bad DNS name '%s'", name);
        p[n++] = (uint8_t)l;
        memcpy(p + n, name, l);
        n += l;
        name += l + (dot ? 1 : 0);
    }
    p[n++] = 0;
    return n;
}

/* Reads the name at *off (compression pointers allowed) as lower-case dotted text into out and
 * moves *off past it; returns 0, or -1 for a malformed name. */
static int read_name(const uint8_t *m, size_t len, size_t *off, char *out, size_t outlen)
{
    size_t o = *off, w = 0;
    int jumped = 0, hops = 0;
    for (;;) {
        if (o >= len || hops > 16)
            return -1;
        uint8_t l = m[o];
        if ((l & 0xc0) == 0xc0) {
            if (o + 1 >= len)
                return -1;
            if (!jumped)
                *off = o + 2;
            o = (size_t)((l & 0x3f) << 8 | m[o + 1]);
            jumped = 1;
            hops++;
            continue;
        }
        if (l == 0) {
            if (!jumped)
                *off = o + 1;
            break;
        }
        if (o + 1 + l > len || w + l + 2 > outlen)
            return -1;
        for (size_t i = 0; i < l; i++)
            out[w++] = (char)tolower(m[o + 1 + i]);
        out[w++] = '.';
        o += 1 + l;
    }
    if (w && out[w - 1] == '.')
        w--;
    out[w] = 0;
    return 0;
}

/* The first nameserver of /etc/resolv.conf. */
static const char *resolv_conf_server(void)
{
    static char buf[INET6_ADDRSTRLEN];
    char line[256];
    FILE *f = fopen("/etc/resolv.conf", "r");
    if (!f)
        die_sys("open /etc/resolv.conf");
    while (fgets(line, sizeof line, f))
        if (sscanf(line, " nameserver %45s", buf) == 1) {
            fclose(f);
            return buf;
        }
    fclose(f);
    die("no nameserver in /etc/resolv.conf");
}

static void read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = recv(fd, buf + got, n - got, 0);
        if (k <= 0)
            die_sys("DNS over TCP: short read");
        got += (size_t)k;
    }
}

/* Sends one query for o->resolve and points o->addr at the first address of the answer. */
void dns_resolve(struct opts *o, struct result *r)
{
    static char answer_addr[INET6_ADDRSTRLEN];
    const char *server = o->dns_server ? o->dns_server : resolv_conf_server();
    int qtype = o->qtype == 6 ? T_AAAA : T_A;
    uint8_t q[512], m[DNS_MAX + 2];
    uint16_t id = (uint16_t)(getpid() ^ time(NULL));
    memset(q, 0, 12);
    put16(q, id);
    q[2] = 0x01; /* recursion desired */
    put16(q + 4, 1);
    size_t n = 12 + put_name(q + 12, sizeof q - 16, o->resolve);
    put16(q + n, (uint16_t)qtype);
    put16(q + n + 2, 1);
    n += 4;

    struct addr a;
    parse_addr(server, 53, &a);
    int fd = socket(addr_family(&a), o->dns_tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (fd < 0)
        die_sys("DNS socket");
    set_timeouts(fd, 5000);
    if (connect(fd, (struct sockaddr *)&a.ss, a.len))
        die_sys("connect to DNS server %s", server);
    ssize_t len;
    if (o->dns_tcp) {
        uint8_t framed[sizeof q + 2];
        put16(framed, (uint16_t)n);
        memcpy(framed + 2, q, n);
        if (send(fd, framed, n + 2, 0) != (ssize_t)(n + 2))
            die_sys("DNS send");
        read_full(fd, m, 2);
        len = get16(m);
        if (len > DNS_MAX)
            die("DNS answer of %zd bytes is too long", len);
        read_full(fd, m, (size_t)len);
    } else {
        if (send(fd, q, n, 0) != (ssize_t)n)
            die_sys("DNS send");
        len = recv(fd, m, DNS_MAX, 0);
        if (len < 12)
            die_sys("DNS answer");
    }
    close(fd);
    if (get16(m) != id || !(m[2] & 0x80) || (m[3] & 0x0f))
        die("DNS answer for %s: wrong id, not a response, or error %d", o->resolve, m[3] & 0x0f);
    size_t off = 12;
    char name[256];
    for (int i = 0; i < get16(m + 4); i++) {
        if (read_name(m, (size_t)len, &off, name, sizeof name) || off + 4 > (size_t)len)
            die("malformed DNS question");
        off += 4;
    }
    for (int i = 0; i < get16(m + 6); i++) {
        if (read_name(m, (size_t)len, &off, name, sizeof name) || off + 10 > (size_t)len)
            die("malformed DNS answer");
        int type = get16(m + off);
        size_t rdlen = get16(m + off + 8);
        off += 10;
        if (off + rdlen > (size_t)len)
            die("malformed DNS answer");
        if (type == qtype && (rdlen == 4 || rdlen == 16)) {
            inet_ntop(rdlen == 4 ? AF_INET : AF_INET6, m + off, answer_addr, sizeof answer_addr);
            o->addr = answer_addr;
            result_extra(r, "\"resolved\":\"%s\",\"resolved_addr\":\"%s\",\"dns_server\":\"%s\","
                            "\"dns_transport\":\"%s\"",
                         o->resolve, answer_addr, server, o->dns_tcp ? "tcp" : "udp");
            return;
        }
        off += rdlen;
    }
    die("no %s record for %s", qtype == T_A ? "A" : "AAAA", o->resolve);
}

/* ---- serve-dns ---- */

struct zone_entry {
    char name[256];
    int type;        /* T_A, T_AAAA or T_CNAME */
    uint8_t data[16];
    char target[256];
};

/* --zone "name=1.2.3.4,name=::1,alias=@name": several entries may share a name. */
static int parse_zone(const char *spec, struct zone_entry *z)
{
    char *copy = strdup(spec), *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || n == ZONE_MAX)
            die("bad --zone entry '%s' (NAME=IPv4, NAME=IPv6 or NAME=@TARGET)", tok);
        *eq = 0;
        struct zone_entry *e = &z[n++];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", tok);
        for (char *c = e->name; *c; c++)
            *c = (char)tolower(*c);
        const char *v = eq + 1;
        if (v[0] == '@') {
            e->type = T_CNAME;
            snprintf(e->target, sizeof e->target, "%s", v + 1);
        } else if (inet_pton(AF_INET, v, e->data) == 1) {
            e->type = T_A;
        } else if (inet_pton(AF_INET6, v, e->data) == 1) {
            e->type = T_AAAA;
        } else {
            die("bad address in --zone entry '%s=%s'", tok, v);
        }
    }
    free(copy);
    return n;
}

static size_t put_rr(uint8_t *p, size_t cap, const struct zone_entry *e)
{
    uint8_t rd[256];
    size_t rdlen = e->type == T_A ? 4 : e->type == T_AAAA ? 16 : put_name(rd, sizeof rd, e->target);
    size_t n = put_name(p, cap, e->name);
    if (n + 10 + rdlen > cap)
        return 0;
    put16(p + n, (uint16_t)e->type);
    put16(p + n + 2, 1);
    p[n + 4] = 0, p[n + 5] = 0, p[n + 6] = 0x01, p[n + 7] = 0x2c; /* TTL 300 */
    put16(p + n + 8, (uint16_t)rdlen);
    memcpy(p + n + 10, e->type == T_CNAME ? rd : e->data, rdlen);
    return n + 10 + rdlen;
}

/* Builds the answer to query q (len bytes) into out; returns its length, 0 to stay silent. */
static size_t answer(const uint8_t *q, size_t len, const struct zone_entry *z, int nz, uint8_t *out)
{
    char name[256];
    size_t off = 12;
    if (len < 12 || (q[2] & 0x80) || get16(q + 4) != 1 || read_name(q, len, &off, name, sizeof name) ||
        off + 4 > len)
        return 0;
    int qtype = get16(q + off);
    off += 4;
    memcpy(out, q, off);
    out[2] = 0x84 | (q[2] & 0x01); /* response, authoritative, RD copied */
    out[3] = 0x80;                 /* recursion available */
    put16(out + 6, 0), put16(out + 8, 0), put16(out + 10, 0);
    size_t n = off;
    int answers = 0, known = 0;
    for (int hop = 0; hop < 8; hop++) {
        int cname = -1;
        for (int i = 0; i < nz; i++) {
            if (strcmp(z[i].name, name))
                continue;
            known = 1;
            if (z[i].type == T_CNAME)
                cname = i;
            else if (z[i].type != qtype)
                continue;
            size_t k = put_rr(out + n, DNS_MAX - n, &z[i]);
            if (!k)
                break;
            n += k;
            answers++;
        }
        if (cname < 0)
            break;
        snprintf(name, sizeof name, "%s", z[cname].target);
    }
    if (!known)
        out[3] |= 3; /* NXDOMAIN */
    put16(out + 6, (uint16_t)answers);
    return n;
}

void case_serve_dns(struct opts *o, struct result *r)
{
    struct zone_entry z[ZONE_MAX];
    if (!o->zone)
        die("serve-dns needs --zone");
    int nz = parse_zone(o->zone, z);
    struct addr a;
    parse_addr(o->addr, o->port < 0 ? 53 : o->port, &a);
    int ufd = server_socket(&a, SOCK_DGRAM, 0);
    int tfd = server_socket(&a, SOCK_STREAM, 0);
    announce("serve-dns", &a);
    uint8_t q[DNS_MAX + 2], out[DNS_MAX + 2];
    long long served = 0;
    while (o->count == 0 || served < o->count) {
        struct pollfd p[2] = { { .fd = ufd, .events = POLLIN }, { .fd = tfd, .events = POLLIN } };
        int k = poll(p, 2, g_timeout_ms > 0 ? (int)g_timeout_ms : -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("serve-dns: no query within %lld ms", g_timeout_ms);
        if (p[0].revents & POLLIN) {
            struct sockaddr_storage from;
            socklen_t fl = sizeof from;
            ssize_t len = recvfrom(ufd, q, DNS_MAX, 0, (struct sockaddr *)&from, &fl);
            size_t n = len > 0 ? answer(q, (size_t)len, z, nz, out) : 0;
            if (n && sendto(ufd, out, n, 0, (struct sockaddr *)&from, fl) == (ssize_t)n) {
                r->srv.received += (uint64_t)len, r->srv.sent += n;
                served++;
            }
        }
        if (p[1].revents & POLLIN) {
            int c = accept(tfd, NULL, NULL);
            if (c < 0)
                continue;
            set_timeouts(c, 5000);
            uint8_t hdr[2];
            if (recv(c, hdr, 2, MSG_WAITALL) == 2) {
                size_t len = get16(hdr);
                if (len <= DNS_MAX && recv(c, q, len, MSG_WAITALL) == (ssize_t)len) {
                    size_t n = answer(q, len, z, nz, out + 2);
                    put16(out, (uint16_t)n);
                    if (n && send(c, out, n + 2, 0) == (ssize_t)(n + 2)) {
                        r->srv.received += len + 2, r->srv.sent += n + 2;
                        served++;
                    }
                }
            }
            close(c);
        }
    }
    r->c = r->srv;
    result_extra(r, "\"served\":%lld", served);
}
