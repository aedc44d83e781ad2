package shim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
)

// The kernel reads these when it execs the command: the file itself, the
// interpreter a "#!" line names, and the ELF loader (PT_INTERP) of an ELF
// program or of that interpreter. Landlock must let each be read and
// executed; libraries are then opened by the loader from the read-only
// system folders.

// maxExecChain bounds how many interpreters are followed, as the kernel
// does (it allows 4 levels of "#!" and one loader).
const maxExecChain = 6

// execChain returns path and every file the kernel opens to exec it. A file
// it cannot read (an execute-only binary) ends the chain without an error:
// its loader is looked for no further, and the exec fails with EACCES if
// the loader lies outside the ruleset.
func execChain(path string) []string {
	out := []string{path}
	for len(out) < maxExecChain {
		next, ok := interpreterOf(out[len(out)-1])
		if !ok {
			break
		}
		// A relative interpreter stays relative: the kernel resolves it
		// from the cwd, the work folder, and so does the Landlock rule.
		out = append(out, next)
	}
	return out
}

// interpreterOf returns the interpreter ("#!") or loader (PT_INTERP) of
// the file at path.
func interpreterOf(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var head [256]byte // the kernel's BINPRM_BUF_SIZE
	n, _ := io.ReadFull(f, head[:])
	if p, ok := shebang(head[:n]); ok {
		return p, true
	}
	p, err := elfInterp(f)
	return p, err == nil && p != ""
}

// shebang returns the interpreter of a "#!" line: after "#!" and blanks,
// up to the next blank or the end of the line (the kernel passes the rest
// as one argument). The line is cut at 256 bytes, as the kernel reads it.
func shebang(b []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(b, []byte("#!"))
	if !ok {
		return "", false
	}
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		rest = rest[:i]
	}
	rest = bytes.TrimLeft(rest, " \t")
	if i := bytes.IndexAny(rest, " \t\x00"); i >= 0 {
		rest = rest[:i]
	}
	if len(rest) == 0 {
		return "", false
	}
	return string(rest), true
}

// ELF constants (elf(5)).
const (
	elfClass32 = 1
	elfClass64 = 2
	elfLSB     = 1
	elfMSB     = 2
	ptInterp   = 3
	// maxPhdrBytes bounds the program headers read: the kernel refuses more
	// than 64 KiB of them.
	maxPhdrBytes = 65536
	// maxInterp is PATH_MAX: the kernel refuses a longer PT_INTERP.
	maxInterp = 4096
)

var errNotELF = errors.New("not an ELF file")

// elfInterp returns the path in the first PT_INTERP program header, "" when
// there is none (a static binary). It reads only the ELF header, the
// program headers and the interpreter string, each bounded, whatever the
// file claims.
func elfInterp(r io.ReaderAt) (string, error) {
	var ident [16]byte
	if _, err := r.ReadAt(ident[:], 0); err != nil {
		return "", errNotELF
	}
	if !bytes.Equal(ident[:4], []byte("\x7fELF")) {
		return "", errNotELF
	}
	var bo binary.ByteOrder
	switch ident[5] {
	case elfLSB:
		bo = binary.LittleEndian
	case elfMSB:
		bo = binary.BigEndian
	default:
		return "", errors.New("elf: unknown byte order")
	}
	var phoff uint64
	var phentsize, phnum uint16
	var entSize uint16 // the size this class's program header must have
	switch ident[4] {
	case elfClass64:
		var h [64]byte
		if _, err := r.ReadAt(h[:], 0); err != nil {
			return "", errors.New("elf: short header")
		}
		phoff = bo.Uint64(h[32:])
		phentsize, phnum = bo.Uint16(h[54:]), bo.Uint16(h[56:])
		entSize = 56
	case elfClass32:
		var h [52]byte
		if _, err := r.ReadAt(h[:], 0); err != nil {
			return "", errors.New("elf: short header")
		}
		phoff = uint64(bo.Uint32(h[28:]))
		phentsize, phnum = bo.Uint16(h[42:]), bo.Uint16(h[44:])
		entSize = 32
	default:
		return "", errors.New("elf: unknown class")
	}
	if phnum == 0 {
		return "", nil
	}
	if phentsize != entSize {
		return "", errors.New("elf: bad program header size")
	}
	total := int(phentsize) * int(phnum)
	if total > maxPhdrBytes || phoff > 1<<62 {
		return "", errors.New("elf: program headers out of bounds")
	}
	ph := make([]byte, total)
	if _, err := r.ReadAt(ph, int64(phoff)); err != nil {
		return "", errors.New("elf: short program headers")
	}
	for i := range int(phnum) {
		e := ph[i*int(phentsize):]
		if bo.Uint32(e) != ptInterp {
			continue
		}
		var off, size uint64
		if ident[4] == elfClass64 {
			off, size = bo.Uint64(e[8:]), bo.Uint64(e[32:])
		} else {
			off, size = uint64(bo.Uint32(e[4:])), uint64(bo.Uint32(e[16:]))
		}
		if size < 2 || size > maxInterp || off > 1<<62 {
			return "", errors.New("elf: bad interpreter size")
		}
		b := make([]byte, size)
		if _, err := r.ReadAt(b, int64(off)); err != nil {
			return "", errors.New("elf: short interpreter")
		}
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		if len(b) == 0 {
			return "", errors.New("elf: empty interpreter")
		}
		return string(b), nil
	}
	return "", nil
}
