package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/node"
)

func portFlags(fs *flag.FlagSet, p *node.Ports) {
	fs.StringVar(&p.API, "listen", "", fmt.Sprintf("API listen address HOST:PORT (default 127.0.0.1:%d)", node.DefaultAPIPort))
	fs.StringVar(&p.Enroll, "enroll-listen", "", "enrolment listen address (default: API port + 1)")
	fs.StringVar(&p.EtcdClient, "etcd-client-listen", "", "etcd client listen address (default: API port + 2)")
	fs.StringVar(&p.EtcdPeer, "etcd-peer-listen", "", "etcd peer listen address (default: API port + 3)")
	fs.StringVar(&p.Metrics, "metrics-listen", "", "Prometheus /metrics address: HOST:PORT (plain HTTP on loopback, mutual TLS elsewhere), https://HOST:PORT, or off (default 127.0.0.1:API port + 4; overrides node.yaml)")
}

func runInit(e *env, args []string) error {
	fs := flag.NewFlagSet("unum init", flag.ContinueOnError)
	var o node.InitOptions
	fs.StringVar(&o.TrustDomain, "trust-domain", "", "trust domain, e.g. example.org (required)")
	fs.StringVar(&o.DataDir, "data-dir", "", "the node's data folder (required)")
	fs.StringVar(&o.KEKFile, "kek-file", "", "key-encryption key file, outside the data folder; created if missing (required)")
	fs.StringVar(&o.Name, "name", "node-1", "this node's name")
	portFlags(fs, &o.Ports)
	fs.DurationVar(&o.EtcdHeartbeat, "etcd-heartbeat", 0, "etcd heartbeat interval (default etcd's)")
	fs.DurationVar(&o.EtcdElection, "etcd-election", 0, "etcd election timeout (default etcd's)")
	fs.BoolVar(&o.EnforcementOptional, "enforcement-optional", false, "let nodes without kernel enforcement (not root, no cgroup BPF) run tasks (default: they receive none)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	switch {
	case o.TrustDomain == "":
		return usagef("--trust-domain is required")
	case o.DataDir == "":
		return usagef("--data-dir is required")
	case o.KEKFile == "":
		return usagef("--kek-file is required: the key-encryption key must come from outside the data folder")
	}
	o.Log = e.log
	if err := node.Init(e.ctx, o); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "trust domain %s created in %s\nstart the node:   unum node --data-dir %s --kek-file %s\nadmin config:     export UNUM_CONFIG=%s\n",
		o.TrustDomain, o.DataDir, o.DataDir, o.KEKFile, node.Layout{Dir: o.DataDir}.Admin())
	return nil
}

func runNode(e *env, args []string) error {
	fs := flag.NewFlagSet("unum node", flag.ContinueOnError)
	var o node.Options
	fs.StringVar(&o.DataDir, "data-dir", "", "the node's data folder (required)")
	fs.StringVar(&o.KEKFile, "kek-file", "", "key-encryption key file (control nodes)")
	fs.StringVar(&o.JoinAddr, "join", "", "enrolment address HOST:PORT of a control node, to join")
	fs.StringVar(&o.Token, "token", "", "join token (with --join); prefer $UNUM_JOIN_TOKEN or --token-file: a command line is readable by every local user")
	tokenFile := fs.String("token-file", "", "file holding the join token (with --join)")
	fs.DurationVar(&o.SVIDTTL, "svid-ttl", time.Hour, "lifetime of workload X509-SVIDs this node's CA signs")
	fs.DurationVar(&o.NodeLease, "node-lease", 0, "control nodes: how long a node may miss heartbeats before it is down (default 10s)")
	fs.DurationVar(&o.DownGrace, "down-grace", 0, "control nodes: how long a down node keeps its tasks before they are re-placed (default 20s)")
	syscallAudit := fs.Bool("syscall-audit", true, "compute nodes: record the system calls tasks' seccomp filters refuse (a sys_exit BPF program; every system call on the machine pays about 0.1-0.2 µs for it)")
	fs.Int64Var(&o.CPUMillis, "cpu", 0, "compute nodes: millicores offered to tasks (default: every CPU)")
	fs.Int64Var(&o.MemoryMiB, "memory", 0, "compute nodes: MiB of memory offered to tasks (default: all memory)")
	taskPorts := fs.String("task-ports", "", "compute nodes: LOW-HIGH, the ports tasks may be given (default 20000-32767)")
	fs.DurationVar(&o.EtcdHeartbeat, "etcd-heartbeat", 0, "etcd heartbeat interval (default etcd's)")
	fs.DurationVar(&o.EtcdElection, "etcd-election", 0, "etcd election timeout (default etcd's)")
	portFlags(fs, &o.Ports)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return usagef("unknown command %q for unum node (join-token, ls, rm) or unexpected argument", pos[0])
	}
	if *taskPorts != "" {
		lo, hi, ok := strings.Cut(*taskPorts, "-")
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if !ok || err1 != nil || err2 != nil || l < 1024 || h > 65535 || l > h {
			return usagef("--task-ports %q: want LOW-HIGH with 1024 <= LOW <= HIGH <= 65535", *taskPorts)
		}
		o.TaskPorts = [2]int{l, h}
	}
	o.NoSyscallAudit = !*syscallAudit
	if o.DataDir == "" {
		return usagef("--data-dir is required")
	}
	switch {
	case o.Token != "" && *tokenFile != "":
		return usagef("give --token or --token-file, not both")
	case *tokenFile != "":
		data, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		o.Token = strings.TrimSpace(string(data))
	case o.Token == "":
		o.Token = strings.TrimSpace(e.getenv("UNUM_JOIN_TOKEN"))
	}
	if o.JoinAddr == "" {
		o.Token = "" // a token in the environment means nothing without --join
	} else if o.Token == "" {
		return usagef("--join needs a token: $UNUM_JOIN_TOKEN, --token-file or --token")
	}
	if o.SVIDTTL < 10*time.Second {
		return usagef("--svid-ttl must be at least 10s")
	}
	o.Log = e.log
	err = node.Run(e.ctx, o)
	if errors.Is(err, node.ErrJoinRefused) {
		return err // exit 1, with the reason; no retry
	}
	return err
}

