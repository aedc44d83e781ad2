package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is the Decider's injected clock.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// failingLog is a DecisionLog whose store is down.
type failingLog struct{}

func (failingLog) Record(context.Context, *Record) error { return errors.New("disk full") }

type deciderFixture struct {
	clock *fakeClock
	view  *View
	ring  *Ring
	d     *Decider
}

func newDeciderFixture(t *testing.T, log DecisionLog) *deciderFixture {
	t.Helper()
	f := &deciderFixture{clock: &fakeClock{now: t0}, view: NewView(10 * time.Second), ring: NewRing(16)}
	if log == nil {
		log = f.ring
	}
	f.d = NewDecider(DeciderConfig{Node: "n1", View: f.view, Log: log, Now: f.clock.Now})
	return f
}

var decisionIDRe = regexp.MustCompile(`^n1\.[0-9a-f]{16}$`)

func TestDeciderDecides(t *testing.T) {
	ctx := context.Background()
	f := newDeciderFixture(t, nil)
	f.view.Set(builtinEngine(t, 7))
	f.view.Observe(7, t0)

	in := userInput("admin", "", "policy.apply", "policy/-/bundle")
	// What the caller puts in the context is replaced: the node and the
	// clock are the Decider's.
	in.Context = Context{Node: "spoofed", Time: t0.Add(365 * 24 * time.Hour)}
	in.Subject.Attributes = nil
	f.clock.Advance(2 * time.Second)
	dec, err := f.d.Decide(ctx, in, "")
	require.NoError(t, err)
	require.True(t, dec.Allow)
	require.True(t, dec.Privileged)
	require.Equal(t, int64(7), dec.Revision)
	require.Regexp(t, decisionIDRe, dec.ID)
	node, err := DecisionNode(dec.ID)
	require.NoError(t, err)
	require.Equal(t, "n1", node)

	r, ok := f.ring.Get(dec.ID)
	require.True(t, ok)
	require.Equal(t, dec.Result, r.Result)
	require.Equal(t, int64(7), r.Revision)
	require.Equal(t, t0.Add(2*time.Second), r.Time)
	require.Equal(t, Context{Node: "n1", Time: t0.Add(2 * time.Second), RequestID: dec.ID}, r.Input.Context)
	require.NotNil(t, r.Input.Delegation)
	require.NotNil(t, r.Input.Subject.Attributes)
	require.Empty(t, r.Err)

	// A request id the caller has is kept; every decision gets its own id.
	in.Context.RequestID = "req-1"
	dec2, err := f.d.Decide(ctx, in, "")
	require.NoError(t, err)
	require.NotEqual(t, dec.ID, dec2.ID)
	r2, _ := f.ring.Get(dec2.ID)
	require.Equal(t, "req-1", r2.Input.Context.RequestID)
}

func TestDeciderStaleView(t *testing.T) {
	ctx := context.Background()
	f := newDeciderFixture(t, nil)
	f.view.Set(builtinEngine(t, 1))
	f.view.Observe(1, t0)
	f.clock.Advance(11 * time.Second)

	// A privileged action the policy allows is refused on a stale view.
	dec, err := f.d.Decide(ctx, userInput("admin", "", "policy.apply", "policy/-/bundle"), "")
	require.ErrorIs(t, err, ErrStale)
	require.False(t, dec.Allow)
	require.True(t, dec.Privileged)
	require.Contains(t, strings.Join(dec.Reasons, "\n"), "policy view is stale")
	r, ok := f.ring.Get(dec.ID)
	require.True(t, ok, "a refused decision is recorded too")
	require.False(t, r.Result.Allow)
	require.Contains(t, r.Err, "stale")

	// Unprivileged actions go on; a privileged denial is just a denial.
	dec, err = f.d.Decide(ctx, userInput("vic", "viewer", "node.ls", "node/-/*"), "")
	require.NoError(t, err)
	require.True(t, dec.Allow)
	dec, err = f.d.Decide(ctx, userInput("vic", "viewer", "policy.apply", "policy/-/bundle"), "")
	require.NoError(t, err)
	require.False(t, dec.Allow)

	// Confirmed latest again: allowed again.
	f.view.Observe(1, f.clock.Now())
	dec, err = f.d.Decide(ctx, userInput("admin", "", "policy.apply", "policy/-/bundle"), "")
	require.NoError(t, err)
	require.True(t, dec.Allow)
}

