package jointoken

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const testFP = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// counter is a deterministic randomness source: byte i is i+offset.
func counter(offset byte) *bytes.Reader {
	b := make([]byte, idBytes+secretBytes)
	for i := range b {
		b[i] = byte(i) + offset
	}
	return bytes.NewReader(b)
}

func mustNew(t testing.TB, offset byte) Token {
	t.Helper()
	tok, err := New(KindNode, testFP, counter(offset))
	require.NoError(t, err)
	return tok
}

func TestNew(t *testing.T) {
	tok := mustNew(t, 0)
	require.Equal(t, KindNode, tok.Kind)
	require.Equal(t, "000102030405060708090a0b0c0d0e0f", tok.ID)
	require.Len(t, tok.Secret, secretBytes)
	require.Equal(t, byte(16), tok.Secret[0])
	require.Equal(t, testFP, tok.CAFingerprint)
	require.Equal(t,
		"unum1.node.000102030405060708090a0b0c0d0e0f.EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8."+testFP[len("sha256:"):],
		tok.String())

	tests := []struct {
		name    string
		kind    Kind
		fp      string
		rand    *bytes.Reader
		wantErr string
	}{
		{"unknown kind", "admin", testFP, counter(0), "unknown kind"},
		{"kind uppercase", "USER", testFP, counter(0), "unknown kind"},
		{"empty kind", "", testFP, counter(0), "unknown kind"},
		{"fingerprint without prefix", KindNode, testFP[len("sha256:"):], counter(0), "bad CA fingerprint"},
		{"fingerprint uppercase", KindNode, strings.ToUpper(testFP), counter(0), "bad CA fingerprint"},
		{"fingerprint short", KindNode, testFP[:len(testFP)-1], counter(0), "bad CA fingerprint"},
		{"fingerprint other hash", KindNode, "sha1:" + testFP[len("sha256:"):], counter(0), "bad CA fingerprint"},
		{"short randomness", KindNode, testFP, bytes.NewReader(make([]byte, 47)), "reading randomness"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.kind, tt.fp, tt.rand)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// TestUserKind: user tokens have the same format with kind "user", and a
// token of one kind never checks against a record of the other, whichever
// way round (a node token at Login, a user token at Join).
func TestUserKind(t *testing.T) {
	user, err := New(KindUser, testFP, counter(0))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(user.String(), "unum1.user.000102030405060708090a0b0c0d0e0f."), user.String())
	back, err := Parse(user.String())
	require.NoError(t, err)
	require.Equal(t, user, back)

	node := mustNew(t, 0) // same id and secret, other kind
	require.Equal(t, node.ID, user.ID)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	userRec := user.Record("alice", nil, "spiffe://unum.local/user/admin", now.Add(time.Minute))
	nodeRec := node.Record("n1", []string{"compute"}, "spiffe://unum.local/user/admin", now.Add(time.Minute))
	require.NoError(t, userRec.Check(user, now))
	require.NoError(t, nodeRec.Check(node, now))
	require.ErrorIs(t, userRec.Check(node, now), ErrMismatch)
	require.ErrorIs(t, nodeRec.Check(user, now), ErrMismatch)

	// Changing the kind field of a printed token is a different token.
	swapped := strings.Replace(user.String(), ".user.", ".node.", 1)
	tok, err := Parse(swapped)
	require.NoError(t, err)
	require.ErrorIs(t, userRec.Check(tok, now), ErrMismatch)
}

func TestParse(t *testing.T) {
	tok := mustNew(t, 7)
	valid := tok.String()
	fields := strings.Split(valid, ".")
	with := func(i int, v string) string {
		f := append([]string(nil), fields...)
		f[i] = v
		return strings.Join(f, ".")
	}
	secret := fields[3]

	t.Run("round trip", func(t *testing.T) {
		for _, s := range []string{valid, " " + valid + "\n", "\t" + valid + "\r\n"} {
			got, err := Parse(s)
			require.NoError(t, err)
			require.Equal(t, tok, got)
		}
	})

	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"empty", "", "empty"},
		{"blank", " \n\t", "empty"},
		{"too long", strings.Repeat("a", maxTokenLen+1), "too long"},
		{"four fields", strings.Join(fields[:4], "."), "wrong number of fields: got 4"},
		{"six fields", valid + ".x", "wrong number of fields: got 6"},
		{"inner whitespace", strings.Replace(valid, ".", " .", 1), "unknown version"},
		{"version 2", with(0, "unum2"), "unknown version"},
		{"version uppercase", with(0, "UNUM1"), "unknown version"},
		{"unknown kind", with(1, "admin"), "unknown kind"},
		{"kind uppercase", with(1, "NODE"), "unknown kind"},
		{"kind user uppercase", with(1, "USER"), "unknown kind"},
		{"kind users", with(1, "users"), "unknown kind"},
		{"kind empty", with(1, ""), "unknown kind"},
		{"id short", with(2, fields[2][:31]), "bad id"},
		{"id long", with(2, fields[2]+"0"), "bad id"},
		{"id uppercase", with(2, strings.ToUpper(fields[2])), "bad id"},
		{"id not hex", with(2, "g"+fields[2][1:]), "bad id"},
		{"secret short", with(3, secret[:42]), "bad secret: wrong length"},
		{"secret long", with(3, secret+"A"), "bad secret: wrong length"},
		{"secret padded", with(3, secret+"="), "bad secret: wrong length"},
		{"secret std alphabet", with(3, "+"+secret[1:]), "bad secret: not canonical"},
		// The last character carries 2 spare bits; 'L' sets one of them.
		{"secret non-canonical", with(3, secret[:42]+"L"), "bad secret: not canonical"},
		{"fingerprint with prefix", with(4, testFP), "bad CA fingerprint"},
		{"fingerprint uppercase", with(4, strings.ToUpper(fields[4])), "bad CA fingerprint"},
		{"fingerprint short", with(4, fields[4][:63]), "bad CA fingerprint"},
		{"empty fields", "....", "unknown version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			require.ErrorIs(t, err, ErrMalformed)
			require.ErrorContains(t, err, tt.wantErr)
			require.NotContains(t, err.Error(), secret[:8], "error leaks the secret")
		})
	}
}

