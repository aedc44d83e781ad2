package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/scheduler/executor/shim"
)

// A compute node's kernel enforcement: the BPF programs of package
// enforcement/kernel attached to the node's task root, kept in step with
// the sync stream (each job's identity number and compiled allow rules)
// and with the executor (each run's cgroup bound to its task's identity
// before anything runs in it), and their denials turned into audit events.
// Without BPF the node is degraded, reports it, and says so in its audit
// log: never silently.

// bpfPinRoot holds every node's pinned programs and maps on this machine.
const bpfPinRoot = "/sys/fs/bpf/unum"

// Denial events are aggregated: the first of a kind (task, hook,
// destination) is recorded at once, repeats within denyWindow are counted
// into one event at its end, so a task looping on a forbidden connect
// cannot flood the audit log. denyQueue bounds the events waiting to be
// recorded; beyond it they are counted as dropped.
const (
	denyWindow = 10 * time.Second
	denyQueue  = 1024
)

// bindWait bounds how long a run waits for the sync that names its
// identity before it fails (and is retried with the restart backoff).
const bindWait = 30 * time.Second

type enforcer struct {
	n      *node
	k      *kernel.Enforcer // nil: degraded
	reason string           // why degraded, or why the LSM layer is not active ("" when neither)
	// recreated are the pinned maps Open found with another layout and
	// recreated empty (recorded with the mode at start).
	recreated []string
	// layers are the active layers, fixed for the run: the task shim's
	// (seccomp, landlock) and the BPF ones Open attached.
	layers []string
	pinDir string // this node's pins under bpfPinRoot
	// syscallAuditOff: the operator turned the syscall audit layer off
	// (Options.NoSyscallAudit); the reason says so.
	syscallAuditOff bool
	// model is the task shim's seccomp filter, run in user space: it
	// tells a refusal of the filter from an EPERM of another origin among
	// the syscall audit layer's events, and names the call (nil: no
	// filter on this architecture, the layer is not loaded).
	model *shim.FilterModel
	// modelErr is why the filter model could not be built (then the
	// syscall audit layer is not loaded, and the reason says why).
	modelErr string
	queue    chan denial
	// modeChanged asks recordLoop to record the mode (it may block on the
	// audit log, which applySync must not).
	modeChanged chan struct{}
	mu          struct {
		sync.Mutex
		// identities by SPIFFE ID, from the last sync with the network;
		// spiffeOf the other way, for events (the kernel reports numbers).
		identities map[string]netIdentity
		spiffeOf   map[enforcement.IdentityNum]string
		changed    chan struct{} // closed and replaced when identities change
		applied    enforcement.Plan
		// dirty: what the rules map holds is not known (an adoption or an
		// apply failed midway): read it back before the next difference.
		dirty bool
		// synced: a sync's network was applied in this run (the first one
		// sets the node-wide audit-only flag whatever the pinned map held).
		synced    bool
		tasks     map[string]string // task id -> SPIFFE ID (from the allocations)
		bound     map[string]boundTask
		byCgroup  map[uint64]string // cgroup id -> task id
		nodeAudit bool
		syncRev   int64
		err       string
		mode      enforcement.Mode
		denials   *denials
		dropped   int64
	}
}

type netIdentity struct {
	num       enforcement.IdentityNum
	auditOnly bool
}

type boundTask struct {
	cgroup  uint64
	binding enforcement.Binding
}

type denyKey struct {
	// overflow: too many kinds at once; this one counts a task's and
	// hook's denials whatever their destination.
	overflow  bool
	task      string
	hook      enforcement.Hook
	addr      netip.Addr
	port      uint16
	proto     enforcement.Proto
	sockProto uint16 // the socket's full protocol (MPTCP does not fit proto)
	sockType  uint32
	auditOnly bool
	syscall   string // HookSyscall: the refused call's name
}

type denial struct {
	// since is when the first repeat happened (aggregated repeats only).
	since    time.Time
	key      denyKey
	spiffe   string // the task's identity when it happened ("" for none)
	identity enforcement.IdentityNum
	family   uint8
	first    time.Time
	count    int
	// HookSyscall: the errno the task got, and the process of the first.
	errno unix.Errno
	pid   uint32
	comm  string
}

