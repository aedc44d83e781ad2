//go:build !amd64 && !arm64

package kernel

// No pt_regs layout (and no task seccomp filter) for this architecture:
// the syscall audit layer does not load.
const (
	regsNr   = 0
	regsArg0 = 0
	regsArg1 = 0
)

func regsFields() [3]string { return [3]string{} }
