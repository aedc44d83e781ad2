package cli

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/internal/output"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

// The audit commands read every node's own log with the user's own
// credentials: the CLI lists the nodes through the control plane, then asks
// each node itself (rpc.DialNode authorizes exactly that node's identity),
// so a node never reads another's log on a user's behalf. What a node says
// is checked where it can be: its events must be its own, its checkpoints
// must verify under its published key, and verify checks the node's
// newest checkpoint against the witness's by a consistency proof computed
// here, not by the node's word.

func auditCommands() []*command {
	return []*command{
		{name: "tail", summary: "the newest events of every node; -f follows new ones", run: runAuditTail},
		{name: "query", summary: "events of every node matching filters, oldest first", run: runAuditQuery},
		{name: "verify", summary: "check every node's log against the witness (or --offline DIR: a stopped node's log at rest)", run: runAuditVerify},
		{name: "proof", summary: "print an inclusion proof of EVENT_ID a third party checks offline (--check FILE --keys FILE)", run: runAuditProof},
		{name: "keys", summary: "the published node and witness keys (-o json is what --keys reads)", run: runAuditKeys},
		{name: "export", summary: "every event of every node as JSON lines, for a SIEM", run: runAuditExport},
		{name: "config", summary: "show or set the audit settings (setting them: admin)", run: runAuditConfig},
	}
}

// auditFilterFlags are the filters tail, query and export share.
type auditFilterFlags struct {
	subject, action, outcome, node, kind, decision, cred, since, until string
}

func (a *auditFilterFlags) register(fs *flag.FlagSet, times bool) {
	fs.StringVar(&a.subject, "subject", "", "only events by this SPIFFE ID")
	fs.StringVar(&a.action, "action", "", "only this action, e.g. id.register")
	fs.StringVar(&a.outcome, "outcome", "", "only this outcome: allow, deny or error")
	fs.StringVar(&a.node, "node", "", "only this node's log")
	fs.StringVar(&a.kind, "kind", "", "only this kind of event: authz, authn, svid, token, entry, user, revocation, ca, recovery, policy, node, audit, ...")
	fs.StringVar(&a.decision, "decision", "", "only the event of this decision id")
	fs.StringVar(&a.cred, "cred", "", "only events about delegated credential JTI or one minted from it: its mint, uses, refusals, revocation")
	if times {
		fs.StringVar(&a.since, "since", "", "only events at or after T: RFC 3339, or a duration back from now (10m, 2h, 7d)")
		fs.StringVar(&a.until, "until", "", "only events before T: RFC 3339, or a duration back from now")
	}
}

// filter builds and checks the filter as a node will (audit.FilterFromProto),
// so a bad value is a usage error before anything is dialed.
func (a *auditFilterFlags) filter(now time.Time) (audit.Filter, error) {
	f := audit.Filter{Subject: a.subject, Action: a.action, Node: a.node, DecisionID: a.decision, Cred: a.cred,
		Outcome: audit.Outcome(a.outcome), Kind: audit.Kind(a.kind)}
	var err error
	if f.Since, err = parseWhen(a.since, now); err != nil {
		return audit.Filter{}, usagef("--since: %v", err)
	}
	if f.Until, err = parseWhen(a.until, now); err != nil {
		return audit.Filter{}, usagef("--until: %v", err)
	}
	if _, err := audit.FilterFromProto(audit.FilterToProto(f)); err != nil {
		return audit.Filter{}, usagef("%s", strings.NewReplacer("filter.since_unix_nano", "--since", "filter.until_unix_nano", "--until", "filter.", "--").Replace(err.Error()))
	}
	return f, nil
}

// parseWhen reads T: RFC 3339, or a duration back from now (Go syntax, plus
// a day suffix: 7d, 1d12h). Empty is no bound.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	d, err := parseDays(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-26T10:00:00Z) or a duration back from now (10m, 2h, 7d)", s)
	}
	return now.Add(-d).UTC(), nil
}

func parseDays(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil {
		return 0, err
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, err
		}
		d += r
	}
	return d, nil
}

// auditNodes lists the nodes to ask: every member, or the one named.
func auditNodes(ctx context.Context, cc *grpc.ClientConn, only string) ([]*unumv1.Node, error) {
	resp, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	nodes := resp.GetNodes()
	slices.SortFunc(nodes, func(a, b *unumv1.Node) int { return strings.Compare(a.GetName(), b.GetName()) })
	if only == "" {
		return nodes, nil
	}
	for _, n := range nodes {
		if n.GetName() == only {
			return []*unumv1.Node{n}, nil
		}
	}
	return nil, fmt.Errorf("node %s is not a member of the cluster", only)
}

