/* picosnitch.bpf.c: kernel side; counts socket payload bytes per (process, socket, peer) and reports process lifetimes. */
#include "core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "records.h"

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define MSG_PEEK 2
#define EEXIST 17

/* x86_64 syscall numbers used to find the peer of an unconnected socket. */
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_RECVMMSG 299
#define NR_SENDMMSG 307

/* Upper bound of messages of one recvmmsg() whose peers are read one by one. */
#define MMSG_PEERS 64

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Bytes received on an unconnected socket, held until the syscall returns and the peer
 * address is in user memory. */
struct pending_recv {
	__u64 sk;
	__u64 bytes;
	__u64 events;
	__u64 nr;
	__u64 arg; /* recvfrom: src_addr; recvmsg: msghdr; recvmmsg: msgvec */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending_recv);
} pending SEC(".maps");

/* Position inside the vector of a running sendmmsg(). */
struct mmsg_pos {
	__u64 vec;
	__u64 idx;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct mmsg_pos);
} sendmmsg_pos SEC(".maps");

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

static __always_inline void task_exe(struct task_struct *t, __u64 *ino, __u32 *dev)
{
	struct file *f = BPF_CORE_READ(t, mm, exe_file);
	if (!f)
		return;
	*ino = BPF_CORE_READ(f, f_inode, i_ino);
	*dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
}

/* Fills the remote end from the socket; returns true when the socket is connected. */
static __always_inline bool sock_peer(struct sock *sk, __u16 family, struct flow_key *k)
{
	__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	k->rport = dport;
	if (family == AF_INET) {
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(k->raddr, &d, 4);
		return d != 0 || dport != 0;
	}
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&k->raddr, sk, __sk_common.skc_v6_daddr);
		__u64 a, b;
		__builtin_memcpy(&a, k->raddr, 8);
		__builtin_memcpy(&b, k->raddr + 8, 8);
		return a != 0 || b != 0 || dport != 0;
	}
	return false;
}

/* Copies a sockaddr_in/sockaddr_in6 that is already in kernel (user == false) or user memory. */
static __always_inline bool read_peer(const void *addr, bool user, struct flow_key *k)
{
	struct sockaddr_in6_abi sa = {};
	long err;
	if (!addr)
		return false;
	err = user ? bpf_probe_read_user(&sa, sizeof(struct sockaddr_in_abi), addr)
		   : bpf_probe_read_kernel(&sa, sizeof(struct sockaddr_in_abi), addr);
	if (err)
		goto unreadable;
	if (sa.family == AF_INET) {
		struct sockaddr_in_abi *s4 = (void *)&sa;
		__builtin_memcpy(k->raddr, &s4->addr, 4);
		k->rport = bpf_ntohs(s4->port);
		return true;
	}
	if (sa.family == AF_INET6) {
		err = user ? bpf_probe_read_user(&sa, sizeof(sa), addr)
			   : bpf_probe_read_kernel(&sa, sizeof(sa), addr);
		if (err)
			goto unreadable;
		__builtin_memcpy(k->raddr, sa.addr, 16);
		k->rport = bpf_ntohs(sa.port);
		return true;
	}
	return false;
unreadable:
	stat_add(STAT_PEER_UNREADABLE, 1);
	return false;
}

static __always_inline void fill_meta(struct sock *sk, struct flow_key *k, struct flow_val *v)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct *parent = BPF_CORE_READ(leader, real_parent);
	struct task_struct *gparent = BPF_CORE_READ(parent, group_leader, real_parent);

	v->start_ns = BPF_CORE_READ(leader, start_boottime);
	task_exe(task, &v->exe_ino, &v->exe_dev);
	if (parent) {
		v->ppid = BPF_CORE_READ(parent, tgid);
		task_exe(parent, &v->pexe_ino, &v->pexe_dev);
	}
	if (gparent) {
		v->gppid = BPF_CORE_READ(gparent, tgid);
		task_exe(gparent, &v->gpexe_ino, &v->gpexe_dev);
	}
	v->uid = (__u32)bpf_get_current_uid_gid();
	v->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	v->protocol = BPF_CORE_READ(sk, sk_protocol);
	v->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (k->family == AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(v->laddr, &s, 4);
	} else if (k->family == AF_INET6) {
		BPF_CORE_READ_INTO(&v->laddr, sk, __sk_common.skc_v6_rcv_saddr);
	} else if (k->family == AF_PACKET) {
		v->protocol = bpf_ntohs(v->protocol);
		v->lport = 0;
	}
	BPF_CORE_READ_INTO(&v->comm, leader, comm);
}

