//go:build !amd64 && !arm64

package shim

import (
	"errors"
	"runtime"

	"golang.org/x/sys/unix"
)

// No syscall table for this architecture: the probe reports no seccomp
// layer, and a spec asking for it fails closed.

var errNoTable = errors.New("no seccomp syscall table for " + runtime.GOARCH)

func installSeccomp() error   { return errNoTable }
func seccompAvailable() error { return errNoTable }

// FilterModel: no filter on this architecture, so nothing to model.
type FilterModel struct{}

// NewFilterModel fails: there is no filter on this architecture.
func NewFilterModel() (*FilterModel, error) { return nil, errNoTable }

// Audited is empty.
func (m *FilterModel) Audited() []uint32 { return nil }

// Refused is never true.
func (m *FilterModel) Refused(nr uint32, arg0, arg1 uint64) (string, unix.Errno, bool) {
	return "", 0, false
}
