package binlog

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapSlog forwards go-mysql's slog output to the reader's zap logger, one
// level lower than go-mysql chose: it logs every connection loss at error
// and every (re)connect at info, while the reader already reports both with
// context (attempt, position) at the right level. Without this go-mysql
// would write to slog.Default, a package global.
type zapSlog struct {
	log   *zap.Logger
	attrs []zap.Field
}

func newSlog(log *zap.Logger) *slog.Logger {
	return slog.New(&zapSlog{log: log.Named("go-mysql")})
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.WarnLevel
	case l >= slog.LevelWarn:
		return zapcore.InfoLevel
	default:
		return zapcore.DebugLevel
	}
}

func (h *zapSlog) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

func (h *zapSlog) Handle(_ context.Context, r slog.Record) error {
	ce := h.log.Check(zapLevel(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := append([]zap.Field(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *zapSlog) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &zapSlog{log: h.log, attrs: append([]zap.Field(nil), h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, zap.Any(a.Key, a.Value.Any()))
	}
	return n
}

func (h *zapSlog) WithGroup(name string) slog.Handler {
	return &zapSlog{log: h.log.Named(name), attrs: h.attrs}
}