static __always_inline void account(struct sock *sk, struct flow_key *k, bool send, __u64 bytes,
				    __u64 events)
{
	struct flow_val *v = bpf_map_lookup_elem(&totals, k);
	if (!v) {
		struct flow_val nv = {};
		fill_meta(sk, k, &nv);
		long err = bpf_map_update_elem(&totals, k, &nv, BPF_NOEXIST);
		if (err && err != -EEXIST) {
			stat_add(STAT_TOTALS_MAP_FULL, 1);
			return;
		}
		v = bpf_map_lookup_elem(&totals, k);
		if (!v)
			return;
	}
	if (send) {
		__sync_fetch_and_add(&v->send_bytes, bytes);
		__sync_fetch_and_add(&v->send_events, events);
	} else {
		__sync_fetch_and_add(&v->recv_bytes, bytes);
		__sync_fetch_and_add(&v->recv_events, events);
	}
}

/* Builds the key of a socket; returns false for families that are not network traffic. */
static __always_inline bool flow_key_of(struct sock *sk, struct flow_key *k, bool *connected)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6 && family != AF_PACKET)
		return false;
	k->family = family;
	k->tgid = bpf_get_current_pid_tgid() >> 32;
	k->sock_ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	*connected = family == AF_PACKET || sock_peer(sk, family, k);
	return true;
}

/* ---- Hook set "tp_btf": sock_send_length / sock_recv_length (kernel >= 6.3). ---- */

