package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
)

func policyCommands() []*command {
	return []*command{
		{name: "apply", summary: "compile, test, guard and store a bundle DIR as the next revision (admin)", run: runPolicyApply},
		{name: "get", summary: "print a revision's bundle, or write it to --out DIR", run: runPolicyGet},
		{name: "history", summary: "list policy revisions, newest first", run: runPolicyHistory},
		{name: "diff", summary: "show what changed between revisions A and B", run: runPolicyDiff},
		{name: "rollback", summary: "store revision N's bundle again as the next revision (admin)", run: runPolicyRollback},
		{name: "status", summary: "the latest revision and the one each node serves", run: runPolicyStatus},
		{name: "test", summary: "run a bundle DIR's Rego tests, with coverage (local)", run: runPolicyTest},
		{name: "check", summary: "what-if: would --as ID be allowed --action A on --resource R? (exit 0 yes, 3 no)", run: runPolicyCheck},
		{name: "explain", summary: "show a decision: input, result, reasons, revision and the rules that fired", run: runPolicyExplain},
		{name: "shadow", summary: "run a candidate bundle DIR beside the live policy and report every decision it would change", run: runPolicyShadow},
	}
}

// deniedError is a what-if that the policy denies: exit 3 like a real
// denial, with the reasons already printed.
type deniedError struct{ msg string }

func (e deniedError) Error() string { return e.msg }

func runPolicyApply(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy apply", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	msg := fs.String("m", "", "what this revision changes and why (kept in history)")
	force := fs.Bool("force", false, "apply although the lockout guard refuses the bundle")
	var b *policy.Bundle
	c, err := cf.connect(e, fs, args, 1, "unum policy apply DIR [-m MESSAGE] [--force]", func(pos []string) (err error) {
		b, err = policy.LoadDir(pos[0])
		return err
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewPolicyClient(c.conn).Apply(c.ctx, &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: b.Files}, Message: *msg, Force: *force})
	if err != nil {
		return err
	}
	for _, f := range resp.GetForced() {
		fmt.Fprintln(e.stderr, "warning: forced past the lockout guard:", f)
	}
	if resp.GetUnchanged() {
		fmt.Fprintf(e.stdout, "unchanged: revision %d already holds this bundle (sha256 %s)\n", resp.GetRevision(), resp.GetSha256())
		return nil
	}
	fmt.Fprintf(e.stdout, "applied revision %d (sha256 %s, %d tests passed)\n", resp.GetRevision(), resp.GetSha256(), resp.GetTestsPassed())
	return nil
}

// revisionView is the JSON shape of a revision.
type revisionView struct {
	Revision int64             `json:"revision"`
	Author   string            `json:"author"`
	Created  time.Time         `json:"created"`
	SHA256   string            `json:"sha256"`
	Message  string            `json:"message,omitempty"`
	Restores int64             `json:"restores_revision,omitempty"`
	Forced   bool              `json:"forced,omitempty"`
	Size     int64             `json:"size_bytes"`
	Files    map[string]string `json:"files,omitempty"`
}

func viewRevision(r *unumv1.PolicyRevision) revisionView {
	v := revisionView{Revision: r.GetRevision(), Author: r.GetAuthor(), Created: unixTime(r.GetCreatedUnix()), SHA256: r.GetSha256(),
		Message: r.GetMessage(), Restores: r.GetRestoresRevision(), Forced: r.GetForced(), Size: r.GetSizeBytes()}
	if fs := r.GetBundle().GetFiles(); fs != nil {
		v.Files = map[string]string{}
		for n, d := range fs {
			v.Files[n] = string(d)
		}
	}
	return v
}

func runPolicyGet(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy get", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	rev := fs.Int64("revision", 0, "the revision (default: the latest)")
	out := fs.String("out", "", "write the bundle's files to this folder (new or empty) instead of printing")
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error {
		if *rev < 0 {
			return usagef("--revision must be positive")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	r, err := unumv1.NewPolicyClient(c.conn).Get(c.ctx, &unumv1.GetPolicyRequest{Revision: *rev})
	if err != nil {
		return err
	}
	if *out != "" {
		b := &policy.Bundle{Files: r.GetBundle().GetFiles()}
		if err := b.WriteDir(*out); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "wrote revision %d (%d files) to %s\n", r.GetRevision(), len(b.Files), *out)
		return nil
	}
	v := viewRevision(r)
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "# revision %d by %s at %s, sha256 %s\n", v.Revision, v.Author, fmtTime(v.Created), v.SHA256)
		if v.Message != "" {
			fmt.Fprintf(tw, "# %s\n", v.Message)
		}
		names := make([]string, 0, len(v.Files))
		for n := range v.Files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(tw, "\n# ---- %s ----\n%s", n, v.Files[n])
		}
		return nil
	})
}

