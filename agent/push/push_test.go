package push_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/talos-lb/talos-lb/agent/grpcapi"
	"github.com/talos-lb/talos-lb/agent/push"
	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/pki"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

type agent struct {
	t   *testing.T
	h   *push.Handler
	st  state.State
	reg *prometheus.Registry
	dir string
}

func newState(t *testing.T) state.State {
	t.Helper()

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(t.Context(), st))

	return st
}

// newAgent starts a handler for node-a keeping its files in dir.
func newAgent(t *testing.T, dir string, announcer push.Announcer) *agent {
	t.Helper()

	st := newState(t)
	reg := prometheus.NewRegistry()
	h := push.New(push.Options{State: st, NodeName: "node-a", StateDir: dir, Announcer: announcer, Registry: reg, Logger: zaptest.NewLogger(t)})
	require.NoError(t, h.Restore(t.Context()))

	return &agent{t: t, h: h, st: st, reg: reg, dir: dir}
}

func (a *agent) push(s *resourcepb.NodeDesiredState) *agentpb.PushResponse {
	a.t.Helper()

	resp, err := a.h.Push(a.t.Context(), &agentpb.PushRequest{State: s})
	require.NoError(a.t, err)

	return resp
}

func (a *agent) status() *resourcepb.PushStatusSpec {
	a.t.Helper()

	r, err := safe.StateGetByID[*resources.PushStatus](a.t.Context(), a.st, resources.PushStatusID)
	require.NoError(a.t, err)

	return r.TypedSpec().Value
}

// versions maps every pushed resource to its version, to see what was rewritten.
func (a *agent) versions() map[string]string {
	a.t.Helper()

	out := map[string]string{}

	for _, md := range []resource.Kind{
		resources.NewServiceIP("").Metadata(), resources.NewPushedBGPPeer("").Metadata(), resources.NewAPIEndpoints().Metadata(),
	} {
		list, err := a.st.List(a.t.Context(), md)
		require.NoError(a.t, err)

		for _, r := range list.Items {
			out[r.Metadata().Type()+"/"+r.Metadata().ID()] = r.Metadata().Version().String()
		}
	}

	return out
}

func (a *agent) serviceIPs() map[string]*resourcepb.ServiceIPSpec {
	a.t.Helper()

	list, err := safe.StateListAll[*resources.ServiceIP](a.t.Context(), a.st)
	require.NoError(a.t, err)

	out := map[string]*resourcepb.ServiceIPSpec{}
	for r := range list.All() {
		out[r.Metadata().ID()] = r.TypedSpec().Value
	}

	return out
}

func (a *agent) counter(result string) float64 {
	a.t.Helper()

	families, err := a.reg.Gather()
	require.NoError(a.t, err)

	for _, f := range families {
		if f.GetName() != "talos_lb_push_total" {
			continue
		}

		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}

	return 0
}

