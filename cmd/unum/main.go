// Command unum is both the daemon (`unum node`, `unum dev`) and the CLI of a
// unum cluster. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/unumos/unum/internal/cli"
	"github.com/unumos/unum/scheduler/executor/reaper"
	"github.com/unumos/unum/scheduler/executor/shim"
)

func main() {
	// The executor re-executes this binary as the task shim: it must become
	// the task before anything else runs (no signal handlers, no flags).
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		shim.Main()
	}
	if len(os.Args) > 1 && os.Args[1] == reaper.Arg {
		reaper.Main()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
