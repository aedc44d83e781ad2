package audit

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Signer signs checkpoints (a node) or countersigns them (a witness) with
// a Tink ECDSA P-256 signature keyset. Safe for concurrent use.
type Signer struct {
	name   string
	signer tink.Signer
	public []byte
}

// NewSigningKeyset generates a private signature keyset.
func NewSigningKeyset() (*keyset.Handle, error) {
	h, err := keyset.NewHandle(signature.ECDSAP256KeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("generate audit signing keyset: %w", err)
	}
	return h, nil
}

// NewSigner signs as name with the private keyset h.
func NewSigner(name string, h *keyset.Handle) (*Signer, error) {
	if err := validNodeName(name); err != nil {
		return nil, err
	}
	s, err := signature.NewSigner(h)
	if err != nil {
		return nil, fmt.Errorf("audit signer: %w", err)
	}
	pub, err := PublicKeysetOf(h)
	if err != nil {
		return nil, fmt.Errorf("audit signer: %w", err)
	}
	return &Signer{name: name, signer: s, public: pub}, nil
}

// Name is who signs.
func (s *Signer) Name() string { return s.name }

// PublicKeyset is the Tink binary public keyset: what is published.
func (s *Signer) PublicKeyset() []byte { return append([]byte(nil), s.public...) }

// Sign signs c as its node. c.Node must be the signer's name.
func (s *Signer) Sign(c Checkpoint) (*SignedCheckpoint, error) {
	if c.Node != s.name {
		return nil, fmt.Errorf("signer %s cannot sign a checkpoint of %s", s.name, c.Node)
	}
	sig, err := s.signer.Sign(c.Body())
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return &SignedCheckpoint{Checkpoint: c, Sig: sig}, nil
}

// Cosign adds the signer's countersignature made at time at.
func (s *Signer) Cosign(sc *SignedCheckpoint, at time.Time) error {
	at = at.UTC()
	sig, err := s.signer.Sign(cosignedText(sc.Body(), s.name, at))
	if err != nil {
		return fmt.Errorf("countersign checkpoint: %w", err)
	}
	out := sc.Cosigs[:0:0]
	for _, c := range sc.Cosigs {
		if c.Witness != s.name {
			out = append(out, c)
		}
	}
	sc.Cosigs = append(out, Cosignature{Witness: s.name, Time: at, Sig: sig})
	return nil
}

