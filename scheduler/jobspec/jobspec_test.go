package jobspec

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden canonical JSON in testdata/valid")

// TestValid parses every testdata/valid/*.yaml and compares its canonical
// form with the golden .json beside it (rewritten with -update; read the
// diff before committing it).
func TestValid(t *testing.T) {
	files, err := filepath.Glob("testdata/valid/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			j, err := Parse(data)
			require.NoError(t, err)
			got, err := j.Canonical()
			require.NoError(t, err)
			golden := strings.TrimSuffix(f, ".yaml") + ".json"
			if *update {
				require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			require.Equal(t, string(bytes.TrimSuffix(want, []byte("\n"))), string(got))
			roundTrip(t, j)
		})
	}
}

// TestInvalid parses every testdata/invalid/*.yaml, whose leading
// "# error: ..." lines each give a substring the error must contain.
func TestInvalid(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			var wants []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# error: "); ok {
					wants = append(wants, w)
				}
			}
			require.NotEmpty(t, wants, "no '# error: ' line")
			j, err := Parse(data)
			require.Error(t, err)
			require.Nil(t, j)
			for _, w := range wants {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func roundTrip(t *testing.T, j *Job) {
	t.Helper()
	c, err := j.Canonical()
	require.NoError(t, err)
	back, err := ParseCanonical(c)
	require.NoError(t, err)
	require.Equal(t, j, back)
	// The canonical JSON is also a valid YAML spec meaning the same job.
	again, err := Parse(c)
	require.NoError(t, err)
	require.Equal(t, j, again)
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec string
		want func(j *Job)
	}{
		{
			name: "service",
			spec: "name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}",
			want: func(j *Job) {},
		},
		{
			name: "batch",
			spec: "name: s\ntype: batch\ntask: {command: x}\nresources: {cpu: 1, memory: 1}",
			want: func(j *Job) {
				j.Type, j.Class, j.Restart.Attempts = TypeBatch, ClassBatch, DefaultBatchAttempts
			},
		},
		{
			name: "explicit zero priority kept",
			spec: "name: s\ntype: service\npriority: 0\ntask: {command: x}\nresources: {cpu: 1, memory: 1}",
			want: func(j *Job) { j.Priority = 0 },
		},
		{
			name: "max_delay follows a larger delay",
			spec: "name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\nrestart: {delay: 5m}",
			want: func(j *Job) { j.Restart.Delay, j.Restart.MaxDelay = 5*time.Minute, 5*time.Minute },
		},
		{
			name: "batch never has no attempts",
			spec: "name: s\ntype: batch\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\nrestart: {policy: never}",
			want: func(j *Job) {
				j.Type, j.Class, j.Restart.Policy = TypeBatch, ClassBatch, RestartNever
			},
		},
		{
			name: "empty collections are nil",
			spec: "name: s\ntype: service\ntask: {command: x, args: [], env: {}}\nresources: {cpu: 1, memory: 1}\nports: []\negress: []\nconstraints: []",
			want: func(j *Job) {},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := &Job{
				Name: "s", Namespace: "default", Type: TypeService, Priority: 500, Class: ClassProd, Count: 1,
				Task:      Task{Command: "x"},
				Resources: Resources{CPU: 1, MemoryMiB: 1},
				Restart:   Restart{Policy: RestartOnFailure, Delay: time.Second, MaxDelay: time.Minute},
			}
			tc.want(want)
			got, err := Parse([]byte(tc.spec))
			require.NoError(t, err)
			require.Equal(t, want, got)
			roundTrip(t, got)
		})
	}
}

