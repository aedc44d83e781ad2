package jointoken

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Kind says what a token enrols.
type Kind string

// Kinds of tokens. A token of one kind is never accepted where the other is
// expected: the kind is part of the token and of its Record, and both are
// compared.
const (
	// KindNode tokens enrol a machine as spiffe://TD/node/NAME (Join).
	KindNode Kind = "node"
	// KindUser tokens enrol a person as spiffe://TD/user/NAME (Login).
	KindUser Kind = "user"
)

// Version is the first field of every token this package writes and accepts.
const Version = "unum1"

const (
	idBytes     = 16
	secretBytes = 32
	// fingerprintPrefix is how the CA package spells a fingerprint; the token
	// carries only the hex digits after it.
	fingerprintPrefix = "sha256:"
	fingerprintHexLen = 2 * sha256.Size
	// maxTokenLen bounds the work Parse does on hostile input; real tokens
	// are about 150 characters.
	maxTokenLen = 512
)

// secretEncoding is base64url without padding; Strict refuses non-zero
// trailing bits so every secret has exactly one encoding.
var secretEncoding = base64.RawURLEncoding.Strict()

var (
	// ErrMalformed wraps every error from Parse.
	ErrMalformed = errors.New("join token: malformed")
	// ErrMismatch is returned by Record.Check when the token is not the one
	// the record describes (id, kind or secret differ).
	ErrMismatch = errors.New("join token: does not match")
	// ErrUsed is returned by Record.Check for a token that was already
	// redeemed.
	ErrUsed = errors.New("join token: already used")
	// ErrExpired is returned by Record.Check after the record's expiry.
	ErrExpired = errors.New("join token: expired")
)

// Token is a parsed join token. Secret is a credential: never log it, never
// compare it with ==; String is the only place it is encoded.
type Token struct {
	Kind Kind
	// ID is 32 lowercase hex digits and names the token's Record.
	ID     string
	Secret []byte
	// CAFingerprint is "sha256:" followed by 64 lowercase hex digits.
	CAFingerprint string
}

// New makes a token of the given kind for the cluster whose root CA has
// caFingerprint ("sha256:<64 lowercase hex>"), reading 48 bytes from rand.
func New(kind Kind, caFingerprint string, rand io.Reader) (Token, error) {
	if !knownKind(kind) {
		return Token{}, fmt.Errorf("join token: unknown kind %q", kind)
	}
	if err := validateFingerprint(caFingerprint); err != nil {
		return Token{}, err
	}
	buf := make([]byte, idBytes+secretBytes)
	if _, err := io.ReadFull(rand, buf); err != nil {
		return Token{}, fmt.Errorf("join token: reading randomness: %w", err)
	}
	return Token{
		Kind:          kind,
		ID:            hex.EncodeToString(buf[:idBytes]),
		Secret:        buf[idBytes:],
		CAFingerprint: caFingerprint,
	}, nil
}

// String is the token as an admin copies it, secret included.
func (t Token) String() string {
	return strings.Join([]string{
		Version,
		string(t.Kind),
		t.ID,
		secretEncoding.EncodeToString(t.Secret),
		strings.TrimPrefix(t.CAFingerprint, fingerprintPrefix),
	}, ".")
}

// LogValue keeps the secret out of structured logs even when a Token is
// logged whole.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", string(t.Kind)),
		slog.String("id", t.ID),
		slog.String("ca_fingerprint", t.CAFingerprint),
	)
}

var _ slog.LogValuer = Token{}