func (a *agent) gauge() float64 {
	a.t.Helper()

	families, err := a.reg.Gather()
	require.NoError(a.t, err)

	for _, f := range families {
		if f.GetName() == "talos_lb_push_generation" {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}

	return -1
}

func TestPushPublishesResources(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)
	ctx := t.Context()

	require.Equal(t, uint64(0), a.status().GetGeneration(), "a PushStatus exists before any push")

	s := validState(5)
	resp := a.push(s)
	require.True(t, resp.GetAccepted(), resp.GetError())
	require.Equal(t, uint64(5), resp.GetGeneration())
	require.Empty(t, resp.GetAnnouncing(), "nothing announces service IPs yet")

	sips := a.serviceIPs()
	require.Len(t, sips, 4)

	for _, want := range s.GetServiceIps() {
		require.True(t, proto.Equal(want, sips[want.GetAddress()]), want.GetAddress())
	}

	tor1, err := safe.StateGetByID[*resources.PushedBGPPeer](ctx, a.st, "tor-1")
	require.NoError(t, err)

	passwordFile := filepath.Join(a.dir, push.PasswordDir, "tor-1")
	require.Empty(t, tor1.TypedSpec().Value.GetPassword(), "the resource never holds the password")
	require.Equal(t, passwordFile, tor1.TypedSpec().Value.GetPeer().GetPasswordFile())
	require.Equal(t, uint32(65000), tor1.TypedSpec().Value.GetLocalAsn())

	data, err := os.ReadFile(passwordFile)
	require.NoError(t, err)
	require.Equal(t, "s3cret", string(data))

	info, err := os.Stat(passwordFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	tor2, err := safe.StateGetByID[*resources.PushedBGPPeer](ctx, a.st, "tor-2")
	require.NoError(t, err)
	require.Empty(t, tor2.TypedSpec().Value.GetPeer().GetPasswordFile())

	eps, err := safe.StateGetByID[*resources.APIEndpoints](ctx, a.st, resources.APIEndpointsID)
	require.NoError(t, err)
	require.Equal(t, s.GetApiEndpoints(), eps.TypedSpec().Value.GetEndpoints())

	// Node sets and BGP rules travel with the service IPs that name them.
	for _, want := range s.GetNodeSets() {
		set, err := safe.StateGetByID[*resources.NodeSet](ctx, a.st, want.GetName())
		require.NoError(t, err)
		require.True(t, proto.Equal(want, set.TypedSpec().Value), want.GetName())
	}

	for _, want := range s.GetBgpAdvertisements() {
		rule, err := safe.StateGetByID[*resources.BGPAdvertisementRule](ctx, a.st, want.GetName())
		require.NoError(t, err)
		require.True(t, proto.Equal(want, rule.TypedSpec().Value), want.GetName())
	}

	ps := a.status()
	require.Equal(t, uint64(5), ps.GetGeneration())
	require.Equal(t, "controller-0", ps.GetController())
	require.WithinDuration(t, time.Now(), ps.GetAppliedAt().AsTime(), time.Minute)
	require.Equal(t, []uint32{4, 2, 3}, []uint32{ps.GetServiceIps(), ps.GetBgpPeers(), ps.GetApiEndpoints()})
	require.Empty(t, ps.GetLastError())

	require.Equal(t, 1.0, a.counter(push.ResultAccepted))
	require.Equal(t, 5.0, a.gauge())

	info, err = os.Stat(filepath.Join(a.dir, push.StateFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the kept state holds passwords")
}

func TestSamePushAgainChangesNothing(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)

	require.True(t, a.push(validState(5)).GetAccepted())

	before, status := a.versions(), a.status()

	resp := a.push(validState(5))
	require.True(t, resp.GetAccepted(), resp.GetError())
	require.Equal(t, uint64(5), resp.GetGeneration())
	require.Equal(t, before, a.versions())
	require.True(t, proto.Equal(status, a.status()), "no new PushStatus either")
	require.Equal(t, 1.0, a.counter(push.ResultUnchanged))

	// A new generation with the same content rewrites no resource but the status.
	require.True(t, a.push(validState(6)).GetAccepted())
	require.Equal(t, before, a.versions())
	require.Equal(t, uint64(6), a.status().GetGeneration())
}

func TestPushRemovesWhatIsNoLongerPushed(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)
	ctx := t.Context()

	require.True(t, a.push(validState(5)).GetAccepted())

	before := a.versions()

	s := validState(6)
	s.ServiceIps = s.ServiceIps[1:]                  // 192.0.2.1 goes
	s.ServiceIps[0].Services = []string{"default/a"} // 192.0.2.2 changes
	s.BgpPeers = s.BgpPeers[:1]                      // tor-2 goes
	s.BgpPeers[0].Password = ""                      // tor-1 loses its password
	s.ApiEndpoints = nil

	resp := a.push(s)
	require.True(t, resp.GetAccepted(), resp.GetError())

	sips := a.serviceIPs()
	require.Len(t, sips, 3)
	require.NotContains(t, sips, "192.0.2.1")
	require.Equal(t, []string{"default/a"}, sips["192.0.2.2"].GetServices())

	after := a.versions()
	require.Equal(t, before["ServiceIPs.service.talos-lb.dev/2001:db8::1"], after["ServiceIPs.service.talos-lb.dev/2001:db8::1"], "an unchanged service IP is not rewritten")
	require.NotEqual(t, before["ServiceIPs.service.talos-lb.dev/192.0.2.2"], after["ServiceIPs.service.talos-lb.dev/192.0.2.2"])

	_, err := safe.StateGetByID[*resources.PushedBGPPeer](ctx, a.st, "tor-2")
	require.True(t, state.IsNotFoundError(err), err)

	tor1, err := safe.StateGetByID[*resources.PushedBGPPeer](ctx, a.st, "tor-1")
	require.NoError(t, err)
	require.Empty(t, tor1.TypedSpec().Value.GetPeer().GetPasswordFile())

	_, err = os.Stat(filepath.Join(a.dir, push.PasswordDir, "tor-1"))
	require.ErrorIs(t, err, os.ErrNotExist, "a password no longer pushed is deleted")

	_, err = safe.StateGetByID[*resources.APIEndpoints](ctx, a.st, resources.APIEndpointsID)
	require.True(t, state.IsNotFoundError(err), err)

	ps := a.status()
	require.Equal(t, []uint32{3, 1, 0}, []uint32{ps.GetServiceIps(), ps.GetBgpPeers(), ps.GetApiEndpoints()})

	// And everything goes with an empty state.
	require.True(t, a.push(&resourcepb.NodeDesiredState{Node: "node-a", Generation: 7}).GetAccepted())
	require.Empty(t, a.versions())
}

func TestRefusedPushChangesNothingThatRuns(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)

	require.True(t, a.push(validState(5)).GetAccepted())

	before := a.versions()

	bad := validState(6)
	bad.ServiceIps[3].Address = "192.0.2.300"
	bad.ServiceIps = append(bad.ServiceIps, &resourcepb.ServiceIPSpec{Address: "192.0.2.99"})

	resp := a.push(bad)
	require.False(t, resp.GetAccepted())
	require.Equal(t, uint64(5), resp.GetGeneration(), "the answer names the generation still running")
	require.Contains(t, resp.GetError(), `service_ips[3].address "192.0.2.300" is not an IP address`)

	require.Equal(t, before, a.versions())
	require.Equal(t, uint64(5), a.h.Running())

	ps := a.status()
	require.Equal(t, uint64(5), ps.GetGeneration())
	require.Equal(t, uint64(6), ps.GetRejectedGeneration())
	require.Contains(t, ps.GetLastError(), "service_ips[3].address")
	require.Equal(t, 1.0, a.counter(push.ResultRejected))
	require.Equal(t, 5.0, a.gauge())

	// Kept on disk is still the good one.
	b := newAgent(t, a.dir, nil)
	require.Equal(t, uint64(5), b.h.Running())

	// The next good push clears the error.
	require.True(t, a.push(validState(7)).GetAccepted())

	ps = a.status()
	require.Equal(t, uint64(7), ps.GetGeneration())
	require.Zero(t, ps.GetRejectedGeneration())
	require.Empty(t, ps.GetLastError())
}

