package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/internal/rpc"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitError  = 1
	ExitUsage  = 2
	ExitDenied = 3
)

// env is what a command runs with; tests build their own.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	getenv func(string) string
}

// usageError marks an error as a usage error (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
	sub     []*command
}

func commands() []*command {
	return []*command{
		{name: "init", summary: "create a trust domain and its first control node", run: runInit},
		{name: "node", summary: "run a node (unum node --data-dir DIR), or manage nodes", run: runNode, sub: []*command{
			{name: "join-token", summary: "mint a single-use join token (admin)", run: runJoinToken},
			{name: "ls", summary: "list nodes", run: runNodeLs},
			{name: "rm", summary: "remove a node for good: revoke it, leave etcd, delete its registrations (admin)", run: runNodeRm},
			{name: "drain", summary: "give a node no new tasks (--undo: schedulable again)", run: runNodeDrain},
			{name: "label", summary: "set (KEY=VALUE) or remove (KEY-) a node's labels", run: runNodeLabel},
		}},
		{name: "job", summary: "jobs: run, ls, status, stop, logs, endpoints", sub: jobCommands()},
		{name: "ps", summary: "every task on every node: node, job, identity, uid, state, uptime, CPU, memory", run: runPs},
		{name: "exec", summary: "run a command as a short confined task on every node matching --on SELECTOR (admin)", run: runExec},
		{name: "status", summary: "cluster health: nodes, etcd, CA", run: runStatus},
		{name: "enforcement", summary: "kernel enforcement: status per node, the cluster's mode and requirement", sub: []*command{
			{name: "status", summary: "per node: mode, layers, programs, map sizes, sync revision, denials per minute", run: runEnforcementStatus},
			{name: "mode", summary: "set enforce or audit-only, for the cluster or one namespace (-n NS) (admin)", run: runEnforcementMode},
			{name: "require", summary: "on: nodes without kernel enforcement receive no new tasks; off: they do (admin)", run: runEnforcementRequire},
		}},
		{name: "backup", summary: "back up and restore the control plane", sub: []*command{
			{name: "create", summary: "write a backup of the control plane to FILE (admin)", run: runBackupCreate},
			{name: "restore", summary: "rebuild a control node from a backup FILE", run: runBackupRestore},
		}},
		{name: "id", summary: "identities and registration entries", sub: []*command{
			{name: "register", summary: "register a workload identity", run: runIDRegister},
			{name: "list", summary: "list registration entries", run: runIDList},
			{name: "delete", summary: "delete a registration entry", run: runIDDelete},
			{name: "svid", summary: "fetch an SVID from the Workload API like a workload", run: runIDSVID},
			{name: "show", summary: "show who the server says you are", run: runIDShow},
		}},
		{name: "user", summary: "people: users, their roles and enrolment tokens", sub: []*command{
			{name: "add", summary: "add a user and print their single-use enrolment token (admin)", run: runUserAdd},
			{name: "ls", summary: "list users", run: runUserLs},
			{name: "rm", summary: "remove a user and revoke their certificates (admin)", run: runUserRm},
			{name: "revoke", summary: "revoke a user's certificates, keeping the user (admin)", run: runUserRevoke},
		}},
		{name: "login", summary: "log in with a token from `unum user add`; --renew renews", run: runLogin},
		{name: "admin", summary: "break-glass administration on a control node", sub: []*command{
			{name: "recover", summary: "mint a short-lived admin config from local CA material (loud)", run: runAdminRecover},
		}},
		{name: "ca", summary: "the cluster's certificate authority", sub: []*command{
			{name: "status", summary: "roots, intermediates, expiries, rotation progress", run: runCAStatus},
			{name: "rotate", summary: "new intermediates for every control node (--root: and a new root)", run: runCARotate},
			{name: "export-root", summary: "move the root key off the cluster into a file", run: runCAExportRoot},
			{name: "import-root", summary: "bring an exported root key back", run: runCAImportRoot},
		}},
		{name: "policy", summary: "the cluster's Rego policy: apply, test, check, explain, shadow, roll back", sub: policyCommands()},
		{name: "audit", summary: "the tamper-evident audit log: tail, query, verify, proof, export", sub: auditCommands()},
		{name: "cred", summary: "delegated credentials: delegate, inspect, list, revoke", sub: credCommands()},
		{name: "threatmodel", summary: "the threat register, trust boundaries and privileged actions (-o md|json, --live)", run: runThreatModel, sub: []*command{
			{name: "check", summary: "fail when a mitigated threat's test failed or skipped in go test -json results (--results FILES)", run: runThreatModelCheck},
		}},
		{name: "dev", summary: "run a whole cluster on this machine", run: runDev},
		{name: "bench", summary: "benchmark a component (svid, revocation, authz, audit, cred, sched, enforce)", run: runBench},
		{name: "version", summary: "print the version", run: func(e *env, _ []string) error {
			fmt.Fprintln(e.stdout, "unum", Version)
			return nil
		}},
	}
}