// shownEvent is one event as a node sent it and as decoded.
type shownEvent struct {
	raw   json.RawMessage
	e     *audit.Event
	index uint64
}

// decodeFrom checks that raw is an event of node's own log.
func decodeFrom(node string, raw []byte) (shownEvent, error) {
	e, err := audit.DecodeEvent(raw)
	if err != nil {
		return shownEvent{}, fmt.Errorf("sent an event that does not decode: %w", err)
	}
	n, i, err := audit.ParseEventID(e.ID)
	if err != nil || n != node || e.Node != node {
		return shownEvent{}, fmt.Errorf("sent event %s of node %s: a node serves only its own log", e.ID, e.Node)
	}
	return shownEvent{raw: raw, e: e, index: i}, nil
}

// eventOrder is the merged order: time, then node, then index.
func eventOrder(a, b shownEvent) int {
	if c := a.e.Time.Compare(b.e.Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.e.Node, b.e.Node); c != 0 {
		return c
	}
	return cmp.Compare(a.index, b.index)
}

// nodeFailure is a node that did not answer, and why.
type nodeFailure struct {
	node string
	err  error
}

func (f nodeFailure) String() string { return f.node + ": " + failureText(f.err) }

// failureText words an error from a node, a denial with its reasons.
func failureText(err error) string {
	if d, ok := rpc.DenialOf(err); ok {
		return d.String()
	}
	return err.Error()
}

// warnFailures says which nodes could not be read, and fails only when
// none answered (returning the first error, so a denial still exits 3).
func warnFailures(e *env, failures []nodeFailure, asked int) error {
	for _, f := range failures {
		fmt.Fprintln(e.stderr, "warning: no answer from node", f.String())
	}
	if asked > 0 && len(failures) == asked {
		return fmt.Errorf("no node answered: %w", failures[0].err)
	}
	return nil
}

// nodeDialer connects to a node's own API. The CLI's dials exactly the
// node's identity with the user's credentials (dialNodeAt); tests dial
// their own servers.
type nodeDialer func(n *unumv1.Node) (*grpc.ClientConn, error)

// queryNode runs a non-following query on node n and returns its events.
func queryNode(ctx context.Context, dial nodeDialer, n *unumv1.Node, req *unumv1.AuditQueryRequest) ([]shownEvent, error) {
	nc, err := dial(n)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	st, err := unumv1.NewAuditClient(nc).Query(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []shownEvent
	for {
		b, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, raw := range b.GetEvents() {
			ev, err := decodeFrom(n.GetName(), raw)
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
	}
}

// queryAll asks every node at once and merges their answers by time.
func queryAll(ctx context.Context, dial nodeDialer, nodes []*unumv1.Node, req *unumv1.AuditQueryRequest) ([]shownEvent, []nodeFailure) {
	all, failures := askEach(nodes, func(n *unumv1.Node) ([]shownEvent, error) { return queryNode(ctx, dial, n, req) })
	slices.SortFunc(all, eventOrder)
	return all, failures
}

// askEach asks every node at once and gathers the answers, and the nodes
// that did not answer (sorted by name) with why.
func askEach[T any](nodes []*unumv1.Node, ask func(n *unumv1.Node) ([]T, error)) ([]T, []nodeFailure) {
	var mu sync.Mutex
	var all []T
	var failures []nodeFailure
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			got, err := ask(n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, nodeFailure{n.GetName(), err})
				return
			}
			all = append(all, got...)
		})
	}
	wg.Wait()
	slices.SortFunc(failures, func(a, b nodeFailure) int { return strings.Compare(a.node, b.node) })
	return all, failures
}

// eventsView is the JSON form of a list of events: each exactly as stored.
type eventsView struct {
	Events []json.RawMessage `json:"events"`
}

func viewEvents(evs []shownEvent) eventsView {
	v := eventsView{Events: make([]json.RawMessage, len(evs))}
	for i, ev := range evs {
		v.Events[i] = ev.raw
	}
	return v
}

const eventHeader = "TIME\tNODE\tACTION\tSUBJECT\tRESOURCE\tOUTCOME\tDECISION"

func eventRow(w io.Writer, e *audit.Event) {
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), e.Node, e.Action,
		dash(e.Subject), dash(e.Resource), e.Outcome, dash(e.DecisionID))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeEvents(e *env, f output.Format, evs []shownEvent) error {
	return output.Write(e.stdout, f, viewEvents(evs), func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, eventHeader)
		for _, ev := range evs {
			eventRow(tw, ev.e)
		}
		return nil
	})
}

// auditSetup is what tail, query and export share: flags parsed, the
// control plane dialed, the nodes to ask listed, and how to dial each.
type auditSetup struct {
	*clientCall
	nodes []*unumv1.Node
	dial  nodeDialer
}

