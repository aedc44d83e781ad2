package enforcement

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/identity"
)

// Grant is one thing the policy lets an identity reach (policy.NetGrant,
// converted by the caller): exactly one of ID (that workload's listeners),
// Namespace (the listeners of every workload in it) and Prefix (an external
// destination, on Ports, or every port when Ports is empty, with Proto). A
// grant that sets none or more than one is ignored: it grants nothing.
type Grant struct {
	ID        string
	Namespace string
	Prefix    netip.Prefix
	Ports     []uint16
	Proto     Proto
}

// Identity is one workload identity as the compiler sees it: its number,
// what its job declared it will call, and what the policy grants it.
type Identity struct {
	Num       IdentityNum
	SPIFFEID  string
	Namespace string
	// Egress are the SPIFFE IDs the job declared (its spec's egress).
	Egress []string
	// Grants are what data.unum.network.egress gave it.
	Grants []Grant
}

// Listener is one port a task listens on: the task's identity, its node's
// address and the port the scheduler allocated to it.
type Listener struct {
	SPIFFEID string
	Addr     netip.Addr
	Port     uint16
}

// Plan is what the kernel's maps hold: every identity's allow rules. A plan
// from Compile or Diff is canonical: each slice is sorted by CompareRules
// and free of duplicates, and no identity has an empty slice (it is absent
// instead), so two canonical plans are Equal exactly when they allow the
// same tuples. Identity 0 never appears.
type Plan map[IdentityNum][]Rule

// Compile turns the policy's grants and the scheduler's listeners into a
// plan. It is a pure function of its arguments (the order of ids, listeners
// and grants does not matter) and never fails: whatever it cannot compile
// it leaves out, so a mistake closes a path and never opens one.
//
// # Identity destinations
//
// An identity may reach a workload D exactly when D is in its Egress (its
// job declared it) AND one of its grants covers D: a grant whose ID is D,
// or whose Namespace is D's namespace (the NS of spiffe://TD/ns/NS/...). The
// policy's net.connect decision is the same rule (policy/builtin/authz.rego),
// so the egress check at job submission and the kernel agree. Declaring
// egress grants nothing by itself and a grant opens nothing the job did not
// declare (T-117). An identity's own listeners follow the same rule: its
// replicas reach each other only when it declares itself.
//
// Each reachable D gives one rule per listener of D: its address as a /32
// (IPv4) or /128, its port, protocol any. A job's ports have no protocol
// (jobspec: a port is a name the scheduler gives a number), and the number
// is the task's on that address whichever protocol it speaks, so one "any"
// rule is exact where tcp and udp would be two rules for the same
// reachability: a task can only create TCP and UDP sockets (the
// sock_create hook refuses every other IPv4/IPv6 socket), so those are the
// only protocols the connect and sendmsg hooks ever judge.
//
// Listeners with no valid address, a zoned address or port 0 are skipped:
// port 0 would read as "every port". IPv4-mapped addresses are written as
// IPv4.
//
// # Address destinations
//
// A grant's Prefix gives rules directly: one per port (port 0, every port,
// when Ports is empty; a 0 inside Ports is skipped), with the grant's Proto.
// Host bits are cleared and an IPv4-mapped prefix of /96 or longer becomes
// the IPv4 prefix it covers. A prefix grant is about addresses, not
// identities: one that covers node addresses opens them whatever listens
// there. A grant with an invalid prefix or an unknown protocol is skipped.
//
// Identities numbered 0 are skipped; two identities with the same number
// get the union of their rules; an identity with no rules is absent.
func Compile(ids []Identity, listeners []Listener) Plan {
	at := make(map[string][]Rule)
	for _, l := range listeners {
		a := l.Addr.Unmap()
		if !a.IsValid() || a.Zone() != "" || l.Port == 0 {
			continue
		}
		at[l.SPIFFEID] = append(at[l.SPIFFEID], Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Port: l.Port, Proto: ProtoAny})
	}
	plan := make(Plan)
	for _, id := range ids {
		if id.Num == 0 {
			continue
		}
		rules := plan[id.Num]
		byID, byNS := map[string]bool{}, map[string]bool{}
		for _, g := range id.Grants {
			switch {
			case g.ID != "" && g.Namespace == "" && !g.Prefix.IsValid():
				byID[g.ID] = true
			case g.Namespace != "" && g.ID == "" && !g.Prefix.IsValid():
				byNS[g.Namespace] = true
			case g.Prefix.IsValid() && g.ID == "" && g.Namespace == "":
				rules = appendPrefixRules(rules, g)
			}
		}
		for _, d := range id.Egress {
			if byID[d] || byNS[workloadNamespace(d)] {
				rules = append(rules, at[d]...)
			}
		}
		if rules = canonical(rules); len(rules) > 0 {
			plan[id.Num] = rules
		}
	}
	return plan
}

// appendPrefixRules adds the rules of an address grant, if it is valid.
func appendPrefixRules(rules []Rule, g Grant) []Rule {
	p := g.Prefix.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	r := Rule{Prefix: p, Proto: g.Proto}
	if r.Validate() != nil {
		return rules
	}
	if len(g.Ports) == 0 {
		return append(rules, r)
	}
	for _, port := range g.Ports {
		if port != 0 {
			r.Port = port
			rules = append(rules, r)
		}
	}
	return rules
}

// workloadNamespace is the namespace of a workload ID as identity.Classify
// reads it; "" for anything else (not a valid SPIFFE ID, or not a
// workload), which no namespace grant covers.
func workloadNamespace(s string) string {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return ""
	}
	if p := identity.Classify(id); p.Kind == identity.KindWorkload {
		return p.Namespace
	}
	return ""
}

// CanonicalRules sorts rules by CompareRules and drops duplicates, in
// place: the form a Plan holds.
func CanonicalRules(rules []Rule) []Rule { return canonical(rules) }

func canonical(rules []Rule) []Rule {
	slices.SortFunc(rules, CompareRules)
	return slices.Compact(rules)
}

// Diff is what changes from old to new: the rules to delete (in old, not in
// new) and to add (in new, not in old), each a canonical plan. Deleting del
// from old and then adding add gives new. Both plans must be canonical.
func Diff(old, new Plan) (add, del Plan) {
	add, del = make(Plan), make(Plan)
	for num, o := range old {
		a, d := diffRules(o, new[num])
		if len(a) > 0 {
			add[num] = a
		}
		if len(d) > 0 {
			del[num] = d
		}
	}
	for num, n := range new {
		if _, ok := old[num]; !ok && len(n) > 0 {
			add[num] = slices.Clone(n)
		}
	}
	return add, del
}

// diffRules walks two sorted rule lists once.
func diffRules(old, new []Rule) (add, del []Rule) {
	i, j := 0, 0
	for i < len(old) && j < len(new) {
		switch c := CompareRules(old[i], new[j]); {
		case c < 0:
			del = append(del, old[i])
			i++
		case c > 0:
			add = append(add, new[j])
			j++
		default:
			i++
			j++
		}
	}
	del = append(del, old[i:]...)
	add = append(add, new[j:]...)
	return add, del
}

// Equal reports whether p and q hold the same rules (both canonical).
func (p Plan) Equal(q Plan) bool {
	return maps.EqualFunc(p, q, func(a, b []Rule) bool { return slices.Equal(a, b) })
}

// Len is the number of rules in p.
func (p Plan) Len() int {
	n := 0
	for _, rs := range p {
		n += len(rs)
	}
	return n
}