func TestStaleOrForeignPushIsRefused(t *testing.T) {
	a := newAgent(t, t.TempDir(), nil)

	require.True(t, a.push(validState(10)).GetAccepted())

	resp := a.push(validState(9))
	require.False(t, resp.GetAccepted())
	require.Equal(t, uint64(10), resp.GetGeneration(), "the controller moves its counter above this")
	require.Equal(t, "generation 9 is older than the running generation 10 (from controller-0)", resp.GetError())
	require.Equal(t, 1.0, a.counter(push.ResultStale))

	// Stale wins over what else is wrong: the controller fixes its counter first.
	old := validState(3)
	old.ApiEndpoints = []string{"nonsense"}
	resp = a.push(old)
	require.Contains(t, resp.GetError(), "older than the running generation 10")

	other := validState(10)
	other.ServiceIps = other.ServiceIps[:1]
	resp = a.push(other)
	require.False(t, resp.GetAccepted())
	require.Equal(t, "generation 10 already runs with a different state (from controller-0)", resp.GetError())

	foreign := validState(11)
	foreign.Node = "node-b"
	resp = a.push(foreign)
	require.False(t, resp.GetAccepted())
	require.Equal(t, uint64(10), resp.GetGeneration())
	require.Equal(t, "state for node-b pushed to node-a", resp.GetError())
	require.Equal(t, "state for node-b pushed to node-a", a.status().GetLastError())

	resp = a.push(nil)
	require.False(t, resp.GetAccepted())
	require.Equal(t, "the push carries no state", resp.GetError())

	require.Len(t, a.serviceIPs(), 4)
}

