package enforcement_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement"
)

// TestCompileDataDriven runs the scenarios in testdata/*.txt (regenerate the
// expected output with -rewrite, and read the diff before committing it).
// Commands:
//
//	compile [name=P]
//	    compiles the identities and listeners of its input and prints the
//	    plan (one block per identity number, its rules in order); with
//	    name=P it is kept for diff. Input lines:
//	      identity num=N id=ID [egress=(ID, ...)]
//	      grant id=ID | grant namespace=NS | grant cidr=PREFIX [ports=(P, ...)] [proto=tcp|udp|any]
//	          (a grant of the identity above it; raw=(id, namespace, cidr)
//	          sets several at once)
//	      listener id=ID addr=ADDR port=P
//	    An ID written NS/JOB is spiffe://unum.test/ns/NS/job/JOB. Every
//	    compile also checks that the plan is canonical and that shuffling
//	    the input does not change it.
//	diff old=P new=Q
//	    prints the rules to delete and to add, and checks that applying
//	    them to P gives Q.
func TestCompileDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		plans := map[string]enforcement.Plan{}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "compile":
				ids, ls := parseCompileInput(t, d)
				p := enforcement.Compile(ids, ls)
				requireCanonical(t, p)
				rng := rand.New(rand.NewPCG(uint64(len(ids)), uint64(len(ls))))
				for range 5 {
					ids2, ls2 := slices.Clone(ids), slices.Clone(ls)
					rng.Shuffle(len(ids2), func(i, j int) { ids2[i], ids2[j] = ids2[j], ids2[i] })
					rng.Shuffle(len(ls2), func(i, j int) { ls2[i], ls2[j] = ls2[j], ls2[i] })
					for i := range ids2 {
						ids2[i].Grants = slices.Clone(ids2[i].Grants)
						rng.Shuffle(len(ids2[i].Grants), func(a, b int) { ids2[i].Grants[a], ids2[i].Grants[b] = ids2[i].Grants[b], ids2[i].Grants[a] })
					}
					require.True(t, p.Equal(enforcement.Compile(ids2, ls2)), "%s: the plan depends on the input's order", d.Pos)
				}
				if a, ok := d.Arg("name"); ok {
					plans[a.SingleVal(t)] = p
				}
				return formatPlan(p)
			case "diff":
				old, ok := plans[argVal(t, d, "old")]
				require.True(t, ok, "%s: no plan %s", d.Pos, argVal(t, d, "old"))
				nw, ok := plans[argVal(t, d, "new")]
				require.True(t, ok, "%s: no plan %s", d.Pos, argVal(t, d, "new"))
				add, del := enforcement.Diff(old, nw)
				requireCanonical(t, add)
				requireCanonical(t, del)
				require.True(t, apply(old, del, add).Equal(nw))
				return "del:\n" + indent(formatPlan(del)) + "add:\n" + indent(formatPlan(add))
			}
			d.Fatalf(t, "unknown command %q", d.Cmd)
			return ""
		})
	})
}

func argVal(t *testing.T, d *datadriven.TestData, key string) string {
	t.Helper()
	a, ok := d.Arg(key)
	require.True(t, ok, "%s: %s= is required", d.Pos, key)
	return a.SingleVal(t)
}

func longID(s string) string {
	if strings.HasPrefix(s, "spiffe://") || !strings.Contains(s, "/") {
		return s
	}
	ns, job, _ := strings.Cut(s, "/")
	return "spiffe://unum.test/ns/" + ns + "/job/" + job
}

