package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Format is an output format chosen with -o.
type Format string

const (
	Table Format = "table"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// ParseFormat reads the value of -o.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Table, JSON, YAML:
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q (want %s, %s or %s)", s, Table, JSON, YAML)
}

// ErrNoTable is returned by Write when a table is asked for and the command
// has no table form.
var ErrNoTable = errors.New("output: this command has no table form (use -o json or -o yaml)")

// Write prints v in format f. For Table it calls table with a tabwriter on w
// and flushes it; v is then unused. Nothing is written to w when encoding v
// fails, so a half-printed document never reaches a pipe.
func Write(w io.Writer, f Format, v any, table func(tw *tabwriter.Writer) error) error {
	switch f {
	case JSON:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("output: encoding json: %w", err)
		}
		return write(w, buf.Bytes())
	case YAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("output: encoding yaml: %w", err)
		}
		return write(w, b)
	case Table:
		if table == nil {
			return ErrNoTable
		}
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		if err := table(tw); err != nil {
			return fmt.Errorf("output: table: %w", err)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("output: writing table: %w", err)
		}
		return nil
	}
	return fmt.Errorf("output: unknown format %q", f)
}

func write(w io.Writer, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("output: writing: %w", err)
	}
	return nil
}
