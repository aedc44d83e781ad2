package shim

import "golang.org/x/sys/unix"

// auditArch is the only architecture the filter lets through.
const auditArch = unix.AUDIT_ARCH_X86_64

// foreignNrBits marks syscall numbers of another ABI on the native entry:
// __X32_SYSCALL_BIT, the x32 ABI, whose calls arrive with the x86_64 arch
// value and numbers a native deny list would not match.
const foreignNrBits = 0x40000000

// archDenied are the refusals only this architecture has: port I/O (iopl,
// ioperm reach hardware directly), and legacy calls Docker refuses (uselib
// loads a library bypassing exec checks, ustat, sysfs, _sysctl, the old
// module calls, nfsservctl).
func archDenied() map[string]uintptr {
	return map[string]uintptr{
		"iopl": unix.SYS_IOPL, "ioperm": unix.SYS_IOPERM, "uselib": unix.SYS_USELIB, "ustat": unix.SYS_USTAT,
		"sysfs": unix.SYS_SYSFS, "_sysctl": unix.SYS__SYSCTL, "create_module": unix.SYS_CREATE_MODULE,
		"get_kernel_syms": unix.SYS_GET_KERNEL_SYMS, "query_module": unix.SYS_QUERY_MODULE,
		"nfsservctl": unix.SYS_NFSSERVCTL,
	}
}
