// Package pushtest starts in-process agents on loopback for tests and
// benchmarks of the controller's push: each is a real gRPC server with mutual
// TLS and the agent's authorization policy, so pushes travel the same path as
// to a real agent.
//
// StartAgents runs the agent's own push handler (agent/push) over an
// in-memory COSI state. StartAckers runs light agents that decode only the
// generation and node of a push and ack it: a simulated cluster of a thousand
// nodes with ten thousand service IPs each fits in one process that way.
package pushtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/talos-lb/talos-lb/agent/grpcapi"
	agentpush "github.com/talos-lb/talos-lb/agent/push"
	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// Agent is one in-process agent.
type Agent struct {
	// Node is the agent's node name: NodeName(i).
	Node string
	// Address is where it listens (127.0.0.1:port).
	Address string
	// State holds the resources it published (nil for ackers).
	State state.State
	// Handler is its push handler (nil for ackers).
	Handler *agentpush.Handler
	// Acker counts what an acker saw (nil for full agents).
	Acker *Acker
	// Stop stops the agent's server (it is also stopped when the test ends);
	// later pushes find nobody listening.
	Stop func()
}

// NodeName is the name of the i-th agent.
func NodeName(i int) string {
	return fmt.Sprintf("node-%04d", i)
}

// ControllerTLS is a client TLS configuration with a controller certificate of ca.
func ControllerTLS(tb testing.TB, ca *pki.KeyPair) *tls.Config {
	tb.Helper()

	kp, err := ca.Issue(pki.IssueOptions{CommonName: "controller", Role: pki.RoleController, Validity: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}

	cfg, err := pki.ClientTLS(ca.CertPEM, kp.CertPEM, kp.KeyPEM, pki.AgentServerName)
	if err != nil {
		tb.Fatal(err)
	}

	return cfg
}

func serverTLS(tb testing.TB, ca *pki.KeyPair) *tls.Config {
	tb.Helper()

	kp, err := ca.Issue(pki.IssueOptions{CommonName: "agent", Role: pki.RoleAgent, Validity: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}

	cfg, err := pki.ServerTLS(ca.CertPEM, kp.CertPEM, kp.KeyPEM)
	if err != nil {
		tb.Fatal(err)
	}

	return cfg
}

type noReload struct{}

func (noReload) Reload(context.Context) (bool, uint64, error) {
	return false, 0, errors.New("in-process test agent: no config file")
}

// StartAgents starts n agents with the agent's real gRPC API and push
// handler, each over its own in-memory state, keeping their files in
// temporary directories. They stop when the test ends.
func StartAgents(tb testing.TB, n int, ca *pki.KeyPair) []Agent {
	tb.Helper()

	tlsConfig := serverTLS(tb, ca)
	agents := make([]Agent, n)

	for i := range agents {
		name := NodeName(i)

		st := state.WrapCore(namespaced.NewState(inmem.Build))
		if err := resources.Register(context.Background(), st); err != nil {
			tb.Fatal(err)
		}

		h := agentpush.New(agentpush.Options{State: st, NodeName: name, StateDir: tb.TempDir(), NoSync: true})
		if err := h.Restore(context.Background()); err != nil {
			tb.Fatal(err)
		}

		srv := grpcapi.New(grpcapi.Options{
			State: st, Reloader: noReload{}, Pusher: h, NodeName: name, Version: "pushtest",
			TLS: tlsConfig, Registry: prometheus.NewRegistry(), Logger: zap.NewNop(),
		})

		agents[i] = Agent{Node: name, State: st, Handler: h}
		agents[i].Address, agents[i].Stop = serve(tb, srv.Serve, func() { srv.Stop(time.Second) })
	}

	return agents
}

// serve runs a server on a loopback port until stop or the end of the test.
func serve(tb testing.TB, run func(net.Listener) error, stop func()) (string, func()) {
	tb.Helper()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}

	done := make(chan struct{})

	go func() {
		defer close(done)

		run(ln) //nolint:errcheck // ends with the test
	}()

	var once sync.Once

	stopOnce := func() {
		once.Do(func() {
			stop()
			<-done
		})
	}

	tb.Cleanup(stopOnce)

	return ln.Addr().String(), stopOnce
}

// Acker is a light agent: it answers every push for its node with a
// generation above the one it runs by accepting it.
type Acker struct {
	agentpb.UnimplementedAgentServiceServer

	node string

	mu         sync.Mutex
	generation uint64
	pushes     int
	bytes      int
}

// Generation returns the generation the acker runs.
func (a *Acker) Generation() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()

	return a.generation
}

// Pushes returns how many pushes the acker answered and their total size.
func (a *Acker) Pushes() (count, bytes int) {
	a.mu.Lock()
	defer a.mu.Unlock()

	return a.pushes, a.bytes
}

