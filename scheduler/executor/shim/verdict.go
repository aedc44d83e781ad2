//go:build amd64 || arm64

package shim

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// FilterModel is the task's seccomp filter run in user space, for the
// node's audit of the kernel's refusals: the kernel program reports a
// call that failed with EPERM in a task, with its number and first two
// arguments, and the model says whether the task filter refuses exactly
// that call (so EPERM from elsewhere, e.g. the BPF sock_create hook, is
// not reported as seccomp's) and names it. It runs the very program the
// shim installs (seccompFilter), so the two cannot disagree. Safe for
// concurrent use.
type FilterModel struct {
	vm    *bpf.VM
	names map[uint32]string
	// audited are the numbers the filter may refuse with EPERM.
	audited []uint32
}

// NewFilterModel builds the model of this architecture's filter.
func NewFilterModel() (*FilterModel, error) {
	vm, err := bpf.NewVM(seccompFilter())
	if err != nil {
		return nil, fmt.Errorf("seccomp filter model: %w", err)
	}
	m := &FilterModel{vm: vm, names: map[uint32]string{}}
	for _, d := range deniedSyscalls() {
		m.names[d.nr] = d.name
		// clone3's ENOSYS is not a refusal to record: the C library tries
		// clone3 for every thread and fork and falls back to clone, whose
		// namespace flags are checked (and their refusal recorded).
		if d.errno == unix.EPERM {
			m.audited = append(m.audited, d.nr)
		}
	}
	// The calls refused on their arguments.
	for nr, name := range map[uint32]string{unix.SYS_CLONE: "clone", unix.SYS_SOCKET: "socket", unix.SYS_PERSONALITY: "personality"} {
		m.names[nr] = name
		m.audited = append(m.audited, nr)
	}
	return m, nil
}

// Audited returns the system call numbers the filter may refuse with
// EPERM: the set the kernel program watches for.
func (m *FilterModel) Audited() []uint32 { return append([]uint32(nil), m.audited...) }

// Refused says whether the task filter refuses the call nr with these
// first two arguments (the filter reads no others) and with which errno,
// and names the call.
func (m *FilterModel) Refused(nr uint32, arg0, arg1 uint64) (name string, errno unix.Errno, ok bool) {
	// struct seccomp_data, each 32-bit word big-endian: x/net/bpf's VM
	// loads in network order, and the kernel's loads see host-order words.
	var b [64]byte
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], auditArch)
	for i, a := range []uint64{arg0, arg1} {
		binary.BigEndian.PutUint32(b[argLo(i):], uint32(a))
		binary.BigEndian.PutUint32(b[argLo(i)+4:], uint32(a>>32))
	}
	r, err := m.vm.Run(b[:])
	if err != nil {
		return "", 0, false
	}
	v := uint32(r)
	if v&unix.SECCOMP_RET_ACTION_FULL != unix.SECCOMP_RET_ERRNO {
		return "", 0, false
	}
	name = m.names[nr]
	if name == "" {
		name = fmt.Sprintf("syscall(%d)", nr)
	}
	return name, unix.Errno(v & unix.SECCOMP_RET_DATA), true
}
