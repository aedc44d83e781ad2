package kernel

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
)

// TestConnectAllowList: a task reaches exactly what its identity's rules
// allow; everything else is EPERM with an event naming the cgroup (whose
// id is the one bpf_get_current_cgroup_id sees), identity, hook and
// destination (T-103).
func TestConnectAllowList(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	allowed := listenTCP(t, "127.0.0.1:0")
	other := listenTCP(t, "127.0.0.1:0")
	anyPort := listenTCP(t, "127.0.0.1:0")
	six := listenTCP(t, "[::1]:0")
	require.NoError(t, f.e.ApplyRules(rules(5,
		fmt.Sprintf("tcp 127.0.0.1/32:%d", allowed.Port()),
		"tcp 127.0.0.3/32:*",                             // port wildcard
		fmt.Sprintf("tcp 127.1.0.0/16:%d", other.Port()), // prefix
		fmt.Sprintf("tcp [::1/128]:%d", six.Port()),
	), nil))
	h := f.start(dir)

	require.Equal(t, "ok", h.do(t, "tcp %s", allowed))
	require.Equal(t, "ok", h.do(t, "tcp %s", six))
	// Allowed by the wildcard and the prefix: nothing listens, so the
	// kernel's answer is "refused", not EPERM.
	require.Equal(t, "ECONNREFUSED", h.do(t, "tcp 127.0.0.3:%d", anyPort.Port()))
	require.Equal(t, "ECONNREFUSED", h.do(t, "tcp 127.1.200.9:%d", other.Port()))
	f.noEvent()

	require.Equal(t, "EPERM", h.do(t, "tcp %s", other))
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, Event{
		CgroupID: cg, Identity: 5, Hook: enforcement.HookConnect4, Proto: enforcement.ProtoTCP,
		Addr: other.Addr(), Port: other.Port(), Family: unix.AF_INET, SockProto: unix.IPPROTO_TCP,
		SockType: unix.SOCK_STREAM,
	}, ev)
	require.Equal(t, "EPERM", h.do(t, "tcp 127.2.0.1:%d", other.Port())) // outside the /16
	require.Equal(t, "EPERM", h.do(t, "tcp 127.0.0.1:%d", anyPort.Port()))
	require.Equal(t, "EPERM", h.do(t, "tcp [::1]:%d", allowed.Port()))
	ev = f.waitEvent(func(ev Event) bool { return ev.Hook == enforcement.HookConnect6 })
	require.Equal(t, netip.MustParseAddr("::1"), ev.Addr)
	require.Equal(t, allowed.Port(), ev.Port)
	require.Equal(t, cg, ev.CgroupID)

	// The same connect from outside the task root is not governed.
	require.Equal(t, "ok", errnoName(helperDo([]string{"tcp", other.String()})))
}

// TestRuleWildcards: each of the four keys the programs try allows a
// connect on its own (protocol any with the port, as Compile writes
// listener rules; exact; any port; any protocol and port), and a rule of
// the other protocol does not.
func TestRuleWildcards(t *testing.T) {
	f := newFixture(t)
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	require.NoError(t, f.e.ApplyRules(rules(5,
		"any 127.0.0.11/32:1011",
		"tcp 127.0.0.12/32:1012",
		"tcp 127.0.0.13/32:*",
		"any 127.0.0.14/32:*",
		"udp 127.0.0.15/32:1015",
		"udp 127.0.0.16/32:*",
	), nil))
	h := f.start(dir)
	// Allowed, and nothing listens there: "refused", not EPERM.
	for _, dst := range []string{"127.0.0.11:1011", "127.0.0.12:1012", "127.0.0.13:1013", "127.0.0.14:1014"} {
		require.Equal(t, "ECONNREFUSED", h.do(t, "tcp %s", dst), dst)
	}
	for _, dst := range []string{"127.0.0.11:1012", "127.0.0.12:1013", "127.0.0.15:1015", "127.0.0.16:1016"} {
		require.Equal(t, "EPERM", h.do(t, "tcp %s", dst), dst)
	}
}

