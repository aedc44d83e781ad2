package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
	"github.com/unumos/unum/threatmodel"
)

// shippedSource names the shipped policy in a rendered threat model.
const shippedSource = "the shipped policy (policy/builtin)"

// runThreatModel renders the register with the privileged actions of the
// shipped policy, or with --live of the cluster's current revision.
func runThreatModel(e *env, args []string) error {
	fs := flag.NewFlagSet("unum threatmodel", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	fs.Lookup("o").Usage = "output format: md|json"
	fs.Lookup("o").DefValue = "md"
	cf.output = "md"
	live := fs.Bool("live", false, "list the privileged actions of the cluster's live policy (needs a client config) instead of the shipped policy's")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if cf.output != "md" && cf.output != "json" {
		return usagef("-o %q: want md or json", cf.output)
	}
	var doc threatmodel.Document
	if *live {
		doc, err = liveThreatModel(e, &cf)
	} else {
		doc, err = ShippedThreatModel(e.ctx)
	}
	if err != nil {
		return err
	}
	return writeThreatModel(e.stdout, doc, cf.output)
}

func writeThreatModel(w io.Writer, doc threatmodel.Document, format string) error {
	if format == "md" {
		_, err := io.WriteString(w, doc.Markdown())
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(doc)
}

// ShippedThreatModel is the register with the shipped policy's privileged
// actions: what docs/THREATMODEL.md holds.
func ShippedThreatModel(ctx context.Context) (threatmodel.Document, error) {
	eng, err := policy.NewEngine(ctx, policy.Builtin(), 0, policy.WithoutDecisionCache())
	if err != nil {
		return threatmodel.Document{}, fmt.Errorf("threatmodel: the shipped policy: %w", err)
	}
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	priv, err := rpc.PrivilegedActions(ctx, eng, rpc.StandardProbes(td))
	if err != nil {
		return threatmodel.Document{}, err
	}
	return threatmodel.NewDocument(threatmodel.Register(), shippedSource, priv), nil
}

// liveThreatModel reads the cluster's latest policy revision and its users,
// and asks that policy who holds each privileged action: the standard
// principals, every SPIFFE ID its data binds, and the cluster's users,
// named under their roles.
func liveThreatModel(e *env, cf *clientFlags) (threatmodel.Document, error) {
	cfg, _, err := cf.config()
	if err != nil {
		return threatmodel.Document{}, err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return threatmodel.Document{}, fmt.Errorf("client config: trust domain %q: %w", cfg.TrustDomain, err)
	}
	cc, ctx, done, err := cf.dial(e)
	if err != nil {
		return threatmodel.Document{}, err
	}
	defer done()
	rev, err := unumv1.NewPolicyClient(cc).Get(ctx, &unumv1.GetPolicyRequest{})
	if err != nil {
		return threatmodel.Document{}, fmt.Errorf("reading the live policy: %w", err)
	}
	b := &policy.Bundle{Files: rev.GetBundle().GetFiles()}
	eng, err := policy.NewEngine(ctx, b, rev.GetRevision(), policy.WithoutDecisionCache())
	if err != nil {
		return threatmodel.Document{}, fmt.Errorf("policy revision %d: %w", rev.GetRevision(), err)
	}
	users, err := unumv1.NewUsersClient(cc).ListUsers(ctx, &unumv1.ListUsersRequest{})
	if err != nil {
		return threatmodel.Document{}, fmt.Errorf("listing users: %w", err)
	}
	byRole := map[string][]string{}
	for _, u := range users.GetUsers() {
		if u.GetName() != "admin" {
			byRole[u.GetRole()] = append(byRole[u.GetRole()], u.GetName())
		}
	}
	probes := rpc.StandardProbes(td)
	for i, p := range probes {
		if names := byRole[p.Role]; p.Role != "" && len(names) > 0 {
			probes[i].Label = fmt.Sprintf("%s (%s)", p.Label, strings.Join(names, ", "))
		}
	}
	bound, err := rpc.BoundProbes(b, td)
	if err != nil {
		return threatmodel.Document{}, err
	}
	probes = append(probes, bound...)
	priv, err := rpc.PrivilegedActions(ctx, eng, probes)
	if err != nil {
		return threatmodel.Document{}, err
	}
	source := fmt.Sprintf("policy revision %d of %s (sha256 %s)", rev.GetRevision(), td.Name(), rev.GetSha256())
	return threatmodel.NewDocument(threatmodel.Register(), source, priv), nil
}

// runThreatModelCheck holds the register to a test run: every test a
// mitigated threat names must have passed (see threatmodel.CheckResults).
func runThreatModelCheck(e *env, args []string) error {
	fs := flag.NewFlagSet("unum threatmodel check", flag.ContinueOnError)
	results := fs.String("results", "", "comma-separated files of `go test -json` output (make test writes .test-results/*.json)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	threats := threatmodel.Register()
	if err := threatmodel.Validate(threats); err != nil {
		return err
	}
	if *results == "" {
		fmt.Fprintln(e.stdout, "threatmodel check: no --results file (the output of go test -json): the register is well formed, "+
			"but whether its tests passed is not checked; skipping")
		return nil
	}
	var res threatmodel.Results
	for _, name := range strings.Split(*results, ",") {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("threatmodel check: %w", err)
		}
		err = res.ReadResults(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("threatmodel check: %s: %w", name, err)
		}
	}
	reportFailures(e.stderr, res)
	problems := threatmodel.CheckResults(threats, res)
	mitigated, tests := 0, 0
	for _, th := range threats {
		if th.Status == threatmodel.Mitigated {
			mitigated++
			tests += len(th.Tests)
		}
	}
	if len(problems) == 0 {
		fmt.Fprintf(e.stdout, "threatmodel check: the %d tests of %d mitigated threats passed\n", tests, mitigated)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintln(e.stderr, "threatmodel check:", p)
	}
	return fmt.Errorf("threatmodel check: %d of the %d tests of mitigated threats did not pass", len(problems), tests)
}

// reportFailures prints every test that failed or never finished, with the
// end of its output: with -json, go test prints nothing readable itself.
func reportFailures(w io.Writer, res threatmodel.Results) {
	names := make([]string, 0, len(res.Tests))
	for name := range res.Tests {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, r := range res.Tests[name] {
			if r.Outcome == threatmodel.Failed || r.Outcome == threatmodel.Unfinished {
				fmt.Fprintf(w, "--- %s: %s\n%s\n", strings.ToUpper(string(r.Outcome)), name, strings.TrimRight(r.Output, "\n"))
			}
		}
	}
	for _, pkg := range slices.Sorted(maps.Keys(res.Packages)) {
		for _, o := range res.Packages[pkg] {
			if o == threatmodel.Failed {
				fmt.Fprintf(w, "FAIL package %s\n", pkg)
			}
		}
	}
}