func parseCompileInput(t *testing.T, d *datadriven.TestData) ([]enforcement.Identity, []enforcement.Listener) {
	t.Helper()
	var ids []enforcement.Identity
	var ls []enforcement.Listener
	for _, line := range strings.Split(d.Input, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, args, err := datadriven.ParseLine(line)
		require.NoError(t, err, "%s: %s", d.Pos, line)
		get := func(key string) (string, []string) {
			for _, a := range args {
				if a.Key == key {
					if len(a.Vals) == 0 {
						return "", nil
					}
					return a.Vals[0], a.Vals
				}
			}
			return "", nil
		}
		switch cmd {
		case "identity":
			n, err := strconv.ParseUint(must(get("num")), 10, 32)
			require.NoError(t, err, line)
			id := enforcement.Identity{Num: enforcement.IdentityNum(n), SPIFFEID: longID(must(get("id")))}
			_, eg := get("egress")
			for _, e := range eg {
				id.Egress = append(id.Egress, longID(e))
			}
			ids = append(ids, id)
		case "grant":
			require.NotEmpty(t, ids, "%s: a grant needs an identity above it", d.Pos)
			var g enforcement.Grant
			if v, _ := get("id"); v != "" {
				g.ID = longID(v)
			}
			g.Namespace, _ = get("namespace")
			if v, _ := get("cidr"); v != "" {
				g.Prefix, err = netip.ParsePrefix(v)
				require.NoError(t, err, line)
			}
			_, ports := get("ports")
			for _, p := range ports {
				n, err := strconv.ParseUint(p, 10, 16)
				require.NoError(t, err, line)
				g.Ports = append(g.Ports, uint16(n))
			}
			if v, _ := get("proto"); v != "" {
				if n, err := strconv.ParseUint(v, 10, 8); err == nil {
					g.Proto = enforcement.Proto(n)
				} else {
					g.Proto, err = enforcement.ParseProto(v)
					require.NoError(t, err, line)
				}
			}
			ids[len(ids)-1].Grants = append(ids[len(ids)-1].Grants, g)
		case "listener":
			l := enforcement.Listener{SPIFFEID: longID(must(get("id")))}
			if v, _ := get("addr"); v != "" {
				l.Addr, err = netip.ParseAddr(v)
				require.NoError(t, err, line)
			}
			n, err := strconv.ParseUint(must(get("port")), 10, 16)
			require.NoError(t, err, line)
			l.Port = uint16(n)
			ls = append(ls, l)
		default:
			t.Fatalf("%s: unknown input line %q", d.Pos, line)
		}
	}
	return ids, ls
}

func must(v string, _ []string) string { return v }

func formatPlan(p enforcement.Plan) string {
	if len(p) == 0 {
		return "(empty)\n"
	}
	var b strings.Builder
	for _, num := range slices.Sorted(maps.Keys(p)) {
		fmt.Fprintf(&b, "%d:\n", num)
		for _, r := range p[num] {
			fmt.Fprintf(&b, "  %s\n", r)
		}
	}
	return b.String()
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

// requireCanonical checks a plan's invariants: no identity 0, no empty
// slice, every rule valid, sorted, no duplicates.
func requireCanonical(t testing.TB, p enforcement.Plan) {
	t.Helper()
	for num, rs := range p {
		require.NotZero(t, num)
		require.NotEmpty(t, rs, "identity %d has an empty slice", num)
		for i, r := range rs {
			require.NoError(t, r.Validate())
			if i > 0 {
				require.Negative(t, enforcement.CompareRules(rs[i-1], r), "identity %d: %s then %s", num, rs[i-1], r)
			}
		}
	}
}

// apply is the naive reference of what a node does with a diff: delete
// del's rules from old, then add add's, as sets.
func apply(old, del, add enforcement.Plan) enforcement.Plan {
	set := map[enforcement.IdentityNum]map[enforcement.Rule]bool{}
	for num, rs := range old {
		set[num] = map[enforcement.Rule]bool{}
		for _, r := range rs {
			set[num][r] = true
		}
	}
	for num, rs := range del {
		for _, r := range rs {
			delete(set[num], r)
		}
	}
	for num, rs := range add {
		if set[num] == nil {
			set[num] = map[enforcement.Rule]bool{}
		}
		for _, r := range rs {
			set[num][r] = true
		}
	}
	out := enforcement.Plan{}
	for num, m := range set {
		if len(m) == 0 {
			continue
		}
		rs := make([]enforcement.Rule, 0, len(m))
		for r := range m {
			rs = append(rs, r)
		}
		slices.SortFunc(rs, enforcement.CompareRules)
		out[num] = rs
	}
	return out
}

// randomPlan draws a canonical plan from a small space of rules, so that
// two draws share and differ in rules.
func randomPlan(rng *rand.Rand, idents, maxRules int) enforcement.Plan {
	p := enforcement.Plan{}
	for range rng.IntN(idents + 1) {
		num := enforcement.IdentityNum(1 + rng.IntN(idents))
		var rs []enforcement.Rule
		for range rng.IntN(maxRules + 1) {
			var a netip.Addr
			if rng.IntN(4) == 0 {
				a = netip.AddrFrom16([16]byte{0xfd, 15: byte(rng.IntN(4))})
			} else {
				a = netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(8))})
			}
			rs = append(rs, enforcement.Rule{
				Prefix: netip.PrefixFrom(a, a.BitLen()),
				Port:   uint16(rng.IntN(3) * 1000),
				Proto:  []enforcement.Proto{enforcement.ProtoAny, enforcement.ProtoTCP, enforcement.ProtoUDP}[rng.IntN(3)],
			})
		}
		slices.SortFunc(rs, enforcement.CompareRules)
		if rs = slices.Compact(rs); len(rs) > 0 {
			p[num] = append(p[num], rs...)
			slices.SortFunc(p[num], enforcement.CompareRules)
			p[num] = slices.Compact(p[num])
		}
	}
	return p
}