func runPolicyHistory(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy history", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	limit := fs.Int("n", 20, "how many revisions, newest first")
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error {
		if *limit <= 0 || *limit > 10000 {
			return usagef("-n must be between 1 and 10000")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewPolicyClient(c.conn).History(c.ctx, &unumv1.PolicyHistoryRequest{Limit: int32(*limit)})
	if err != nil {
		return err
	}
	views := make([]revisionView, 0, len(resp.GetRevisions()))
	for _, r := range resp.GetRevisions() {
		views = append(views, viewRevision(r))
	}
	return output.Write(e.stdout, c.format, struct {
		Revisions []revisionView `json:"revisions"`
	}{views}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "REVISION\tCREATED\tAUTHOR\tSHA256\tMESSAGE")
		for _, v := range views {
			msg := v.Message
			if v.Forced {
				msg += " [forced]"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", v.Revision, fmtTime(v.Created), v.Author, v.SHA256[:min(12, len(v.SHA256))], msg)
		}
		return nil
	})
}

func parseRevision(s string) (int64, error) {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 || fmt.Sprint(n) != s {
		return 0, usagef("revision %q: want a positive number", s)
	}
	return n, nil
}

func runPolicyDiff(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy diff", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var a, b int64
	c, err := cf.connect(e, fs, args, 2, "unum policy diff A B", func(pos []string) (err error) {
		if a, err = parseRevision(pos[0]); err != nil {
			return err
		}
		b, err = parseRevision(pos[1])
		return err
	})
	if err != nil {
		return err
	}
	defer c.close()
	pc := unumv1.NewPolicyClient(c.conn)
	ra, err := pc.Get(c.ctx, &unumv1.GetPolicyRequest{Revision: a})
	if err != nil {
		return err
	}
	rb, err := pc.Get(c.ctx, &unumv1.GetPolicyRequest{Revision: b})
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, bundleDiff(fmt.Sprintf("revision %d", a), fmt.Sprintf("revision %d", b), ra.GetBundle().GetFiles(), rb.GetBundle().GetFiles()))
	return nil
}

func runPolicyRollback(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy rollback", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	msg := fs.String("m", "", "why (default: rollback to revision N)")
	force := fs.Bool("force", false, "roll back although the lockout guard refuses that bundle")
	var rev int64
	c, err := cf.connect(e, fs, args, 1, "unum policy rollback N [-m MESSAGE]", func(pos []string) (err error) {
		rev, err = parseRevision(pos[0])
		return err
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewPolicyClient(c.conn).Rollback(c.ctx, &unumv1.RollbackPolicyRequest{Revision: rev, Message: *msg, Force: *force})
	if err != nil {
		return err
	}
	for _, f := range resp.GetForced() {
		fmt.Fprintln(e.stderr, "warning: forced past the lockout guard:", f)
	}
	fmt.Fprintf(e.stdout, "revision %d restores revision %d (sha256 %s)\n", resp.GetRevision(), rev, resp.GetSha256())
	return nil
}

// nodePolicyView is one node in `unum policy status`.
type nodePolicyView struct {
	Name     string `json:"name"`
	Revision int64  `json:"revision"`
	// Current is whether the node serves the latest revision.
	Current  bool      `json:"current"`
	AgeMs    int64     `json:"age_ms"`
	LastSeen time.Time `json:"last_seen"`
}

func runPolicyStatus(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy status", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewPolicyClient(c.conn).Status(c.ctx, &unumv1.PolicyStatusRequest{})
	if err != nil {
		return err
	}
	v := struct {
		Latest      int64            `json:"latest_revision"`
		Nodes       []nodePolicyView `json:"nodes"`
		ShadowID    string           `json:"shadow_id,omitempty"`
		ShadowUntil *time.Time       `json:"shadow_until,omitempty"`
	}{Latest: resp.GetLatestRevision(), Nodes: []nodePolicyView{}, ShadowID: resp.GetShadowId()}
	if resp.GetShadowUntilUnix() > 0 {
		t := unixTime(resp.GetShadowUntilUnix())
		v.ShadowUntil = &t
	}
	for _, n := range resp.GetNodes() {
		v.Nodes = append(v.Nodes, nodePolicyView{Name: n.GetName(), Revision: n.GetRevision(), Current: n.GetRevision() == resp.GetLatestRevision(), AgeMs: n.GetAgeMs(), LastSeen: unixTime(n.GetLastSeenUnix())})
	}
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "latest revision %d\n", v.Latest)
		if v.ShadowID != "" {
			fmt.Fprintf(tw, "shadow %s running until %s\n", v.ShadowID, fmtTime(*v.ShadowUntil))
		}
		fmt.Fprintln(tw, "\nNODE\tSERVING\tCURRENT\tCONFIRMED\tLAST SEEN")
		for _, n := range v.Nodes {
			confirmed := "never"
			if n.AgeMs >= 0 && n.Revision > 0 {
				confirmed = (time.Duration(n.AgeMs) * time.Millisecond).Round(time.Millisecond).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\n", n.Name, n.Revision, n.Current, confirmed, fmtTime(n.LastSeen))
		}
		return nil
	})
}

