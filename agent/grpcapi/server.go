// Package grpcapi is the agent's mutual-TLS gRPC endpoint: COSI's State
// service (read-only) for every resource, the gRPC health service, and the
// agent's own AgentService. Who may call what is decided by pkg/authz from
// the caller's certificate; this package never changes resources itself.
package grpcapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	cosiapi "github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/protobuf/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/authz"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

// Policy is who may call what on the agent. COSI writes are absent on
// purpose: resources change only through the agent's own controllers.
var Policy = authz.Policy{
	cosiapi.State_Get_FullMethodName:                 authz.Readers,
	cosiapi.State_List_FullMethodName:                authz.Readers,
	cosiapi.State_Watch_FullMethodName:               authz.Readers,
	healthpb.Health_Check_FullMethodName:             authz.Readers,
	healthpb.Health_Watch_FullMethodName:             authz.Readers,
	healthpb.Health_List_FullMethodName:              authz.Readers,
	agentpb.AgentService_Version_FullMethodName:      authz.Readers,
	agentpb.AgentService_ReloadConfig_FullMethodName: {pki.RoleAdmin},
	agentpb.AgentService_Push_FullMethodName:         {pki.RoleController},
}

// MaxRecvBytes bounds a request: a pushed state with every service IP of a
// large cluster is far above gRPC's default of 4 MiB.
const MaxRecvBytes = 64 << 20

// Reloader re-reads the agent's configuration on demand.
type Reloader interface {
	Reload(ctx context.Context) (accepted bool, generation uint64, err error)
}

// Pusher applies the controller's pushes (agent/push).
type Pusher interface {
	Push(ctx context.Context, req *agentpb.PushRequest) (*agentpb.PushResponse, error)
}

// Options configure the server.
type Options struct {
	// State is served read-only; writes are refused even if the policy let them through.
	State    state.CoreState
	Reloader Reloader
	// Pusher may be nil: Push then answers Unimplemented.
	Pusher   Pusher
	NodeName string
	Version  string
	// TLS must require and verify client certificates (pki.ServerTLS).
	TLS      *tls.Config
	Registry prometheus.Registerer
	Logger   *zap.Logger
}

// Server is the agent's gRPC endpoint.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	logger *zap.Logger
}

// New builds the server; Serve starts it.
func New(opts Options) *Server {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "talos_lb", Subsystem: "grpc", Name: "requests_total",
		Help: "gRPC calls served, by method and status code (refused calls included).",
	}, []string{"method", "code"})
	opts.Registry.MustRegister(requests)

	count := func(method string, err error) {
		requests.WithLabelValues(method, status.Code(err).String()).Inc()
	}

	s := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(opts.TLS)),
		grpc.MaxRecvMsgSize(MaxRecvBytes),
		grpc.ChainUnaryInterceptor(
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				resp, err := handler(ctx, req)
				count(info.FullMethod, err)

				return resp, err
			},
			Policy.UnaryInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				err := handler(srv, ss)
				count(info.FullMethod, err)

				return err
			},
			Policy.StreamInterceptor(),
		),
	)

	readOnly := state.Filter(opts.State, func(_ context.Context, access state.Access) error {
		if !access.Verb.Readonly() {
			return status.Error(codes.PermissionDenied, "resources are read-only over the API")
		}

		return nil
	})
	cosiapi.RegisterStateServer(s, server.NewState(readOnly))

	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)

	agentpb.RegisterAgentServiceServer(s, &agentService{opts: opts})

	return &Server{grpc: s, health: hs, logger: opts.Logger}
}

// Serve accepts connections on ln until Stop.
func (s *Server) Serve(ln net.Listener) error {
	s.logger.Info("gRPC API listening", zap.Stringer("address", ln.Addr()))

	if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving gRPC: %w", err)
	}

	return nil
}

// Stop lets running calls finish for up to timeout, then cuts the rest (watches never finish by themselves).
func (s *Server) Stop(timeout time.Duration) {
	s.health.Shutdown()

	done := make(chan struct{})

	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()

	select {
	case <-done:
	case <-time.After(timeout):
		s.grpc.Stop()
	}
}

type agentService struct {
	agentpb.UnimplementedAgentServiceServer

	opts Options
}

func (a *agentService) Version(ctx context.Context, _ *agentpb.VersionRequest) (*agentpb.VersionResponse, error) {
	role, _ := authz.RoleFromContext(ctx)

	return &agentpb.VersionResponse{Version: a.opts.Version, NodeName: a.opts.NodeName, CallerRole: string(role)}, nil
}

func (a *agentService) ReloadConfig(ctx context.Context, _ *agentpb.ReloadConfigRequest) (*agentpb.ReloadConfigResponse, error) {
	accepted, generation, err := a.opts.Reloader.Reload(ctx)

	resp := &agentpb.ReloadConfigResponse{Accepted: accepted, Generation: generation}
	if err != nil {
		resp.Error = err.Error()
	}

	return resp, nil
}

func (a *agentService) Push(ctx context.Context, req *agentpb.PushRequest) (*agentpb.PushResponse, error) {
	if a.opts.Pusher == nil {
		return nil, status.Error(codes.Unimplemented, "this agent takes no pushes")
	}

	return a.opts.Pusher.Push(ctx, req)
}
