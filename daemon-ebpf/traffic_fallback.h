/* traffic_fallback.h: traffic hooks for kernels without sock_*_length tracepoints (fexit, kprobe) and their splice() accounting. */
#ifndef PICOSNITCH_TRAFFIC_FALLBACK_H
#define PICOSNITCH_TRAFFIC_FALLBACK_H

/* ---- splice() from a socket: tcp_splice_read bypasses recvmsg, so count what the syscall moved. ---- */

#define S_IFMT 00170000
#define S_IFSOCK 0140000

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} splice_fd SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_splice")
int sys_enter_splice(struct sys_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 fd = ctx->args[0];
	bpf_map_update_elem(&splice_fd, &id, &fd, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_splice")
int sys_exit_splice(struct sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *fdp = bpf_map_lookup_elem(&splice_fd, &id);
	if (!fdp)
		return 0;
	__u64 fd = *fdp;
	bpf_map_delete_elem(&splice_fd, &id);
	if (ctx->ret <= 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	struct flow_key k = {};
	bool connected;
	if (!sk || !flow_key_of(sk, &k, &connected))
		return 0;
	stat_add(STAT_RECV_CALLS, 1);
	account(sk, &k, false, ctx->ret, 1);
	return 0;
}

/* ---- Hook sets "fexit" and "kprobe": inet/inet6 sendmsg/recvmsg (kernels without the
 * sock_*_length tracepoints). The kernel msghdr already holds the peer of an unconnected socket. ---- */

static __always_inline void on_msg(struct socket *sock, struct msghdr *msg, int ret, bool send)
{
	struct sock *sk = BPF_CORE_READ(sock, sk);
	struct flow_key k = {};
	bool connected;
	if (ret <= 0 || !sk || !flow_key_of(sk, &k, &connected))
		return;
	stat_add(send ? STAT_SEND_CALLS : STAT_RECV_CALLS, 1);
	if (!connected && !(msg && read_peer(BPF_CORE_READ(msg, msg_name), false, &k)) && !send) {
		/* Read without asking for the source: skb_consume_udp stashed it from the datagram. */
		__u32 zero = 0;
		struct peer_stash *p = bpf_map_lookup_elem(&recv_peer, &zero);
		if (p && p->thread == bpf_get_current_pid_tgid() && p->owner == (__u64)sk &&
		    p->len == (__u32)ret && p->family == k.family) {
			__builtin_memcpy(k.raddr, p->addr, 16);
			k.rport = p->port;
			p->thread = 0;
		}
	}
	account(sk, &k, send, ret, 1);
}

SEC("fexit/inet_sendmsg")
int BPF_PROG(fexit_inet_sendmsg, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	first_start(RUN_INET_SENDMSG);
	on_msg(sock, msg, ret, true);
	first_done(RUN_INET_SENDMSG);
	return 0;
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(fexit_inet6_sendmsg, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	first_start(RUN_INET6_SENDMSG);
	on_msg(sock, msg, ret, true);
	first_done(RUN_INET6_SENDMSG);
	return 0;
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(fexit_inet_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags,
	     int ret)
{
	first_start(RUN_INET_RECVMSG);
	if (!(flags & MSG_PEEK))
		on_msg(sock, msg, ret, false);
	first_done(RUN_INET_RECVMSG);
	return 0;
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(fexit_inet6_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags,
	     int ret)
{
	first_start(RUN_INET6_RECVMSG);
	if (!(flags & MSG_PEEK))
		on_msg(sock, msg, ret, false);
	first_done(RUN_INET6_RECVMSG);
	return 0;
}

/* sendfile() and splice() to a TCP socket on kernels < 6.5 go through sendpage, not sendmsg. */
SEC("fexit/inet_sendpage")
int BPF_PROG(fexit_inet_sendpage, struct socket *sock, void *page, int offset, __u64 size, int flags,
	     int ret)
{
	first_start(RUN_INET_SENDPAGE);
	on_msg(sock, 0, ret, true);
	first_done(RUN_INET_SENDPAGE);
	return 0;
}

/* kprobe pairs: arguments kept per thread from entry to return. */
struct msg_args {
	__u64 sock;
	__u64 msg;
	__u64 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct msg_args);
} kprobe_args SEC(".maps");

static __always_inline void kp_enter(void *sock, void *msg, __u64 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct msg_args a = {.sock = (__u64)sock, .msg = (__u64)msg, .flags = flags};
	bpf_map_update_elem(&kprobe_args, &id, &a, BPF_ANY);
}

static __always_inline void kp_return(int ret, bool send)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct msg_args *a = bpf_map_lookup_elem(&kprobe_args, &id);
	if (!a)
		return;
	struct msg_args c = *a;
	bpf_map_delete_elem(&kprobe_args, &id);
	if (!send && (c.flags & MSG_PEEK))
		return;
	on_msg((struct socket *)c.sock, (struct msghdr *)c.msg, ret, send);
}

SEC("kprobe/inet_sendmsg")
int BPF_KPROBE(kp_inet_sendmsg, struct socket *sock, struct msghdr *msg)
{
	kp_enter(sock, msg, 0);
	return 0;
}

SEC("kretprobe/inet_sendmsg")
int BPF_KRETPROBE(kr_inet_sendmsg, int ret)
{
	kp_return(ret, true);
	return 0;
}

SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(kp_skb_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	stash_datagram_source(sk, skb, len);
	return 0;
}

SEC("kprobe/inet_sendpage")
int BPF_KPROBE(kp_inet_sendpage, struct socket *sock)
{
	kp_enter(sock, 0, 0);
	return 0;
}

SEC("kretprobe/inet_sendpage")
int BPF_KRETPROBE(kr_inet_sendpage, int ret)
{
	kp_return(ret, true);
	return 0;
}

SEC("kprobe/inet6_sendmsg")
int BPF_KPROBE(kp_inet6_sendmsg, struct socket *sock, struct msghdr *msg)
{
	kp_enter(sock, msg, 0);
	return 0;
}

SEC("kretprobe/inet6_sendmsg")
int BPF_KRETPROBE(kr_inet6_sendmsg, int ret)
{
	kp_return(ret, true);
	return 0;
}

SEC("kprobe/inet_recvmsg")
int BPF_KPROBE(kp_inet_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags)
{
	kp_enter(sock, msg, flags);
	return 0;
}

SEC("kretprobe/inet_recvmsg")
int BPF_KRETPROBE(kr_inet_recvmsg, int ret)
{
	kp_return(ret, false);
	return 0;
}

SEC("kprobe/inet6_recvmsg")
int BPF_KPROBE(kp_inet6_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags)
{
	kp_enter(sock, msg, flags);
	return 0;
}

SEC("kretprobe/inet6_recvmsg")
int BPF_KRETPROBE(kr_inet6_recvmsg, int ret)
{
	kp_return(ret, false);
	return 0;
}

#endif
