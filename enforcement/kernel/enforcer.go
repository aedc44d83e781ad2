package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/enforcement"
)

// Config says where an Enforcer pins its objects and which cgroup subtree
// it governs. It is not modified after Open.
type Config struct {
	// PinDir holds the pinned maps and links, e.g. /sys/fs/bpf/unum/NODE.
	// It must be on a bpffs; bpffs is mounted at /sys/fs/bpf when PinDir
	// is under it and nothing is mounted there yet.
	PinDir string
	// Cgroup is the absolute path of the cgroup v2 directory that holds the
	// tasks (the task root). The programs attach to it and govern every
	// process in its subtree.
	Cgroup string
	// LSM also loads the BPF LSM layer when the kernel allows it. A kernel
	// that refuses it leaves the network layer working; Stats says which
	// layers are active.
	LSM bool
	// Syscalls are the system call numbers the task shim's seccomp filter
	// refuses with EPERM (shim.FilterModel.Audited): the syscall audit
	// layer reports those refusals in the task subtree. Empty: the layer
	// is not loaded. A kernel that refuses it leaves the other layers
	// working; Stats says why it is missing.
	Syscalls []uint32
	// Log receives adoption and upgrade decisions. Nil discards them.
	Log *slog.Logger

	// lsmRefusal, set by tests only, stands for a kernel that refuses the
	// LSM layer, so the refusal path is tested on kernels that load it.
	lsmRefusal error
}

// Event is one decision a program reported: a refusal, or in audit-only a
// refusal that was allowed.
type Event struct {
	CgroupID uint64
	Identity enforcement.IdentityNum // 0: the cgroup had no binding
	Hook     enforcement.Hook
	// Proto is the socket's protocol (IPPROTO_*), 0 when it does not fit
	// in 8 bits (IPPROTO_MPTCP, 262): SockProto has it in full.
	Proto enforcement.Proto
	// Addr is the destination (IPv4 unmapped: a v4-mapped IPv6
	// destination is reported as the IPv4 address it was judged as);
	// invalid for HookSockCreate.
	Addr      netip.Addr
	Port      uint16
	Family    uint8  // AF_INET, AF_INET6, or for sock_create the socket's family
	SockProto uint16 // the socket's protocol in full
	SockType  uint32 // SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, ...
	AuditOnly bool   // would have been refused, was allowed

	// For HookSyscall (the syscall audit layer; the fields above but
	// CgroupID and Identity are zero): the call's number, its first two
	// arguments, the errno the caller got, and the calling process.
	Syscall uint32
	Args    [2]uint64
	Errno   unix.Errno
	PID     uint32
	Comm    string
}

// Stats is what `unum enforcement status` shows of one node's kernel side.
// It costs a few syscalls whatever the maps hold, so a heartbeat may ask
// for it; how full the maps are is MapSizes, which walks them.
type Stats struct {
	// Programs attached, by hook name: connect4, connect6, sendmsg4,
	// sendmsg6, sock_create, lsm/<hook> for the LSM layer, syscall_exit
	// for the syscall audit layer.
	Programs []string
	// Dropped counts events the programs could not queue (ring buffer
	// full) since the map was created.
	Dropped uint64
	// Undecodable counts records ReadEvents skipped because it could not
	// read them (not an event of this agent's layout), since this
	// Enforcer was opened. Unlike Dropped it lives in the process: the
	// records were queued, and lost only to this reader.
	Undecodable uint64
	// Layers active: enforcement.LayerNetwork, enforcement.LayerLSM,
	// enforcement.LayerSyscallAudit.
	Layers []string
	// NodeAuditOnly: the settings map says the whole node is audit-only.
	NodeAuditOnly bool
	// LSMReason says why the LSM layer is not active when it was asked for.
	LSMReason string
	// SyscallReason says why the syscall audit layer is not active.
	SyscallReason string
}

