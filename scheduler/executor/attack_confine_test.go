package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/unumos/unum/threatmodel"
)

// The escape set, tried from inside real tasks started by the real
// executor and shim. The attacker is the test binary itself, copied where
// task uids can run it and started as the task's command (helperOp makes
// each attempt with the raw system call). Each test also runs the same
// attempts as an unconfined process of an unprivileged uid (the control),
// to show which refusals the confinement adds and which the missing
// capabilities already gave.

// helperTask is a task whose command is the helper making the attempts.
func helperTask(id, helper string, ops ...string) TaskSpec {
	return TaskSpec{ID: id, Namespace: "default", Job: "j", Command: helper, Args: append([]string{helperArg, "ops"}, ops...)}
}

// parseOps reads the helper's "OP: RESULT" lines.
func parseOps(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		require.True(t, ok, "helper output %q", out)
		m[k] = v
	}
	return m
}

// control runs the helper's ops as uid with no shim: no seccomp, no
// Landlock, no cgroup; just an unprivileged process.
func control(t *testing.T, uid uint32, helper string, ops ...string) map[string]string {
	t.Helper()
	return parseOps(t, asUID(t, uid, helper, append([]string{helperArg, "ops"}, ops...)...))
}

func opNames(ops []string) []string {
	var out []string
	for _, o := range ops {
		n, _, _ := strings.Cut(o, "=")
		out = append(out, n)
	}
	return out
}

// T-107, T-108, T-109, T-110, T-111: the seccomp layer.
func TestAttackEscapeSyscalls(t *testing.T) {
	h := start(t, nil)
	helper := copyExec(t, mustExecutable(t), traversable(t), 0o755)
	ops := []string{"ptrace-child", "bpf", "mount", "umount", "init_module", "finit_module", "kexec_load",
		"unshare-user", "setns", "clone-user", "clone3", "keyctl", "perf", "raw-socket", "packet-socket",
		"personality-noaslr", "fork"}
	code, out, errOut := runOnce(t, h.e, helperTask("escape", helper, ops...))
	require.Equal(t, 0, code, errOut)
	got := parseOps(t, out)
	want := map[string]string{}
	for _, op := range opNames(ops) {
		want[op] = "EPERM"
	}
	want["clone3"] = "ENOSYS" // so the C library falls back to clone, whose flags the filter reads
	want["fork"] = "ok"       // a Go program under the filter still starts processes (clone, no namespace flag)
	require.Equal(t, want, got)

	// The control: without the filter the same uid-level process attaches to
	// its own child, creates a user namespace with clone, reaches clone3
	// (EINVAL: the kernel read the NULL struct), uses its keyring, opens a
	// perf event on itself and turns off its ASLR. unshare(CLONE_NEWUSER)
	// fails with EINVAL there only because a Go process is multithreaded:
	// the kernel looked at it. The rest are refused anyway, by the sysctl
	// that disables unprivileged BPF, by missing capabilities (mount,
	// setns, raw and packet sockets) or, on a kernel built without modules
	// or kexec, with ENOSYS: in the task the filter answers EPERM before
	// any of that kernel code runs. A raw socket is refused three times
	// over: no CAP_NET_RAW, this filter, and the BPF sock_create hook.
	ctl := control(t, uint32(DefaultUIDHi), helper, ops...)
	t.Logf("control (no confinement): %v", ctl)
	for op, res := range map[string]string{"ptrace-child": "ok", "clone-user": "ok", "clone3": "EINVAL",
		"keyctl": "ok", "personality-noaslr": "ok", "unshare-user": "EINVAL", "fork": "ok"} {
		require.Equal(t, res, ctl[op], "control %s", op)
	}
	if ctl["perf"] != "ok" {
		t.Logf("perf_event_open is refused without the filter too (perf_event_paranoid): %s", ctl["perf"])
	}
}

