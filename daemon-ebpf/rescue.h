/* rescue.h: counts the runs the kernel skips. A tracing program preempted while it runs (full or
 * lazy preemption: every 7.x kernel, 6.x with preempt=full) makes the kernel skip that program
 * for every other task reaching the hook on that CPU (its recursion_misses). Each counting
 * program is therefore followed on its hook by a twin (rs_*) that runs the same body only when
 * the first did not run on this invocation. Two marks tell it: the first program sets a bit of
 * the thread (task storage, kernel >= 5.11) that the twin takes, and counts its runs in progress
 * on the CPU. No bit: the first did not run. A bit, but a run of the first in progress on this
 * CPU: the bit is one a skipped twin left behind, and the kernel skipped the first here. This
 * part is built into a second object (PICOSNITCH_RESCUE) that older kernels refuse; the daemon
 * then loads the plain one.
 *
 * Order: the twin runs after the first on the same invocation (tracepoint probes run in the order
 * attached; trampolines run the newest first, so there the twin is attached first). A run both
 * skip stays lost: the daemon reports the skips of the first programs less the rescued runs
 * (STAT_RESCUED) as recursion_misses. */
#ifndef PICOSNITCH_RESCUE_H
#define PICOSNITCH_RESCUE_H

enum run_slot {
	RUN_SEND_LENGTH,
	RUN_RECV_LENGTH,
	RUN_COPY_DATAGRAM,
	RUN_RCV_SPACE,
	RUN_CONSUME_UDP,
	RUN_INET_SENDMSG,
	RUN_INET6_SENDMSG,
	RUN_INET_RECVMSG,
	RUN_INET6_RECVMSG,
	RUN_INET_SENDPAGE,
	RUN_EXEC,
	RUN_FORK,
	RUN_EXIT,
	RUN_SLOTS,
};

#ifdef PICOSNITCH_RESCUE

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} ran SEC(".maps");

/* Runs of each counting program in progress on this CPU (one preempted while it runs makes the
 * kernel skip that program for every other task here: the twin then counts). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RUN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} in_first SEC(".maps");

/* The first program: marks this thread's run and this CPU's run in progress; false (the twin
 * will count) if it cannot mark the thread. */
static __always_inline bool ran_first(__u32 slot)
{
	__u32 *busy = bpf_map_lookup_elem(&in_first, &slot);
	if (busy)
		*busy += 1;
	__u32 *r = bpf_task_storage_get(&ran, bpf_get_current_task_btf(), 0,
					BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!r)
		return false;
	*r |= 1u << slot;
	return true;
}

/* The end of the first program's run (whether it counted or not). */
static __always_inline void first_done(__u32 slot)
{
	__u32 *busy = bpf_map_lookup_elem(&in_first, &slot);
	if (busy && *busy > 0)
		*busy -= 1;
}

/* The twin: true when the first program did not run for this thread on this invocation: the
 * thread has no mark, or it has one a skipped twin left behind and a run of the first program is
 * in progress on this CPU (so the kernel skipped it here). */
static __always_inline bool ran_again(__u32 slot)
{
	__u32 *busy = bpf_map_lookup_elem(&in_first, &slot);
	bool skipped_here = busy && *busy > 0;
	__u32 *r = bpf_task_storage_get(&ran, bpf_get_current_task_btf(), 0,
					BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (r && (*r & (1u << slot))) {
		*r &= ~(1u << slot);
		if (!skipped_here)
			return false;
	}
	stat_add(STAT_RESCUED, 1);
	return true;
}

#else

static __always_inline bool ran_first(__u32 slot)
{
	return true;
}

static __always_inline void first_done(__u32 slot)
{
}

#endif
#endif
