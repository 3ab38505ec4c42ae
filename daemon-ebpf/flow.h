/* flow.h: the maps and the helpers every traffic hook shares: keys, first-sight metadata, atomic totals. */
#ifndef PICOSNITCH_FLOW_H
#define PICOSNITCH_FLOW_H

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

/* The change time (ns) of a task's executable: what the daemon hashes must still have it. */
static __always_inline __u64 task_exe_ctime(struct task_struct *t)
{
	struct inode *i = BPF_CORE_READ(t, mm, exe_file, f_inode);
	__s64 sec = 0;
	__u32 nsec = 0;
	if (!i)
		return 0;
	if (bpf_core_field_exists(((struct inode___ctime_split *)i)->i_ctime_sec)) {
		sec = BPF_CORE_READ((struct inode___ctime_split *)i, i_ctime_sec);
		nsec = BPF_CORE_READ((struct inode___ctime_split *)i, i_ctime_nsec);
	} else if (bpf_core_field_exists(((struct inode___ctime_hidden *)i)->__i_ctime)) {
		sec = BPF_CORE_READ((struct inode___ctime_hidden *)i, __i_ctime.tv_sec);
		nsec = BPF_CORE_READ((struct inode___ctime_hidden *)i, __i_ctime.tv_nsec);
	} else {
		sec = BPF_CORE_READ((struct inode___ctime_ts *)i, i_ctime.tv_sec);
		nsec = BPF_CORE_READ((struct inode___ctime_ts *)i, i_ctime.tv_nsec);
	}
	/* Nanoseconds stay below 2^30; higher bits are flags (I_CTIME_QUERIED). */
	return (__u64)sec * 1000000000ULL + (nsec & ((1U << 30) - 1));
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
	v->cgroup_id = bpf_get_current_cgroup_id();
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

/* Adds to the totals of `k`, creating the entry with first-sight metadata; returns the entry. */
static __always_inline struct flow_val *account(struct sock *sk, struct flow_key *k, bool send,
						__u64 bytes, __u64 events)
{
	struct flow_val *v = bpf_map_lookup_elem(&totals, k);
	if (!v) {
		struct flow_val nv = {};
		fill_meta(sk, k, &nv);
		long err = bpf_map_update_elem(&totals, k, &nv, BPF_NOEXIST);
		if (err && err != -EEXIST) {
			stat_add(STAT_TOTALS_MAP_FULL, 1);
			return 0;
		}
		v = bpf_map_lookup_elem(&totals, k);
		if (!v)
			return 0;
	}
	if (send) {
		__sync_fetch_and_add(&v->send_bytes, bytes);
		__sync_fetch_and_add(&v->send_events, events);
	} else {
		__sync_fetch_and_add(&v->recv_bytes, bytes);
		__sync_fetch_and_add(&v->recv_events, events);
	}
	return v;
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

#endif
