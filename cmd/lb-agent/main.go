// Command lb-agent is the talos-lb node agent (Talos extension service ext-lb-agent).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/talos-lb/talos-lb/agent/daemon"
	"github.com/talos-lb/talos-lb/pkg/logging"
	"github.com/talos-lb/talos-lb/pkg/version"
)

func main() {
	configPath := flag.String("config", "/usr/local/etc/talos-lb/agent.yaml", "agent config file (mounted by the ExtensionServiceConfig)")
	configPoll := flag.Duration("config-poll", time.Second, "how often to check the config file for changes")
	logFormat := flag.String("log-format", "json", "log format: json or console")
	showVersion := flag.Bool("version", false, "print the version and exit")

	flag.Parse()

	if *showVersion {
		fmt.Println(version.String())

		return
	}

	logger, err := logging.New(*logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-agent:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	reload := make(chan struct{}, 1)

	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()

	if err := daemon.Run(ctx, daemon.Options{ConfigPath: *configPath, ConfigPoll: *configPoll, Logger: logger, Reload: reload}); err != nil {
		logger.Error("agent failed", zap.Error(err))
		logger.Sync() //nolint:errcheck
		os.Exit(1)
	}
}
