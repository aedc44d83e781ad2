package audit

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
)

// What a witness refuses. A refusal wrapping ErrFork or ErrTruncation (or
// ErrSignature) means the node's log, or someone holding its key, tried to
// change history the witness already countersigned: the witness records an
// alert. ErrStaleBase is no accusation: the node proved consistency from a
// checkpoint the witness does not hold (an answer it never received, a
// witness restored from backup) and should fetch the witnessed checkpoint
// and submit again.
var (
	ErrFork       = errors.New("fork")
	ErrTruncation = errors.New("truncation")
	ErrStaleBase  = errors.New("consistency proof from a checkpoint the witness does not hold")
)

// MaxProofLen bounds a consistency proof a witness reads: a tree of 2^64
// leaves needs at most 2·64 hashes.
const MaxProofLen = 128

// Submission is a node's checkpoint with a consistency proof from the
// checkpoint of size FromSize, which it believes the witness holds.
type Submission struct {
	Checkpoint *SignedCheckpoint
	FromSize   uint64
	Proof      []Hash
}

// CheckSubmission decides whether a witness that holds prev for the node
// (nil: nothing yet) may countersign sub, the node's checkpoint key being
// pub (a Tink binary public keyset). It is a pure function of its inputs.
//
// The rules, in order: the node signature verifies under pub (ErrSignature:
// whatever a forged checkpoint claims means nothing); the size does not
// shrink (ErrTruncation); the proof starts at the witnessed size
// (ErrStaleBase); the pruned count does not go down (entries dropped
// cannot come back: ErrFork); and the witnessed tree is a prefix of the new
// one: at the same size the same root, at a larger size a consistency
// proof that verifies (ErrFork otherwise). Nothing else is required of a
// first checkpoint: a witness that holds none has no history to protect.
func CheckSubmission(pub []byte, prev *SignedCheckpoint, sub Submission) error {
	sc := sub.Checkpoint
	if sc == nil {
		return errors.New("no checkpoint")
	}
	if prev != nil && prev.Node != sc.Node {
		return fmt.Errorf("witnessed checkpoint is of %s, not %s", prev.Node, sc.Node)
	}
	if len(sub.Proof) > MaxProofLen {
		return fmt.Errorf("%w: consistency proof of %d hashes, more than %d", ErrProof, len(sub.Proof), MaxProofLen)
	}
	keys := Keys{Nodes: map[string][]byte{sc.Node: pub}}
	if err := keys.VerifyNode(sc); err != nil {
		return err
	}
	if prev == nil {
		if sc.Pruned > 0 {
			return fmt.Errorf("%w: the first checkpoint of %s says %d entries are pruned, but no witness ever countersigned them", ErrFork, sc.Node, sc.Pruned)
		}
		if sub.FromSize != 0 || len(sub.Proof) != 0 {
			return fmt.Errorf("%w: it holds no checkpoint of %s, the proof starts at size %d", ErrStaleBase, sc.Node, sub.FromSize)
		}
		return nil
	}
	switch {
	case sc.Size < prev.Size && !sc.Time.After(prev.Time):
		// Signed no later than the witnessed one: an older note that
		// arrived late (a retry, or two witnesses raced), not a claim that
		// the log shrank. Refused without an alarm; a node that really
		// truncates signs its smaller checkpoint later, and backdating it
		// gains nothing: the witnessed size stays.
		return fmt.Errorf("%w: checkpoint of %s at size %d, signed %s, is older than the witnessed one at size %d, signed %s",
			ErrStaleBase, sc.Node, sc.Size, sc.Time.Format(time.RFC3339Nano), prev.Size, prev.Time.Format(time.RFC3339Nano))
	case sc.Size < prev.Size:
		return fmt.Errorf("%w: checkpoint of %s at size %d is smaller than the witnessed size %d", ErrTruncation, sc.Node, sc.Size, prev.Size)
	case sub.FromSize != prev.Size:
		return fmt.Errorf("%w: it holds size %d of %s, the proof starts at size %d", ErrStaleBase, prev.Size, sc.Node, sub.FromSize)
	case sc.Pruned < prev.Pruned:
		return fmt.Errorf("%w: checkpoint of %s at size %d says %d entries are pruned, the witnessed one %d", ErrFork, sc.Node, sc.Size, sc.Pruned, prev.Pruned)
	case sc.Pruned > prev.Size:
		// Retention prunes only what a witness countersigned.
		return fmt.Errorf("%w: checkpoint of %s says %d entries are pruned, more than the %d witnessed", ErrFork, sc.Node, sc.Pruned, prev.Size)
	case sc.Size == prev.Size && sc.Root != prev.Root:
		return fmt.Errorf("%w: checkpoint of %s at size %d has another root than the witnessed one", ErrFork, sc.Node, sc.Size)
	}
	if err := VerifyConsistency(prev.Size, sc.Size, prev.Root, sc.Root, sub.Proof); err != nil {
		return fmt.Errorf("%w: checkpoint of %s at size %d does not extend the witnessed one at size %d: %w", ErrFork, sc.Node, sc.Size, prev.Size, err)
	}
	return nil
}

// Refusal names the kind of a CheckSubmission error for alerts and
// metrics: "fork", "truncation", "signature", "stale" (retry) or
// "invalid" (anything else).
func Refusal(err error) string {
	switch {
	case errors.Is(err, ErrFork):
		return "fork"
	case errors.Is(err, ErrTruncation):
		return "truncation"
	case errors.Is(err, ErrSignature):
		return "signature"
	case errors.Is(err, ErrStaleBase):
		return "stale"
	}
	return "invalid"
}

// PublicKeysetOf is the Tink binary public keyset of a private keyset: what
// a node registers before it knows its own name (at join).
func PublicKeysetOf(h *keyset.Handle) ([]byte, error) {
	pub, err := h.Public()
	if err != nil {
		return nil, fmt.Errorf("audit public keyset: %w", err)
	}
	var buf bytes.Buffer
	if err := pub.WriteWithNoSecrets(keyset.NewBinaryWriter(&buf)); err != nil {
		return nil, fmt.Errorf("audit public keyset: %w", err)
	}
	return buf.Bytes(), nil
}

// CheckPublicKeyset checks that pub is a Tink public keyset a verifier can
// be made from (a registration is refused otherwise).
func CheckPublicKeyset(pub []byte) error {
	_, err := verifierOf(pub)
	return err
}
