package executor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// streams are the captured output streams, in replay order.
var streams = [2]string{"stdout", "stderr"}

// maxLine bounds one emitted line; longer lines are split.
const maxLine = 64 << 10

// copyLines copies r to w a line at a time, so a log file is rotated only
// between lines. Write errors (a full disk) drop output but never stop the
// reading: a task must not block on a full pipe.
func copyLines(r io.Reader, w io.Writer) {
	if w == nil {
		w = io.Discard
	}
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			_, _ = w.Write(line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// logSink is one stream's log file, Dir/<id>/logs/<stream>.log, rotated to
// <stream>.log.1 (newest) ... <stream>.log.<keep> (oldest) at max bytes.
type logSink struct {
	dir, name string
	max       int64
	keep      int

	mu     sync.Mutex
	f      *os.File
	size   int64
	notify chan struct{} // closed and replaced on every write
}

func openSink(dir, name string, max int64, keep int) (*logSink, error) {
	s := &logSink{dir: dir, name: name, max: max, keep: keep, notify: make(chan struct{})}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *logSink) path() string { return filepath.Join(s.dir, s.name+".log") }

func (s *logSink) open() error {
	// O_NOFOLLOW: the logs folder is root's, but never write through a link.
	f, err := os.OpenFile(s.path(), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	s.f, s.size = f, st.Size()
	return nil
}

// Write appends p, rotating first when p would take the file past max.
func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return 0, os.ErrClosed
	}
	if s.size > 0 && s.size+int64(len(p)) > s.max {
		if err := s.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	close(s.notify)
	s.notify = make(chan struct{})
	return n, err
}

func (s *logSink) rotate() error {
	s.f.Close()
	s.f = nil
	if s.keep <= 0 {
		if err := os.Remove(s.path()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log: %w", err)
		}
		return s.open()
	}
	_ = os.Remove(s.path() + "." + strconv.Itoa(s.keep))
	for i := s.keep - 1; i >= 1; i-- {
		from := s.path() + "." + strconv.Itoa(i)
		if err := os.Rename(from, s.path()+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	if err := os.Rename(s.path(), s.path()+".1"); err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	return s.open()
}

func (s *logSink) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify
}

func (s *logSink) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	close(s.notify)
	s.notify = make(chan struct{})
}

// Logs replays a task's stdout and then its stderr (rotated files oldest
// first), one line per emit call without its newline (line is valid only
// during the call). With follow it then emits new lines of both streams as
// they are written, until ctx ends (returning ctx's error) or the task has
// finished and everything is read. Logs of a task no longer assigned remain
// readable while it is in the executor's history.
func (e *Executor) Logs(ctx context.Context, id string, follow bool, emit func(stream string, line []byte) error) error {
	t := e.lookup(id)
	if t == nil {
		return fmt.Errorf("executor: %w: %s", ErrUnknownTask, id)
	}
	if t.once {
		return fmt.Errorf("executor: task %s streams its output to its caller and keeps no logs", id)
	}
	dir := filepath.Join(e.cfg.Dir, id, "logs")
	var tails [2]*tail
	defer func() {
		for _, tl := range tails {
			if tl != nil {
				tl.close()
			}
		}
	}()
	for i, name := range streams {
		tails[i] = &tail{stream: name, path: filepath.Join(dir, name+".log")}
		for n := e.cfg.LogFiles; n >= 1; n-- {
			if err := replayFile(fmt.Sprintf("%s.%d", tails[i].path, n), name, emit); err != nil {
				return err
			}
		}
		if err := tails[i].poll(emit, false); err != nil {
			return err
		}
	}
	if !follow {
		for _, tl := range tails {
			if err := tl.flush(emit); err != nil {
				return err
			}
		}
		return nil
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		var notify [2]<-chan struct{}
		for i, s := range t.logs {
			if s != nil {
				notify[i] = s.changed()
			}
		}
		finished := false
		select {
		case <-t.done:
			finished = true
		default:
		}
		for _, tl := range tails {
			if err := tl.poll(emit, finished); err != nil {
				return err
			}
		}
		if finished {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.done:
		case <-notify[0]:
		case <-notify[1]:
		case <-tick.C:
		}
	}
}

func replayFile(p, stream string, emit func(string, []byte) error) error {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("executor: read log: %w", err)
	}
	defer f.Close()
	tl := &tail{stream: stream, f: f}
	if err := tl.read(emit); err != nil {
		return err
	}
	return tl.flush(emit)
}

// tail follows one stream's current log file across rotations: it keeps the
// file it opened, reads it to its end when the path has moved on to a new
// file, and then continues with the new one.
type tail struct {
	stream  string
	path    string
	f       *os.File
	pending []byte
}

func (tl *tail) poll(emit func(string, []byte) error, final bool) error {
	for {
		if tl.f == nil {
			f, err := os.Open(tl.path)
			if errors.Is(err, os.ErrNotExist) {
				return nil // not created yet, or between rotation steps
			}
			if err != nil {
				return fmt.Errorf("executor: read log: %w", err)
			}
			tl.f = f
		}
		if err := tl.read(emit); err != nil {
			return err
		}
		cur, err1 := tl.f.Stat()
		now, err2 := os.Stat(tl.path)
		if err1 == nil && err2 == nil && os.SameFile(cur, now) {
			break
		}
		if err2 != nil {
			break // mid-rotation: try again on the next poll
		}
		// Rotated: what we hold is complete; go on with the new file.
		if err := tl.flush(emit); err != nil {
			return err
		}
		tl.f.Close()
		tl.f = nil
	}
	if final {
		return tl.flush(emit)
	}
	return nil
}

func (tl *tail) read(emit func(string, []byte) error) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := tl.f.Read(buf)
		tl.pending = append(tl.pending, buf[:n]...)
		for {
			i := bytes.IndexByte(tl.pending, '\n')
			if i < 0 {
				if len(tl.pending) >= maxLine {
					i = maxLine
				} else {
					break
				}
				if err := emit(tl.stream, tl.pending[:i]); err != nil {
					return err
				}
				tl.pending = tl.pending[i:]
				continue
			}
			if err := emit(tl.stream, tl.pending[:i]); err != nil {
				return err
			}
			tl.pending = tl.pending[i+1:]
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("executor: read log: %w", err)
		}
	}
}

// flush emits a last line that has no newline.
func (tl *tail) flush(emit func(string, []byte) error) error {
	if len(tl.pending) == 0 {
		return nil
	}
	line := tl.pending
	tl.pending = nil
	return emit(tl.stream, line)
}

func (tl *tail) close() {
	if tl.f != nil {
		tl.f.Close()
	}
}
