package output

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/stretchr/testify/require"
)

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in      string
		want    Format
		wantErr bool
	}{
		{"table", Table, false},
		{"json", JSON, false},
		{"yaml", YAML, false},
		{"", "", true},
		{"JSON", "", true},
		{"yml", "", true},
		{"wide", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFormat(tt.in)
			if tt.wantErr {
				require.ErrorContains(t, err, fmt.Sprintf("unknown output format %q (want table, json or yaml)", tt.in))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

type node struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
	Ready bool     `json:"ready"`
	Note  string   `json:"note,omitempty"`
}

func nodeTable(nodes []node) func(*tabwriter.Writer) error {
	return func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "NAME\tROLES\tREADY")
		for _, n := range nodes {
			fmt.Fprintf(tw, "%s\t%s\t%t\n", n.Name, strings.Join(n.Roles, ","), n.Ready)
		}
		return nil
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWrite(t *testing.T) {
	nodes := []node{
		{Name: "n1", Roles: []string{"compute", "control"}, Ready: true, Note: "<a&b>"},
		{Name: "node-two", Roles: []string{"compute"}},
	}
	tests := []struct {
		name    string
		format  Format
		v       any
		table   func(*tabwriter.Writer) error
		want    string
		wantErr string
	}{
		{
			name:   "json keeps struct order, indents, does not escape html",
			format: JSON,
			v:      nodes,
			want: `[
  {
    "name": "n1",
    "roles": [
      "compute",
      "control"
    ],
    "ready": true,
    "note": "<a&b>"
  },
  {
    "name": "node-two",
    "roles": [
      "compute"
    ],
    "ready": false
  }
]
`,
		},
		{
			name:   "yaml uses json keys",
			format: YAML,
			v:      nodes[1],
			want:   "name: node-two\nready: false\nroles:\n- compute\n",
		},
		{
			name:   "table aligns columns",
			format: Table,
			v:      nodes,
			table:  nodeTable(nodes),
			want:   "NAME      ROLES            READY\nn1        compute,control  true\nnode-two  compute          false\n",
		},
		{name: "table without a table form", format: Table, v: nodes, wantErr: "has no table form"},
		{
			name:    "table callback error",
			format:  Table,
			table:   func(*tabwriter.Writer) error { return errors.New("boom") },
			wantErr: "output: table: boom",
		},
		{name: "json cannot encode", format: JSON, v: func() {}, wantErr: "output: encoding json"},
		{name: "yaml cannot encode", format: YAML, v: make(chan int), wantErr: "output: encoding yaml"},
		{name: "unknown format", format: "xml", v: nodes, wantErr: `unknown format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tt.format, tt.v, tt.table)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				if !errors.Is(err, ErrNoTable) {
					require.Empty(t, buf.String(), "nothing may be printed on an encoding error")
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, buf.String())
		})
	}

	t.Run("write errors are returned", func(t *testing.T) {
		for _, f := range []Format{JSON, YAML, Table} {
			err := Write(failingWriter{}, f, nodes, nodeTable(nodes))
			require.ErrorContains(t, err, "disk full", "format %s", f)
		}
	})
}
