package policy

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/require"
)

// FuzzInputValue checks Value, the hand-built OPA document on the request
// path, against the naive reference: encoding/json of the same Input, with
// the time in UTC as RFC 3339 with nanoseconds and a nil delegation as an
// empty one (as the Decider fills it). Neither Validate nor Value may
// panic on any strings; an input Validate accepts must get a well-formed
// decision from the shipped policy.
func FuzzInputValue(f *testing.F) {
	e, err := NewEngine(context.Background(), Builtin(), 1)
	require.NoError(f, err)
	f.Add("spiffe://unum.test/user/admin", "user", "", "admin", "role", "admin", "policy.apply", "policy", "-", "bundle", "", "", "n1", "r1", int64(1_800_000_000_000_000_000), 0)
	f.Add("spiffe://unum.test/ns/web/job/api", "workload", "web", "job/api", "", "", "kv.get", "kv", "web", "k/with/slashes", "spiffe://unum.test/user/alice", "user", "n2", "", int64(-1), 3600)
	f.Add("spiffe://unum.test/node/n1", "node", "", "n1", "k\x00\"\\", "v\xff\u2028", "node.renew", "node", "-", "n1", "", "", "", "", int64(0), -7*3600-30*60)
	f.Add("\xf0\x28\x8c\x28", "unknown", "", "", "", "", "ID.show", "id", "-", "", "", "", "", "", int64(1), 1)
	f.Fuzz(func(t *testing.T, id, kind, ns, name, ak, av, action, rkind, rns, rname, actorID, actorKind, node, reqID string, nanos int64, offset int) {
		in := &Input{
			Subject:  Subject{ID: id, Kind: kind, Namespace: ns, Name: name, Attributes: map[string]string{}},
			Action:   action,
			Resource: Resource{Kind: rkind, Namespace: rns, Name: rname},
			Context: Context{
				Node:      node,
				Time:      time.Unix(0, nanos).In(time.FixedZone("fuzz", offset%(24*3600))),
				RequestID: reqID,
			},
		}
		if ak != "" {
			in.Subject.Attributes[ak] = av
			in.Subject.Attributes["role"] = av + ak
		}
		if actorID != "" {
			in.Delegation = []Actor{{ID: actorID, Kind: actorKind}, {ID: actorKind, Kind: actorID}}
		}
		valid := in.Validate() == nil
		v := in.Value()

		// The reference document.
		ref := *in
		ref.Context.Time = in.Context.Time.UTC()
		if ref.Delegation == nil {
			ref.Delegation = []Actor{}
		}
		want, err := json.Marshal(ref)
		require.NoError(t, err)
		got, err := ast.JSON(v)
		require.NoError(t, err)
		gotJSON, err := json.Marshal(got)
		require.NoError(t, err)
		var wantDoc, gotDoc any
		require.NoError(t, json.Unmarshal(want, &wantDoc))
		require.NoError(t, json.Unmarshal(gotJSON, &gotDoc))
		require.Equal(t, wantDoc, gotDoc)

		// The time reads back as the instant it was.
		ts, ok := gotDoc.(map[string]any)["context"].(map[string]any)["time"].(string)
		require.True(t, ok)
		back, err := time.Parse(time.RFC3339Nano, ts)
		require.NoError(t, err)
		require.True(t, back.Equal(in.Context.Time), "%s is not %s", ts, in.Context.Time)

		if !valid {
			return
		}
		r, err := e.Eval(context.Background(), in)
		require.NoError(t, err, "the shipped policy has no decision for a valid input")
		require.NotEmpty(t, r.Reasons)
		if MinimumPrivileged(action) {
			require.True(t, r.Privileged)
		}
		if kind == "unknown" {
			require.False(t, r.Allow, "an unknown identity was allowed %s", action)
		}
	})
}

// FuzzParseResource: whatever ParseResource accepts prints back as the
// same string and parses again to the same resource.
func FuzzParseResource(f *testing.F) {
	for _, s := range []string{"policy/-/bundle", "id/web/job/api", "node/-/n1", "kv/web/a/b/c", "svid/default/job/probe",
		"", "/", "//", "a//b", "A/-/x", "kv/-x/k", "kv/web/", "kv/" + strings.Repeat("a", 64) + "/k", "kv/a-/k", "k/-/\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseResource(s)
		if err != nil {
			require.Equal(t, Resource{}, r)
			return
		}
		require.NoError(t, r.Validate())
		require.Equal(t, s, r.String())
		again, err := ParseResource(r.String())
		require.NoError(t, err)
		require.Equal(t, r, again)
		require.NotContains(t, r.Kind+r.Namespace, "/")
	})
}

