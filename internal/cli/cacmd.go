package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"sigs.k8s.io/yaml"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
)

// caClient is a connection for the `unum ca` commands, which also keep the
// client config's trust bundle current: during a root rotation the control
// nodes move to the new root, and a client that never learnt it could no
// longer reach them.
type caClient struct {
	path  string
	creds *rpc.Credentials
	conn  *grpc.ClientConn
	ca    unumv1.CAClient
}

func dialCA(cf *clientFlags) (*caClient, error) {
	cfg, path, err := cf.config()
	if err != nil {
		return nil, err
	}
	creds, err := cfg.Credentials()
	if err != nil {
		return nil, err
	}
	cc, err := rpc.Dial(creds, cfg.Addresses)
	if err != nil {
		return nil, err
	}
	return &caClient{path: path, creds: creds, conn: cc, ca: unumv1.NewCAClient(cc)}, nil
}

func (c *caClient) Close() { c.conn.Close() }

// status fetches the CA status and refreshes the bundle from it.
func (c *caClient) status(ctx context.Context, timeout time.Duration) (*unumv1.CAStatusResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := c.ca.Status(sctx, &unumv1.CAStatusRequest{})
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, r := range st.GetRoots() {
		if cert, err := x509.ParseCertificate(r.GetCertificateDer()); err == nil {
			roots = append(roots, cert)
		}
	}
	if len(roots) > 0 {
		c.creds.SetRoots(roots)
		if err := saveBundle(c.path, roots); err != nil {
			return st, fmt.Errorf("refresh the trust bundle in %s: %w", c.path, err)
		}
	}
	return st, nil
}

// saveBundle writes roots into the client config at path when they differ,
// leaving everything else (addresses included: UNUM_ADDR is not saved) as
// it is.
func saveBundle(path string, roots []*x509.Certificate) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg clientconfig.Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return err
	}
	pemRoots := string(ca.EncodeCertsPEM(roots))
	if cfg.Bundle == pemRoots {
		return nil
	}
	cfg.Bundle = pemRoots
	return cfg.Save(path)
}

type caCertView struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	State       string    `json:"state"`
	Node        string    `json:"node,omitempty"`
	Issuer      string    `json:"issuer_fingerprint,omitempty"`
	KeyOnline   bool      `json:"key_online"`
	NotAfter    time.Time `json:"not_after"`
	RetireAt    time.Time `json:"retire_at,omitzero"`
}

type caStatusView struct {
	Roots         []caCertView `json:"roots"`
	Intermediates []caCertView `json:"intermediates"`
	Rotation      string       `json:"rotation,omitempty"`
	Phase         string       `json:"phase,omitempty"`
	RootRotation  bool         `json:"root_rotation,omitempty"`
	WaitingFor    []string     `json:"waiting_for,omitempty"`
}

func toCAView(st *unumv1.CAStatusResponse) caStatusView {
	conv := func(c *unumv1.CACert) caCertView {
		v := caCertView{Fingerprint: c.GetFingerprint(), Subject: c.GetSubject(), State: c.GetState(), Node: c.GetNode(),
			Issuer: c.GetIssuerFingerprint(), KeyOnline: c.GetKeyOnline(), NotAfter: unixTime(c.GetNotAfterUnix())}
		if c.GetRetireAtUnix() != 0 {
			v.RetireAt = unixTime(c.GetRetireAtUnix())
		}
		return v
	}
	v := caStatusView{Rotation: st.GetRotationId(), Phase: st.GetRotationPhase(), RootRotation: st.GetRotationRoot(), WaitingFor: st.GetWaitingFor()}
	for _, r := range st.GetRoots() {
		v.Roots = append(v.Roots, conv(r))
	}
	for _, r := range st.GetIntermediates() {
		v.Intermediates = append(v.Intermediates, conv(r))
	}
	return v
}

func shortFP(fp string) string {
	fp = strings.TrimPrefix(fp, "sha256:")
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}

func caTable(v caStatusView) func(tw *tabwriter.Writer) error {
	return func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "KIND\tFINGERPRINT\tSTATE\tNODE\tISSUER\tKEY\tEXPIRES")
		for _, r := range v.Roots {
			key := "offline"
			if r.KeyOnline {
				key = "online"
			}
			state := r.State
			if !r.RetireAt.IsZero() {
				state += " until " + r.RetireAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "root\t%s\t%s\t-\t-\t%s\t%s\n", shortFP(r.Fingerprint), state, key, r.NotAfter.Format(time.RFC3339))
		}
		for _, in := range v.Intermediates {
			fmt.Fprintf(tw, "intermediate\t%s\t%s\t%s\t%s\t-\t%s\n", shortFP(in.Fingerprint), in.State, in.Node, shortFP(in.Issuer), in.NotAfter.Format(time.RFC3339))
		}
		if v.Rotation != "" {
			fmt.Fprintf(tw, "\nrotation %s: phase %s", v.Rotation, v.Phase)
			if len(v.WaitingFor) > 0 {
				fmt.Fprintf(tw, ", waiting for %s", strings.Join(v.WaitingFor, ", "))
			}
			fmt.Fprintln(tw)
		}
		return nil
	}
}

