package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A tree is the decoded document before it becomes a Job: string, int64,
// float64, bool, nil, []any or map[string]any. YAML and canonical JSON both
// become a tree, and one decoder turns a tree into a Job, so the two forms
// cannot drift apart.

// Parse decodes a YAML job spec, applies the defaults and validates it. It is
// strict: unknown fields, keys repeated in a mapping, values of the wrong
// type, aliases, custom tags and more than one document are refused. Every
// error names the field; all errors are reported (errors.Join), not only the
// first. A non-nil Job is returned only with a nil error.
func Parse(data []byte) (*Job, error) {
	if len(data) > MaxSpecBytes {
		return nil, fmt.Errorf("job spec is %d bytes, more than %d", len(data), MaxSpecBytes)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, fmt.Errorf("job spec contains a NUL byte at offset %d", i)
	}
	tree, err := yamlTree(data)
	if err != nil {
		return nil, err
	}
	return fromTree(tree)
}

func fromTree(tree any) (*Job, error) {
	var d decoder
	j := d.job(tree)
	if d.dropped > 0 {
		d.errs = append(d.errs, fmt.Errorf("and %d more errors", d.dropped))
	}
	if len(d.errs) > 0 {
		// Validation waits for a clean decode: a field that failed to
		// decode would also be reported as missing.
		return nil, errors.Join(d.errs...)
	}
	if !d.prioritySet {
		j.Priority = DefaultPriority
	}
	j.SetDefaults()
	if d.attemptsZero {
		// An explicit attempts: 0 means unlimited; SetDefaults would have
		// turned it into the batch default. Keep it so Validate can say a
		// batch job must bound its restarts.
		j.Restart.Attempts = 0
	}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	return j, nil
}

// yamlTree parses exactly one YAML document into a tree. It walks the node
// graph itself rather than converting through sigs.k8s.io/yaml: that
// conversion follows YAML 1.1, under which keys such as ON, Y or NO silently
// become "true" and "false" (an env var renamed), and encoding/json then
// matches field names case-insensitively and names no path for an unknown
// field.
func yamlTree(data []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("job spec is empty")
		}
		return nil, fmt.Errorf("job spec: %w", err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("job spec: more than one YAML document")
	}
	return nodeTree(&doc, "")
}

func nodeTree(n *yaml.Node, path string) (any, error) {
	at := func(format string, args ...any) error {
		p := path
		if p == "" {
			p = "(top level)"
		}
		return fmt.Errorf("%s: line %d: %s", p, n.Line, fmt.Sprintf(format, args...))
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, at("expected one document")
		}
		return nodeTree(n.Content[0], path)
	case yaml.AliasNode:
		return nil, at("aliases (*%s) are not allowed", n.Value)
	case yaml.MappingNode:
		if n.ShortTag() != "!!map" {
			return nil, at("unsupported tag %s", n.Tag)
		}
		m := make(map[string]any, len(n.Content)/2)
		lines := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				return nil, at("line %d: mapping keys must be strings (quote %q)", k.Line, k.Value)
			}
			if first, ok := lines[k.Value]; ok {
				return nil, at("key %q repeated at line %d (first at line %d)", k.Value, k.Line, first)
			}
			lines[k.Value] = k.Line
			sub, err := nodeTree(v, join(path, k.Value))
			if err != nil {
				return nil, err
			}
			m[k.Value] = sub
		}
		return m, nil
	case yaml.SequenceNode:
		if n.ShortTag() != "!!seq" {
			return nil, at("unsupported tag %s", n.Tag)
		}
		l := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			sub, err := nodeTree(c, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			l = append(l, sub)
		}
		return l, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return n.Value, nil
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, at("%v", err)
			}
			return b, nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return nil, at("integer %s out of range", n.Value)
			}
			return i, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, at("%v", err)
			}
			return f, nil
		default:
			return nil, at("unsupported tag %s (quote the value if it is a string)", n.Tag)
		}
	}
	return nil, at("unexpected YAML node")
}

// jsonTree parses JSON into a tree. Repeated keys are not detected here;
// ParseCanonical refuses anything that does not re-encode to itself.
func jsonTree(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonical job: %w", err)
	}
	if dec.More() {
		return nil, errors.New("canonical job: trailing data")
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = numbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = numbers(v[k])
		}
	}
	return v
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decoder turns a tree into a Job, collecting an error per bad field. The
// flags tell an absent field (default) from an explicit zero.
type decoder struct {
	errs         []error
	dropped      int
	prioritySet  bool
	attemptsZero bool
}

// maxDecodeErrors bounds the error text a hostile spec can make us build
// (every unknown key would otherwise cost a line listing the known ones).
const maxDecodeErrors = 32

func (d *decoder) fail(f, format string, args ...any) {
	if len(d.errs) >= maxDecodeErrors {
		d.dropped++
		return
	}
	d.errs = append(d.errs, &FieldError{Field: f, Msg: fmt.Sprintf(format, args...)})
}