// bundleSeeds are up to three files per seed, "" for no file: the shipped
// bundle and every case in testdata/bundles.
type bundleSeed struct {
	names [3]string
	data  [3][]byte
}

func bundleSeeds(f *testing.F) []bundleSeed {
	var seeds []bundleSeed
	add := func(files map[string][]byte) {
		var s bundleSeed
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		slices.Sort(names)
		for i := range min(3, len(names)) {
			s.names[i], s.data[i] = names[i], files[names[i]]
		}
		seeds = append(seeds, s)
	}
	add(Builtin().Files)
	dirs, err := filepath.Glob(filepath.Join("testdata", "bundles", "*"))
	require.NoError(f, err)
	for _, dir := range dirs {
		files := map[string][]byte{}
		require.NoError(f, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() == "expect.txt" {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)], err = os.ReadFile(p)
			return err
		}))
		add(files)
	}
	return seeds
}

// FuzzBundle feeds arbitrary file names and contents to the bundle loader,
// as an API client or a folder could. Loading, validating and compiling
// never panic; a refusal is a *BundleError naming at least one problem; a
// bundle that compiles evaluates a fixed input (never making a minimum
// privileged action unprivileged); and a bundle survives its JSON form.
func FuzzBundle(f *testing.F) {
	for _, s := range bundleSeeds(f) {
		f.Add(s.names[0], s.data[0], s.names[1], s.data[1], s.names[2], s.data[2])
	}
	f.Add("../authz.rego", []byte("package unum.authz"), "/data.json", []byte("{}"), "a/./b.rego", []byte(""))
	f.Add("authz.rego", []byte("package unum.authz\nimport rego.v1\ndecision := data.unum.authz.d\nd := {\"allow\": true}"), "unum/authz/data.json", []byte(`{"decision": {"allow": true, "privileged": false}}`), "x.txt", []byte("x"))
	requireBundleErr := func(t *testing.T, stage string, err error) {
		t.Helper()
		var be *BundleError
		require.True(t, errors.As(err, &be), "%T %v is not a *BundleError", err, err)
		require.Equal(t, stage, be.Stage)
		require.NotEmpty(t, be.Problems, "%s refusal names no problem", stage)
	}
	in := userInput("admin", "", "policy.apply", "policy/-/bundle")
	in.Delegation = []Actor{}
	f.Fuzz(func(t *testing.T, n1 string, c1 []byte, n2 string, c2 []byte, n3 string, c3 []byte) {
		b := &Bundle{Files: map[string][]byte{}}
		fsys := fstest.MapFS{}
		for _, nc := range []struct {
			name string
			data []byte
		}{{n1, c1}, {n2, c2}, {n3, c3}} {
			if nc.name == "" {
				continue
			}
			b.Files[nc.name] = nc.data
			if fs.ValidPath(nc.name) && nc.name != "." {
				fsys[nc.name] = &fstest.MapFile{Data: nc.data}
			}
		}

		// The loader: a folder with these files.
		if lb, err := FromFS(fsys, "."); err != nil {
			requireBundleErr(t, "load", err)
		} else {
			require.NoError(t, lb.Validate())
			for name := range lb.Files {
				require.Contains(t, b.Files, name, "loaded a file that is not in the folder")
			}
		}

		// The bundle as it arrives over the API.
		if err := b.Validate(); err != nil {
			requireBundleErr(t, "load", err)
			return
		}

		var back Bundle
		data, err := b.MarshalJSON()
		require.NoError(t, err)
		require.NoError(t, back.UnmarshalJSON(data))
		require.True(t, b.Equal(&back), "a valid bundle changed in its JSON form")
		require.Equal(t, b.Digest(), back.Digest())

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e, err := NewEngine(ctx, b, 1)
		if err != nil {
			requireBundleErr(t, "compile", err)
			return
		}
		if r, err := e.Eval(ctx, &in); err == nil {
			require.True(t, r.Privileged, "policy.apply evaluated unprivileged")
		}
	})
}