func runPolicyTest(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy test", flag.ContinueOnError)
	format := fs.String("o", "table", "output format: table|json|yaml")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: unum policy test DIR")
	}
	f, err := output.ParseFormat(*format)
	if err != nil {
		return usagef("-o: %v", err)
	}
	b, err := policy.LoadDir(pos[0])
	if err != nil {
		return err
	}
	rep, err := b.Test(e.ctx)
	if err != nil {
		return err
	}
	v := struct {
		Passed     int      `json:"passed"`
		Failed     int      `json:"failed"`
		Failures   []string `json:"failures"`
		Coverage   float64  `json:"coverage_percent"`
		NotCovered []string `json:"not_covered"`
	}{Passed: rep.Passed, Failed: rep.Failed, Failures: []string{}, Coverage: rep.Coverage, NotCovered: []string{}}
	for _, p := range rep.Failures {
		v.Failures = append(v.Failures, p.String())
	}
	for _, p := range rep.NotCovered {
		v.NotCovered = append(v.NotCovered, p.File+":"+fmt.Sprint(p.Line))
	}
	if err := output.Write(e.stdout, f, v, func(tw *tabwriter.Writer) error {
		for _, fl := range v.Failures {
			fmt.Fprintln(tw, "FAIL", fl)
		}
		fmt.Fprintf(tw, "%d passed, %d failed; coverage %.1f%%\n", v.Passed, v.Failed, v.Coverage)
		if len(v.NotCovered) > 0 {
			fmt.Fprintf(tw, "not covered: %s\n", strings.Join(v.NotCovered, " "))
		}
		return nil
	}); err != nil {
		return err
	}
	if rep.Failed > 0 {
		return fmt.Errorf("%d of %d policy tests failed", rep.Failed, rep.Failed+rep.Passed)
	}
	return nil
}