// TestValidateCollectsAll checks that Validate reports every bad field of a
// job built in code, each as a *FieldError, not just the first.
func TestValidateCollectsAll(t *testing.T) {
	j := &Job{Name: "ok", Type: TypeBatch, Count: 2, Task: Task{Command: "/bin/true", WorkDir: "../x",
		Env: map[string]string{"UNUM_X": "1", "A": "b\x00"}}, Resources: Resources{CPU: 1, MemoryMiB: -5},
		Restart: Restart{Policy: RestartAlways}, Egress: []string{"spiffe://other.td/ns/a/job/b"}}
	j.SetDefaults()
	err := j.Validate()
	require.Error(t, err)
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		fe, ok := e.(*FieldError)
		require.True(t, ok, "%T", e)
		fields = append(fields, fe.Field)
	}
	require.Equal(t, []string{`task.env["A"]`, `task.env["UNUM_X"]`, "task.workdir", "resources.memory", "restart.policy"}, fields)
	require.Contains(t, err.Error(), "resources.memory: must be > 0 and <= 16777216 MiB, got -5")

	td := spiffeid.RequireTrustDomainFromString("unum.local")
	err = j.ValidateFor(td)
	require.ErrorContains(t, err, `egress[0]: "spiffe://other.td/ns/a/job/b" is not in trust domain "unum.local"`)
	require.ErrorContains(t, err, "restart.policy") // ValidateFor includes Validate
}

func TestValidateFor(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	j, err := Parse([]byte("name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\negress: [spiffe://unum.local/ns/shop/job/db]"))
	require.NoError(t, err)
	require.NoError(t, j.ValidateFor(td))
	require.ErrorContains(t, j.ValidateFor(spiffeid.RequireTrustDomainFromString("evil.example")), `egress[0]: "spiffe://unum.local/ns/shop/job/db" is not in trust domain "evil.example"`)
	require.ErrorContains(t, j.ValidateFor(spiffeid.TrustDomain{}), "no trust domain")
}

// TestEgressNamesIdentitiesOnly (T-117): a job cannot widen its own network
// access from its spec: egress holds SPIFFE IDs only, so an address, a
// CIDR or a host name is refused at parse, before any policy is asked (what
// a job may reach by address is granted by the policy alone).
func TestEgressNamesIdentitiesOnly(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	for _, e := range []string{"10.0.0.0/8", "0.0.0.0/0", "::/0", "10.0.0.1", "db.example.com:5432", "tcp://10.0.0.1:22"} {
		j, err := Parse([]byte("name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\negress: [\"" + e + "\"]"))
		if err == nil {
			err = j.ValidateFor(td)
		}
		require.ErrorContains(t, err, `egress[0]: "`+e+`" is not a SPIFFE ID`, e)
	}
	_, err := Parse([]byte("name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\negress: [{cidr: 10.0.0.0/8}]"))
	require.ErrorContains(t, err, "egress[0]: must be a string, got a mapping")
	_, err = Parse([]byte("name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\nnetwork: {cidr: 10.0.0.0/8}"))
	require.ErrorContains(t, err, "network: unknown field")
}

func TestSPIFFEID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.local")
	j, err := Parse([]byte("name: web\nnamespace: shop\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}"))
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.local/ns/shop/job/web", j.SPIFFEID(td).String())
	bad := &Job{Name: "", Namespace: "shop"}
	require.True(t, bad.SPIFFEID(td).IsZero())
}

func TestPortEnv(t *testing.T) {
	require.Equal(t, "UNUM_PORT_HTTP", PortEnv("http"))
	require.Equal(t, "UNUM_PORT_ADMIN_API", PortEnv("admin-api"))
}

// TestParseCanonicalStrict checks that the control plane's reader accepts
// only exact canonical bytes.
func TestParseCanonicalStrict(t *testing.T) {
	j, err := Parse([]byte("name: s\ntype: service\ntask: {command: x, env: {A: b}}\nresources: {cpu: 1, memory: 1}"))
	require.NoError(t, err)
	c, err := j.Canonical()
	require.NoError(t, err)
	for name, mutate := range map[string]func(string) string{
		"trailing newline": func(s string) string { return s + "\n" },
		"space":            func(s string) string { return strings.Replace(s, `"name":`, `"name": `, 1) },
		"repeated key":     func(s string) string { return strings.Replace(s, `"name":"s"`, `"name":"evil","name":"s"`, 1) },
		"missing default":  func(s string) string { return strings.Replace(s, `"priority":500,`, "", 1) },
		"key order": func(s string) string {
			return strings.Replace(s, `"name":"s","namespace":"default"`, `"namespace":"default","name":"s"`, 1)
		},
		"yaml": func(string) string {
			return "name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}"
		},
		"trailing data": func(s string) string { return s + "{}" },
	} {
		t.Run(name, func(t *testing.T) {
			m := mutate(string(c))
			require.NotEqual(t, string(c), m)
			_, err := ParseCanonical([]byte(m))
			require.Error(t, err)
		})
	}
}