// TestDiffProperties: on random canonical plans, deleting del from old and
// adding add gives new; add and del are disjoint from what they need not
// touch (add holds nothing old had, del nothing new has); the diff of a
// plan with itself is empty; and Diff leaves its arguments as they were.
func TestDiffProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 2000 {
		old, nw := randomPlan(rng, 6, 12), randomPlan(rng, 6, 12)
		oldCopy, newCopy := clonePlan(old), clonePlan(nw)
		add, del := enforcement.Diff(old, nw)
		requireCanonical(t, add)
		requireCanonical(t, del)
		require.True(t, apply(old, del, add).Equal(nw), "case %d:\nold %v\nnew %v\nadd %v\ndel %v", i, old, nw, add, del)
		for num, rs := range add {
			for _, r := range rs {
				require.False(t, slices.Contains(old[num], r), "add holds %d %s, which old had", num, r)
			}
		}
		for num, rs := range del {
			for _, r := range rs {
				require.False(t, slices.Contains(nw[num], r), "del holds %d %s, which new has", num, r)
			}
		}
		require.Equal(t, add.Len()-del.Len(), nw.Len()-old.Len())
		require.True(t, old.Equal(oldCopy))
		require.True(t, nw.Equal(newCopy))
		a, d := enforcement.Diff(old, old)
		require.Empty(t, a)
		require.Empty(t, d)
		require.Equal(t, old.Equal(nw), add.Len() == 0 && del.Len() == 0)
	}
}

func clonePlan(p enforcement.Plan) enforcement.Plan {
	out := enforcement.Plan{}
	for k, v := range p {
		out[k] = slices.Clone(v)
	}
	return out
}

// TestCompileMatchesReference: on random identities, grants and listeners,
// Compile equals a naive reference written from the rule in its comment
// (every declared destination, kept when a grant names it or its
// namespace; every address grant, port by port).
func TestCompileMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for i := range 500 {
		ids, ls := randomWorld(rng, 8, 3)
		got := enforcement.Compile(ids, ls)
		requireCanonical(t, got)
		require.True(t, reference(ids, ls).Equal(got), "case %d", i)
	}
}

func reference(ids []enforcement.Identity, ls []enforcement.Listener) enforcement.Plan {
	set := map[enforcement.IdentityNum]map[enforcement.Rule]bool{}
	add := func(num enforcement.IdentityNum, r enforcement.Rule) {
		if set[num] == nil {
			set[num] = map[enforcement.Rule]bool{}
		}
		set[num][r] = true
	}
	for _, id := range ids {
		if id.Num == 0 {
			continue
		}
		for _, g := range id.Grants {
			if g.Prefix.IsValid() && g.ID == "" && g.Namespace == "" {
				if len(g.Ports) == 0 {
					add(id.Num, enforcement.Rule{Prefix: g.Prefix.Masked(), Proto: g.Proto})
				}
				for _, p := range g.Ports {
					add(id.Num, enforcement.Rule{Prefix: g.Prefix.Masked(), Port: p, Proto: g.Proto})
				}
			}
		}
		for _, d := range id.Egress {
			ns := strings.Split(d, "/")[4] // spiffe://unum.test/ns/NS/job/J
			covered := false
			for _, g := range id.Grants {
				if !g.Prefix.IsValid() && ((g.ID == d && g.Namespace == "") || (g.Namespace == ns && g.ID == "")) {
					covered = true
				}
			}
			if !covered {
				continue
			}
			for _, l := range ls {
				if l.SPIFFEID == d && l.Port != 0 {
					add(id.Num, enforcement.Rule{Prefix: netip.PrefixFrom(l.Addr, 32), Port: l.Port})
				}
			}
		}
	}
	out := enforcement.Plan{}
	for num, m := range set {
		for r := range m {
			out[num] = append(out[num], r)
		}
		slices.SortFunc(out[num], enforcement.CompareRules)
	}
	return out
}

