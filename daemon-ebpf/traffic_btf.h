/* traffic_btf.h: the fast traffic hooks for kernels >= 6.3: sock_send_length/sock_recv_length
 * with plain BTF loads, peers of unconnected sockets, and splice() receive. No syscall
 * tracepoint is used: one would slow every system call of every process. */
#ifndef PICOSNITCH_TRAFFIC_BTF_H
#define PICOSNITCH_TRAFFIC_BTF_H

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_SCTP 132

/* The peer of the datagram a thread is sending or has just copied to user space, kept from the
 * hook that sees it to the sock_*_length hook that counts its bytes, in the same system call. A
 * per-CPU slot costs no lock; the thread and socket it names are checked when it is taken (a
 * thread that migrated in between finds someone else's slot and takes nothing). */
struct peer_stash {
	__u64 thread;  /* pid_tgid */
	__u64 owner;   /* send: socket cookie; receive: socket address or cookie */
	__u32 len;     /* receive: bytes copied */
	__u16 family;
	__u16 port;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct peer_stash);
} send_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct peer_stash);
} recv_peer SEC(".maps");

/* Key of a socket from plain loads on its BTF pointer; `connected` when the peer is in it. */
static __always_inline bool btf_key(struct sock *sk, struct flow_key *k, bool *connected)
{
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6 && family != AF_PACKET)
		return false;
	struct socket *so = sk->sk_socket;
	if (!so)
		return false;
	k->family = family;
	k->tgid = bpf_get_current_pid_tgid() >> 32;
	k->sock_ino = so->file->f_inode->i_ino;
	if (family == AF_PACKET) {
		*connected = true;
		return true;
	}
	__u16 dport = bpf_ntohs(sk->__sk_common.skc_dport);
	k->rport = dport;
	if (family == AF_INET) {
		__be32 d = sk->__sk_common.skc_daddr;
		__builtin_memcpy(k->raddr, &d, 4);
		*connected = d != 0 || dport != 0;
		return true;
	}
	__u32 a0 = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
	__u32 a1 = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
	__u32 a2 = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
	__u32 a3 = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
	__builtin_memcpy(k->raddr, &a0, 4);
	__builtin_memcpy(k->raddr + 4, &a1, 4);
	__builtin_memcpy(k->raddr + 8, &a2, 4);
	__builtin_memcpy(k->raddr + 12, &a3, 4);
	*connected = (a0 | a1 | a2 | a3) != 0 || dport != 0;
	return true;
}

/* Takes the peer this thread stashed for this send (socket named by its cookie). */
static __always_inline bool take_send_peer(struct sock *sk, struct flow_key *k)
{
	__u32 zero = 0;
	struct peer_stash *p = bpf_map_lookup_elem(&send_peer, &zero);
	if (!p || p->thread != bpf_get_current_pid_tgid() || p->owner != bpf_get_socket_cookie(sk))
		return false;
	__builtin_memcpy(k->raddr, p->addr, 16);
	k->rport = p->port;
	p->thread = 0;
	return true;
}

/* Takes the source this thread stashed for the datagram of `len` bytes it received on `sk`. */
static __always_inline bool take_recv_peer(struct sock *sk, __u32 len, struct flow_key *k)
{
	__u32 zero = 0;
	struct peer_stash *p = bpf_map_lookup_elem(&recv_peer, &zero);
	if (!p || p->thread != bpf_get_current_pid_tgid() || (p->len != 0 && p->len != len) ||
	    p->family != k->family)
		return false;
	if (p->owner != (__u64)sk && p->owner != bpf_get_socket_cookie(sk))
		return false;
	__builtin_memcpy(k->raddr, p->addr, 16);
	k->rport = p->port;
	p->thread = 0;
	return true;
}

/* The destination of sendto()/sendmsg() on an unconnected socket, from the syscall's arguments. */
static __always_inline void peer_of_send_syscall(struct flow_key *k)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = SYSCALL_NR(regs);
	void *name = 0;
	if (nr == NR_SENDTO) {
		name = (void *)PT_REGS_PARM5_SYSCALL(regs);
	} else if (nr == NR_SENDMSG) {
		struct user_msghdr *m = (void *)PT_REGS_PARM2_SYSCALL(regs);
		bpf_probe_read_user(&name, sizeof(name), &m->msg_name);
	}
	read_peer(name, true, k);
}

/* The TCP bytes the socket's readers have consumed since it was created; 0 if not TCP. */
static __always_inline __u64 tcp_consumed(struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	return tp->bytes_received - (__u32)(tp->rcv_nxt - tp->copied_seq);
}

