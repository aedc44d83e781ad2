package seal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// maxKeyFileSize bounds what a reader loads from a key file. Real key and KEK
// files are well under 4 KiB; a larger file is not one of ours.
const maxKeyFileSize = 64 << 10

// CheckKeyFilePerms returns an error when path is not a regular file, is a
// symlink, or has any permission bit for group or others set. Key readers in
// this package repeat the check on the open descriptor; this function is for
// callers that want to validate a path up front (for example at start-up).
func CheckKeyFilePerms(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	return checkKeyFileInfo(path, fi)
}

func checkKeyFileInfo(path string, fi os.FileInfo) error {
	mode := fi.Mode()
	switch {
	case mode&os.ModeSymlink != 0:
		return fmt.Errorf("key file %s is a symlink: refusing to follow it, point the configuration at the real file", path)
	case !mode.IsRegular():
		return fmt.Errorf("key file %s is not a regular file (mode %s)", path, mode)
	case mode.Perm()&0o077 != 0:
		return fmt.Errorf("key file %s is group- or world-readable (mode %#o): run chmod 600 %s", path, mode.Perm(), path)
	}
	return nil
}

// readKeyFile reads a key file after checking it with CheckKeyFilePerms. The
// check is repeated on the opened descriptor (opened with O_NOFOLLOW, and
// O_NONBLOCK so a FIFO planted at the path cannot hang us) and the descriptor
// must be the file that was checked: swapping the path between check and open
// is detected.
func readKeyFile(path string) ([]byte, error) {
	before, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if err := checkKeyFileInfo(path, before); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("key file %s is a symlink: refusing to follow it, point the configuration at the real file", path)
		}
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	defer f.Close()
	after, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if err := checkKeyFileInfo(path, after); err != nil {
		return nil, err
	}
	if !os.SameFile(before, after) {
		return nil, fmt.Errorf("key file %s was replaced while being opened", path)
	}
	if after.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("key file %s is %d bytes, larger than any key file (limit %d)", path, after.Size(), maxKeyFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("key file %s is larger than any key file (limit %d bytes)", path, maxKeyFileSize)
	}
	return data, nil
}

// WriteFileAtomic writes data to path so that readers see either the old
// content or the new, never a mix: it writes a temporary file in the same
// directory, sets perm exactly (independent of the umask), fsyncs it, renames
// it over path and fsyncs the directory. Missing parent directories are
// created with mode 0700. An existing symlink at path is replaced, not
// followed.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	tmp, err := writeTemp(dir, filepath.Base(path), data, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// createFileExclusive is WriteFileAtomic that fails when path already exists.
// The content is complete and synced before the name appears (link(2) of the
// temporary file refuses to replace an existing name), so neither a crash nor
// a concurrent creator can leave a half-written file at path.
func createFileExclusive(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("create %s: %w", path, os.ErrExist)
	}
	tmp, err := writeTemp(dir, filepath.Base(path), data, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// writeTemp writes data to a new temporary file in dir and returns its name.
// The file is created 0600 and only then widened to perm, so it is never
// readable by others while it is being written.
func writeTemp(dir, base string, data []byte, perm os.FileMode) (name string, err error) {
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return "", err
	}
	if err = f.Chmod(perm); err != nil {
		return "", err
	}
	if err = f.Sync(); err != nil {
		return "", err
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
