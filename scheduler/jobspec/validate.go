package jobspec

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FieldError is one thing wrong with a job spec: Field is the path of the
// field as written in YAML (task.args[2], resources.memory), Msg what is
// wrong with it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// ReservedEnv and ReservedEnvPrefix are environment names the executor sets
// for every task; a job may not set or override them (a task that could
// point SPIFFE_ENDPOINT_SOCKET elsewhere could be fed another identity).
const (
	ReservedEnv       = "SPIFFE_ENDPOINT_SOCKET"
	ReservedEnvPrefix = "UNUM_"
)

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	portNameRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	labelNameRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
	dnsSubRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// errs collects field errors in the order they are found.
type errs []error

func (e *errs) add(field, format string, args ...any) {
	*e = append(*e, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks every field of j and returns all that is wrong, each error
// a *FieldError naming its field, joined with errors.Join; nil if j is
// valid. It does not apply defaults: a job built in code gets SetDefaults
// first.
func (j *Job) Validate() error {
	var e errs
	j.validate(&e)
	return errors.Join(e...)
}

// ValidateFor is Validate plus the checks that need the cluster's trust
// domain: every egress ID must belong to td.
func (j *Job) ValidateFor(td spiffeid.TrustDomain) error {
	var e errs
	j.validate(&e)
	if td.IsZero() {
		e.add("egress", "no trust domain to check against")
	}
	for i, s := range j.Egress {
		id, err := spiffeid.FromString(s)
		if err != nil {
			continue // reported by validate
		}
		if id.TrustDomain() != td {
			e.add(fmt.Sprintf("egress[%d]", i), "%q is not in trust domain %q", s, td.Name())
		}
	}
	return errors.Join(e...)
}

func (j *Job) validate(e *errs) {
	checkDNSLabel(e, "name", j.Name)
	checkDNSLabel(e, "namespace", j.Namespace)
	switch j.Type {
	case TypeService, TypeBatch:
	case "":
		e.add("type", "required: %q or %q", TypeService, TypeBatch)
	default:
		e.add("type", "must be %q or %q, got %q", TypeService, TypeBatch, j.Type)
	}
	if j.Priority < 0 || j.Priority > MaxPriority {
		e.add("priority", "must be in 0..%d, got %d", MaxPriority, j.Priority)
	}
	switch j.Class {
	case ClassProd, ClassBatch, ClassBestEffort:
	default:
		e.add("class", "must be %q, %q or %q, got %q", ClassProd, ClassBatch, ClassBestEffort, j.Class)
	}
	if j.Count < 1 || j.Count > MaxCount {
		e.add("count", "must be in 1..%d, got %d", MaxCount, j.Count)
	}
	j.Task.validate(e)
	if j.Resources.CPU <= 0 || j.Resources.CPU > MaxCPU {
		e.add("resources.cpu", "must be > 0 and <= %d millicores, got %d", MaxCPU, j.Resources.CPU)
	}
	if j.Resources.MemoryMiB <= 0 || j.Resources.MemoryMiB > MaxMemoryMiB {
		e.add("resources.memory", "must be > 0 and <= %d MiB, got %d", MaxMemoryMiB, j.Resources.MemoryMiB)
	}
	if len(j.Constraints) > MaxConstraints {
		e.add("constraints", "at most %d, got %d", MaxConstraints, len(j.Constraints))
	}
	for i, c := range j.Constraints {
		c.validate(e, fmt.Sprintf("constraints[%d]", i))
	}
	if j.Spread != "" {
		checkLabelKey(e, "spread", j.Spread)
	}
	if j.AntiAffinity != "" {
		checkLabelKey(e, "anti_affinity", j.AntiAffinity)
	}
	j.validateRestart(e)
	if len(j.Ports) > MaxPorts {
		e.add("ports", "at most %d, got %d", MaxPorts, len(j.Ports))
	}
	envOf := map[string]string{}
	for i, p := range j.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if !portNameRE.MatchString(p) {
			e.add(f, "%q is not a port name ([a-z][a-z0-9_-]{0,31})", p)
			continue
		}
		env := PortEnv(p)
		if prev, ok := envOf[env]; ok {
			e.add(f, "%q and %q are both exported as %s", prev, p, env)
			continue
		}
		envOf[env] = p
	}
	if len(j.Egress) > MaxEgress {
		e.add("egress", "at most %d, got %d", MaxEgress, len(j.Egress))
	}
	for i, s := range j.Egress {
		f := fmt.Sprintf("egress[%d]", i)
		id, err := spiffeid.FromString(s)
		switch {
		case err != nil:
			e.add(f, "%q is not a SPIFFE ID: %v", s, err)
		case id.Path() == "":
			e.add(f, "%q names a trust domain, not a workload", s)
		case slices.Contains(j.Egress[:i], s):
			e.add(f, "%q is listed twice", s)
		}
	}
}

func (t *Task) validate(e *errs) {
	size := len(t.Command)
	switch c := t.Command; {
	case c == "":
		e.add("task.command", "required")
	case !checkText(e, "task.command", c):
	case len(c) > MaxCommandBytes:
		e.add("task.command", "longer than %d bytes", MaxCommandBytes)
	case strings.HasPrefix(c, "/"):
		if path.Clean(c) != c {
			e.add("task.command", "%q is not a clean path (clean: %q)", c, path.Clean(c))
		} else if slices.Contains(strings.Split(c, "/"), "..") {
			e.add("task.command", "%q contains '..'", c)
		}
	case strings.Contains(c, "/"):
		e.add("task.command", "%q must be an absolute path or a bare name looked up in PATH", c)
	case c == "." || c == "..":
		e.add("task.command", "%q is not a command", c)
	}
	if len(t.Args) > MaxArgs {
		e.add("task.args", "at most %d, got %d", MaxArgs, len(t.Args))
	}
	for i, a := range t.Args {
		checkText(e, fmt.Sprintf("task.args[%d]", i), a)
		size += len(a) + 1
	}
	if len(t.Env) > MaxEnv {
		e.add("task.env", "at most %d entries, got %d", MaxEnv, len(t.Env))
	}
	for _, k := range slices.Sorted(maps.Keys(t.Env)) {
		f := fmt.Sprintf("task.env[%q]", k)
		size += len(k) + len(t.Env[k]) + 2
		switch {
		case !envNameRE.MatchString(k):
			e.add(f, "%q is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", k)
		case k == ReservedEnv || strings.HasPrefix(k, ReservedEnvPrefix):
			e.add(f, "%s and %s* are set by unum and may not be set by a job", ReservedEnv, ReservedEnvPrefix)
		}
		checkText(e, f, t.Env[k])
	}
	if size > MaxTaskBytes {
		e.add("task", "command, args and env take %d bytes, more than %d", size, MaxTaskBytes)
	}
	if w := t.WorkDir; w != "" && checkText(e, "task.workdir", w) {
		switch {
		case len(w) > MaxWorkDirBytes:
			e.add("task.workdir", "longer than %d bytes", MaxWorkDirBytes)
		case strings.HasPrefix(w, "/"):
			e.add("task.workdir", "%q must be relative to the task's directory", w)
		case slices.Contains(strings.Split(w, "/"), ".."):
			e.add("task.workdir", "%q escapes the task's directory ('..')", w)
		case w == "." || path.Clean(w) != w:
			e.add("task.workdir", "%q is not a clean relative path (use %q)", w, strings.TrimPrefix(path.Clean(w), "."))
		}
	}
}

func (c *Constraint) validate(e *errs, f string) {
	checkLabelKey(e, f+".label", c.Label)
	switch c.Op {
	case OpEqual, OpNotEqual:
		if len(c.Values) != 1 {
			e.add(f+".value", "op %q takes exactly one value, got %d", c.Op, len(c.Values))
		}
	case OpIn:
		if len(c.Values) == 0 || len(c.Values) > MaxConstraintValues {
			e.add(f+".values", "op %q takes 1..%d values, got %d", c.Op, MaxConstraintValues, len(c.Values))
		}
	case OpExists:
		if len(c.Values) != 0 {
			e.add(f+".values", "op %q takes no value, got %d", c.Op, len(c.Values))
		}
	default:
		e.add(f+".op", "must be one of %q, %q, %q, %q, got %q", OpEqual, OpNotEqual, OpIn, OpExists, c.Op)
	}
	vf := f + ".values"
	if c.Op == OpEqual || c.Op == OpNotEqual {
		vf = f + ".value"
	}
	for i, v := range c.Values {
		fi := vf
		if vf == f+".values" {
			fi = fmt.Sprintf("%s[%d]", vf, i)
		}
		switch {
		case len(v) > 63 || !labelNameRE.MatchString(v):
			e.add(fi, "%q is not a label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)", v)
		case slices.Contains(c.Values[:i], v):
			e.add(fi, "%q is listed twice", v)
		}
	}
}

func (j *Job) validateRestart(e *errs) {
	r := j.Restart
	switch r.Policy {
	case RestartOnFailure, RestartNever:
	case RestartAlways:
		if j.Type == TypeBatch {
			e.add("restart.policy", "%q is for services: a batch job that always restarts never completes", r.Policy)
		}
	default:
		e.add("restart.policy", "must be %q, %q or %q, got %q", RestartOnFailure, RestartAlways, RestartNever, r.Policy)
	}
	switch {
	case r.Attempts < 0 || r.Attempts > MaxAttempts:
		e.add("restart.attempts", "must be in 0..%d, got %d", MaxAttempts, r.Attempts)
	case r.Policy == RestartNever && r.Attempts != 0:
		e.add("restart.attempts", "must be 0 with policy %q, got %d", RestartNever, r.Attempts)
	case j.Type == TypeBatch && r.Policy == RestartOnFailure && r.Attempts == 0:
		e.add("restart.attempts", "a batch job must bound its restarts: 1..%d, got 0 (unlimited)", MaxAttempts)
	}
	if r.Delay < MinRestartDelay || r.Delay > MaxRestartDelay {
		e.add("restart.delay", "must be in %v..%v, got %v", MinRestartDelay, MaxRestartDelay, r.Delay)
	}
	if r.MaxDelay < r.Delay || r.MaxDelay > MaxRestartDelay {
		e.add("restart.max_delay", "must be in delay (%v)..%v, got %v", r.Delay, MaxRestartDelay, r.MaxDelay)
	}
}

// PortEnv is the environment variable carrying the port allocated for the
// port named name: UNUM_PORT_ and the name upper-cased with '-' as '_'.
func PortEnv(name string) string {
	return ReservedEnvPrefix + "PORT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func checkDNSLabel(e *errs, f, s string) {
	if s == "" {
		e.add(f, "required")
		return
	}
	if !dnsLabelRE.MatchString(s) {
		e.add(f, "%q is not a DNS label (at most 63 of [a-z0-9-], alphanumeric at both ends)", s)
	}
}

// checkLabelKey checks a Kubernetes-style label key: an optional DNS
// subdomain prefix (<= 253 bytes) and '/', then a name of at most 63 of
// [A-Za-z0-9-_.], alphanumeric at both ends.
func checkLabelKey(e *errs, f, k string) {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = k
	}
	ok := name != "" && len(name) <= 63 && labelNameRE.MatchString(name)
	if hasPrefix {
		ok = ok && prefix != "" && len(prefix) <= 253 && dnsSubRE.MatchString(prefix)
	}
	if !ok {
		e.add(f, "%q is not a label key ([prefix/]name: name at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends; prefix a DNS subdomain)", k)
	}
}

// checkText refuses what the canonical JSON and execve cannot carry: NUL
// bytes and invalid UTF-8.
func checkText(e *errs, f, s string) bool {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		e.add(f, "contains a NUL byte")
	case !utf8.ValidString(s):
		e.add(f, "is not valid UTF-8")
	default:
		return true
	}
	return false
}

// ValidateNamespace checks a namespace name as a job's is checked.
func ValidateNamespace(ns string) error {
	var e errs
	checkDNSLabel(&e, "namespace", ns)
	return errors.Join(e...)
}
