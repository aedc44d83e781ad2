package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type auditEventJSON struct {
	ID       string         `json:"id"`
	Node     string         `json:"node"`
	Action   string         `json:"action"`
	Subject  string         `json:"subject"`
	Resource string         `json:"resource"`
	Outcome  string         `json:"outcome"`
	Kind     string         `json:"kind"`
	Chain    []string       `json:"chain"`
	Creds    []string       `json:"creds"`
	Reasons  []string       `json:"reasons"`
	Decision string         `json:"decision_id"`
	Details  map[string]any `json:"details"`
}

func auditQuery(t *testing.T, d *devCluster, args ...string) []auditEventJSON {
	t.Helper()
	r := unum(t, d.env, append([]string{"audit", "query", "-o", "json"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Events []auditEventJSON `json:"events"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.NotNil(t, out.Events, `JSON is {"events": [...]}`)
	return out.Events
}

type auditVerifyJSON struct {
	Nodes []struct {
		Node          string `json:"node"`
		OK            bool   `json:"ok"`
		BadIndex      *int64 `json:"bad_index"`
		Problem       string `json:"problem"`
		Entries       uint64 `json:"entries"`
		WitnessedSize uint64 `json:"witnessed_size"`
	} `json:"nodes"`
}

// TestAuditDevCluster reads the audit log of a real 3-node cluster as an
// operator does: query across every node with filters, tail -f seeing a
// new event, verify against the witness, a proof checked offline (and
// failing once altered), and an offline verify of a stopped node's folder.
func TestAuditDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three node processes")
	}
	d := startDev(t, 3)
	uid := strconv.Itoa(os.Getuid())

	// Something to find: an allowed registration and a denial.
	r := unum(t, d.env, "id", "register", "--spiffe-id", "spiffe://unum.local/ns/default/job/audited", "--node", "node-2", "--selector", "unix:uid:"+uid)
	require.Equal(t, 0, r.code, r.stderr)
	node3 := []string{"UNUM_CONFIG=" + nodeClientConfig(t, d, "node-3")}
	r = unum(t, node3, "node", "ls")
	require.Equal(t, 3, r.code, r.stderr)

	// Every node serves its own log: reading them makes each node decide
	// (and record) the reads, so after one query every node has events.
	auditQuery(t, d)
	var events []auditEventJSON
	deadline := time.Now().Add(30 * time.Second)
	for {
		events = auditQuery(t, d, "--limit", "0")
		nodes := map[string]bool{}
		for _, e := range events {
			nodes[e.Node] = true
		}
		if len(nodes) == 3 || time.Now().After(deadline) {
			require.Len(t, nodes, 3, "events from every node")
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("query filters", func(t *testing.T) {
		denied := auditQuery(t, d, "--outcome", "deny", "--action", "node.ls", "--subject", "spiffe://unum.local/node/node-3")
		require.NotEmpty(t, denied)
		for _, e := range denied {
			require.Equal(t, "deny", e.Outcome)
			require.Equal(t, "node.ls", e.Action)
		}
		reg := auditQuery(t, d, "--action", "id.register", "--since", "10m")
		require.NotEmpty(t, reg)
		require.Equal(t, "spiffe://unum.local/user/admin", reg[0].Subject)
		one := auditQuery(t, d, "--node", "node-2", "--limit", "1")
		require.Len(t, one, 1)
		require.Equal(t, "node-2", one[0].Node)
		require.Empty(t, auditQuery(t, d, "--until", "2000-01-01T00:00:00Z"))
		r := unum(t, d.env, "audit", "tail", "-n", "3", "--outcome", "deny")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "TIME")
		require.Contains(t, r.stdout, "node.ls")
	})

	t.Run("tail -f receives a new event", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, unumBin, "audit", "tail", "-f", "--action", "id.register", "-o", "json")
		cmd.Env = append(os.Environ(), d.env...)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		lines := make(chan string, 64)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// The backlog holds the first registration.
		waitLine(t, lines, "job/audited", &stderr)
		r := unum(t, d.env, "id", "register", "--spiffe-id", "spiffe://unum.local/ns/default/job/followed", "--node", "node-1", "--selector", "unix:uid:"+uid)
		require.Equal(t, 0, r.code, r.stderr)
		line := waitLine(t, lines, "job/followed", &stderr)
		var e auditEventJSON
		require.NoError(t, json.Unmarshal([]byte(line), &e))
		require.Equal(t, "allow", e.Outcome)
		require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
		require.NoError(t, cmd.Wait(), "interrupting tail -f exits 0: %s", stderr.String())
	})

	t.Run("verify against the witness", func(t *testing.T) {
		var v auditVerifyJSON
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := unum(t, d.env, "audit", "verify", "-o", "json")
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), r.stdout+r.stderr)
			witnessed := len(v.Nodes) == 3
			for _, n := range v.Nodes {
				require.True(t, n.OK, "%s: %s", n.Node, n.Problem)
				witnessed = witnessed && n.WitnessedSize > 0
			}
			require.Equal(t, 0, r.code, r.stderr)
			if witnessed {
				break
			}
			require.True(t, time.Now().Before(deadline), "nodes never witnessed: %s", r.stdout)
			time.Sleep(500 * time.Millisecond)
		}
		r := unum(t, d.env, "audit", "verify", "--node", "node-2")
		require.Equal(t, 0, r.code, r.stderr)
		require.Regexp(t, `^OK node-2: [0-9]+ entries, [0-9]+ checkpoints, witnessed at size [1-9][0-9]*\n$`, r.stdout)
	})

	keys := filepath.Join(t.TempDir(), "keys.json")
	r = unum(t, d.env, "audit", "keys", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, os.WriteFile(keys, []byte(r.stdout), 0o644))

	t.Run("proof round trip", func(t *testing.T) {
		reg := auditQuery(t, d, "--action", "id.register", "--limit", "1")
		require.NotEmpty(t, reg)
		r := unum(t, d.env, "audit", "proof", reg[0].ID)
		require.Equal(t, 0, r.code, r.stderr)
		bundle := []byte(r.stdout)
		check := func(data []byte) result {
			p := filepath.Join(t.TempDir(), "proof.json")
			require.NoError(t, os.WriteFile(p, data, 0o644))
			return unum(t, []string{"UNUM_CONFIG="}, "audit", "proof", "--check", p, "--keys", keys, "-o", "table")
		}
		r = check(bundle)
		require.Equal(t, 0, r.code, r.stdout+r.stderr)
		require.Contains(t, r.stdout, "OK: event "+reg[0].ID)

		altered := bytes.Replace(bundle, []byte(`"outcome": "allow"`), []byte(`"outcome": "deny"`), 1)
		require.NotEqual(t, bundle, altered)
		r = check(altered)
		require.Equal(t, 1, r.code, r.stdout)
		require.Contains(t, r.stdout, "FAIL")

		var b map[string]any
		require.NoError(t, json.Unmarshal(bundle, &b))
		note := b["checkpoint"].(string)
		lines := strings.Split(note, "\n")
		n, err := strconv.ParseUint(lines[2], 10, 64)
		require.NoError(t, err)
		lines[2] = strconv.FormatUint(n+1, 10)
		b["checkpoint"] = strings.Join(lines, "\n")
		altered, err = json.Marshal(b)
		require.NoError(t, err)
		r = check(altered)
		require.Equal(t, 1, r.code, r.stdout)
		require.Contains(t, r.stdout, "not signed by its published key")
	})

	// Stop the cluster; verify node-2's log at rest.
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, d.cmd.Wait())
	r = unum(t, []string{"UNUM_CONFIG="}, "audit", "verify", "--offline", filepath.Join(d.dir, "node-2"), "--keys", keys)
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Regexp(t, `^OK node-2: [0-9]+ entries, [0-9]+ checkpoints, witnessed at size [1-9][0-9]*( by itself only \(no independent witness\))?\n$`, r.stdout)
	r = unum(t, []string{"UNUM_CONFIG="}, "audit", "verify", "--offline", filepath.Join(d.dir, "node-2"))
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "unauthenticated")
}

func waitLine(t *testing.T, lines <-chan string, want string, stderr *bytes.Buffer) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "tail -f ended: %s", stderr.String())
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line with %q", want)
		}
	}
}
