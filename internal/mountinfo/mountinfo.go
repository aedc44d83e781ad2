// Package mountinfo reads the fields of /proc/PID/mountinfo the way the
// kernel writes them. Imported by scheduler/cgroup (finding the cgroup
// hierarchies) and internal/bench (naming the file system a bench writes
// to).
package mountinfo

import (
	"strconv"
	"strings"
)

// Unescape undoes the kernel's \ooo escaping of spaces, tabs, newlines and
// backslashes in mountinfo fields; anything else is left as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