static __always_inline void peer_of_send_syscall(struct flow_key *k)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = BPF_CORE_READ(regs, orig_ax);
	void *name = 0;
	if (nr == NR_SENDTO) {
		name = (void *)BPF_CORE_READ(regs, r8);
	} else if (nr == NR_SENDMSG) {
		struct user_msghdr *m = (void *)BPF_CORE_READ(regs, si);
		bpf_probe_read_user(&name, sizeof(name), &m->msg_name);
	} else if (nr == NR_SENDMMSG) {
		__u64 id = bpf_get_current_pid_tgid();
		struct mmsg_pos *pos = bpf_map_lookup_elem(&sendmmsg_pos, &id);
		if (!pos)
			return;
		struct mmsghdr *vec = (void *)pos->vec;
		bpf_probe_read_user(&name, sizeof(name), &vec[pos->idx & 0xffff].msg_hdr.msg_name);
		pos->idx++;
	}
	read_peer(name, true, k);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	struct flow_key k = {};
	bool connected;
	if (ret <= 0 || !flow_key_of(sk, &k, &connected))
		return 0;
	stat_add(STAT_SEND_CALLS, 1);
	if (!connected)
		peer_of_send_syscall(&k);
	account(sk, &k, true, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	struct flow_key k = {};
	bool connected;
	if (ret <= 0 || (flags & MSG_PEEK) || !flow_key_of(sk, &k, &connected))
		return 0;
	stat_add(STAT_RECV_CALLS, 1);
	if (!connected) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
		long nr = BPF_CORE_READ(regs, orig_ax);
		if (nr == NR_RECVFROM || nr == NR_RECVMSG || nr == NR_RECVMMSG) {
			__u64 id = bpf_get_current_pid_tgid();
			struct pending_recv *p = bpf_map_lookup_elem(&pending, &id);
			if (p) {
				p->bytes += ret;
				p->events += 1;
				return 0;
			}
			struct pending_recv np = {
				.sk = (__u64)sk,
				.bytes = ret,
				.events = 1,
				.nr = nr,
				.arg = nr == NR_RECVFROM ? BPF_CORE_READ(regs, r8) : BPF_CORE_READ(regs, si),
			};
			if (!bpf_map_update_elem(&pending, &id, &np, BPF_ANY))
				return 0;
			stat_add(STAT_PENDING_MAP_FULL, 1);
		}
	}
	account(sk, &k, false, ret, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int sys_enter_sendmmsg(struct sys_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct mmsg_pos pos = {.vec = ctx->args[1], .idx = 0};
	bpf_map_update_elem(&sendmmsg_pos, &id, &pos, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sys_exit_sendmmsg(struct sys_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&sendmmsg_pos, &id);
	return 0;
}

/* Credits the bytes held in `pending` once the peer addresses are in user memory. */
static __always_inline int flush_pending(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_recv *pp = bpf_map_lookup_elem(&pending, &id);
	if (!pp)
		return 0;
	struct pending_recv p = *pp;
	bpf_map_delete_elem(&pending, &id);

	struct sock *sk = (struct sock *)p.sk;
	struct flow_key k = {};
	bool connected;
	if (!flow_key_of(sk, &k, &connected))
		return 0;
	if (p.nr == NR_RECVFROM || p.nr == NR_RECVMSG) {
		void *name = (void *)p.arg;
		if (p.nr == NR_RECVMSG) {
			struct user_msghdr *m = (void *)p.arg;
			name = 0;
			bpf_probe_read_user(&name, sizeof(name), &m->msg_name);
		}
		read_peer(name, true, &k);
		account(sk, &k, false, p.bytes, p.events);
		return 0;
	}
	/* recvmmsg: one peer per message. */
	struct mmsghdr *vec = (void *)p.arg;
	for (int i = 0; i < MMSG_PEERS && p.events > 0; i++) {
		void *name = 0;
		__u32 len = 0;
		if (bpf_probe_read_user(&name, sizeof(name), &vec[i].msg_hdr.msg_name) ||
		    bpf_probe_read_user(&len, sizeof(len), &vec[i].msg_len) || len > p.bytes)
			break;
		struct flow_key mk = k;
		__builtin_memset(mk.raddr, 0, sizeof(mk.raddr));
		mk.rport = 0;
		read_peer(name, true, &mk);
		account(sk, &mk, false, len, 1);
		p.bytes -= len;
		p.events -= 1;
	}
	if (p.bytes > 0)
		account(sk, &k, false, p.bytes, p.events);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int sys_exit_recvfrom(struct sys_exit_ctx *ctx)
{
	return flush_pending();
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sys_exit_recvmsg(struct sys_exit_ctx *ctx)
{
	return flush_pending();
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int sys_exit_recvmmsg(struct sys_exit_ctx *ctx)
{
	return flush_pending();
}

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
	if (!connected && msg)
		read_peer(BPF_CORE_READ(msg, msg_name), false, &k);
	account(sk, &k, send, ret, 1);
}

SEC("fexit/inet_sendmsg")
int BPF_PROG(fexit_inet_sendmsg, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	on_msg(sock, msg, ret, true);
	return 0;
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(fexit_inet6_sendmsg, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	on_msg(sock, msg, ret, true);
	return 0;
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(fexit_inet_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags,
	     int ret)
{
	if (!(flags & MSG_PEEK))
		on_msg(sock, msg, ret, false);
	return 0;
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(fexit_inet6_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags,
	     int ret)
{
	if (!(flags & MSG_PEEK))
		on_msg(sock, msg, ret, false);
	return 0;
}

/* sendfile() and splice() to a TCP socket on kernels < 6.5 go through sendpage, not sendmsg. */
SEC("fexit/inet_sendpage")
int BPF_PROG(fexit_inet_sendpage, struct socket *sock, void *page, int offset, __u64 size, int flags,
	     int ret)
{
	on_msg(sock, 0, ret, true);
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

/* ---- Processes: exec, fork (new thread groups only), exit of the whole group. ---- */

static __always_inline void emit_proc(__u32 kind, struct task_struct *t, __u32 ppid,
				      const char *path)
{
	struct proc_event *e = bpf_ringbuf_reserve(&procs, sizeof(*e), 0);
	if (!e) {
		stat_add(STAT_PROC_RINGBUF_FULL, 1);
		return;
	}
	e->kind = kind;
	e->tgid = BPF_CORE_READ(t, tgid);
	e->ppid = ppid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->start_ns = BPF_CORE_READ(t, group_leader, start_boottime);
	e->exe_ino = 0;
	e->exe_dev = 0;
	e->pad = 0;
	if (kind != PROC_EXIT)
		task_exe(t, &e->exe_ino, &e->exe_dev);
	BPF_CORE_READ_INTO(&e->comm, t, group_leader, comm);
	e->path[0] = 0;
	if (path)
		bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	bpf_ringbuf_submit(e, 0);
	stat_add(STAT_PROC_EVENTS, 1);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_sched_process_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	emit_proc(PROC_EXEC, t, BPF_CORE_READ(t, group_leader, real_parent, tgid),
		  BPF_CORE_READ(bprm, filename));
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	emit_proc(PROC_FORK, child, BPF_CORE_READ(parent, tgid), 0);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int raw_sched_process_exit(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(t, signal, live.counter) != 0)
		return 0;
	emit_proc(PROC_EXIT, t, 0, 0);
	return 0;
}
