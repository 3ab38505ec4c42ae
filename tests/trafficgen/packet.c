/* packet.c: the packet case - AF_PACKET SOCK_DGRAM broadcast frames of one ethertype on one interface. */
#include "trafficgen.h"

#include <netpacket/packet.h>

/* ------------------------------------------------------------------ */
/* AF_PACKET                                                          */

void case_packet(struct opts *o, struct result *r)
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
