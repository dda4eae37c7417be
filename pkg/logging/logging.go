// Package logging builds the structured logger every talos-lb daemon uses.
package logging

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a zap logger writing JSON ("json") or human text ("console").
func New(format string) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Sampling = nil
	// Errors here are operational (a rejected config, an unreachable peer): a stack trace only buries them.
	cfg.DisableStacktrace = true

	switch format {
	case "json":
	case "console":
		cfg.Encoding = "console"
	default:
		return nil, fmt.Errorf("unknown --log-format %q (json or console)", format)
	}

	return cfg.Build()
}
