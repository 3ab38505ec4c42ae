/* rescue.h: counts the runs the kernel skips. A tracing program preempted while it runs (full or
 * lazy preemption: every 7.x kernel, 6.x with preempt=full) makes the kernel skip that program
 * for every other task reaching the hook on that CPU (its recursion_misses). Each counting
 * program (level 0) is therefore followed on its hook by a twin (rs_*, level 1) that runs the
 * same body only when the first did not run on this invocation; the process events, whose
 * programs are the longest and so the most often preempted, have a third (rs_*3, level 2) for
 * the runs both skip. Two marks tell a later level whether an earlier one ran: each sets a bit of
 * the thread (task storage, kernel >= 5.11) that the last level clears, and counts its runs in
 * progress on the CPU. A run in progress on this CPU: the kernel skipped that level here (a bit
 * is then one a skipped last level left behind). No bit: it was skipped just outside its count
 * of runs. This part is built into a second object (PICOSNITCH_RESCUE) that older kernels
 * refuse; the daemon then loads the plain one.
 *
 * Order: the levels run one after the other on the same invocation (tracepoint probes run in the
 * order attached; trampolines run the newest first, so there the twin is attached first). A run
 * every level skips stays lost: the daemon reports the skips of the first programs less the
 * rescued runs (STAT_RESCUED) as recursion_misses. */
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

/* Runs of each counting program (level 0) and of each twin (level 1) in progress on this CPU: one
 * preempted while it runs makes the kernel skip that program for every other task here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RUN_SLOTS * 2);
	__type(key, __u32);
	__type(value, __u32);
} in_first SEC(".maps");

/* The thread's mark that level 0 (bit slot) or level 1 (bit slot + 16) ran on this invocation. */
#define RAN_BIT(slot, level) (1u << ((slot) + 16 * (level)))

static __always_inline __u32 *run_mark(void)
{
	return bpf_task_storage_get(&ran, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
}

static __always_inline void busy_add(__u32 slot, __u32 level, int by)
{
	__u32 key = slot + RUN_SLOTS * level;
	__u32 *busy = bpf_map_lookup_elem(&in_first, &key);
	if (busy && (by > 0 || *busy > 0))
		*busy += by;
}

/* Whether the program of `level` did not run on this invocation: a run of it is in progress on
 * this CPU (the kernel skipped it here; a mark is then one a skipped last level left behind), or
 * the thread has no mark of it (the kernel skipped it just before or after that run's count). */
static __always_inline bool skipped_at(__u32 *r, __u32 slot, __u32 level)
{
	__u32 key = slot + RUN_SLOTS * level;
	__u32 *busy = bpf_map_lookup_elem(&in_first, &key);
	return (busy && *busy > 0) || (r && !(*r & RAN_BIT(slot, level)));
}

/* The first program's start: marks this thread's run and this CPU's run in progress. */
static __always_inline void first_start(__u32 slot)
{
	busy_add(slot, 0, 1);
	__u32 *r = run_mark();
	if (r)
		*r |= RAN_BIT(slot, 0);
}

/* The end of the first program's run (whether it counted or not). */
static __always_inline void first_done(__u32 slot)
{
	busy_add(slot, 0, -1);
}

/* A later level's verdict: `again` counts a rescued run. */
static __always_inline bool rescue(bool again)
{
	if (again)
		stat_add(STAT_RESCUED, 1);
	return again;
}

/* The twin, last on its hook: true when the first program did not run on this invocation. */
static __always_inline bool ran_again(__u32 slot)
{
	__u32 *r = run_mark();
	bool again = skipped_at(r, slot, 0);
	if (r)
		*r &= ~RAN_BIT(slot, 0);
	return rescue(again);
}

/* The twin of a hook with a third program (process events: long programs, skipped the most):
 * as ran_again, and marks its own run for the third; twin_done ends it. */
static __always_inline bool ran_twin(__u32 slot)
{
	busy_add(slot, 1, 1);
	__u32 *r = run_mark();
	bool again = skipped_at(r, slot, 0);
	if (r)
		*r |= RAN_BIT(slot, 1);
	return rescue(again);
}

static __always_inline void twin_done(__u32 slot)
{
	busy_add(slot, 1, -1);
}

/* The third program, last on its hook: true when neither the first nor the twin ran. */
static __always_inline bool ran_third(__u32 slot)
{
	__u32 *r = run_mark();
	bool again = skipped_at(r, slot, 0) && skipped_at(r, slot, 1);
	if (r)
		*r &= ~(RAN_BIT(slot, 0) | RAN_BIT(slot, 1));
	return rescue(again);
}

#else

static __always_inline void first_start(__u32 slot)
{
}

static __always_inline void first_done(__u32 slot)
{
}

#endif
#endif