func TestLogValueOmitsSecret(t *testing.T) {
	tok := mustNew(t, 0)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("minted", "token", tok)
	require.Contains(t, buf.String(), tok.ID)
	require.NotContains(t, buf.String(), strings.Split(tok.String(), ".")[3])
}

func TestRecordCheck(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tok := mustNew(t, 0)
	other := mustNew(t, 100)
	rec := tok.Record("n1", []string{"compute"}, "spiffe://unum.local/user/admin", now.Add(15*time.Minute))

	require.Equal(t, tok.ID, rec.ID)
	require.Equal(t, KindNode, rec.Kind)
	require.Regexp(t, "^[0-9a-f]{64}$", rec.SecretHash)
	require.False(t, rec.Used)

	sameIDWrongSecret := tok
	sameIDWrongSecret.Secret = other.Secret
	shortSecret := tok
	shortSecret.Secret = tok.Secret[:31]
	otherKind := tok
	otherKind.Kind = "user"

	used := rec
	used.Used, used.UsedAt = true, now.Add(-time.Minute)
	noHash := rec
	noHash.SecretHash = ""
	upperHash := rec
	upperHash.SecretHash = strings.ToUpper(rec.SecretHash)
	noExpiry := rec
	noExpiry.ExpiresAt = time.Time{}

	tests := []struct {
		name    string
		rec     Record
		tok     Token
		now     time.Time
		wantErr error
	}{
		{"valid", rec, tok, now, nil},
		{"valid just before expiry", rec, tok, rec.ExpiresAt.Add(-time.Nanosecond), nil},
		{"expired at the instant", rec, tok, rec.ExpiresAt, ErrExpired},
		{"expired", rec, tok, now.Add(time.Hour), ErrExpired},
		{"used", used, tok, now, ErrUsed},
		{"used and expired says used", used, tok, now.Add(time.Hour), ErrUsed},
		{"other token", rec, other, now, ErrMismatch},
		{"right id wrong secret", rec, sameIDWrongSecret, now, ErrMismatch},
		{"truncated secret", rec, shortSecret, now, ErrMismatch},
		{"kind mismatch", rec, otherKind, now, ErrMismatch},
		// Only the secret's holder learns a token's state.
		{"wrong secret on used token", used, sameIDWrongSecret, now, ErrMismatch},
		{"wrong secret on expired token", rec, sameIDWrongSecret, now.Add(time.Hour), ErrMismatch},
		{"record without hash", noHash, tok, now, ErrMismatch},
		{"record with non-canonical hash", upperHash, tok, now, ErrMismatch},
		{"record without expiry", noExpiry, tok, now, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rec.Check(tt.tok, tt.now)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			for _, sentinel := range []error{ErrExpired, ErrUsed, ErrMismatch} {
				if sentinel != tt.wantErr {
					require.False(t, errors.Is(err, sentinel), "also matches %v", sentinel)
				}
			}
			require.NotContains(t, err.Error(), strings.Split(tt.tok.String(), ".")[3])
		})
	}
}

