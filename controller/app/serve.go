package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/talos-lb/talos-lb/agent/grpcapi"
	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/version"
)

// Flags are lb-controller's command line.
type Flags struct {
	Kubeconfig         string
	Class              string
	NoClass            bool
	IgnoreExcludeLabel bool
	AgentPort          int
	Identity           string
	LeaseNamespace     string
	LeaseName          string
	LeaseDuration      time.Duration
	RenewDeadline      time.Duration
	RetryPeriod        time.Duration
	Resync             time.Duration
	// CA, Cert and Key are the talos-lb controller credentials (lbctl gen secrets):
	// the same certificate dials agents and serves lbctl.
	CA, Cert, Key string
	Listen        string
	MetricsListen string
}

// Main runs lb-controller until ctx ends.
func Main(ctx context.Context, f Flags, logger *zap.Logger) error {
	kube, err := kubeConfig(f.Kubeconfig)
	if err != nil {
		return err
	}

	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return fmt.Errorf("--ca: %w", err)
	}

	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}

	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}

	clientTLS, err := pki.ClientTLS(caPEM, certPEM, keyPEM, pki.AgentServerName)
	if err != nil {
		return fmt.Errorf("controller credentials: %w", err)
	}

	serverTLS, err := pki.ServerTLS(caPEM, certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("controller credentials: %w", err)
	}

	if f.Identity == "" {
		f.Identity, _ = os.Hostname() //nolint:errcheck // an empty identity is refused below
	}

	if f.Identity == "" {
		return errors.New("--identity: empty and no hostname to default to")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	c, err := New(ctx, Options{
		Kube:               kube,
		Classes:            lbservice.Classes{Class: f.Class, NoClass: f.NoClass},
		IgnoreExcludeLabel: f.IgnoreExcludeLabel,
		AgentPort:          f.AgentPort,
		Identity:           f.Identity,
		LeaseNamespace:     f.LeaseNamespace,
		LeaseName:          f.LeaseName,
		LeaseDuration:      f.LeaseDuration,
		RenewDeadline:      f.RenewDeadline,
		RetryPeriod:        f.RetryPeriod,
		PushTLS:            clientTLS,
		Resync:             f.Resync,
		Registry:           reg,
		Logger:             logger,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.Listen, err)
	}

	api := grpcapi.New(grpcapi.Options{
		State:    c.State,
		Reloader: c,
		NodeName: f.Identity,
		Version:  version.Version,
		TLS:      serverTLS,
		Registry: reg,
		Logger:   logger,
	})

	g, gctx := errgroup.WithContext(ctx)

	g.Go(func() error { return api.Serve(ln) })
	g.Go(func() error {
		<-gctx.Done()
		api.Stop(2 * time.Second)

		return nil
	})

	if f.MetricsListen != "" {
		mln, err := net.Listen("tcp", f.MetricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", f.MetricsListen, err)
		}

		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

		g.Go(func() error {
			if err := srv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}

			return nil
		})
		g.Go(func() error {
			<-gctx.Done()

			return srv.Close()
		})
	}

	g.Go(func() error { return c.Run(gctx) })

	return g.Wait()
}

// Reload makes `lbctl --controller reload` run a pass and push now.
func (c *Controller) Reload(context.Context) (bool, uint64, error) {
	c.Kick()

	return true, 0, nil
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path

	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (pass --kubeconfig, set KUBECONFIG, or run in a cluster)", err)
	}

	return cfg, nil
}