func typeName(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("number %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case nil:
		return "null"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// object calls fields[k] for every key of v and reports keys it does not
// know. Keys are visited in sorted order so errors come out the same way
// every time.
func (d *decoder) object(f string, v any, fields map[string]func(f string, v any)) bool {
	m, ok := v.(map[string]any)
	if !ok {
		d.fail(orTop(f), "must be a mapping, got %s", typeName(v))
		return false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fn, ok := fields[k]
		if !ok {
			known := make([]string, 0, len(fields))
			for k := range fields {
				known = append(known, k)
			}
			slices.Sort(known)
			d.fail(join(f, k), "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		fn(join(f, k), m[k])
	}
	return true
}

func orTop(f string) string {
	if f == "" {
		return "(top level)"
	}
	return f
}

// str decodes a string; an empty one is refused when the field has a default
// (empty would silently mean the default) or is required.
func (d *decoder) str(dst *string, nonEmpty bool) func(string, any) {
	return func(f string, v any) {
		s, ok := v.(string)
		if !ok {
			d.fail(f, "must be a string, got %s", typeName(v))
			return
		}
		if nonEmpty && s == "" {
			d.fail(f, "must not be empty (omit the field for the default)")
			return
		}
		*dst = s
	}
}

func (d *decoder) integer(f string, v any, lo, hi int64) (int64, bool) {
	i, ok := v.(int64)
	if !ok {
		d.fail(f, "must be an integer, got %s", typeName(v))
		return 0, false
	}
	if i < lo || i > hi {
		d.fail(f, "must be in %d..%d, got %d", lo, hi, i)
		return 0, false
	}
	return i, true
}

func (d *decoder) strings(dst *[]string) func(string, any) {
	return func(f string, v any) {
		l, ok := v.([]any)
		if !ok {
			d.fail(f, "must be a list of strings, got %s", typeName(v))
			return
		}
		out := make([]string, 0, len(l))
		for i, e := range l {
			s, ok := e.(string)
			if !ok {
				d.fail(fmt.Sprintf("%s[%d]", f, i), "must be a string, got %s", typeName(e))
				continue
			}
			out = append(out, s)
		}
		*dst = out
	}
}

func (d *decoder) duration(dst *time.Duration) func(string, any) {
	return func(f string, v any) {
		s, ok := v.(string)
		if !ok {
			d.fail(f, "must be a duration string such as \"1s\" or \"1m30s\", got %s", typeName(v))
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.fail(f, "%q is not a duration such as \"1s\" or \"1m30s\"", s)
			return
		}
		if dur <= 0 {
			d.fail(f, "must be > 0, got %q", s)
			return
		}
		*dst = dur
	}
}

func (d *decoder) job(tree any) *Job {
	j := &Job{}
	d.object("", tree, map[string]func(string, any){
		"name":      d.str(&j.Name, false),
		"namespace": d.str(&j.Namespace, true),
		"type":      d.str(&j.Type, false),
		"priority": func(f string, v any) {
			d.prioritySet = true
			if i, ok := d.integer(f, v, 0, MaxPriority); ok {
				j.Priority = int(i)
			}
		},
		"class": d.str(&j.Class, true),
		"count": func(f string, v any) {
			if i, ok := d.integer(f, v, 1, MaxCount); ok {
				j.Count = int(i)
			}
		},
		"task":          d.task(&j.Task),
		"resources":     d.resources(&j.Resources),
		"constraints":   d.constraints(&j.Constraints),
		"spread":        d.str(&j.Spread, false),
		"anti_affinity": d.str(&j.AntiAffinity, false),
		"restart":       d.restart(&j.Restart),
		"ports":         d.strings(&j.Ports),
		"egress":        d.strings(&j.Egress),
	})
	return j
}

func (d *decoder) task(t *Task) func(string, any) {
	return func(f string, v any) {
		d.object(f, v, map[string]func(string, any){
			"command": d.str(&t.Command, false),
			"args":    d.strings(&t.Args),
			"env": func(f string, v any) {
				m, ok := v.(map[string]any)
				if !ok {
					d.fail(f, "must be a mapping of names to strings, got %s", typeName(v))
					return
				}
				t.Env = make(map[string]string, len(m))
				for k, e := range m {
					s, ok := e.(string)
					if !ok {
						d.fail(fmt.Sprintf("%s[%q]", f, k), "must be a string (quote numbers and booleans), got %s", typeName(e))
						continue
					}
					t.Env[k] = s
				}
			},
			"workdir": d.str(&t.WorkDir, false),
		})
	}
}

func (d *decoder) resources(r *Resources) func(string, any) {
	return func(f string, v any) {
		d.object(f, v, map[string]func(string, any){
			"cpu": func(f string, v any) {
				n, err := parseCPU(v)
				if err != nil {
					d.fail(f, "%v", err)
					return
				}
				r.CPU = n
			},
			"memory": func(f string, v any) {
				n, err := parseMemory(v)
				if err != nil {
					d.fail(f, "%v", err)
					return
				}
				r.MemoryMiB = n
			},
		})
	}
}

func (d *decoder) constraints(cs *[]Constraint) func(string, any) {
	return func(f string, v any) {
		l, ok := v.([]any)
		if !ok {
			d.fail(f, "must be a list, got %s", typeName(v))
			return
		}
		for i, e := range l {
			fi := fmt.Sprintf("%s[%d]", f, i)
			var c Constraint
			var value *string
			var valuesSet bool
			d.object(fi, e, map[string]func(string, any){
				"label": d.str(&c.Label, false),
				"op":    d.str(&c.Op, false),
				"value": func(f string, v any) {
					var s string
					d.str(&s, false)(f, v)
					value = &s
				},
				"values": func(f string, v any) {
					valuesSet = true
					d.strings(&c.Values)(f, v)
				},
			})
			// One spelling per op, so that a spec reads the way it is
			// stored: value for = and !=, values for in, neither for exists.
			// An unknown op is left to Validate to name.
			known := c.Op == OpEqual || c.Op == OpNotEqual || c.Op == OpIn || c.Op == OpExists
			switch {
			case value != nil && valuesSet:
				d.fail(fi, "has both value and values")
			case !known:
				if value != nil {
					c.Values = []string{*value}
				}
			case value != nil && c.Op != OpEqual && c.Op != OpNotEqual:
				d.fail(fi+".value", "only for ops %q and %q (use values for %q; none for %q)", OpEqual, OpNotEqual, OpIn, OpExists)
			case valuesSet && c.Op != OpIn:
				d.fail(fi+".values", "only for op %q (use value for %q and %q; none for %q)", OpIn, OpEqual, OpNotEqual, OpExists)
			case value != nil:
				c.Values = []string{*value}
			case (c.Op == OpEqual || c.Op == OpNotEqual) && !valuesSet:
				d.fail(fi+".value", "required for op %q", c.Op)
			}
			*cs = append(*cs, c)
		}
	}
}

func (d *decoder) restart(r *Restart) func(string, any) {
	return func(f string, v any) {
		d.object(f, v, map[string]func(string, any){
			"policy": d.str(&r.Policy, true),
			"attempts": func(f string, v any) {
				if i, ok := d.integer(f, v, 0, MaxAttempts); ok {
					r.Attempts = int(i)
					d.attemptsZero = i == 0
				}
			},
			"delay":     d.duration(&r.Delay),
			"max_delay": d.duration(&r.MaxDelay),
		})
	}
}

// parseCPU accepts an integer (millicores), "250m" (millicores) or a decimal
// number of cores as a string ("0.5", "2"; at most three decimals).
func parseCPU(v any) (int64, error) {
	const hint = `must be millicores (250 or "250m") or cores as a string ("0.5")`
	switch v := v.(type) {
	case int64:
		return v, nil
	case string:
		if m, ok := strings.CutSuffix(v, "m"); ok {
			n, err := strconv.ParseInt(m, 10, 64)
			if err != nil || !digits(m) {
				return 0, fmt.Errorf("%q: %s", v, hint)
			}
			return n, nil
		}
		whole, frac, _ := strings.Cut(v, ".")
		if !digits(whole) || (frac != "" && !digits(frac)) || len(frac) > 3 || (strings.Contains(v, ".") && frac == "") {
			return 0, fmt.Errorf("%q: %s", v, hint)
		}
		w, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || w > MaxCPU/1000 {
			return 0, fmt.Errorf("%q: more than %d cores", v, MaxCPU/1000)
		}
		f, _ := strconv.ParseInt((frac + "000")[:3], 10, 64)
		return w*1000 + f, nil
	case float64:
		return 0, fmt.Errorf("%v: %s; quote fractional cores", v, hint)
	}
	return 0, fmt.Errorf("%s, got %s", hint, typeName(v))
}

// parseMemory accepts an integer (MiB) or a string with a binary unit:
// "128Mi", "2Gi", "1Ti". Decimal units (M, G) are refused rather than
// rounded: 128M is not 128 MiB.
func parseMemory(v any) (int64, error) {
	const hint = `must be MiB (128) or a string with a binary unit ("128Mi", "2Gi", "1Ti")`
	switch v := v.(type) {
	case int64:
		return v, nil
	case string:
		for _, u := range []struct {
			suffix string
			mib    int64
		}{{"Mi", 1}, {"Gi", 1 << 10}, {"Ti", 1 << 20}} {
			num, ok := strings.CutSuffix(v, u.suffix)
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || !digits(num) {
				break
			}
			if n > math.MaxInt64/u.mib {
				return 0, fmt.Errorf("%q is too large", v)
			}
			return n * u.mib, nil
		}
		return 0, fmt.Errorf("%q: %s", v, hint)
	}
	return 0, fmt.Errorf("%s, got %s", hint, typeName(v))
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
