package audit

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// An event's canonical encoding is json.Marshal(&Event). The log builds
// it in two halves so that the expensive one runs on the recording
// goroutine, not on the log's single writer: the caller encodes the body
// (every field after node, eventBody), the writer adds what it assigns
// (v, id, time, node) in front. TestSplitEncodingIsCanonical checks the
// result is byte for byte json.Marshal's, and that eventBody has exactly
// Event's fields after Node.

// eventBody is Event's fields after Node, in the same order with the same
// tags.
type eventBody struct {
	Kind           Kind            `json:"kind"`
	Action         string          `json:"action"`
	Subject        string          `json:"subject,omitempty"`
	Chain          []string        `json:"chain,omitempty"`
	Resource       string          `json:"resource,omitempty"`
	Outcome        Outcome         `json:"outcome"`
	Privileged     bool            `json:"privileged,omitempty"`
	DecisionID     string          `json:"decision_id,omitempty"`
	PolicyRevision int64           `json:"policy_revision,omitempty"`
	Reasons        []string        `json:"reasons,omitempty"`
	RequestDigest  string          `json:"request_digest,omitempty"`
	Details        json.RawMessage `json:"details,omitempty"`
}

// encodeBody validates what the caller sets and encodes it: a JSON object.
func (e *Event) encodeBody() ([]byte, error) {
	c := *e
	c.V, c.Node, c.Time = Version, "-", time.Unix(0, 1)
	if err := c.validateFields(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(&eventBody{Kind: e.Kind, Action: e.Action, Subject: e.Subject, Chain: e.Chain, Resource: e.Resource,
		Outcome: e.Outcome, Privileged: e.Privileged, DecisionID: e.DecisionID, PolicyRevision: e.PolicyRevision,
		Reasons: e.Reasons, RequestDigest: e.RequestDigest, Details: e.Details})
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.Action, err)
	}
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("event %s is %d bytes, more than %d", e.Action, len(b), MaxEventSize)
	}
	return b, nil
}

// assembler puts the writer's half in front of an encoded body.
type assembler struct {
	// nodeQuoted is the node name as a JSON string; idPrefix is the id's
	// JSON string up to its index (`"NODE:`).
	nodeQuoted, idPrefix []byte
}

func newAssembler(node string) assembler {
	q, _ := json.Marshal(node)
	return assembler{nodeQuoted: q, idPrefix: append(append([]byte(nil), q[:len(q)-1]...), ':')}
}

// assemble returns the canonical encoding of the event whose body is
// body, at index i, stamped t.
func (a assembler) assemble(body []byte, i uint64, t time.Time) ([]byte, error) {
	b := make([]byte, 0, len(body)+len(a.nodeQuoted)*2+80)
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"id":`...)
	b = append(b, a.idPrefix...)
	b = strconv.AppendUint(b, i, 10)
	b = append(b, `","time":`...)
	tj, err := t.UTC().MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("event time: %w", err)
	}
	b = append(b, tj...)
	b = append(b, `,"node":`...)
	b = append(b, a.nodeQuoted...)
	b = append(b, ',')
	b = append(b, body[1:]...)
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("event is %d bytes, more than %d", len(b), MaxEventSize)
	}
	return b, nil
}
