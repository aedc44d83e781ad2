// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Network enforcement for the task subtree: connect and unconnected sendmsg
// are allowed only to the (address prefix, port, protocol) tuples of the
// calling cgroup's identity, and the only IPv4/IPv6 sockets a task may
// create are TCP and UDP ones, the two those hooks govern. Everything a
// program refuses (or, in audit-only, would refuse) is reported on the
// events ring buffer.
#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

// Binding of a task cgroup (v2 cgroup id) to its identity.
struct binding {
	__u32 identity;
	__u32 flags; // bit 0: audit-only
};

#define FLAG_AUDIT_ONLY 1

// LPM key. prefixlen counts the bits after itself: identity, proto, family
// and port are always matched in full (64 bits), then prefixlen-64 bits of
// addr. IPv4 is kept as ::ffff:a.b.c.d with family AF_INET, so an IPv4 /n
// rule is 64+96+n bits, and an IPv4-mapped IPv6 destination is looked up as
// the IPv4 address it is (family AF_INET), never as IPv6: an IPv6 rule such
// as ::/0 does not open IPv4, and an IPv4 rule cannot be bypassed through
// the mapped form.
struct rule_key {
	__u32 prefixlen;
	__u32 identity;
	__u8 proto;  // IPPROTO_*, 0: any
	__u8 family; // AF_INET or AF_INET6
	__u16 port;  // host order, 0: any
	__u32 addr[4];
};

struct settings {
	__u32 flags; // bit 0: the whole node is audit-only
};

struct event {
	__u64 cgroup_id;
	__u32 identity;
	__u8 hook;
	__u8 proto;
	__u16 port; // host order
	__u8 family;
	__u8 audit_only;
	// The socket's protocol in full: proto above is 8 bits, and
	// sock_create refuses protocols that do not fit (IPPROTO_MPTCP, 262).
	__u16 sock_proto;
	__u32 sock_type;
	__u32 addr[4];
};

// Hook numbers, as enforcement.Hook.
#define HOOK_CONNECT4 1
#define HOOK_CONNECT6 2
#define HOOK_SENDMSG4 3
#define HOOK_SENDMSG6 4
#define HOOK_SOCK_CREATE 5

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct binding);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rule_key);
	__type(value, __u8);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline int node_audit_only(void)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings, &zero);
	return s && (s->flags & FLAG_AUDIT_ONLY);
}

static __always_inline void emit(__u64 cg, __u32 identity, __u8 hook, __u32 protocol, __u16 port, __u8 family,
				 __u8 audit_only, __u32 sock_type, const __u32 addr[4])
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
		// Atomic although per-CPU: a program runs with migration, not
		// preemption, disabled, so another program on this CPU may run
		// between a load and a store and its count would be lost.
		if (n)
			__sync_fetch_and_add(n, 1);
		return;
	}
	e->cgroup_id = cg;
	e->identity = identity;
	e->hook = hook;
	// 0 (any) when it does not fit: sock_proto has it.
	e->proto = protocol <= 0xff ? protocol : 0;
	e->port = port;
	e->family = family;
	e->audit_only = audit_only;
	e->sock_proto = protocol <= 0xffff ? protocol : 0xffff;
	e->sock_type = sock_type;
	e->addr[0] = addr[0];
	e->addr[1] = addr[1];
	e->addr[2] = addr[2];
	e->addr[3] = addr[3];
	bpf_ringbuf_submit(e, 0);
}

// allowed looks k up as (any, port), (proto, port), (proto, any),
// (any, any); any hit allows. (any, port) comes first because it is the
// common case: Compile writes every listener rule with protocol any and
// the listener's port, so an allowed connect to a workload costs one
// lookup. k is left modified.
static __always_inline int allowed(struct rule_key *k)
{
	__u8 proto = k->proto;
	__u16 port = k->port;

	k->proto = 0;
	if (bpf_map_lookup_elem(&rules, k))
		return 1;
	k->proto = proto;
	if (proto && bpf_map_lookup_elem(&rules, k))
		return 1;
	k->port = 0;
	if (port && bpf_map_lookup_elem(&rules, k))
		return 1;
	k->proto = 0;
	if (proto && port && bpf_map_lookup_elem(&rules, k))
		return 1;
	return 0;
}

