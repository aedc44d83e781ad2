package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/threatmodel"
)

// TestTaskAttacks: a task on a real dev cluster tries to leave its
// confinement (testdata/escape): ptrace of PID 1 and of its own child,
// bpf(), mount, a user namespace, egress its policy does not grant, and a
// setuid-root program. Each attempt fails in the kernel, and each refusal
// is an enforcement.deny event in the audit log naming the task's SPIFFE
// ID and the call or destination. The setuid attempt is refused nothing:
// under no_new_privs the kernel ignores the bit, so it gains nothing, and
// there is no refusal to record (the test shows both, with a control that
// gains root from the same file without no_new_privs).
func TestTaskAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("running tasks and loading BPF programs needs root; CI runs as root")
	}
	caps := kernel.Probe()
	if !caps.CgroupBPF {
		t.Skipf("this kernel cannot load cgroup BPF programs (%s): nodes run degraded, which node's TestDegradedEnforcementIsReported covers", caps.Reason)
	}
	dir, err := os.MkdirTemp("", "ua")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })

	// The task's command is a setuid-root copy of escape: it may execute
	// its own command (Landlock), so it can exec the setuid file itself.
	binDir := filepath.Dir(escapeBin)
	require.NoError(t, os.Chmod(binDir, 0o755))
	suid := filepath.Join(binDir, "escape-suid")
	copyFile(t, escapeBin, suid)
	require.NoError(t, os.Chown(suid, 0, 0))
	require.NoError(t, os.Chmod(suid, os.ModeSetuid|0o755))

	// A destination the policy grants nobody: a listener of this test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	target := ln.Addr().String()

	d := startDevWith(t, dir, 1)
	job := writeJob(t, fmt.Sprintf(`
name: intruder
namespace: shop
type: service
task: {command: %s, args: [%q]}
resources: {cpu: 50, memory: 64}
`, suid, target))
	r := unum(t, d.env, "job", "run", job)
	require.Equal(t, 0, r.code, r.stderr)
	const spiffe = "spiffe://unum.local/ns/shop/job/intruder"

	// The attempts, as the task reports them in its log.
	attempts := map[string]string{}
	require.Eventually(t, func() bool {
		r := unum(t, d.env, "job", "logs", "intruder", "-n", "shop")
		if r.code != 0 || !strings.Contains(r.stdout, "attacks done") {
			return false
		}
		for _, l := range strings.Split(r.stdout, "\n") {
			// Lines read "[intruder[0]] attack NAME RESULT".
			if _, rest, ok := strings.Cut(l, "] attack "); ok {
				name, res, _ := strings.Cut(rest, " ")
				attempts[name] = res
			}
		}
		return true
	}, 90*time.Second, 500*time.Millisecond, "the task never finished its attacks")
	t.Logf("the task's attempts: %v", attempts)

	// denied waits for the enforcement.deny event of the task on resource
	// and returns its details.
	denied := func(t *testing.T, resource string) map[string]any {
		t.Helper()
		var found map[string]any
		var last string
		require.Eventually(t, func() bool {
			r := unum(t, d.env, "audit", "query", "--action", "enforcement.deny", "--node", "node-1", "-o", "json")
			last = r.stdout
			var out struct {
				Events []struct {
					Subject  string         `json:"subject"`
					Resource string         `json:"resource"`
					Outcome  string         `json:"outcome"`
					Details  map[string]any `json:"details"`
				} `json:"events"`
			}
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
				return false
			}
			for _, ev := range out.Events {
				if ev.Subject == spiffe && ev.Resource == resource && ev.Outcome == "deny" {
					found = ev.Details
					return true
				}
			}
			return false
		}, 20*time.Second, 500*time.Millisecond, "no enforcement.deny of %s on %s in %s", spiffe, resource, last)
		return found
	}
	// seccompAudited: the refusal is seccomp's, so recording it needs the
	// syscall audit layer.
	seccompAudited := func(t *testing.T, call string) {
		t.Helper()
		if !caps.SyscallAudit {
			t.Skip(threatmodel.KernelLacks("bpf-syscall-audit") + caps.SyscallReason)
		}
		det := denied(t, "syscall/-/"+call)
		require.Equal(t, "syscall", det["hook"], det)
		require.Equal(t, call, det["syscall"], det)
		require.Equal(t, "EPERM", det["errno"], det)
		require.Equal(t, "escape-suid", det["command"], det)
	}

	t.Run("ptrace of PID 1 and of its own child is refused and audited", func(t *testing.T) {
		require.Equal(t, "EPERM", attempts["ptrace-init"])
		require.Equal(t, "EPERM", attempts["ptrace-child"])
		seccompAudited(t, "ptrace")
	})
	t.Run("bpf is refused and audited", func(t *testing.T) {
		require.Equal(t, "EPERM", attempts["bpf"])
		seccompAudited(t, "bpf")
	})
	t.Run("mount is refused and audited", func(t *testing.T) {
		require.Equal(t, "EPERM", attempts["mount"])
		seccompAudited(t, "mount")
	})
	t.Run("a user namespace is refused and audited", func(t *testing.T) {
		require.Equal(t, "EPERM", attempts["userns"])
		seccompAudited(t, "clone")
	})
	t.Run("egress outside its policy is refused and audited", func(t *testing.T) {
		require.Equal(t, "EPERM", attempts["egress"])
		det := denied(t, "net/-/"+target)
		require.Equal(t, "connect4", det["hook"], det)
	})
	t.Run("a setuid root binary runs with the task uid", func(t *testing.T) {
		res := attempts["setuid"]
		// The file really is setuid root, and the exec'd copy and the
		// task itself run with the task's uid.
		var fileUID, uid, euid, ownUID, ownEUID int
		var mode string
		_, err := fmt.Sscanf(res, "file-uid=%d file-mode=%s uid=%d euid=%d (own uid=%d euid=%d)", &fileUID, &mode, &uid, &euid, &ownUID, &ownEUID)
		require.NoError(t, err, res)
		require.Equal(t, 0, fileUID, res)
		require.Equal(t, "4755", mode, res)
		require.NotZero(t, uid, res)
		require.Equal(t, uid, euid, "the setuid bit raised the task's euid: %s", res)
		require.Equal(t, ownUID, ownEUID, res)
		require.Equal(t, uid, ownUID, res)
		// Control: the same file, run by an ordinary uid without
		// no_new_privs, runs as root: the bit works on this file system.
		ctl := exec.Command(suid, "ids")
		ctl.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := ctl.Output()
		require.NoError(t, err)
		require.Equal(t, "uid=65534 euid=0", strings.TrimSpace(string(out)))
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
