// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// BPF LSM layer: the escape set refused for every task under the task root,
// whether or not it went through the task shim. A separate object from
// net.c: a kernel that refuses LSM programs must still load the network
// programs. The hooks but socket_create look at no argument: being under
// the task root is the whole decision.
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

// socket_create(int family, int type, int protocol, int kern): packet
// sockets, and raw sockets of the families cgroup/sock_create does not see
// (it runs for AF_INET and AF_INET6 only, and refuses raw sockets there
// itself; refusing them here too costs nothing). Sockets the kernel makes
// for itself (kern) are left alone. type arrives without SOCK_CLOEXEC and
// SOCK_NONBLOCK (the socket syscall masks them off first).
//
// AF_NETLINK is allowed whatever its type: netlink talks to the local
// kernel and carries nothing off the machine, and SOCK_RAW is its usual
// type (SOCK_DGRAM means the same to it). Go's net.Interfaces and
// net.InterfaceAddrs, and glibc's getaddrinfo with AI_ADDRCONFIG (the
// default of many resolvers), open socket(AF_NETLINK, SOCK_RAW,
// NETLINK_ROUTE): refusing it would break ordinary name resolution in
// every task. What netlink can change (routes, addresses, firewall)
// needs CAP_NET_ADMIN, which the task shim drops.
SEC("lsm/socket_create")
int socket_create(unsigned long long *ctx)
{
	int family = (int)ctx[0];
	int type = (int)ctx[1];
	int kern = (int)ctx[3];
	if (kern || family == AF_NETLINK || (family != AF_PACKET && type != SOCK_RAW))
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