// TestUDPSendmsg: an unconnected sendto is judged like a connect.
func TestUDPSendmsg(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	ok4 := listenUDP(t, "127.0.0.1:0")
	no4 := listenUDP(t, "127.0.0.1:0")
	ok6 := listenUDP(t, "[::1]:0")
	require.NoError(t, f.e.ApplyRules(rules(5,
		fmt.Sprintf("udp 127.0.0.1/32:%d", ok4.Port()),
		fmt.Sprintf("any [::1/128]:%d", ok6.Port()),
		fmt.Sprintf("tcp 127.0.0.1/32:%d", no4.Port()), // TCP only: no UDP
	), nil))
	h := f.start(dir)
	require.Equal(t, "ok", h.do(t, "udp %s", ok4))
	require.Equal(t, "ok", h.do(t, "udp %s", ok6))
	f.noEvent()
	require.Equal(t, "EPERM", h.do(t, "udp %s", no4))
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, enforcement.HookSendmsg4, ev.Hook)
	require.Equal(t, enforcement.ProtoUDP, ev.Proto)
	require.Equal(t, no4.Port(), ev.Port)
	require.Equal(t, "EPERM", h.do(t, "udp [::1]:%d", no4.Port()))
	ev = f.waitEvent(func(Event) bool { return true })
	require.Equal(t, enforcement.HookSendmsg6, ev.Hook)
}

// TestIPv4MappedIPv6 (T-104): an IPv6 socket aimed at ::ffff:a.b.c.d is
// judged by the IPv4 rules, and an IPv6 rule does not open IPv4.
func TestIPv4MappedIPv6(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	allowed := listenTCP(t, "127.0.0.1:0")
	forbidden := listenTCP(t, "127.0.0.1:0")
	udpOK := listenUDP(t, "127.0.0.1:0")
	require.NoError(t, f.e.ApplyRules(rules(5,
		fmt.Sprintf("tcp 127.0.0.1/32:%d", allowed.Port()),
		fmt.Sprintf("udp 127.0.0.1/32:%d", udpOK.Port()),
		// All of IPv6 at the forbidden port: must not reach the IPv4 listener.
		fmt.Sprintf("any [::/0]:%d", forbidden.Port()),
	), nil))
	h := f.start(dir)

	require.Equal(t, "ok", h.do(t, "tcp [::ffff:127.0.0.1]:%d", allowed.Port()))
	require.Equal(t, "EPERM", h.do(t, "tcp [::ffff:127.0.0.1]:%d", forbidden.Port()))
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, enforcement.HookConnect6, ev.Hook)
	require.Equal(t, netip.MustParseAddr("127.0.0.1"), ev.Addr, "reported as the IPv4 address it was judged as")
	require.Equal(t, "EPERM", h.do(t, "tcp 127.0.0.1:%d", forbidden.Port()))
	require.Equal(t, "ok", h.do(t, "udp [::ffff:127.0.0.1]:%d", udpOK.Port()))
	require.Equal(t, "EPERM", h.do(t, "udp [::ffff:127.0.0.2]:%d", udpOK.Port()))
	// The IPv6 rule does open IPv6.
	require.Equal(t, "ECONNREFUSED", h.do(t, "tcp [::1]:%d", forbidden.Port()))
}

// TestUnboundCgroupDenied (T-106): a process in the task subtree whose
// cgroup has no identity (it bypassed the shim, or its task was unbound)
// is denied everything, including what other identities may reach.
func TestUnboundCgroupDenied(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	_, bound := f.group("bound")
	stray, strayID := f.group("stray")
	require.NoError(t, f.e.Bind(bound, enforcement.Binding{Identity: 5}))
	l := listenTCP(t, "127.0.0.1:0")
	u := listenUDP(t, "127.0.0.1:0")
	require.NoError(t, f.e.ApplyRules(rules(5, "any 0.0.0.0/0:*", "any [::/0]:*"), nil))
	for _, dir := range []string{stray, f.taskRoot} {
		h := f.start(dir)
		require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
		require.Equal(t, "EPERM", h.do(t, "udp %s", u))
		require.Equal(t, "EPERM", h.do(t, "tcp [::1]:%d", l.Port()))
	}
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, strayID, ev.CgroupID)
	require.Zero(t, ev.Identity)

	// A bound task that unbinds loses everything from the next connect.
	dir, cg := f.group("was-bound")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	h := f.start(dir)
	require.Equal(t, "ok", h.do(t, "tcp %s", l))
	require.NoError(t, f.e.Unbind(cg))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
	require.NoError(t, f.e.Unbind(cg), "unbinding twice is not an error")
}