// Push implements AgentService.Push like agent/push, without validating or applying.
func (a *Acker) Push(_ context.Context, req *agentpb.PushRequest) (*agentpb.PushResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	a.pushes++

	s := req.GetState()

	switch {
	case s.GetNode() != a.node:
		return &agentpb.PushResponse{Generation: a.generation, Error: fmt.Sprintf("state for %s pushed to %s", s.GetNode(), a.node)}, nil
	case s.GetGeneration() == 0:
		return &agentpb.PushResponse{Generation: a.generation, Error: "generation 0"}, nil
	case s.GetGeneration() < a.generation:
		return &agentpb.PushResponse{Generation: a.generation, Error: fmt.Sprintf("generation %d is older than the running generation %d", s.GetGeneration(), a.generation)}, nil
	}

	a.generation = s.GetGeneration()

	return &agentpb.PushResponse{Accepted: true, Generation: a.generation}, nil
}

// StartAckers starts n light agents: real mutual TLS and the agent's
// authorization policy, but a push is only read up to its generation, node
// and controller, and acked. They stop when the test ends.
func StartAckers(tb testing.TB, n int, ca *pki.KeyPair) []Agent {
	tb.Helper()

	tlsConfig := serverTLS(tb, ca)
	agents := make([]Agent, n)

	for i := range agents {
		acker := &Acker{node: NodeName(i)}

		srv := grpc.NewServer(
			grpc.Creds(credentials.NewTLS(tlsConfig)),
			grpc.MaxRecvMsgSize(grpcapi.MaxRecvBytes),
			grpc.ForceServerCodecV2(headCodec{acker: acker}),
			grpc.UnaryInterceptor(grpcapi.Policy.UnaryInterceptor()),
		)
		agentpb.RegisterAgentServiceServer(srv, acker)

		agents[i] = Agent{Node: acker.node, Acker: acker}
		agents[i].Address, agents[i].Stop = serve(tb, srv.Serve, srv.Stop)
	}

	return agents
}

// headCodec decodes only the first fields of a pushed state; the rest of the
// bytes are skipped over, not parsed.
type headCodec struct {
	acker *Acker
}

func (c headCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (c headCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*agentpb.PushRequest)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}

	c.acker.mu.Lock()
	c.acker.bytes += data.Len()
	c.acker.mu.Unlock()

	// The pusher sends the per-node fields first: usually the first buffer
	// holds them, and the rest is never copied.
	if len(data) > 0 {
		if s, ok := head(data[0].ReadOnlyData()); ok {
			req.State = s

			return nil
		}
	}

	s, ok := head(data.Materialize())
	if !ok {
		return errors.New("push without generation and node")
	}

	req.State = s

	return nil
}

func (headCodec) Name() string { return "proto" }

// head reads PushRequest.state's generation, node and controller from b,
// which may be cut short after them; false when it does not hold them.
func head(b []byte) (*resourcepb.NodeDesiredState, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		return nil, false
	}

	b = b[n:]

	if _, n = protowire.ConsumeVarint(b); n < 0 {
		return nil, false
	}

	s := &resourcepb.NodeDesiredState{}

	// A field cut off by the end of b ends the walk; what came before counts.
	walk(b[n:], func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error { //nolint:errcheck
		switch {
		case num == 1 && typ == protowire.VarintType:
			s.Generation = x
		case num == 2 && typ == protowire.BytesType:
			s.Node = string(v)
		case num == 3 && typ == protowire.BytesType:
			s.Controller = string(v)
		}

		return nil
	})

	return s, s.GetGeneration() != 0 && s.GetNode() != ""
}

// walk calls fn for every top-level field of a message: v for length-delimited fields, x for varints.
func walk(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}

		b = b[n:]

		var (
			v []byte
			x uint64
		)

		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}

		if n < 0 {
			return protowire.ParseError(n)
		}

		b = b[n:]

		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}

	return nil
}

// SharedState is a shared part of desired states like controller/desired
// builds it: ips IPv4 service IPs (from 10.0.0.1 on) announced over L2 by
// every node of nodes, one Service each, and the API servers. Revisions
// differ in the Services' names, so each rev is a change for every node.
func SharedState(nodes []string, ips, rev int) *resourcepb.NodeDesiredState {
	s := &resourcepb.NodeDesiredState{
		ApiEndpoints: []string{"192.0.2.10:6443", "192.0.2.11:6443", "192.0.2.12:6443"},
		NodeSets:     []*resourcepb.NodeSet{{Name: "all", Nodes: nodes}},
		ServiceIps:   make([]*resourcepb.ServiceIPSpec, ips),
	}

	for i := range s.ServiceIps {
		s.ServiceIps[i] = &resourcepb.ServiceIPSpec{
			Address:  fmt.Sprintf("10.%d.%d.%d", (i+1)>>16&0xff, (i+1)>>8&0xff, (i+1)&0xff),
			Services: []string{fmt.Sprintf("ns-%d/svc-%d-r%d", i%100, i, rev)},
			L2:       &resourcepb.L2Announcement{NodeSet: "all"},
		}
	}

	return s
}
