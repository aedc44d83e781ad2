package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/selector"
	"github.com/unumos/unum/internal/output"
)

type entryView struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	Node      string    `json:"node,omitempty"`
	AllNodes  bool      `json:"all_nodes"`
	Selectors []string  `json:"selectors"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

func toEntryView(e *unumv1.Entry) entryView {
	return entryView{ID: e.GetId(), SPIFFEID: e.GetSpiffeId(), Node: e.GetNode(), AllNodes: e.GetAllNodes(), Selectors: e.GetSelectors(), CreatedAt: unixTime(e.GetCreatedAtUnix()), CreatedBy: e.GetCreatedBy()}
}

func entryTable(views []entryView) func(tw *tabwriter.Writer) error {
	return func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "ID\tSPIFFE ID\tNODE\tSELECTORS")
		for _, v := range views {
			nodeName := v.Node
			if v.AllNodes {
				nodeName = "(all nodes)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.ID, v.SPIFFEID, nodeName, strings.Join(v.Selectors, " "))
		}
		return nil
	}
}

func runIDRegister(e *env, args []string) error {
	fs := flag.NewFlagSet("unum id register", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	id := fs.String("spiffe-id", "", "workload SPIFFE ID: spiffe://TD/ns/NAMESPACE/... (required)")
	nodeName := fs.String("node", "", "the node the workload runs on")
	all := fs.Bool("all-nodes", false, "the workload may run on every node")
	var sels stringList
	fs.Var(&sels, "selector", "unix:uid:N | unix:gid:N | unix:path:/abs/bin | unix:sha256:HEX (repeatable, AND-ed)")
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error {
		switch {
		case *id == "":
			return usagef("--spiffe-id is required")
		case (*nodeName == "") == !*all:
			return usagef("give exactly one of --node NAME or --all-nodes")
		case len(sels) == 0:
			return usagef("at least one --selector is required")
		}
		parsed := make([]selector.Selector, 0, len(sels))
		for _, s := range sels {
			p, err := selector.Parse(s)
			if err != nil {
				return usagef("--selector: %v", err)
			}
			parsed = append(parsed, p)
		}
		if err := selector.ValidateSet(parsed); err != nil {
			return usagef("--selector: %v", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewIdentityClient(c.conn).CreateEntry(c.ctx, &unumv1.CreateEntryRequest{SpiffeId: *id, Node: *nodeName, AllNodes: *all, Selectors: sels})
	if err != nil {
		return err
	}
	v := toEntryView(resp)
	return output.Write(e.stdout, c.format, v, entryTable([]entryView{v}))
}

func runIDList(e *env, args []string) error {
	fs := flag.NewFlagSet("unum id list", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewIdentityClient(c.conn).ListEntries(c.ctx, &unumv1.ListEntriesRequest{})
	if err != nil {
		return err
	}
	views := []entryView{}
	for _, en := range resp.GetEntries() {
		views = append(views, toEntryView(en))
	}
	return output.Write(e.stdout, c.format, struct {
		Entries []entryView `json:"entries"`
	}{views}, entryTable(views))
}

func runIDDelete(e *env, args []string) error {
	fs := flag.NewFlagSet("unum id delete", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 1, "unum id delete ENTRY_ID", nil)
	if err != nil {
		return err
	}
	defer c.close()
	if _, err := unumv1.NewIdentityClient(c.conn).DeleteEntry(c.ctx, &unumv1.DeleteEntryRequest{Id: c.args[0]}); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "deleted registration entry %s\n", c.args[0])
	return nil
}

type svidView struct {
	SPIFFEID  string    `json:"spiffe_id"`
	ExpiresAt time.Time `json:"expires_at"`
	Issuer    string    `json:"issuer"`
	Chain     string    `json:"chain_pem"`
}

func runIDSVID(e *env, args []string) error {
	fs := flag.NewFlagSet("unum id svid", flag.ContinueOnError)
	out := fs.String("o", "table", "output format: table|json|yaml")
	socket := fs.String("socket", "", "Workload API socket (default $SPIFFE_ENDPOINT_SOCKET)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	f, err := output.ParseFormat(*out)
	if err != nil {
		return usagef("-o: %v", err)
	}
	addr := *socket
	if addr == "" {
		addr = e.getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if addr == "" {
		return usagef("--socket or SPIFFE_ENDPOINT_SOCKET is required")
	}
	if !strings.Contains(addr, "://") {
		addr = "unix://" + addr
	}
	ctx, cancel := context.WithTimeout(e.ctx, *timeout)
	defer cancel()
	// Exactly what a workload does: an unmodified go-spiffe client.
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return err
	}
	views := make([]svidView, 0, len(svids))
	for _, s := range svids {
		pemChain, _, err := s.Marshal()
		if err != nil {
			return err
		}
		views = append(views, svidView{SPIFFEID: s.ID.String(), ExpiresAt: s.Certificates[0].NotAfter.UTC(), Issuer: s.Certificates[0].Issuer.CommonName, Chain: string(pemChain)})
	}
	return output.Write(e.stdout, f, struct {
		SVIDs []svidView `json:"svids"`
	}{views}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "SPIFFE ID\tEXPIRES\tISSUER")
		for _, v := range views {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", v.SPIFFEID, fmtTime(v.ExpiresAt), v.Issuer)
		}
		return nil
	})
}

type whoView struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Kind      string    `json:"kind"`
	ExpiresAt time.Time `json:"expires_at"`
}

func runIDShow(e *env, args []string) error {
	fs := flag.NewFlagSet("unum id show", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewIdentityClient(c.conn).WhoAmI(c.ctx, &unumv1.WhoAmIRequest{})
	if err != nil {
		return err
	}
	v := whoView{SPIFFEID: resp.GetSpiffeId(), Kind: resp.GetKind(), ExpiresAt: unixTime(resp.GetExpiresAtUnix())}
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "spiffe id:\t%s\nkind:\t%s\ncertificate expires:\t%s\n", v.SPIFFEID, v.Kind, fmtTime(v.ExpiresAt))
		return nil
	})
}