// TestRawSocketsRefused (T-105): raw IPv4 and IPv6 sockets are refused in
// the task subtree, even to root, bound or not; the same calls outside the
// subtree succeed, so it is the program and not a missing capability that
// refuses them. (Packet sockets never reach cgroup/sock_create: the LSM
// layer refuses them, TestLSMEscapeSet.)
func TestRawSocketsRefused(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	stray, _ := f.group("stray")
	cases := []string{
		fmt.Sprintf("socket %d %d %d", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6),
		fmt.Sprintf("socket %d %d %d", unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW),
	}
	for _, c := range cases {
		require.Equal(t, "ok", errnoName(helperDo(strings.Fields(c))), "outside the subtree: %s", c)
	}
	for _, d := range []string{dir, stray} {
		h := f.start(d)
		for _, c := range cases {
			require.Equal(t, "EPERM", h.do(t, "%s", c), c)
		}
		// Ordinary sockets are untouched.
		require.Equal(t, "ok", h.do(t, "socket %d %d 0", unix.AF_INET, unix.SOCK_STREAM))
		require.Equal(t, "ok", h.do(t, "socket %d %d 0", unix.AF_INET6, unix.SOCK_DGRAM))
		require.Equal(t, "ok", h.do(t, "socket %d %d 0", unix.AF_UNIX, unix.SOCK_STREAM))
	}
	ev := f.waitEvent(func(Event) bool { return true })
	require.Equal(t, Event{CgroupID: cg, Identity: 5, Hook: enforcement.HookSockCreate,
		Proto: enforcement.Proto(unix.IPPROTO_ICMP), Family: unix.AF_INET, SockProto: unix.IPPROTO_ICMP,
		SockType: unix.SOCK_RAW}, ev)
}

// TestAuditOnly: a binding flagged audit-only, and a node in audit-only,
// allow what they would refuse and report it.
func TestAuditOnly(t *testing.T) {
	f := newFixture(t)
	f.readEvents()
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5, Flags: enforcement.FlagAuditOnly}))
	l := listenTCP(t, "127.0.0.1:0")
	h := f.start(dir)
	require.Equal(t, "ok", h.do(t, "tcp %s", l))
	ev := f.waitEvent(func(Event) bool { return true })
	require.True(t, ev.AuditOnly)
	require.Equal(t, enforcement.IdentityNum(5), ev.Identity)
	require.Equal(t, "ok", h.do(t, "socket %d %d %d", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP))
	ev = f.waitEvent(func(Event) bool { return true })
	require.True(t, ev.AuditOnly)
	require.Equal(t, enforcement.HookSockCreate, ev.Hook)

	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 5}))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
	require.False(t, f.waitEvent(func(Event) bool { return true }).AuditOnly)

	// Node audit-only covers unbound cgroups too.
	stray, _ := f.group("stray")
	hs := f.start(stray)
	require.NoError(t, f.e.SetNodeAuditOnly(true))
	st, err := f.e.Stats()
	require.NoError(t, err)
	require.True(t, st.NodeAuditOnly)
	require.Equal(t, "ok", hs.do(t, "tcp %s", l))
	ev = f.waitEvent(func(Event) bool { return true })
	require.True(t, ev.AuditOnly)
	require.Zero(t, ev.Identity)
	require.Equal(t, "ok", h.do(t, "tcp %s", l))
	require.NoError(t, f.e.SetNodeAuditOnly(false))
	require.Equal(t, "EPERM", hs.do(t, "tcp %s", l))
}