// Enforcer is the loaded network layer (and LSM layer when available) of
// one node. Its methods may be called concurrently, except ReadEvents,
// which has one caller at a time. Close releases the process's handles
// only: the pinned links keep enforcing.
type Enforcer struct {
	log      *slog.Logger
	cfg      Config
	cgroupID uint64

	net   netObjects
	lsm   *lsmObjects     // nil when the LSM layer is not loaded
	sys   *syscallObjects // nil when the syscall audit layer is not loaded
	links map[string]link.Link

	recreated     []string
	lsmReason     string
	syscallReason string

	// undecodable: ring buffer records ReadEvents skipped (Stats).
	undecodable atomic.Uint64
}

// cgroupHooks: the cgroup programs in attach order, with their pin names.
var cgroupHooks = []struct {
	name   string
	attach ebpf.AttachType
	prog   func(*netPrograms) *ebpf.Program
}{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *netPrograms) *ebpf.Program { return p.Connect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *netPrograms) *ebpf.Program { return p.Connect6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *netPrograms) *ebpf.Program { return p.Sendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *netPrograms) *ebpf.Program { return p.Sendmsg6 }},
	{"sock_create", ebpf.AttachCGroupInetSockCreate, func(p *netPrograms) *ebpf.Program { return p.SockCreate }},
}

// lsmHooks: the LSM programs, named as their hooks.
var lsmHooks = []struct {
	name string
	prog func(*lsmPrograms) *ebpf.Program
}{
	{"socket_create", func(p *lsmPrograms) *ebpf.Program { return p.SocketCreate }},
	{"ptrace_access_check", func(p *lsmPrograms) *ebpf.Program { return p.PtraceAccessCheck }},
	{"bpf", func(p *lsmPrograms) *ebpf.Program { return p.Bpf }},
	{"sb_mount", func(p *lsmPrograms) *ebpf.Program { return p.SbMount }},
	{"kernel_read_file", func(p *lsmPrograms) *ebpf.Program { return p.KernelReadFile }},
	{"kernel_load_data", func(p *lsmPrograms) *ebpf.Program { return p.KernelLoadData }},
}

const lsmLinkPrefix = "lsm_"