// T-107, T-111 (signal scope): a process of the task's own uid that is not
// part of the task (here started by the test; in life a process the uid
// left behind, or another executor's) can be neither traced nor signalled:
// uid checks would allow both, the filter refuses ptrace and Landlock's
// signal scope refuses the signal.
func TestAttackSameUIDOutsideTask(t *testing.T) {
	h := start(t, nil)
	if h.e.Confinement().LandlockABI < 6 {
		t.Skip(threatmodel.KernelLacks("landlock") + fmt.Sprint("Landlock signal scoping needs ABI 6; the kernel has ", h.e.Confinement().LandlockABI))
	}
	helper := copyExec(t, mustExecutable(t), traversable(t), 0o755)
	pidFile := filepath.Join(h.dir, "sameuid", "work", "victim.pid")
	type res struct {
		code     int
		out, err string
		e        error
	}
	done := make(chan res, 1)
	go func() {
		var o, e strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, err := h.e.RunOnce(ctx, helperTask("sameuid", helper, "ptrace-pidfile="+pidFile, "kill-pidfile="+pidFile), &o, &e)
		done <- res{code, o.String(), e.String(), err}
	}()
	st := h.waitState(t, "sameuid", Running)
	victim := exec.Command("/bin/sleep", "1000")
	victim.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: st.UID, Gid: st.UID}}
	require.NoError(t, victim.Start())
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	require.NoError(t, os.WriteFile(pidFile+".new", fmt.Appendf(nil, "%d\n", victim.Process.Pid), 0o644))
	require.NoError(t, os.Rename(pidFile+".new", pidFile))
	r := <-done
	require.NoError(t, r.e)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, map[string]string{"ptrace-pidfile": "EPERM", "kill-pidfile": "EPERM"}, parseOps(t, r.out))
	require.True(t, alive(victim.Process.Pid), "the task killed a process outside it")

	// The control: the same uid, unconfined, may signal the victim.
	ctlFile := filepath.Join(traversable(t), "victim.pid")
	require.NoError(t, os.WriteFile(ctlFile, fmt.Appendf(nil, "%d\n", victim.Process.Pid), 0o644))
	require.Equal(t, map[string]string{"signal0-pidfile": "ok"}, control(t, st.UID, helper, "signal0-pidfile="+ctlFile))
}

// T-112, T-102: Landlock. Another task's files and the host's, even with
// modes that let everyone in, cannot be read, listed, written or executed;
// shared temporary folders cannot be written; the task's own work goes on.
func TestAttackFilesOutsideTask(t *testing.T) {
	h := start(t, nil)
	if h.e.Confinement().LandlockABI == 0 {
		t.Skip(threatmodel.KernelLacks("landlock") + "the kernel has no Landlock")
	}
	helper := copyExec(t, mustExecutable(t), traversable(t), 0o755)

	// The victim opens its folder and file to everyone.
	h.e.Assign([]TaskSpec{sh("victim", `chmod 777 "$HOME" && echo s3cret > "$HOME/secret" && chmod 644 "$HOME/secret" && exec sleep 1000`)})
	h.waitState(t, "victim", Running)
	victimWork := filepath.Join(h.dir, "victim", "work")
	victimSecret := filepath.Join(victimWork, "secret")
	require.Eventually(t, func() bool { b, _ := os.ReadFile(victimSecret); return string(b) == "s3cret\n" }, 10*time.Second, 10*time.Millisecond)

	// A host folder anyone may read and write, holding a file anyone may
	// read and a program anyone may run.
	host := traversable(t)
	require.NoError(t, os.Chmod(host, 0o777))
	hostSecret := filepath.Join(host, "host-secret")
	require.NoError(t, os.WriteFile(hostSecret, []byte("host"), 0o666))
	require.NoError(t, os.Chmod(hostSecret, 0o666))
	hostTrue := copyExec(t, "/bin/true", host, 0o755)

	var b [4]byte
	_, _ = rand.Read(b[:])
	tag := "unum-xt-" + hex.EncodeToString(b[:])
	shared := []string{"/tmp/" + tag, "/var/tmp/" + tag, "/dev/shm/" + tag}
	t.Cleanup(func() {
		for _, p := range shared {
			_ = os.Remove(p)
		}
		for _, q := range []string{tag, tag + "-control"} {
			name := append([]byte(q), 0)
			_, _, _ = unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(&name[0])), 0, 0)
		}
	})

	// An abstract socket (the scope refuses it) and a pathname socket
	// standing in for the Workload API (Landlock below ABI 9 does not
	// mediate connect(2) to pathname sockets; the mode bits do).
	abstract := tag
	la, err := net.Listen("unix", "@"+abstract)
	require.NoError(t, err)
	defer la.Close()
	sockPath := filepath.Join(traversable(t), "agent.sock")
	lp, err := net.Listen("unix", sockPath)
	require.NoError(t, err)
	defer lp.Close()
	require.NoError(t, os.Chmod(sockPath, 0o777))

	attackerWork := filepath.Join(h.dir, "attacker", "work")
	attackerTmp := filepath.Join(h.dir, "attacker", "tmp")
	attacks := []string{
		"read=" + victimSecret, "list=" + victimWork, "write=" + filepath.Join(victimWork, "planted"),
		"read=" + hostSecret, "write=" + filepath.Join(host, "planted"), "exec=" + hostTrue,
		"write=" + shared[0], "write=" + shared[1], "write=" + shared[2],
		"connect-abstract=" + abstract, "mq_open=" + tag,
	}
	normal := []string{
		"read=/etc/hosts", "read=/proc/self/status", "list=/usr/bin", "exec=/bin/true", "write=/dev/null",
		"write=" + filepath.Join(attackerWork, "f"), "read=" + filepath.Join(attackerWork, "f"),
		"write=" + filepath.Join(attackerTmp, "f"), "connect-unix=" + sockPath,
		// Not refused: System V IPC (the residue T-102 accepts).
		"sysv-shm",
	}
	code, out, errOut := runOnce(t, h.e, helperTask("attacker", helper, append(attacks, normal...)...))
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, len(attacks)+len(normal), out)
	var want []string
	for _, a := range attacks {
		res := "EACCES"
		if strings.HasPrefix(a, "connect-abstract=") {
			res = "EPERM"
		}
		want = append(want, strings.SplitN(a, "=", 2)[0]+": "+res)
	}
	for _, n := range normal {
		want = append(want, strings.SplitN(n, "=", 2)[0]+": ok")
	}
	require.Equal(t, want, lines)
	require.NoFileExists(t, filepath.Join(victimWork, "planted"))
	for _, p := range shared {
		require.NoFileExists(t, p)
	}

	// The refused open still created the queue, empty, 0600, the task
	// uid's; it went with the task (TestAttackIPCResidue).

	// The control: an unconfined process of another unprivileged uid gets
	// every one of them, so it is Landlock that refused, not the modes.
	ctlAttacks := slices.Clone(attacks)
	ctlAttacks[len(ctlAttacks)-1] += "-control" // a queue of the control's own
	ctl := strings.Split(asUID(t, uint32(DefaultUIDHi), helper, append([]string{helperArg, "ops"}, ctlAttacks...)...), "\n")
	require.Len(t, ctl, len(attacks))
	for i, a := range ctlAttacks {
		require.Equal(t, strings.SplitN(a, "=", 2)[0]+": ok", ctl[i], "control %s", a)
	}
	// The victim was not disturbed.
	require.Equal(t, Running, h.task(t, "victim").State)
	b2, err := os.ReadFile(victimSecret)
	require.NoError(t, err)
	require.Equal(t, "s3cret\n", string(b2))
}

