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

/* x86_64 syscall numbers. */
#define NR_SENDTO 44
#define NR_SENDMSG 46

char LICENSE[] SEC("license") = "GPL";

#include "flow.h"
#include "rescue.h"
#include "traffic_btf.h"
#include "traffic_fallback.h"
#include "procs.h"
#include "dns.h"
#include "rescue_progs.h"