// Parse reads a token as printed by String, ignoring surrounding whitespace.
// It is strict: one version, known kinds, exact lengths, lowercase hex and
// canonical base64. Errors wrap ErrMalformed and never quote the input.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, malformed("empty")
	}
	if len(s) > maxTokenLen {
		return Token{}, malformed("too long")
	}
	fields := strings.Split(s, ".")
	if len(fields) != 5 {
		return Token{}, malformed(fmt.Sprintf("wrong number of fields: got %d, want 5 (%s.KIND.ID.SECRET.CAFP)", len(fields), Version))
	}
	version, kind, id, secret, fp := fields[0], Kind(fields[1]), fields[2], fields[3], fields[4]
	if version != Version {
		return Token{}, malformed("unknown version (this binary reads " + Version + ")")
	}
	if !knownKind(kind) {
		return Token{}, malformed("unknown kind")
	}
	if len(id) != 2*idBytes || !isLowerHex(id) {
		return Token{}, malformed(fmt.Sprintf("bad id: want %d lowercase hex digits", 2*idBytes))
	}
	if len(secret) != secretEncoding.EncodedLen(secretBytes) {
		return Token{}, malformed("bad secret: wrong length")
	}
	raw, err := secretEncoding.DecodeString(secret)
	if err != nil || len(raw) != secretBytes {
		// err may quote the offending byte; drop it.
		return Token{}, malformed("bad secret: not canonical base64url")
	}
	if len(fp) != fingerprintHexLen || !isLowerHex(fp) {
		return Token{}, malformed(fmt.Sprintf("bad CA fingerprint: want %d lowercase hex digits", fingerprintHexLen))
	}
	return Token{Kind: kind, ID: id, Secret: raw, CAFingerprint: fingerprintPrefix + fp}, nil
}

func malformed(why string) error {
	return fmt.Errorf("%w: %s", ErrMalformed, why)
}

// Record is what the control plane stores for a token (in etcd, keyed by
// ID): the hash of the secret, never the secret, and what redeeming the
// token grants.
type Record struct {
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	// SecretHash is the lowercase hex SHA-256 of the secret.
	SecretHash string    `json:"secret_hash"`
	Name       string    `json:"name"`
	Roles      []string  `json:"roles"`
	CreatedBy  string    `json:"created_by"`
	ExpiresAt  time.Time `json:"expires_at"`
	Used       bool      `json:"used"`
	UsedAt     time.Time `json:"used_at,omitzero"`
}

// Record describes t for storage. The caller validates name and roles (with
// ValidateNodeName and ParseRoles for a node token, ValidateUserName for a
// user token, whose role lives in the user's own record) before storing it.
func (t Token) Record(name string, roles []string, createdBy string, expires time.Time) Record {
	return Record{
		ID:         t.ID,
		Kind:       t.Kind,
		SecretHash: hashSecret(t.Secret),
		Name:       name,
		Roles:      append([]string(nil), roles...),
		CreatedBy:  createdBy,
		ExpiresAt:  expires,
	}
}

// Check says whether t may be redeemed against r at now. It fails closed: a
// record with a missing or malformed hash or a zero expiry matches nothing.
// Whether the token is used or expired is only revealed to a caller that
// presented the right secret.
func (r Record) Check(t Token, now time.Time) error {
	if t.ID != r.ID {
		return fmt.Errorf("%w: id", ErrMismatch)
	}
	if t.Kind != r.Kind {
		return fmt.Errorf("%w: token is for %q, record for %q", ErrMismatch, t.Kind, r.Kind)
	}
	// Both sides are fixed-length hex digests, so the comparison leaks
	// nothing about the secret; a malformed stored hash never matches.
	got := hashSecret(t.Secret)
	if len(r.SecretHash) != len(got) || subtle.ConstantTimeCompare([]byte(got), []byte(r.SecretHash)) != 1 {
		return fmt.Errorf("%w: secret", ErrMismatch)
	}
	if r.Used {
		return fmt.Errorf("%w (at %s)", ErrUsed, r.UsedAt.UTC().Format(time.RFC3339))
	}
	if !now.Before(r.ExpiresAt) {
		return fmt.Errorf("%w (at %s)", ErrExpired, r.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

func hashSecret(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

func knownKind(k Kind) bool {
	switch k {
	case KindNode, KindUser:
		return true
	}
	return false
}

func validateFingerprint(fp string) error {
	digits, ok := strings.CutPrefix(fp, fingerprintPrefix)
	if !ok || len(digits) != fingerprintHexLen || !isLowerHex(digits) {
		return fmt.Errorf("join token: bad CA fingerprint: want %s followed by %d lowercase hex digits", fingerprintPrefix, fingerprintHexLen)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
