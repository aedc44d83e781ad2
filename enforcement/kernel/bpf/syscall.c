// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Syscall audit layer: reports the system calls the task shim's seccomp
// filter refused to a process under the task root. It decides nothing
// (seccomp refused the call before this runs); it makes the refusal
// visible, as the network programs make theirs. A separate object from
// net.c: a kernel that refuses it must still load the network layer.
//
// Where: the sys_exit raw tracepoint. seccomp runs before sys_enter, and a
// call it refuses never reaches sys_enter, but the exit work runs for
// every call, skipped or not, with the return value seccomp set. Cost: a
// syscall tracepoint with a program attached sends every thread of the
// machine through the slow syscall path; the program itself leaves after
// one comparison for any call that did not fail with EPERM.
#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

// As in lsm.c (the same pinned map when both load): slot 0 holds the task
// root's cgroup.
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} task_root SEC(".maps");

// As in net.c (the same pinned map): task cgroup id -> binding.
struct binding {
	__u32 identity;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct binding);
} cgroups SEC(".maps");

// As in net.c (the same pinned map): events the ring buffers could not take.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

// The system call numbers the task filter refuses with EPERM, for the
// node's architecture, filled from the shim's list at load (key: number,
// value: 1).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u8);
} audited_syscalls SEC(".maps");

struct syscall_event {
	__u64 cgroup_id;
	__u32 identity; // the cgroup's binding, 0 when none
	__u32 nr;       // the system call number
	__s32 ret;      // what the caller got (-EPERM)
	__u32 pid;      // thread group id
	__u64 args[2];  // the first two arguments (clone, socket, personality are judged on them)
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} syscall_events SEC(".maps");

// Offsets in struct pt_regs of the system call number (32 bits read) and
// of the first two arguments as they are at exit, for the architecture the
// object is loaded on (one bpfel object serves amd64 and arm64): set by
// the loader before it loads. On arm64 the first argument is orig_x0 (x0
// holds the return value by then).
volatile const __u32 regs_nr = 0;
volatile const __u32 regs_arg0 = 0;
volatile const __u32 regs_arg1 = 0;

SEC("raw_tracepoint/sys_exit")
int sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	// Every system call of the machine passes here: leave at once unless
	// it failed with EPERM.
	if ((long)ctx->args[1] != -EPERM)
		return 0;
	// 1: under the task root; 0: not; <0: slot not set yet.
	if (bpf_current_task_under_cgroup(&task_root, 0) != 1)
		return 0;
	const char *regs = (const char *)ctx->args[0];
	__u32 nr = 0;
	if (bpf_probe_read_kernel(&nr, sizeof(nr), regs + regs_nr))
		return 0;
	if (!bpf_map_lookup_elem(&audited_syscalls, &nr))
		return 0;

	__u64 cg = bpf_get_current_cgroup_id();
	struct syscall_event *e = bpf_ringbuf_reserve(&syscall_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
		// Atomic although per-CPU: a program runs with migration, not
		// preemption, disabled, so another program on this CPU may run
		// between a load and a store and its count would be lost.
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	struct binding *b = bpf_map_lookup_elem(&cgroups, &cg);
	e->cgroup_id = cg;
	e->identity = b ? b->identity : 0;
	e->nr = nr;
	e->ret = -EPERM;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->args[0] = 0;
	e->args[1] = 0;
	bpf_probe_read_kernel(&e->args[0], sizeof(e->args[0]), regs + regs_arg0);
	bpf_probe_read_kernel(&e->args[1], sizeof(e->args[1]), regs + regs_arg1);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

// Keeps struct syscall_event in the object's BTF for layout_test.go.
void syscall_event_btf(struct syscall_event *e) {}
