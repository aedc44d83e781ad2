package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"

	"github.com/unumos/unum/identity/attest"
)

// maxSocketPath is the size of sun_path, including the terminating NUL.
const maxSocketPath = 108

// Serve serves the Workload API on a unix socket at socketPath until ctx is
// done, then stops gracefully (open streams end with Unavailable) and removes
// the socket. The socket is mode 0666: any local process may connect, and
// attestation, not file permissions, decides what it gets.
//
// The parent directory is created (0755) if missing and must be a real
// directory owned by this process's user and writable by no one else, so no
// other user can replace the socket with their own. A stale socket is
// replaced; anything else at socketPath, or a live agent on it, is an error.
func (a *Agent) Serve(ctx context.Context, socketPath string) error {
	var attestOpts []attest.Option
	if a.taskRoot != "" {
		if err := attest.CheckTaskCgroupRoot(a.taskRoot); err != nil {
			return fmt.Errorf("serve workload api: %w", err)
		}
		attestOpts = append(attestOpts, attest.WithTaskCgroups(a.taskRoot))
	}
	lis, err := listenUnix(socketPath)
	if err != nil {
		return fmt.Errorf("serve workload api: %w", err)
	}
	srv := grpc.NewServer(
		grpc.Creds(attest.Credentials(attestOpts...)),
		grpc.MaxRecvMsgSize(maxRequestMessageSize),
		// Workload API messages are a few KiB and most connections carry
		// one call: gRPC's default 32 KiB buffers per connection would be
		// most of the garbage the agent makes per fetch.
		grpc.ReadBufferSize(connBufferSize),
		grpc.WriteBufferSize(connBufferSize),
		grpc.SharedWriteBuffer(true),
	)
	workload.RegisterSpiffeWorkloadAPIServer(srv, &workloadServer{a: a, stopping: ctx.Done()})

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	a.log.Info("serving workload api", "socket", socketPath)

	select {
	case err := <-served:
		// Serve only returns early on a listener failure.
		_ = os.Remove(socketPath)
		return fmt.Errorf("serve workload api on %s: %w", socketPath, err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(shutdownGracePeriod):
		a.log.Warn("workload api did not stop gracefully in time; closing connections", "socket", socketPath)
		srv.Stop()
		<-stopped
	}
	<-served
	// The listener unlinks the socket when it closes; this catches the rest.
	if err := os.Remove(socketPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("could not remove workload api socket", "socket", socketPath, "error", err)
	}
	return nil
}

func listenUnix(path string) (*net.UnixListener, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return nil, fmt.Errorf("socket path %q must be absolute and clean", path)
	}
	if len(path) >= maxSocketPath {
		return nil, fmt.Errorf("socket path %q is %d bytes, the limit is %d", path, len(path), maxSocketPath-1)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	lis.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o666); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return lis, nil
}

// checkSocketDir refuses a parent directory that someone other than us could
// modify: they could swap our socket for theirs and impersonate the agent.
func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory (symlinks are refused)", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("socket directory %s: no ownership information", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s is owned by uid %d, not by this process (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("socket directory %s is writable by group or others (mode %s)", dir, fi.Mode().Perm())
	}
	return nil
}

// removeStaleSocket removes a socket left by an agent that died, and refuses
// to remove anything else, including a socket some process still serves.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket path: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket path %s exists and is not a socket (%s): refusing to replace it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s is in use by another process", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