// Version is set at build time with -ldflags.
var Version = "dev"

// Main runs the CLI and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	level := slog.LevelInfo
	if os.Getenv("UNUM_LOG") == "debug" {
		level = slog.LevelDebug
	}
	e := &env{
		ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr,
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		getenv: os.Getenv,
	}
	err := dispatch(e, commands(), args, "unum")
	return exitCode(stderr, err)
}

func dispatch(e *env, cmds []*command, args []string, path string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(e.stderr, cmds, path)
		if len(args) == 0 {
			return usageError{"missing command"}
		}
		return nil
	}
	for _, c := range cmds {
		if c.name != args[0] {
			continue
		}
		if len(c.sub) > 0 && len(args) > 1 {
			for _, s := range c.sub {
				if s.name == args[1] {
					return s.run(e, args[2:])
				}
			}
		}
		if c.run == nil {
			if len(args) > 1 {
				return usagef("unknown command %q for %s %s", args[1], path, c.name)
			}
			printUsage(e.stderr, c.sub, path+" "+c.name)
			return usageError{"missing command"}
		}
		return c.run(e, args[1:])
	}
	return usagef("unknown command %q (see unum --help)", args[0])
}

func printUsage(w io.Writer, cmds []*command, path string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", path)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
		for _, s := range c.sub {
			fmt.Fprintf(w, "  %-12s %s\n", c.name+" "+s.name, s.summary)
		}
	}
}

// exitCode prints err and maps it to the exit code.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return ExitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		if ue.msg != "missing command" {
			fmt.Fprintln(stderr, "unum:", ue.msg)
		}
		return ExitUsage
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	var de deniedError
	if errors.As(err, &de) {
		return ExitDenied
	}
	if st, ok := status.FromError(unwrapStatus(err)); ok && st.Code() != codes.OK {
		switch st.Code() {
		case codes.PermissionDenied:
			if d, ok := rpc.DenialOf(unwrapStatus(err)); ok {
				fmt.Fprintln(stderr, "unum:", d.String())
			} else {
				fmt.Fprintln(stderr, "unum: denied:", st.Message())
			}
			return ExitDenied
		case codes.Unauthenticated:
			fmt.Fprintln(stderr, "unum: not authenticated:", st.Message())
			return ExitError
		case codes.Unavailable:
			fmt.Fprintln(stderr, "unum: unavailable:", st.Message())
			return ExitError
		default:
			fmt.Fprintf(stderr, "unum: %s\n", st.Message())
			return ExitError
		}
	}
	fmt.Fprintln(stderr, "unum:", err)
	return ExitError
}

// unwrapStatus finds a gRPC status error inside a wrapped chain.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			return e
		}
	}
	return err
}

// parseFlags parses args with fs, allowing flags after positional arguments
// (`unum id delete ID -o json`). It returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, usageError{flagUsage(fs)}
			}
			return nil, usagef("%v\n%s", err, flagUsage(fs))
		}
		rest := fs.Args()
		// flag.Parse consumes a "--" terminator: everything after it is
		// positional, even what looks like a flag (unum exec -- sh -c ...).
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		args = rest
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func flagUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage of %s:\n", fs.Name())
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		fmt.Fprintf(&b, "  --%s\t%s", n, f.Usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func noArgs(pos []string) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}