func runPolicyCheck(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy check", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	as := fs.String("as", "", "the SPIFFE ID asking (required)")
	action := fs.String("action", "", "the action, noun.verb, e.g. id.register (required)")
	resource := fs.String("resource", "", "the resource, KIND/NAMESPACE/NAME, namespace - when cluster-scoped (required)")
	bundleDir := fs.String("bundle", "", "decide with this bundle folder instead of the live revision (local, no cluster needed)")
	role := fs.String("role", "", "with --bundle: the user's role attribute (the live check reads it from the cluster)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	switch {
	case *as == "" || *action == "" || *resource == "":
		return usagef("usage: unum policy check --as SPIFFE_ID --action NOUN.VERB --resource KIND/NS/NAME [--bundle DIR]")
	case !policy.ValidAction(*action):
		return usagef("--action %q: want noun.verb, e.g. id.register", *action)
	case *role != "" && *bundleDir == "":
		return usagef("--role applies to --bundle checks only")
	}
	res, err := policy.ParseResource(*resource)
	if err != nil {
		return usagef("--resource: %v", err)
	}
	id, err := spiffeid.FromString(*as)
	if err != nil {
		return usagef("--as %q: %v", *as, err)
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	var r checkView
	if *bundleDir != "" {
		b, err := policy.LoadDir(*bundleDir)
		if err != nil {
			return err
		}
		eng, err := policy.NewEngine(e.ctx, b, 0)
		if err != nil {
			return err
		}
		subj := rpc.SubjectOf(identity.Classify(id), nil)
		if *role != "" {
			subj.Attributes["role"] = *role
		}
		in := policy.Input{Subject: subj, Action: *action, Resource: res, Delegation: []policy.Actor{}, Context: policy.Context{Node: "local", Time: time.Now(), RequestID: "policy-check"}}
		out, err := eng.Eval(e.ctx, &in)
		if err != nil {
			return err
		}
		r = checkView{Allow: out.Allow, Privileged: out.Privileged, Reasons: out.Reasons, Source: *bundleDir}
	} else {
		cc, ctx, done, err := cf.dial(e)
		if err != nil {
			return err
		}
		defer done()
		resp, err := unumv1.NewPolicyClient(cc).Check(ctx, &unumv1.CheckPolicyRequest{SpiffeId: *as, Action: *action, Resource: *resource})
		if err != nil {
			return err
		}
		r = checkView{Allow: resp.GetAllow(), Privileged: resp.GetPrivileged(), Reasons: resp.GetReasons(), Revision: resp.GetRevision(), Source: fmt.Sprintf("revision %d", resp.GetRevision())}
	}
	if r.Reasons == nil {
		r.Reasons = []string{}
	}
	if err := output.Write(e.stdout, f, r, func(tw *tabwriter.Writer) error {
		verdict := "denied"
		if r.Allow {
			verdict = "allowed"
		}
		priv := ""
		if r.Privileged {
			priv = " (privileged)"
		}
		fmt.Fprintf(tw, "%s: %s %s %s%s, by %s\n", verdict, *as, *action, res, priv, r.Source)
		for _, reason := range r.Reasons {
			fmt.Fprintln(tw, "  reason:", reason)
		}
		return nil
	}); err != nil {
		return err
	}
	if !r.Allow {
		return deniedError{"denied by policy"}
	}
	return nil
}

type checkView struct {
	Allow      bool     `json:"allow"`
	Privileged bool     `json:"privileged"`
	Reasons    []string `json:"reasons"`
	Revision   int64    `json:"revision,omitempty"`
	Source     string   `json:"source"`
}

// dialNode dials the API of the named node (explain and shadow reports are
// served by the node that made the decisions).
func (cf *clientFlags) dialNode(ctx context.Context, cc *grpc.ClientConn, name string) (*grpc.ClientConn, error) {
	creds, err := cf.credentials()
	if err != nil {
		return nil, err
	}
	resp, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	for _, n := range resp.GetNodes() {
		if n.GetName() == name {
			return dialNodeAt(creds, n)
		}
	}
	return nil, fmt.Errorf("node %s is not a member of the cluster", name)
}

// dialNodeAt dials node n itself (whatever its role), authorizing exactly
// its SPIFFE ID.
func dialNodeAt(creds *rpc.Credentials, n *unumv1.Node) (*grpc.ClientConn, error) {
	id, err := spiffeid.FromString(n.GetSpiffeId())
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.GetName(), err)
	}
	return rpc.DialNode(creds, id, n.GetApiAddress())
}

