package member

import (
	"log"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logWriter turns memberlist's log lines ("[LEVEL] memberlist: message") into
// zap entries at the same level, and tells the table about failed probes.
//
// Warnings and errors repeat for as long as a peer is down (a failed
// push/pull, a gossip send error); each distinct message is logged at most
// once per repeatEvery, with the number of copies dropped.
type logWriter struct {
	logger    *zap.Logger
	onSuspect func(name string)
	now       func() time.Time

	mu   sync.Mutex
	seen map[string]*repeat
}

type repeat struct {
	at      time.Time
	dropped int
}

const (
	repeatEvery = 10 * time.Second
	// maxRepeats bounds the memory of messages seen; past it, the memory starts over.
	maxRepeats = 256
)

// newLogger returns the *log.Logger memberlist wants.
func newLogger(logger *zap.Logger, onSuspect func(string)) *log.Logger {
	return log.New(&logWriter{logger: logger, onSuspect: onSuspect, now: time.Now, seen: map[string]*repeat{}}, "", 0)
}

// parseLine splits "[LEVEL] memberlist: message" into a zap level and the message.
func parseLine(line string) (zapcore.Level, string) {
	line = strings.TrimSpace(line)
	level := zapcore.InfoLevel

	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "] "); ok {
			switch tag {
			case "DEBUG", "TRACE":
				level = zapcore.DebugLevel
			case "INFO":
				level = zapcore.InfoLevel
			case "WARN":
				level = zapcore.WarnLevel
			case "ERR", "ERROR":
				level = zapcore.ErrorLevel
			}

			line = msg
		}
	}

	return level, strings.TrimPrefix(line, "memberlist: ")
}

// Write implements io.Writer; log.Logger calls it once per line.
func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLine(string(p))

	if name, ok := suspectFromLog(msg); ok && w.onSuspect != nil {
		w.onSuspect(name)
	}

	if !w.logger.Core().Enabled(level) {
		return len(p), nil
	}

	var fields []zap.Field

	if level >= zapcore.WarnLevel {
		dropped, ok := w.admit(msg)
		if !ok {
			return len(p), nil
		}

		if dropped > 0 {
			fields = append(fields, zap.Int("repeats_dropped", dropped))
		}
	}

	if ce := w.logger.Check(level, msg); ce != nil {
		ce.Write(fields...)
	}

	return len(p), nil
}

// admit says whether msg is logged now, and how many copies were dropped since the last time.
func (w *logWriter) admit(msg string) (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()

	now := w.now()

	r, ok := w.seen[msg]
	if ok && now.Sub(r.at) < repeatEvery {
		r.dropped++

		return 0, false
	}

	if !ok && len(w.seen) >= maxRepeats {
		clear(w.seen)
	}

	dropped := 0
	if ok {
		dropped = r.dropped
	}

	w.seen[msg] = &repeat{at: now}

	return dropped, true
}
