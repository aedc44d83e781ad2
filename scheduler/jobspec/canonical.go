package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/identity"
)

// The canonical form is the YAML schema written as JSON with every default
// filled in: fixed key order (struct order, map keys sorted), durations as
// time.Duration strings, resources as integers, no HTML escaping, no
// trailing newline. Two jobs are the same exactly when their canonical
// forms are byte-equal.
type canonJob struct {
	Name         string            `json:"name"`
	Namespace    string            `json:"namespace"`
	Type         string            `json:"type"`
	Priority     int               `json:"priority"`
	Class        string            `json:"class"`
	Count        int               `json:"count"`
	Task         canonTask         `json:"task"`
	Resources    canonResources    `json:"resources"`
	Constraints  []canonConstraint `json:"constraints,omitempty"`
	Spread       string            `json:"spread,omitempty"`
	AntiAffinity string            `json:"anti_affinity,omitempty"`
	Restart      canonRestart      `json:"restart"`
	Ports        []string          `json:"ports,omitempty"`
	Egress       []string          `json:"egress,omitempty"`
}

type canonTask struct {
	Command string            `json:"command"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	WorkDir string            `json:"workdir,omitempty"`
}

type canonResources struct {
	CPU       int64 `json:"cpu"`
	MemoryMiB int64 `json:"memory"`
}

type canonConstraint struct {
	Label  string   `json:"label"`
	Op     string   `json:"op"`
	Value  *string  `json:"value,omitempty"`
	Values []string `json:"values,omitempty"`
}

type canonRestart struct {
	Policy   string `json:"policy"`
	Attempts int    `json:"attempts"`
	Delay    string `json:"delay"`
	MaxDelay string `json:"max_delay"`
}

// Canonical returns the deterministic JSON of j, which must be valid (it is
// checked): what the control plane stores and compares to tell whether a
// resubmitted job changed.
func (j *Job) Canonical() ([]byte, error) {
	if err := j.Validate(); err != nil {
		return nil, fmt.Errorf("canonical form of an invalid job: %w", err)
	}
	c := canonJob{
		Name: j.Name, Namespace: j.Namespace, Type: j.Type, Priority: j.Priority,
		Class: j.Class, Count: j.Count,
		Task: canonTask{
			Command: j.Task.Command, Args: j.Task.Args, Env: j.Task.Env, WorkDir: j.Task.WorkDir,
		},
		Resources:    canonResources{CPU: j.Resources.CPU, MemoryMiB: j.Resources.MemoryMiB},
		Spread:       j.Spread,
		AntiAffinity: j.AntiAffinity,
		Restart: canonRestart{
			Policy: j.Restart.Policy, Attempts: j.Restart.Attempts,
			Delay: j.Restart.Delay.String(), MaxDelay: j.Restart.MaxDelay.String(),
		},
		Ports:  j.Ports,
		Egress: j.Egress,
	}
	for _, k := range j.Constraints {
		cc := canonConstraint{Label: k.Label, Op: k.Op}
		switch k.Op {
		case OpEqual, OpNotEqual:
			cc.Value = &k.Values[0]
		case OpIn:
			cc.Values = k.Values
		}
		c.Constraints = append(c.Constraints, cc)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode job %s/%s: %w", j.Namespace, j.Name, err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// ParseCanonical decodes what Canonical produced. It is stricter than Parse:
// the bytes must be exactly the canonical form of the job they decode to, so
// a stored job that was written by anything else (extra whitespace, a
// repeated key, a missing default) is refused rather than reinterpreted.
func ParseCanonical(data []byte) (*Job, error) {
	tree, err := jsonTree(data)
	if err != nil {
		return nil, err
	}
	j, err := fromTree(tree)
	if err != nil {
		return nil, fmt.Errorf("canonical job: %w", err)
	}
	again, err := j.Canonical()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, errors.New("canonical job: bytes are not in canonical form")
	}
	return j, nil
}

// SPIFFEID is the identity of every task of j: spiffe://TD/ns/NAMESPACE/job/NAME.
// It is the zero ID if j's name or namespace is not valid (Validate first).
func (j *Job) SPIFFEID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := identity.JobID(td, j.Namespace, j.Name)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}
