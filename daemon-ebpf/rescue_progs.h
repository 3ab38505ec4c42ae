/* rescue_progs.h: the twins of rescue.h, one per counting program, on the same hooks. */
#ifndef PICOSNITCH_RESCUE_PROGS_H
#define PICOSNITCH_RESCUE_PROGS_H
#ifdef PICOSNITCH_RESCUE

SEC("tp_btf/sock_send_length")
int BPF_PROG(rs_send_length, struct sock *sk, int ret, int flags)
{
	if (ran_again(RUN_SEND_LENGTH))
		send_length(sk, ret);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(rs_recv_length, struct sock *sk, int ret, int flags)
{
	if (ran_again(RUN_RECV_LENGTH))
		recv_length(sk, ret, flags);
	return 0;
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(rs_copy_datagram, const struct sk_buff *skb, int len)
{
	if (ran_again(RUN_COPY_DATAGRAM))
		copy_datagram(skb, len);
	return 0;
}

SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(rs_rcv_space, struct sock *sk)
{
	if (ran_again(RUN_RCV_SPACE))
		rcv_space_adjust(sk);
	return 0;
}

SEC("fentry/skb_consume_udp")
int BPF_PROG(rs_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	if (ran_again(RUN_CONSUME_UDP))
		stash_datagram_source(sk, skb, len);
	return 0;
}

SEC("fexit/inet_sendmsg")
int BPF_PROG(rs_inet_sendmsg, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	if (ran_again(RUN_INET_SENDMSG))
		on_msg(sock, msg, ret, true);
	return 0;
}

SEC("fexit/inet6_sendmsg")
int BPF_PROG(rs_inet6_sendmsg, struct socket *sock, struct msghdr *msg, __u64 size, int ret)
{
	if (ran_again(RUN_INET6_SENDMSG))
		on_msg(sock, msg, ret, true);
	return 0;
}

SEC("fexit/inet_recvmsg")
int BPF_PROG(rs_inet_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags,
	     int ret)
{
	if (ran_again(RUN_INET_RECVMSG) && !(flags & MSG_PEEK))
		on_msg(sock, msg, ret, false);
	return 0;
}

SEC("fexit/inet6_recvmsg")
int BPF_PROG(rs_inet6_recvmsg, struct socket *sock, struct msghdr *msg, __u64 size, int flags,
	     int ret)
{
	if (ran_again(RUN_INET6_RECVMSG) && !(flags & MSG_PEEK))
		on_msg(sock, msg, ret, false);
	return 0;
}

SEC("fexit/inet_sendpage")
int BPF_PROG(rs_inet_sendpage, struct socket *sock, void *page, int offset, __u64 size, int flags,
	     int ret)
{
	if (ran_again(RUN_INET_SENDPAGE))
		on_msg(sock, 0, ret, true);
	return 0;
}

/* Process events: a twin and a third program (ran_twin, ran_third). */
SEC("raw_tp/sched_process_exec")
int BPF_PROG(rs_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	if (ran_twin(RUN_EXEC))
		on_exec(bprm);
	twin_done(RUN_EXEC);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(rs_exec3, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	if (ran_third(RUN_EXEC))
		on_exec(bprm);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(rs_fork, struct task_struct *parent, struct task_struct *child)
{
	if (ran_twin(RUN_FORK))
		on_fork(parent, child);
	twin_done(RUN_FORK);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(rs_fork3, struct task_struct *parent, struct task_struct *child)
{
	if (ran_third(RUN_FORK))
		on_fork(parent, child);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int rs_exit(void *ctx)
{
	if (ran_twin(RUN_EXIT))
		on_exit();
	twin_done(RUN_EXIT);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int rs_exit3(void *ctx)
{
	if (ran_third(RUN_EXIT))
		on_exit();
	return 0;
}

#endif
#endif
