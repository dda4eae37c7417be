package ipvs_test

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/talos-lb/talos-lb/agent/ipvs"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// fakeKernel is an in-memory IPVS table that records every change made to it.
type fakeKernel struct {
	mu       sync.Mutex
	missing  bool
	checks   int
	services map[ipvs.Key]ipvs.Service
	ops      []string
}

func newFakeKernel(existing ...ipvs.Service) *fakeKernel {
	k := &fakeKernel{services: map[ipvs.Key]ipvs.Service{}}
	for _, s := range existing {
		k.services[s.Key] = s
	}

	return k
}

func (k *fakeKernel) Check() error {
	k.mu.Lock()
	defer k.mu.Unlock()

	k.checks++

	if k.missing {
		return ipvs.ErrIPVSMissing
	}

	return nil
}

func (k *fakeKernel) Service(key ipvs.Key) (ipvs.Service, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()

	s, ok := k.services[key]
	s.RealServers = slices.Clone(s.RealServers)

	return s, ok, nil
}

func (k *fakeKernel) AddService(s ipvs.Service) error {
	return k.change("add_service "+s.Key.String(), func() error {
		if _, ok := k.services[s.Key]; ok {
			return errors.New("exists")
		}

		s.RealServers = nil
		k.services[s.Key] = s

		return nil
	})
}

func (k *fakeKernel) UpdateService(s ipvs.Service) error {
	return k.change("update_service "+s.Key.String(), func() error {
		cur, ok := k.services[s.Key]
		if !ok {
			return errors.New("no such service")
		}

		cur.Scheduler, cur.Flags = s.Scheduler, s.Flags
		k.services[s.Key] = cur

		return nil
	})
}

func (k *fakeKernel) DeleteService(key ipvs.Key) error {
	return k.change("delete_service "+key.String(), func() error {
		delete(k.services, key)

		return nil
	})
}

func (k *fakeKernel) AddRealServer(key ipvs.Key, rs ipvs.RealServer) error {
	return k.change("add_real_server "+rs.Address.String(), func() error {
		s := k.services[key]
		s.RealServers = append(s.RealServers, rs)
		k.services[key] = s

		return nil
	})
}

func (k *fakeKernel) UpdateRealServer(key ipvs.Key, rs ipvs.RealServer) error {
	return k.change("update_real_server "+rs.Address.String(), func() error {
		s := k.services[key]
		i := slices.IndexFunc(s.RealServers, func(r ipvs.RealServer) bool { return r.Address == rs.Address })
		s.RealServers[i].Weight, s.RealServers[i].Forwarding = rs.Weight, rs.Forwarding

		return nil
	})
}

func (k *fakeKernel) DeleteRealServer(key ipvs.Key, addr netip.AddrPort) error {
	return k.change("delete_real_server "+addr.String(), func() error {
		s := k.services[key]
		s.RealServers = slices.DeleteFunc(s.RealServers, func(r ipvs.RealServer) bool { return r.Address == addr })
		k.services[key] = s

		return nil
	})
}

func (k *fakeKernel) change(op string, fn func() error) error {
	k.mu.Lock()
	defer k.mu.Unlock()

	k.ops = append(k.ops, op)

	return fn()
}

// takeOps returns the changes made since the last call.
func (k *fakeKernel) takeOps() []string {
	k.mu.Lock()
	defer k.mu.Unlock()

	ops := k.ops
	k.ops = nil

	return ops
}

func (k *fakeKernel) setMissing(missing bool) {
	k.mu.Lock()
	defer k.mu.Unlock()

	k.missing = missing
}

func (k *fakeKernel) setConnections(key ipvs.Key, addr string, active, inactive uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()

	s := k.services[key]
	for i := range s.RealServers {
		if s.RealServers[i].Address.String() == addr {
			s.RealServers[i].ActiveConnections, s.RealServers[i].InactiveConnections = active, inactive
		}
	}
}

// fakeSNAT remembers the keys of the last Sync.
type fakeSNAT struct {
	mu    sync.Mutex
	keys  []ipvs.Key
	syncs int
	err   error
}

