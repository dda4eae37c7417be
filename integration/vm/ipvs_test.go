package vm_test

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mobyipvs "github.com/moby/ipvs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/talos-lb/talos-lb/agent/ipvs"
	"github.com/talos-lb/talos-lb/agent/ipvs/kernel"
	"github.com/talos-lb/talos-lb/agent/ipvs/snat"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

const serviceID = "apiserver"

// countingKernel is the real kernel, with every change it makes recorded.
type countingKernel struct {
	ipvs.Kernel

	mu  sync.Mutex
	ops []string
}

func (k *countingKernel) note(op string) {
	k.mu.Lock()
	defer k.mu.Unlock()

	k.ops = append(k.ops, op)
}

func (k *countingKernel) changes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()

	return slices.Clone(k.ops)
}

func (k *countingKernel) AddService(s ipvs.Service) error {
	k.note("add_service")

	return k.Kernel.AddService(s)
}

func (k *countingKernel) UpdateService(s ipvs.Service) error {
	k.note("update_service")

	return k.Kernel.UpdateService(s)
}

func (k *countingKernel) DeleteService(key ipvs.Key) error {
	k.note("delete_service")

	return k.Kernel.DeleteService(key)
}

func (k *countingKernel) AddRealServer(key ipvs.Key, rs ipvs.RealServer) error {
	k.note("add_real_server")

	return k.Kernel.AddRealServer(key, rs)
}

func (k *countingKernel) UpdateRealServer(key ipvs.Key, rs ipvs.RealServer) error {
	k.note("update_real_server")

	return k.Kernel.UpdateRealServer(key, rs)
}

func (k *countingKernel) DeleteRealServer(key ipvs.Key, addr netip.AddrPort) error {
	k.note("delete_real_server")

	return k.Kernel.DeleteRealServer(key, addr)
}

// agent is one run of the IPVS controller with the real kernel and nftables behind it.
type agent struct {
	h      *ctest.Harness
	ctrl   *ipvs.ServiceController
	kernel *countingKernel
}

// startAgent runs the controller until the test ends, then removes what it programmed, as
// the daemon does on SIGTERM.
func startAgent(t *testing.T) *agent {
	t.Helper()

	return runAgent(t, true)
}

// runAgent runs the controller until the test ends; without cleanup it stops as a killed
// agent would, leaving the kernel as it was.
func runAgent(t *testing.T, cleanup bool) *agent {
	t.Helper()

	k := &kernel.IPVS{}
	t.Cleanup(k.Close)

	a := &agent{kernel: &countingKernel{Kernel: k}}
	a.ctrl = &ipvs.ServiceController{Kernel: a.kernel, SNAT: &snat.Masquerade{}, PollInterval: 200 * time.Millisecond}

	if cleanup {
		// Registered before the harness, so it runs after the runtime has stopped.
		t.Cleanup(func() { assert.NoError(t, a.ctrl.Cleanup(zaptest.NewLogger(t))) })
	}

	a.h = ctest.New(t, a.ctrl)

	return a
}

// service is the IPVSService for vip:443 over the backends' addresses of vip's family.
func service(vip netip.Addr, weights map[*backend]uint32, scheduler string) *resources.IPVSService {
	res := resources.NewIPVSService(serviceID)
	spec := res.TypedSpec().Value
	spec.Address = vip.String()
	spec.Port = vipPort
	spec.Scheduler = scheduler
	spec.Snat = true

	for b, w := range weights {
		spec.RealServers = append(spec.RealServers, &resourcepb.IPVSRealServerSpec{Address: b.address(vip).String(), Port: backendPort, Weight: w})
	}

	return res
}

func (a *agent) assertStatus(check func(s *resourcepb.IPVSStatusSpec, a *assert.Assertions)) {
	a.h.T.Helper()

	ctest.AssertResource(a.h, serviceID, func(r *resources.IPVSStatus, as *assert.Assertions) {
		check(r.TypedSpec().Value, as)
	})
}

func (a *agent) assertProgrammed() {
	a.h.T.Helper()

	a.assertStatus(func(s *resourcepb.IPVSStatusSpec, as *assert.Assertions) {
		as.Equal(ipvs.StateProgrammed, s.GetState(), s.GetReason())
	})
}