func TestDeciderNoPolicy(t *testing.T) {
	f := newDeciderFixture(t, nil)
	for _, in := range []Input{
		userInput("admin", "", "policy.apply", "policy/-/bundle"),
		userInput("vic", "viewer", "node.ls", "node/-/*"),
	} {
		dec, err := f.d.Decide(context.Background(), in, "")
		require.ErrorIs(t, err, ErrNoPolicy)
		require.False(t, dec.Allow)
		require.Zero(t, dec.Revision)
		require.Regexp(t, decisionIDRe, dec.ID)
		r, ok := f.ring.Get(dec.ID)
		require.True(t, ok)
		require.Equal(t, ErrNoPolicy.Error(), r.Err)
	}
}

// privilegedOnlyLog fails for privileged decisions only: what the node's
// audit log does under allow-and-alert while the log is down.
type privilegedOnlyLog struct{}

func (privilegedOnlyLog) Record(_ context.Context, r *Record) error {
	if r.Result.Privileged {
		return errors.New("disk full")
	}
	return nil
}

// Complete record: an action whose decision cannot be recorded does not
// run, privileged or not, and the refusal names the log; the log alone may
// let an unprivileged one through.
func TestDeciderLogFailure(t *testing.T) {
	ctx := context.Background()
	f := newDeciderFixture(t, failingLog{})
	f.view.Set(builtinEngine(t, 1))
	f.view.Observe(1, t0)
	for _, in := range []Input{
		userInput("admin", "", "policy.apply", "policy/-/bundle"),
		userInput("vic", "viewer", "node.ls", "node/-/*"),
	} {
		dec, err := f.d.Decide(ctx, in, "")
		require.ErrorIs(t, err, ErrUnrecorded, in.Action)
		require.ErrorContains(t, err, "decision not recorded: disk full")
		require.False(t, dec.Allow, in.Action)
		require.Contains(t, dec.Reasons, err.Error())
	}

	f = newDeciderFixture(t, privilegedOnlyLog{})
	f.view.Set(builtinEngine(t, 1))
	f.view.Observe(1, t0)
	dec, err := f.d.Decide(ctx, userInput("admin", "", "policy.apply", "policy/-/bundle"), "")
	require.ErrorIs(t, err, ErrUnrecorded)
	require.False(t, dec.Allow)
	dec, err = f.d.Decide(ctx, userInput("vic", "viewer", "node.ls", "node/-/*"), "")
	require.NoError(t, err)
	require.True(t, dec.Allow)
}

// The request digest travels to the record, not to the policy.
func TestDeciderRecordsRequestDigest(t *testing.T) {
	ctx := context.Background()
	f := newDeciderFixture(t, nil)
	f.view.Set(builtinEngine(t, 1))
	f.view.Observe(1, t0)
	dec, err := f.d.Decide(ctx, userInput("vic", "viewer", "node.ls", "node/-/*"), "sha256:ab")
	require.NoError(t, err)
	r, ok := f.ring.Get(dec.ID)
	require.True(t, ok)
	require.Equal(t, "sha256:ab", r.RequestDigest)
	ref := f.d.Refuse(ctx, userInput("vic", "viewer", "rpc.unrouted", "method/-/x"), "sha256:cd", "no action")
	r, ok = f.ring.Get(ref.ID)
	require.True(t, ok)
	require.Equal(t, "sha256:cd", r.RequestDigest)
}