func (s *fakeSNAT) Sync(keys []ipvs.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.syncs++
	s.keys = slices.Clone(keys)

	return s.err
}

func (s *fakeSNAT) state() ([]ipvs.Key, int) {
	s.mu.Lock()
	defer s.mu.Unlock()

	return slices.Clone(s.keys), s.syncs
}

func (s *fakeSNAT) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.err = err
}

var apiKey = ipvs.Key{Address: netip.MustParseAddr("10.5.0.100"), Port: 6443, Protocol: ipvs.TCP}

func apiService(weights map[string]uint32) *resources.IPVSService {
	return namedService("apiserver", weights)
}

func namedService(id string, weights map[string]uint32) *resources.IPVSService {
	res := resources.NewIPVSService(id)
	spec := res.TypedSpec().Value
	spec.Address = "10.5.0.100"
	spec.Port = 6443
	spec.Snat = true

	for _, addr := range slices.Sorted(maps.Keys(weights)) {
		spec.RealServers = append(spec.RealServers, &resourcepb.IPVSRealServerSpec{Address: addr, Port: 6443, Weight: weights[addr]})
	}

	return res
}

type fixture struct {
	h       *ctest.Harness
	kernel  *fakeKernel
	snat    *fakeSNAT
	ctrl    *ipvs.ServiceController
	metrics *prometheus.Registry
}

func newFixture(t *testing.T, existing ...ipvs.Service) *fixture {
	t.Helper()

	return newFixturePolling(t, 20*time.Millisecond, existing...)
}

func newFixturePolling(t *testing.T, poll time.Duration, existing ...ipvs.Service) *fixture {
	t.Helper()

	f := &fixture{kernel: newFakeKernel(existing...), snat: &fakeSNAT{}, metrics: prometheus.NewRegistry()}
	f.ctrl = &ipvs.ServiceController{Kernel: f.kernel, SNAT: f.snat, Metrics: ipvs.NewMetrics(f.metrics), PollInterval: poll}
	f.h = ctest.New(t, f.ctrl)

	return f
}

func (f *fixture) assertStatus(check func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions)) {
	f.h.T.Helper()

	ctest.AssertResource(f.h, "apiserver", func(r *resources.IPVSStatus, a *assert.Assertions) {
		check(r.TypedSpec().Value, a)
	})
}

func addresses(s *resourcepb.IPVSStatusSpec) []string {
	var out []string
	for _, rs := range s.GetRealServers() {
		out = append(out, rs.GetAddress())
	}

	return out
}

func TestProgramsServiceWithRealServersAndSNAT(t *testing.T) {
	f := newFixture(t)
	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1, "10.5.0.12": 1, "10.5.0.13": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
		a.Empty(s.GetReason())
		a.Equal("mh", s.GetScheduler())
		a.Equal([]string{"10.5.0.11", "10.5.0.12", "10.5.0.13"}, addresses(s))
		a.EqualValues(3, s.GetServing())
	})

	svc, ok, _ := f.kernel.Service(apiKey)
	require.True(t, ok)
	assert.Equal(t, "mh", svc.Scheduler)
	assert.Equal(t, ipvs.FlagHashFallback|ipvs.FlagHashPort, svc.Flags, "mh hashes ports and falls back from drained servers")

	keys, _ := f.snat.state()
	assert.Equal(t, []ipvs.Key{apiKey}, keys)

	// Connection counts come from polling the kernel.
	f.kernel.setConnections(apiKey, "10.5.0.12:6443", 4, 2)

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.EqualValues(4, s.GetActiveConnections())
		a.EqualValues(2, s.GetInactiveConnections())
		a.EqualValues(4, s.GetRealServers()[1].GetActiveConnections())
	})

	// Metrics are set right after the statuses are written.
	assert.Eventually(t, func() bool {
		return gauge(f.metrics, "talos_lb_ipvs_services_programmed", nil) == 1 &&
			gauge(f.metrics, "talos_lb_ipvs_connections", map[string]string{"service": "apiserver", "real_server": "10.5.0.12:6443", "state": "active"}) == 4 &&
			gauge(f.metrics, "talos_lb_ipvs_real_server_weight", map[string]string{"service": "apiserver", "real_server": "10.5.0.13:6443"}) == 1
	}, 2*time.Second, 10*time.Millisecond)
}

