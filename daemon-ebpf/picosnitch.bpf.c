/* picosnitch.bpf.c: kernel side; counts socket payload bytes per (process, socket, peer), reports process lifetimes and copies DNS answers. */
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

/* Syscall numbers of the target architecture. */
#if defined(__TARGET_ARCH_arm64) || defined(__TARGET_ARCH_riscv) || defined(__TARGET_ARCH_loongarch)
#define NR_SENDTO 206
#define NR_SENDMSG 211
#define NR_SENDFILE 71
#define NR_SPLICE 76
#elif defined(__TARGET_ARCH_x86)
#define NR_SENDTO 44
#define NR_SENDMSG 46
#define NR_SENDFILE 40
#define NR_SPLICE 275
#else
#error "syscall numbers of this architecture are not known"
#endif

char LICENSE[] SEC("license") = "GPL";

#include "flow.h"
#include "rescue.h"
#include "traffic_btf.h"
#include "traffic_fallback.h"
#include "procs.h"
#include "dns.h"
#include "rescue_progs.h"
