package shim

import "golang.org/x/sys/unix"

// auditArch is the only architecture the filter lets through (not arm32
// compat, whose numbers differ).
const auditArch = unix.AUDIT_ARCH_AARCH64

// foreignNrBits: arm64 has no second ABI on its native entry.
const foreignNrBits = 0

// archDenied: arm64 has none of amd64's legacy or port I/O calls.
func archDenied() map[string]uintptr { return nil }
