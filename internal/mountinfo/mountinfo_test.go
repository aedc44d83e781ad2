package mountinfo

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/srv/my\040data`: "/srv/my data",
		`a\134b`:          `a\b`,
		`tab\011x`:        "tab\tx",
		`trailing\04`:     `trailing\04`,
		`not\8octal`:      `not\8octal`,
		`plain`:           "plain",
		`trailing\040`:    "trailing ",
		`bad\999`:         `bad\999`,
	} {
		require.Equal(t, want, Unescape(in), in)
	}
}
