package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/output"
)

type etcdMemberView struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	ClientURLs []string `json:"client_urls"`
	PeerURLs   []string `json:"peer_urls"`
	Learner    bool     `json:"learner"`
	Leader     bool     `json:"leader"`
}

type statusView struct {
	TrustDomain string `json:"trust_domain"`
	Healthy     bool   `json:"healthy"`
	// Problems make `unum status` exit 1; Warnings (thresholds crossed
	// ahead of trouble, computed by the control plane) do not.
	Problems      []string         `json:"problems"`
	Warnings      []string         `json:"warnings"`
	Quorum        bool             `json:"quorum"`
	EtcdLeader    string           `json:"etcd_leader"`
	EtcdMembers   []etcdMemberView `json:"etcd_members"`
	CAExpiresAt   time.Time        `json:"ca_expires_at"`
	RootExpiresAt time.Time        `json:"root_expires_at"`
	ServedBy      string           `json:"served_by"`
	Nodes         []nodeView       `json:"nodes"`
}

// errUnhealthy makes `unum status` exit 1 after printing the status.
var errUnhealthy = errors.New("cluster is not healthy")

func runStatus(e *env, args []string) error {
	fs := flag.NewFlagSet("unum status", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewClusterClient(c.conn).Status(c.ctx, &unumv1.StatusRequest{})
	if err != nil {
		return err
	}
	v := toStatusView(resp, time.Now())
	if err := writeStatus(e.stdout, c.format, v); err != nil {
		return err
	}
	if !v.Healthy {
		return fmt.Errorf("%w: %s", errUnhealthy, strings.Join(v.Problems, "; "))
	}
	return nil
}

func toStatusView(resp *unumv1.StatusResponse, now time.Time) statusView {
	v := statusView{
		TrustDomain:   resp.GetTrustDomain(),
		Quorum:        resp.GetQuorum(),
		EtcdLeader:    resp.GetEtcdLeader(),
		CAExpiresAt:   unixTime(resp.GetCaExpiresAtUnix()),
		RootExpiresAt: unixTime(resp.GetRootExpiresAtUnix()),
		ServedBy:      resp.GetServedBy(),
		Problems:      []string{},
		Warnings:      append([]string{}, resp.GetWarnings()...),
	}
	for _, m := range resp.GetEtcdMembers() {
		v.EtcdMembers = append(v.EtcdMembers, etcdMemberView{Name: m.GetName(), ID: m.GetId(), ClientURLs: m.GetClientUrls(), PeerURLs: m.GetPeerUrls(), Learner: m.GetLearner(), Leader: m.GetLeader()})
	}
	for _, n := range resp.GetNodes() {
		v.Nodes = append(v.Nodes, toNodeView(n))
	}
	if !v.Quorum {
		v.Problems = append(v.Problems, "etcd has no quorum")
	}
	// What the control plane judges broken (a node's audit log that
	// cannot record) is a problem, not a warning.
	v.Problems = append(v.Problems, resp.GetErrors()...)
	if !v.CAExpiresAt.After(now) {
		v.Problems = append(v.Problems, "the CA of "+v.ServedBy+" has expired")
	}
	for _, n := range v.Nodes {
		if !n.Ready {
			v.Problems = append(v.Problems, "node "+n.Name+" is not ready")
		}
	}
	v.Healthy = len(v.Problems) == 0
	return v
}

// writeStatus prints v; in a table, problems and warnings come first, where
// an operator looks.
func writeStatus(w io.Writer, format output.Format, v statusView) error {
	return output.Write(w, format, v, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "trust domain:\t%s\n", v.TrustDomain)
		fmt.Fprintf(tw, "healthy:\t%v\n", v.Healthy)
		for _, p := range v.Problems {
			fmt.Fprintf(tw, "PROBLEM:\t%s\n", p)
		}
		for _, warn := range v.Warnings {
			fmt.Fprintf(tw, "WARNING:\t%s\n", warn)
		}
		fmt.Fprintf(tw, "etcd:\tquorum=%v leader=%s members=%d\n", v.Quorum, v.EtcdLeader, len(v.EtcdMembers))
		fmt.Fprintf(tw, "CA (%s):\texpires %s (root %s)\n", v.ServedBy, fmtTime(v.CAExpiresAt), fmtTime(v.RootExpiresAt))
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "NODE\tROLES\tADDRESS\tENROLLMENT\tREADY\tAGENT\tENFORCEMENT\tLAYERS\tSVID EXPIRES")
		for _, n := range v.Nodes {
			enroll := n.EnrollmentAddress
			if enroll == "" {
				enroll = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%v\t%s\t%s\t%s\n", n.Name, strings.Join(n.Roles, ","), n.Address, enroll, n.Ready, n.AgentReady, dash(n.Enforcement), dash(strings.Join(n.EnforcementLayers, ",")), fmtTime(n.SVIDExpiresAt))
		}
		limitsShown := false
		for _, n := range v.Nodes {
			if len(n.Limits) == 0 {
				continue
			}
			if !limitsShown {
				fmt.Fprintln(tw)
				fmt.Fprintln(tw, "NODE\tTASK LIMITS ENFORCED")
				limitsShown = true
			}
			for _, l := range n.Limits {
				fmt.Fprintf(tw, "%s\t%s\n", n.Name, l)
			}
		}
		if len(v.EtcdMembers) > 0 {
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "ETCD MEMBER\tID\tLEADER\tLEARNER\tCLIENT URL")
			for _, m := range v.EtcdMembers {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", m.Name, m.ID, m.Leader, m.Learner, strings.Join(m.ClientURLs, ","))
			}
		}
		return nil
	})
}