func runCAStatus(e *env, args []string) error {
	fs := flag.NewFlagSet("unum ca status", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	c, err := dialCA(&cf)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.status(e.ctx, cf.timeout)
	if err != nil {
		return err
	}
	v := toCAView(st)
	return output.Write(e.stdout, f, v, caTable(v))
}

func runCARotate(e *env, args []string) error {
	fs := flag.NewFlagSet("unum ca rotate", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	root := fs.Bool("root", false, "also make a new root (kept beside the old one until every certificate under the old one has expired)")
	wait := fs.Bool("wait", false, "follow the rotation to its end, showing progress")
	rootKey := fs.String("root-key", "", "file holding an exported root key (from `unum ca export-root`), used for this command only")
	maxWait := fs.Duration("max-wait", 0, "with --wait or --root-key: give up after this long (default: no limit)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	req := &unumv1.CARotateRequest{Root: *root}
	if *rootKey != "" {
		if req.RootKeyPem, err = os.ReadFile(*rootKey); err != nil {
			return fmt.Errorf("--root-key: %w", err)
		}
	}
	c, err := dialCA(&cf)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := e.ctx
	if *maxWait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *maxWait)
		defer cancel()
	}
	// Learn the bundle first, then start.
	if _, err := c.status(ctx, cf.timeout); err != nil {
		return err
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, cf.timeout)
	if *rootKey != "" {
		// The server holds the key until every control node switched.
		rctx, cancel = context.WithCancel(ctx)
	}
	resp, err := c.ca.Rotate(rctx, req)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%5.1fs rotation %s started (phase %s)\n", time.Since(start).Seconds(), resp.GetRotationId(), resp.GetPhase())
	if !*wait {
		return output.Write(e.stdout, f, map[string]string{"rotation": resp.GetRotationId(), "phase": resp.GetPhase()}, func(tw *tabwriter.Writer) error {
			fmt.Fprintf(tw, "rotation %s: phase %s (follow it with `unum ca status`)\n", resp.GetRotationId(), resp.GetPhase())
			return nil
		})
	}
	last := ""
	for {
		st, err := c.status(ctx, cf.timeout)
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("rotation %s still in phase %s: %w", resp.GetRotationId(), last, ctx.Err())
		case err != nil:
			fmt.Fprintf(e.stderr, "%5.1fs status: %v (retrying)\n", time.Since(start).Seconds(), err)
		case st.GetRotationId() != resp.GetRotationId():
			return fmt.Errorf("another rotation (%s) replaced %s", st.GetRotationId(), resp.GetRotationId())
		default:
			line := st.GetRotationPhase()
			if w := st.GetWaitingFor(); len(w) > 0 {
				line += ", waiting for " + strings.Join(w, ", ")
			}
			if line != last {
				fmt.Fprintf(e.stderr, "%5.1fs phase %s\n", time.Since(start).Seconds(), line)
				last = line
			}
			if st.GetRotationPhase() == "done" {
				v := toCAView(st)
				return output.Write(e.stdout, f, v, caTable(v))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func runCAExportRoot(e *env, args []string) error {
	fs := flag.NewFlagSet("unum ca export-root", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	out := fs.String("out", "", "file to write the root certificate and key to, 0600; must not exist (required)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out FILE is required")
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("--out %s already exists: refusing to overwrite it", *out)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--out: %w", err)
	}
	c, err := dialCA(&cf)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(e.ctx, cf.timeout)
	defer cancel()
	resp, err := c.ca.ExportRoot(ctx, &unumv1.ExportRootRequest{})
	if err != nil {
		return err
	}
	data := append(append([]byte(nil), resp.GetRootCertPem()...), resp.GetRootKeyPem()...)
	if err := writeNewFile(*out, data); err != nil {
		return fmt.Errorf("write %s (the root key is still on the cluster): %w", *out, err)
	}
	// Only now, with the key durable here, is it deleted there.
	if _, err := c.ca.ConfirmExportRoot(ctx, &unumv1.ConfirmExportRootRequest{Fingerprint: resp.GetFingerprint()}); err != nil {
		return fmt.Errorf("the root key was written to %s but is still on the cluster: %w", *out, err)
	}
	fmt.Fprintf(e.stderr, "root key %s written to %s and deleted from the cluster\nkeep it offline; a new control node or root rotation needs it back: unum ca import-root %s (or --root-key %s)\n",
		resp.GetFingerprint(), *out, *out, *out)
	return nil
}

// writeNewFile creates path exclusively, 0600, and syncs it and its folder.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func runCAImportRoot(e *env, args []string) error {
	fs := flag.NewFlagSet("unum ca import-root", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: unum ca import-root FILE")
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	c, err := dialCA(&cf)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(e.ctx, cf.timeout)
	defer cancel()
	resp, err := c.ca.ImportRoot(ctx, &unumv1.ImportRootRequest{RootKeyPem: data})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "root key %s is back on the cluster (sealed on the serving control node)\n", resp.GetFingerprint())
	return nil
}