// spread opens n connections to vip and counts them per backend; every backend must have
// seen the holder's own address on its link as the source (the masquerade).
func spread(t *testing.T, c *client, vip netip.Addr, backends []*backend, n int) map[string]int {
	t.Helper()

	sources := map[string]string{}
	for _, b := range backends {
		sources[b.name] = b.holder(vip).String()
	}

	got := map[string]int{}

	for range n {
		cn, err := c.dial(t.Context(), vip)
		require.NoError(t, err)

		got[cn.backend]++

		assert.Equal(t, sources[cn.backend], cn.source, "%s must see the holder's address, not the client's", cn.backend)
		require.NoError(t, cn.Close())
	}

	return got
}

func sysctl(t *testing.T, key string) string {
	t.Helper()

	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	require.NoError(t, err)

	return strings.TrimSpace(string(b))
}

// The agent may start before ip_vs is loaded (Talos loads it from the machine config); it
// must say so, then program the service once the module appears, although moby/ipvs
// decides only once per process whether IPVS exists.
func TestIPVSMissingUntilTheModulesAreLoaded(t *testing.T) {
	requireVM(t)

	if ipvsLoaded() {
		t.Skip("ip_vs is already loaded: this test must run first in the process")
	}

	addVIP(t)
	c := newClient(t)
	b := newBackend(t, 1)
	a := startAgent(t)
	a.h.Create(service(vip, map[*backend]uint32{b: 1}, ""))

	a.assertStatus(func(s *resourcepb.IPVSStatusSpec, as *assert.Assertions) {
		as.Equal(ipvs.StateIPVSMissing, s.GetState())
		as.Contains(s.GetReason(), "add a Talos KernelModuleConfig for ip_vs and ip_vs_mh")
	})

	requireIPVS(t)

	a.assertProgrammed()

	cn, err := c.dial(t.Context(), vip)
	require.NoError(t, err)
	assert.Equal(t, b.name, cn.backend)
	require.NoError(t, cn.Close())
}

func TestConnectionsSpreadOverBackendsAndRepliesReturn(t *testing.T) {
	requireVM(t)
	requireIPVS(t)

	// The agent must turn forwarding on itself; the guest's init already did.
	require.NoError(t, os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644))

	addVIP(t)
	c := newClient(t)
	backends := []*backend{newBackend(t, 1), newBackend(t, 2), newBackend(t, 3)}
	a := startAgent(t)
	a.h.Create(service(vip, map[*backend]uint32{backends[0]: 1, backends[1]: 1, backends[2]: 1}, ""))
	a.assertProgrammed()

	assert.Equal(t, "1", sysctl(t, "net.ipv4.ip_forward"))
	assert.Equal(t, "1", sysctl(t, "net.ipv4.vs.conntrack"))

	got := spread(t, c, vip, backends, 60)
	t.Logf("60 connections: %v", got)

	for _, b := range backends {
		assert.Positive(t, got[b.name], "%s got no connection", b.name)
	}

	a.assertStatus(func(s *resourcepb.IPVSStatusSpec, as *assert.Assertions) {
		as.Equal("mh", s.GetScheduler())
		as.EqualValues(3, s.GetServing())
		as.Len(s.GetRealServers(), 3)
		// Closed connections linger in TIME_WAIT/FIN states: inactive, and counted.
		as.NotZero(s.GetInactiveConnections())
	})
}

func TestIPv6ConnectionsSpreadOverBackendsAndRepliesReturn(t *testing.T) {
	requireVM(t)
	requireIPVS(t)

	require.NoError(t, os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("0"), 0o644))

	addVIP(t)
	c := newClient(t)
	backends := []*backend{newBackend(t, 1), newBackend(t, 2)}
	a := startAgent(t)
	a.h.Create(service(vip6, map[*backend]uint32{backends[0]: 1, backends[1]: 1}, ""))
	a.assertProgrammed()

	assert.Equal(t, "1", sysctl(t, "net.ipv6.conf.all.forwarding"))
	assert.Equal(t, []string{"[fd96::1]:443"}, ipvsServices(t))
	assert.Equal(t, 1, ourRules(t))

	got := spread(t, c, vip6, backends, 40)
	t.Logf("40 connections: %v", got)

	for _, b := range backends {
		assert.Positive(t, got[b.name], "%s got no connection", b.name)
	}
}

