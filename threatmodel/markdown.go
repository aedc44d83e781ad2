package threatmodel

import (
	"strings"
)

// Markdown renders threats as a GitHub-flavoured Markdown table, in the order
// given. Cell text is escaped so a '|' or a line break in a field cannot
// break the table.
func Markdown(threats []Threat) string {
	var b strings.Builder
	b.WriteString("| ID | Threat | STRIDE | Asset | Boundary | Attacker | Mitigation | Status | Tests |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range threats {
		status := string(t.Status)
		if t.Reason != "" {
			status += ": " + t.Reason
		}
		tests := make([]string, len(t.Tests))
		for i, ref := range t.Tests {
			tests[i] = "`" + escapeCell(strings.ReplaceAll(ref, "`", "")) + "`"
		}
		cells := []string{
			t.ID, t.Title, t.STRIDE, t.Asset, t.Boundary, t.Attacker, t.Mitigation, status,
		}
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + escapeCell(c) + " |")
		}
		b.WriteString(" " + strings.Join(tests, "<br>") + " |\n")
	}
	return b.String()
}

func escapeCell(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", "<br>")
}
