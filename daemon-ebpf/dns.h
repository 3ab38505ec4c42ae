/* dns.h: DNS answers for every resolver, and only answers to questions that were asked:
 * cgroup_skb programs on the cgroup v2 root see every socket. The egress program records each UDP
 * datagram and TCP segment a local socket sends to port 53 (a query) in `dns_queries`, keyed by
 * (network namespace, local port, transaction id, server), and copies it to the ring buffer; the
 * ingress program copies a datagram or segment from source port 53 only when it answers a
 * recorded query (UDP: once), and counts the rest (STAT_DNS_UNSOLICITED). The daemon then checks
 * the question. Any other packet costs a few header loads. Three variants differ only in how the
 * namespace is found; the daemon attaches the first pair this kernel's verifier accepts. */
#ifndef PICOSNITCH_DNS_H
#define PICOSNITCH_DNS_H

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define DNS_PORT 53
#define DNS_TCP 6
#define DNS_UDP 17

/* Queries waiting for their answer; the least recently used goes first. */
#define DNS_PENDING 16384
/* An answer later than this after its query is refused (resolvers give up long before). */
#define DNS_QUERY_TTL_NS (30ULL * 1000000000ULL)

struct udp6_sock;

struct dns_query_key {
	__u32 netns;
	__u16 lport;  /* the local socket's port, host byte order */
	__u16 txid;   /* UDP: the DNS transaction id; TCP: 0 (the daemon reads ids in the stream) */
	__u8 protocol;
	__u8 family;
	__u16 pad;
	__u8 server[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DNS_PENDING);
	__type(key, struct dns_query_key);
	__type(value, __u64); /* bpf_ktime_get_ns() of the last query */
} dns_queries SEC(".maps");

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

/* Records a query that leaves (`query`) or checks that an answer answers one; false when the
 * packet is not to be copied. `server` points at the server's address in the packet. */
/* 127.0.0.11, where Docker's embedded resolver answers containers. */
static __always_inline bool dns_docker(const __u8 *a)
{
	return a[0] == 127 && a[1] == 0 && a[2] == 0 && a[3] == 11;
}

static __always_inline bool dns_match(struct __sk_buff *skb, bool query, __u32 netns, __u8 proto,
				      __u16 family, __u16 lport, __u8 *server, __u32 off, __u32 len)
{
	struct dns_query_key k = {};
	k.netns = netns;
	k.lport = lport;
	k.protocol = proto;
	k.family = family;
	if (family == AF_INET)
		__builtin_memcpy(k.server, server, 4);
	else
		__builtin_memcpy(k.server, server, 16);
	if (proto == DNS_UDP) {
		__u8 hdr[4];
		if (len < 12 || bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr))) {
			if (!query)
				stat_add(STAT_DNS_UNSOLICITED, 1);
			return false;
		}
		/* QR is set in answers and clear in queries: a query to a local server from port 53
		 * is not an answer, an answer from port 53 to port 53 is not a query. */
		if (!(hdr[2] & 0x80) != query)
			return false;
		k.txid = ((__u16)hdr[0] << 8) | hdr[1];
	}
	__u64 now = bpf_ktime_get_ns();
	if (query) {
		bpf_map_update_elem(&dns_queries, &k, &now, BPF_ANY);
		return true;
	}
	__u64 *at = bpf_map_lookup_elem(&dns_queries, &k);
	if (!at || now - *at > DNS_QUERY_TTL_NS) {
		stat_add(STAT_DNS_UNSOLICITED, 1);
		return false;
	}
	/* A datagram answers once; a TCP connection carries answers while it lives. */
	if (proto == DNS_UDP)
		bpf_map_delete_elem(&dns_queries, &k);
	return true;
}

static __always_inline int dns_packet(struct __sk_buff *skb, enum dns_netns how, bool query)
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
	if ((void *)(th + 8) > end)
		return 1;
	/* An answer comes from port 53; a query goes to it, or to Docker's embedded resolver, which
	 * a DNAT in the container's namespace has already moved to another port here (its answers
	 * reach the socket from port 53 again). */
	if (query ? (th[2] != 0 || th[3] != DNS_PORT) && !(family == AF_INET && dns_docker(ip + 16))
		  : (th[0] != 0 || th[1] != DNS_PORT))
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
	__u16 sport = ((__u16)th[0] << 8) | th[1];
	__u16 dport = ((__u16)th[2] << 8) | th[3];
	__u32 netns = dns_sock_netns(skb, how);
	/* The server is the destination of a query and the source of an answer. */
	__u8 *server = family == AF_INET ? ip + (query ? 16 : 12) : ip + (query ? 24 : 8);
	if (!dns_match(skb, query, netns, proto, family, query ? sport : dport, server, off, len))
		return 1;

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
	e->netns = netns;
	e->len = len;
	e->seq = seq;
	e->family = family;
	e->protocol = proto;
	e->sport = sport;
	e->dport = dport;
	e->captured = cap;
	e->kind = query ? DNS_QUERY : DNS_ANSWER;
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
	stat_add(query ? STAT_DNS_QUERIES : STAT_DNS_PACKETS, 1);
	return 1;
}

/* Every variant lets every packet through (returns 1): picosnitch only watches. */
SEC("cgroup_skb/ingress")
int cg_dns_ingress(struct __sk_buff *skb)
{
	return dns_packet(skb, NETNS_PROBE, false);
}

SEC("cgroup_skb/egress")
int cg_dns_egress(struct __sk_buff *skb)
{
	return dns_packet(skb, NETNS_PROBE, true);
}

SEC("cgroup_skb/ingress")
int cg_dns_ingress_btf(struct __sk_buff *skb)
{
	return dns_packet(skb, NETNS_BTF, false);
}

SEC("cgroup_skb/egress")
int cg_dns_egress_btf(struct __sk_buff *skb)
{
	return dns_packet(skb, NETNS_BTF, true);
}

SEC("cgroup_skb/ingress")
int cg_dns_ingress_nons(struct __sk_buff *skb)
{
	return dns_packet(skb, NETNS_NONE, false);
}

SEC("cgroup_skb/egress")
int cg_dns_egress_nons(struct __sk_buff *skb)
{
	return dns_packet(skb, NETNS_NONE, true);
}

#endif