func TestDrainedBackendGetsNoNewConnectionsButKeepsItsOwn(t *testing.T) {
	requireVM(t)
	requireIPVS(t)

	addVIP(t)
	c := newClient(t)
	backends := []*backend{newBackend(t, 1), newBackend(t, 2), newBackend(t, 3)}
	drained := backends[1]
	a := startAgent(t)
	a.h.Create(service(vip, map[*backend]uint32{backends[0]: 1, backends[1]: 1, backends[2]: 1}, ""))
	a.assertProgrammed()

	// Hold one connection to the backend about to drain.
	var held *conn

	for range 50 {
		cn, err := c.dial(t.Context(), vip)
		require.NoError(t, err)

		if cn.backend == drained.name {
			held = cn

			break
		}

		require.NoError(t, cn.Close())
	}

	require.NotNil(t, held, "no connection reached %s", drained.name)

	t.Cleanup(func() { held.Close() }) //nolint:errcheck

	a.h.Update(service(vip, map[*backend]uint32{backends[0]: 1, backends[1]: 0, backends[2]: 1}, ""))
	a.assertStatus(func(s *resourcepb.IPVSStatusSpec, as *assert.Assertions) {
		as.EqualValues(2, s.GetServing())

		for _, rs := range s.GetRealServers() {
			if rs.GetAddress() == drained.addr.String() {
				as.Zero(rs.GetWeight())
				as.EqualValues(1, rs.GetActiveConnections(), "the held connection")
			}
		}
	})

	before := drained.hits.Load()
	got := spread(t, c, vip, backends, 60)
	t.Logf("60 connections with %s drained: %v", drained.name, got)

	assert.Zero(t, got[drained.name])
	assert.Equal(t, before, drained.hits.Load())
	assert.Positive(t, got[backends[0].name])
	assert.Positive(t, got[backends[2].name])
	require.NoError(t, held.echo(), "an established connection outlives the drain")
}

func TestRemovalTakesOnlyWhatTheAgentAdded(t *testing.T) {
	requireVM(t)
	requireIPVS(t)

	addVIP(t)
	newClient(t)
	b := newBackend(t, 1)
	foreignSvc := addForeignIPVSService(t, b)
	addForeignTable(t)

	a := startAgent(t)
	a.h.Create(service(vip, map[*backend]uint32{b: 1}, ""))
	a.assertProgrammed()

	assert.Equal(t, []string{vip.String() + ":443", foreignSvc}, ipvsServices(t))
	assert.Equal(t, 1, ourRules(t))

	// The VIP holder steps down: the IPVSService goes away.
	require.NoError(t, a.h.State.Destroy(a.h.Ctx(), resources.NewIPVSService(serviceID).Metadata()))
	ctest.AssertNoResource[*resources.IPVSStatus](a.h, serviceID)

	require.Eventually(t, func() bool { return ourRules(t) < 0 }, 5*time.Second, 50*time.Millisecond, "table inet talos-lb removed")
	assert.Equal(t, []string{foreignSvc}, ipvsServices(t))
	assertForeignTable(t)

	// The agent stops (SIGTERM): the daemon's cleanup hook removes everything again.
	a.h.Create(service(vip, map[*backend]uint32{b: 1}, ""))
	a.assertProgrammed()
	assert.Equal(t, 1, ourRules(t))

	require.NoError(t, a.ctrl.Cleanup(zaptest.NewLogger(t)))
	assert.Equal(t, []string{foreignSvc}, ipvsServices(t))
	assert.Negative(t, ourRules(t))
	assertForeignTable(t)
}

// A restarted agent finds its service in the kernel and changes nothing; later changes are
// made in place, so established connections survive both.
func TestRestartReconcilesInsteadOfDuplicating(t *testing.T) {
	requireVM(t)
	requireIPVS(t)

	addVIP(t)
	c := newClient(t)
	backends := []*backend{newBackend(t, 1), newBackend(t, 2)}
	weights := map[*backend]uint32{backends[0]: 1, backends[1]: 1}

	var held *conn

	t.Run("first agent", func(t *testing.T) {
		a := runAgent(t, false)
		a.h.Create(service(vip, weights, ""))
		a.assertProgrammed()

		var err error
		held, err = c.dial(t.Context(), vip)
		require.NoError(t, err)
	})

	t.Cleanup(func() { held.Close() }) //nolint:errcheck

	a := startAgent(t)
	a.h.Create(service(vip, weights, ""))
	a.assertProgrammed()

	time.Sleep(time.Second) // several polls

	assert.Empty(t, a.kernel.changes(), "nothing to change")
	assert.Equal(t, []string{vip.String() + ":443"}, ipvsServices(t))
	assert.Equal(t, 1, ourRules(t))
	require.NoError(t, held.echo())

	weights[backends[0]] = 5
	a.h.Update(service(vip, weights, ""))
	a.assertStatus(func(s *resourcepb.IPVSStatusSpec, as *assert.Assertions) {
		as.EqualValues(5, s.GetRealServers()[0].GetWeight())
	})

	assert.Equal(t, []string{"update_real_server"}, a.kernel.changes())
	require.NoError(t, held.echo())
}

