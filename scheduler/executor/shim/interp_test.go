package shim

import (
	"bytes"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestShebang(t *testing.T) {
	for in, want := range map[string]string{
		"#!/bin/sh\necho":              "/bin/sh",
		"#! /usr/bin/env python3 -u\n": "/usr/bin/env",
		"#!\t/bin/bash":                "/bin/bash",
		"#!rel/interp x":               "rel/interp",
		"#!/bin/sh\x00junk":            "/bin/sh",
		"#!\n/bin/sh":                  "",
		"#!   ":                        "",
		"echo hi":                      "",
		"":                             "",
	} {
		got, ok := shebang([]byte(in))
		require.Equal(t, want, got, "%q", in)
		require.Equal(t, want != "", ok, "%q", in)
	}
}

// The loader of real binaries on this machine, and of the test binary.
func TestElfInterpOfRealBinaries(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	for _, p := range []string{"/bin/sh", "/usr/bin/id", self} {
		f, err := os.Open(p)
		require.NoError(t, err)
		got, err := elfInterp(f)
		require.NoError(t, err, p)
		ef, err := elf.NewFile(f)
		require.NoError(t, err)
		require.Equal(t, stdInterp(ef), got, p)
		f.Close()
	}
	// A script is not ELF; its chain is the script, its "#!" interpreter,
	// then that interpreter's loader.
	d := t.TempDir()
	script := filepath.Join(d, "s")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755))
	f, err := os.Open(script)
	require.NoError(t, err)
	_, err = elfInterp(f)
	f.Close()
	require.ErrorIs(t, err, errNotELF)
	sh, err := os.Open("/bin/sh")
	require.NoError(t, err)
	loader, err := elfInterp(sh)
	sh.Close()
	require.NoError(t, err)
	want := []string{script, "/bin/sh"}
	if loader != "" {
		want = append(want, loader)
	}
	require.Equal(t, want, execChain(script))
	// A loop of scripts stops at the kernel's depth.
	a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
	require.NoError(t, os.WriteFile(a, []byte("#!"+b+"\n"), 0o755))
	require.NoError(t, os.WriteFile(b, []byte("#!"+a+"\n"), 0o755))
	require.Len(t, execChain(a), maxExecChain)
	// An unreadable or missing file ends the chain at itself.
	require.Equal(t, []string{filepath.Join(d, "missing")}, execChain(filepath.Join(d, "missing")))
}

// stdInterp is the oracle: debug/elf's first PT_INTERP, cut at its NUL.
func stdInterp(f *elf.File) string {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return "\x00error"
		}
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		return string(b)
	}
	return ""
}

// FuzzElfInterp: the parser never panics or reads unbounded, whatever the
// file claims, and where debug/elf reads the file and its PT_INTERP too,
// both agree.
func FuzzElfInterp(f *testing.F) {
	for _, p := range []string{"/bin/sh", "/usr/bin/id"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b[:min(len(b), 8192)])
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Add([]byte("#!/bin/sh\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := elfInterp(bytes.NewReader(b))
		ef, stdErr := elf.NewFile(bytes.NewReader(b))
		if stdErr != nil || err != nil {
			return
		}
		want := stdInterp(ef)
		if want == "\x00error" || len(want) > maxInterp {
			return
		}
		if got != want {
			t.Fatalf("elfInterp = %q, debug/elf = %q", got, want)
		}
	})
}