// gauge reads one gauge series from reg; -1 when the series is absent.
func gauge(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}

	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}

		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}

			if len(got) == len(labels) && (len(labels) == 0 || assert.ObjectsAreEqual(labels, got)) {
				return m.GetGauge().GetValue()
			}
		}
	}

	return -1
}

func TestChangesOnlyTheDifferences(t *testing.T) {
	f := newFixture(t)
	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1, "10.5.0.12": 1, "10.5.0.13": 1}))
	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
	})
	f.kernel.takeOps()

	// .12 drains, .13 leaves, .14 joins.
	f.h.Update(apiService(map[string]uint32{"10.5.0.11": 1, "10.5.0.12": 0, "10.5.0.14": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal([]string{"10.5.0.11", "10.5.0.12", "10.5.0.14"}, addresses(s))
		a.EqualValues(2, s.GetServing())
		a.EqualValues(0, s.GetRealServers()[1].GetWeight())
	})

	// A few idle polls must change nothing.
	time.Sleep(100 * time.Millisecond)

	assert.ElementsMatch(t, []string{
		"update_real_server 10.5.0.12:6443",
		"delete_real_server 10.5.0.13:6443",
		"add_real_server 10.5.0.14:6443",
	}, f.kernel.takeOps())
}

func TestLeavesForeignServicesAloneAndAdoptsItsOwnKey(t *testing.T) {
	foreign := ipvs.Service{
		Key:       ipvs.Key{Address: netip.MustParseAddr("10.9.9.9"), Port: 80, Protocol: ipvs.TCP},
		Scheduler: "rr",
		RealServers: []ipvs.RealServer{
			{Address: netip.MustParseAddrPort("10.9.9.10:80"), Weight: 1, Forwarding: ipvs.ForwardNAT},
		},
	}
	// Someone made a service at the address we are asked for: it becomes ours.
	stale := ipvs.Service{
		Key:       apiKey,
		Scheduler: "wlc",
		RealServers: []ipvs.RealServer{
			{Address: netip.MustParseAddrPort("10.5.0.99:6443"), Weight: 5, Forwarding: ipvs.ForwardDR},
			{Address: netip.MustParseAddrPort("10.5.0.11:6443"), Weight: 1, Forwarding: ipvs.ForwardNAT},
		},
	}

	f := newFixture(t, foreign, stale)
	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
		a.Equal([]string{"10.5.0.11"}, addresses(s))
	})

	assert.ElementsMatch(t, []string{
		"update_service " + apiKey.String(),
		"delete_real_server 10.5.0.99:6443",
	}, f.kernel.takeOps())

	require.NoError(t, f.h.State.Destroy(f.h.Ctx(), resources.NewIPVSService("apiserver").Metadata()))

	ctest.AssertNoResource[*resources.IPVSStatus](f.h, "apiserver")
	assert.Eventually(t, func() bool {
		_, ours, _ := f.kernel.Service(apiKey)
		keys, _ := f.snat.state()

		return !ours && len(keys) == 0
	}, 2*time.Second, 10*time.Millisecond)

	got, ok, _ := f.kernel.Service(foreign.Key)
	require.True(t, ok, "the foreign service stays")
	assert.Equal(t, foreign, got)
	assert.Equal(t, []string{"delete_service " + apiKey.String()}, f.kernel.takeOps())
}

func TestReportsMissingIPVSUntilTheModuleAppears(t *testing.T) {
	f := newFixture(t)
	f.kernel.setMissing(true)
	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateIPVSMissing, s.GetState())
		a.Contains(s.GetReason(), "KernelModuleConfig for ip_vs and ip_vs_mh")
	})

	_, present, _ := f.kernel.Service(apiKey)
	assert.False(t, present)

	f.kernel.setMissing(false)

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
		a.Empty(s.GetReason())
	})
}

