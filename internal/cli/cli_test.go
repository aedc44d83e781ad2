package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseFlagsAfterPositionals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		out  string
		node string
	}{
		{[]string{"abc", "-o", "json"}, []string{"abc"}, "json", ""},
		{[]string{"-o", "yaml", "abc"}, []string{"abc"}, "yaml", ""},
		{[]string{"abc", "--node", "n1", "def", "-o=json"}, []string{"abc", "def"}, "json", "n1"},
		{[]string{"--", "-o"}, []string{"-o"}, "table", ""},
		{nil, nil, "table", ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		out := fs.String("o", "table", "")
		node := fs.String("node", "", "")
		pos, err := parseFlags(fs, tc.args)
		require.NoError(t, err, tc.args)
		require.Equal(t, tc.pos, pos, tc.args)
		require.Equal(t, tc.out, *out)
		require.Equal(t, tc.node, *node)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	_, err := parseFlags(fs, []string{"--nope"})
	var ue usageError
	require.ErrorAs(t, err, &ue)
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		msg  string
	}{
		{nil, ExitOK, ""},
		{usagef("bad flag"), ExitUsage, "bad flag"},
		{status.Error(codes.PermissionDenied, "denied by policy: x"), ExitDenied, "denied: denied by policy: x"},
		{fmt.Errorf("wrapped: %w", status.Error(codes.PermissionDenied, "nope")), ExitDenied, "nope"},
		{status.Error(codes.Unauthenticated, "expired"), ExitError, "not authenticated"},
		{status.Error(codes.Unavailable, "no quorum"), ExitError, "unavailable"},
		{errors.New("plain"), ExitError, "plain"},
	} {
		var b bytes.Buffer
		require.Equal(t, tc.code, exitCode(&b, tc.err), "%v", tc.err)
		require.Contains(t, b.String(), tc.msg)
	}
}

func TestDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, ExitOK, Main(t.Context(), []string{"version"}, nil, &out, &errb))
	require.Contains(t, out.String(), "unum")
	require.Equal(t, ExitUsage, Main(t.Context(), []string{"id"}, nil, &out, &errb))
	require.Equal(t, ExitUsage, Main(t.Context(), []string{"id", "nope"}, nil, &out, &errb))
	require.Equal(t, ExitUsage, Main(t.Context(), []string{"node", "extra-arg", "--data-dir", "x"}, nil, &out, &errb))
	require.Equal(t, ExitOK, Main(t.Context(), []string{"--help"}, nil, &out, &errb))
}
