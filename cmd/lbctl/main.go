// Command lbctl inspects and operates talos-lb agents.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/talos-lb/talos-lb/pkg/lbctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := lbctl.Execute(ctx, os.Args[1:])

	stop()
	os.Exit(code)
}
