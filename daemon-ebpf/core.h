/* core.h: the kernel structure fields picosnitch reads, declared for CO-RE relocation. */
#ifndef PICOSNITCH_CORE_H
#define PICOSNITCH_CORE_H

/* Kernel names for pt_regs fields in bpf_tracing.h. */
#define __VMLINUX_H__

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

#define BPF_F_NO_PREALLOC 1
#define BPF_LOCAL_STORAGE_GET_F_CREATE 1

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_RING_SIZE = 1,
};

#define PRESERVE __attribute__((preserve_access_index))

typedef struct {
	int counter;
} PRESERVE atomic_t;

#if defined(__TARGET_ARCH_arm64)
/* arm64: bpf_tracing.h reads the registers through user_pt_regs. */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};

struct pt_regs {
	struct user_pt_regs user_regs;
	__u64 orig_x0;
	__s32 syscallno;
} PRESERVE;
#define SYSCALL_NR(regs) ((regs)->syscallno)
#else
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs,
		flags, sp, ss;
} PRESERVE;
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#endif

struct ns_common {
	unsigned int inum;
} PRESERVE;

struct net {
	struct ns_common ns;
} PRESERVE;

typedef struct {
	struct net *net;
} PRESERVE possible_net_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
} PRESERVE;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} PRESERVE;

struct super_block {
	unsigned int s_dev;
} PRESERVE;

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
	struct super_block *i_sb;
} PRESERVE;

/* The inode's change time has had three layouts; CO-RE picks the one the kernel has. */
struct timespec64 {
	__s64 tv_sec;
	long tv_nsec;
} PRESERVE;

/* Up to 6.5. */
struct inode___ctime_ts {
	struct timespec64 i_ctime;
} PRESERVE;

/* 6.6 to 6.10. */
struct inode___ctime_hidden {
	struct timespec64 __i_ctime;
} PRESERVE;

/* From 6.11: seconds and nanoseconds apart (the top bits of the nanoseconds are flags since
 * multigrain timestamps, 6.13). */
struct inode___ctime_split {
	__s64 i_ctime_sec;
	__u32 i_ctime_nsec;
} PRESERVE;

struct file {
	struct inode *f_inode;
	void *private_data;
} PRESERVE;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} PRESERVE;

struct files_struct {
	struct fdtable *fdt;
} PRESERVE;

struct sock;

struct socket {
	short type;
	struct file *file;
	struct sock *sk;
} PRESERVE;

struct sock {
	struct sock_common __sk_common;
	unsigned char sk_shutdown;
	__u16 sk_protocol;
	__u16 sk_type;
	struct socket *sk_socket;
} PRESERVE;

struct sk_buff {
	struct sock *sk;
	unsigned char *head;
	__u16 transport_header;
	__u16 network_header;
} PRESERVE;

struct tcp_sock {
	__u64 bytes_received;
	__u32 rcv_nxt;
	__u32 copied_seq;
} PRESERVE;

struct mm_struct {
	struct file *exe_file;
} PRESERVE;

struct signal_struct {
	atomic_t live;
} PRESERVE;

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct mm_struct *mm;
	struct signal_struct *signal;
	struct files_struct *files;
	__u64 start_boottime;
	char comm[16];
} PRESERVE;

struct linux_binprm {
	const char *filename;
} PRESERVE;

struct msghdr {
	void *msg_name;
	int msg_namelen;
} PRESERVE;

/* The context of cgroup/sendmsg programs (uapi layout; the verifier rewrites the accesses). */
struct bpf_sock;
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	union {
		struct bpf_sock *sk;
		__u64 : 64;
	} __attribute__((aligned(8)));
};

/* The context of cgroup_skb programs, up to the last field read (uapi layout; the verifier
 * rewrites the accesses). */
struct bpf_flow_keys;
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	union {
		struct bpf_flow_keys *flow_keys;
		__u64 : 64;
	} __attribute__((aligned(8)));
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	union {
		struct bpf_sock *sk;
		__u64 : 64;
	} __attribute__((aligned(8)));
};

/* User-space layouts (ABI, not relocated). */
struct user_msghdr {
	void *msg_name;
	int msg_namelen;
	void *msg_iov;
	unsigned long msg_iovlen;
	void *msg_control;
	unsigned long msg_controllen;
	unsigned int msg_flags;
};

struct mmsghdr {
	struct user_msghdr msg_hdr;
	unsigned int msg_len;
};

struct sockaddr_in_abi {
	__u16 family;
	__be16 port;
	__be32 addr;
};

struct sockaddr_in6_abi {
	__u16 family;
	__be16 port;
	__u32 flowinfo;
	__u8 addr[16];
};

/* Tracepoint contexts (stable ABI of the trace event format). */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct sys_enter_ctx {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct sys_exit_ctx {
	struct trace_entry ent;
	long id;
	long ret;
};

#endif
