package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type policyStatusJSON struct {
	Latest int64 `json:"latest_revision"`
	Nodes  []struct {
		Name     string `json:"name"`
		Revision int64  `json:"revision"`
	} `json:"nodes"`
}

// waitConverged waits until every node reports serving rev and returns how
// long that took from the call.
func waitConverged(t *testing.T, d *devCluster, rev int64) time.Duration {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(30 * time.Second); ; {
		r := unum(t, d.env, "policy", "status", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var st policyStatusJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
		done := st.Latest == rev && len(st.Nodes) > 0
		for _, n := range st.Nodes {
			done = done && n.Revision == rev
		}
		if done {
			return time.Since(start)
		}
		require.True(t, time.Now().Before(deadline), "nodes never converged on revision %d: %s", rev, r.stdout)
		time.Sleep(100 * time.Millisecond)
	}
}

var decisionRe = regexp.MustCompile(`decision: (node-[0-9]+\.[0-9a-f]{16})`)

const nodesListNodes = `package unum.authz

import rego.v1

# Nodes may list the cluster's nodes.
grants contains "nodes may list nodes" if {
	input.subject.kind == "node"
	input.action == "node.ls"
}
`

// TestPolicyDevCluster: the policy workflow on a real 3-node cluster, with
// the CLI an operator uses: get, test, apply (all nodes converge), a denial
// with exit 3 and an explainable id, check, history, diff, the lockout
// guard, shadow, rollback.
func TestPolicyDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three node processes")
	}
	d := startDev(t, 3)
	waitConverged(t, d, 1)
	node3 := []string{"UNUM_CONFIG=" + nodeClientConfig(t, d, "node-3")}

	// A node may not list nodes under the shipped policy: exit 3, with a
	// decision id that explain resolves.
	r := unum(t, node3, "node", "ls")
	require.Equal(t, 3, r.code, r.stderr)
	require.Contains(t, r.stderr, "no rule allows spiffe://unum.local/node/node-3 to node.ls node/-/*")
	m := decisionRe.FindStringSubmatch(r.stderr)
	require.NotNil(t, m, r.stderr)
	r = unum(t, d.env, "policy", "explain", m[1], "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var ex struct {
		Allow    bool              `json:"allow"`
		Revision int64             `json:"revision"`
		Fired    []json.RawMessage `json:"rules_fired"`
		Input    struct {
			Action string `json:"action"`
		} `json:"input"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ex), r.stdout)
	require.False(t, ex.Allow)
	require.Equal(t, int64(1), ex.Revision)
	require.Equal(t, "node.ls", ex.Input.Action)
	require.NotEmpty(t, ex.Fired)

	// Edit the live policy: get, add a rule, test, apply.
	dir := filepath.Join(t.TempDir(), "bundle")
	r = unum(t, d.env, "policy", "get", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	require.FileExists(t, filepath.Join(dir, "authz.rego"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nodes.rego"), []byte(nodesListNodes), 0o644))
	// The shipped tests say nodes may not list nodes: the new rule fails
	// them until the test is changed too.
	r = unum(t, d.env, "policy", "test", dir)
	require.Equal(t, 1, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "FAIL authz_test.rego:")
	tests, err := os.ReadFile(filepath.Join(dir, "authz_test.rego"))
	require.NoError(t, err)
	edited := strings.Replace(string(tests), "\tnot allowed(req(node(\"n1\"), \"node.ls\", \"node\", \"-\", \"*\"))\n", "", 1)
	require.NotEqual(t, string(tests), edited)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "authz_test.rego"), []byte(edited), 0o644))
	r = unum(t, d.env, "policy", "test", dir)
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Regexp(t, `\d+ passed, 0 failed; coverage`, r.stdout)

	// What-if against the candidate, before applying it.
	r = unum(t, nil, "policy", "check", "--bundle", dir, "--as", "spiffe://unum.local/node/node-3", "--action", "node.ls", "--resource", "node/-/*")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	r = unum(t, d.env, "policy", "check", "--as", "spiffe://unum.local/node/node-3", "--action", "node.ls", "--resource", "node/-/*")
	require.Equal(t, 3, r.code, "the live revision still denies: %s", r.stdout)
	require.Contains(t, r.stdout, "denied")

	// Shadow the candidate on real traffic: exactly node-3's listings change.
	var wg sync.WaitGroup
	var shadow result
	wg.Add(1)
	go func() {
		defer wg.Done()
		shadow = unum(t, d.env, "policy", "shadow", dir, "--for", "6s", "-o", "json")
	}()
	r = unum(t, d.env, "policy", "status", "-o", "json")
	for deadline := time.Now().Add(10 * time.Second); !regexp.MustCompile(`"shadow_id"`).MatchString(r.stdout) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		r = unum(t, d.env, "policy", "status", "-o", "json")
	}
	require.Contains(t, r.stdout, `"shadow_id"`, "the shadow never started")
	time.Sleep(time.Second) // every node installs the shadow from its feed
	for i := 0; i < 2; i++ {
		r = unum(t, node3, "node", "ls")
		require.Equal(t, 3, r.code, "shadowing changes nothing: %s", r.stderr)
		r = unum(t, d.env, "node", "ls")
		require.Equal(t, 0, r.code, r.stderr)
	}
	wg.Wait()
	require.Equal(t, 0, shadow.code, shadow.stderr)
	var rep struct {
		Changes []struct {
			Subject     string `json:"subject"`
			Action      string `json:"action"`
			LiveAllow   bool   `json:"live_allow"`
			ShadowAllow bool   `json:"shadow_allow"`
		} `json:"changes"`
		Unreachable []string `json:"unreachable_nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(shadow.stdout), &rep), shadow.stdout)
	require.Empty(t, rep.Unreachable)
	require.Len(t, rep.Changes, 2, shadow.stdout)
	for _, c := range rep.Changes {
		require.Equal(t, "spiffe://unum.local/node/node-3", c.Subject)
		require.Equal(t, "node.ls", c.Action)
		require.False(t, c.LiveAllow)
		require.True(t, c.ShadowAllow)
	}

	// The revision also binds a deploy pipeline to the operator role.
	data, err := os.ReadFile(filepath.Join(dir, "data.json"))
	require.NoError(t, err)
	bound := strings.Replace(string(data), `"bindings": {}`, `"bindings": {"spiffe://unum.local/ns/ci/job/deployer": "operator"}`, 1)
	require.NotEqual(t, string(data), bound)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data.json"), []byte(bound), 0o644))

	// Apply: every node serves revision 2 soon after.
	r = unum(t, d.env, "policy", "apply", dir, "-m", "nodes list nodes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "applied revision 2")
	took := waitConverged(t, d, 2)
	t.Logf("3 nodes serve revision 2 %s after apply returned", took.Round(time.Millisecond))
	r = unum(t, node3, "node", "ls")
	require.Equal(t, 0, r.code, r.stderr)

	r = unum(t, d.env, "policy", "history", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"message": "nodes list nodes"`)
	r = unum(t, d.env, "policy", "diff", "1", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "+++ revision 2/nodes.rego")
	require.Contains(t, r.stdout, `+grants contains "nodes may list nodes" if {`)

	// The live threat model answers "who is privileged here" from
	// revision 2: the bound pipeline and the cluster's operators may
	// register identities; the shipped answer knows neither.
	r = unum(t, d.env, "user", "add", "olivia", "--role", "operator")
	require.Equal(t, 0, r.code, r.stderr)
	r = unum(t, d.env, "threatmodel", "--live", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var live struct {
		Threats    []json.RawMessage `json:"threats"`
		Source     string            `json:"source"`
		Privileged []struct {
			Action    string   `json:"action"`
			GrantedTo []string `json:"granted_to"`
		} `json:"privileged_actions"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &live), r.stdout)
	require.NotEmpty(t, live.Threats)
	require.Contains(t, live.Source, "policy revision 2 of unum.local")
	granted := map[string][]string{}
	for _, a := range live.Privileged {
		granted[a.Action] = a.GrantedTo
	}
	require.Contains(t, granted["id.register"], "spiffe://unum.local/ns/ci/job/deployer")
	require.Contains(t, granted["id.register"], "role operator (olivia)")
	require.NotContains(t, granted["policy.apply"], "spiffe://unum.local/ns/ci/job/deployer")
	r = unum(t, d.env, "threatmodel", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stdout, "deployer")

	// The lockout guard refuses a bundle that locks the admin out.
	lock := filepath.Join(t.TempDir(), "lock")
	require.NoError(t, os.MkdirAll(lock, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(lock, "authz.rego"), []byte("package unum.authz\n\nimport rego.v1\n\ndecision := {\"allow\": false, \"privileged\": true, \"reasons\": [\"nobody\"]}\n"), 0o644))
	r = unum(t, d.env, "policy", "apply", lock)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "lockout: spiffe://unum.local/user/admin may not policy.apply")
	// Malformed Rego is refused at file:line.
	require.NoError(t, os.WriteFile(filepath.Join(lock, "authz.rego"), []byte("package unum.authz\n\ndecision := {\n"), 0o644))
	r = unum(t, d.env, "policy", "apply", lock)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "authz.rego:4: unexpected eof token")

	// Rollback restores revision 1's bundle as revision 3.
	r = unum(t, d.env, "policy", "rollback", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "revision 3 restores revision 1")
	waitConverged(t, d, 3)
	r = unum(t, node3, "node", "ls")
	require.Equal(t, 3, r.code, r.stderr)
	r = unum(t, d.env, "policy", "rollback", "42")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "policy revision 42 does not exist (the latest is "+strconv.Itoa(3)+")")
}
