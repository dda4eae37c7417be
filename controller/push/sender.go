package push

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

// Sender delivers one push to the agent at address (host:port). It is the
// pusher's only side effect.
type Sender interface {
	Push(ctx context.Context, address string, req *agentpb.PushRequest) (*agentpb.PushResponse, error)
}

// EncodedSender is a Sender that also sends a PushRequest already in wire
// format, given as pieces to send one after the other. The pusher uses it
// when it can, to encode the part of a state shared by all nodes only once.
type EncodedSender interface {
	Sender
	PushEncoded(ctx context.Context, address string, req [][]byte) (*agentpb.PushResponse, error)
}

// Forgetter is a Sender holding something per address (a connection) that the
// pusher releases when no node uses the address any more.
type Forgetter interface {
	Forget(address string)
}

// DefaultCallTimeout bounds a GRPCSender call whose context has no deadline.
const DefaultCallTimeout = 10 * time.Second

// GRPCSender pushes over gRPC with mutual TLS. It keeps one connection per
// address, made on first use and closed by Forget or Close.
type GRPCSender struct {
	tls *tls.Config

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

var (
	_ EncodedSender = (*GRPCSender)(nil)
	_ Forgetter     = (*GRPCSender)(nil)
)

// NewGRPCSender makes a sender presenting the controller's certificate in
// tlsConfig (pki.ClientTLS) and expecting agents' certificates (pki.AgentServerName).
func NewGRPCSender(tlsConfig *tls.Config) *GRPCSender {
	cfg := tlsConfig.Clone()
	cfg.ServerName = pki.AgentServerName

	if cfg.ClientSessionCache == nil {
		// Reconnecting to a restarted agent resumes rather than redoes the handshake where it can.
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}

	return &GRPCSender{tls: cfg, conns: map[string]*grpc.ClientConn{}}
}

func (s *GRPCSender) conn(address string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closed {
		return nil, errors.New("sender closed")
	}

	if c, ok := s.conns[address]; ok {
		return c, nil
	}

	// passthrough: the address is dialled as given, without a resolver per connection.
	c, err := grpc.NewClient("passthrough:///"+address,
		grpc.WithTransportCredentials(credentials.NewTLS(s.tls)),
		// gRPC's default reconnect backoff grows to 2 minutes; an agent back
		// from a restart should get its state within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, err
	}

	s.conns[address] = c

	return c, nil
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}

	return context.WithTimeout(ctx, DefaultCallTimeout)
}

// Push implements Sender.
func (s *GRPCSender) Push(ctx context.Context, address string, req *agentpb.PushRequest) (*agentpb.PushResponse, error) {
	c, err := s.conn(address)
	if err != nil {
		return nil, err
	}

	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	return agentpb.NewAgentServiceClient(c).Push(ctx, req)
}

// PushEncoded implements EncodedSender.
func (s *GRPCSender) PushEncoded(ctx context.Context, address string, req [][]byte) (*agentpb.PushResponse, error) {
	c, err := s.conn(address)
	if err != nil {
		return nil, err
	}

	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	resp := &agentpb.PushResponse{}
	if err := c.Invoke(ctx, agentpb.AgentService_Push_FullMethodName, encodedRequest(req), resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		return nil, err
	}

	return resp, nil
}

// Forget closes the connection to address, if any.
func (s *GRPCSender) Forget(address string) {
	s.mu.Lock()
	c, ok := s.conns[address]
	delete(s.conns, address)
	s.mu.Unlock()

	if ok {
		c.Close() //nolint:errcheck // nothing to do about it
	}
}

// Close closes every connection; the sender is unusable afterwards.
func (s *GRPCSender) Close() error {
	s.mu.Lock()
	conns := s.conns
	s.conns, s.closed = map[string]*grpc.ClientConn{}, true
	s.mu.Unlock()

	var errs []error
	for _, c := range conns {
		errs = append(errs, c.Close())
	}

	return errors.Join(errs...)
}

// encodedRequest is a PushRequest in wire format, in pieces.
type encodedRequest [][]byte

// rawCodec sends an encodedRequest as it is, without copying the pieces, and
// everything else as the proto codec does. It keeps the proto codec's name, so
// the agent decodes the request with its ordinary codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(encodedRequest); ok {
		out := make(mem.BufferSlice, len(e))
		for i, b := range e {
			out[i] = mem.SliceBuffer(b) // Free is a no-op: the shared bytes stay intact
		}

		return out, nil
	}

	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }
