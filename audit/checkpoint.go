package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A checkpoint commits a node's log: its size, the Merkle root of its
// first Size entries, when it was signed, and how many leading entries
// retention pruned. Its text form (a signed note, after C2SP's) is
//
//	unum.audit/v1
//	NODE
//	SIZE
//	ROOT (base64)
//	TIME (RFC 3339, nanoseconds, UTC)
//	PRUNED
//
//	— node NODE SIG
//	— witness WITNESS TIME SIG
//
// The node signs the body (the six lines with their newlines). A witness
// signs the body followed by "witness WITNESS TIME\n", binding its name and
// the time it countersigned. Signatures are Tink signatures (the key id is
// their prefix), base64.
type Checkpoint struct {
	Node   string
	Size   uint64
	Root   Hash
	Time   time.Time
	Pruned uint64
}

// Cosignature is a witness's countersignature of a checkpoint.
type Cosignature struct {
	Witness string
	Time    time.Time
	Sig     []byte
}

// SignedCheckpoint is a checkpoint with the node's signature and any
// witness countersignatures.
type SignedCheckpoint struct {
	Checkpoint
	Sig    []byte
	Cosigs []Cosignature
}

const (
	checkpointHeader = "unum.audit/v1"
	sigPrefix        = "— "
	// maxNoteSize bounds a note read from the network or disk.
	maxNoteSize = 16 << 10
	maxCosigs   = 16
)

// Body is the signed text of the checkpoint.
func (c *Checkpoint) Body() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n%s\n%d\n%s\n%s\n%d\n", checkpointHeader, c.Node, c.Size,
		base64.StdEncoding.EncodeToString(c.Root[:]), c.Time.UTC().Format(time.RFC3339Nano), c.Pruned)
	return b.Bytes()
}

// cosignedText is what a witness signs.
func cosignedText(body []byte, witness string, at time.Time) []byte {
	return fmt.Appendf(append([]byte(nil), body...), "witness %s %s\n", witness, at.UTC().Format(time.RFC3339Nano))
}

// Marshal is the note text.
func (s *SignedCheckpoint) Marshal() []byte {
	b := s.Body()
	b = append(b, '\n')
	b = fmt.Appendf(b, "%snode %s %s\n", sigPrefix, s.Node, base64.StdEncoding.EncodeToString(s.Sig))
	for _, c := range s.Cosigs {
		b = fmt.Appendf(b, "%switness %s %s %s\n", sigPrefix, c.Witness, c.Time.UTC().Format(time.RFC3339Nano), base64.StdEncoding.EncodeToString(c.Sig))
	}
	return b
}

// ParseCheckpoint parses a note strictly. It checks the form only; Verify
// checks the signatures.
func ParseCheckpoint(note []byte) (*SignedCheckpoint, error) {
	if len(note) > maxNoteSize {
		return nil, fmt.Errorf("checkpoint is %d bytes, more than %d", len(note), maxNoteSize)
	}
	text := string(note)
	body, sigs, ok := strings.Cut(text, "\n\n")
	if !ok {
		return nil, errors.New("checkpoint: no blank line between body and signatures")
	}
	lines := strings.Split(body, "\n")
	if len(lines) != 6 || lines[0] != checkpointHeader {
		return nil, fmt.Errorf("checkpoint: body must be 6 lines starting %q", checkpointHeader)
	}
	var s SignedCheckpoint
	var err error
	s.Node = lines[1]
	if err := validNodeName(s.Node); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if s.Size, err = parseUint(lines[2]); err != nil {
		return nil, fmt.Errorf("checkpoint size: %w", err)
	}
	root, err := base64.StdEncoding.Strict().DecodeString(lines[3])
	if err != nil || len(root) != len(s.Root) {
		return nil, errors.New("checkpoint root: want 32 bytes, base64")
	}
	copy(s.Root[:], root)
	if s.Time, err = parseTime(lines[4]); err != nil {
		return nil, fmt.Errorf("checkpoint time: %w", err)
	}
	if s.Pruned, err = parseUint(lines[5]); err != nil {
		return nil, fmt.Errorf("checkpoint pruned: %w", err)
	}
	if s.Pruned > s.Size {
		return nil, fmt.Errorf("checkpoint prunes %d entries of %d", s.Pruned, s.Size)
	}
	if !strings.HasSuffix(sigs, "\n") {
		return nil, errors.New("checkpoint: signatures must end with a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		rest, ok := strings.CutPrefix(line, sigPrefix)
		if !ok {
			return nil, fmt.Errorf("checkpoint signature line %d: want %q prefix", i+1, sigPrefix)
		}
		f := strings.Split(rest, " ")
		switch {
		case i == 0 && len(f) == 3 && f[0] == "node" && f[1] == s.Node:
			if s.Sig, err = base64.StdEncoding.Strict().DecodeString(f[2]); err != nil || len(s.Sig) == 0 {
				return nil, errors.New("checkpoint: node signature is not base64")
			}
		case i > 0 && len(f) == 4 && f[0] == "witness":
			if len(s.Cosigs) == maxCosigs {
				return nil, fmt.Errorf("checkpoint: more than %d countersignatures", maxCosigs)
			}
			c := Cosignature{Witness: f[1]}
			if err := validNodeName(c.Witness); err != nil {
				return nil, fmt.Errorf("checkpoint witness: %w", err)
			}
			if c.Time, err = parseTime(f[2]); err != nil {
				return nil, fmt.Errorf("checkpoint witness time: %w", err)
			}
			if c.Sig, err = base64.StdEncoding.Strict().DecodeString(f[3]); err != nil || len(c.Sig) == 0 {
				return nil, errors.New("checkpoint: witness signature is not base64")
			}
			s.Cosigs = append(s.Cosigs, c)
		default:
			return nil, fmt.Errorf("checkpoint signature line %d: want the node's signature first, then witnesses'", i+1)
		}
	}
	if s.Sig == nil {
		return nil, errors.New("checkpoint: not signed by its node")
	}
	// Canonical form only: what was parsed must print back the same, so
	// two different notes never carry one checkpoint.
	if !bytes.Equal(s.Marshal(), note) {
		return nil, errors.New("checkpoint: not in canonical form")
	}
	return &s, nil
}

func parseUint(s string) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a canonical decimal", s)
	}
	return strconv.ParseUint(s, 10, 64)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	if t.Location() != time.UTC {
		return time.Time{}, fmt.Errorf("%q is not UTC", s)
	}
	return t, nil
}

// validNodeName accepts the names unum gives nodes: no spaces, newlines or
// colons (event ids split on the last colon), 1 to 253 bytes.
func validNodeName(n string) error {
	if n == "" || len(n) > 253 || strings.ContainsAny(n, " \n\r\t:") {
		return fmt.Errorf("node name %q is not a valid name", n)
	}
	return nil
}
