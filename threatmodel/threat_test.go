package threatmodel

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func validThreat() Threat {
	return Threat{
		ID:         "T-001",
		Title:      "title",
		STRIDE:     "S",
		Asset:      "asset",
		Boundary:   "boundary",
		Attacker:   "attacker",
		Crosses:    []string{"enrolment"},
		Capability: NetworkPeer,
		Mitigation: "mitigation",
		Status:     Mitigated,
		Tests:      []string{"identity/ca.TestX"},
	}
}

func TestValidate(t *testing.T) {
	with := func(f func(*Threat)) []Threat {
		th := validThreat()
		f(&th)
		return []Threat{th}
	}
	// withKernel is a threat with a valid kernel dependency, changed by f.
	withKernel := func(f func(*KernelDependency)) []Threat {
		return with(func(t *Threat) {
			t.Tests = []string{"k.TestLSM", "s.TestSeccomp", "k.TestOther"}
			t.Kernel = &KernelDependency{Feature: "bpf-lsm", Tests: []string{"k.TestLSM"}, Fallback: []string{"s.TestSeccomp"}}
			f(t.Kernel)
		})
	}
	tests := []struct {
		name    string
		threats []Threat
		wantErr []string
	}{
		{"valid", with(func(*Threat) {}), nil},
		{"empty register", nil, nil},
		{"open without tests", with(func(t *Threat) { t.Status, t.Tests = Open, nil }), nil},
		{"accepted with reason, no test", with(func(t *Threat) { t.Status, t.Reason, t.Tests = Accepted, "why", nil }), nil},
		{"several STRIDE letters", with(func(t *Threat) { t.STRIDE = "STRIDE" }), nil},
		{"four-digit id", with(func(t *Threat) { t.ID = "T-1000" }), nil},
		{"duplicate id", append(with(func(*Threat) {}), validThreat()), []string{"T-001: duplicate id"}},
		{"bad id", with(func(t *Threat) { t.ID = "T-01" }), []string{`id "T-01"`}},
		{"id lowercase", with(func(t *Threat) { t.ID = "t-001" }), []string{`id "t-001"`}},
		{"missing id", with(func(t *Threat) { t.ID = "" }), []string{"threat #0"}},
		{"missing fields", with(func(t *Threat) { t.Title, t.Asset, t.Boundary, t.Attacker, t.Mitigation = "", " ", "", "", "" }),
			[]string{"title is empty", "asset is empty", "boundary is empty", "attacker is empty", "mitigation is empty"}},
		{"no STRIDE", with(func(t *Threat) { t.STRIDE = "" }), []string{"STRIDE class is empty"}},
		{"bad STRIDE letter", with(func(t *Threat) { t.STRIDE = "X" }), []string{`'X' is not one of STRIDE`}},
		{"STRIDE out of order", with(func(t *Threat) { t.STRIDE = "ES" }), []string{"in STRIDE order"}},
		{"STRIDE repeated", with(func(t *Threat) { t.STRIDE = "SS" }), []string{"distinct"}},
		{"STRIDE with separator", with(func(t *Threat) { t.STRIDE = "S/E" }), []string{"'/' is not one of"}},
		{"mitigated without test", with(func(t *Threat) { t.Tests = nil }), []string{"mitigated but names no test"}},
		{"accepted without reason", with(func(t *Threat) { t.Status, t.Reason = Accepted, " " }), []string{"accepted without a reason"}},
		{"unknown status", with(func(t *Threat) { t.Status = "fixed" }), []string{`unknown status "fixed"`}},
		{"empty status", with(func(t *Threat) { t.Status = "" }), []string{`unknown status ""`}},
		{"bad test ref", with(func(t *Threat) { t.Tests = []string{"TestX"} }), []string{`test "TestX"`}},
		{"test listed twice", with(func(t *Threat) { t.Tests = []string{"a.TestX", "a.TestX"} }), []string{"listed twice"}},
		{"every capability", func() []Threat {
			var ts []Threat
			for i, c := range Capabilities() {
				ts = append(ts, with(func(t *Threat) { t.ID, t.Capability = fmt.Sprintf("T-%03d", i+1), c })...)
			}
			return ts
		}(), nil},
		{"no capability", with(func(t *Threat) { t.Capability = "" }), []string{"capability is empty"}},
		{"unknown capability", with(func(t *Threat) { t.Capability = "root" }), []string{`unknown capability "root"`}},
		{"several boundaries", with(func(t *Threat) { t.Crosses = []string{"enrolment", "offline"} }), nil},
		{"no boundary", with(func(t *Threat) { t.Crosses = nil }), []string{"crosses no trust boundary"}},
		{"unknown boundary", with(func(t *Threat) { t.Crosses = []string{"enrolment", "moat"} }),
			[]string{`unknown trust boundary "moat"`}},
		{"boundary by title", with(func(t *Threat) { t.Crosses = []string{"Enrolment listener"} }),
			[]string{`unknown trust boundary "Enrolment listener"`}},
		{"boundary twice", with(func(t *Threat) { t.Crosses = []string{"enrolment", "enrolment"} }),
			[]string{`trust boundary "enrolment" twice`}},
		{"kernel dependency", withKernel(func(*KernelDependency) {}), nil},
		{"kernel feature empty", withKernel(func(k *KernelDependency) { k.Feature = "" }), []string{`kernel feature ""`}},
		{"kernel feature not kebab-case", append(append(
			withKernel(func(k *KernelDependency) { k.Feature = "BPF-LSM" }),
			withKernel(func(k *KernelDependency) { k.Feature = "bpf_lsm" })...),
			withKernel(func(k *KernelDependency) { k.Feature = "bpf--lsm" })...),
			[]string{`kernel feature "BPF-LSM"`, `kernel feature "bpf_lsm"`, `kernel feature "bpf--lsm"`}},
		{"kernel without tests", withKernel(func(k *KernelDependency) { k.Tests = nil }),
			[]string{"names no test that needs the feature"}},
		{"kernel without fallback", withKernel(func(k *KernelDependency) { k.Fallback = nil }),
			[]string{"names no fallback test"}},
		{"kernel test malformed", withKernel(func(k *KernelDependency) { k.Tests = []string{"TestLSM"} }),
			[]string{`kernel test: test "TestLSM"`}},
		{"kernel fallback malformed", withKernel(func(k *KernelDependency) { k.Fallback = []string{"a.testx"} }),
			[]string{`kernel fallback: test "a.testx"`}},
		{"kernel test not a threat test", withKernel(func(k *KernelDependency) { k.Tests = []string{"k.TestNotListed"} }),
			[]string{`kernel test "k.TestNotListed" is not among the threat's tests`}},
		{"kernel fallback not a threat test", withKernel(func(k *KernelDependency) { k.Fallback = []string{"k.TestNotListed"} }),
			[]string{`kernel fallback "k.TestNotListed" is not among the threat's tests`}},
		{"kernel test is its own fallback", withKernel(func(k *KernelDependency) { k.Fallback = []string{"k.TestLSM"} }),
			[]string{`test "k.TestLSM" is both a kernel test and a kernel fallback`}},
		{"kernel test listed twice", withKernel(func(k *KernelDependency) { k.Tests = []string{"k.TestLSM", "k.TestLSM"} }),
			[]string{`kernel test "k.TestLSM" listed twice`}},
		{"reports every problem", with(func(t *Threat) { t.Title, t.Status = "", "x" }), []string{"title is empty", "unknown status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.threats)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
		})
	}
}

