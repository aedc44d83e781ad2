//go:build !amd64 && !arm64

package shim

import (
	"errors"
	"runtime"
)

// No syscall table for this architecture: the probe reports no seccomp
// layer, and a spec asking for it fails closed.

var errNoTable = errors.New("no seccomp syscall table for " + runtime.GOARCH)

func installSeccomp() error   { return errNoTable }
func seccompAvailable() error { return errNoTable }