// startEnforcement probes the kernel and opens (or adopts) the node's
// programs on its task root. Failing to get BPF is not an error: the
// node is degraded and reports why.
func (n *node) startEnforcement(c *compute) *enforcer {
	e := &enforcer{n: n, queue: make(chan denial, denyQueue), modeChanged: make(chan struct{}, 1), layers: slices.Clone(c.exec.Layers())}
	e.mu.identities = map[string]netIdentity{}
	e.mu.spiffeOf = map[enforcement.IdentityNum]string{}
	e.mu.changed = make(chan struct{})
	e.mu.tasks = map[string]string{}
	e.mu.bound = map[string]boundTask{}
	e.mu.byCgroup = map[uint64]string{}
	e.mu.denials = newDenials(denyWindow)
	probe := kernel.Probe
	if n.o.KernelProbe != nil {
		probe = n.o.KernelProbe
	}
	caps := probe()
	e.pinDir = filepath.Join(bpfPinRoot, cgroupName(n.cfg.Name, n.l.Dir))
	if !caps.CgroupBPF {
		e.reason = "no cgroup BPF: " + caps.Reason
	} else {
		var syscalls []uint32
		e.syscallAuditOff = n.o.NoSyscallAudit
		if slices.Contains(e.layers, enforcement.LayerSeccomp) && !n.o.NoSyscallAudit {
			// The refusals to record are the filter's, so the audit layer
			// watches exactly the calls the shim's list refuses.
			if m, err := shim.NewFilterModel(); err == nil {
				e.model, syscalls = m, m.Audited()
			} else {
				// The filter runs, but without its model the layer could
				// not tell its refusals from other EPERMs: not loaded.
				e.modelErr = err.Error()
				n.log.Error("the seccomp filter model: the syscall audit layer is not loaded", "err", err)
			}
		}
		k, err := openKernel(n, kernel.Config{
			PinDir: e.pinDir,
			Cgroup: c.cgroups.Root(),
			// Open loads the LSM and syscall audit layers where the
			// kernel allows them and says why not otherwise (reported as
			// the reason).
			LSM:      true,
			Syscalls: syscalls,
			Log:      n.log.With("component", "enforcement"),
		})
		if err != nil {
			e.reason = "load BPF programs: " + err.Error()
			if _, serr := os.Stat(e.pinDir); serr == nil {
				e.reason += " (programs an earlier run pinned may still be attached: tasks are denied all network)"
			}
		} else {
			e.k = k
			if err := e.adopt(); err != nil {
				n.log.Error("adopt pinned enforcement state", "err", err)
			}
		}
	}
	if e.k == nil {
		n.log.Warn("kernel enforcement is degraded: tasks are not confined by BPF", "reason", e.reason)
	}
	slices.Sort(e.layers)
	e.noteMode()
	return e
}

// bpfLock serialises, between the nodes of one machine, sweeping defunct
// pins and opening (a sweep must not remove a directory another node is
// filling).
const bpfLock = "/run/unum/bpf.lock"

// openKernel sweeps the pins of nodes whose task roots are gone (they
// crashed and their reapers removed the roots: they enforce nothing) and
// opens this node's programs, under the machine-wide lock.
func openKernel(n *node, cfg kernel.Config) (*kernel.Enforcer, error) {
	if err := os.MkdirAll(filepath.Dir(bpfLock), 0o755); err != nil {
		return nil, fmt.Errorf("bpf lock: %w", err)
	}
	f, err := os.OpenFile(bpfLock, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bpf lock: %w", err)
	}
	defer f.Close() // releases the lock
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("bpf lock: %w", err)
	}
	if removed, err := kernel.SweepDefunct(bpfPinRoot); err != nil {
		n.log.Warn("sweep defunct BPF pins", "err", err)
	} else if len(removed) > 0 {
		n.log.Info("removed defunct BPF pins", "dirs", removed)
	}
	return kernel.Open(context.Background(), cfg)
}

