package faultcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// unumBin is the unum binary, built once for the package's tests.
var unumBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "unum-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	unumBin = filepath.Join(dir, "unum")
	build := exec.Command("go", "build", "-o", unumBin, "github.com/unumos/unum/cmd/unum")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build unum:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestSmoke(t *testing.T) {
	c := Start(t, Options{Binary: unumBin, Control: 3, Compute: 1, SVIDTTL: 20 * time.Second, NodeLease: 5 * time.Second, DownGrace: 6 * time.Second})
	r := c.Unum(t, c.Env(), "status")
	t.Log(r.Stdout, r.Stderr)
}