func TestValidateBoundaries(t *testing.T) {
	b := func(name string) TrustBoundary { return TrustBoundary{name, "Title", "description"} }
	tests := []struct {
		name    string
		in      []TrustBoundary
		wantErr []string
	}{
		{"the cluster's", TrustBoundaries(), nil},
		{"kebab-case with digits", []TrustBoundary{b("a"), b("node-api"), b("l7-proxy")}, nil},
		{"duplicate name", []TrustBoundary{b("node-api"), b("enrolment"), b("node-api")}, []string{`"node-api": duplicate name`}},
		{"empty name", []TrustBoundary{b("")}, []string{`name "": want lowercase kebab-case`}},
		{"not kebab-case", []TrustBoundary{b("Node API"), b("node_api"), b("-node"), b("node-")},
			[]string{`"Node API"`, `"node_api"`, `"-node"`, `"node-"`}},
		{"empty title", []TrustBoundary{{"x", " ", "d"}}, []string{`"x": title or description is empty`}},
		{"empty description", []TrustBoundary{{"x", "X", ""}}, []string{`"x": title or description is empty`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateBoundaries(tt.in)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
		})
	}
}

func TestParseTestRef(t *testing.T) {
	tests := []struct {
		in      string
		want    TestRef
		wantErr string
	}{
		{"identity/ca.TestVerifyCSRRefuses", TestRef{"identity/ca", "TestVerifyCSRRefuses", ""}, ""},
		{"node.TestJoinMisuse", TestRef{"node", "TestJoinMisuse", ""}, ""},
		{"cmd/unum.TestInit", TestRef{"cmd/unum", "TestInit", ""}, ""},
		{"a.Test", TestRef{"a", "Test", ""}, ""},
		{"a.Test_x", TestRef{"a", "Test_x", ""}, ""},
		{"a.TestX/sub", TestRef{"a", "TestX", "sub"}, ""},
		{"a.TestX/sub/v1.2", TestRef{"a", "TestX", "sub/v1.2"}, ""},
		{"gopkg.in/x.TestX", TestRef{"gopkg.in/x", "TestX", ""}, ""},
		{"TestX", TestRef{}, "want pkgpath.TestName"},
		{".TestX", TestRef{}, "want pkgpath.TestName"},
		{"a.Benchmark", TestRef{}, "want pkgpath.TestName"},
		{"a.Testx", TestRef{}, "not a test function name"},
		{"a.TestX-y", TestRef{}, "not a test function name"},
		{"a.TestX/", TestRef{}, "empty subtest"},
		{"../a.TestX", TestRef{}, "bad package path"},
		{"a/../b.TestX", TestRef{}, "bad package path"},
		{"/abs.TestX", TestRef{}, "bad package path"},
		{"a//b.TestX", TestRef{}, "bad package path"},
		{"a b.TestX", TestRef{}, "bad package path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTestRef(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.in, got.String())
		})
	}
}

func TestSortByID(t *testing.T) {
	threats := []Threat{{ID: "T-1000"}, {ID: "T-010"}, {ID: "bad"}, {ID: "T-002"}, {ID: "T-999"}}
	sortByID(threats)
	var ids []string
	for _, th := range threats {
		ids = append(ids, th.ID)
	}
	require.Equal(t, []string{"bad", "T-002", "T-010", "T-999", "T-1000"}, ids)
}
