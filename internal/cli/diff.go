package cli

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// bundleDiff is a unified diff of two bundles, file by file.
func bundleDiff(nameA, nameB string, a, b map[string][]byte) string {
	names := map[string]bool{}
	for n := range a {
		names[n] = true
	}
	for n := range b {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var out strings.Builder
	for _, n := range sorted {
		da, inA := a[n]
		db, inB := b[n]
		if inA && inB && bytes.Equal(da, db) {
			continue
		}
		from, to := nameA+"/"+n, nameB+"/"+n
		if !inA {
			from = "/dev/null"
		}
		if !inB {
			to = "/dev/null"
		}
		fmt.Fprintf(&out, "--- %s\n+++ %s\n", from, to)
		out.WriteString(unifiedLines(splitLines(string(da)), splitLines(string(db)), 3))
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.SplitAfter(strings.TrimSuffix(s, "\n"), "\n")
}

// edit is one line of a diff: ' ' kept, '-' removed, '+' added.
type edit struct {
	op   byte
	line string
}

// lineEdits is the shortest edit script by longest common subsequence;
// policy files are small (a bundle is at most 1 MiB), and past a size
// where the table would be large it falls back to remove-all, add-all.
func lineEdits(a, b []string) []edit {
	if len(a)*len(b) > 4_000_000 {
		var es []edit
		for _, l := range a {
			es = append(es, edit{'-', l})
		}
		for _, l := range b {
			es = append(es, edit{'+', l})
		}
		return es
	}
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int32, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var es []edit
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			es = append(es, edit{' ', a[i]})
			i++
			j++
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			es = append(es, edit{'+', b[j]})
			j++
		default:
			es = append(es, edit{'-', a[i]})
			i++
		}
	}
	return es
}

// unifiedLines renders the edits of a -> b as hunks with ctx lines of
// context.
func unifiedLines(a, b []string, ctx int) string {
	es := lineEdits(a, b)
	var out strings.Builder
	for start := 0; start < len(es); {
		// Find the next change.
		for start < len(es) && es[start].op == ' ' {
			start++
		}
		if start == len(es) {
			break
		}
		lo := max(start-ctx, 0)
		end := start
		for end < len(es) {
			if es[end].op != ' ' {
				end++
				continue
			}
			run := end
			for run < len(es) && es[run].op == ' ' {
				run++
			}
			if run == len(es) || run-end > 2*ctx {
				break
			}
			end = run
		}
		hi := min(end+ctx, len(es))
		aLine, bLine := 1, 1
		for _, e := range es[:lo] {
			if e.op != '+' {
				aLine++
			}
			if e.op != '-' {
				bLine++
			}
		}
		var aN, bN int
		for _, e := range es[lo:hi] {
			if e.op != '+' {
				aN++
			}
			if e.op != '-' {
				bN++
			}
		}
		fmt.Fprintf(&out, "@@ -%d,%d +%d,%d @@\n", aLine, aN, bLine, bN)
		for _, e := range es[lo:hi] {
			out.WriteByte(e.op)
			out.WriteString(e.line)
			if !strings.HasSuffix(e.line, "\n") {
				out.WriteString("\n")
			}
		}
		start = hi
	}
	return out.String()
}
