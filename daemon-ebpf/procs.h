/* procs.h: process lifetimes (exec, fork of a new thread group, exit of the whole group) for the ring buffer. */
#ifndef PICOSNITCH_PROCS_H
#define PICOSNITCH_PROCS_H

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
	e->pexe_ino = 0;
	e->gpexe_ino = 0;
	e->pexe_dev = 0;
	e->gppid = 0;
	e->gpexe_dev = 0;
	e->pad2 = 0;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->exe_ctime_ns = kind == PROC_EXEC ? task_exe_ctime(t) : 0;
	if (path)
		bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	if (kind == PROC_EXEC) {
		struct task_struct *parent = BPF_CORE_READ(t, group_leader, real_parent);
		struct task_struct *gparent = BPF_CORE_READ(parent, group_leader, real_parent);
		if (parent)
			task_exe(parent, &e->pexe_ino, &e->pexe_dev);
		if (gparent) {
			e->gppid = BPF_CORE_READ(gparent, tgid);
			task_exe(gparent, &e->gpexe_ino, &e->gpexe_dev);
		}
	}
	/* Only an exec needs the daemon at once (to open /proc/PID/exe while the process lives);
	 * forks and exits are read with the next exec or the next one-second drain. The wakeup is
	 * forced: an adaptive one is skipped while earlier unread (fork) records are queued. */
	bpf_ringbuf_submit(e, kind == PROC_EXEC ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	stat_add(STAT_PROC_EVENTS, 1);
}

static __always_inline void on_exec(struct linux_binprm *bprm)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	emit_proc(PROC_EXEC, t, BPF_CORE_READ(t, group_leader, real_parent, tgid),
		  BPF_CORE_READ(bprm, filename));
}

static __always_inline void on_fork(struct task_struct *parent, struct task_struct *child)
{
	if (BPF_CORE_READ(child, pid) == BPF_CORE_READ(child, tgid))
		emit_proc(PROC_FORK, child, BPF_CORE_READ(parent, tgid), 0);
}

static __always_inline void on_exit(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(t, signal, live.counter) == 0)
		emit_proc(PROC_EXIT, t, 0, 0);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_sched_process_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	first_start(RUN_EXEC);
	on_exec(bprm);
	first_done(RUN_EXEC);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	first_start(RUN_FORK);
	on_fork(parent, child);
	first_done(RUN_FORK);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int raw_sched_process_exit(void *ctx)
{
	first_start(RUN_EXIT);
	on_exit();
	first_done(RUN_EXIT);
	return 0;
}

#endif
