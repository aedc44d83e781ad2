package meta

import (
	"context"
	"log/slog"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// rejectedEndpoint maps the warnings etcd logs for a failed TLS handshake
// (embed's logTLSHandshakeFailureFunc, one message per listener) to the
// listener: "client" or "peer". They are kept although etcd runs at error
// level: a refused handshake is how an attempt to reach etcd without a
// member certificate shows up. Exact messages, so that another warning
// that merely mentions a peer is not taken for one.
func rejectedEndpoint(msg string) (endpoint string, ok bool) {
	switch msg {
	case "rejected connection on client endpoint":
		return "client", true
	case "rejected connection on peer endpoint":
		return "peer", true
	}
	return "", false
}

// refusesCaller reports whether a failed handshake's error is etcd
// refusing the caller's credential: no certificate, one that does not
// verify against the etcd CA (another CA, expired), or one of the etcd CA
// with another CN (TLSInfo.AllowedCNs). Every other failure is not a
// refusal of anyone: a TCP probe that hangs up (EOF, reset), a handshake
// that timed out, a connection etcd closed at shutdown, a client that
// speaks no TLS or no TLS 1.3, or a client refusing etcd's certificate
// ("remote error: …", the alert the caller sent). Recording those as
// authn.etcd denials would be false refusals, which anyone scanning the
// port could cause at will.
func refusesCaller(err string) bool {
	if err == "" || strings.HasPrefix(err, "remote error:") {
		return false
	}
	for _, s := range []string{
		"client didn't provide a certificate",      // crypto/tls, RequireAndVerifyClientCert
		"failed to verify certificate",             // crypto/tls: chain verification failed
		"x509: ",                                   // a verification error reported without that prefix
		"client certificate authentication failed", // etcd's AllowedCNs check
	} {
		if strings.Contains(err, s) {
			return true
		}
	}
	return false
}

// Refusal is a connection etcd refused at the TLS handshake: no
// certificate, one from another CA (a node or workload SVID), or one of
// the etcd CA with another CN.
type Refusal struct {
	// Endpoint is "client" or "peer".
	Endpoint string
	// Remote is the caller's address.
	Remote string
	// Reason is etcd's handshake error.
	Reason string
}

// newZapLogger returns a zap logger that forwards etcd's errors and its
// refused handshakes (at warning level; other failed handshakes at debug)
// to h, and tells refused of every handshake that refused the caller's
// credential (nil: nobody). etcd logs every raft step at info level; on a
// 2-core node that noise costs CPU and buries what matters.
func newZapLogger(h slog.Handler, refused func(Refusal)) *zap.Logger {
	return zap.New(&slogCore{h: h, refused: refused})
}

// slogCore is a zapcore.Core writing to a slog.Handler.
type slogCore struct {
	h       slog.Handler
	refused func(Refusal)
	fields  []zapcore.Field
}

var _ zapcore.Core = (*slogCore)(nil)

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	merged := make([]zapcore.Field, 0, len(c.fields)+len(fields))
	merged = append(append(merged, c.fields...), fields...)
	return &slogCore{h: c.h, refused: c.refused, fields: merged}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	_, handshake := rejectedEndpoint(e.Message)
	handshake = handshake && e.Level == zapcore.WarnLevel
	if e.Level >= zapcore.ErrorLevel || handshake {
		// Whether a failed handshake is a refusal (and at which level it
		// is logged) depends on its error field, read in Write.
		if (handshake && c.refused != nil) || c.h.Enabled(context.Background(), slogLevel(e.Level)) {
			return ce.AddCore(e, c)
		}
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	level := slogLevel(e.Level)
	if endpoint, ok := rejectedEndpoint(e.Message); ok && e.Level == zapcore.WarnLevel {
		reason, _ := enc.Fields["error"].(string)
		if refusesCaller(reason) {
			if c.refused != nil {
				remote, _ := enc.Fields["remote-addr"].(string)
				c.refused(Refusal{Endpoint: endpoint, Remote: remote, Reason: reason})
			}
		} else {
			level = slog.LevelDebug
		}
	}
	if !c.h.Enabled(context.Background(), level) {
		return nil
	}
	rec := slog.NewRecord(e.Time, level, e.Message, 0)
	rec.AddAttrs(slog.String("component", "etcd"))
	for _, k := range keys {
		rec.AddAttrs(slog.Any(k, enc.Fields[k]))
	}
	return c.h.Handle(context.Background(), rec)
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}