static __always_inline void send_length(struct sock *sk, int ret)
{
	struct flow_key k = {};
	bool connected;
	if (ret <= 0 || !btf_key(sk, &k, &connected))
		return;
	if (!connected && !take_send_peer(sk, &k))
		peer_of_send_syscall(&k);
	account(sk, &k, true, ret, 1);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	first_start(RUN_SEND_LENGTH);
	send_length(sk, ret);
	first_done(RUN_SEND_LENGTH);
	return 0;
}

static __always_inline void recv_length(struct sock *sk, int ret, int flags)
{
	struct flow_key k = {};
	bool connected;
	if (ret <= 0 || (flags & MSG_PEEK) || !btf_key(sk, &k, &connected))
		return;
	if (!connected)
		take_recv_peer(sk, ret, &k);
	struct flow_val *v = account(sk, &k, false, ret, 1);
	if (v && k.family != AF_PACKET && sk->sk_protocol == IPPROTO_TCP)
		v->tcp_consumed = tcp_consumed(sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	first_start(RUN_RECV_LENGTH);
	recv_length(sk, ret, flags);
	first_done(RUN_RECV_LENGTH);
	return 0;
}

/* The source of a UDP datagram udp_recvmsg() has just copied (`len` bytes) to the reader, read
 * from its IP and UDP headers and stashed for the count that follows in the same system call: so
 * reads that never ask for the source (recv(), recvfrom(fd, buf, len, 0, NULL, NULL), read())
 * get it too. An IPv4 source on an IPv6 socket is shown v4-mapped, as the kernel shows it. */
static __always_inline void stash_datagram_source(struct sock *sk, struct sk_buff *skb, int len)
{
	__u8 ip[24];
	__u8 udp[2];
	if (len <= 0)
		return;
	unsigned char *head = BPF_CORE_READ(skb, head);
	if (bpf_probe_read_kernel(ip, sizeof(ip), head + BPF_CORE_READ(skb, network_header)) ||
	    bpf_probe_read_kernel(udp, sizeof(udp), head + BPF_CORE_READ(skb, transport_header)))
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u8 version = ip[0] >> 4;
	__u32 zero = 0;
	struct peer_stash *p = bpf_map_lookup_elem(&recv_peer, &zero);
	if (!p)
		return;
	__builtin_memset(p->addr, 0, sizeof(p->addr));
	if (version == 4 && family == AF_INET) {
		__builtin_memcpy(p->addr, ip + 12, 4);
	} else if (version == 4 && family == AF_INET6) {
		p->addr[10] = 0xff;
		p->addr[11] = 0xff;
		__builtin_memcpy(p->addr + 12, ip + 12, 4);
	} else if (version == 6 && family == AF_INET6) {
		__builtin_memcpy(p->addr, ip + 8, 16);
	} else {
		p->thread = 0;
		return;
	}
	p->family = family;
	p->port = ((__u16)udp[0] << 8) | udp[1];
	p->len = len;
	p->owner = (__u64)sk;
	p->thread = bpf_get_current_pid_tgid();
}

/* skb_consume_udp(sk, skb, len): called by udp_recvmsg()/udpv6_recvmsg() for every datagram
 * read, after the copy and before the count. Attached where trampolines work. */
SEC("fentry/skb_consume_udp")
int BPF_PROG(fentry_skb_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	first_start(RUN_CONSUME_UDP);
	stash_datagram_source(sk, skb, len);
	first_done(RUN_CONSUME_UDP);
	return 0;
}

/* ICMP, raw and SCTP (one-to-many) datagrams copied to user space pass here before
 * sock_recv_length counts them: keep the source for the count. TCP is left at once; UDP copies most datagrams without passing here,
 * so UDP sources come from skb_consume_udp above and the cgroup recvmsg hooks below. */
static __always_inline void copy_datagram(const struct sk_buff *skb, int len)
{
	struct sock *sk = skb->sk;
	if (!sk || sk->sk_protocol == IPPROTO_TCP || sk->sk_protocol == IPPROTO_UDP)
		return;
	__u16 family = sk->__sk_common.skc_family;
	if ((family != AF_INET && family != AF_INET6) || sk->__sk_common.skc_dport != 0)
		return;
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header;
	__u8 ip[40];
	if (bpf_probe_read_kernel(ip, sizeof(ip), head + nh))
		return;
	__u32 zero = 0;
	struct peer_stash *p = bpf_map_lookup_elem(&recv_peer, &zero);
	if (!p)
		return;
	__u8 version = ip[0] >> 4;
	__builtin_memset(p->addr, 0, sizeof(p->addr));
	if (version == 4) {
		/* On a dual-stack socket an IPv4 source is shown v4-mapped; both forms are kept
		 * apart by family when taken. */
		if (family == AF_INET6) {
			p->addr[10] = 0xff;
			p->addr[11] = 0xff;
			__builtin_memcpy(p->addr + 12, ip + 12, 4);
		} else {
			__builtin_memcpy(p->addr, ip + 12, 4);
			family = AF_INET;
		}
	} else if (version == 6) {
		__builtin_memcpy(p->addr, ip + 8, 16);
		family = AF_INET6;
	} else {
		return;
	}
	p->port = 0;
	/* SCTP: the source port is the first field of the common header. */
	__u8 sport[2];
	if (sk->sk_protocol == IPPROTO_SCTP &&
	    !bpf_probe_read_kernel(sport, sizeof(sport), head + skb->transport_header))
		p->port = ((__u16)sport[0] << 8) | sport[1];
	p->family = family;
	p->len = len;
	p->owner = (__u64)sk;
	p->thread = bpf_get_current_pid_tgid();
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(tp_skb_copy_datagram_iovec, const struct sk_buff *skb, int len)
{
	first_start(RUN_COPY_DATAGRAM);
	copy_datagram(skb, len);
	first_done(RUN_COPY_DATAGRAM);
	return 0;
}

/* The peer of every UDP datagram sent or received on an unconnected socket (sendmmsg() and
 * recvmmsg() included): the address the program gave, or will be given. */
static __always_inline int stash_udp(void *map, struct bpf_sock_addr *ctx, bool v6)
{
	__u32 zero = 0;
	struct peer_stash *p = bpf_map_lookup_elem(map, &zero);
	if (!p)
		return 1;
	if (v6) {
		p->family = AF_INET6;
		__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
		__builtin_memcpy(p->addr, a, 16);
	} else {
		p->family = AF_INET;
		__builtin_memset(p->addr, 0, sizeof(p->addr));
		__u32 a = ctx->user_ip4;
		__builtin_memcpy(p->addr, &a, 4);
	}
	p->port = bpf_ntohs((__u16)ctx->user_port);
	p->len = 0;
	p->owner = bpf_get_socket_cookie(ctx);
	p->thread = bpf_get_current_pid_tgid();
	return 1; /* never refuse the datagram */
}

SEC("cgroup/sendmsg4")
int cg_sendmsg4(struct bpf_sock_addr *ctx)
{
	return stash_udp(&send_peer, ctx, false);
}

SEC("cgroup/sendmsg6")
int cg_sendmsg6(struct bpf_sock_addr *ctx)
{
	return stash_udp(&send_peer, ctx, true);
}

SEC("cgroup/recvmsg4")
int cg_recvmsg4(struct bpf_sock_addr *ctx)
{
	return stash_udp(&recv_peer, ctx, false);
}

SEC("cgroup/recvmsg6")
int cg_recvmsg6(struct bpf_sock_addr *ctx)
{
	return stash_udp(&recv_peer, ctx, true);
}

/* splice() and sendfile() from a TCP socket read through tcp_read_sock, not recvmsg: count what
 * its readers consumed since the last count of this process. */
static __always_inline void rcv_space_adjust(struct sock *sk)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = SYSCALL_NR(regs);
	if (nr != NR_SPLICE && nr != NR_SENDFILE)
		return;
	struct flow_key k = {};
	bool connected;
	if (!btf_key(sk, &k, &connected))
		return;
	__u64 now = tcp_consumed(sk);
	/* A FIN takes one sequence number: once the reader has passed it, it is not payload. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u8 shutdown = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown);
	__u64 fin = tp && (shutdown & 1) && tp->copied_seq == tp->rcv_nxt ? 1 : 0;
	struct flow_val *v = bpf_map_lookup_elem(&totals, &k);
	__u64 before = v ? v->tcp_consumed : 0;
	if (now <= before + fin)
		return;
	v = account(sk, &k, false, now - before - fin, 1);
	if (v)
		v->tcp_consumed = now;
}

SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(tp_tcp_rcv_space_adjust, struct sock *sk)
{
	first_start(RUN_RCV_SPACE);
	rcv_space_adjust(sk);
	first_done(RUN_RCV_SPACE);
	return 0;
}

#endif
