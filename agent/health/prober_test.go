package health_test

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/talos-lb/talos-lb/agent/health"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

func TestNetProberHTTPS(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)

			return
		}

		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte("[-]etcd failed"))
	}))
	defer srv.Close()

	caFile := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))

	check := &resourcepb.HealthCheckSpec{
		Name: "apiserver", Kind: "https", Address: srv.Listener.Addr().String(), Path: "/readyz",
		CaFile: caFile, ServerName: "example.com", Timeout: durationpb.New(time.Second),
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	var p health.NetProber
	require.NoError(t, p.Probe(ctx, check))

	status.Store(http.StatusInternalServerError)
	require.EqualError(t, p.Probe(ctx, check), "HTTP 500: [-]etcd failed")

	// Without the CA the server's certificate must not be trusted.
	check.CaFile = ""
	require.ErrorContains(t, p.Probe(ctx, check), "certificate")

	check.InsecureSkipVerify = true
	require.EqualError(t, p.Probe(ctx, check), "HTTP 500: [-]etcd failed")
}

func TestNetProberTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	addr := ln.Addr().String()
	check := &resourcepb.HealthCheckSpec{Name: "tcp", Kind: "tcp", Address: addr}

	var p health.NetProber
	require.NoError(t, p.Probe(t.Context(), check))

	require.NoError(t, ln.Close())
	require.ErrorContains(t, p.Probe(t.Context(), check), "connection refused")
}