// adopt reads what the pinned maps hold: the rules stay until the first
// sync replaces them; the bindings are of an earlier run's tasks, which
// the executor swept, so they go.
func (e *enforcer) adopt() error {
	st, err := e.k.Stats()
	if err != nil {
		return err
	}
	e.layers = append(e.layers, st.Layers...)
	var why []string
	if st.LSMReason != "" {
		why = append(why, "bpf-lsm not active: "+st.LSMReason)
	}
	switch {
	case e.syscallAuditOff:
		why = append(why, "bpf-syscall-audit off (unum node --syscall-audit=false): seccomp refusals are not recorded")
	case e.modelErr != "":
		why = append(why, "bpf-syscall-audit not loaded (seccomp refusals are not recorded): the seccomp filter model: "+e.modelErr)
	case st.SyscallReason != "" && e.model != nil:
		why = append(why, "bpf-syscall-audit not active (seccomp refusals are not recorded): "+st.SyscallReason)
	}
	e.reason = strings.Join(why, "; ")
	e.recreated = e.k.Recreated()
	e.mu.Lock()
	// What the pinned settings say is what the kernel does until the
	// first sync: report it so.
	e.mu.nodeAudit = st.NodeAuditOnly
	e.mu.Unlock()
	rules, err := e.k.Rules()
	if err != nil {
		e.mu.Lock()
		e.mu.dirty = true
		e.mu.Unlock()
		return err
	}
	e.mu.Lock()
	e.mu.applied = enforcement.Plan(rules)
	e.mu.Unlock()
	bindings, err := e.k.Bindings()
	if err != nil {
		return err
	}
	var errs []error
	for id := range bindings {
		errs = append(errs, e.k.Unbind(id))
	}
	return errors.Join(errs...)
}

// mode is the node's current mode.
func (e *enforcer) modeLocked() enforcement.Mode {
	switch {
	case e.k == nil:
		return enforcement.ModeDegraded
	case e.mu.nodeAudit:
		return enforcement.ModeAuditOnly
	}
	return enforcement.ModeEnforce
}

// EnforcementModeDetails are an enforcement.mode event's details.
type EnforcementModeDetails struct {
	Mode   string   `json:"mode"`
	Before string   `json:"before,omitempty"`
	Layers []string `json:"layers"`
	Reason string   `json:"reason,omitempty"`
	// Recreated are pinned maps an upgrade found with another layout and
	// recreated empty: they denied everything until the first sync.
	Recreated []string `json:"recreated,omitempty"`
}

// noteMode records the mode when it changed (at start too, with the
// layers, which are fixed for the run).
func (e *enforcer) noteMode() {
	e.mu.Lock()
	mode, before := e.modeLocked(), e.mu.mode
	e.mu.mode = mode
	e.mu.Unlock()
	if mode == before {
		return
	}
	n := e.n
	layers := e.layers
	n.log.Info("enforcement mode", "mode", mode, "layers", strings.Join(layers, ","), "reason", e.reason)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := audit.Event{Kind: audit.KindKernel, Action: audit.ActionEnforcementMode, Outcome: audit.Allow, Subject: n.id.String(),
		Resource: "node/-/" + n.cfg.Name}.WithDetails(EnforcementModeDetails{Mode: string(mode), Before: string(before), Layers: layers, Reason: e.reason, Recreated: e.recreated})
	if err := n.audit.Record(ctx, &ev); err != nil {
		n.log.Error("audit record failed", "action", ev.Action, "err", err)
	}
}

