/* records.h: the records the kernel side hands to the daemon; mirrored by daemon/src/collector/records.rs. */
#ifndef PICOSNITCH_RECORDS_H
#define PICOSNITCH_RECORDS_H

/* Key of the per-(process, socket, peer) totals map. The peer is part of the key so that an
 * unconnected UDP/ICMP/raw socket gets one row per remote address. */
struct flow_key {
	__u64 sock_ino; /* inode number of the socket, unique while it is open */
	__u32 tgid;
	__u16 family; /* AF_INET, AF_INET6, AF_PACKET */
	__u16 rport;  /* host byte order */
	__u8 raddr[16]; /* IPv4 in the first 4 bytes */
};

/* Value: counters updated with atomic adds, and what was known when the first byte was seen. */
struct flow_val {
	__u64 send_bytes;
	__u64 recv_bytes;
	__u64 send_events;
	__u64 recv_events;
	__u64 start_ns; /* task start_boottime of the thread group leader */
	__u64 exe_ino;
	__u64 pexe_ino;
	__u64 gpexe_ino;
	__u32 exe_dev; /* kernel dev_t (major << 20 | minor) */
	__u32 pexe_dev;
	__u32 gpexe_dev;
	__u32 uid;
	__u32 ppid;
	__u32 gppid;
	__u32 netns;
	__u16 protocol;
	__u16 lport;
	__u8 laddr[16];
	char comm[16];
	__u64 tcp_consumed; /* TCP bytes this process's readers had consumed, for splice() */
	__u64 cgroup_id;    /* cgroup v2 id (inode of its directory): the container or unit */
};

enum proc_event_kind {
	PROC_EXEC = 1,
	PROC_FORK = 2,
	PROC_EXIT = 3,
};

struct proc_event {
	__u32 kind;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u64 start_ns;
	__u64 exe_ino;
	__u32 exe_dev;
	__u32 pad;
	char comm[16];
	char path[256]; /* exec: the file name given to execve (may be relative or a symlink) */
	/* exec: the ancestry, for rows of processes that make no traffic ([monitoring] every_exe) */
	__u64 pexe_ino;
	__u64 gpexe_ino;
	__u32 pexe_dev;
	__u32 gppid;
	__u32 gpexe_dev;
	__u32 pad2;
	__u64 cgroup_id; /* cgroup v2 id of the task */
	/* exec: the executable's change time (ns) as it was executed, naming this run's content */
	__u64 exe_ctime_ns;
};

/* Bytes of a DNS message copied to the daemon: the EDNS payload size most resolvers use, so a
 * whole UDP answer almost always fits; a longer one is parsed as far as it was copied. */
#define DNS_CAPTURE 1232
#define DNS_ANSWER 0
#define DNS_QUERY 1

/* A UDP datagram or TCP segment with source port 53 delivered to a local socket (an answer), or
 * one a local socket sent to port 53 (a query). */
struct dns_event {
	__u32 netns;    /* network namespace of the local socket; 0 when this kernel cannot tell */
	__u32 len;      /* payload bytes of the datagram or segment */
	__u32 seq;      /* TCP: sequence number of the first payload byte; UDP: 0 */
	__u16 family;   /* AF_INET or AF_INET6, of the packet */
	__u16 protocol; /* IPPROTO_UDP or IPPROTO_TCP */
	__u16 sport;    /* host byte order */
	__u16 dport;
	__u16 captured; /* bytes of data[] that hold the payload's start */
	__u16 kind;     /* DNS_ANSWER or DNS_QUERY */
	__u8 saddr[16]; /* the packet's source (IPv4 in the first 4 bytes) */
	__u8 daddr[16]; /* the packet's destination */
	__u8 data[DNS_CAPTURE];
};

/* Indices of the per-CPU loss and activity counters. */
enum stat_index {
	STAT_PROC_RINGBUF_FULL = 0, /* process event dropped: ring buffer full */
	STAT_TOTALS_MAP_FULL = 1,   /* traffic not counted: totals map full */
	STAT_PENDING_MAP_FULL = 2,  /* reserved: peer hand-over uses per-CPU slots, which cannot fill */
	STAT_PEER_UNREADABLE = 3,   /* peer address of an unconnected socket could not be read */
	STAT_SEND_CALLS = 4,
	STAT_RECV_CALLS = 5,
	STAT_PROC_EVENTS = 6,
	/* 7: not a kernel counter (the daemon puts the kernel's recursion_misses there) */
	STAT_DNS_RINGBUF_FULL = 8,  /* DNS answer dropped: its ring buffer was full */
	STAT_DNS_UNREADABLE = 9,    /* DNS answer dropped: its payload could not be copied */
	STAT_DNS_PACKETS = 10,      /* DNS answers handed to the daemon */
	STAT_DNS_UNSOLICITED = 11,  /* DNS answers refused: no query left for them */
	STAT_DNS_QUERIES = 12,      /* DNS queries handed to the daemon */
	STAT_RESCUED = 13,          /* runs the kernel skipped that a twin program counted (rescue.h) */
	/* 14: not a kernel counter (the daemon puts the returns its kretprobes missed there) */
	STAT_MAX = 14,
};

#endif
