package kernel

import (
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"

	"github.com/unumos/unum/scheduler/cgroup"
)

// Capabilities is what this kernel and process allow.
type Capabilities struct {
	// CgroupBPF: a cgroup/connect4 program loads, as root, with cgroup v2
	// mounted at CgroupV2.
	CgroupBPF bool
	// CgroupV2 is the cgroup v2 mount point ("" when none).
	CgroupV2 string
	// LSM: the LSM object of this package loads. The feature probe alone
	// is not trusted: it is a different (smaller) program.
	LSM bool
	// LSMProbe is what features.HaveProgramType(ebpf.LSM) said, for the
	// record.
	LSMProbe bool
	// SyscallAudit: the syscall audit object (raw_tracepoint/sys_exit)
	// loads; SyscallReason says why not.
	SyscallAudit  bool
	SyscallReason string
	// Reason says why CgroupBPF or LSM is false.
	Reason string
}

// Probe finds out whether the network layer and the LSM layer can load
// here. It loads and unloads small programs; it attaches nothing.
func Probe() Capabilities {
	var c Capabilities
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not root")
	}
	mp, err := cgroup2Mount()
	if err != nil {
		why = append(why, err.Error())
	}
	c.CgroupV2 = mp
	if len(why) == 0 {
		// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
		if err := rlimit.RemoveMemlock(); err != nil {
			why = append(why, "raise memlock limit: "+err.Error())
		}
	}
	if len(why) == 0 {
		if err := loadConnect4Probe(); err != nil {
			why = append(why, "cgroup/connect4 does not load: "+err.Error())
		} else {
			c.CgroupBPF = true
		}
	}
	c.LSMProbe = features.HaveProgramType(ebpf.LSM) == nil
	if len(why) == 0 {
		if err := loadLSMProbe(); err != nil {
			why = append(why, fmt.Sprintf("BPF LSM does not load (feature probe says %v): %v", yesNo(c.LSMProbe), err))
		} else {
			c.LSM = true
		}
	}
	// Only where the network layer loads: Open loads it after that one.
	if c.CgroupBPF {
		if err := loadSyscallProbe(); err != nil {
			c.SyscallReason = "raw_tracepoint/sys_exit does not load: " + err.Error()
		} else {
			c.SyscallAudit = true
		}
	} else {
		c.SyscallReason = "no cgroup BPF"
	}
	c.Reason = strings.Join(why, "; ")
	return c
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// loadConnect4Probe loads "return 1" as a cgroup/connect4 program.
func loadConnect4Probe() error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: ebpf.AttachCGroupInet4Connect,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	})
	if err != nil {
		return err
	}
	return p.Close()
}

// loadLSMProbe loads the real LSM object (programs and a private, unpinned
// task_root map): the only trustworthy answer.
func loadLSMProbe() error {
	spec, err := loadLsm()
	if err != nil {
		return err
	}
	var objs lsmObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return err
	}
	return objs.Close()
}

// cgroup2Mount returns the mount point of the cgroup v2 hierarchy.
func cgroup2Mount() (string, error) {
	l, err := cgroup.DetectHost()
	if err != nil {
		return "", err
	}
	return l.V2.Mount, nil
}