func TestDeciderShadow(t *testing.T) {
	ctx := context.Background()
	f := newDeciderFixture(t, nil)
	f.view.Set(builtinEngine(t, 1))
	f.view.Observe(1, t0)
	cand, err := NewEngine(ctx, bundleWith(map[string]string{"freeze.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"listing frozen\" if input.action == \"node.ls\"\n"}), 2)
	require.NoError(t, err)
	require.Nil(t, f.d.CurrentShadow())
	s := &Shadow{ID: "sh1", Engine: cand, Until: t0.Add(5 * time.Minute)}
	f.d.SetShadow(s)
	require.Same(t, s, f.d.CurrentShadow())

	// The live answer stands; the shadow's is recorded beside it.
	dec, err := f.d.Decide(ctx, userInput("vic", "viewer", "node.ls", "node/-/*"), "")
	require.NoError(t, err)
	require.True(t, dec.Allow, "a shadow changed a live decision")
	r, _ := f.ring.Get(dec.ID)
	require.NotNil(t, r.Shadow)
	require.Equal(t, "sh1", r.Shadow.ShadowID)
	require.False(t, r.Shadow.Result.Allow)
	require.Equal(t, []string{"listing frozen"}, r.Shadow.Result.Reasons)
	require.True(t, r.Shadow.Changed())

	same, err := f.d.Decide(ctx, userInput("vic", "viewer", "id.show", "id/-/self"), "")
	require.NoError(t, err)
	rs, _ := f.ring.Get(same.ID)
	require.NotNil(t, rs.Shadow)
	require.False(t, rs.Shadow.Changed())

	changes := f.ring.ShadowChanges("sh1")
	require.Len(t, changes, 1)
	require.Equal(t, dec.ID, changes[0].ID)

	// Past Until, nothing more is shadowed.
	f.clock.Advance(5 * time.Minute)
	f.view.Observe(1, f.clock.Now())
	late, err := f.d.Decide(ctx, userInput("vic", "viewer", "node.ls", "node/-/*"), "")
	require.NoError(t, err)
	rl, _ := f.ring.Get(late.ID)
	require.Nil(t, rl.Shadow)

	f.d.SetShadow(nil)
	require.Nil(t, f.d.CurrentShadow())
}

func TestDecisionNode(t *testing.T) {
	id := NewDecisionID("node-7")
	require.Regexp(t, `^node-7\.[0-9a-f]{16}$`, id)
	require.NotEqual(t, id, NewDecisionID("node-7"))
	n, err := DecisionNode(id)
	require.NoError(t, err)
	require.Equal(t, "node-7", n)

	for _, bad := range []string{
		"", "n1", "n1.", ".0123456789abcdef", "n1.0123456789abcde", "n1.0123456789abcdef0",
		"n1.0123456789abcdeg", "n1-0123456789abcdef", "n1.01234567.9abcdef",
	} {
		t.Run(bad, func(t *testing.T) {
			_, err := DecisionNode(bad)
			require.ErrorContains(t, err, "want NODE.HEX")
		})
	}
}

// lineOf is the 1-based line of the first line of src that starts with
// prefix.
func lineOf(t *testing.T, src []byte, prefix string) int {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		if strings.HasPrefix(sc.Text(), prefix) {
			return n
		}
	}
	t.Fatalf("no line starts with %q", prefix)
	return 0
}

