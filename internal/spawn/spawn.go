package spawn

import (
	"errors"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Spawner starts children from its locked OS thread. Its methods are safe
// for concurrent use.
type Spawner struct {
	reqs chan request
	quit chan struct{}
	wg   sync.WaitGroup
}

type request struct {
	cmd   *exec.Cmd
	reply chan error
}

// Proc is a started child.
type Proc struct {
	// Cmd is the started command; read Cmd.ProcessState only after Done.
	Cmd  *exec.Cmd
	done chan struct{}
}

// Done is closed once the child has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("spawn: spawner closed")

// New starts the spawner's thread.
func New() *Spawner {
	s := &Spawner{reqs: make(chan request), quit: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		runtime.LockOSThread()
		// Never unlocked: the thread dies with the goroutine, after every
		// child is gone.
		for {
			select {
			case r := <-s.reqs:
				r.reply <- r.cmd.Start()
			case <-s.quit:
				return
			}
		}
	}()
	return s
}

// Start starts cmd (its SysProcAttr is replaced) and reaps it when it
// exits.
func (s *Spawner) Start(cmd *exec.Cmd) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	reply := make(chan error)
	select {
	case s.reqs <- request{cmd: cmd, reply: reply}:
	case <-s.quit:
		return nil, ErrClosed
	}
	if err := <-reply; err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	// Owned by the Proc: Done closes when the child is reaped.
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Close stops the spawner's thread once every child is gone.
func (s *Spawner) Close() {
	close(s.quit)
	s.wg.Wait()
}