// Open loads the programs, adopts the maps and links pinned under
// cfg.PinDir (creating what is missing) and attaches the programs to
// cfg.Cgroup. See the package documentation for the adoption and upgrade
// rules.
func Open(ctx context.Context, cfg Config) (_ *Enforcer, err error) {
	if !filepath.IsAbs(cfg.PinDir) || !filepath.IsAbs(cfg.Cgroup) {
		return nil, fmt.Errorf("enforcer: pin dir %q and cgroup %q must be absolute paths", cfg.PinDir, cfg.Cgroup)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "enforcement/kernel", "pin_dir", cfg.PinDir)
	if err := checkCgroup2(cfg.Cgroup); err != nil {
		return nil, err
	}
	cgID, err := CgroupID(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if err := ensureBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("enforcer: %w", err)
	}
	for _, d := range []string{mapsDir(cfg.PinDir), linksDir(cfg.PinDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("enforcer: pin dir: %w", err)
		}
	}

	e := &Enforcer{log: log, cfg: cfg, cgroupID: cgID, links: map[string]link.Link{}}
	defer func() {
		if err != nil {
			// Nobody reads the events of a failed Open (the node runs
			// degraded), and an earlier run's raw_tracepoint/sys_exit
			// link left pinned would slow every system call on the
			// machine: it goes. The network and LSM pins stay: they
			// enforce (deny) while the node cannot.
			err = errors.Join(err, e.removeSyscallAudit())
			e.Close()
		}
	}()

	spec, err := loadNet()
	if err != nil {
		return nil, fmt.Errorf("enforcer: network object: %w", err)
	}
	recreated, err := adoptMaps(spec, mapsDir(cfg.PinDir), log)
	if err != nil {
		return nil, err
	}
	e.recreated = recreated
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir(cfg.PinDir)}}
	if err := spec.LoadAndAssign(&e.net, opts); err != nil {
		return nil, fmt.Errorf("enforcer: load network programs: %w", err)
	}
	for _, h := range cgroupHooks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l, err := e.attachCgroup(h.name, h.attach, h.prog(&e.net.netPrograms))
		if err != nil {
			return nil, err
		}
		e.links[h.name] = l
	}

	if cfg.LSM {
		if err := e.openLSM(); err != nil {
			var refused *lsmRefusedError
			if !errors.As(err, &refused) {
				return nil, err
			}
			e.lsmReason = refused.Error()
			log.Warn("BPF LSM layer not active", "reason", e.lsmReason)
			if err := e.removeLSMLinks(); err != nil {
				return nil, err
			}
		}
	} else {
		e.lsmReason = "not asked for"
		if err := e.removeLSMLinks(); err != nil {
			return nil, err
		}
	}

	if len(cfg.Syscalls) > 0 {
		if err := e.openSyscallAudit(cfg.Syscalls); err != nil {
			var refused *syscallRefusedError
			if !errors.As(err, &refused) {
				return nil, err
			}
			e.syscallReason = refused.Error()
			log.Warn("syscall audit layer not active", "reason", e.syscallReason)
			if err := e.removeSyscallAudit(); err != nil {
				return nil, err
			}
		}
	} else {
		e.syscallReason = "not asked for"
		if err := e.removeSyscallAudit(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func mapsDir(pinDir string) string  { return filepath.Join(pinDir, "maps") }
func linksDir(pinDir string) string { return filepath.Join(pinDir, "links") }

// adoptMaps marks every map of spec for pinning by name and removes pinned
// maps the spec cannot use (an upgrade changed their layout), so loading
// recreates them empty. It returns the names of the maps it removed.
func adoptMaps(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) ([]string, error) {
	var recreated []string
	for _, name := range slices.Sorted(maps.Keys(spec.Maps)) {
		if strings.HasPrefix(name, ".") {
			// .rodata and the like: the object's constants, set per
			// load, shared with nobody.
			continue
		}
		ms := spec.Maps[name]
		ms.Pinning = ebpf.PinByName
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			err = ms.Compatible(m)
			m.Close()
			if err == nil {
				continue
			}
		}
		// Incompatible, or not a map at all: start afresh. An emptied
		// cgroups or rules map denies everything until the agent syncs
		// again, which fails closed.
		log.Warn("pinned map recreated", "map", name, "reason", err.Error())
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("enforcer: unpin incompatible map %s: %w", name, err)
		}
		recreated = append(recreated, name)
	}
	return recreated, nil
}

// attachCgroup makes prog the program attached at the link pinned as name:
// a pinned link on the same cgroup is updated in place (no moment without
// a program); anything else is replaced by a new link, attached before
// the old one is let go.
func (e *Enforcer) attachCgroup(name string, at ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	path := filepath.Join(linksDir(e.cfg.PinDir), name)
	old, err := link.LoadPinnedLink(path, nil)
	switch {
	case err == nil:
		info, ierr := old.Info()
		if ierr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == e.cgroupID &&
			ebpf.AttachType(info.Cgroup().AttachType) == at {
			err = old.Update(prog)
			if err == nil {
				e.log.Debug("pinned link updated in place", "link", name)
				return old, nil
			}
		} else {
			err = fmt.Errorf("attached elsewhere (info: %v)", ierr)
			if ierr == nil && info.Cgroup() != nil {
				err = fmt.Errorf("attached to cgroup %d, want %d", info.Cgroup().CgroupId, e.cgroupID)
			}
		}
		e.log.Info("pinned link replaced", "link", name, "reason", err.Error())
	case errors.Is(err, os.ErrNotExist):
		old = nil
	default:
		e.log.Warn("pinned link unreadable, replaced", "link", name, "reason", err.Error())
		old = nil
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("enforcer: remove unreadable link pin %s: %w", name, err)
		}
	}

	l, err := link.AttachCgroup(link.CgroupOptions{Path: e.cfg.Cgroup, Attach: at, Program: prog})
	if err != nil {
		if old != nil {
			old.Close()
		}
		return nil, fmt.Errorf("enforcer: attach %s to %s: %w", name, e.cfg.Cgroup, err)
	}
	if old != nil {
		// The old link governs another cgroup (or could not be updated):
		// detach it outright rather than wait for its last holder.
		if err := old.Unpin(); err != nil {
			l.Close()
			old.Close()
			return nil, fmt.Errorf("enforcer: unpin old link %s: %w", name, err)
		}
		if err := old.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
			e.log.Warn("old link not detached", "link", name, "err", err.Error())
		}
		old.Close()
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return nil, fmt.Errorf("enforcer: pin link %s: %w", name, err)
	}
	return l, nil
}

