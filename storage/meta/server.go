package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// Production raft timings: etcd's defaults, tuned for a LAN.
const (
	defaultHeartbeat = 100 * time.Millisecond
	defaultElection  = 1000 * time.Millisecond
)

// Storage limits. Control-plane data (membership, policy bundles, job specs,
// assignments, revocations, checkpoints, the range directory) is small and
// hot; these keep etcd's working set bounded and its restarts quick.
const (
	// compactionRetention keeps this many revisions behind the head, enough
	// for a watcher that fell behind for a while to resume without a resync.
	compactionRetention = 10000
	// quotaBackendBytes is etcd's recommended default; past it etcd raises
	// a NOSPACE alarm and refuses writes rather than growing without bound.
	quotaBackendBytes = 2 << 30
	// snapshotCount is the number of applied entries between raft snapshots.
	snapshotCount = 10000
	// MaxTxnOps is etcd's limit on operations per Txn (each of its
	// compare, success and failure lists). BatchReader splits its batches
	// well inside it; the audit witness stores a round's checkpoints of
	// up to MaxTxnOps/2 nodes in one Txn.
	MaxTxnOps = 1024
	// clusterToken distinguishes unum clusters' raft messages from any other
	// etcd cluster's that a misconfigured peer URL might reach.
	clusterToken = "unum"
)

// DevTimings returns relaxed raft timings for tests and `unum dev`, where
// several members share two busy cores: with production timings a member
// that is starved of CPU for a second starts an election.
func DevTimings() (heartbeat, election time.Duration) {
	return 250 * time.Millisecond, 2500 * time.Millisecond
}

// Cluster states for Config.ClusterState.
const (
	ClusterStateNew      = embed.ClusterStateFlagNew
	ClusterStateExisting = embed.ClusterStateFlagExisting
)

// Config describes one etcd member. It is not modified by Start.
type Config struct {
	// Name is the etcd member name: the unum node name.
	Name string
	// DataDir is the member's data folder (DIR/etcd).
	DataDir string
	// ClientURL and PeerURL are https URLs with an IP or host and a port;
	// each is both listened on and advertised.
	ClientURL, PeerURL string
	// InitialCluster lists the members at start, "name=https://host:port,...".
	// A joining member takes it from AddLearner.
	InitialCluster string
	// ClusterState is ClusterStateNew for the first member of a cluster and
	// ClusterStateExisting for a member joining one.
	ClusterState string
	// TLS is the member's certificate, key and the etcd CA.
	TLS TLSFiles
	// HeartbeatInterval and ElectionTimeout are raft's timings; zero means
	// the production defaults (100ms and 1s). See DevTimings.
	HeartbeatInterval, ElectionTimeout time.Duration
	// Logger receives etcd's errors and refused TLS handshakes; nil drops them.
	Logger *slog.Logger
	// Refused, when set, is told of every connection refused at the TLS
	// handshake on either listener (the node audits them, rate-limited:
	// anyone who reaches the port can cause one). It runs on etcd's
	// accepting goroutine and must not block long.
	Refused func(Refusal)
}

// Server is a running etcd member.
type Server struct {
	etcd   *embed.Etcd
	client *clientv3.Client

	closeOnce sync.Once
	closeErr  error
}

// Start starts an etcd member and waits until it has joined its cluster and
// serves clients, or ctx ends. On failure the member is stopped and the error
// carries etcd's own reason when it gave one.
//
// Starting a member that joins an existing cluster contacts its peers before
// Start can observe ctx; etcd bounds that step with its own timeouts.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	ec, errs, err := cfg.embedConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd member %q: %w", cfg.Name, err)
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcd member %q: start: %w", cfg.Name, withReason(err, errs))
	}
	fail := func(err error) (*Server, error) {
		e.Close()
		return nil, fmt.Errorf("etcd member %q: %w", cfg.Name, withReason(err, errs))
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return fail(err)
	case <-e.Server.StopNotify():
		return fail(errors.New("stopped before it was ready"))
	case <-ctx.Done():
		return fail(fmt.Errorf("not ready: %w", ctx.Err()))
	}
	c, err := NewClient(ctx, []string{cfg.ClientURL}, cfg.TLS)
	if err != nil {
		return fail(fmt.Errorf("connect to own client url: %w", err))
	}
	return &Server{etcd: e, client: c}, nil
}

// Client returns a client that authenticates with the member certificate and
// talks to this member's client URL. It is closed by Close.
func (s *Server) Client() *clientv3.Client { return s.client }

// ID is this member's etcd id.
func (s *Server) ID() uint64 { return uint64(s.etcd.Server.MemberID()) }

// Close stops the member: a leader first hands leadership over, in-flight
// requests get etcd's request timeout to finish, then listeners and the
// data folder are released. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("close etcd client: %w", err)
		}
		s.etcd.Close()
	})
	return s.closeErr
}