// auditConnect parses args with fs, runs validate, dials the control plane
// and lists the nodes to ask (*only, read after parsing: one node or all).
func (cf *clientFlags) auditConnect(e *env, fs *flag.FlagSet, args []string, only *string, validate func() error) (*auditSetup, error) {
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error { return validate() })
	if err != nil {
		return nil, err
	}
	creds, err := cf.credentials()
	if err != nil {
		c.close()
		return nil, err
	}
	nodes, err := auditNodes(c.ctx, c.conn, *only)
	if err != nil {
		c.close()
		return nil, err
	}
	return &auditSetup{clientCall: c, nodes: nodes, dial: func(n *unumv1.Node) (*grpc.ClientConn, error) { return dialNodeAt(creds, n) }}, nil
}

func runAuditQuery(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit query", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var af auditFilterFlags
	af.register(fs, true)
	limit := fs.Int("limit", 1000, "at most this many events, the oldest first (0: all)")
	var f audit.Filter
	s, err := cf.auditConnect(e, fs, args, &af.node, func() (err error) {
		if *limit < 0 || *limit > 1<<31-2 {
			return usagef("--limit must be between 0 and %d", 1<<31-2)
		}
		f, err = af.filter(time.Now())
		return err
	})
	if err != nil {
		return err
	}
	defer s.close()
	return auditQuery(e, s, f, *limit)
}

// auditQuery prints the first limit events (0: all) of every node
// matching f, merged by time.
func auditQuery(e *env, s *auditSetup, f audit.Filter, limit int) error {
	req := &unumv1.AuditQueryRequest{Filter: audit.FilterToProto(f)}
	if limit > 0 {
		// One more than shown, to tell whether there are more.
		req.Limit = uint32(limit + 1)
	}
	evs, failures := queryAll(s.ctx, s.dial, s.nodes, req)
	if err := warnFailures(e, failures, len(s.nodes)); err != nil {
		return err
	}
	if limit > 0 && len(evs) > limit {
		evs = evs[:limit]
		fmt.Fprintf(e.stderr, "more events match: showing the first %d (--limit, --since)\n", limit)
	}
	return writeEvents(e, s.format, evs)
}

func runAuditTail(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit tail", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var af auditFilterFlags
	af.register(fs, false)
	n := fs.Int("n", 10, "how many of the newest events")
	follow := fs.Bool("f", false, "keep printing new events as they are recorded (until interrupted); -o json prints one event per line")
	var f audit.Filter
	s, err := cf.auditConnect(e, fs, args, &af.node, func() (err error) {
		if *n < 1 || *n > 100000 {
			return usagef("-n must be between 1 and 100000")
		}
		f, err = af.filter(time.Now())
		return err
	})
	if err != nil {
		return err
	}
	defer s.close()
	return auditTail(e, s, f, *n, *follow)
}

// auditTail prints the newest n events of every node matching f, merged
// by time, and with follow every new one until interrupted.
func auditTail(e *env, s *auditSetup, f audit.Filter, n int, follow bool) error {
	req := &unumv1.AuditQueryRequest{Filter: audit.FilterToProto(f), Limit: uint32(n), Tail: true}
	if !follow {
		evs, failures := queryAll(s.ctx, s.dial, s.nodes, req)
		if err := warnFailures(e, failures, len(s.nodes)); err != nil {
			return err
		}
		return writeEvents(e, s.format, evs[max(0, len(evs)-n):])
	}
	req.Follow = true
	return followAll(e, s, req, n)
}

// followItem is what a node's follow stream delivers to the printer.
type followItem struct {
	node     string
	events   []shownEvent
	caughtUp bool
	err      error
}

// followAll opens a following tail on every node, prints the merged newest
// n once every node is caught up (or failed), then every new event as it
// arrives, until interrupted or every stream ended.
func followAll(e *env, s *auditSetup, req *unumv1.AuditQueryRequest, n int) error {
	// The streams outlive the command's timeout: they end with e.ctx.
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	items := make(chan followItem)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, node := range s.nodes {
		wg.Go(func() { followNode(ctx, s.dial, node, req, items) })
	}
	var backlog []shownEvent
	var failures []nodeFailure
	pending := map[string]bool{}
	for _, node := range s.nodes {
		pending[node.GetName()] = true
	}
	open := len(s.nodes)
	printed := false
	tw := tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
	show := func(evs []shownEvent) {
		for _, ev := range evs {
			if s.format == output.Table {
				eventRow(tw, ev.e)
			} else {
				fmt.Fprintf(e.stdout, "%s\n", ev.raw)
			}
		}
		tw.Flush()
	}
	for open > 0 {
		var it followItem
		select {
		case it = <-items:
		case <-e.ctx.Done():
			return nil // interrupted: the normal way to stop following
		}
		switch {
		case it.err != nil:
			open--
			if !errors.Is(it.err, io.EOF) {
				failures = append(failures, nodeFailure{it.node, it.err})
				fmt.Fprintln(e.stderr, "warning: no answer from node", nodeFailure{it.node, it.err}.String())
			}
			delete(pending, it.node)
		case it.caughtUp:
			delete(pending, it.node)
		case printed:
			show(it.events)
			continue
		default:
			backlog = append(backlog, it.events...)
		}
		if !printed && len(pending) == 0 {
			if len(failures) == len(s.nodes) {
				return fmt.Errorf("no node answered: %w", failures[0].err)
			}
			slices.SortFunc(backlog, eventOrder)
			if s.format == output.Table {
				fmt.Fprintln(tw, eventHeader)
			}
			show(backlog[max(0, len(backlog)-n):])
			printed = true
		}
	}
	return nil
}