func TestEngineExplain(t *testing.T) {
	ctx := context.Background()
	e := builtinEngine(t, 1)
	src := Builtin().Files["authz.rego"]
	adminLine := lineOf(t, src, `grants contains "user/admin may do everything" if {`)
	roleLine := lineOf(t, src, `grants contains concat("", ["role viewer may ", input.action]) if {`)

	for _, tc := range []struct {
		name        string
		in          Input
		fires       []int // authz.rego lines of data.unum.authz.grants that must fire
		doesNotFire []int
	}{
		{"admin", userInput("admin", "", "policy.apply", "policy/-/bundle"), []int{adminLine}, []int{roleLine}},
		{"viewer", userInput("vic", "viewer", "node.ls", "node/-/*"), []int{roleLine}, []int{adminLine}},
		{"denied", userInput("vic", "viewer", "policy.apply", "policy/-/bundle"), nil, []int{adminLine, roleLine}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := e.Eval(ctx, &tc.in)
			require.NoError(t, err)
			r, fired, err := e.Explain(ctx, &tc.in)
			require.NoError(t, err)
			require.Equal(t, want, r)
			require.NotEmpty(t, fired)
			grants := map[int]bool{}
			for i, fr := range fired {
				if i > 0 {
					prev := fired[i-1]
					require.True(t, prev.File < fr.File || (prev.File == fr.File && prev.Line < fr.Line), "not sorted: %v", fired)
				}
				if fr.File == "authz.rego" && fr.Rule == "data.unum.authz.grants" {
					grants[fr.Line] = true
				}
			}
			for _, l := range tc.fires {
				require.True(t, grants[l], "grants at authz.rego:%d did not fire: %v", l, fired)
			}
			for _, l := range tc.doesNotFire {
				require.False(t, grants[l], "grants at authz.rego:%d fired: %v", l, fired)
			}
			require.Contains(t, fired, FiredRule{Rule: "data.unum.authz.decision", File: "authz.rego", Line: lineOf(t, src, "decision := {")})
		})
	}
}

func TestEngineCache(t *testing.T) {
	c := NewEngineCache(2)
	e1, e2, e3 := builtinEngine(t, 1), builtinEngine(t, 2), builtinEngine(t, 3)
	c.Put(e1)
	c.Put(e2)
	c.Put(e1) // already held: does not count twice
	got, ok := c.Get(1)
	require.True(t, ok)
	require.Same(t, e1, got)
	c.Put(e3)
	_, ok = c.Get(1)
	require.False(t, ok, "the oldest engine was not dropped")
	for rev, e := range map[int64]*Engine{2: e2, 3: e3} {
		got, ok := c.Get(rev)
		require.True(t, ok)
		require.Same(t, e, got)
	}
}

// bundleWith is the shipped bundle with extra files.
func bundleWith(files map[string]string) *Bundle {
	b := Builtin()
	for n, d := range files {
		b.Files[n] = []byte(d)
	}
	return b
}

// A node whose view is stale refuses privileged calls; a shadow running
// there must not report those refusals as changes the candidate makes.
func TestDeciderShadowComparesWithTheBundle(t *testing.T) {
	ctx := context.Background()
	f := newDeciderFixture(t, nil)
	f.view.Set(builtinEngine(t, 1))
	f.view.Observe(1, t0.Add(-time.Hour)) // long unconfirmed: stale
	f.d.SetShadow(&Shadow{ID: "same", Engine: builtinEngine(t, 2), Until: t0.Add(5 * time.Minute)})
	dec, err := f.d.Decide(ctx, userInput("admin", "", "policy.apply", "policy/-/bundle"), "")
	require.ErrorIs(t, err, ErrStale)
	require.False(t, dec.Allow)
	r, _ := f.ring.Get(dec.ID)
	require.True(t, r.Shadow.Live.Allow, "the bundle's own answer")
	require.False(t, r.Shadow.Changed(), "the same bundle as shadow changes nothing")
}

// A method with no action is refused with an id and a record.
func TestDeciderRefuse(t *testing.T) {
	f := newDeciderFixture(t, nil)
	dec := f.d.Refuse(context.Background(), userInput("admin", "", "rpc.unrouted", "method/-/x"), "", "no action")
	require.False(t, dec.Allow)
	r, ok := f.ring.Get(dec.ID)
	require.True(t, ok)
	require.Equal(t, "no action", r.Err)
}
