package member

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestParseLine(t *testing.T) {
	for line, want := range map[string]struct {
		level zapcore.Level
		msg   string
	}{
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n":  {zapcore.DebugLevel, "Stream connection from=127.0.0.1:1"},
		"[INFO] memberlist: Suspect b has failed, no acks received": {zapcore.InfoLevel, "Suspect b has failed, no acks received"},
		"[WARN] memberlist: Refuting a suspect message (from: b)":   {zapcore.WarnLevel, "Refuting a suspect message (from: b)"},
		"[ERR] memberlist: Failed to send gossip to 10.0.0.2:7947":  {zapcore.ErrorLevel, "Failed to send gossip to 10.0.0.2:7947"},
		"[ERROR] memberlist: failed to receive: x":                  {zapcore.ErrorLevel, "failed to receive: x"},
		"no level at all": {zapcore.InfoLevel, "no level at all"},
	} {
		level, msg := parseLine(line)
		assert.Equal(t, want.level, level, line)
		assert.Equal(t, want.msg, msg, line)
	}
}

func TestLoggerLevelsRepeatsAndSuspicion(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)

	var suspected []string

	c := newClock()
	w := &logWriter{logger: zap.New(core), onSuspect: func(n string) { suspected = append(suspected, n) }, now: c.now, seen: map[string]*repeat{}}

	for _, line := range []string{
		"[DEBUG] memberlist: Failed UDP ping: node-b (timeout reached)", // below the level
		"[INFO] memberlist: Suspect node-b has failed, no acks received",
		"[ERR] memberlist: Push/Pull with node-b failed: i/o timeout",
		"[ERR] memberlist: Push/Pull with node-b failed: i/o timeout", // repeated: dropped
		"[ERR] memberlist: Push/Pull with node-b failed: i/o timeout",
	} {
		n, err := w.Write([]byte(line + "\n"))
		assert.NoError(t, err)
		assert.Equal(t, len(line)+1, n)
	}

	c.advance(repeatEvery)
	w.Write([]byte("[ERR] memberlist: Push/Pull with node-b failed: i/o timeout\n")) //nolint:errcheck // never fails

	assert.Equal(t, []string{"node-b"}, suspected, "suspicion is seen whatever the log level")

	entries := logs.AllUntimed()
	assert.Len(t, entries, 3)
	assert.Equal(t, zapcore.InfoLevel, entries[0].Level)
	assert.Equal(t, "Suspect node-b has failed, no acks received", entries[0].Message)
	assert.Equal(t, zapcore.ErrorLevel, entries[1].Level)
	assert.Empty(t, entries[1].Context)
	assert.Equal(t, map[string]any{"repeats_dropped": int64(2)}, entries[2].ContextMap())
}

func TestLoggerForgetsWhenFull(t *testing.T) {
	c := newClock()
	w := &logWriter{logger: zap.NewNop(), now: c.now, seen: map[string]*repeat{}}

	for i := range maxRepeats + 10 {
		w.admit(time.Duration(i).String())
	}

	assert.LessOrEqual(t, len(w.seen), maxRepeats)
}