// TestAttackIPCResidue (T-102): what a task leaves in the machine's shared
// IPC namespaces, System V shared memory, message queues and semaphore
// sets and POSIX message queues, is gone before its uid is given back, so
// the uid's next holder finds nothing of it.
func TestAttackIPCResidue(t *testing.T) {
	h := start(t, nil)
	helper := copyExec(t, mustExecutable(t), traversable(t), 0o755)
	var b [4]byte
	_, _ = rand.Read(b[:])
	tag := "unum-ipc-" + hex.EncodeToString(b[:])
	code, out, errOut := runOnce(t, h.e, helperTask("leaver", helper, "sysv-leave", "mq_open="+tag))
	require.Equal(t, 0, code, errOut)
	ops := parseOps(t, out)
	require.Equal(t, "ok", ops["sysv-leave"], out)
	// Under Landlock the open fails but the empty queue is created; without
	// Landlock it succeeds: either way a queue of the task's uid was left.
	require.Contains(t, []string{"ok", "EACCES"}, ops["mq_open"], out)

	for file, col := range map[string]string{"shm": "shmid", "msg": "msqid", "sem": "semid"} {
		id := ops[col]
		require.NotEmpty(t, id, out)
		data, err := os.ReadFile("/proc/sysvipc/" + file)
		require.NoError(t, err)
		objs, err := parseSysvipc(data)
		require.NoError(t, err)
		for _, o := range objs {
			require.NotEqual(t, id, strconv.FormatUint(uint64(o.id), 10), "the task's %s %s outlived it", file, id)
		}
	}
	q, err := exec.Command(helper, helperArg, "ops", "mq_open-existing="+tag).Output()
	require.NoError(t, err)
	require.Equal(t, "mq_open-existing: ENOENT\n", string(q), "the task's message queue outlived it")
}

// TestAttackIPCResidueAfterCrash (T-102): objects left under a uid by a
// holder that never finished (its node crashed: no release, no sweep) are
// removed before the uid is handed out again.
func TestAttackIPCResidueAfterCrash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs a process as another uid and takes uid locks: needs root; CI runs as root")
	}
	helper := copyExec(t, mustExecutable(t), traversable(t), 0o755)
	uid := uint32(DefaultUIDHi - 1)
	out := asUID(t, uid, helper, helperArg, "ops", "sysv-leave")
	ops := parseOps(t, out)
	require.Equal(t, "ok", ops["sysv-leave"], out)
	owned := func() []string {
		var ids []string
		for file, col := range map[string]string{"shm": "shmid", "msg": "msqid", "sem": "semid"} {
			data, err := os.ReadFile("/proc/sysvipc/" + file)
			require.NoError(t, err)
			objs, err := parseSysvipc(data)
			require.NoError(t, err)
			for _, o := range objs {
				if strconv.FormatUint(uint64(o.id), 10) == ops[col] {
					ids = append(ids, file+" "+ops[col])
				}
			}
		}
		return ids
	}
	require.Len(t, owned(), 3, "the objects exist before the uid is allocated again")

	a, err := newUIDAllocator(t.TempDir(), UIDRange{Lo: uid, Hi: uid}, "")
	require.NoError(t, err)
	got, release, err := a.allocate()
	require.NoError(t, err)
	defer release()
	require.Equal(t, uid, got)
	require.Empty(t, owned(), "the uid was handed out with an earlier holder's IPC objects")
}
