package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDuration is the main measuring window of a component when
// Options.Duration is zero.
const DefaultDuration = 7 * time.Second

// DefaultConcurrency is the number of concurrent clients when
// Options.Concurrency is zero.
const DefaultConcurrency = 32

// Options configure a benchmark run. They are not modified by a runner.
type Options struct {
	// Duration is the component's main measuring window (for svid: the
	// end-to-end issuance window); its other windows scale with it. Zero
	// means DefaultDuration.
	Duration time.Duration
	// Concurrency is the number of concurrent clients where a measurement
	// has several. Zero means the component's default: DefaultConcurrency,
	// or GOMAXPROCS for in-process CPU-bound work (authz).
	Concurrency int
	// Cluster, when set, measures the running cluster it names instead of
	// starting one in a temporary folder.
	Cluster *ClusterTarget
	// TempDir is where temporary folders are made (default os.TempDir()).
	TempDir string
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// Log receives the logs of what the benchmark starts (nodes, etcd);
	// nil discards them (a node's fatal error still ends the run with it).
	Log *slog.Logger
	// CPUProfile, when set, receives a pprof CPU profile of the component's
	// main measuring window (svid: the end-to-end issuance window, clients
	// and server both in this process; with Cluster, the fetch windows).
	CPUProfile io.Writer
	// AuditVerifyEntries is how many entries the audit benchmark verifies
	// (0: 1,000,000); tests make it small.
	AuditVerifyEntries int
	// SchedNodes and SchedTasks size the sched benchmark's synthetic
	// cluster (0: schedbench.DefaultNodes and DefaultTasks, the issue's
	// 10,000 and 100,000); tests make them small.
	SchedNodes, SchedTasks int
}

// ClusterTarget names a running cluster to measure.
type ClusterTarget struct {
	// ConfigPath is the admin client config (UNUM_CONFIG).
	ConfigPath string
	// Socket is the Workload API socket of a node agent on this machine.
	Socket string
	// Node is the name of the node that Socket belongs to.
	Node string
}

func (o Options) duration() time.Duration {
	if o.Duration > 0 {
		return o.Duration
	}
	return DefaultDuration
}

func (o Options) concurrency() int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	return DefaultConcurrency
}

// progressFunc returns the progress printer of one run: each line names the
// component and the seconds since the run began, so that where the time
// goes (setup, each window, shutdown) is visible.
func (o Options) progressFunc(component string) func(format string, args ...any) {
	start := time.Now()
	return func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "unum bench %s: [%5.1fs] %s\n", component, time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
}

func (o Options) logger() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Runner runs one component's benchmark.
type Runner func(ctx context.Context, o Options) (Report, error)

// Runners maps component names (as typed after `unum bench`) to runners.
func Runners() map[string]Runner {
	return map[string]Runner{
		"svid":       RunSVID,
		"revocation": RunRevocation,
		"authz":      RunAuthz,
		"audit":      RunAudit,
		"cred":       RunCred,
		"sched":      RunSched,
		"enforce":    RunEnforce,
	}
}

