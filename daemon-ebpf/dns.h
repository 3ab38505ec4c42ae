/* dns.h: DNS answers for every resolver: a cgroup_skb/ingress program on the cgroup v2 root copies
 * each UDP datagram and TCP segment from source port 53 that reaches a local socket, with the
 * socket's network namespace, to a ring buffer the daemon parses. Any other packet costs a few
 * header loads. Three variants differ only in how the namespace is found; the daemon attaches the
 * first one this kernel's verifier accepts. */
#ifndef PICOSNITCH_DNS_H
#define PICOSNITCH_DNS_H

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define DNS_PORT 53
#define DNS_TCP 6
#define DNS_UDP 17

struct udp6_sock;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 19);
} dns_answers SEC(".maps");

enum dns_netns {
	NETNS_PROBE = 0, /* read from the socket with bpf_probe_read_kernel (kernels that allow it) */
	NETNS_BTF = 1,   /* TCP and IPv6 UDP sockets through their BTF pointers; IPv4 UDP: unknown */
	NETNS_NONE = 2,  /* not known: names are shared by every namespace */
};

static __always_inline __u32 dns_sock_netns(struct __sk_buff *skb, enum dns_netns how)
{
	struct bpf_sock *bsk = skb->sk;
	if (!bsk || how == NETNS_NONE)
		return 0;
	if (how == NETNS_PROBE) {
		/* The socket pointer as a plain number, which CO-RE reads may offset (the verifier
		 * forbids arithmetic on the context's socket pointer). */
		__u64 addr = 0;
		if (bpf_probe_read_kernel(&addr, sizeof(addr), &bsk))
			return 0;
		struct sock *sk = (struct sock *)addr;
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	struct sock *sk = (struct sock *)bpf_skc_to_tcp_sock(bsk);
	if (!sk)
		sk = (struct sock *)bpf_skc_to_udp6_sock(bsk);
	if (!sk)
		return 0;
	return sk->__sk_common.skc_net.net->ns.inum;
}

static __always_inline int dns_ingress(struct __sk_buff *skb, enum dns_netns how)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *ip = data;
	__u32 l4;
	__u8 proto;
	__u16 family;
	/* cgroup_skb programs see the packet from its network header. */
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if ((void *)(ip + 20) > end)
			return 1;
		proto = ip[9];
		l4 = (ip[0] & 0xf) * 4;
		family = AF_INET;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if ((void *)(ip + 40) > end)
			return 1;
		proto = ip[6];
		l4 = 40;
		family = AF_INET6;
	} else {
		return 1;
	}
	if (proto != DNS_UDP && proto != DNS_TCP)
		return 1;
	__u8 *th = data + l4;
	if ((void *)(th + 8) > end || th[0] != 0 || th[1] != DNS_PORT)
		return 1;
	__u32 hlen = 8, seq = 0;
	if (proto == DNS_TCP) {
		if ((void *)(th + 20) > end)
			return 1;
		hlen = (th[12] >> 4) * 4;
		seq = ((__u32)th[4] << 24) | ((__u32)th[5] << 16) | ((__u32)th[6] << 8) | th[7];
	}
	__u32 off = l4 + hlen;
	__u32 total = skb->len;
	if (total <= off)
		return 1; /* no payload: a TCP handshake or acknowledgement */
	__u32 len = total - off;

	struct dns_event *e = bpf_ringbuf_reserve(&dns_answers, sizeof(*e), 0);
	if (!e) {
		stat_add(STAT_DNS_RINGBUF_FULL, 1);
		return 1;
	}
	/* Bounds the verifier can see on the register passed, 1 <= cap <= DNS_CAPTURE, built by
	 * arithmetic that older verifiers follow too (they do not learn "!= 0" from a branch). The
	 * barrier keeps clang from reusing what it knows of `len`, whose upper half the verifier
	 * does not know. len >= 1 here. */
	__u64 cap = len - 1;
	asm volatile("" : "+r"(cap));
	cap &= 0xffffffff;
	if (cap > DNS_CAPTURE - 1)
		cap = DNS_CAPTURE - 1;
	cap += 1;
	if (bpf_skb_load_bytes(skb, off, e->data, cap)) {
		bpf_ringbuf_discard(e, 0);
		stat_add(STAT_DNS_UNREADABLE, 1);
		return 1;
	}
	e->netns = dns_sock_netns(skb, how);
	e->len = len;
	e->seq = seq;
	e->family = family;
	e->protocol = proto;
	e->sport = DNS_PORT;
	e->dport = ((__u16)th[2] << 8) | th[3];
	e->captured = cap;
	e->pad = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		__builtin_memcpy(e->saddr, ip + 12, 4);
		__builtin_memcpy(e->daddr, ip + 16, 4);
	} else {
		__builtin_memcpy(e->saddr, ip + 8, 16);
		__builtin_memcpy(e->daddr, ip + 24, 16);
	}
	/* The daemon reads answers before every drain of the totals: wake it only when the ring is
	 * half full, so a burst is not dropped. */
	__u64 avail = bpf_ringbuf_query(&dns_answers, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&dns_answers, BPF_RB_RING_SIZE);
	bpf_ringbuf_submit(e, avail * 2 > size ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	stat_add(STAT_DNS_PACKETS, 1);
	return 1;
}

/* Every variant lets every packet through (returns 1): picosnitch only watches. */
SEC("cgroup_skb/ingress")
int cg_dns_ingress(struct __sk_buff *skb)
{
	return dns_ingress(skb, NETNS_PROBE);
}

SEC("cgroup_skb/ingress")
int cg_dns_ingress_btf(struct __sk_buff *skb)
{
	return dns_ingress(skb, NETNS_BTF);
}

SEC("cgroup_skb/ingress")
int cg_dns_ingress_nons(struct __sk_buff *skb)
{
	return dns_ingress(skb, NETNS_NONE);
}

#endif
