package membership

import (
	"bytes"
	"context"
	"log/slog"
)

// logWriter turns memberlist's log lines ("2026/01/02 15:04:05 [WARN]
// memberlist: text") into slog records at the matching level.
type logWriter struct {
	logger *slog.Logger
}

var logLevels = []struct {
	tag   []byte
	level slog.Level
}{
	{[]byte("[DEBUG]"), slog.LevelDebug},
	{[]byte("[INFO]"), slog.LevelInfo},
	{[]byte("[WARN]"), slog.LevelWarn},
	{[]byte("[ERR]"), slog.LevelError},
	{[]byte("[ERROR]"), slog.LevelError},
}

func (w logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range logLevels {
		if i := bytes.Index(line, l.tag); i >= 0 {
			level = l.level
			line = bytes.TrimSpace(line[i+len(l.tag):])
			break
		}
	}
	if w.logger.Enabled(context.Background(), level) {
		w.logger.Log(context.Background(), level, string(line), "component", "memberlist")
	}
	return len(p), nil
}
