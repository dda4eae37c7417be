package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

// Prober runs one probe of a check; nil means the endpoint passed.
type Prober interface {
	Probe(ctx context.Context, check *resourcepb.HealthCheckSpec) error
}

// NetProber probes over the network: TCP connect, or an HTTP(S) GET that must answer 200.
type NetProber struct{}

// Probe implements Prober.
func (NetProber) Probe(ctx context.Context, check *resourcepb.HealthCheckSpec) error {
	switch check.GetKind() {
	case "tcp":
		var d net.Dialer

		conn, err := d.DialContext(ctx, "tcp", check.GetAddress())
		if err != nil {
			return err
		}

		return conn.Close()
	case "http", "https":
		return probeHTTP(ctx, check)
	default:
		return fmt.Errorf("unknown check kind %q", check.GetKind())
	}
}

func probeHTTP(ctx context.Context, check *resourcepb.HealthCheckSpec) error {
	// A fresh transport per probe with keep-alives off: every probe must make a
	// new connection (and TLS handshake), or a dead server hides behind a pooled one.
	transport := &http.Transport{DisableKeepAlives: true, Proxy: nil}

	scheme := "http"
	if check.GetKind() == "https" {
		scheme = "https"

		tlsConfig, err := probeTLS(check)
		if err != nil {
			return err
		}

		transport.TLSClientConfig = tlsConfig
	}

	defer transport.CloseIdleConnections()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+check.GetAddress()+check.GetPath(), nil)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}

	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return unwrapURLError(err)
	}

	defer resp.Body.Close() //nolint:errcheck

	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256)) //nolint:errcheck // the snippet only decorates the error

	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}

	return nil
}

func probeTLS(check *resourcepb.HealthCheckSpec) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         check.GetServerName(),
		InsecureSkipVerify: check.GetInsecureSkipVerify(), //nolint:gosec // the operator asked for it in the config
	}

	if check.GetCaFile() != "" {
		caPEM, err := os.ReadFile(check.GetCaFile())
		if err != nil {
			return nil, fmt.Errorf("reading CA: %w", err)
		}

		pool, err := pki.CertPool(caPEM)
		if err != nil {
			return nil, fmt.Errorf("CA %s: %w", check.GetCaFile(), err)
		}

		cfg.RootCAs = pool
	}

	return cfg, nil
}

// unwrapURLError drops net/http's "Get \"https://...\":" prefix, which repeats the address.
func unwrapURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}

	return err
}