// lsmRefusedError: the kernel would not load or attach the LSM layer.
type lsmRefusedError struct{ err error }

func (e *lsmRefusedError) Error() string { return "kernel refused BPF LSM: " + e.err.Error() }
func (e *lsmRefusedError) Unwrap() error { return e.err }

// openLSM loads the LSM object, points its task_root slot at the task root
// and attaches every hook. LSM links cannot be updated in place: the new
// link is attached before the old one is unpinned, so for a moment both
// refuse, and never neither.
func (e *Enforcer) openLSM() error {
	if e.cfg.lsmRefusal != nil {
		return &lsmRefusedError{e.cfg.lsmRefusal}
	}
	spec, err := loadLsm()
	if err != nil {
		return fmt.Errorf("enforcer: LSM object: %w", err)
	}
	recreated, err := adoptMaps(spec, mapsDir(e.cfg.PinDir), e.log)
	if err != nil {
		return err
	}
	e.recreated = append(e.recreated, recreated...)
	objs := &lsmObjects{}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir(e.cfg.PinDir)}}
	if err := spec.LoadAndAssign(objs, opts); err != nil {
		return &lsmRefusedError{err}
	}
	e.lsm = objs
	root, err := os.Open(e.cfg.Cgroup)
	if err != nil {
		return fmt.Errorf("enforcer: open task root: %w", err)
	}
	defer root.Close()
	if err := objs.TaskRoot.Put(uint32(0), uint32(root.Fd())); err != nil {
		return fmt.Errorf("enforcer: set LSM task root: %w", err)
	}
	for _, h := range lsmHooks {
		l, err := link.AttachLSM(link.LSMOptions{Program: h.prog(&objs.lsmPrograms)})
		if err != nil {
			return &lsmRefusedError{fmt.Errorf("attach lsm/%s: %w", h.name, err)}
		}
		path := filepath.Join(linksDir(e.cfg.PinDir), lsmLinkPrefix+h.name)
		// The new link is attached: only now may the old one go.
		if err := unpinLink(path); err != nil {
			l.Close()
			return err
		}
		if err := l.Pin(path); err != nil {
			l.Close()
			return fmt.Errorf("enforcer: pin lsm/%s: %w", h.name, err)
		}
		e.links["lsm/"+h.name] = l
	}
	return nil
}