// randomWorld draws jobs in a few namespaces, each with declared egress,
// grants (id, namespace and IPv4 address grants, well-formed) and
// listeners on a few node addresses.
func randomWorld(rng *rand.Rand, jobs, listenersPerJob int) ([]enforcement.Identity, []enforcement.Listener) {
	nss := []string{"a", "b", "c"}
	id := func(j int) string { return fmt.Sprintf("spiffe://unum.test/ns/%s/job/j%d", nss[j%len(nss)], j) }
	var ids []enforcement.Identity
	var ls []enforcement.Listener
	for j := range jobs {
		x := enforcement.Identity{Num: enforcement.IdentityNum(1 + rng.IntN(jobs)), SPIFFEID: id(j)}
		for range rng.IntN(4) {
			x.Egress = append(x.Egress, id(rng.IntN(jobs)))
		}
		for range rng.IntN(4) {
			switch rng.IntN(3) {
			case 0:
				x.Grants = append(x.Grants, enforcement.Grant{ID: id(rng.IntN(jobs))})
			case 1:
				x.Grants = append(x.Grants, enforcement.Grant{Namespace: nss[rng.IntN(len(nss))]})
			default:
				g := enforcement.Grant{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(256))}), 24+rng.IntN(9)), Proto: enforcement.Proto([]uint8{0, 6, 17}[rng.IntN(3)])}
				for range rng.IntN(3) {
					g.Ports = append(g.Ports, uint16(1+rng.IntN(3)))
				}
				x.Grants = append(x.Grants, g)
			}
		}
		ids = append(ids, x)
		for range rng.IntN(listenersPerJob + 1) {
			ls = append(ls, enforcement.Listener{SPIFFEID: id(j), Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(4))}), Port: uint16(rng.IntN(4) * 1000)})
		}
	}
	return ids, ls
}

// FuzzCompile: on any identities, grants and listeners (addresses and
// prefixes from raw bytes, so mapped, zoned-less IPv6 and odd lengths
// occur), Compile does not panic, its plan is canonical and every rule
// valid, and the diff between it and a second compile of part of the
// input applies.
func FuzzCompile(f *testing.F) {
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a"))
	f.Add([]byte("\x00\x00\xff\xff\x0a\x00\x00\x01\x60\x00\x35\x11\x02\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		addr := func() netip.Addr {
			if next()%2 == 0 {
				return netip.AddrFrom4([4]byte{next(), next(), next(), next()})
			}
			var a [16]byte
			if next()%2 == 0 { // IPv4-mapped
				a[10], a[11] = 0xff, 0xff
				a[12], a[13], a[14], a[15] = next(), next(), next(), next()
			} else {
				for i := range a {
					a[i] = next()
				}
			}
			return netip.AddrFrom16(a)
		}
		names := []string{"spiffe://t/ns/a/job/x", "spiffe://t/ns/a/job/y", "spiffe://t/ns/b/job/x", "spiffe://t/ns/-/job/x", "spiffe://t/user/x", "a", ""}
		var ids []enforcement.Identity
		var ls []enforcement.Listener
		for len(data) > 0 {
			switch next() % 3 {
			case 0:
				ids = append(ids, enforcement.Identity{Num: enforcement.IdentityNum(next() % 4), SPIFFEID: names[int(next())%len(names)]})
			case 1:
				if len(ids) == 0 {
					continue
				}
				x := &ids[len(ids)-1]
				switch next() % 4 {
				case 0:
					x.Egress = append(x.Egress, names[int(next())%len(names)])
				case 1:
					x.Grants = append(x.Grants, enforcement.Grant{ID: names[int(next())%len(names)], Namespace: []string{"", "a", "b", "-"}[next()%4]})
				default:
					g := enforcement.Grant{Prefix: netip.PrefixFrom(addr(), int(next()%140)), Proto: enforcement.Proto(next() % 20)}
					for range next() % 3 {
						g.Ports = append(g.Ports, uint16(next())<<8|uint16(next()))
					}
					x.Grants = append(x.Grants, g)
				}
			default:
				ls = append(ls, enforcement.Listener{SPIFFEID: names[int(next())%len(names)], Addr: addr(), Port: uint16(next()) % 4})
			}
		}
		p := enforcement.Compile(ids, ls)
		requireCanonical(t, p)
		for _, rs := range p {
			for _, r := range rs {
				require.False(t, r.Prefix.Addr().Is4In6(), "%s", r)
			}
		}
		q := enforcement.Compile(ids[:len(ids)/2], ls[:len(ls)/2])
		add, del := enforcement.Diff(p, q)
		require.True(t, apply(p, del, add).Equal(q))
	})
}