func TestRestartKeepsTheLastPushedState(t *testing.T) {
	dir := t.TempDir()
	a := newAgent(t, dir, nil)

	require.True(t, a.push(validState(5)).GetAccepted())

	// A password left by an older run, for a peer no longer pushed.
	leftover := filepath.Join(dir, push.PasswordDir, "old-peer")
	require.NoError(t, os.WriteFile(leftover, []byte("old"), 0o600))

	// A new process: empty state, same directory, no controller around.
	b := newAgent(t, dir, nil)

	_, err := os.Stat(leftover)
	require.ErrorIs(t, err, os.ErrNotExist)

	require.Equal(t, uint64(5), b.h.Running())
	require.True(t, proto.Equal(validState(5), b.h.Current()))
	require.Len(t, b.serviceIPs(), 4)

	ps := b.status()
	require.Equal(t, uint64(5), ps.GetGeneration())
	require.Equal(t, "controller-0", ps.GetController())
	require.Equal(t, uint32(4), ps.GetServiceIps())
	require.Equal(t, 5.0, b.gauge())

	tor1, err := safe.StateGetByID[*resources.PushedBGPPeer](t.Context(), b.st, "tor-1")
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(dir, push.PasswordDir, "tor-1"))
	require.Equal(t, filepath.Join(dir, push.PasswordDir, "tor-1"), tor1.TypedSpec().Value.GetPeer().GetPasswordFile())

	// The controller comes back with the same generation: nothing moves.
	before := b.versions()

	resp := b.push(validState(5))
	require.True(t, resp.GetAccepted())
	require.Equal(t, before, b.versions())
}

func TestCorruptOrForeignStateFileIsIgnored(t *testing.T) {
	for name, content := range map[string]func(t *testing.T) []byte{
		"garbage": func(*testing.T) []byte { return []byte("\xff\xff\xff not protobuf") },
		"empty":   func(*testing.T) []byte { return nil },
		"another node's": func(t *testing.T) []byte {
			s := validState(3)
			s.Node = "node-b"

			data, err := proto.Marshal(s)
			require.NoError(t, err)

			return data
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, push.StateFile), content(t), 0o600))

			a := newAgent(t, dir, nil)
			require.Zero(t, a.h.Running())
			require.Empty(t, a.versions())
			require.Zero(t, a.status().GetGeneration())

			// Pushes work as on a fresh agent, and replace the file.
			require.True(t, a.push(validState(1)).GetAccepted())
			require.Equal(t, uint64(1), newAgent(t, dir, nil).h.Running())
		})
	}
}

type fixedAnnouncer []string

func (f fixedAnnouncer) Announcing() []string { return f }

func TestAnswerListsWhatTheNodeAnnounces(t *testing.T) {
	a := newAgent(t, t.TempDir(), fixedAnnouncer{"192.0.2.1"})

	require.Equal(t, []string{"192.0.2.1"}, a.push(validState(1)).GetAnnouncing())
	require.Equal(t, []string{"192.0.2.1"}, a.push(validState(0)).GetAnnouncing(), "refusals too")
}

func TestOnlyTheControllerMayPush(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	require.NoError(t, err)

	server, err := ca.Issue(pki.IssueOptions{CommonName: "agent", Role: pki.RoleAgent, Validity: time.Hour})
	require.NoError(t, err)

	tlsConfig, err := pki.ServerTLS(ca.CertPEM, server.CertPEM, server.KeyPEM)
	require.NoError(t, err)

	a := newAgent(t, t.TempDir(), nil)

	srv := grpcapi.New(grpcapi.Options{
		State: a.st, Pusher: a.h, NodeName: "node-a", Version: "test",
		TLS: tlsConfig, Registry: prometheus.NewRegistry(), Logger: zaptest.NewLogger(t),
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	go srv.Serve(ln) //nolint:errcheck

	t.Cleanup(func() { srv.Stop(time.Second) })

	call := func(role pki.Role, gen uint64) (*agentpb.PushResponse, error) {
		kp, err := ca.Issue(pki.IssueOptions{CommonName: string(role), Role: role, Validity: time.Hour})
		require.NoError(t, err)

		c, err := client.DialAgent(ln.Addr().String(), client.NewContext(nil, ca.CertPEM, kp.CertPEM, kp.KeyPEM))
		require.NoError(t, err)

		defer c.Close() //nolint:errcheck

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()

		return c.API.Push(ctx, &agentpb.PushRequest{State: validState(gen)})
	}

	for _, role := range []pki.Role{pki.RoleReader, pki.RoleAdmin} {
		_, err := call(role, 3)
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", role, err)
	}

	require.Zero(t, a.h.Running(), "a refused caller changed nothing")

	resp, err := call(pki.RoleController, 3)
	require.NoError(t, err)
	require.True(t, resp.GetAccepted(), resp.GetError())
	require.Equal(t, uint64(3), resp.GetGeneration())
	require.Len(t, a.serviceIPs(), 4)
}