func runJoinToken(e *env, args []string) error {
	fs := flag.NewFlagSet("unum node join-token", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	name := fs.String("name", "", "the joining node's name (required)")
	roles := fs.String("roles", "compute", "roles: compute, control, or compute,control")
	ttl := fs.Duration("ttl", 15*time.Minute, "how long the token is valid")
	var rs []string
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error {
		if *name == "" {
			return usagef("--name is required")
		}
		if err := jointoken.ValidateNodeName(*name); err != nil {
			return usagef("--name: %v", err)
		}
		var err error
		if rs, err = jointoken.ParseRoles(*roles); err != nil {
			return usagef("--roles: %v", err)
		}
		if *ttl < time.Second {
			return usagef("--ttl must be at least 1s")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewClusterClient(c.conn).CreateJoinToken(c.ctx, &unumv1.CreateJoinTokenRequest{Name: *name, Roles: rs, TtlSeconds: int64(ttl.Seconds())})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, resp.GetToken())
	fmt.Fprintf(e.stderr, "join token for %s (%s), valid until %s, single use\n", *name, strings.Join(rs, ","), time.Unix(resp.GetExpiresAtUnix(), 0).UTC().Format(time.RFC3339))
	return nil
}

// nodeView is the JSON shape of a node in `unum node ls` and `unum status`.
type nodeView struct {
	Name              string    `json:"name"`
	SPIFFEID          string    `json:"spiffe_id"`
	Roles             []string  `json:"roles"`
	Address           string    `json:"address"`
	EnrollmentAddress string    `json:"enrollment_address,omitempty"`
	Ready             bool      `json:"ready"`
	AgentReady        bool      `json:"agent_ready"`
	SVIDExpiresAt     time.Time `json:"svid_expires_at"`
	LastSeen          time.Time `json:"last_seen"`
	Enforcement       string    `json:"enforcement"`
	// EnforcementLayers are the enforcement layers active on the node.
	EnforcementLayers []string `json:"enforcement_layers,omitempty"`
	// Scheduling.
	Lease       string            `json:"lease"`
	Labels      map[string]string `json:"labels,omitempty"`
	Draining    bool              `json:"draining,omitempty"`
	Capacity    *unumv1.Resources `json:"capacity,omitempty"`
	Allocated   *unumv1.Resources `json:"allocated,omitempty"`
	Allocations int32             `json:"allocations"`
	Limits      []string          `json:"limits,omitempty"`
	// Unschedulable is why the node receives no new tasks.
	Unschedulable string `json:"unschedulable,omitempty"`
}

func toNodeView(n *unumv1.Node) nodeView {
	return nodeView{
		Name: n.GetName(), SPIFFEID: n.GetSpiffeId(), Roles: n.GetRoles(), Address: n.GetApiAddress(),
		EnrollmentAddress: n.GetEnrollmentAddress(), Ready: n.GetReady(), AgentReady: n.GetAgentReady(),
		SVIDExpiresAt: unixTime(n.GetSvidExpiresAtUnix()), LastSeen: unixTime(n.GetLastSeenUnix()),
		Enforcement: n.GetEnforcement(), EnforcementLayers: n.GetEnforcementLayers(),
		Lease: n.GetLease(), Labels: n.GetLabels(), Draining: n.GetDraining(), Capacity: n.GetCapacity(),
		Allocated: n.GetAllocated(), Allocations: n.GetAllocations(), Limits: n.GetLimits(), Unschedulable: n.GetUnschedulable(),
	}
}

func unixTime(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

func runNodeLs(e *env, args []string) error {
	fs := flag.NewFlagSet("unum node ls", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	resp, err := unumv1.NewClusterClient(c.conn).ListNodes(c.ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	views := make([]nodeView, 0, len(resp.GetNodes()))
	for _, n := range resp.GetNodes() {
		views = append(views, toNodeView(n))
	}
	return output.Write(e.stdout, c.format, struct {
		Nodes []nodeView `json:"nodes"`
	}{views}, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "NAME\tROLES\tADDRESS\tREADY\tLEASE\tENFORCEMENT\tSCHEDULING\tCPU (m)\tMEMORY (MiB)\tTASKS\tLABELS")
		for _, v := range views {
			sched := "-"
			if v.Capacity != nil {
				sched = "schedulable"
				if v.Unschedulable != "" {
					sched = "no: " + v.Unschedulable
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", v.Name, strings.Join(v.Roles, ","), v.Address, v.Ready, v.Lease, dash(v.Enforcement), sched,
				useOf(v.Allocated, v.Capacity, func(r *unumv1.Resources) int64 { return r.GetCpuMillis() }),
				useOf(v.Allocated, v.Capacity, func(r *unumv1.Resources) int64 { return r.GetMemoryMib() }),
				v.Allocations, fmtLabels(v.Labels))
		}
		return nil
	})
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// useOf is "allocated/capacity" of one resource, "-" for a node without
// an executor.
func useOf(alloc, capacity *unumv1.Resources, get func(*unumv1.Resources) int64) string {
	if capacity == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", get(alloc), get(capacity))
}
