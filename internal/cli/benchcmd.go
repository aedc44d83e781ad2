package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/unumos/unum/internal/bench"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/output"
)

// runBench runs `unum bench COMPONENT`. It exits 0 whenever the benchmark
// ran, whether or not its targets were met: the report says which.
func runBench(e *env, args []string) error {
	// --cpuprofile FILE is for developers and not in the usage text: it
	// profiles the component's main measuring window.
	profilePath, args, err := takeHiddenFlag(args, "cpuprofile")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("unum bench COMPONENT", flag.ContinueOnError)
	out := fs.String("o", "table", "output format: table|json|yaml")
	duration := fs.Duration("duration", bench.DefaultDuration, "main measuring window (svid: end-to-end issuance; authz: both paths together; cred: minting; sched: mixed and uniform together); the other windows scale with it")
	concurrency := fs.Int("concurrency", 0, fmt.Sprintf("concurrent clients; 0 is the component's default, %d (authz: GOMAXPROCS)", bench.DefaultConcurrency))
	cluster := fs.Bool("cluster", false, "measure the cluster in UNUM_CONFIG instead of starting one in a temporary folder")
	config := fs.String("config", "", "client config file with --cluster (default $UNUM_CONFIG)")
	socket := fs.String("socket", "", "Workload API socket of a local node agent (with --cluster)")
	nodeName := fs.String("node", "", "the node --socket belongs to (with --cluster)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	runners := bench.Runners()
	components := strings.Join(bench.Components(), ", ")
	if len(pos) != 1 {
		return usagef("usage: unum bench COMPONENT [flags] (components: %s)\n%s", components, flagUsage(fs))
	}
	run, ok := runners[pos[0]]
	if !ok {
		return usagef("unknown component %q (components: %s)", pos[0], components)
	}
	f, err := output.ParseFormat(*out)
	if err != nil {
		return usagef("-o: %v", err)
	}
	switch {
	case *duration <= 0:
		return usagef("--duration must be positive")
	case *concurrency < 0:
		return usagef("--concurrency must be at least 1 (or 0 for the component's default)")
	case *cluster && pos[0] == "authz":
		return usagef("authz is measured in this process; --cluster does not apply")
	case *cluster && pos[0] == "cred":
		return usagef("cred starts the cluster it measures; --cluster does not apply")
	case *cluster && pos[0] == "sched":
		return usagef("sched is measured in this process; --cluster does not apply")
	case !*cluster && (*socket != "" || *nodeName != "" || *config != ""):
		return usagef("--socket, --node and --config go with --cluster")
	case *cluster && (*socket == "" || *nodeName == ""):
		return usagef("--cluster needs --socket PATH of a local agent and --node NAME of its node")
	}
	o := bench.Options{Duration: *duration, Concurrency: *concurrency, Progress: e.stderr}
	if e.getenv("UNUM_LOG") == "debug" {
		o.Log = e.log // the started node's and etcd's logs; quiet otherwise
	}
	if *cluster {
		path, err := clientconfig.Resolve(*config)
		if err != nil {
			return err
		}
		o.Cluster = &bench.ClusterTarget{ConfigPath: path, Socket: *socket, Node: *nodeName}
	}
	if profilePath != "" {
		pf, err := os.Create(profilePath)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pf.Close()
		o.CPUProfile = pf
	}
	rep, err := run(e.ctx, o)
	if err != nil {
		return fmt.Errorf("bench %s: %w", pos[0], err)
	}
	return output.Write(e.stdout, f, rep, rep.Table)
}

// takeHiddenFlag removes --name VALUE or --name=VALUE (one or two dashes)
// from args and returns VALUE.
func takeHiddenFlag(args []string, name string) (string, []string, error) {
	var val string
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		flagName, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || flagName != name {
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return "", nil, usagef("--%s needs a value", name)
			}
			i++
			v = args[i]
		}
		val = v
	}
	return val, rest, nil
}
