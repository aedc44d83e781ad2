package meta

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// isSecurityWarning picks the etcd warnings worth keeping although etcd runs
// at error level: a refused TLS handshake is how an attempt to reach etcd
// without a member certificate shows up.
func isSecurityWarning(msg string) bool {
	switch msg {
	case "rejected connection on client endpoint", "rejected connection on peer endpoint":
		return true
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

// newZapLogger returns a zap logger that forwards etcd's errors (and the
// security warnings above) to h, and tells refused of every refused
// handshake (nil: nobody). etcd logs every raft step at info level; on a
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
	security := e.Level == zapcore.WarnLevel && isSecurityWarning(e.Message)
	if e.Level >= zapcore.ErrorLevel || security {
		if (security && c.refused != nil) || c.h.Enabled(context.Background(), slogLevel(e.Level)) {
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
	if c.refused != nil && e.Level == zapcore.WarnLevel && isSecurityWarning(e.Message) {
		r := Refusal{Endpoint: "client", Reason: fmt.Sprint(enc.Fields["error"])}
		if strings.Contains(e.Message, "peer") {
			r.Endpoint = "peer"
		}
		if a, ok := enc.Fields["remote-addr"].(string); ok {
			r.Remote = a
		}
		c.refused(r)
	}
	if !c.h.Enabled(context.Background(), slogLevel(e.Level)) {
		return nil
	}
	rec := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
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
