package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// A proof bundle is what `unum audit proof EVENT_ID` prints and what a third
// party checks offline with the published keys (`unum audit proof --check`):
// one event exactly as its node stored it, its index, a checkpoint note
// signed by the node (and countersigned by witnesses) and the audit path
// from the event's leaf to that checkpoint's root. Everything a verifier
// needs besides the keys is inside, and nothing in it is trusted: the keys
// decide.
//
// The event is embedded as a JSON object so a person can read it. The
// stored bytes are compact JSON, and pretty-printing the bundle only adds
// whitespace between tokens, so the leaf data is the embedded object
// compacted (json.Compact removes exactly that whitespace and never touches
// the content of strings or their escapes).

// ProofFormat names the bundle format; verifiers refuse any other.
const ProofFormat = "unum.audit.proof/v1"

// maxProofBundle bounds a bundle read from a file: an event of
// MaxEventSize, pretty-printed, plus a note and a path.
const maxProofBundle = 1 << 20

// maxPath bounds an audit path: a tree of 2^64 leaves is 64 levels deep.
const maxPath = 64

// ProofBundle is the JSON form of an inclusion proof.
type ProofBundle struct {
	Format string `json:"format"`
	// Event is the event as stored: its Merkle leaf data (whitespace
	// aside).
	Event json.RawMessage `json:"event"`
	Index uint64          `json:"index"`
	// Checkpoint is the signed checkpoint note the proof leads to.
	Checkpoint string `json:"checkpoint"`
	// InclusionProof is the audit path, leaf to root, hex SHA-256 hashes.
	InclusionProof []string `json:"inclusion_proof"`
}

// NewProofBundle assembles a bundle from what a node's Proof answer holds.
// It checks the form only (the event is JSON, the note parses): Verify
// checks what it proves.
func NewProofBundle(event []byte, index uint64, note []byte, path []Hash) (*ProofBundle, error) {
	if !json.Valid(event) {
		return nil, errors.New("proof bundle: event is not JSON")
	}
	if _, err := ParseCheckpoint(note); err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	b := &ProofBundle{Format: ProofFormat, Event: append(json.RawMessage(nil), event...), Index: index,
		Checkpoint: string(note), InclusionProof: make([]string, len(path))}
	for i, h := range path {
		b.InclusionProof[i] = hex.EncodeToString(h[:])
	}
	return b, nil
}

// ParseProofBundle reads a bundle strictly: unknown fields, trailing data,
// another format and oversized input are errors.
func ParseProofBundle(data []byte) (*ProofBundle, error) {
	if len(data) > maxProofBundle {
		return nil, fmt.Errorf("proof bundle is %d bytes, more than %d", len(data), maxProofBundle)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var b ProofBundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	if dec.More() {
		return nil, errors.New("proof bundle: trailing data")
	}
	if b.Format != ProofFormat {
		return nil, fmt.Errorf("proof bundle: format %q, want %q", b.Format, ProofFormat)
	}
	return &b, nil
}

// ProofResult is what a verified bundle proves: Event is entry Index of
// Checkpoint.Node's log, committed to by Checkpoint (signed by the node's
// published key), and countersigned by Witnesses (verified, sorted; empty
// when no witness countersigned it yet).
type ProofResult struct {
	Event      *Event
	Leaf       Hash
	Index      uint64
	Checkpoint *SignedCheckpoint
	Witnesses  []string
}

// Verify checks the bundle against the published keys: the event decodes
// and says it is entry Index of the checkpoint's node, its leaf hash is on
// the audit path to the checkpoint's root, the checkpoint is signed by the
// node's published key, and every countersignature verifies under its
// witness's published key. Any failure is an error saying which.
func (b *ProofBundle) Verify(keys *Keys) (*ProofResult, error) {
	if b.Format != ProofFormat {
		return nil, fmt.Errorf("proof bundle: format %q, want %q", b.Format, ProofFormat)
	}
	if keys == nil {
		return nil, errors.New("proof bundle: no published keys to verify against")
	}
	var leafData bytes.Buffer
	if err := json.Compact(&leafData, b.Event); err != nil {
		return nil, fmt.Errorf("proof bundle: event: %w", err)
	}
	ev, err := DecodeEvent(leafData.Bytes())
	if err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	sc, err := ParseCheckpoint([]byte(b.Checkpoint))
	if err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	if want := EventID(sc.Node, b.Index); ev.ID != want || ev.Node != sc.Node {
		return nil, fmt.Errorf("proof bundle: the event says it is %s on %s, the proof is for %s", ev.ID, ev.Node, want)
	}
	if len(b.InclusionProof) > maxPath {
		return nil, fmt.Errorf("proof bundle: inclusion proof of %d hashes, more than %d", len(b.InclusionProof), maxPath)
	}
	path := make([]Hash, len(b.InclusionProof))
	for i, s := range b.InclusionProof {
		if len(s) != 2*len(Hash{}) {
			return nil, fmt.Errorf("proof bundle: inclusion proof hash %d: want %d hex digits", i, 2*len(Hash{}))
		}
		if _, err := hex.Decode(path[i][:], []byte(s)); err != nil {
			return nil, fmt.Errorf("proof bundle: inclusion proof hash %d: %w", i, err)
		}
	}
	// Signatures before the path: a bundle whose checkpoint the node never
	// signed proves nothing, however well its hashes fit.
	if err := keys.VerifyNode(sc); err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	witnesses, err := keys.VerifiedWitnesses(sc)
	if err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	leaf := LeafHash(leafData.Bytes())
	if err := VerifyInclusion(b.Index, sc.Size, leaf, path, sc.Root); err != nil {
		return nil, fmt.Errorf("proof bundle: event %s is not in the checkpoint of size %d: %w", ev.ID, sc.Size, err)
	}
	return &ProofResult{Event: ev, Leaf: leaf, Index: b.Index, Checkpoint: sc, Witnesses: witnesses}, nil
}

// VerifyProofBundle parses and verifies a bundle (ParseProofBundle, then
// Verify).
func VerifyProofBundle(data []byte, keys *Keys) (*ProofResult, error) {
	b, err := ParseProofBundle(data)
	if err != nil {
		return nil, err
	}
	return b.Verify(keys)
}

// HashesFromBytes converts hashes as the API carries them (raw 32 bytes
// each) and refuses any of another length.
func HashesFromBytes(in [][]byte) ([]Hash, error) {
	// The longer of the two proofs bounds both: a path longer than its
	// tree is deep fails verification anyway.
	if len(in) > MaxProofLen {
		return nil, fmt.Errorf("proof of %d hashes, more than %d", len(in), MaxProofLen)
	}
	out := make([]Hash, len(in))
	for i, b := range in {
		if len(b) != len(Hash{}) {
			return nil, fmt.Errorf("proof hash %d is %d bytes, want %d", i, len(b), len(Hash{}))
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// HashesToBytes is the inverse of HashesFromBytes.
func HashesToBytes(in []Hash) [][]byte {
	out := make([][]byte, len(in))
	for i := range in {
		out[i] = append([]byte(nil), in[i][:]...)
	}
	return out
}