// LoadSigningKeyset reads a private keyset written by WriteSigningKeyset.
// It refuses a file others can read.
func LoadSigningKeyset(path string) (*keyset.Handle, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %v: an audit signing key must not be readable by others (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// WriteSigningKeyset writes h to path (mode 0600), refusing to replace an
// existing file: a node's audit key is registered with the cluster, and a
// new one would make its log unverifiable.
func WriteSigningKeyset(path string, h *keyset.Handle) error {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&buf)); err != nil {
		return fmt.Errorf("encode audit keyset: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadOrCreateSigner loads the node's audit signing keyset at path, or
// creates it when there is none.
func LoadOrCreateSigner(name, path string) (*Signer, error) {
	h, err := LoadOrCreateSigningKeyset(path)
	if err != nil {
		return nil, err
	}
	return NewSigner(name, h)
}

// LoadOrCreateSigningKeyset loads the signing keyset at path, making and
// writing a new one when there is none.
func LoadOrCreateSigningKeyset(path string) (*keyset.Handle, error) {
	h, err := LoadSigningKeyset(path)
	if errors.Is(err, os.ErrNotExist) {
		if h, err = NewSigningKeyset(); err != nil {
			return nil, err
		}
		if err = WriteSigningKeyset(path, h); err != nil {
			return nil, err
		}
	}
	return h, err
}

// Keys are the published public keys: whose checkpoints and
// countersignatures a verifier accepts. A zero Keys trusts nothing.
type Keys struct {
	Nodes     map[string][]byte `json:"nodes"`     // node name -> Tink binary public keyset
	Witnesses map[string][]byte `json:"witnesses"` // witness name -> Tink binary public keyset
	// Checkpoints are the newest witnessed checkpoints (note text) by node
	// when the keys were exported. A log at rest cannot show what was cut
	// from its end (a store treats a damaged tail as its end); these can:
	// verify refuses a log shorter than, or different from, what was
	// witnessed.
	Checkpoints map[string]string `json:"checkpoints,omitempty"`
}

// ParseKeys reads the JSON form `unum audit keys -o json` prints.
func ParseKeys(b []byte) (*Keys, error) {
	var k Keys
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		return nil, fmt.Errorf("audit keys: %w", err)
	}
	for _, m := range []map[string][]byte{k.Nodes, k.Witnesses} {
		for name, pub := range m {
			if _, err := verifierOf(pub); err != nil {
				return nil, fmt.Errorf("audit keys: %s: %w", name, err)
			}
		}
	}
	for name, note := range k.Checkpoints {
		sc, err := ParseCheckpoint([]byte(note))
		if err != nil {
			return nil, fmt.Errorf("audit keys: checkpoint of %s: %w", name, err)
		}
		if sc.Node != name {
			return nil, fmt.Errorf("audit keys: checkpoint filed under %s is %s's", name, sc.Node)
		}
	}
	return &k, nil
}

func verifierOf(pub []byte) (tink.Verifier, error) {
	h, err := keyset.ReadWithNoSecrets(keyset.NewBinaryReader(bytes.NewReader(pub)))
	if err != nil {
		return nil, fmt.Errorf("public keyset: %w", err)
	}
	v, err := signature.NewVerifier(h)
	if err != nil {
		return nil, fmt.Errorf("public keyset: %w", err)
	}
	return v, nil
}

// Fingerprint is a short, printable id of a public keyset.
func Fingerprint(pub []byte) string {
	h := LeafHash(pub)
	return base64.RawURLEncoding.EncodeToString(h[:9])
}

// signedByKeyset reports whether sig names (by its Tink key-id prefix) a
// key of the public keyset pub.
func signedByKeyset(pub, sig []byte) bool {
	h, err := keyset.ReadWithNoSecrets(keyset.NewBinaryReader(bytes.NewReader(pub)))
	if err != nil || len(sig) < 5 || sig[0] != 0x01 {
		return err == nil // no prefix to go by: let verification decide
	}
	id := binary.BigEndian.Uint32(sig[1:5])
	for _, ki := range h.KeysetInfo().GetKeyInfo() {
		if ki.GetKeyId() == id {
			return true
		}
	}
	return false
}

// ErrSignature is returned (wrapped) when a signature does not verify.
var ErrSignature = errors.New("bad signature")

// VerifyNode checks sc's node signature against the node's published key.
func (k *Keys) VerifyNode(sc *SignedCheckpoint) error {
	pub, ok := k.Nodes[sc.Node]
	if !ok {
		return fmt.Errorf("%w: no published key for node %s", ErrSignature, sc.Node)
	}
	v, err := verifierOf(pub)
	if err != nil {
		return err
	}
	if err := v.Verify(sc.Sig, sc.Body()); err != nil {
		return fmt.Errorf("%w: checkpoint of %s at size %d is not signed by its published key", ErrSignature, sc.Node, sc.Size)
	}
	return nil
}

// VerifiedWitnesses returns the witnesses whose countersignatures on sc
// verify under their published keys, sorted, and an error naming the first
// countersignature under a known key that does not. A countersignature by
// a witness or key the keys do not know is ignored (it cannot be checked,
// so it counts for nothing), as signed notes ignore unknown signers.
func (k *Keys) VerifiedWitnesses(sc *SignedCheckpoint) ([]string, error) {
	var ok []string
	body := sc.Body()
	for _, c := range sc.Cosigs {
		pub, found := k.Witnesses[c.Witness]
		if !found || !signedByKeyset(pub, c.Sig) {
			// Not a key these keys know: a witness that since got a new
			// key (it rejoined), or a name nobody published.
			continue
		}
		v, err := verifierOf(pub)
		if err != nil {
			return ok, err
		}
		if err := v.Verify(c.Sig, cosignedText(body, c.Witness, c.Time)); err != nil {
			return ok, fmt.Errorf("%w: countersignature of %s on %s at size %d", ErrSignature, c.Witness, sc.Node, sc.Size)
		}
		ok = append(ok, c.Witness)
	}
	sort.Strings(ok)
	return ok, nil
}
