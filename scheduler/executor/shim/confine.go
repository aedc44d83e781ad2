package shim

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Confine says which layers the shim applies to the task, on the thread
// that execs, after dropping privileges and just before execve. A layer
// asked for and not applied fails the start (exit 127, nothing exec'd):
// the node reports what its probe found, and every task runs with exactly
// that.
type Confine struct {
	// Seccomp installs the escape-set filter (seccomp.go).
	Seccomp bool `json:"seccomp,omitempty"`
	// Landlock restricts the file system (landlock.go); nil: not applied.
	Landlock *Landlock `json:"landlock,omitempty"`
}

// Support is what this kernel offers the shim.
type Support struct {
	// SeccompErr says why the kernel cannot take the task filter (nil:
	// it can).
	SeccompErr  error
	LandlockABI int // 0: no Landlock
}

// Probe reports what the running kernel supports. The node calls it once
// at start (the shim runs on the same kernel) and reports the result.
func Probe() Support {
	return Support{LandlockABI: LandlockABI(), SeccompErr: seccompAvailable()}
}

// validate checks the confinement part of a spec.
func (c *Confine) validate() error {
	l := c.Landlock
	if l == nil {
		return nil
	}
	if l.MinABI < 1 {
		return fmt.Errorf("landlock: min ABI %d (want at least 1)", l.MinABI)
	}
	if len(l.RW) == 0 {
		return errors.New("landlock: no read-write folder (the work folder)")
	}
	for _, list := range [][]string{l.RW, l.RX, l.RO, l.Dev} {
		for _, p := range list {
			if !filepath.IsAbs(p) {
				return fmt.Errorf("landlock: path %q is not absolute", p)
			}
		}
	}
	return nil
}

// confine applies the spec's layers for the command at path (resolved):
// Landlock first, then seccomp last, so that the filter does not constrain
// the shim's own setup.
func confine(s *Spec, path string) error {
	if l := s.Confine.Landlock; l != nil {
		if err := restrictLandlock(l, execChain(path)); err != nil {
			return err
		}
	}
	if s.Confine.Seccomp {
		if err := installSeccomp(); err != nil {
			return err
		}
	}
	return nil
}
