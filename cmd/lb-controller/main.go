// Command lb-controller allocates LoadBalancer IPs and pushes every node's
// desired state to its talos-lb agent.
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

	"github.com/talos-lb/talos-lb/controller/app"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/logging"
	"github.com/talos-lb/talos-lb/pkg/version"
)

func main() {
	var f app.Flags

	flag.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)")
	flag.StringVar(&f.Class, "class", lbservice.DefaultClass, "spec.loadBalancerClass of the Services to handle")
	flag.BoolVar(&f.NoClass, "no-class", false, "also handle LoadBalancer Services without a loadBalancerClass (be the cluster's default load balancer)")
	flag.BoolVar(&f.IgnoreExcludeLabel, "ignore-exclude-label", false, "let nodes labelled node.kubernetes.io/exclude-from-external-load-balancers announce (Talos sets it on control-plane nodes)")
	flag.IntVar(&f.AgentPort, "agent-port", 50070, "port of the agents' gRPC API on each node's InternalIP")
	flag.StringVar(&f.Identity, "identity", os.Getenv("POD_NAME"), "this replica's name in the leader Lease (default: $POD_NAME, else the hostname)")
	flag.StringVar(&f.LeaseNamespace, "lease-namespace", envOr("POD_NAMESPACE", "kube-system"), "namespace of the leader Lease")
	flag.StringVar(&f.LeaseName, "lease-name", "talos-lb-controller", "name of the leader Lease")
	flag.DurationVar(&f.LeaseDuration, "lease-duration", 15*time.Second, "how long a leader's Lease lasts without renewal")
	flag.DurationVar(&f.RenewDeadline, "renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before stepping down")
	flag.DurationVar(&f.RetryPeriod, "retry-period", 2*time.Second, "how often candidates try to take or renew the Lease")
	flag.DurationVar(&f.Resync, "resync", 30*time.Second, "re-run a pass and re-push all agents this often without changes")
	flag.StringVar(&f.CA, "ca", "/etc/talos-lb/ca.crt", "talos-lb CA certificate")
	flag.StringVar(&f.Cert, "cert", "/etc/talos-lb/controller.crt", "controller certificate (role controller, from lbctl gen secrets)")
	flag.StringVar(&f.Key, "key", "/etc/talos-lb/controller.key", "controller key")
	flag.StringVar(&f.Listen, "listen", ":"+client.DefaultControllerPort, "gRPC address lbctl reads from")
	flag.StringVar(&f.MetricsListen, "metrics-listen", ":9475", "Prometheus metrics address (empty: off)")
	logFormat := flag.String("log-format", "json", "log format: json or console")
	showVersion := flag.Bool("version", false, "print the version and exit")

	flag.Parse()

	if *showVersion {
		fmt.Println(version.String())

		return
	}

	logger, err := logging.New(*logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-controller:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := app.Main(ctx, f, logger); err != nil {
		logger.Error("controller failed", zap.Error(err))
		logger.Sync() //nolint:errcheck
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}

	return def
}