// mode is the node's mode for heartbeats.
func (e *enforcer) mode() string {
	if e == nil {
		return string(enforcement.ModeDegraded)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return string(e.mu.mode)
}

// applySync takes the allocations and network of a sync response: which
// task is which identity, each identity's number and rules.
func (e *enforcer) applySync(resp *unumv1.SyncAgentResponse) {
	if e == nil {
		return
	}
	if resp.GetAllocationsLoaded() {
		tasks := map[string]string{}
		for _, a := range resp.GetAllocations() {
			tasks[a.GetId()] = a.GetSpiffeId()
		}
		e.mu.Lock()
		e.mu.tasks = tasks
		e.mu.Unlock()
	}
	if !resp.GetNetworkLoaded() {
		return
	}
	ids := map[string]netIdentity{}
	spiffeOf := map[enforcement.IdentityNum]string{}
	want := enforcement.Plan{}
	var problems []string
	for _, ni := range resp.GetNetwork() {
		num := enforcement.IdentityNum(ni.GetNumber())
		if num == 0 {
			continue
		}
		ids[ni.GetSpiffeId()] = netIdentity{num: num, auditOnly: ni.GetAuditOnly()}
		spiffeOf[num] = ni.GetSpiffeId()
		if ni.GetError() != "" {
			problems = append(problems, ni.GetSpiffeId()+": "+ni.GetError())
		}
		for _, s := range ni.GetRules() {
			r, err := enforcement.ParseRule(s)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", ni.GetSpiffeId(), err))
				continue
			}
			want[num] = append(want[num], r)
		}
	}
	for num, rules := range want {
		want[num] = enforcement.CanonicalRules(rules)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.identities, e.mu.spiffeOf = ids, spiffeOf
	close(e.mu.changed)
	e.mu.changed = make(chan struct{})
	nodeAudit := resp.GetAuditOnly()
	if e.k == nil {
		e.mu.syncRev = resp.GetRevision()
		return
	}
	if e.mu.dirty {
		if got, err := e.k.Rules(); err == nil {
			e.mu.applied, e.mu.dirty = enforcement.Plan(got), false
		} else {
			problems = append(problems, "read the rules map back: "+err.Error())
		}
	}
	add, del := enforcement.Diff(e.mu.applied, want)
	if err := e.k.ApplyRules(add, del); err != nil {
		problems = append(problems, "apply rules: "+err.Error())
		// What the map holds now is unknown: read it back, now or at the
		// next sync.
		if got, rerr := e.k.Rules(); rerr == nil {
			e.mu.applied = enforcement.Plan(got)
		} else {
			e.mu.dirty = true
		}
	} else {
		e.mu.applied = want
	}
	// Bound tasks follow their identity's audit-only flag.
	for task, b := range e.mu.bound {
		// A task whose identity left the sync keeps its number (it has no
		// rules any more) and loses any audit-only flag.
		nb := enforcement.Binding{Identity: b.binding.Identity}
		if id, ok := ids[e.mu.tasks[task]]; ok {
			nb = bindingOf(id)
		}
		if nb != b.binding {
			if err := e.k.Bind(b.cgroup, nb); err != nil {
				problems = append(problems, "bind "+task+": "+err.Error())
				continue
			}
			e.mu.bound[task] = boundTask{cgroup: b.cgroup, binding: nb}
		}
	}
	// The first sync of a run sets the flag whatever the adopted map
	// held: the cluster may have changed it while no agent ran.
	if !e.mu.synced || nodeAudit != e.mu.nodeAudit {
		if err := e.k.SetNodeAuditOnly(nodeAudit); err != nil {
			problems = append(problems, "node audit-only: "+err.Error())
		} else {
			e.mu.synced = true
			if nodeAudit != e.mu.nodeAudit {
				e.mu.nodeAudit = nodeAudit
				select {
				case e.modeChanged <- struct{}{}:
				default:
				}
			}
		}
	}
	e.mu.syncRev = resp.GetRevision()
	e.mu.err = strings.Join(problems, "; ")
	if e.mu.err != "" {
		e.n.log.Warn("enforcement rules", "problems", e.mu.err)
	}
}

func bindingOf(id netIdentity) enforcement.Binding {
	b := enforcement.Binding{Identity: id.num}
	if id.auditOnly {
		b.Flags |= enforcement.FlagAuditOnly
	}
	return b
}

// bind maps a run's cgroup to its task's identity before anything runs in
// it, waiting for the sync that names the identity. An exec task (the
// caller's delegated credential, no workload identity) stays unbound: the
// kernel denies it every connection.
func (e *enforcer) bind(ctx context.Context, taskID, dir string) error {
	if e == nil || e.k == nil {
		return nil
	}
	cg, err := kernel.CgroupID(dir)
	if err != nil {
		return err
	}
	// A sync names the identity soon after the allocation; a job that has
	// no identity number (stored before numbers existed: resubmitting it
	// gives one) never gets one, and its run fails and is retried.
	ctx, cancel := context.WithTimeout(ctx, bindWait)
	defer cancel()
	for {
		e.mu.Lock()
		e.mu.byCgroup[cg] = taskID
		spiffe, isTask := e.mu.tasks[taskID]
		if strings.HasPrefix(taskID, execTaskPrefix) || !isTask {
			e.mu.Unlock()
			return nil
		}
		id, ok := e.mu.identities[spiffe]
		changed := e.mu.changed
		if ok {
			b := bindingOf(id)
			err := e.k.Bind(cg, b)
			if err == nil {
				e.mu.bound[taskID] = boundTask{cgroup: cg, binding: b}
			}
			e.mu.Unlock()
			return err
		}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("no network identity for %s yet: %w", spiffe, ctx.Err())
		case <-changed:
		}
	}
}

// unbind forgets a removed run's cgroup.
func (e *enforcer) unbind(taskID string) {
	if e == nil || e.k == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.mu.bound[taskID]; ok {
		if err := e.k.Unbind(b.cgroup); err != nil {
			e.n.log.Warn("unbind task cgroup", "task", taskID, "err", err)
		}
		delete(e.mu.bound, taskID)
	}
	for cg, t := range e.mu.byCgroup {
		if t == taskID {
			delete(e.mu.byCgroup, cg)
		}
	}
}

