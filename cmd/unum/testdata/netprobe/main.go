// netprobe is a task for the kernel enforcement tests (built by
// cmd/unum's TestMain; testdata, so not part of unum):
//
//	netprobe listen PORT           accept TCP connections on PORT forever
//	                               (PORT may name an environment variable)
//	netprobe probe FILE TARGET...  every 200 ms, connect to each TARGET
//	                               (HOST:PORT) and append one line per
//	                               attempt to FILE: UNIXNANOS TARGET ok|ERRNO
//	netprobe connect SOCKET [PROG ARG...]
//	                               connect the inherited fd 3 (a unix
//	                               stream socket the parent keeps) to
//	                               SOCKET, write "c" to stdout, wait for a
//	                               byte on stdin, then exec PROG or exit:
//	                               the attack suite's Workload API caller
//	                               whose connection outlives it (pid reuse)
//	                               or serves another binary (exec after
//	                               connect)
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: netprobe listen PORT | netprobe probe FILE TARGET...")
		os.Exit(2)
	}
	// The node reading stdout may die (the tests kill it): writes then
	// fail instead of killing the probe.
	signal.Ignore(syscall.SIGPIPE)
	switch os.Args[1] {
	case "listen":
		port := os.Args[2]
		if v := os.Getenv(port); v != "" {
			port = v
		}
		l, err := net.Listen("tcp", ":"+port)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := l.Accept()
			if err != nil {
				continue
			}
			c.Close()
		}
	case "connect":
		sa := &syscall.SockaddrUnix{Name: os.Args[2]}
		if err := syscall.Connect(3, sa); err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		os.Stdout.WriteString("c")
		var b [1]byte
		os.Stdin.Read(b[:])
		if len(os.Args) > 3 {
			err := syscall.Exec(os.Args[3], os.Args[3:], os.Environ())
			fmt.Fprintln(os.Stderr, "exec:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "probe":
		f, err := os.OpenFile(os.Args[2], os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			for _, target := range os.Args[3:] {
				res := "ok"
				c, err := net.DialTimeout("tcp", target, time.Second)
				if err == nil {
					c.Close()
				} else {
					var errno syscall.Errno
					if errors.As(err, &errno) {
						res = errno.Error()
					} else {
						res = "error"
					}
				}
				line := fmt.Sprintf("%d %s %s\n", time.Now().UnixNano(), target, res)
				f.WriteString(line)
				os.Stdout.WriteString(line)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	os.Exit(2)
}