func TestRejectsInvalidServicesWithAReason(t *testing.T) {
	f := newFixture(t)

	for id, mutate := range map[string]func(*resourcepb.IPVSServiceSpec){
		"wlc":       func(s *resourcepb.IPVSServiceSpec) { s.Scheduler = "wlc" },
		"udp":       func(s *resourcepb.IPVSServiceSpec) { s.Protocol = "udp" },
		"family":    func(s *resourcepb.IPVSServiceSpec) { s.RealServers[0].Address = "fd00::11" },
		"weight":    func(s *resourcepb.IPVSServiceSpec) { s.RealServers[0].Weight = 70000 },
		"no-port":   func(s *resourcepb.IPVSServiceSpec) { s.Port = 0 },
		"z-another": func(*resourcepb.IPVSServiceSpec) {}, // same key as "apiserver"
	} {
		res := namedService(id, map[string]uint32{"10.5.0.11": 1})
		mutate(res.TypedSpec().Value)
		f.h.Create(res)
	}

	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
	})

	for id, want := range map[string]string{
		"wlc":       "Talos kernels do not build it",
		"udp":       "only tcp",
		"family":    "same IP family",
		"weight":    "at most 65535",
		"no-port":   "port 0",
		"z-another": "same address, port and protocol as IPVSService apiserver",
	} {
		ctest.AssertResource(f.h, id, func(r *resources.IPVSStatus, a *assert.Assertions) {
			a.Equal(ipvs.StateInvalid, r.TypedSpec().Value.GetState())
			a.Contains(r.TypedSpec().Value.GetReason(), want)
			a.Empty(r.TypedSpec().Value.GetRealServers())
		})
	}

	assert.Len(t, f.kernel.takeOps(), 2, "only apiserver reaches the kernel: its service and one real server")
}

func TestSNATFailureMarksServicesFailed(t *testing.T) {
	f := newFixture(t)
	f.snat.fail(errors.New("nf_tables: operation not permitted"))
	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateFailed, s.GetState())
		a.Contains(s.GetReason(), "masquerade rules: nf_tables: operation not permitted")
	})

	f.snat.fail(nil)

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
	})
}

func TestCleanupRemovesOnlyWhatItProgrammed(t *testing.T) {
	foreign := ipvs.Service{Key: ipvs.Key{Address: netip.MustParseAddr("10.9.9.9"), Port: 80, Protocol: ipvs.TCP}, Scheduler: "rr"}
	f := newFixturePolling(t, time.Hour, foreign) // no poll may re-add the service after Cleanup
	f.h.Create(apiService(map[string]uint32{"10.5.0.11": 1}))

	f.assertStatus(func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions) {
		a.Equal(ipvs.StateProgrammed, s.GetState())
	})

	require.NoError(t, f.ctrl.Cleanup(zaptest.NewLogger(t)))

	_, ours, _ := f.kernel.Service(apiKey)
	assert.False(t, ours)

	_, theirs, _ := f.kernel.Service(foreign.Key)
	assert.True(t, theirs)

	keys, _ := f.snat.state()
	assert.Empty(t, keys)

	// A second Cleanup (e.g. a repeated signal) has nothing left to do.
	f.kernel.takeOps()
	require.NoError(t, f.ctrl.Cleanup(zaptest.NewLogger(t)))
	assert.Empty(t, f.kernel.takeOps())
}

func TestAgentWithoutServicesNeverTouchesTheHost(t *testing.T) {
	f := newFixture(t)

	time.Sleep(150 * time.Millisecond) // several polls

	f.kernel.mu.Lock()
	checks := f.kernel.checks
	f.kernel.mu.Unlock()

	_, syncs := f.snat.state()
	assert.Zero(t, checks, "IPVS not even looked at")
	assert.Zero(t, syncs, "nftables not even looked at")
	require.NoError(t, f.ctrl.Cleanup(zaptest.NewLogger(t)))

	_, syncs = f.snat.state()
	assert.Zero(t, syncs)
}
