package faultcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runPrefix starts every run's prefix: "unf" and five random characters
// (newRunLock), e.g. unfk3x9a. Names derived from it fit the kernel's
// 15-character link names. Whether a run is alive is never read from the
// name: it is its lock (newRunLock).
const runPrefix = "unf"

// linkMark is the alias every link a run creates carries: the sweep deletes
// a link only when its alias names a dead run, never for its name alone.
func linkMark(prefix string) string { return "unum-faultcluster:" + prefix }

// faultChain is the iptables chain, in each node's namespace, that holds the
// partition rules: INPUT and OUTPUT jump to it, Heal flushes it.
const faultChain = "UNUM-FAULT"

// network is the bridge, the namespaces and the veth pairs of one run.
type network struct {
	prefix string     // the run's prefix
	bridge string     // <prefix>br
	subnet [3]byte    // 10.a.b
	nodes  []*netNode // index i holds host .i+1
}

type netNode struct {
	ns   string     // namespace name: the node's name, <prefix>-<node>
	veth string     // host side of the veth pair, on the bridge
	addr netip.Addr // inside the namespace
}

// requiredTools are the commands the harness runs.
func requiredTools() []string { return []string{"ip", "iptables", "tc", "nsenter"} }

// missingTools names the required commands not in PATH.
func missingTools() []string {
	var missing []string
	for _, t := range requiredTools() {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	return missing
}

// run runs a command and returns its combined output, with the command in
// the error. 90 s: `unum init` runs through it and starts etcd, which on
// two busy cores can take tens of seconds.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// inNS runs a command inside namespace ns, through nsenter (see doc.go).
func inNS(ctx context.Context, ns string, name string, args ...string) (string, error) {
	return run(ctx, "nsenter", append([]string{"--net=" + nsPath(ns), "--", name}, args...)...)
}

func nsPath(ns string) string { return filepath.Join("/run/netns", ns) }

// pickSubnet chooses 10.a.b.0/24 overlapping no address or route of the
// root namespace (another run's bridge included).
func pickSubnet(ctx context.Context) ([3]byte, error) {
	var taken []netip.Prefix
	for _, args := range [][]string{{"-o", "-4", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := run(ctx, "ip", args...)
		if err != nil {
			return [3]byte{}, err
		}
		for _, f := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(f); err == nil {
				taken = append(taken, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
				taken = append(taken, netip.PrefixFrom(a, 32))
			}
		}
	}
	for range 200 {
		// 10.77.0.0 – 10.254.255.0: leaves 10.0–76 to whatever a host
		// network usually puts there.
		s := [3]byte{10, byte(77 + rand.N(178)), byte(rand.N(256))}
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{s[0], s[1], s[2], 0}), 24)
		free := true
		for _, p := range taken {
			if p.Overlaps(cand) && p.Bits() > 0 {
				free = false
				break
			}
		}
		if free {
			return s, nil
		}
	}
	return [3]byte{}, errors.New("no free /24 in 10.0.0.0/8")
}

func (n *network) hostAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{n.subnet[0], n.subnet[1], n.subnet[2], byte(i)})
}

