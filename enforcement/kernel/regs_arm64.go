package kernel

// Where the sys_exit program reads a call's number and first two
// arguments in struct pt_regs (arch/arm64/include/asm/ptrace.h):
// syscallno, orig_x0 (x0 holds the return value at exit), regs[1].
// TestRegsOffsetsMatchKernelBTF (syscall_test.go) checks them against the
// running kernel's BTF.
const (
	regsNr   = 280
	regsArg0 = 272
	regsArg1 = 8
)

// regsFields names the same three places for the BTF check.
func regsFields() [3]string { return [3]string{"syscallno", "orig_x0", "regs[1]"} }