// Talos kernels build lc, but a node that did not load ip_vs_lc cannot use it: the status
// names the module to add.
func TestMissingSchedulerModuleIsNamed(t *testing.T) {
	requireVM(t)
	requireIPVS(t)

	if _, err := os.Stat("/sys/module/ip_vs_lc"); err == nil {
		t.Skip("ip_vs_lc is loaded")
	}

	addVIP(t)
	b := newBackend(t, 1)
	a := startAgent(t)
	a.h.Create(service(vip, map[*backend]uint32{b: 1}, "lc"))

	a.assertStatus(func(s *resourcepb.IPVSStatusSpec, as *assert.Assertions) {
		as.Equal(ipvs.StateFailed, s.GetState())
		as.Contains(s.GetReason(), "add ip_vs_lc to the Talos KernelModuleConfig")
	})
}

// ipvsServices lists the kernel's IPVS services as address:port, sorted.
func ipvsServices(t *testing.T) []string {
	t.Helper()

	h, err := mobyipvs.New("")
	require.NoError(t, err)

	defer h.Close()

	svcs, err := h.GetServices()
	require.NoError(t, err)

	var out []string
	for _, s := range svcs {
		out = append(out, net.JoinHostPort(s.Address.String(), strconv.Itoa(int(s.Port))))
	}

	slices.Sort(out)

	return out
}

// addForeignIPVSService adds a service someone else owns, as kube-proxy in IPVS mode would.
func addForeignIPVSService(t *testing.T, b *backend) string {
	t.Helper()

	h, err := mobyipvs.New("")
	require.NoError(t, err)

	defer h.Close()

	svc := &mobyipvs.Service{
		Address: net.ParseIP("10.96.0.99").To4(), Port: 80, Protocol: unix.IPPROTO_TCP,
		SchedName: "rr", AddressFamily: unix.AF_INET, Netmask: 0xffffffff,
	}
	require.NoError(t, h.NewService(svc))
	require.NoError(t, h.NewDestination(svc, &mobyipvs.Destination{
		Address: b.addr.AsSlice(), Port: backendPort, Weight: 1, AddressFamily: unix.AF_INET,
	}))

	t.Cleanup(func() {
		if h, err := mobyipvs.New(""); err == nil {
			h.DelService(svc) //nolint:errcheck
			h.Close()
		}
	})

	return "10.96.0.99:80"
}

var foreignTable = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "kube-proxy"}

// addForeignTable adds a NAT table someone else owns, with one masquerade rule.
func addForeignTable(t *testing.T) {
	t.Helper()

	conn, err := nftables.New()
	require.NoError(t, err)

	table := conn.AddTable(foreignTable)
	chain := conn.AddChain(&nftables.Chain{
		Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0x40, 0, 0}},
		&expr.Masq{},
	}})
	require.NoError(t, conn.Flush())

	t.Cleanup(func() {
		if conn, err := nftables.New(); err == nil {
			conn.DelTable(foreignTable)
			conn.Flush() //nolint:errcheck
		}
	})
}

func assertForeignTable(t *testing.T) {
	t.Helper()

	conn, err := nftables.New()
	require.NoError(t, err)

	chain, err := conn.ListChain(foreignTable, "postrouting")
	require.NoError(t, err, "the foreign table and chain are still there")

	rules, err := conn.GetRules(foreignTable, chain)
	require.NoError(t, err)
	assert.Len(t, rules, 1)
}

// ourRules counts the rules in the agent's masquerade chain; -1 when its table is gone.
func ourRules(t *testing.T) int {
	t.Helper()

	conn, err := nftables.New()
	require.NoError(t, err)

	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: snat.TableName}

	chain, err := conn.ListChain(table, snat.ChainName)
	if err != nil {
		return -1
	}

	rules, err := conn.GetRules(table, chain)
	require.NoError(t, err)

	return len(rules)
}
