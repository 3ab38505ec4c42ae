/* bpfstat.c: lists every loaded BPF program with its recursion_misses (runs the kernel skipped
 * because a BPF program was already running on that CPU; kernel >= 5.12, else 0); the
 * kernel-matrix guest prints it. run_cnt counts only while kernel.bpf_stats_enabled is 1. */
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

int main(void)
{
	__u32 id = 0;
	for (;;) {
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.start_id = id;
		if (bpf(BPF_PROG_GET_NEXT_ID, &a))
			break;
		id = a.next_id;
		memset(&a, 0, sizeof(a));
		a.prog_id = id;
		int fd = bpf(BPF_PROG_GET_FD_BY_ID, &a);
		if (fd < 0)
			continue;
		struct bpf_prog_info info;
		memset(&info, 0, sizeof(info));
		memset(&a, 0, sizeof(a));
		a.info.bpf_fd = fd;
		a.info.info_len = sizeof(info);
		a.info.info = (__u64)(unsigned long)&info;
		if (bpf(BPF_OBJ_GET_INFO_BY_FD, &a) == 0)
			printf("prog id=%u type=%u name=%s run_cnt=%llu recursion_misses=%llu\n", id,
			       info.type, info.name, (unsigned long long)info.run_cnt,
			       (unsigned long long)info.recursion_misses);
		close(fd);
	}
	return 0;
}
