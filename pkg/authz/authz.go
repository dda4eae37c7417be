// Package authz decides, from the role in a caller's client certificate,
// which gRPC methods it may call. It serves the agent and the controller
// alike; a method missing from the policy is refused, so a new RPC is closed
// until someone decides who may call it.
package authz

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/talos-lb/talos-lb/pkg/pki"
)

// Policy maps a full gRPC method name to the roles that may call it.
type Policy map[string][]pki.Role

// Readers are the roles that may read.
var Readers = []pki.Role{pki.RoleReader, pki.RoleAdmin, pki.RoleController}

type roleKey struct{}

// RoleFromContext returns the caller's role, set by the interceptors.
func RoleFromContext(ctx context.Context) (pki.Role, bool) {
	r, ok := ctx.Value(roleKey{}).(pki.Role)

	return r, ok
}

// WithRole returns a context carrying a role, for in-process callers and tests.
func WithRole(ctx context.Context, r pki.Role) context.Context {
	return context.WithValue(ctx, roleKey{}, r)
}

func (p Policy) authorize(ctx context.Context, method string) (context.Context, error) {
	role, err := peerRole(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}

	allowed, ok := p[method]
	if !ok || !slices.Contains(allowed, role) {
		return nil, status.Errorf(codes.PermissionDenied, "role %q may not call %s", role, method)
	}

	return WithRole(ctx, role), nil
}

func peerRole(ctx context.Context) (pki.Role, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("no peer information")
	}

	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("connection is not TLS")
	}

	chains := tlsInfo.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return "", fmt.Errorf("no verified client certificate")
	}

	return roleOfLeaf(chains[0][0])
}

func roleOfLeaf(cert *x509.Certificate) (pki.Role, error) {
	role, err := pki.RoleOf(cert)
	if err != nil {
		return "", err
	}

	if role == pki.RoleAgent {
		return "", fmt.Errorf("certificate %q is an agent's server certificate, not a client's", cert.Subject.CommonName)
	}

	return role, nil
}

// UnaryInterceptor enforces the policy on unary calls.
func (p Policy) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := p.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}

		return handler(ctx, req)
	}
}

// StreamInterceptor enforces the policy on streaming calls.
func (p Policy) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := p.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}

		return handler(srv, &roleStream{ServerStream: ss, ctx: ctx})
	}
}

type roleStream struct {
	grpc.ServerStream

	ctx context.Context //nolint:containedctx // grpc.ServerStream carries its context
}

func (s *roleStream) Context() context.Context {
	return s.ctx
}
