package kernel

// Where the sys_exit program reads a call's number and first two
// arguments in struct pt_regs (arch/x86/include/asm/ptrace.h): orig_ax,
// di, si. TestRegsOffsetsMatchKernelBTF (syscall_test.go) checks them
// against the running kernel's BTF.
const (
	regsNr   = 120
	regsArg0 = 112
	regsArg1 = 104
)

// regsFields names the same three places for the BTF check.
func regsFields() [3]string { return [3]string{"orig_ax", "di", "si"} }
