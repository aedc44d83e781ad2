package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The syscall audit layer (bpf/syscall.c): a raw tracepoint on sys_exit
// that reports calls the task shim's seccomp filter refused with EPERM to
// a process under the task root. It refuses nothing itself; it is the
// record of seccomp's refusals, which the kernel otherwise keeps to
// itself. Like the LSM layer it is a separate object: a kernel that
// refuses it keeps the network layer, and Stats says why it is missing.

// syscallLink is the pin name of the sys_exit link.
const syscallLink = "syscall_exit"

// syscallRefusedError: the kernel would not load or attach the layer.
type syscallRefusedError struct{ err error }

func (e *syscallRefusedError) Error() string {
	return "kernel refused the syscall audit program: " + e.err.Error()
}
func (e *syscallRefusedError) Unwrap() error { return e.err }

// loadSyscallSpec returns the object's spec with the pt_regs offsets of
// this architecture set.
func loadSyscallSpec() (*ebpf.CollectionSpec, error) {
	if regsNr == 0 {
		return nil, &syscallRefusedError{fmt.Errorf("no pt_regs layout for %s", runtime.GOARCH)}
	}
	spec, err := loadSyscall()
	if err != nil {
		return nil, fmt.Errorf("enforcer: syscall object: %w", err)
	}
	for name, v := range map[string]uint32{"regs_nr": regsNr, "regs_arg0": regsArg0, "regs_arg1": regsArg1} {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("enforcer: syscall object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("enforcer: syscall object: set %s: %w", name, err)
		}
	}
	return spec, nil
}

// openSyscallAudit loads the object (sharing the pinned cgroups, dropped
// and task_root maps), fills the set of audited numbers, points task_root
// at the task root and attaches sys_exit. A raw tracepoint link cannot be
// updated in place: the new one is attached before the old one is let go,
// so for a moment both report, never neither.
func (e *Enforcer) openSyscallAudit(nrs []uint32) error {
	spec, err := loadSyscallSpec()
	if err != nil {
		return err
	}
	recreated, err := adoptMaps(spec, mapsDir(e.cfg.PinDir), e.log)
	if err != nil {
		return err
	}
	e.recreated = append(e.recreated, recreated...)
	objs := &syscallObjects{}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir(e.cfg.PinDir)}}
	if err := spec.LoadAndAssign(objs, opts); err != nil {
		return &syscallRefusedError{err}
	}
	e.sys = objs
	if err := setAudited(objs.AuditedSyscalls, nrs); err != nil {
		return err
	}
	root, err := os.Open(e.cfg.Cgroup)
	if err != nil {
		return fmt.Errorf("enforcer: open task root: %w", err)
	}
	defer root.Close()
	if err := objs.TaskRoot.Put(uint32(0), uint32(root.Fd())); err != nil {
		return fmt.Errorf("enforcer: set syscall audit task root: %w", err)
	}
	l, err := attachRawSysExit(objs.SysExit)
	if err != nil {
		return &syscallRefusedError{fmt.Errorf("attach raw_tracepoint/sys_exit: %w", err)}
	}
	path := filepath.Join(linksDir(e.cfg.PinDir), syscallLink)
	if err := unpinLink(path); err != nil {
		l.Close()
		return err
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return fmt.Errorf("enforcer: pin %s: %w", syscallLink, err)
	}
	e.links[syscallLink] = l
	return nil
}

// setAudited makes the map hold exactly nrs (a pinned map adopted from an
// earlier version may hold numbers this one no longer refuses).
func setAudited(m *ebpf.Map, nrs []uint32) error {
	var stale []uint32
	var k uint32
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !slices.Contains(nrs, k) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("enforcer: read audited syscalls: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("enforcer: delete audited syscall %d: %w", k, err)
		}
	}
	for _, nr := range nrs {
		if err := m.Put(nr, uint8(1)); err != nil {
			return fmt.Errorf("enforcer: audit syscall %d: %w", nr, err)
		}
	}
	return nil
}

// removeSyscallAudit lets go of a syscall audit link pinned by an earlier
// run when this one does not load the layer.
func (e *Enforcer) removeSyscallAudit() error {
	if l, ok := e.links[syscallLink]; ok {
		l.Close()
		delete(e.links, syscallLink)
	}
	if e.sys != nil {
		e.sys.Close()
		e.sys = nil
	}
	return unpinLink(filepath.Join(linksDir(e.cfg.PinDir), syscallLink))
}

// loadSyscallProbe loads the syscall audit object (private, unpinned
// maps) without attaching it: the only trustworthy answer.
func loadSyscallProbe() error {
	spec, err := loadSyscallSpec()
	if err != nil {
		return err
	}
	var objs syscallObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return err
	}
	return objs.Close()
}

func attachRawSysExit(p *ebpf.Program) (link.Link, error) {
	return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: p})
}