// decide is the whole verdict for one destination: 1 allows, 0 refuses
// (the caller sees EPERM).
static __always_inline int decide(struct bpf_sock_addr *ctx, __u8 hook, __u8 family, __u32 addr[4])
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct binding *b = bpf_map_lookup_elem(&cgroups, &cg);
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 protocol = ctx->protocol;
	// A protocol wider than the key's 8 bits (MPTCP, refused at
	// sock_create, so met here only in audit-only) is looked up as 255
	// (IPPROTO_RAW), which no rule names: only any-protocol rules match.
	__u8 proto = protocol <= 0xff ? protocol : 0xff;
	__u32 identity = 0;
	__u32 flags = 0;

	if (b) {
		struct rule_key k = {
			.prefixlen = 64 + 128,
			.identity = b->identity,
			.proto = proto,
			.family = family,
			.port = port,
		};
		k.addr[0] = addr[0];
		k.addr[1] = addr[1];
		k.addr[2] = addr[2];
		k.addr[3] = addr[3];
		if (allowed(&k))
			return 1;
		identity = b->identity;
		flags = b->flags;
	}
	// Read only on the way to a refusal: an allowed connect pays for no
	// settings lookup.
	int audit = node_audit_only() || (flags & FLAG_AUDIT_ONLY);
	// No binding: this cgroup sits in the task subtree without an identity
	// (a process that escaped its task's group, or a group not yet bound):
	// denied everything.
	emit(cg, identity, hook, protocol, port, family, audit, ctx->type, addr);
	return audit ? 1 : 0;
}

static __always_inline int v4(struct bpf_sock_addr *ctx, __u8 hook)
{
	__u32 addr[4] = {0, 0, bpf_htonl(0xffff), ctx->user_ip4};
	return decide(ctx, hook, AF_INET, addr);
}

static __always_inline int v6(struct bpf_sock_addr *ctx, __u8 hook)
{
	__u32 addr[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u8 family = AF_INET6;
	// ::ffff:0:0/96 is IPv4 in IPv6 clothing: judge it as IPv4.
	if (addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff))
		family = AF_INET;
	return decide(ctx, hook, family, addr);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx) { return v4(ctx, HOOK_CONNECT4); }

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx) { return v6(ctx, HOOK_CONNECT6); }

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx) { return v4(ctx, HOOK_SENDMSG4); }

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx) { return v6(ctx, HOOK_SENDMSG6); }

// sock_create is an allow list: a task may create TCP sockets (SOCK_STREAM,
// IPPROTO_TCP) and UDP sockets (SOCK_DGRAM, IPPROTO_UDP) and no other
// IPv4/IPv6 socket, because those are the two whose every destination the
// connect and sendmsg hooks see. Anything else could carry traffic past
// the allow list: a raw socket forges or reads packets below the hooks;
// an ICMP "ping" socket (SOCK_DGRAM, IPPROTO_ICMP/ICMPV6, open to every
// gid in net.ipv4.ping_group_range, which systemd widens to all) passes
// connect but its unconnected sendto reaches no sendmsg hook; SCTP,
// UDP-Lite and whatever the kernel adds next are not judged at all.
//
// MPTCP (SOCK_STREAM, IPPROTO_MPTCP) is refused too: after the first
// subflow the kernel creates and connects further subflows itself (its
// path manager, addresses the peer announces), as kernel sockets from
// worker context, where neither this hook nor the calling-cgroup lookup
// the connect hooks rely on sees the task. Go's net package tries MPTCP
// first for listeners and falls back to TCP on any error, so a Go task
// keeps working and shows up as a sock_create event.
//
// ctx->protocol is the protocol the socket was created with after the
// kernel resolved 0: inet_create and inet6_create set sk_protocol from
// the matching inetsw entry (TCP for SOCK_STREAM, UDP for SOCK_DGRAM)
// before they run this hook. The hook runs for AF_INET and AF_INET6 only
// and not for sockets the kernel makes for itself; packet sockets
// (AF_PACKET, and the obsolete SOCK_PACKET) are refused by the LSM layer's
// socket_create where it loads, and need CAP_NET_RAW, which the task shim
// drops.
SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family;
	__u32 type = ctx->type;
	__u32 protocol = ctx->protocol;
	if ((type == SOCK_STREAM && protocol == IPPROTO_TCP) || (type == SOCK_DGRAM && protocol == IPPROTO_UDP))
		return 1;

	__u64 cg = bpf_get_current_cgroup_id();
	struct binding *b = bpf_map_lookup_elem(&cgroups, &cg);
	__u32 identity = 0;
	int audit = node_audit_only();
	if (b) {
		identity = b->identity;
		audit = audit || (b->flags & FLAG_AUDIT_ONLY);
	}
	__u32 none[4] = {};
	emit(cg, identity, HOOK_SOCK_CREATE, protocol, 0, family, audit, type, none);
	return audit ? 1 : 0;
}

// No program or map names struct event in its type, so without this the
// compiler leaves it out of the object's BTF, and layout_test.go could not
// check the Go mirror against it. Nothing calls it; it is not loaded.
void event_btf(struct event *e) {}
