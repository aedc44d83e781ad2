// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// BPF LSM layer: the escape set refused for every task under the task root,
// whether or not it went through the task shim. A separate object from
// net.c: a kernel that refuses LSM programs must still load the network
// programs. The hooks look at no argument: being under the task root is
// the whole decision.
#include "common.h"

char __license[] SEC("license") = "GPL";

// Slot 0 holds the task root's cgroup (set from user space with its fd).
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} task_root SEC(".maps");

static __always_inline int refuse_in_tasks(void)
{
	// 1: under the root; 0: not; <0: slot empty or error. Only a task
	// certainly under the root is refused, so an agent that has not yet
	// filled the slot cannot lock out the node itself.
	return bpf_current_task_under_cgroup(&task_root, 0) == 1 ? -EPERM : 0;
}

// socket_create(int family, int type, int protocol, int kern): raw sockets
// of every family and packet sockets, which cgroup/sock_create cannot see
// (it runs for AF_INET and AF_INET6 only). Sockets the kernel makes for
// itself (kern) are left alone.
SEC("lsm/socket_create")
int socket_create(unsigned long long *ctx)
{
	int family = (int)ctx[0];
	int type = (int)ctx[1];
	int kern = (int)ctx[3];
	if (kern || (family != AF_PACKET && type != SOCK_RAW))
		return 0;
	return refuse_in_tasks();
}

SEC("lsm/ptrace_access_check")
int ptrace_access_check(void *ctx) { return refuse_in_tasks(); }

SEC("lsm/bpf")
int bpf(void *ctx) { return refuse_in_tasks(); }

SEC("lsm/sb_mount")
int sb_mount(void *ctx) { return refuse_in_tasks(); }

SEC("lsm/kernel_read_file")
int kernel_read_file(void *ctx) { return refuse_in_tasks(); }

SEC("lsm/kernel_load_data")
int kernel_load_data(void *ctx) { return refuse_in_tasks(); }