// TestRulesChangeForRunningProcess: ApplyRules opens and closes a path for
// a process that keeps running.
func TestRulesChangeForRunningProcess(t *testing.T) {
	f := newFixture(t)
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 9}))
	l := listenTCP(t, "127.0.0.1:0")
	h := f.start(dir)
	r := rules(9, fmt.Sprintf("tcp 127.0.0.0/8:%d", l.Port()))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
	require.NoError(t, f.e.ApplyRules(r, nil))
	require.Equal(t, "ok", h.do(t, "tcp %s", l))
	got, err := f.e.Rules()
	require.NoError(t, err)
	require.Equal(t, r, got)
	require.NoError(t, f.e.ApplyRules(nil, r))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
	got, err = f.e.Rules()
	require.NoError(t, err)
	require.Empty(t, got)

	// An invalid rule changes nothing, not even the valid ones beside it.
	bad := rules(9, fmt.Sprintf("tcp 127.0.0.1/32:%d", l.Port()))
	bad[9] = append(bad[9], enforcement.Rule{Prefix: netip.MustParsePrefix("10.0.0.1/8"), Proto: enforcement.ProtoTCP})
	require.Error(t, f.e.ApplyRules(bad, nil))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
	// Identity 0 is never a rule owner.
	require.Error(t, f.e.ApplyRules(rules(0, "tcp 127.0.0.1/32:*"), nil))
	require.Error(t, f.e.Bind(cg, enforcement.Binding{}))
}

// TestSurvivesAgentKill (enforcement lost with the agent): an agent
// process opens the enforcer, binds a task and dies by SIGKILL; the task
// is still refused what it may not reach, and a new agent adopts the same
// maps and links without attaching anything twice. Remove then takes it
// all down.
func TestSurvivesAgentKill(t *testing.T) {
	mount := requireCgroupBPF(t)
	name := fmt.Sprintf("unum-kernel-test-%d-%s", os.Getpid(), t.Name())
	root := mount + "/" + name
	taskRoot := root + "/tasks"
	pinDir := "/sys/fs/bpf/" + name
	require.NoError(t, os.MkdirAll(taskRoot+"/a", 0o755))
	t.Cleanup(func() { removeCgroupTree(t, root) })
	t.Cleanup(func() { Remove(pinDir) })
	cg, err := CgroupID(taskRoot + "/a")
	require.NoError(t, err)
	allowed := listenTCP(t, "127.0.0.1:0")
	forbidden := listenTCP(t, "127.0.0.1:0")
	rule := fmt.Sprintf("tcp 127.0.0.1/32:%d", allowed.Port())

	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), helperEnv+"=open", "UNUM_PIN="+pinDir, "UNUM_CGROUP="+taskRoot,
		fmt.Sprintf("UNUM_BIND=%d", cg), "UNUM_RULE="+rule)
	out, err := agent.StdoutPipe()
	require.NoError(t, err)
	agent.Stderr = os.Stderr
	require.NoError(t, agent.Start())
	sc := bufio.NewScanner(out)
	require.True(t, sc.Scan())
	require.Equal(t, "ready", sc.Text())
	require.NoError(t, agent.Process.Signal(syscall.SIGKILL))
	agent.Wait()

	h := startHelper(t, taskRoot+"/a")
	require.Equal(t, "ok", h.do(t, "tcp %s", allowed))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", forbidden))
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
		ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP6Sendmsg, ebpf.AttachCGroupInetSockCreate} {
		require.Equal(t, 1, attached(t, taskRoot, at), at)
	}

	// A new agent adopts.
	e, err := Open(t.Context(), Config{PinDir: pinDir, Cgroup: taskRoot})
	require.NoError(t, err)
	defer e.Close()
	require.Empty(t, e.Recreated())
	b, err := e.Bindings()
	require.NoError(t, err)
	require.Equal(t, map[uint64]enforcement.Binding{cg: {Identity: 7}}, b)
	got, err := e.Rules()
	require.NoError(t, err)
	require.Equal(t, rules(7, rule), got)
	require.Equal(t, 1, attached(t, taskRoot, ebpf.AttachCGroupInet4Connect))
	st, err := e.Stats()
	require.NoError(t, err)
	require.Equal(t, []string{"connect4", "connect6", "sendmsg4", "sendmsg6", "sock_create"}, st.Programs)
	sizes, err := e.MapSizes()
	require.NoError(t, err)
	require.Equal(t, map[string]int{"cgroups": 1, "rules": 1}, sizes)
	require.Equal(t, []string{enforcement.LayerNetwork}, st.Layers)
	require.Equal(t, "EPERM", h.do(t, "tcp %s", forbidden))

	// Remove detaches: the same connect now works.
	require.NoError(t, e.Close())
	require.NoError(t, Remove(pinDir))
	require.Equal(t, 0, attached(t, taskRoot, ebpf.AttachCGroupInet4Connect))
	require.Equal(t, "ok", h.do(t, "tcp %s", forbidden))
	_, err = os.Stat(pinDir)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestUpgradeUpdatesLinksInPlace: a second Open while the first is open