// report fills a heartbeat with the node's enforcement.
func (e *enforcer) report(req *unumv1.HeartbeatRequest) {
	if e == nil {
		return
	}
	e.mu.Lock()
	r := &unumv1.NodeEnforcement{Mode: string(e.mu.mode), Reason: e.reason, Layers: slices.Clone(e.layers),
		SyncRevision: e.mu.syncRev, Error: e.mu.err, EventsDropped: e.mu.dropped}
	r.DenialsPerMinute = e.mu.denials.perMinute(time.Now())
	if e.k != nil {
		// What the node put in the maps (read back whenever an update
		// failed): walking the kernel's maps every heartbeat would cost a
		// system call per entry.
		r.Maps = map[string]int64{"rules": int64(e.mu.applied.Len()), "cgroups": int64(len(e.mu.bound))}
	}
	e.mu.Unlock()
	if e.k != nil {
		if st, err := e.k.Stats(); err == nil {
			r.Programs = st.Programs
			r.EventsDropped += int64(st.Dropped) + int64(st.Undecodable)
		} else {
			r.Error = strings.TrimPrefix(r.Error+"; stats: "+err.Error(), "; ")
		}
	}
	req.EnforcementStatus = r
}

// readEvents turns the kernel's events into aggregated denials until ctx
// ends.
func (e *enforcer) readEvents(ctx context.Context) error {
	if e == nil || e.k == nil {
		return nil
	}
	return e.k.ReadEvents(ctx, func(ev kernel.Event) {
		now := time.Now()
		e.mu.Lock()
		defer e.mu.Unlock()
		key := denyKey{task: e.mu.byCgroup[ev.CgroupID], hook: ev.Hook, addr: ev.Addr, port: ev.Port, proto: ev.Proto, sockProto: ev.SockProto, sockType: ev.SockType, auditOnly: ev.AuditOnly}
		if ev.Hook == enforcement.HookSyscall {
			// The kernel reports every watched call that failed with
			// EPERM in the subtree; only the filter's refusals are
			// recorded as such (a socket refused by the sock_create hook
			// is that hook's event already).
			name, ok := e.refusedBySeccomp(ev)
			if !ok {
				return
			}
			key.syscall = name
		}
		if key.task == "" {
			// Not a cgroup of this run: queued while no agent ran, or a
			// process that bypassed the executor.
			key.task = fmt.Sprintf("%s%d", outsideTaskPrefix, ev.CgroupID)
		}
		// The identity is what the kernel judged with, by number (the
		// binding may be gone by now).
		d := denial{key: key, spiffe: e.mu.spiffeOf[ev.Identity], identity: ev.Identity, family: ev.Family, first: now, count: 1,
			errno: ev.Errno, pid: ev.PID, comm: ev.Comm}
		if !e.mu.denials.add(d, now) {
			return
		}
		e.enqueueLocked(d)
	})
}

// refusedBySeccomp says whether the task filter refuses the reported call
// with the errno the task got, and names it.
func (e *enforcer) refusedBySeccomp(ev kernel.Event) (string, bool) {
	if e.model == nil {
		return "", false
	}
	name, errno, ok := e.model.Refused(ev.Syscall, ev.Args[0], ev.Args[1])
	if !ok || errno != ev.Errno {
		return "", false
	}
	return name, true
}

func (e *enforcer) enqueueLocked(d denial) {
	select {
	case e.queue <- d:
	default:
		e.mu.dropped += int64(d.count)
	}
}

// recordLoop ends aggregation windows (recording their repeats as one
// event) and records queued denials, until ctx ends.
func (e *enforcer) recordLoop(ctx context.Context) {
	if e == nil || e.k == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-e.queue:
			e.record(d)
		case <-e.modeChanged:
			e.noteMode()
		case now := <-t.C:
			e.mu.Lock()
			for _, d := range e.mu.denials.expire(now) {
				e.enqueueLocked(d)
			}
			e.mu.Unlock()
		}
	}
}

