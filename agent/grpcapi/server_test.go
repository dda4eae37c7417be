package grpcapi_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/talos-lb/talos-lb/agent/grpcapi"
	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

type countingReloader struct{ calls int }

func (r *countingReloader) Reload(context.Context) (bool, uint64, error) {
	r.calls++

	return true, uint64(r.calls), nil
}

type countingPusher struct{ calls int }

func (p *countingPusher) Push(_ context.Context, req *agentpb.PushRequest) (*agentpb.PushResponse, error) {
	p.calls++

	return &agentpb.PushResponse{Accepted: true, Generation: req.GetState().GetGeneration()}, nil
}

type fixture struct {
	addr   string
	ca     *pki.KeyPair
	pusher *countingPusher
}

func start(t *testing.T, reloader grpcapi.Reloader) *fixture {
	t.Helper()

	ca, err := pki.NewCA("test", time.Hour)
	require.NoError(t, err)

	agent, err := ca.Issue(pki.IssueOptions{CommonName: "agent", Role: pki.RoleAgent, Validity: time.Hour})
	require.NoError(t, err)

	tlsConfig, err := pki.ServerTLS(ca.CertPEM, agent.CertPEM, agent.KeyPEM)
	require.NoError(t, err)

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(t.Context(), st))

	pusher := &countingPusher{}

	srv := grpcapi.New(grpcapi.Options{
		State: st, Reloader: reloader, Pusher: pusher, NodeName: "node-1", Version: "test",
		TLS: tlsConfig, Registry: prometheus.NewRegistry(), Logger: zaptest.NewLogger(t),
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	go srv.Serve(ln) //nolint:errcheck

	t.Cleanup(func() { srv.Stop(time.Second) })

	return &fixture{addr: ln.Addr().String(), ca: ca, pusher: pusher}
}

func (f *fixture) dial(t *testing.T, role pki.Role) *client.Agent {
	t.Helper()

	kp, err := f.ca.Issue(pki.IssueOptions{CommonName: string(role), Role: role, Validity: time.Hour})
	require.NoError(t, err)

	a, err := client.DialAgent(f.addr, client.NewContext(nil, f.ca.CertPEM, kp.CertPEM, kp.KeyPEM))
	require.NoError(t, err)

	t.Cleanup(func() { a.Close() }) //nolint:errcheck

	return a
}

func TestRolesDecideWhatACallerMayDo(t *testing.T) {
	reloader := &countingReloader{}
	f := start(t, reloader)
	ctx := t.Context()

	for _, role := range []pki.Role{pki.RoleReader, pki.RoleAdmin, pki.RoleController} {
		a := f.dial(t, role)

		v, err := a.API.Version(ctx, &agentpb.VersionRequest{})
		require.NoError(t, err, role)
		require.Equal(t, string(role), v.GetCallerRole())
		require.Equal(t, "node-1", v.GetNodeName())

		rds, err := safe.StateListAll[*meta.ResourceDefinition](ctx, a.State)
		require.NoError(t, err, role)
		require.Positive(t, rds.Len())

		_, err = healthpb.NewHealthClient(a.Conn).Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err, role)

		// Nobody writes resources through the API, whatever the role.
		err = a.State.Create(ctx, resources.NewNodeStatus("intruder"))
		require.ErrorContains(t, err, "PermissionDenied", "create as %s", role)

		_, err = a.API.ReloadConfig(ctx, &agentpb.ReloadConfigRequest{})
		if role == pki.RoleAdmin {
			require.NoError(t, err)
		} else {
			require.Equal(t, codes.PermissionDenied, status.Code(err), "reload as %s: %v", role, err)
		}

		// Only the controller pushes desired state.
		resp, err := a.API.Push(ctx, &agentpb.PushRequest{State: &resourcepb.NodeDesiredState{Node: "node-1", Generation: 7}})
		if role == pki.RoleController {
			require.NoError(t, err)
			require.Equal(t, uint64(7), resp.GetGeneration())
		} else {
			require.Equal(t, codes.PermissionDenied, status.Code(err), "push as %s: %v", role, err)
		}
	}

	require.Equal(t, 1, reloader.calls)
	require.Equal(t, 1, f.pusher.calls)
}

func TestAgentCertificateIsNotAClient(t *testing.T) {
	f := start(t, &countingReloader{})
	a := f.dial(t, pki.RoleAgent)

	_, err := a.API.Version(t.Context(), &agentpb.VersionRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), err)
}

func TestForeignOrMissingCertificatesAreRefused(t *testing.T) {
	f := start(t, &countingReloader{})

	other, err := pki.NewCA("other", time.Hour)
	require.NoError(t, err)

	admin, err := other.Issue(pki.IssueOptions{CommonName: "admin", Role: pki.RoleAdmin, Validity: time.Hour})
	require.NoError(t, err)

	// Trusts the right CA but presents a certificate of another one.
	a, err := client.DialAgent(f.addr, client.NewContext(nil, f.ca.CertPEM, admin.CertPEM, admin.KeyPEM))
	require.NoError(t, err)

	defer a.Close() //nolint:errcheck

	_, err = a.API.Version(t.Context(), &agentpb.VersionRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), err)

	// No client certificate at all.
	pool, err := pki.CertPool(f.ca.CertPEM)
	require.NoError(t, err)

	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: pki.AgentServerName, MinVersion: tls.VersionTLS13,
	})))
	require.NoError(t, err)

	defer conn.Close() //nolint:errcheck

	_, err = agentpb.NewAgentServiceClient(conn).Version(t.Context(), &agentpb.VersionRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), err)
}
