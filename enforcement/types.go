package enforcement

import (
	"cmp"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// IdentityNum is the compact number of a workload identity (one per job's
// SPIFFE ID), assigned in etcd and used as the key of the kernel's maps
// instead of the SPIFFE ID string. Zero is never assigned.
type IdentityNum uint32

// Proto is an IP protocol a rule allows (IANA numbers).
type Proto uint8

// The protocols a rule can name.
const (
	ProtoAny Proto = 0
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// ParseProto reads "tcp", "udp" or "any".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "any":
		return ProtoAny, nil
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	}
	return 0, fmt.Errorf("protocol %q is not tcp, udp or any", s)
}

// Rule is one destination an identity may reach: an address or prefix, a
// port (0: any) and a protocol. IPv4 prefixes stay IPv4 here; the kernel
// side stores them inside ::ffff:0:0/96, the same place an IPv4-mapped
// IPv6 destination is looked up, so the mapped form cannot bypass them.
type Rule struct {
	Prefix netip.Prefix
	Port   uint16
	Proto  Proto
}

// Validate checks that r is a rule the kernel can hold.
func (r Rule) Validate() error {
	if !r.Prefix.IsValid() {
		return fmt.Errorf("rule %s: no valid prefix", r)
	}
	if r.Prefix != r.Prefix.Masked() {
		return fmt.Errorf("rule %s: prefix has host bits set", r)
	}
	if r.Prefix.Addr().Is4In6() {
		return fmt.Errorf("rule %s: write an IPv4-mapped prefix as IPv4", r)
	}
	if r.Prefix.Addr().Zone() != "" {
		return fmt.Errorf("rule %s: a zone is not allowed", r)
	}
	switch r.Proto {
	case ProtoAny, ProtoTCP, ProtoUDP:
	default:
		return fmt.Errorf("rule %s: unknown protocol", r)
	}
	return nil
}

// String is the rule as ParseRule reads it: "tcp 10.0.0.0/8:443",
// "udp [fd00::/8]:53", "any 127.0.0.1/32:*".
func (r Rule) String() string {
	port := "*"
	if r.Port != 0 {
		port = strconv.Itoa(int(r.Port))
	}
	p := r.Prefix.String()
	if r.Prefix.Addr().Is6() {
		p = "[" + p + "]"
	}
	return r.Proto.String() + " " + p + ":" + port
}

// ParseRule reads the form String writes.
func ParseRule(s string) (Rule, error) {
	proto, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Rule{}, fmt.Errorf("rule %q: want \"PROTO PREFIX:PORT\"", s)
	}
	pr, err := ParseProto(proto)
	if err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", s, err)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return Rule{}, fmt.Errorf("rule %q: no port", s)
	}
	pfx, port := rest[:i], rest[i+1:]
	pfx = strings.TrimSuffix(strings.TrimPrefix(pfx, "["), "]")
	p, err := netip.ParsePrefix(pfx)
	if err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", s, err)
	}
	r := Rule{Prefix: p, Proto: pr}
	if port != "*" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return Rule{}, fmt.Errorf("rule %q: port %q is not 1-65535 or *", s, port)
		}
		r.Port = uint16(n)
	}
	return r, r.Validate()
}

// CompareRules orders rules by prefix, then port, then protocol.
func CompareRules(a, b Rule) int {
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Proto, b.Proto)
}

// Mode is how a node enforces.
type Mode string

const (
	// ModeEnforce: BPF programs attached, denials refused with EPERM.
	ModeEnforce Mode = "enforce"
	// ModeAuditOnly: programs attached, what would be denied is recorded
	// and allowed. Chosen explicitly, for the cluster or per namespace.
	ModeAuditOnly Mode = "audit-only"
	// ModeDegraded: no BPF (not root, or no cgroup BPF in the kernel).
	ModeDegraded Mode = "degraded"
)

// Layers a node can report as active.
const (
	LayerNetwork  = "bpf-cgroup-net" // connect/sendmsg allow lists, sock_create
	LayerSeccomp  = "seccomp"        // the task shim's syscall filter
	LayerLandlock = "landlock"       // the task shim's filesystem ruleset
	LayerLSM      = "bpf-lsm"        // cgroup-scoped BPF LSM hooks for the escape set
	// LayerSyscallAudit records the seccomp filter's refusals in the task
	// subtree (it refuses nothing itself).
	LayerSyscallAudit = "bpf-syscall-audit"
)

// Hook is the BPF program that decided.
type Hook uint8

// The hooks, numbered as the BPF programs report them.
const (
	HookConnect4 Hook = iota + 1
	HookConnect6
	HookSendmsg4
	HookSendmsg6
	HookSockCreate
	// HookSyscall: a system call the task's seccomp filter refused,
	// reported by the syscall audit layer.
	HookSyscall
)

func (h Hook) String() string {
	switch h {
	case HookConnect4:
		return "connect4"
	case HookConnect6:
		return "connect6"
	case HookSendmsg4:
		return "sendmsg4"
	case HookSendmsg6:
		return "sendmsg6"
	case HookSockCreate:
		return "sock_create"
	case HookSyscall:
		return "syscall"
	}
	return "hook(" + strconv.Itoa(int(h)) + ")"
}

// Flags qualify a cgroup's binding to its identity.
type Flags uint32

// FlagAuditOnly: record what would be denied, allow it.
const FlagAuditOnly Flags = 1 << 0

// Binding maps one task cgroup (by its v2 cgroup id, the inode number of
// its directory) to its identity.
type Binding struct {
	Identity IdentityNum
	Flags    Flags
}