// (an upgrade handing over) updates the pinned links in place: same link,
// new program, never a moment with none or two.
func TestUpgradeUpdatesLinksInPlace(t *testing.T) {
	f := newFixture(t)
	dir, cg := f.group("a")
	require.NoError(t, f.e.Bind(cg, enforcement.Binding{Identity: 3}))
	l := listenTCP(t, "127.0.0.1:0")
	h := f.start(dir)
	before := linkAndProg(t, f.pinDir+"/links/connect4")

	// A task hammers connect during the upgrade: it must never get through.
	done := make(chan string)
	go func() {
		hh := startHelperNoCleanup(dir)
		defer hh.stop()
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if r := hh.doRaw(fmt.Sprintf("tcp %s", l)); r != "EPERM" {
				done <- r
				return
			}
		}
		done <- "EPERM"
	}()
	second := f.open()
	require.Equal(t, "EPERM", <-done)
	after := linkAndProg(t, f.pinDir+"/links/connect4")
	require.Equal(t, before[0], after[0], "same link")
	require.NotEqual(t, before[1], after[1], "new program")
	require.Equal(t, 1, attached(t, f.taskRoot, ebpf.AttachCGroupInet4Connect))
	require.Equal(t, "EPERM", h.do(t, "tcp %s", l))
	b, err := second.Bindings()
	require.NoError(t, err)
	require.Len(t, b, 1)
}

// TestRepinOnOtherCgroup: links pinned for another task root (the cgroup
// was recreated, or the configuration changed) are replaced, and the old
// root is let go.
func TestRepinOnOtherCgroup(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, f.e.Close())
	other := f.root + "/tasks2"
	require.NoError(t, os.MkdirAll(other, 0o755))
	e, err := Open(t.Context(), Config{PinDir: f.pinDir, Cgroup: other})
	require.NoError(t, err)
	defer e.Close()
	require.Equal(t, 0, attached(t, f.taskRoot, ebpf.AttachCGroupInet4Connect))
	require.Equal(t, 1, attached(t, other, ebpf.AttachCGroupInet4Connect))
}

// TestIncompatibleMapRecreated: a pinned map whose layout differs from the
// programs' (an upgrade changed it) is recreated empty and reported.
func TestIncompatibleMapRecreated(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, f.e.Close())
	// Stand in for an old version's cgroups map: other value size.
	path := f.pinDir + "/maps/cgroups"
	require.NoError(t, os.Remove(path))
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: 16})
	require.NoError(t, err)
	require.NoError(t, old.Pin(path))
	old.Close()
	e := f.open()
	require.Equal(t, []string{"cgroups"}, e.Recreated())
	require.NoError(t, e.Bind(1, enforcement.Binding{Identity: 1}))
}

func linkAndProg(t *testing.T, path string) [2]uint64 {
	t.Helper()
	l, err := loadPinnedLinkInfo(path)
	require.NoError(t, err)
	return l
}

// startHelperNoCleanup is startHelper for goroutines other than the test's.
type rawHelper struct {
	cmd *exec.Cmd
	h   *helper
}

func startHelperNoCleanup(dir string) *rawHelper {
	cg, err := os.Open(dir)
	if err != nil {
		panic(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=serve")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	return &rawHelper{cmd: cmd, h: &helper{cmd: cmd, in: in, out: bufio.NewScanner(out)}}
}

func (r *rawHelper) doRaw(line string) string {
	fmt.Fprintln(r.h.in, line)
	if !r.h.out.Scan() {
		return "no answer"
	}
	return r.h.out.Text()
}

func (r *rawHelper) stop() {
	r.h.in.Close()
	r.cmd.Process.Kill()
	r.cmd.Wait()
}