// Components lists the component names in order.
func Components() []string {
	names := make([]string, 0, len(Runners()))
	for n := range Runners() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Report is the outcome of one component's benchmark.
type Report struct {
	Component string `json:"component"`
	Mode      string `json:"mode"` // "local" (started in a temp folder or in process) or "cluster"
	// Filesystem is zero, and omitted, for a component that measures no
	// stored data (authz).
	Filesystem Filesystem `json:"filesystem,omitzero"`
	Settings   Settings   `json:"settings"`
	Results    []Result   `json:"results"`
	// Comparisons relate two results of the same run.
	Comparisons []Comparison `json:"comparisons,omitempty"`
}

// Comparison is how much slower result Of was than result Over in the
// same run, as ratios above 1 when Of was slower: of p50 and p99 latency,
// and of the time per operation at full load (Over's ops/s over Of's).
type Comparison struct {
	Name    string  `json:"name"`
	Of      string  `json:"of"`
	Over    string  `json:"over"`
	P50     float64 `json:"p50_ratio"`
	P99     float64 `json:"p99_ratio"`
	PerOp   float64 `json:"time_per_op_ratio"`
	Target  string  `json:"target,omitempty"`
	Met     *bool   `json:"met,omitempty"`
	Comment string  `json:"comment,omitempty"`
}

// Settings are what a run measured with.
type Settings struct {
	Concurrency int `json:"concurrency"`
	// Windows are the measuring windows by result name.
	Windows    map[string]string `json:"windows"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	NumCPU     int               `json:"num_cpu"`
	CPUModel   string            `json:"cpu_model,omitempty"`
	GoVersion  string            `json:"go_version"`
	Kernel     string            `json:"kernel"`
	// LoadAverage is /proc/loadavg's 1, 5 and 15 minute figures when the
	// run started and when it ended: other work on the machine shows here.
	LoadAverageStart string `json:"load_average_start,omitempty"`
	LoadAverageEnd   string `json:"load_average_end,omitempty"`
	// Extra holds component-specific settings (trust domain, etcd timings).
	Extra map[string]string `json:"extra,omitempty"`
}

// Result is one measurement.
type Result struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Clients is how many concurrent clients ran the operation.
	Clients int     `json:"clients"`
	Seconds float64 `json:"seconds"`
	Ops     int64   `json:"ops"`
	Errors  int64   `json:"errors"`
	// FirstError is the first failed operation's error, if any failed.
	FirstError string  `json:"first_error,omitempty"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	// P50us, P90us, P99us and MaxUs are per-operation latencies in
	// microseconds; zero (omitted) where latency is not reported.
	P50us float64 `json:"p50_us,omitempty"`
	P90us float64 `json:"p90_us,omitempty"`
	P99us float64 `json:"p99_us,omitempty"`
	MaxUs float64 `json:"max_us,omitempty"`
	// ProcessCPUCores is the CPU time this whole process (clients and, in a
	// local run, the node) used during the window, divided by the window:
	// below GOMAXPROCS when other work on the machine took the cores.
	// CPUusPerOp is that CPU time per successful operation.
	ProcessCPUCores float64 `json:"process_cpu_cores"`
	CPUusPerOp      float64 `json:"process_cpu_us_per_op"`
	// Target is the goal in words; Met is nil when there is no target.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

// Table writes the report in the human-readable form of `-o table`.
func (r Report) Table(tw *tabwriter.Writer) error {
	fs := r.Filesystem
	fmt.Fprintf(tw, "component:\t%s (%s)\n", r.Component, r.Mode)
	if fs.Path == "" {
		fmt.Fprintf(tw, "filesystem:\tnone (in memory)\n")
	} else {
		fmt.Fprintf(tw, "filesystem:\t%s on %s (%s, mounted at %s)\n", fs.Type, fs.Path, fs.Source, fs.MountPoint)
	}
	s := r.Settings
	fmt.Fprintf(tw, "machine:\t%d CPUs, GOMAXPROCS %d, %s, kernel %s, %s\n", s.NumCPU, s.GOMAXPROCS, s.CPUModel, s.Kernel, s.GoVersion)
	fmt.Fprintf(tw, "settings:\tconcurrency %d%s\n", s.Concurrency, formatExtra(s.Extra))
	fmt.Fprintf(tw, "load average:\t%s at start, %s at end\n", orDash(s.LoadAverageStart), orDash(s.LoadAverageEnd))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "MEASUREMENT\tCLIENTS\tWINDOW\tOPS\tERRORS\tOPS/S\tP50\tP90\tP99\tMAX\tCPU/OP\tCORES\tTARGET\tMET")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.1fs\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n",
			x.Name, x.Clients, x.Seconds, x.Ops, x.Errors, x.OpsPerSec, fmtMicros(x.P50us), fmtMicros(x.P90us), fmtMicros(x.P99us), fmtMicros(x.MaxUs), fmtMicros(x.CPUusPerOp), x.ProcessCPUCores, orDash(x.Target), fmtMet(x.Met))
	}
	fmt.Fprintln(tw)
	if len(r.Comparisons) > 0 {
		fmt.Fprintln(tw, "COMPARISON\tOF\tOVER\tP50\tP99\tTIME/OP\tTARGET\tMET")
		for _, c := range r.Comparisons {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2fx\t%.2fx\t%.2fx\t%s\t%s\n", c.Name, c.Of, c.Over, c.P50, c.P99, c.PerOp, orDash(c.Target), fmtMet(c.Met))
		}
		fmt.Fprintln(tw)
	}
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s:\t%s\n", x.Name, x.Description)
		if x.FirstError != "" {
			fmt.Fprintf(tw, "\tfirst error: %s\n", x.FirstError)
		}
	}
	for _, c := range r.Comparisons {
		if c.Comment != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", c.Name, c.Comment)
		}
	}
	return nil
}