// EnforcementDenyDetails are an enforcement.deny event's details.
type EnforcementDenyDetails struct {
	Task string `json:"task,omitempty"`
	// Identity is the identity number the kernel judged with (0: the
	// process's cgroup had none).
	Identity    uint32 `json:"identity,omitempty"`
	Hook        string `json:"hook"`
	Destination string `json:"destination,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	// Syscall names the system call the task's seccomp filter refused
	// (hook "syscall"), Errno what the task got; PID and Command are the
	// process of the first of them.
	Syscall    string `json:"syscall,omitempty"`
	Errno      string `json:"errno,omitempty"`
	PID        uint32 `json:"pid,omitempty"`
	Command    string `json:"command,omitempty"`
	SocketType uint32 `json:"socket_type,omitempty"`
	// SocketProtocol is the socket's protocol number (IPPROTO_*).
	SocketProtocol uint16 `json:"socket_protocol,omitempty"`
	Family         uint8  `json:"family,omitempty"`
	// AuditOnly: the kernel allowed it (audit-only) but would have denied it.
	AuditOnly bool `json:"audit_only,omitempty"`
	// Count is how many times it happened (repeats within the window are
	// recorded together, at the window's end).
	Count int `json:"count"`
	// Since is when the first of them happened (for repeats counted in a
	// window: the first repeat).
	Since time.Time `json:"since"`
}

func (e *enforcer) record(d denial) {
	n := e.n
	spiffe := d.spiffe
	since := d.first
	if !d.since.IsZero() {
		since = d.since
	}
	det := EnforcementDenyDetails{Task: d.key.task, Identity: uint32(d.identity), Hook: d.key.hook.String(), Protocol: d.key.proto.String(),
		SocketType: d.key.sockType, SocketProtocol: d.key.sockProto, Family: d.family, AuditOnly: d.key.auditOnly, Count: d.count, Since: since.UTC()}
	resource := "net/-/" + d.key.hook.String()
	if d.key.hook == enforcement.HookSyscall {
		det.Protocol, det.Syscall, det.Errno, det.PID, det.Command = "", d.key.syscall, unix.ErrnoName(d.errno), d.pid, d.comm
		resource = "syscall/-/" + d.key.syscall
	}
	if d.key.addr.IsValid() {
		det.Destination = netip.AddrPortFrom(d.key.addr, d.key.port).String()
		resource = "net/-/" + det.Destination
	}
	outcome, reasons := audit.Deny, denialReasons(d)
	if d.key.auditOnly {
		outcome, reasons = audit.Allow, append([]string{"audit-only: would have been denied"}, reasons...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := audit.Event{Kind: audit.KindKernel, Action: audit.ActionEnforcementDeny, Outcome: outcome, Reasons: reasons,
		Subject: spiffe, Resource: resource}.WithDetails(det)
	if err := n.audit.Record(ctx, &ev); err != nil {
		n.log.Error("audit record failed", "action", ev.Action, "err", err)
	}
}

// outsideTaskPrefix begins the task of a denial whose cgroup is none of
// this run's tasks (then "cgroup:" and its id).
const outsideTaskPrefix = "cgroup:"

// denialReasons says why d was denied, in the words of its record.
func denialReasons(d denial) []string {
	var reasons []string
	switch {
	case d.key.hook == enforcement.HookSyscall && strings.HasPrefix(d.key.task, outsideTaskPrefix):
		// No shim of this run started the process (it bypassed the
		// executor, or its task is gone): it may have no filter, and the
		// EPERM may be a capability check's or the BPF LSM's.
		reasons = []string{"EPERM on " + d.key.syscall + " under the task root, outside any task: the refusal may not be seccomp's"}
	case d.key.hook == enforcement.HookSyscall:
		// The task's shim installed the filter, which refuses exactly
		// this call with this errno.
		reasons = []string{"refused by the task's seccomp filter"}
	case d.identity == 0:
		reasons = []string{"the process's cgroup has no identity: everything is denied"}
	case d.key.hook == enforcement.HookSockCreate:
		reasons = []string{"tasks may open only TCP and UDP sockets"}
	default:
		reasons = []string{"not in the identity's allow list"}
	}
	if d.key.overflow {
		reasons = append(reasons, "more destinations than the node tracks at once: counted together")
	}
	return reasons
}

// close releases the node's handles; the pinned programs keep enforcing,
// unless the node stopped cleanly (stopped: every task stopped, the task
// root removed): then nothing is left to enforce and the pins go.
func (e *enforcer) close(stopped bool) {
	if e == nil || e.k == nil {
		return
	}
	_ = e.k.Close()
	if stopped {
		if err := kernel.Remove(e.pinDir); err != nil {
			e.n.log.Warn("remove BPF pins", "err", err)
		}
	}
}
