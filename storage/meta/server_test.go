package meta

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

func TestStartRefusesBadConfig(t *testing.T) {
	otherCA, otherKey, err := NewCA(time.Now(), time.Hour)
	require.NoError(t, err)
	otherFiles, err := writeMemberTLS(t.TempDir(), otherCA, otherKey)
	require.NoError(t, err)
	node := issueTestCert(t, shared.caCert, shared.caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "node-2"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	leaf, err := x509.ParseCertificate(node.Certificate[0])
	require.NoError(t, err)
	nodeFiles, err := WriteTLSFiles(t.TempDir(), shared.caCert, leaf, node.PrivateKey.(*ecdsa.PrivateKey))
	require.NoError(t, err)

	valid := Config{
		Name: "n1", DataDir: t.TempDir(),
		ClientURL: "https://127.0.0.1:1", PeerURL: "https://127.0.0.1:2",
		InitialCluster: "n1=https://127.0.0.1:2", ClusterState: ClusterStateNew,
		TLS: shared.tls,
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "no name", mutate: func(c *Config) { c.Name = "" }, wantErr: "empty member name"},
		{name: "name with separator", mutate: func(c *Config) { c.Name = "a,b" }, wantErr: "must not contain"},
		{name: "no data dir", mutate: func(c *Config) { c.DataDir = "" }, wantErr: "no data dir"},
		{name: "http peer url", mutate: func(c *Config) { c.PeerURL = "http://127.0.0.1:2" }, wantErr: "scheme must be https"},
		{name: "no port", mutate: func(c *Config) { c.ClientURL = "https://127.0.0.1" }, wantErr: "want https://HOST:PORT"},
		{name: "path", mutate: func(c *Config) { c.ClientURL = "https://127.0.0.1:1/x" }, wantErr: "nothing after the port"},
		{name: "no initial cluster", mutate: func(c *Config) { c.InitialCluster = "" }, wantErr: "no initial cluster"},
		{name: "bad state", mutate: func(c *Config) { c.ClusterState = "join" }, wantErr: "cluster state"},
		{name: "no key", mutate: func(c *Config) { c.TLS.KeyFile = "" }, wantErr: "all required"},
		{name: "key of another certificate", mutate: func(c *Config) { c.TLS.KeyFile = otherFiles.KeyFile }, wantErr: "private key does not match"},
		{name: "certificate of another ca", mutate: func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = otherFiles.CertFile, otherFiles.KeyFile }, wantErr: "unknown authority"},
		{name: "not a member certificate", mutate: func(c *Config) { c.TLS = nodeFiles }, wantErr: `want "unum-control"`},
		{name: "host not covered", mutate: func(c *Config) { c.PeerURL = "https://10.1.2.3:2" }, wantErr: "does not cover 10.1.2.3"},
		{name: "election too short", mutate: func(c *Config) { c.HeartbeatInterval, c.ElectionTimeout = time.Second, time.Second }, wantErr: "election"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			_, err := Start(testContext(t, 5*time.Second), cfg)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// TestStartFailures checks that a member that cannot start says why and
// leaves no port bound.
func TestStartFailures(t *testing.T) {
	// Each case gets its own ports so one case's failure cannot explain
	// another's.
	urls := func(t *testing.T) (clientURL, peerURL string) {
		ports, err := freePorts(2)
		require.NoError(t, err)
		return localURL(ports[0]), localURL(ports[1])
	}
	t.Run("client port taken", func(t *testing.T) {
		_, peerURL := urls(t)
		_, err := Start(testContext(t, 5*time.Second), Config{
			Name: "n2", DataDir: filepath.Join(t.TempDir(), "etcd"),
			ClientURL: shared.clientURL, PeerURL: peerURL,
			InitialCluster: "n2=" + peerURL, ClusterState: ClusterStateNew, TLS: shared.tls,
		})
		require.ErrorContains(t, err, "address already in use")
	})
	t.Run("missing certificate", func(t *testing.T) {
		clientURL, peerURL := urls(t)
		files := shared.tls
		files.CertFile = filepath.Join(t.TempDir(), "missing.pem")
		_, err := Start(testContext(t, 5*time.Second), Config{
			Name: "n2", DataDir: filepath.Join(t.TempDir(), "etcd"),
			ClientURL: clientURL, PeerURL: peerURL,
			InitialCluster: "n2=" + peerURL, ClusterState: ClusterStateNew, TLS: files,
		})
		require.ErrorContains(t, err, "missing.pem")
		for _, u := range []string{clientURL, peerURL} {
			l, err := net.Listen("tcp", hostPort(t, u))
			require.NoError(t, err, "port left bound after a failed start")
			l.Close()
		}
	})
	t.Run("joining a cluster that did not add it", func(t *testing.T) {
		clientURL, peerURL := urls(t)
		_, err := Start(testContext(t, 10*time.Second), Config{
			Name: "n2", DataDir: filepath.Join(t.TempDir(), "etcd"),
			ClientURL: clientURL, PeerURL: peerURL,
			InitialCluster: "node-1=" + shared.peerURL + ",n2=" + peerURL, ClusterState: ClusterStateExisting, TLS: shared.tls,
		})
		require.ErrorContains(t, err, "member count is unequal")
	})
}

func TestZapBridge(t *testing.T) {
	logs := &captureHandler{}
	memo := &errorMemo{}
	lg := newZapLogger(memo.wrap(logs), nil).With(zap.String("member", "n1"))

	lg.Info("raft step")
	lg.Warn("slow fdatasync")
	lg.Warn("rejected connection on client endpoint", zap.String("remote-addr", "127.0.0.1:5"))
	lg.Error("failed to publish", zap.Error(errors.New("no leader")), zap.Int("attempt", 3))

	require.Equal(t, []string{"rejected connection on client endpoint", "failed to publish"}, logs.messages(slog.LevelDebug))
	require.Equal(t, "failed to publish: no leader", memo.get())
	logs.mu.Lock()
	rec := logs.records[1]
	logs.mu.Unlock()
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	require.Equal(t, map[string]string{"component": "etcd", "member": "n1", "error": "no leader", "attempt": "3"}, attrs)

	// A nil Logger discards, but the memo still sees errors.
	quiet := &errorMemo{}
	newZapLogger(quiet.wrap(slog.DiscardHandler), nil).Error("boom")
	require.Equal(t, "boom", quiet.get())
}

// Only a handshake that refused the caller's credential is reported, with
// the listener read from etcd's exact message; a failed handshake that
// refused nobody (a probe hanging up, a timeout, a shutdown, a client
// refusing etcd's certificate) is not, and is logged at debug only.
func TestZapBridgeReportsOnlyRefusals(t *testing.T) {
	for _, c := range []struct {
		name, msg string
		err       error // nil: no error field
		endpoint  string
	}{
		{name: "no certificate", msg: "rejected connection on client endpoint", err: errors.New("tls: client didn't provide a certificate"), endpoint: "client"},
		{name: "another CA", msg: "rejected connection on peer endpoint", err: errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), endpoint: "peer"},
		{name: "another CN", msg: "rejected connection on client endpoint", err: errors.New("client certificate authentication failed"), endpoint: "client"},
		{name: "expired", msg: "rejected connection on peer endpoint", err: errors.New("tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time"), endpoint: "peer"},
		{name: "eof", msg: "rejected connection on client endpoint", err: io.EOF},
		{name: "reset", msg: "rejected connection on client endpoint", err: errors.New("read tcp 127.0.0.1:2379->127.0.0.1:5: read: connection reset by peer")},
		{name: "timeout", msg: "rejected connection on peer endpoint", err: errors.New("read tcp 127.0.0.1:2380->127.0.0.1:5: i/o timeout")},
		{name: "closed at shutdown", msg: "rejected connection on peer endpoint", err: errors.New("use of closed network connection")},
		{name: "not tls", msg: "rejected connection on client endpoint", err: errors.New("tls: first record does not look like a TLS handshake")},
		{name: "caller refused etcd's certificate", msg: "rejected connection on client endpoint", err: errors.New("remote error: tls: bad certificate")},
		{name: "no error field", msg: "rejected connection on client endpoint"},
		{name: "another warning naming a peer", msg: "rejected peer certificate elsewhere", err: errors.New("x509: certificate signed by unknown authority")},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &captureHandler{}
			var got []Refusal
			lg := newZapLogger(logs, func(r Refusal) { got = append(got, r) })
			fields := []zap.Field{zap.String("remote-addr", "127.0.0.1:5"), zap.String("server-name", "")}
			if c.err != nil {
				fields = append(fields, zap.Error(c.err))
			}
			lg.Warn(c.msg, fields...)
			if c.endpoint == "" {
				require.Empty(t, got, "not a refusal of the caller")
				require.Empty(t, logs.messages(slog.LevelWarn), "logged below warning")
				return
			}
			require.Equal(t, []Refusal{{Endpoint: c.endpoint, Remote: "127.0.0.1:5", Reason: c.err.Error()}}, got)
			require.Equal(t, []string{c.msg}, logs.messages(slog.LevelWarn))
		})
	}
}