// setUp creates the bridge (root namespace .254) and one namespace per
// name, each with lo up and a veth into the bridge at .1, .2, ….
func setUpNetwork(ctx context.Context, prefix string, names []string) (*network, error) {
	subnet, err := pickSubnet(ctx)
	if err != nil {
		return nil, err
	}
	n := &network{prefix: prefix, bridge: prefix + "br", subnet: subnet}
	steps := [][]string{
		{"link", "add", n.bridge, "type", "bridge"},
		{"link", "set", "dev", n.bridge, "alias", linkMark(prefix)},
		{"addr", "add", n.hostAddr(254).String() + "/24", "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return n, err
		}
	}
	for i, name := range names {
		nn := &netNode{ns: name, veth: fmt.Sprintf("%sv%d", prefix, i+1), addr: n.hostAddr(i + 1)}
		n.nodes = append(n.nodes, nn)
		peer := fmt.Sprintf("%sp%d", prefix, i+1)
		for _, s := range [][]string{
			{"netns", "add", nn.ns},
			{"link", "add", nn.veth, "type", "veth", "peer", "name", peer},
			{"link", "set", "dev", nn.veth, "alias", linkMark(prefix)},
			{"link", "set", peer, "netns", nn.ns},
			{"link", "set", nn.veth, "master", n.bridge},
			{"link", "set", nn.veth, "up"},
			{"-n", nn.ns, "link", "set", "lo", "up"},
			{"-n", nn.ns, "link", "set", peer, "name", "eth0"},
			{"-n", nn.ns, "addr", "add", nn.addr.String() + "/24", "dev", "eth0"},
			{"-n", nn.ns, "link", "set", "eth0", "up"},
		} {
			if _, err := run(ctx, "ip", s...); err != nil {
				return n, err
			}
		}
		for _, s := range [][]string{
			{"-N", faultChain},
			{"-A", "INPUT", "-j", faultChain},
			{"-A", "OUTPUT", "-j", faultChain},
		} {
			if _, err := inNS(ctx, nn.ns, "iptables", s...); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// tearDown removes the namespaces (their veth ends go with them) and the
// bridge. It tries everything and reports every failure.
func (n *network) tearDown(ctx context.Context) error {
	var errs []error
	for _, nn := range n.nodes {
		if _, err := run(ctx, "ip", "netns", "del", nn.ns); err != nil {
			errs = append(errs, err)
		}
		// Normally gone with the namespace; a half-made node may have left it.
		if linkExists(ctx, nn.veth) {
			_, _ = run(ctx, "ip", "link", "del", nn.veth)
		}
	}
	if _, err := run(ctx, "ip", "link", "del", n.bridge); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func linkExists(ctx context.Context, name string) bool {
	_, err := run(ctx, "ip", "link", "show", "dev", name)
	return err == nil
}

// drop adds DROP rules to and from peer in node i's namespace.
func (n *network) drop(ctx context.Context, i int, peer netip.Addr) error {
	ns := n.nodes[i].ns
	if _, err := inNS(ctx, ns, "iptables", "-A", faultChain, "-s", peer.String(), "-j", "DROP"); err != nil {
		return err
	}
	_, err := inNS(ctx, ns, "iptables", "-A", faultChain, "-d", peer.String(), "-j", "DROP")
	return err
}

// flush removes node i's partition rules.
func (n *network) flush(ctx context.Context, i int) error {
	_, err := inNS(ctx, n.nodes[i].ns, "iptables", "-F", faultChain)
	return err
}

// shape puts tbf on both ends of node i's link: traffic to the node (the
// bridge side) and from it (the namespace side). rate is tc's syntax
// ("1mbit"); latency bounds the queue, so at a low rate packets wait up to
// that long.
func (n *network) shape(ctx context.Context, i int, rate string, latency time.Duration) error {
	lat := strconv.FormatInt(latency.Milliseconds(), 10) + "ms"
	args := []string{"qdisc", "replace", "dev", "", "root", "tbf", "rate", rate, "burst", "16kb", "latency", lat}
	args[3] = n.nodes[i].veth
	if _, err := run(ctx, "tc", args...); err != nil {
		return err
	}
	args[3] = "eth0"
	_, err := inNS(ctx, n.nodes[i].ns, "tc", args...)
	return err
}

// unshape removes node i's tbf.
func (n *network) unshape(ctx context.Context, i int) error {
	_, err1 := run(ctx, "tc", "qdisc", "del", "dev", n.nodes[i].veth, "root")
	_, err2 := inNS(ctx, n.nodes[i].ns, "tc", "qdisc", "del", "dev", "eth0", "root")
	return errors.Join(err1, err2)
}