func TestCanonicalRefusesInvalid(t *testing.T) {
	_, err := (&Job{Name: "x"}).Canonical()
	require.ErrorContains(t, err, "canonical form of an invalid job")
}

func TestSizeBounds(t *testing.T) {
	big := "name: s\ntype: service\ntask: {command: x}\nresources: {cpu: 1, memory: 1}\n#" + strings.Repeat("x", MaxSpecBytes)
	_, err := Parse([]byte(big))
	require.ErrorContains(t, err, "more than 65536")

	_, err = Parse([]byte("name: s\x00\n"))
	require.ErrorContains(t, err, "NUL byte at offset 7")

	var args strings.Builder
	for range MaxArgs + 1 {
		args.WriteString("a,")
	}
	_, err = Parse([]byte("name: s\ntype: service\ntask: {command: x, args: [" + args.String() + "]}\nresources: {cpu: 1, memory: 1}"))
	require.ErrorContains(t, err, "task.args: at most 256, got 257")

	var env strings.Builder
	for i := range MaxEnv + 1 {
		env.WriteString("E" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ": v,")
	}
	_, err = Parse([]byte("name: s\ntype: service\ntask: {command: x, env: {" + env.String() + "}}\nresources: {cpu: 1, memory: 1}"))
	require.ErrorContains(t, err, "task.env: at most 256 entries, got 257")

	j := &Job{Name: "s", Type: TypeService, Task: Task{Command: "x", Args: []string{strings.Repeat("a", MaxTaskBytes)}},
		Resources: Resources{CPU: 1, MemoryMiB: 1}}
	j.SetDefaults()
	require.ErrorContains(t, j.Validate(), "task: command, args and env take")
}

// TestExamples parses the example jobs the docs and end-to-end tests use.
func TestExamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		typ  string
	}{
		{"hello-service.yaml", TypeService},
		{"batch.yaml", TypeBatch},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "..", "docs", "examples", "jobs", tc.file))
			require.NoError(t, err)
			j, err := Parse(data)
			require.NoError(t, err)
			require.Equal(t, tc.typ, j.Type)
			require.NoError(t, j.ValidateFor(spiffeid.RequireTrustDomainFromString("unum.local")))
			roundTrip(t, j)
		})
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts is
// valid and survives Canonical -> ParseCanonical unchanged.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid", "../../docs/examples/jobs"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := Parse(data)
		if err != nil {
			if j != nil {
				t.Fatalf("Parse returned a job with an error: %v", err)
			}
			return
		}
		if err := j.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid job: %v", err)
		}
		c, err := j.Canonical()
		if err != nil {
			t.Fatalf("Canonical of an accepted job: %v", err)
		}
		back, err := ParseCanonical(c)
		if err != nil {
			t.Fatalf("ParseCanonical(%s): %v", c, err)
		}
		c2, err := back.Canonical()
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("round trip changed the job:\n%s\n%s (%v)", c, c2, err)
		}
		require.Equal(t, j, back)
	})
}

func TestDecodeErrorsBounded(t *testing.T) {
	var b strings.Builder
	for i := range 200 {
		b.WriteString("unknown" + strings.Repeat("x", i) + ": 1\n")
	}
	_, err := Parse([]byte(b.String()))
	require.ErrorContains(t, err, "and 168 more errors")
	require.Len(t, err.(interface{ Unwrap() []error }).Unwrap(), maxDecodeErrors+1)
}
