package cli

import (
	"flag"

	"github.com/unumos/unum/internal/devcluster"
)

func runDev(e *env, args []string) error {
	fs := flag.NewFlagSet("unum dev", flag.ContinueOnError)
	var o devcluster.Options
	fs.IntVar(&o.Nodes, "nodes", 1, "number of nodes (nodes 1-3 are also control nodes)")
	fs.StringVar(&o.DataDir, "data-dir", "", "folder for the cluster (default: a new temporary folder; an existing dev cluster there is resumed)")
	fs.DurationVar(&o.SVIDTTL, "svid-ttl", 0, "lifetime of workload X509-SVIDs (default 1h)")
	fs.DurationVar(&o.NodeLease, "node-lease", 0, "how long a node may miss heartbeats before it is down (default 10s)")
	fs.DurationVar(&o.DownGrace, "down-grace", 0, "how long a down node keeps its tasks before they are re-placed (default 20s)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if o.Nodes < 1 || o.Nodes > 32 {
		return usagef("--nodes must be between 1 and 32")
	}
	o.Out, o.Progress = e.stdout, e.stderr
	return devcluster.Run(e.ctx, o)
}
