// escape is a task for the attack tests (built by cmd/unum's TestMain;
// testdata, so not part of unum). It tries to leave its confinement once,
// prints one line per attempt to stdout, then sleeps until killed:
//
//	escape TARGET                    attack ptrace-init|ptrace-child|bpf|mount|userns|egress|setuid RESULT
//	escape ids                       uid=U euid=E (what the setuid attack runs)
//
// RESULT is "ok" or the errno's name (EPERM, ...); for setuid it is the
// file's owner and mode and the uid and euid the exec'd copy ran with.
// TARGET is a HOST:PORT its job's policy does not grant.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "ids" {
		fmt.Printf("uid=%d euid=%d\n", os.Getuid(), os.Geteuid())
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: escape TARGET | escape ids")
		os.Exit(2)
	}
	signal.Ignore(syscall.SIGPIPE)
	report := func(name string, err error) { fmt.Printf("attack %s %s\n", name, result(err)) }

	// ptrace: PID 1 and a child of its own (same uid, inside the task).
	report("ptrace-init", unix.PtraceAttach(1))
	child := exec.Command("sleep", "600")
	if err := child.Start(); err != nil {
		report("ptrace-child", err)
	} else {
		report("ptrace-child", unix.PtraceAttach(child.Process.Pid))
		child.Process.Kill()
		child.Wait()
	}

	// bpf(BPF_MAP_CREATE) of a small array.
	attr := [5]uint32{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}
	fd, _, en := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if en == 0 {
		unix.Close(int(fd))
		report("bpf", nil)
	} else {
		report("bpf", en)
	}

	// mount a tmpfs on a folder of its own.
	mnt := filepath.Join(os.Getenv("HOME"), "mnt")
	os.MkdirAll(mnt, 0o700)
	report("mount", unix.Mount("none", mnt, "tmpfs", 0, ""))

	// A user namespace (every capability inside it): clone with
	// CLONE_NEWUSER.
	ns := exec.Command("true")
	ns.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
	report("userns", ns.Run())

	// Egress its policy does not grant.
	c, err := net.DialTimeout("tcp", os.Args[1], 2*time.Second)
	if err == nil {
		c.Close()
	}
	report("egress", err)

	// A setuid-root program it may execute: itself (the tests make the
	// command a setuid-root copy). Under no_new_privs the kernel ignores
	// the bit.
	self, err := os.Executable()
	var st unix.Stat_t
	if err == nil {
		err = unix.Stat(self, &st)
	}
	if err != nil {
		report("setuid", err)
	} else {
		out, err := exec.Command(self, "ids").Output()
		if err != nil {
			report("setuid", err)
		} else {
			fmt.Printf("attack setuid file-uid=%d file-mode=%o %s (own uid=%d euid=%d)\n",
				st.Uid, st.Mode&0o7777, strings.TrimSpace(string(out)), os.Getuid(), os.Geteuid())
		}
	}
	fmt.Println("attacks done")
	for {
		time.Sleep(time.Hour)
	}
}

func result(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return "error: " + strings.ReplaceAll(err.Error(), "\n", " ")
}
