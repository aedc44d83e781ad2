package meta

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// shared is one single-member cluster that every test which neither stops
// members nor changes membership uses; starting etcd costs about a second.
var shared *testCluster

type testCluster struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	tls    TLSFiles
	srv    *Server
	// clientURL and peerURL are the shared member's listeners.
	clientURL, peerURL string
	// logs holds what the shared member logged.
	logs *captureHandler
	// refused holds the handshakes it reported refused (Config.Refused).
	refused *refusals
}

// refusals records Config.Refused reports.
type refusals struct {
	mu  sync.Mutex
	all []Refusal
}

func (r *refusals) add(x Refusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, x)
}

func (r *refusals) list() []Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Refusal(nil), r.all...)
}

// captureHandler records log records for tests to inspect.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *captureHandler) WithGroup(string) slog.Handler            { return h }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// messages returns the messages logged at level or above.
func (h *captureHandler) messages(level slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level >= level {
			out = append(out, r.Message)
		}
	}
	return out
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	// Fuzz workers run only fuzz targets, none of which needs etcd; each
	// worker is its own process and would start a member of its own.
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "meta-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	c, err := newSharedCluster(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start shared etcd:", err)
		return 1
	}
	shared = c
	defer c.srv.Close()
	return m.Run()
}

func newSharedCluster(dir string) (*testCluster, error) {
	caCert, caKey, err := NewCA(time.Now(), 24*time.Hour)
	if err != nil {
		return nil, err
	}
	files, err := writeMemberTLS(filepath.Join(dir, "keys"), caCert, caKey)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	clientURL, peerURL := localURL(ports[0]), localURL(ports[1])
	hb, el := DevTimings()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs := &captureHandler{}
	refused := &refusals{}
	srv, err := Start(ctx, Config{
		Logger:            slog.New(logs),
		Refused:           refused.add,
		Name:              "node-1",
		DataDir:           filepath.Join(dir, "etcd"),
		ClientURL:         clientURL,
		PeerURL:           peerURL,
		InitialCluster:    "node-1=" + peerURL,
		ClusterState:      ClusterStateNew,
		TLS:               files,
		HeartbeatInterval: hb,
		ElectionTimeout:   el,
	})
	if err != nil {
		return nil, err
	}
	return &testCluster{dir: dir, caCert: caCert, caKey: caKey, tls: files, srv: srv, clientURL: clientURL, peerURL: peerURL, logs: logs, refused: refused}, nil
}

// writeMemberTLS issues a fresh member certificate for 127.0.0.1 and writes
// it with the CA into dir.
func writeMemberTLS(dir string, caCert *x509.Certificate, caKey *ecdsa.PrivateKey) (TLSFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	cert, err := IssueMemberCert(caCert, caKey, &key.PublicKey, []string{"127.0.0.1", "localhost"}, time.Now(), time.Hour)
	if err != nil {
		return TLSFiles{}, err
	}
	return WriteTLSFiles(dir, caCert, cert, key)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// All listeners stay open until every port is chosen so none repeats.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func localURL(port int) string { return fmt.Sprintf("https://127.0.0.1:%d", port) }

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