func formatExtra(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, ", %s %s", k, m[k])
	}
	return b.String()
}

func fmtMicros(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us >= 1000:
		return fmt.Sprintf("%.2fms", us/1000)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}

func fmtMet(m *bool) string {
	switch {
	case m == nil:
		return "-"
	case *m:
		return "met"
	default:
		return "NOT MET"
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// baseSettings describes this machine and process.
func baseSettings(concurrency int) Settings {
	s := Settings{
		Concurrency: concurrency,
		Windows:     map[string]string{},
		GOMAXPROCS:  runtime.GOMAXPROCS(0),
		NumCPU:      runtime.NumCPU(),
		CPUModel:    cpuModel(),
		GoVersion:   runtime.Version(),
		Extra:       map[string]string{},

		LoadAverageStart: loadAverage(),
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		s.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return s
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// sample is what measure collected.
type sample struct {
	ops, errs int64
	firstErr  error
	latencies []time.Duration // sorted; empty unless recorded
	elapsed   time.Duration
	cpu       time.Duration // this process's user+system time during the window
}

// measure runs op on workers goroutines until window has passed (an
// operation started before the end runs to completion and counts), and
// collects the latency of every successful operation when record is set.
// Each worker owns its slice of latencies, so the hot loop takes no lock.
func measure(ctx context.Context, workers int, window time.Duration, record bool, op func(ctx context.Context, worker int) error) sample {
	type workerSample struct {
		ops, errs int64
		firstErr  error
		lat       []time.Duration
	}
	per := make([]workerSample, workers)
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(window)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			s := &per[w]
			if record {
				s.lat = make([]time.Duration, 0, 4096)
			}
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				err := op(ctx, w)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					s.errs++
					if s.firstErr == nil {
						s.firstErr = err
					}
					continue
				}
				s.ops++
				if record {
					s.lat = append(s.lat, d)
				}
			}
		})
	}
	wg.Wait()
	out := sample{elapsed: time.Since(start), cpu: processCPU() - cpu0}
	for _, s := range per {
		out.ops += s.ops
		out.errs += s.errs
		if out.firstErr == nil {
			out.firstErr = s.firstErr
		}
		out.latencies = append(out.latencies, s.lat...)
	}
	slices.Sort(out.latencies)
	return out
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 1) of
// sorted, or zero when it is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func micros(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)*10) / 10
}

// result turns a sample into a Result; it fails when nothing succeeded, as
// then there is nothing to report.
func (s sample) result(name, description string, clients int, withLatency bool) (Result, error) {
	r := Result{
		Name:        name,
		Description: description,
		Clients:     clients,
		Seconds:     math.Round(s.elapsed.Seconds()*100) / 100,
		Ops:         s.ops,
		Errors:      s.errs,
	}
	if s.firstErr != nil {
		r.FirstError = s.firstErr.Error()
	}
	if s.ops == 0 {
		if s.firstErr != nil {
			return r, fmt.Errorf("%s: no operation succeeded: %w", name, s.firstErr)
		}
		return r, fmt.Errorf("%s: no operation ran", name)
	}
	r.OpsPerSec = math.Round(float64(s.ops)/s.elapsed.Seconds()*10) / 10
	r.ProcessCPUCores = math.Round(s.cpu.Seconds()/s.elapsed.Seconds()*100) / 100
	r.CPUusPerOp = micros(s.cpu / time.Duration(s.ops))
	if withLatency {
		r.P50us = micros(percentile(s.latencies, 0.50))
		r.P90us = micros(percentile(s.latencies, 0.90))
		r.P99us = micros(percentile(s.latencies, 0.99))
		r.MaxUs = micros(percentile(s.latencies, 1))
	}
	return r, nil
}

func (r *Result) setTarget(target string, met bool) {
	r.Target = target
	r.Met = &met
}