// removeLSMLinks lets go of an LSM layer pinned by an earlier run when
// this one does not load it, so Stats never reports a layer that a later
// Open chose not to keep.
func (e *Enforcer) removeLSMLinks() error {
	for name, l := range e.links {
		if strings.HasPrefix(name, "lsm/") {
			l.Close()
			delete(e.links, name)
		}
	}
	if e.lsm != nil {
		e.lsm.Close()
		e.lsm = nil
	}
	ents, err := os.ReadDir(linksDir(e.cfg.PinDir))
	if err != nil {
		return fmt.Errorf("enforcer: read link pins: %w", err)
	}
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), lsmLinkPrefix) {
			if err := unpinLink(filepath.Join(linksDir(e.cfg.PinDir), ent.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// unpinLink detaches the link pinned at path and removes the pin.
func unpinLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if err == nil {
		// Detach is refused for some link types (tracing links on older
		// kernels); unpinning and closing the last fd detaches those.
		_ = l.Detach()
		err = l.Unpin()
		l.Close()
		if err != nil {
			return fmt.Errorf("enforcer: unpin %s: %w", path, err)
		}
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("enforcer: remove pin %s: %w", path, err)
	}
	return nil
}

// Recreated names the pinned maps Open found incompatible with this
// version's programs and recreated empty (their entries were lost; the
// agent must sync them again). The caller should audit it.
func (e *Enforcer) Recreated() []string { return slices.Clone(e.recreated) }

// Bindings returns the cgroups map: task cgroup id → binding.
func (e *Enforcer) Bindings() (map[uint64]enforcement.Binding, error) {
	out := map[uint64]enforcement.Binding{}
	var k uint64
	var v bindingValue
	it := e.net.Cgroups.Iterate()
	for it.Next(&k, &v) {
		out[k] = enforcement.Binding{Identity: enforcement.IdentityNum(v.Identity), Flags: enforcement.Flags(v.Flags)}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("enforcer: read cgroups map: %w", err)
	}
	return out, nil
}

// Bind maps a task cgroup to its identity: its processes get that
// identity's rules from the next connect on.
func (e *Enforcer) Bind(cgroupID uint64, b enforcement.Binding) error {
	if b.Identity == 0 {
		return fmt.Errorf("enforcer: bind cgroup %d: identity number 0 is never assigned", cgroupID)
	}
	if err := e.net.Cgroups.Put(cgroupID, bindingValue{Identity: uint32(b.Identity), Flags: uint32(b.Flags)}); err != nil {
		return fmt.Errorf("enforcer: bind cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Unbind removes a cgroup's binding; its processes are denied everything.
// Unbinding an unbound cgroup is not an error.
func (e *Enforcer) Unbind(cgroupID uint64) error {
	if err := e.net.Cgroups.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("enforcer: unbind cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Rules returns the rules map, per identity, each list sorted by
// enforcement.CompareRules.
func (e *Enforcer) Rules() (map[enforcement.IdentityNum][]enforcement.Rule, error) {
	out := map[enforcement.IdentityNum][]enforcement.Rule{}
	var k ruleKey
	var v uint8
	it := e.net.Rules.Iterate()
	for it.Next(&k, &v) {
		id, r, err := decodeRule(k)
		if err != nil {
			return nil, fmt.Errorf("enforcer: rules map: %w", err)
		}
		out[id] = append(out[id], r)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("enforcer: read rules map: %w", err)
	}
	for _, rs := range out {
		slices.SortFunc(rs, enforcement.CompareRules)
	}
	return out, nil
}

// ApplyRules deletes del, then adds add. Every rule is checked before the
// map is touched, so an invalid rule changes nothing. Deleting a rule that
// is not there is not an error.
func (e *Enforcer) ApplyRules(add, del map[enforcement.IdentityNum][]enforcement.Rule) error {
	encode := func(m map[enforcement.IdentityNum][]enforcement.Rule) ([]ruleKey, error) {
		var keys []ruleKey
		for id, rs := range m {
			for _, r := range rs {
				k, err := encodeRule(id, r)
				if err != nil {
					return nil, fmt.Errorf("enforcer: identity %d: %w", id, err)
				}
				keys = append(keys, k)
			}
		}
		return keys, nil
	}
	dk, err := encode(del)
	if err != nil {
		return err
	}
	ak, err := encode(add)
	if err != nil {
		return err
	}
	for _, k := range dk {
		if err := e.net.Rules.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("enforcer: delete rule of identity %d: %w", k.Identity, err)
		}
	}
	for _, k := range ak {
		if err := e.net.Rules.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("enforcer: add rule of identity %d: %w", k.Identity, err)
		}
	}
	return nil
}

// SetNodeAuditOnly makes the whole node audit-only (true) or enforcing:
// it covers unbound cgroups too.
func (e *Enforcer) SetNodeAuditOnly(on bool) error {
	v := settingsValue{}
	if on {
		v.Flags |= settingAuditOnly
	}
	if err := e.net.Settings.Put(uint32(0), v); err != nil {
		return fmt.Errorf("enforcer: node audit-only: %w", err)
	}
	return nil
}

// Stats reports what is attached, the event counters and the node
// setting. It reads two map entries and no more.
func (e *Enforcer) Stats() (Stats, error) {
	s := Stats{LSMReason: e.lsmReason, SyscallReason: e.syscallReason}
	for name := range e.links {
		s.Programs = append(s.Programs, name)
	}
	slices.Sort(s.Programs)
	s.Layers = append(s.Layers, enforcement.LayerNetwork)
	if e.lsm != nil {
		s.Layers = append(s.Layers, enforcement.LayerLSM)
	}
	if e.sys != nil {
		s.Layers = append(s.Layers, enforcement.LayerSyscallAudit)
	}
	var per []uint64
	if err := e.net.Dropped.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("enforcer: read dropped: %w", err)
	}
	for _, n := range per {
		s.Dropped += n
	}
	s.Undecodable = e.undecodable.Load()
	var set settingsValue
	if err := e.net.Settings.Lookup(uint32(0), &set); err != nil {
		return Stats{}, fmt.Errorf("enforcer: read settings: %w", err)
	}
	s.NodeAuditOnly = set.Flags&settingAuditOnly != 0
	return s, nil
}

// MapSizes counts the entries of the cgroups and rules maps as the kernel
// holds them. It walks both maps (two syscalls per entry), so it is for
// checks and tests, not for a heartbeat: the agent knows what it wrote.
func (e *Enforcer) MapSizes() (map[string]int, error) {
	out := map[string]int{}
	for name, m := range map[string]*ebpf.Map{"cgroups": e.net.Cgroups, "rules": e.net.Rules} {
		n, err := countKeys(m)
		if err != nil {
			return nil, fmt.Errorf("enforcer: count %s: %w", name, err)
		}
		out[name] = n
	}
	return out, nil
}

func countKeys(m *ebpf.Map) (int, error) {
	n := 0
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// Close releases this process's handles. The pinned links and maps stay:
// enforcement outlives the agent. Use Remove to take it down.
func (e *Enforcer) Close() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	e.links = nil
	if e.lsm != nil {
		errs = append(errs, e.lsm.Close())
	}
	if e.sys != nil {
		errs = append(errs, e.sys.Close())
	}
	errs = append(errs, e.net.Close())
	return errors.Join(errs...)
}

// Remove takes down what Open pinned under pinDir: it detaches the links
// and unpins the maps. A node being removed, and tests, use it. A missing
// pinDir is not an error.
func Remove(pinDir string) error {
	ents, err := os.ReadDir(linksDir(pinDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("enforcer: remove: %w", err)
	}
	for _, ent := range ents {
		if err := unpinLink(filepath.Join(linksDir(pinDir), ent.Name())); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("enforcer: remove %s: %w", pinDir, err)
	}
	return nil
}

// CgroupID returns the v2 cgroup id of dir: the inode number of the
// cgroup directory, which is what bpf_get_current_cgroup_id returns for
// the processes in it.
func CgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	return st.Ino, nil
}

func checkCgroup2(dir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("enforcer: task root %s: %w", dir, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("enforcer: task root %s is not on a cgroup v2 file system", dir)
	}
	return nil
}

// ensureBPFFS makes sure pinDir can be on a bpffs: it mounts one at
// /sys/fs/bpf when pinDir is below it and nothing is mounted there, then
// checks the file system of the nearest existing ancestor of pinDir.
func ensureBPFFS(pinDir string) error {
	const std = "/sys/fs/bpf"
	if pinDir == std || strings.HasPrefix(pinDir, std+"/") {
		var fs unix.Statfs_t
		if err := unix.Statfs(std, &fs); err != nil {
			return fmt.Errorf("enforcer: %s: %w", std, err)
		}
		if fs.Type != unix.BPF_FS_MAGIC {
			if err := unix.Mount("bpf", std, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("enforcer: mount bpffs at %s: %w", std, err)
			}
		}
	}
	p := pinDir
	for {
		var fs unix.Statfs_t
		err := unix.Statfs(p, &fs)
		if err == nil {
			if fs.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("enforcer: pin dir %s is not on a bpffs (%s is not)", pinDir, p)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) || p == "/" {
			return fmt.Errorf("enforcer: pin dir %s: %w", pinDir, err)
		}
		p = filepath.Dir(p)
	}
}