func runPolicyExplain(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy explain", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var node string
	c, err := cf.connect(e, fs, args, 1, "unum policy explain DECISION_ID", func(pos []string) (err error) {
		node, err = policy.DecisionNode(pos[0])
		if err != nil {
			return usagef("%v", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	nc, err := cf.dialNode(c.ctx, c.conn, node)
	if err != nil {
		return err
	}
	defer nc.Close()
	resp, err := unumv1.NewPolicyClient(nc).Explain(c.ctx, &unumv1.ExplainPolicyRequest{DecisionId: c.args[0]})
	if err != nil {
		return err
	}
	var input any
	_ = json.Unmarshal([]byte(resp.GetInputJson()), &input)
	type firedView struct {
		Rule string `json:"rule"`
		At   string `json:"at"`
	}
	type principalView struct {
		SPIFFEID   string      `json:"spiffe_id"`
		Allow      bool        `json:"allow"`
		Privileged bool        `json:"privileged"`
		Reasons    []string    `json:"reasons"`
		Fired      []firedView `json:"rules_fired"`
	}
	v := struct {
		DecisionID string      `json:"decision_id"`
		Node       string      `json:"node"`
		Time       time.Time   `json:"time"`
		Revision   int64       `json:"revision"`
		Allow      bool        `json:"allow"`
		Privileged bool        `json:"privileged"`
		Reasons    []string    `json:"reasons"`
		Error      string      `json:"error,omitempty"`
		Fired      []firedView `json:"rules_fired"`
		// Principals: a delegated call, decided once per principal.
		Principals []principalView `json:"principals,omitempty"`
		Input      any             `json:"input"`
	}{DecisionID: resp.GetDecisionId(), Node: resp.GetNode(), Time: time.Unix(0, resp.GetTimeUnixNano()).UTC(), Revision: resp.GetRevision(),
		Allow: resp.GetAllow(), Privileged: resp.GetPrivileged(), Reasons: resp.GetReasons(), Error: resp.GetError(), Fired: []firedView{}, Input: input}
	fired := func(rs []*unumv1.FiredRule) []firedView {
		out := []firedView{}
		for _, f := range rs {
			out = append(out, firedView{Rule: f.GetRule(), At: fmt.Sprintf("%s:%d", f.GetFile(), f.GetLine())})
		}
		return out
	}
	v.Fired = fired(resp.GetFired())
	for _, p := range resp.GetPrincipals() {
		v.Principals = append(v.Principals, principalView{SPIFFEID: p.GetSpiffeId(), Allow: p.GetAllow(), Privileged: p.GetPrivileged(), Reasons: p.GetReasons(), Fired: fired(p.GetFired())})
	}
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		verdict := "denied"
		if v.Allow {
			verdict = "allowed"
		}
		fmt.Fprintf(tw, "decision %s on %s at %s: %s by revision %d (privileged: %v)\n", v.DecisionID, v.Node, v.Time.Format(time.RFC3339Nano), verdict, v.Revision, v.Privileged)
		for _, r := range v.Reasons {
			fmt.Fprintln(tw, "  reason:", r)
		}
		if v.Error != "" {
			fmt.Fprintln(tw, "  error:", v.Error)
		}
		if len(v.Principals) == 0 {
			fmt.Fprintln(tw, "rules fired:")
			for _, f := range v.Fired {
				fmt.Fprintf(tw, "  %s\t%s\n", f.At, f.Rule)
			}
		} else {
			fmt.Fprintln(tw, "a delegated call, decided for every principal (allowed only if all are):")
			for _, p := range v.Principals {
				verdict := "denies"
				if p.Allow {
					verdict = "allows"
				}
				fmt.Fprintf(tw, "  %s: %s\n", p.SPIFFEID, verdict)
				for _, f := range p.Fired {
					fmt.Fprintf(tw, "    %s\t%s\n", f.At, f.Rule)
				}
			}
		}
		in, _ := json.MarshalIndent(v.Input, "  ", "  ")
		fmt.Fprintf(tw, "input:\n  %s\n", in)
		return nil
	})
}

func runPolicyShadow(e *env, args []string) error {
	fs := flag.NewFlagSet("unum policy shadow", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	period := fs.Duration("for", 5*time.Minute, "how long to shadow the live policy (at most 24h)")
	var b *policy.Bundle
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: unum policy shadow DIR [--for 5m]")
	}
	if *period < time.Second || *period > 24*time.Hour {
		return usagef("--for must be between 1s and 24h")
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	if b, err = policy.LoadDir(pos[0]); err != nil {
		return err
	}
	cc, ctx, done, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer done()
	pc := unumv1.NewPolicyClient(cc)
	st, err := pc.StartShadow(ctx, &unumv1.StartShadowRequest{Bundle: &unumv1.PolicyBundle{Files: b.Files}, DurationSeconds: int64(period.Seconds())})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "shadow %s: evaluating %s beside revision %d on every node for %s (Ctrl-C reports early)\n", st.GetShadowId(), pos[0], st.GetLiveRevision(), *period)
	select {
	case <-time.After(*period):
	case <-e.ctx.Done():
	}
	// The period or the operator ended it: report with a fresh deadline.
	rctx, cancel := context.WithTimeout(context.Background(), cf.timeout)
	defer cancel()
	changes, failed := collectShadow(rctx, &cf, cc, st.GetShadowId())
	if _, err := pc.StopShadow(rctx, &unumv1.StopShadowRequest{ShadowId: st.GetShadowId()}); err != nil {
		fmt.Fprintln(e.stderr, "warning: stop shadow:", err)
	}
	if err := output.Write(e.stdout, f, struct {
		ShadowID    string         `json:"shadow_id"`
		Changes     []shadowChange `json:"changes"`
		Unreachable []string       `json:"unreachable_nodes"`
	}{st.GetShadowId(), changes, failed}, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "%d decisions would change\n", len(changes))
		if len(changes) > 0 {
			fmt.Fprintln(tw, "TIME\tDECISION\tSUBJECT\tACTION\tRESOURCE\tLIVE\tSHADOW\tSHADOW REASONS")
		}
		for _, c := range changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Time.Format(time.RFC3339), c.DecisionID, c.Subject, c.Action, c.Resource, verdict(c.LiveAllow, c.LivePrivileged), verdict(c.ShadowAllow, c.ShadowPrivileged), strings.Join(c.ShadowReasons, "; "))
		}
		for _, n := range failed {
			fmt.Fprintln(tw, "warning: no report from", n)
		}
		return nil
	}); err != nil {
		return err
	}
	return nil
}