func (cfg Config) embedConfig() (*embed.Config, *errorMemo, error) {
	if err := validMemberName(cfg.Name); err != nil {
		return nil, nil, err
	}
	if cfg.DataDir == "" {
		return nil, nil, errors.New("no data dir")
	}
	clientURL, err := parseHTTPSURL("client url", cfg.ClientURL)
	if err != nil {
		return nil, nil, err
	}
	peerURL, err := parseHTTPSURL("peer url", cfg.PeerURL)
	if err != nil {
		return nil, nil, err
	}
	if cfg.InitialCluster == "" {
		return nil, nil, errors.New("no initial cluster")
	}
	if cfg.ClusterState != ClusterStateNew && cfg.ClusterState != ClusterStateExisting {
		return nil, nil, fmt.Errorf("cluster state %q: want %q or %q", cfg.ClusterState, ClusterStateNew, ClusterStateExisting)
	}
	if err := cfg.TLS.checkMember(time.Now(), clientURL.Hostname(), peerURL.Hostname()); err != nil {
		return nil, nil, err
	}
	heartbeat, election := cfg.HeartbeatInterval, cfg.ElectionTimeout
	if heartbeat == 0 {
		heartbeat = defaultHeartbeat
	}
	if election == 0 {
		election = defaultElection
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = cfg.InitialCluster
	ec.ClusterState = cfg.ClusterState
	ec.InitialClusterToken = clusterToken

	// The same policy on both listeners: a verified certificate from the etcd
	// CA with CN RoleCN. AllowedCNs is also checked on the server certificate
	// when this member dials its peers.
	tlsInfo := transport.TLSInfo{
		CertFile:       cfg.TLS.CertFile,
		KeyFile:        cfg.TLS.KeyFile,
		TrustedCAFile:  cfg.TLS.CAFile,
		ClientCertAuth: true,
		AllowedCNs:     []string{RoleCN},
	}
	ec.ClientTLSInfo = tlsInfo
	ec.PeerTLSInfo = tlsInfo
	ec.TlsMinVersion = "TLS1.3"

	ec.TickMs = uint(heartbeat / time.Millisecond)
	ec.ElectionMs = uint(election / time.Millisecond)
	ec.AutoCompactionMode = embed.CompactorModeRevision
	ec.AutoCompactionRetention = strconv.Itoa(compactionRetention)
	ec.QuotaBackendBytes = quotaBackendBytes
	ec.SnapshotCount = snapshotCount
	ec.MaxTxnOps = MaxTxnOps
	ec.StrictReconfigCheck = true
	ec.PreVote = true

	// Nothing but the gRPC API on the client listener: the HTTP gateway is
	// another parser facing the network and nobody here needs it.
	ec.EnableGRPCGateway = false
	ec.EnablePprof = false
	ec.ListenMetricsUrls = nil

	handler := slog.DiscardHandler
	if cfg.Logger != nil {
		handler = cfg.Logger.Handler()
	}
	errs := &errorMemo{}
	ec.Logger = "zap"
	ec.LogLevel = "error"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(errs.wrap(handler), cfg.Refused))
	return ec, errs, nil
}

func parseHTTPSURL(what, s string) (*url.URL, error) {
	// These characters separate members and names in an InitialCluster
	// string; a URL carrying them could smuggle in another member.
	if strings.ContainsAny(s, ",= \t\r\n") {
		return nil, fmt.Errorf("%s %q: must not contain ',', '=' or spaces", what, s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, s, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("%s %q: scheme must be https: etcd is reachable only with a member certificate", what, s)
	}
	if u.Port() == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%s %q: want https://HOST:PORT", what, s)
	}
	if u.Path != "" || u.RawPath != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil || u.Opaque != "" {
		return nil, fmt.Errorf("%s %q: want https://HOST:PORT with nothing after the port", what, s)
	}
	return u, nil
}

// validMemberName refuses names that would corrupt an InitialCluster string
// ("name=url,name=url").
func validMemberName(name string) error {
	if name == "" {
		return errors.New("empty member name")
	}
	if len(name) > 253 {
		return fmt.Errorf("member name %.20q...: longer than 253 bytes", name)
	}
	if strings.ContainsAny(name, "=,") {
		return fmt.Errorf("member name %q: must not contain '=' or ','", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("member name %q: must not contain spaces or control characters", name)
		}
	}
	return nil
}

// errorMemo remembers the last error etcd logged so that a failed Start can
// say why: etcd reports many start-up failures only in its log.
type errorMemo struct {
	mu     sync.Mutex
	msg    string // the log message
	errStr string // its "error" field, if any
}

func (m *errorMemo) wrap(h slog.Handler) slog.Handler { return &memoHandler{Handler: h, memo: m} }

func (m *errorMemo) get() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.errStr == "" {
		return m.msg
	}
	return m.msg + ": " + m.errStr
}

// withReason appends etcd's last logged error to err unless err already
// says the same.
func withReason(err error, m *errorMemo) error {
	if m == nil {
		return err
	}
	m.mu.Lock()
	msg, errStr := m.msg, m.errStr
	m.mu.Unlock()
	if msg == "" || (errStr != "" && strings.Contains(err.Error(), errStr)) {
		return err
	}
	return fmt.Errorf("%w (etcd: %s)", err, m.get())
}

// memoHandler records error records before passing them on. The memo sees
// every error even when the wrapped handler discards it.
type memoHandler struct {
	slog.Handler
	memo *errorMemo
}

func (h *memoHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.Handler.Enabled(ctx, l)
}

func (h *memoHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		errStr := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				errStr = a.Value.String()
				return false
			}
			return true
		})
		h.memo.mu.Lock()
		h.memo.msg, h.memo.errStr = r.Message, errStr
		h.memo.mu.Unlock()
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h *memoHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &memoHandler{Handler: h.Handler.WithAttrs(attrs), memo: h.memo}
}

func (h *memoHandler) WithGroup(name string) slog.Handler {
	return &memoHandler{Handler: h.Handler.WithGroup(name), memo: h.memo}
}
