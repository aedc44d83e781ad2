package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

func runExec(e *env, args []string) error {
	fs := flag.NewFlagSet("unum exec", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	on := fs.String("on", "", "label selector of the nodes to run on: KEY=VALUE,KEY!=VALUE,KEY (every compute node when empty)")
	timeout := fs.Duration("max-time", time.Minute, "kill the command on every node after this long")
	c, err := cf.connect(e, fs, args, -1, "", func(pos []string) error {
		if len(pos) == 0 {
			return usagef("usage: unum exec [--on SELECTOR] [--max-time D] -- COMMAND [ARG...]")
		}
		if *timeout <= 0 || *timeout > time.Hour {
			return usagef("--max-time must be between 1s and 1h, got %s", *timeout)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	// The call lives as long as the command may run, not the usual
	// request timeout.
	ctx := e.ctx
	s, err := unumv1.NewSchedulerClient(c.conn).Exec(ctx, &unumv1.ExecRequest{
		Selector: *on, Command: c.args, TimeoutSeconds: int32(timeout.Seconds()),
	})
	if err != nil {
		return err
	}
	exits := map[string]string{}
	failed := 0
	for {
		ev, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		node := ev.GetNode()
		if len(ev.GetStdout()) > 0 {
			writePrefixed(e.stdout, node, ev.GetStdout())
		}
		if len(ev.GetStderr()) > 0 {
			writePrefixed(e.stderr, node, ev.GetStderr())
		}
		switch {
		case ev.GetError() != "":
			exits[node] = "error: " + ev.GetError()
			failed++
		case ev.GetExited():
			exits[node] = fmt.Sprintf("exit %d (credential %s)", ev.GetExitCode(), ev.GetCredentialId())
			if ev.GetExitCode() != 0 {
				failed++
			}
		}
	}
	names := make([]string, 0, len(exits))
	for n := range exits {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(e.stderr, "[%s] %s\n", n, exits[n])
	}
	if len(names) == 0 {
		return fmt.Errorf("no node matched %q", *on)
	}
	if failed > 0 {
		return fmt.Errorf("the command failed on %d of %d node(s)", failed, len(names))
	}
	return nil
}

// writePrefixed writes each line of b prefixed with [node].
func writePrefixed(w io.Writer, node string, b []byte) {
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		line := b[:i]
		if i < len(b) {
			i++
		}
		b = b[i:]
		fmt.Fprintf(w, "[%s] %s\n", node, line)
	}
}