func verdict(allow, privileged bool) string {
	v := "deny"
	if allow {
		v = "allow"
	}
	if privileged {
		v += "+priv"
	}
	return v
}

type shadowChange struct {
	Node             string    `json:"node"`
	DecisionID       string    `json:"decision_id"`
	Time             time.Time `json:"time"`
	Subject          string    `json:"subject"`
	Action           string    `json:"action"`
	Resource         string    `json:"resource"`
	LiveRevision     int64     `json:"live_revision"`
	LiveAllow        bool      `json:"live_allow"`
	ShadowAllow      bool      `json:"shadow_allow"`
	LivePrivileged   bool      `json:"live_privileged"`
	ShadowPrivileged bool      `json:"shadow_privileged"`
	LiveReasons      []string  `json:"live_reasons"`
	ShadowReasons    []string  `json:"shadow_reasons"`
}

// collectShadow asks every node for the decisions the shadow would have
// changed; nodes that cannot be reached are returned by name.
func collectShadow(ctx context.Context, cf *clientFlags, cc *grpc.ClientConn, id string) ([]shadowChange, []string) {
	creds, err := cf.credentials()
	if err != nil {
		return nil, []string{"(client config: " + err.Error() + ")"}
	}
	nodes, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return nil, []string{"(node list: " + err.Error() + ")"}
	}
	out := []shadowChange{}
	var failed []string
	for _, n := range nodes.GetNodes() {
		rep, err := shadowReport(ctx, creds, n, id)
		if err != nil {
			if d, ok := rpc.DenialOf(err); ok {
				err = errors.New(d.String())
			}
			failed = append(failed, n.GetName()+": "+err.Error())
			continue
		}
		for _, c := range rep.GetChanges() {
			out = append(out, shadowChange{Node: rep.GetNode(), DecisionID: c.GetDecisionId(), Time: time.Unix(0, c.GetTimeUnixNano()).UTC(),
				Subject: c.GetSubject(), Action: c.GetAction(), Resource: c.GetResource(), LiveRevision: c.GetLiveRevision(),
				LiveAllow: c.GetLiveAllow(), ShadowAllow: c.GetShadowAllow(), LivePrivileged: c.GetLivePrivileged(), ShadowPrivileged: c.GetShadowPrivileged(),
				LiveReasons: c.GetLiveReasons(), ShadowReasons: c.GetShadowReasons()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, failed
}

// shadowReport asks node n for the decisions shadow id would change.
func shadowReport(ctx context.Context, creds *rpc.Credentials, n *unumv1.Node, id string) (*unumv1.ShadowReportResponse, error) {
	nc, err := dialNodeAt(creds, n)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	return unumv1.NewPolicyClient(nc).ShadowReport(ctx, &unumv1.ShadowReportRequest{ShadowId: id})
}
