package kernel

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
)

// widenPingGroupRange lets every gid open ICMP "ping" sockets for the
// test, as systemd does on most distributions, and restores the old range
// afterwards. net.ipv4.ping_group_range governs IPv6 ping sockets too.
func widenPingGroupRange(t *testing.T) {
	t.Helper()
	const path = "/proc/sys/net/ipv4/ping_group_range"
	old, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte("0 2147483647"), 0))
	t.Cleanup(func() {
		// The kernel reads "LOW\tHIGH\n" back as it was written.
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(strings.Fields(string(old)), " ")), 0))
	})
}

// TestSockCreateAllowList (T-105): in the task subtree the only IPv4/IPv6
// sockets are TCP and UDP. ICMP ping sockets (whose unconnected sendto no
// sendmsg hook sees), MPTCP, UDP-Lite and SCTP are refused with EPERM and
// an event, bound or not, even to root; the same calls outside the subtree
// succeed, so it is the program and not a missing capability or protocol
// that refuses them. TCP and UDP work whether the caller names the
// protocol or passes 0 (the kernel resolves 0 before the hook runs).
func TestSockCreateAllowList(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	widenPingGroupRange(t)
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	stray, strayID := f.group("stray")

	refused := []struct {
		name                  string
		family, typ, protocol int
	}{
		{"ping4", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP},
		{"ping6", unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6},
		{"mptcp4", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP},
		{"mptcp6", unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP},
		{"udplite4", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE},
		{"sctp4", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP},
		{"sctp4-seqpacket", unix.AF_INET, unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP},
		{"raw4", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP},
	}
	var cases []string
	for _, c := range refused {
		cmd := fmt.Sprintf("socket %d %d %d", c.family, c.typ, c.protocol)
		// Control: outside the subtree the kernel makes this socket. If
		// it cannot (the protocol is not built or loadable here), the
		// hook never runs for it and there is nothing to test.
		if got := errnoName(helperDo(strings.Fields(cmd))); got != "ok" {
			t.Logf("%s: not testable on this kernel: outside the subtree socket() gives %s", c.name, got)
			continue
		}
		cases = append(cases, cmd)
	}
	require.Contains(t, cases, fmt.Sprintf("socket %d %d %d", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP),
		"ping sockets must be testable once ping_group_range is widened")

	allowed := []string{
		fmt.Sprintf("socket %d %d 0", unix.AF_INET, unix.SOCK_STREAM),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP),
		fmt.Sprintf("socket %d %d 0", unix.AF_INET, unix.SOCK_DGRAM),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP),
		fmt.Sprintf("socket %d %d 0", unix.AF_INET6, unix.SOCK_STREAM),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP),
		fmt.Sprintf("socket %d %d 0", unix.AF_INET6, unix.SOCK_DGRAM),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP),
		fmt.Sprintf("socket %d %d 0", unix.AF_UNIX, unix.SOCK_DGRAM), // not an inet socket: not this hook's
	}
	hs := []*helper{f.start(dir), f.start(stray)}
	for _, h := range hs {
		for _, c := range allowed {
			require.Equal(t, "ok", h.do(t, "%s", c), c)
		}
	}
	f.noEvent()
	for _, h := range hs {
		for _, c := range cases {
			require.Equal(t, "EPERM", h.do(t, "%s", c), c)
		}
	}

	// The events name what was refused: the first of the bound group's
	// refusals, then MPTCP, whose protocol does not fit in 8 bits, then
	// the unbound group's first.
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, Event{CgroupID: cg, Identity: 5, Hook: enforcement.HookSockCreate,
		Proto: enforcement.Proto(unix.IPPROTO_ICMP), Family: unix.AF_INET, SockProto: unix.IPPROTO_ICMP,
		SockType: unix.SOCK_DGRAM}, ev)
	ev = f.waitEvent(func(ev Event) bool { return ev.SockProto == unix.IPPROTO_ICMPV6 })
	require.Equal(t, Event{CgroupID: cg, Identity: 5, Hook: enforcement.HookSockCreate,
		Proto: enforcement.Proto(unix.IPPROTO_ICMPV6), Family: unix.AF_INET6, SockProto: unix.IPPROTO_ICMPV6,
		SockType: unix.SOCK_DGRAM}, ev)
	if strings.Contains(strings.Join(cases, ","), fmt.Sprintf(" %d", unix.IPPROTO_MPTCP)) {
		ev = f.waitEvent(func(ev Event) bool { return ev.SockProto == unix.IPPROTO_MPTCP })
		require.Equal(t, Event{CgroupID: cg, Identity: 5, Hook: enforcement.HookSockCreate,
			Proto: enforcement.ProtoAny, Family: unix.AF_INET, SockProto: unix.IPPROTO_MPTCP,
			SockType: unix.SOCK_STREAM}, ev)
	}
	ev = f.waitEvent(func(ev Event) bool { return ev.CgroupID == strayID })
	require.Zero(t, ev.Identity)
	require.Equal(t, uint16(unix.IPPROTO_ICMP), ev.SockProto)
	require.False(t, ev.AuditOnly)

	// A Go server keeps working: net.Listen tries MPTCP first (Go 1.24 and
	// later) and falls back to TCP on any error, EPERM included.
	require.Equal(t, "ok", hs[0].do(t, "listen"))

	// Audit-only lets the ping socket through and reports it.
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5, Flags: enforcement.FlagAuditOnly}))
	h := f.start(dir)
	require.Equal(t, "ok", h.do(t, "socket %d %d %d", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP))
	ev = f.waitEvent(func(ev Event) bool { return ev.AuditOnly })
	require.Equal(t, Event{CgroupID: cg, Identity: 5, Hook: enforcement.HookSockCreate,
		Proto: enforcement.Proto(unix.IPPROTO_ICMP), Family: unix.AF_INET, SockProto: unix.IPPROTO_ICMP,
		SockType: unix.SOCK_DGRAM, AuditOnly: true}, ev)
}

// TestReadEventsSkipsUndecodable: a record ReadEvents cannot decode (here
// three bytes that a stand-in program puts on the real events ring buffer)
// is skipped and counted; the reader keeps going and delivers the next
// real event instead of ending, which would end the node.
func TestReadEventsSkipsUndecodable(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SocketFilter,
		License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0x11223344),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.LoadMapPtr(asm.R1, f.e.net.Events.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 3),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnRingbufOutput.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	require.NoError(t, err)
	defer prog.Close()
	for range 2 {
		_, err = prog.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
		require.NoError(t, err)
	}

	h := f.start(dir)
	require.Equal(t, "EPERM", h.do(t, "socket %d %d %d", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW))
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, cg, ev.CgroupID)
	require.Equal(t, enforcement.HookSockCreate, ev.Hook)
	st, err := f.e.Stats()
	require.NoError(t, err)
	require.Equal(t, uint64(2), st.Undecodable)
	require.Zero(t, st.Dropped)
}
