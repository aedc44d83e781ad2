package cli

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/output"
)

type enforcementNodeView struct {
	Node             string           `json:"node"`
	Mode             string           `json:"mode"`
	Reason           string           `json:"reason,omitempty"`
	Layers           []string         `json:"layers"`
	Programs         []string         `json:"programs"`
	Maps             map[string]int64 `json:"maps"`
	SyncRevision     int64            `json:"sync_revision"`
	DenialsPerMinute int64            `json:"denials_per_minute"`
	EventsDropped    int64            `json:"events_dropped"`
	Error            string           `json:"error,omitempty"`
	ReportedAt       time.Time        `json:"reported_at"`
	Unschedulable    string           `json:"unschedulable,omitempty"`
}

type enforcementStatusView struct {
	Required            bool                  `json:"required"`
	AuditOnly           bool                  `json:"audit_only"`
	AuditOnlyNamespaces []string              `json:"audit_only_namespaces"`
	Nodes               []enforcementNodeView `json:"nodes"`
}

func runEnforcementStatus(e *env, args []string) error {
	fs := flag.NewFlagSet("unum enforcement status", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewEnforcementClient(c.conn).Status(c.ctx, &unumv1.EnforcementStatusRequest{})
	if err != nil {
		return err
	}
	st := resp.GetSettings()
	v := enforcementStatusView{Required: st.GetRequired(), AuditOnly: st.GetAuditOnly(),
		AuditOnlyNamespaces: append([]string{}, st.GetAuditOnlyNamespaces()...), Nodes: []enforcementNodeView{}}
	for _, n := range resp.GetNodes() {
		v.Nodes = append(v.Nodes, enforcementNodeView{
			Node: n.GetNode(), Mode: n.GetMode(), Reason: n.GetReason(),
			Layers: append([]string{}, n.GetLayers()...), Programs: append([]string{}, n.GetPrograms()...),
			Maps: n.GetMaps(), SyncRevision: n.GetSyncRevision(), DenialsPerMinute: n.GetDenialsPerMinute(),
			EventsDropped: n.GetEventsDropped(), Error: n.GetError(), ReportedAt: unixTime(n.GetReportedAtUnix()),
			Unschedulable: n.GetUnschedulable(),
		})
	}
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		writeSettingsLines(tw, st)
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "NODE\tMODE\tLAYERS\tPROGRAMS\tMAPS\tSYNC REV\tDENIALS/MIN\tDROPPED\tNOTE")
		for _, n := range v.Nodes {
			var sizes []string
			for _, k := range slices.Sorted(maps.Keys(n.Maps)) {
				sizes = append(sizes, fmt.Sprintf("%s=%d", k, n.Maps[k]))
			}
			note := strings.Join(slices.DeleteFunc([]string{n.Reason, n.Error, n.Unschedulable}, func(s string) bool { return s == "" }), "; ")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", n.Node, n.Mode,
				dash(strings.Join(n.Layers, ",")), dash(strings.Join(n.Programs, ",")),
				dash(strings.Join(sizes, ",")), n.SyncRevision, n.DenialsPerMinute, n.EventsDropped, dash(note))
		}
		return nil
	})
}

func writeEnforcementSettings(e *env, c *clientCall, st *unumv1.EnforcementSettings) error {
	return output.Write(e.stdout, c.format, st, func(tw *tabwriter.Writer) error {
		writeSettingsLines(tw, st)
		return nil
	})
}

// writeSettingsLines prints the cluster's enforcement settings.
func writeSettingsLines(tw *tabwriter.Writer, st *unumv1.EnforcementSettings) {
	mode := "enforce"
	if st.GetAuditOnly() {
		mode = "audit-only"
	}
	fmt.Fprintf(tw, "required:\t%v\ncluster mode:\t%s\naudit-only namespaces:\t%s\n", st.GetRequired(), mode,
		dash(strings.Join(st.GetAuditOnlyNamespaces(), ",")))
}

func runEnforcementMode(e *env, args []string) error {
	fs := flag.NewFlagSet("unum enforcement mode", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	ns := fs.String("n", "", "namespace (default: the whole cluster)")
	var mode string
	c, err := cf.connect(e, fs, args, 1, "enforce|audit-only", func(rest []string) error {
		mode = rest[0]
		if mode != "enforce" && mode != "audit-only" {
			return usagef("mode %q: want enforce or audit-only", mode)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	st, err := unumv1.NewEnforcementClient(c.conn).Configure(c.ctx, &unumv1.ConfigureEnforcementRequest{Mode: mode, Namespace: *ns})
	if err != nil {
		return err
	}
	return writeEnforcementSettings(e, c, st)
}

func runEnforcementRequire(e *env, args []string) error {
	fs := flag.NewFlagSet("unum enforcement require", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var on bool
	c, err := cf.connect(e, fs, args, 1, "on|off", func(rest []string) error {
		switch rest[0] {
		case "on":
			on = true
		case "off":
		default:
			return usagef("%q: want on or off", rest[0])
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	st, err := unumv1.NewEnforcementClient(c.conn).Configure(c.ctx, &unumv1.ConfigureEnforcementRequest{Required: &on})
	if err != nil {
		return err
	}
	return writeEnforcementSettings(e, c, st)
}