func TestRecordJSON(t *testing.T) {
	tok := mustNew(t, 0)
	roles := []string{"compute", "control"}
	rec := tok.Record("n1", roles, "admin", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	roles[0] = "mutated"
	require.Equal(t, []string{"compute", "control"}, rec.Roles, "Record must copy roles")

	b, err := json.Marshal(rec)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"000102030405060708090a0b0c0d0e0f","kind":"node",
		"secret_hash":"`+rec.SecretHash+`","name":"n1","roles":["compute","control"],
		"created_by":"admin","expires_at":"2026-01-02T03:04:05Z","used":false}`, string(b))
	require.NotContains(t, string(b), strings.Split(tok.String(), ".")[3])

	var back Record
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, rec, back)
}

func TestParseRoles(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"compute", []string{"compute"}, ""},
		{"control", []string{"control"}, ""},
		{"compute,control", []string{"compute", "control"}, ""},
		{"control,compute", []string{"compute", "control"}, ""},
		{"control, compute ,control", []string{"compute", "control"}, ""},
		{"", nil, "empty"},
		{"  ", nil, "empty"},
		{"compute,", nil, "empty role"},
		{",compute", nil, "empty role"},
		{"compute,,control", nil, "empty role"},
		{"storage", nil, `unknown role "storage"`},
		{"Compute", nil, `unknown role "Compute"`},
		{"compute;control", nil, "unknown role"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRoles(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	t.Run("normalize copies", func(t *testing.T) {
		in := []string{"control", "compute"}
		got, err := NormalizeRoles(in)
		require.NoError(t, err)
		require.Equal(t, []string{"compute", "control"}, got)
		require.Equal(t, []string{"control", "compute"}, in)
	})
	t.Run("normalize empty", func(t *testing.T) {
		_, err := NormalizeRoles(nil)
		require.ErrorContains(t, err, "empty")
	})
}

func TestValidateNodeName(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"a", ""},
		{"0", ""},
		{"node-1", ""},
		{"n--1", ""},
		{strings.Repeat("a", 63), ""},
		{"", "empty"},
		{strings.Repeat("a", 64), "64 characters"},
		{"-node", "must start and end"},
		{"node-", "must start and end"},
		{"-", "must start and end"},
		{"Node", "position 1"},
		{"node.example", "position 5"},
		{"node_1", "position 5"},
		{"node/1", "position 5"},
		{"nöde", "position 2"},
		{"node 1", "position 5"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := ValidateNodeName(tt.in)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func FuzzParse(f *testing.F) {
	valid := mustNew(f, 0).String()
	f.Add(valid, []byte{})
	f.Add(" "+valid+"\n", []byte{1, 2, 3})
	f.Add(strings.Replace(valid, "unum1", "unum2", 1), []byte{0xff})
	f.Add(valid[:len(valid)-1], make([]byte, 48))
	f.Add("unum1.node....", []byte("x"))
	f.Add(strings.Replace(valid, ".node.", ".user.", 1), []byte{2})
	f.Add("unum1.user....", []byte("y"))
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, s string, entropy []byte) {
		// Any token New makes, of either kind, survives String and Parse
		// unchanged.
		seed := make([]byte, idBytes+secretBytes)
		copy(seed, entropy)
		for _, kind := range []Kind{KindNode, KindUser} {
			made, err := New(kind, testFP, bytes.NewReader(seed))
			require.NoError(t, err)
			back, err := Parse(made.String())
			require.NoError(t, err)
			require.Equal(t, made, back)
		}

		tok, err := Parse(s)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			if f := strings.Split(strings.TrimSpace(s), "."); len(f) == 5 && len(f[3]) >= 4 {
				require.NotContains(t, err.Error(), f[3], "error echoes the secret field")
			}
			return
		}
		// Accepted input is canonical: exactly one encoding per token.
		require.True(t, tok.Kind == KindNode || tok.Kind == KindUser, "accepted kind %q", tok.Kind)
		require.Len(t, tok.Secret, secretBytes)
		require.Equal(t, strings.TrimSpace(s), tok.String())
		require.NoError(t, validateFingerprint(tok.CAFingerprint))
		require.Len(t, tok.ID, 2*idBytes)
	})
}

// nodeNameReference is the specification, as a regular expression.
var nodeNameReference = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func FuzzValidateNodeName(f *testing.F) {
	for _, s := range []string{"a", "node-1", "-a", "a-", "A", "", strings.Repeat("a", 63), strings.Repeat("a", 64), "a\x00", "ä", "a.b", "a/b", "..", "admin"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := nodeNameReference.MatchString(s)
		err := ValidateNodeName(s)
		require.Equal(t, want, err == nil, "name %q: err=%v", s, err)
		// User names follow the same rule (they are path segments too).
		uerr := ValidateUserName(s)
		require.Equal(t, want, uerr == nil, "user name %q: err=%v", s, uerr)
		if uerr != nil {
			require.True(t, strings.HasPrefix(uerr.Error(), "user name"), uerr.Error())
		}
	})
}

func TestValidateUserName(t *testing.T) {
	require.NoError(t, ValidateUserName("alice"))
	require.NoError(t, ValidateUserName("ops-1"))
	for in, want := range map[string]string{
		"":           "user name: empty",
		"Alice":      `user name "Alice": position 1`,
		"a/b":        `user name "a/b": position 2`,
		"bob.smith":  `user name "bob.smith": position 4`,
		"-x":         "must start and end",
		"x" + "\x00": "position 2",
	} {
		require.ErrorContains(t, ValidateUserName(in), want, "input %q", in)
	}
}
