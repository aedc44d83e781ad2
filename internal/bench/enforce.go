package bench

import (
	"context"
	"fmt"

	"github.com/unumos/unum/enforcement/kernel/kbench"
)

const enforceComponent = "enforce"

// enforceAddedTarget is the bound on what the programs add to a
// connect() at 10,000 allow entries.
const enforceAddedTarget = 2000 // ns

// RunEnforce measures connect() latency from inside a task cgroup under
// the enforcement programs with 0, 1,000 and 10,000 allow entries, with no
// program attached, and under iptables rules of the same counts, in the
// same run (package kbench). It needs root and a kernel with cgroup BPF;
// kbench says which is missing.
func RunEnforce(ctx context.Context, o Options) (Report, error) {
	progress := o.progressFunc(enforceComponent)
	rep := Report{Component: enforceComponent, Mode: "local", Settings: baseSettings(1)}
	if o.Cluster != nil {
		return rep, fmt.Errorf("enforce is measured on this machine's kernel; a cluster target does not apply")
	}
	progress("measuring connect() with no program, under the programs with 0, 1,000 and 10,000 entries, and under iptables")
	kr, err := kbench.Run(ctx, kbench.Options{Iptables: true, Log: o.Log})
	if err != nil {
		return rep, err
	}
	rep.Settings.Extra["iptables"] = kr.Iptables
	rep.Settings.Extra["method"] = "connect() to 127.0.0.1 from this process moved into each cgroup or namespace; the configurations take turns within each round; median of the rounds' medians"
	for _, r := range kr.Results {
		res := Result{
			Name:        fmt.Sprintf("%s-%s-%d", r.Config, r.Proto, r.Entries),
			Description: fmt.Sprintf("%s connect() with %s and %d entries: median %.0f ns, %+.0f ns against no program", r.Proto, r.Config, r.Entries, r.NsPerConnect, r.AddedNs),
			Clients:     1,
			P50us:       r.NsPerConnect / 1000,
		}
		// The target is judged on UDP connect(): it runs the same hook as
		// TCP without a loopback handshake, whose own jitter (several µs on
		// a busy machine) would otherwise hide the hook's cost.
		if r.Config == kbench.ConfigBPF && r.Entries == 10000 && r.Proto == "udp" {
			res.setTarget(fmt.Sprintf("<= %d ns added per connect at 10,000 entries", enforceAddedTarget), r.AddedNs <= enforceAddedTarget)
		}
		rep.Results = append(rep.Results, res)
	}
	rep.Settings.LoadAverageEnd = loadAverage()
	return rep, nil
}