// BenchmarkCompile: 1,000 identities in 10 namespaces, 10 listeners each,
// each declaring 10 destinations (half in its namespace, covered by the
// shipped grant; half elsewhere, a third of those granted by ID) and two
// address grants.
func BenchmarkCompile(b *testing.B) {
	const n, perJob = 1000, 10
	id := func(j int) string { return fmt.Sprintf("spiffe://unum.test/ns/ns%d/job/j%d", j%10, j) }
	var ids []enforcement.Identity
	var ls []enforcement.Listener
	rng := rand.New(rand.NewPCG(1, 1))
	for j := range n {
		x := enforcement.Identity{Num: enforcement.IdentityNum(j + 1), SPIFFEID: id(j), Grants: []enforcement.Grant{
			{Namespace: fmt.Sprintf("ns%d", j%10)},
			{Prefix: netip.MustParsePrefix("10.96.0.10/32"), Ports: []uint16{53}, Proto: enforcement.ProtoUDP},
			{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Ports: []uint16{443}, Proto: enforcement.ProtoTCP},
		}}
		for k := range 10 {
			var d string
			if k < 5 {
				d = id((j + 10*(k+1)) % n) // same namespace
			} else {
				d = id(rng.IntN(n))
				if k%3 == 0 {
					x.Grants = append(x.Grants, enforcement.Grant{ID: d})
				}
			}
			x.Egress = append(x.Egress, d)
		}
		ids = append(ids, x)
		for k := range perJob {
			ls = append(ls, enforcement.Listener{SPIFFEID: id(j), Addr: netip.AddrFrom4([4]byte{10, 1, byte(j / 256), byte(j % 256)}), Port: uint16(20000 + k)})
		}
	}
	var p enforcement.Plan
	for b.Loop() {
		p = enforcement.Compile(ids, ls)
	}
	b.ReportMetric(float64(p.Len()), "rules")
}

// BenchmarkDiff: two plans of 10,000 rules (100 identities of 100 rules)
// that differ in a tenth of their rules.
func BenchmarkDiff(b *testing.B) {
	mk := func(shift int) enforcement.Plan {
		p := enforcement.Plan{}
		for i := range 100 {
			var rs []enforcement.Rule
			for k := range 100 {
				port := k
				if k%10 == 0 {
					port += shift
				}
				rs = append(rs, enforcement.Rule{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 32), Port: uint16(1000 + port), Proto: enforcement.ProtoAny})
			}
			slices.SortFunc(rs, enforcement.CompareRules)
			p[enforcement.IdentityNum(i+1)] = rs
		}
		return p
	}
	old, nw := mk(0), mk(500)
	require.Equal(b, 10000, old.Len())
	var add, del enforcement.Plan
	for b.Loop() {
		add, del = enforcement.Diff(old, nw)
	}
	b.ReportMetric(float64(add.Len()+del.Len()), "changes")
}