// followNode runs node n's follow stream, delivering its batches; the last
// item it delivers carries an error (io.EOF when the stream just ended).
func followNode(ctx context.Context, dial nodeDialer, n *unumv1.Node, req *unumv1.AuditQueryRequest, items chan<- followItem) {
	deliver := func(it followItem) bool {
		select {
		case items <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	nc, err := dial(n)
	if err != nil {
		deliver(followItem{node: n.GetName(), err: err})
		return
	}
	defer nc.Close()
	st, err := unumv1.NewAuditClient(nc).Query(ctx, req)
	if err != nil {
		deliver(followItem{node: n.GetName(), err: err})
		return
	}
	for {
		b, err := st.Recv()
		if err != nil {
			deliver(followItem{node: n.GetName(), err: err})
			return
		}
		it := followItem{node: n.GetName(), caughtUp: len(b.GetEvents()) == 0}
		for _, raw := range b.GetEvents() {
			ev, err := decodeFrom(n.GetName(), raw)
			if err != nil {
				deliver(followItem{node: n.GetName(), err: err})
				return
			}
			it.events = append(it.events, ev)
		}
		if !deliver(it) {
			return
		}
	}
}

func runAuditExport(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit export", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var af auditFilterFlags
	af.register(fs, true)
	format := fs.String("format", "jsonl", "jsonl: one event per line, exactly as stored")
	var f audit.Filter
	s, err := cf.auditConnect(e, fs, args, &af.node, func() (err error) {
		if *format != "jsonl" {
			return usagef("--format %q: want jsonl", *format)
		}
		f, err = af.filter(time.Now())
		return err
	})
	if err != nil {
		return err
	}
	defer s.close()
	// An export may take longer than the command's timeout: the streams
	// end with e.ctx.
	return exportMerged(e.ctx, e, s, &unumv1.AuditQueryRequest{Filter: audit.FilterToProto(f)})
}

// exportMerged streams every node's events at once and writes them merged
// by time with memory bounded by one batch per node: each node's log is in
// index order, so the merge takes the earliest head each time.
func exportMerged(ctx context.Context, e *env, s *auditSetup, req *unumv1.AuditQueryRequest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type source struct {
		node  string
		ch    chan followItem
		queue []shownEvent
		done  bool
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var srcs []*source
	for _, n := range s.nodes {
		src := &source{node: n.GetName(), ch: make(chan followItem)}
		srcs = append(srcs, src)
		wg.Go(func() { defer close(src.ch); followNode(ctx, s.dial, n, req, src.ch) })
	}
	out := bufio.NewWriter(e.stdout)
	var failures []nodeFailure
	// fill makes sure a source has a head or is done.
	fill := func(src *source) {
		for len(src.queue) == 0 && !src.done {
			it, ok := <-src.ch
			switch {
			case !ok:
				src.done = true
			case it.err != nil:
				src.done = true
				if !errors.Is(it.err, io.EOF) {
					failures = append(failures, nodeFailure{src.node, it.err})
				}
			default:
				src.queue = it.events
			}
		}
	}
	for {
		var next *source
		for _, src := range srcs {
			fill(src)
			if len(src.queue) > 0 && (next == nil || eventOrder(src.queue[0], next.queue[0]) < 0) {
				next = src
			}
		}
		if next == nil {
			break
		}
		if _, err := fmt.Fprintf(out, "%s\n", next.queue[0].raw); err != nil {
			return err
		}
		next.queue = next.queue[1:]
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return warnFailures(e, failures, len(s.nodes))
}

// verifyLine is one node's verdict in `unum audit verify`.
type verifyLine struct {
	Node          string   `json:"node"`
	OK            bool     `json:"ok"`
	BadIndex      *int64   `json:"bad_index,omitempty"`
	Problem       string   `json:"problem,omitempty"`
	Entries       uint64   `json:"entries"`
	Pruned        uint64   `json:"pruned"`
	Checkpoints   uint64   `json:"checkpoints"`
	Size          uint64   `json:"size"`
	WitnessedSize uint64   `json:"witnessed_size"`
	Witnesses     []string `json:"witnesses"`
	// KeysUnauthenticated: offline verify used the keys stored in the log.
	KeysUnauthenticated bool `json:"keys_unauthenticated,omitempty"`
}

func (v *verifyLine) fail(index int64, format string, args ...any) verifyLine {
	v.OK, v.Problem = false, fmt.Sprintf(format, args...)
	if index >= 0 {
		v.BadIndex = &index
	}
	return *v
}

func (v verifyLine) String() string {
	if !v.OK {
		if v.BadIndex != nil {
			return fmt.Sprintf("FAIL %s: index %d: %s", v.Node, *v.BadIndex, v.Problem)
		}
		return fmt.Sprintf("FAIL %s: %s", v.Node, v.Problem)
	}
	s := fmt.Sprintf("OK %s: %d entries, %d checkpoints, ", v.Node, v.Entries, v.Checkpoints)
	if v.WitnessedSize == 0 && len(v.Witnesses) == 0 {
		s += "not witnessed yet"
	} else {
		s += fmt.Sprintf("witnessed at size %d", v.WitnessedSize)
		if onlySelf(v.Node, v.Witnesses) {
			s += " by itself only (no independent witness)"
		}
	}
	if v.Pruned > 0 {
		s += fmt.Sprintf(", %d pruned (signed)", v.Pruned)
	}
	if v.KeysUnauthenticated {
		s += "; keys: the copies stored in the log, unauthenticated (pass --keys FILE from `unum audit keys -o json`)"
	}
	return s
}

// checkVerifyAnswer judges a node's Verify answer without trusting the
// node (audit.VerifyAgainst): the witness's checkpoint (nil when none)
// must carry the node's signature and valid countersignatures; the node's
// newest checkpoint must be signed by its published key; and the
// consistency proof must show the witnessed tree is a prefix of the
// node's newest. A node that rewrote or truncated witnessed entries cannot
// pass, whatever its report says.
func checkVerifyAnswer(node string, keys *audit.Keys, witnessed *audit.SignedCheckpoint, resp *unumv1.AuditVerifyResponse) verifyLine {
	v := verifyLine{Node: node, Entries: resp.GetEntries(), Pruned: resp.GetPruned(), Checkpoints: resp.GetCheckpoints(), OK: true, Witnesses: []string{}}
	if witnessed != nil {
		v.WitnessedSize = witnessed.Size
		if ws, err := keys.VerifiedWitnesses(witnessed); err == nil {
			v.Witnesses = ws
		}
	}
	if resp.GetNode() != node {
		return v.fail(-1, "the node answered as %q", resp.GetNode())
	}
	if !resp.GetOk() {
		return v.fail(int64(resp.GetBadIndex()), "%s", resp.GetProblem())
	}
	sc, err := audit.ParseCheckpoint(resp.GetCheckpoint())
	if err != nil {
		return v.fail(-1, "the node's checkpoint: %v", err)
	}
	v.Size = sc.Size
	if sc.Node != node {
		return v.fail(-1, "the node answered with a checkpoint of %s", sc.Node)
	}
	if _, err := keys.VerifiedWitnesses(sc); err != nil {
		return v.fail(-1, "the node's newest checkpoint: %v", err)
	}
	proof, err := audit.HashesFromBytes(resp.GetConsistencyProof())
	if err != nil {
		return v.fail(-1, "the node's consistency proof: %v", err)
	}
	if err := audit.VerifyAgainst(keys, witnessed, sc, proof); err != nil {
		index := int64(-1)
		if witnessed != nil && sc.Size < witnessed.Size {
			index = int64(sc.Size) // the first witnessed entry missing
		}
		return v.fail(index, "%v", err)
	}
	return v
}

// publishedKeys asks the control plane for the published keys.
func publishedKeys(ctx context.Context, cc *grpc.ClientConn) (*audit.Keys, error) {
	resp, err := unumv1.NewAuditClient(cc).Keys(ctx, &unumv1.AuditKeysRequest{})
	if err != nil {
		return nil, fmt.Errorf("published audit keys: %w", err)
	}
	return audit.KeysFromProto(resp)
}

// witnessedCheckpoints asks the witness for the newest countersigned
// checkpoint of each node (of one when node is not empty).
func witnessedCheckpoints(ctx context.Context, cc *grpc.ClientConn, node string) (map[string]*audit.SignedCheckpoint, error) {
	resp, err := unumv1.NewAuditClient(cc).Witnessed(ctx, &unumv1.AuditWitnessedRequest{Node: node})
	if err != nil {
		return nil, fmt.Errorf("witnessed checkpoints: %w", err)
	}
	out := map[string]*audit.SignedCheckpoint{}
	for _, note := range resp.GetCheckpoints() {
		sc, err := audit.ParseCheckpoint(note)
		if err != nil {
			return nil, fmt.Errorf("witnessed checkpoint: %w", err)
		}
		if old, ok := out[sc.Node]; !ok || sc.Size > old.Size {
			out[sc.Node] = sc
		}
	}
	return out, nil
}

func runAuditVerify(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit verify", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	// Each node re-reads and re-hashes its whole log: about 10 s for a
	// million entries on a small machine.
	fs.Lookup("timeout").DefValue, cf.timeout = "5m0s", 5*time.Minute
	only := fs.String("node", "", "only this node")
	offline := fs.String("offline", "", "verify a stopped node's log at rest: DIR is the node's data folder (the log is DIR/audit); no cluster needed")
	keysFile := fs.String("keys", "", "with --offline: the published keys (`unum audit keys -o json`); without, the copies stored in the log, unauthenticated")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	if *offline == "" && *keysFile != "" {
		return usagef("--keys applies to --offline only (online, the keys come from the cluster)")
	}
	var lines []verifyLine
	if *offline != "" {
		if *only != "" {
			return usagef("--node does not apply to --offline (the folder holds one node's log)")
		}
		line, err := verifyOffline(e.ctx, *offline, *keysFile)
		if err != nil {
			return err
		}
		lines = []verifyLine{line}
	} else {
		if lines, err = verifyOnline(e, &cf, *only); err != nil {
			return err
		}
	}
	if err := output.Write(e.stdout, f, struct {
		Nodes []verifyLine `json:"nodes"`
	}{lines}, func(tw *tabwriter.Writer) error {
		for _, l := range lines {
			fmt.Fprintln(tw, l.String())
		}
		return nil
	}); err != nil {
		return err
	}
	var bad []string
	for _, l := range lines {
		if !l.OK {
			bad = append(bad, l.Node)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("audit verify failed for %s", strings.Join(bad, ", "))
	}
	return nil
}

func verifyOnline(e *env, cf *clientFlags, only string) ([]verifyLine, error) {
	cc, ctx, done, err := cf.dial(e)
	if err != nil {
		return nil, err
	}
	defer done()
	creds, err := cf.credentials()
	if err != nil {
		return nil, err
	}
	nodes, err := auditNodes(ctx, cc, only)
	if err != nil {
		return nil, err
	}
	keys, err := publishedKeys(ctx, cc)
	if err != nil {
		return nil, err
	}
	witnessed, err := witnessedCheckpoints(ctx, cc, only)
	if err != nil {
		return nil, err
	}
	lines := make([]verifyLine, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			w := witnessed[n.GetName()]
			resp, err := verifyNode(ctx, creds, n, w)
			if err != nil {
				l := verifyLine{Node: n.GetName(), Witnesses: []string{}}
				lines[i] = l.fail(-1, "no answer: %s", failureText(err))
				return
			}
			lines[i] = checkVerifyAnswer(n.GetName(), keys, w, resp)
		})
	}
	wg.Wait()
	return lines, nil
}

func verifyNode(ctx context.Context, creds *rpc.Credentials, n *unumv1.Node, w *audit.SignedCheckpoint) (*unumv1.AuditVerifyResponse, error) {
	nc, err := dialNodeAt(creds, n)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	req := &unumv1.AuditVerifyRequest{}
	if w != nil {
		req.FromSize = w.Size
	}
	return unumv1.NewAuditClient(nc).Verify(ctx, req)
}

// readKeysFile reads a keys file written from `unum audit keys -o json`.
func readKeysFile(path string) (*audit.Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := audit.ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func verifyOffline(ctx context.Context, dir, keysFile string) (verifyLine, error) {
	var keys *audit.Keys
	if keysFile != "" {
		var err error
		if keys, err = readKeysFile(keysFile); err != nil {
			return verifyLine{}, err
		}
	}
	logDir := node.Layout{Dir: dir}.AuditDir()
	rep, err := audit.VerifyDir(ctx, logDir, keys)
	if err != nil {
		return verifyLine{}, err
	}
	v := verifyLine{Node: rep.Node, OK: true, Entries: rep.Entries, Pruned: rep.Pruned, Checkpoints: rep.Checkpoints,
		Size: rep.Size, WitnessedSize: rep.WitnessedSize, Witnesses: []string{}, KeysUnauthenticated: rep.KeysUnauthenticated}
	if v.Node == "" {
		v.Node = logDir
	}
	if !rep.OK {
		return v.fail(int64(rep.BadIndex), "%s", rep.Problem), nil
	}
	return v, nil
}

func runAuditProof(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit proof", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	fs.Lookup("o").DefValue, cf.output = "json", "json"
	check := fs.String("check", "", "verify the proof bundle in FILE (- for stdin) offline instead of fetching one")
	keysFile := fs.String("keys", "", "with --check: the published keys (`unum audit keys -o json`), required")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	f, err := cf.format()
	if err != nil {
		return err
	}
	if *check != "" {
		if len(pos) != 0 || *keysFile == "" {
			return usagef("usage: unum audit proof --check FILE --keys KEYSFILE")
		}
		return checkProofFile(e, *check, *keysFile, f)
	}
	if len(pos) != 1 || *keysFile != "" {
		return usagef("usage: unum audit proof EVENT_ID [-o json|table] (or --check FILE --keys KEYSFILE)")
	}
	node, _, err := audit.ParseEventID(pos[0])
	if err != nil {
		return usagef("%v", err)
	}
	cc, ctx, done, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer done()
	keys, err := publishedKeys(ctx, cc)
	if err != nil {
		return err
	}
	nc, err := cf.dialNode(ctx, cc, node)
	if err != nil {
		return err
	}
	defer nc.Close()
	resp, err := unumv1.NewAuditClient(nc).Proof(ctx, &unumv1.AuditProofRequest{EventId: pos[0]})
	if err != nil {
		return err
	}
	path, err := audit.HashesFromBytes(resp.GetInclusionProof())
	if err != nil {
		return fmt.Errorf("node %s's proof: %w", node, err)
	}
	b, err := audit.NewProofBundle(resp.GetEvent(), resp.GetIndex(), resp.GetCheckpoint(), path)
	if err != nil {
		return fmt.Errorf("node %s's proof: %w", node, err)
	}
	// Check it as the third party will, before handing it out.
	res, err := b.Verify(keys)
	if err != nil {
		return fmt.Errorf("node %s's proof does not verify: %w", node, err)
	}
	if res.Event.ID != pos[0] {
		return fmt.Errorf("node %s answered with a proof of %s, not %s", node, res.Event.ID, pos[0])
	}
	return output.Write(e.stdout, f, b, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, proofSummary(res))
		return nil
	})
}

func proofSummary(res *audit.ProofResult) string {
	s := fmt.Sprintf("OK: event %s (%s %s, %s) is entry %d of node %s's log, in its checkpoint of size %d signed by %s",
		res.Event.ID, res.Event.Action, dash(res.Event.Subject), res.Event.Outcome, res.Index, res.Checkpoint.Node, res.Checkpoint.Size, res.Checkpoint.Node)
	if len(res.Witnesses) == 0 {
		return s + "; not countersigned by any witness yet (the node's word alone)"
	}
	s += ", countersigned by " + strings.Join(res.Witnesses, ", ")
	if onlySelf(res.Checkpoint.Node, res.Witnesses) {
		s += " (itself only: no independent witness)"
	}
	return s
}

// onlySelf reports whether node is its own only witness: a control node
// that witnessed its own checkpoints. Its countersignature adds nothing
// against the node itself, so the output says so.
func onlySelf(node string, witnesses []string) bool {
	return len(witnesses) > 0 && !slices.ContainsFunc(witnesses, func(w string) bool { return w != node })
}

func checkProofFile(e *env, path, keysFile string, f output.Format) error {
	keys, err := readKeysFile(keysFile)
	if err != nil {
		return err
	}
	var data []byte
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(e.stdin, 2<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	res, err := audit.VerifyProofBundle(data, keys)
	if err != nil {
		fmt.Fprintln(e.stdout, "FAIL:", err)
		return errors.New("the proof does not verify")
	}
	return output.Write(e.stdout, f, struct {
		OK         bool     `json:"ok"`
		EventID    string   `json:"event_id"`
		Node       string   `json:"node"`
		Index      uint64   `json:"index"`
		Size       uint64   `json:"checkpoint_size"`
		LeafHash   string   `json:"leaf_hash"`
		Witnesses  []string `json:"witnesses"`
		Checkpoint string   `json:"checkpoint"`
	}{true, res.Event.ID, res.Checkpoint.Node, res.Index, res.Checkpoint.Size, fmt.Sprintf("%x", res.Leaf[:]), append([]string{}, res.Witnesses...), string(res.Checkpoint.Marshal())},
		func(tw *tabwriter.Writer) error {
			fmt.Fprintln(tw, proofSummary(res))
			return nil
		})
}

func runAuditKeys(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit keys", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	c, err := cf.connect(e, fs, args, 0, "", nil)
	if err != nil {
		return err
	}
	defer c.close()
	keys, err := publishedKeys(c.ctx, c.conn)
	if err != nil {
		return err
	}
	// With the keys go the newest witnessed checkpoints: an offline verify
	// with this file then also catches a log whose witnessed tail was cut
	// off at rest. Reading them is audit.verify; a viewer gets the keys
	// alone, and is told.
	witnessed, err := witnessedCheckpoints(c.ctx, c.conn, "")
	if err != nil {
		fmt.Fprintln(e.stderr, "warning: the keys without the witnessed checkpoints:", failureText(err))
	}
	for node, sc := range witnessed {
		if err := keys.VerifyNode(sc); err != nil {
			return fmt.Errorf("the witness's checkpoint of %s: %w", node, err)
		}
		if ws, err := keys.VerifiedWitnesses(sc); err != nil || len(ws) == 0 {
			return fmt.Errorf("the witness's checkpoint of %s carries no valid countersignature: %v", node, err)
		}
		if keys.Checkpoints == nil {
			keys.Checkpoints = map[string]string{}
		}
		keys.Checkpoints[node] = string(sc.Marshal())
	}
	return output.Write(e.stdout, c.format, keys, func(tw *tabwriter.Writer) error {
		fmt.Fprintln(tw, "ROLE\tNAME\tFINGERPRINT\tWITNESSED SIZE")
		for _, role := range []struct {
			name string
			m    map[string][]byte
		}{{audit.KeyRoleNode, keys.Nodes}, {audit.KeyRoleWitness, keys.Witnesses}} {
			names := make([]string, 0, len(role.m))
			for n := range role.m {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				size := "-"
				if sc := witnessed[n]; sc != nil && role.name == audit.KeyRoleNode {
					size = strconv.FormatUint(sc.Size, 10)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", role.name, n, audit.Fingerprint(role.m[n]), size)
			}
		}
		return nil
	})
}

// auditConfigView is the JSON form of the audit settings.
type auditConfigView struct {
	OnFailure        string `json:"on_failure"`
	RetentionSeconds int64  `json:"retention_seconds"`
	RetentionBytes   int64  `json:"retention_bytes"`
}

func runAuditConfig(e *env, args []string) error {
	fs := flag.NewFlagSet("unum audit config", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	onFailure := fs.String("on-failure", "", "what a non-privileged action does when its record cannot be made durable: deny or allow-and-alert (privileged actions always fail closed)")
	retention := fs.Duration("retention", 0, "prune witnessed entries older than this, e.g. 720h (0: keep)")
	retentionBytes := fs.Int64("retention-bytes", 0, "prune witnessed entries beyond this many bytes per node (0: no limit)")
	set := map[string]bool{}
	c, err := cf.connect(e, fs, args, 0, "", func([]string) error {
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		switch {
		case set["on-failure"] && *onFailure != "deny" && *onFailure != "allow-and-alert":
			return usagef("--on-failure %q: want deny or allow-and-alert", *onFailure)
		case *retention < 0:
			return usagef("--retention must not be negative")
		case *retention%time.Second != 0:
			return usagef("--retention must be whole seconds")
		case *retentionBytes < 0:
			return usagef("--retention-bytes must not be negative")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.close()
	ac := unumv1.NewAuditClient(c.conn)
	cfg, err := ac.GetConfig(c.ctx, &unumv1.AuditGetConfigRequest{})
	if err != nil {
		return err
	}
	if set["on-failure"] || set["retention"] || set["retention-bytes"] {
		if set["on-failure"] {
			cfg.OnFailure = *onFailure
		}
		if set["retention"] {
			cfg.RetentionSeconds = int64(*retention / time.Second)
		}
		if set["retention-bytes"] {
			cfg.RetentionBytes = *retentionBytes
		}
		if cfg, err = ac.Configure(c.ctx, &unumv1.AuditConfigureRequest{Config: cfg}); err != nil {
			return err
		}
	}
	v := auditConfigView{OnFailure: cfg.GetOnFailure(), RetentionSeconds: cfg.GetRetentionSeconds(), RetentionBytes: cfg.GetRetentionBytes()}
	if v.OnFailure == "" {
		v.OnFailure = "deny"
	}
	return output.Write(e.stdout, c.format, v, func(tw *tabwriter.Writer) error {
		fmt.Fprintf(tw, "on-failure\t%s\n", v.OnFailure)
		ret := "keep"
		if v.RetentionSeconds > 0 {
			ret = (time.Duration(v.RetentionSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "retention\t%s\n", ret)
		rb := "no limit"
		if v.RetentionBytes > 0 {
			rb = fmt.Sprintf("%d bytes", v.RetentionBytes)
		}
		fmt.Fprintf(tw, "retention-bytes\t%s\n", rb)
		return nil
	})
}
