package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
)

func credCommands() []*command {
	return []*command{
		{name: "delegate", summary: "mint a delegated credential for a service (prints only the token)", run: runCredDelegate},
		{name: "inspect", summary: "decode and verify a credential: exit 0 only when valid now", run: runCredInspect},
		{name: "list", summary: "live credentials, from the audit log's issuance records", run: runCredList},
		{name: "revoke", summary: "revoke a credential (JTI), or every one --subject or --holder", run: runCredRevoke},
	}
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runCredDelegate(e *env, args []string) error {
	fs := flag.NewFlagSet("unum cred delegate", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var scopes, auds multiFlag
	to := fs.String("to", "", "SPIFFE ID of the service that will hold the credential (required)")
	fs.Var(&scopes, "scope", "ACTION:KIND/NAMESPACE/NAME it allows, e.g. kv.read:kv/shop/* (repeat; required unless --exchange)")
	fs.Var(&auds, "aud", "SPIFFE ID of a service it may be presented to (repeat; required unless --exchange)")
	ttl := fs.Duration("ttl", 0, fmt.Sprintf("lifetime (default %s; at most what the policy allows, %s unless it says)", delegation.DefaultTTL, delegation.DefaultMaxTTL))
	onBehalf := fs.String("on-behalf-of", "", "impersonate: mint for this SPIFFE ID (a separate privileged action, cred.impersonate); you stay in the chain")
	exchange := fs.String("exchange", "", "FILE (or - for stdin) holding a credential you hold: mint a narrower one from it")
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error {
		switch {
		case *to == "":
			return usagef("--to is required: the SPIFFE ID of the holder")
		case *exchange == "" && len(scopes) == 0:
			return usagef("--scope is required: what the credential allows, ACTION:KIND/NAMESPACE/NAME")
		case *exchange == "" && len(auds) == 0:
			return usagef("--aud is required: the SPIFFE ID of the service it is for (spiffe://TD/system/api for the unum API)")
		case *ttl < 0:
			return usagef("--ttl %s is negative", *ttl)
		case *exchange != "" && *onBehalf != "":
			return usagef("--exchange and --on-behalf-of exclude each other: an exchanged credential keeps its subject")
		}
		if _, err := spiffeid.FromString(*to); err != nil {
			return usagef("--to %q: %v", *to, err)
		}
		if len(scopes) > 0 {
			if _, err := delegation.ParseScopes(scopes); err != nil {
				return usagef("--scope: %v", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	ctx := c.ctx
	if *exchange != "" {
		tok, err := readCredential(e, *exchange)
		if err != nil {
			return err
		}
		ctx = rpc.WithDelegation(ctx, tok)
	}
	resp, err := unumv1.NewCredentialsClient(c.conn).Delegate(ctx, &unumv1.DelegateRequest{
		To: *to, Scopes: scopes, Audience: auds, TtlSeconds: int64(ttl.Seconds()), OnBehalfOf: *onBehalf,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.GetToken())
	bound := "its SPIFFE ID"
	if resp.GetCertificateBound() {
		bound = "its SPIFFE ID and current certificate"
	}
	fmt.Fprintf(e.stderr, "credential %s for %s (bound to %s), valid until %s; issuance recorded as audit event %s\n",
		resp.GetJti(), *to, bound, time.Unix(resp.GetExpiresUnix(), 0).UTC().Format(time.RFC3339), resp.GetEventId())
	return nil
}

// readCredential reads a credential from a file, stdin (-), or the argument
// itself when it looks like a token.
func readCredential(e *env, src string) (string, error) {
	var b []byte
	var err error
	switch {
	case src == "-":
		b, err = io.ReadAll(io.LimitReader(e.stdin, delegation.MaxTokenSize+2))
	case strings.Count(src, ".") == 2 && !strings.ContainsAny(src, "/ "):
		return src, nil
	default:
		b, err = os.ReadFile(src)
	}
	if err != nil {
		return "", fmt.Errorf("read credential: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// credView is a credential as `cred inspect` shows it.
type credView struct {
	Valid             bool       `json:"valid"`
	Reason            string     `json:"reason,omitempty"`
	SignatureVerified bool       `json:"signature_verified"`
	JTI               string     `json:"jti"`
	Issuer            string     `json:"iss"`
	Subject           string     `json:"sub"`
	Chain             []linkView `json:"chain"`
	Holder            string     `json:"holder"`
	Thumbprint        string     `json:"x5t#S256,omitempty"`
	Audience          []string   `json:"aud"`
	Scopes            []string   `json:"scopes"`
	IssuedAt          time.Time  `json:"iat"`
	NotBefore         time.Time  `json:"nbf"`
	Expiry            time.Time  `json:"exp"`
	KeyID             string     `json:"kid"`
}

type linkView struct {
	Actor string `json:"actor"`
	// Impersonator: minted on the subject's behalf without holding a
	// credential; JTI/Scopes/Expiry: the grant it held and passed on.
	Impersonator bool      `json:"impersonator,omitempty"`
	JTI          string    `json:"jti,omitempty"`
	Scopes       []string  `json:"scopes,omitempty"`
	Expiry       time.Time `json:"exp,omitzero"`
}

func viewCredential(c *delegation.Credential) credView {
	v := credView{JTI: c.ID, Issuer: "spiffe://" + c.TrustDomain.Name(), Subject: c.Subject.String(), Holder: c.Holder().String(),
		Thumbprint: c.Thumbprint, IssuedAt: c.IssuedAt.UTC(), NotBefore: c.NotBefore.UTC(), Expiry: c.Expiry.UTC(), KeyID: c.KeyID}
	for _, a := range c.Audience {
		v.Audience = append(v.Audience, a.String())
	}
	for _, s := range c.Scopes {
		v.Scopes = append(v.Scopes, s.String())
	}
	for i, l := range c.Chain {
		lv := linkView{Actor: l.Actor.String(), Impersonator: l.Impersonator(i, len(c.Chain))}
		if g := l.Grant; g != nil {
			lv.JTI, lv.Expiry = g.ID, g.Expiry.UTC()
			for _, s := range g.Scopes {
				lv.Scopes = append(lv.Scopes, s.String())
			}
		}
		v.Chain = append(v.Chain, lv)
	}
	return v
}

func runCredInspect(e *env, args []string) error {
	fs := flag.NewFlagSet("unum cred inspect", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: unum cred inspect TOKEN|FILE|- [-o json]")
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	cfg, _, err := cf.config()
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	tok, err := readCredential(e, pos[0])
	if err != nil {
		return err
	}
	// Decode locally first: a malformed token is refused without asking
	// anyone, and what it claims is shown even when it does not verify.
	c, err := delegation.Decode(tok, td)
	if err != nil {
		return fmt.Errorf("credential refused: %w", err)
	}
	cc, ctx, done, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer done()
	resp, err := unumv1.NewCredentialsClient(cc).Inspect(ctx, &unumv1.InspectCredentialRequest{Token: tok})
	if err != nil {
		return err
	}
	v := viewCredential(c)
	v.Valid, v.Reason, v.SignatureVerified = resp.GetValid(), resp.GetReason(), resp.GetSignatureVerified()
	if err := output.Write(e.stdout, f, v, func(tw *tabwriter.Writer) error { return credText(tw, v) }); err != nil {
		return err
	}
	if !v.Valid {
		return fmt.Errorf("credential not valid: %s", v.Reason)
	}
	return nil
}

func credText(tw *tabwriter.Writer, v credView) error {
	valid := "yes"
	if !v.Valid {
		valid = "NO: " + v.Reason
	}
	verified := "yes"
	if !v.SignatureVerified {
		verified = "NO (what follows is only what the token claims)"
	}
	fmt.Fprintf(tw, "valid now:\t%s\n", valid)
	fmt.Fprintf(tw, "signature:\t%s (kid %s)\n", verified, v.KeyID)
	fmt.Fprintf(tw, "jti:\t%s\n", v.JTI)
	fmt.Fprintf(tw, "on behalf of:\t%s\n", v.Subject)
	for i, l := range v.Chain {
		what := "holder"
		switch {
		case l.Impersonator:
			what = "issued it on the subject's behalf (impersonation)"
		case l.JTI != "":
			what = fmt.Sprintf("held %s (%s, until %s) and passed it on", l.JTI, strings.Join(l.Scopes, " "), l.Expiry.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "actor %d:\t%s\t%s\n", i+1, l.Actor, what)
	}
	binding := "its SPIFFE ID (shown, not enforced: you are not its holder)"
	if v.Thumbprint != "" {
		binding = "its SPIFFE ID and certificate x5t#S256 " + v.Thumbprint + " (shown, not enforced)"
	}
	fmt.Fprintf(tw, "holder:\t%s, bound to %s\n", v.Holder, binding)
	fmt.Fprintf(tw, "audience:\t%s\n", strings.Join(v.Audience, " "))
	fmt.Fprintf(tw, "scopes:\t%s\n", strings.Join(v.Scopes, " "))
	fmt.Fprintf(tw, "issued:\t%s\n", v.IssuedAt.Format(time.RFC3339))
	fmt.Fprintf(tw, "expires:\t%s\n", v.Expiry.Format(time.RFC3339))
	return nil
}

// credRecordView is one line of `cred list`.
type credRecordView struct {
	JTI              string    `json:"jti"`
	Subject          string    `json:"subject"`
	Chain            []string  `json:"chain"`
	Scopes           []string  `json:"scopes"`
	Audience         []string  `json:"audience"`
	Issued           time.Time `json:"issued"`
	Expires          time.Time `json:"expires"`
	Parent           string    `json:"parent,omitempty"`
	CertificateBound bool      `json:"certificate_bound,omitempty"`
	Node             string    `json:"node"`
	EventID          string    `json:"event_id"`
	DecisionID       string    `json:"decision_id"`
	PolicyRevision   int64     `json:"policy_revision"`
	Revoked          string    `json:"revoked,omitempty"`
}

func runCredList(e *env, args []string) error {
	fs := flag.NewFlagSet("unum cred list", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	subject := fs.String("subject", "", "only credentials on behalf of this SPIFFE ID")
	var only string
	s, err := cf.auditConnect(e, fs, args, &only, func() error {
		if *subject != "" {
			if _, err := spiffeid.FromString(*subject); err != nil {
				return usagef("--subject %q: %v", *subject, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer s.close()
	var control []*unumv1.Node
	for _, n := range s.nodes {
		if slices.Contains(n.GetRoles(), "control") {
			control = append(control, n)
		}
	}
	views, failures := listCredentials(s.ctx, s.dial, control, &unumv1.ListCredentialsRequest{Subject: *subject})
	if err := warnFailures(e, failures, len(control)); err != nil {
		return err
	}
	return output.Write(e.stdout, s.format, struct {
		Credentials []credRecordView `json:"credentials"`
	}{views}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "JTI\tSUBJECT\tHOLDER\tSCOPES\tEXPIRES\tSTATUS")
		for _, v := range views {
			st := "live"
			if v.Revoked != "" {
				st = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.JTI, v.Subject, v.Chain[len(v.Chain)-1], strings.Join(v.Scopes, " "), v.Expires.Format(time.RFC3339), st)
		}
		return nil
	})
}

// listCredentials asks every control node for what it minted.
func listCredentials(ctx context.Context, dial nodeDialer, nodes []*unumv1.Node, req *unumv1.ListCredentialsRequest) ([]credRecordView, []nodeFailure) {
	out, failures := askEach(nodes, func(n *unumv1.Node) ([]credRecordView, error) { return listNode(ctx, dial, n, req) })
	slices.SortFunc(out, func(a, b credRecordView) int {
		if c := a.Issued.Compare(b.Issued); c != 0 {
			return c
		}
		return strings.Compare(a.JTI, b.JTI)
	})
	return out, failures
}

func listNode(ctx context.Context, dial nodeDialer, n *unumv1.Node, req *unumv1.ListCredentialsRequest) ([]credRecordView, error) {
	nc, err := dial(n)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	resp, err := unumv1.NewCredentialsClient(nc).List(ctx, req, grpc.WaitForReady(false))
	if err != nil {
		return nil, err
	}
	if resp.GetNode() != n.GetName() {
		return nil, fmt.Errorf("answered as %q", resp.GetNode())
	}
	var out []credRecordView
	for _, r := range resp.GetCredentials() {
		if len(r.GetChain()) == 0 {
			return nil, errors.New("sent a credential without a chain")
		}
		out = append(out, credRecordView{JTI: r.GetJti(), Subject: r.GetSubject(), Chain: r.GetChain(), Scopes: r.GetScopes(), Audience: r.GetAudience(),
			Issued: unixTime(r.GetIssuedUnix()), Expires: unixTime(r.GetExpiresUnix()), Parent: r.GetParent(), CertificateBound: r.GetCertificateBound(),
			Node: n.GetName(), EventID: r.GetEventId(), DecisionID: r.GetDecisionId(), PolicyRevision: r.GetPolicyRevision(), Revoked: r.GetRevoked()})
	}
	return out, nil
}

func runCredRevoke(e *env, args []string) error {
	fs := flag.NewFlagSet("unum cred revoke", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	subject := fs.String("subject", "", "revoke every credential on behalf of this SPIFFE ID")
	holder := fs.String("holder", "", "revoke every credential this SPIFFE ID holds, and every one minted from those")
	reason := fs.String("reason", "", "why (recorded)")
	c, err := cf.connect(e, fs, args, -1, "", func(pos []string) error {
		n := len(pos)
		if *subject != "" {
			n++
		}
		if *holder != "" {
			n++
		}
		if n != 1 || len(pos) > 1 {
			return usagef("usage: unum cred revoke JTI | --subject SPIFFE_ID | --holder SPIFFE_ID [--reason R]")
		}
		if len(pos) == 1 && !delegation.ValidJTI(pos[0]) {
			return usagef("JTI %q: want 32 lowercase hex digits (as `unum cred list` shows)", pos[0])
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	req := &unumv1.RevokeCredentialsRequest{Subject: *subject, Holder: *holder, Reason: *reason}
	if len(c.args) == 1 {
		req.Jti = c.args[0]
	}
	resp, err := unumv1.NewCredentialsClient(c.conn).Revoke(c.ctx, req)
	if err != nil {
		return err
	}
	for _, r := range resp.GetRevocations() {
		fmt.Fprintf(e.stdout, "revoked %s: every credential it names issued before %s is refused\n", r.GetSpiffeId(),
			time.Unix(0, r.GetBeforeUnixNano()).UTC().Format(time.RFC3339))
	}
	return nil
}
