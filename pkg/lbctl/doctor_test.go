package lbctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/controller/desired"
)

// healthyCluster: three control-plane agents in one L2 election, cp-2 leads
// and holds the VIP, plus a worker.
func healthyCluster() []*nodeReport {
	peers := []*resourcepb.VipPeer{
		{Name: "cp-1", Address: "10.5.0.2:50071"},
		{Name: "cp-2", Address: "10.5.0.3:50071"},
		{Name: "cp-3", Address: "10.5.0.4:50071"},
	}

	var nodes []*nodeReport

	for i, p := range peers {
		holding := p.GetName() == "cp-2"
		reason := ""

		if !holding {
			reason = "not leader (cp-2 is)"
		}

		nodes = append(nodes, &nodeReport{
			endpoint:   strings.TrimSuffix(p.GetAddress(), ":50071") + ":50070",
			name:       p.GetName(),
			role:       "controlplane",
			config:     &resourcepb.ConfigStatusSpec{Generation: 1},
			vipConfig:  &resourcepb.VipConfigSpec{NodeName: p.GetName(), Addresses: []string{"10.5.0.100"}, Link: "eth0", HealthCheck: "apiserver", Mode: "l2", Peers: peers},
			leadership: &resourcepb.VipLeadershipSpec{State: []string{"Follower", "Leader", "Follower"}[i], Leader: "cp-2", Term: 3, Settled: true},
			vips:       []*resourcepb.VipStatusSpec{{Address: "10.5.0.100", Link: "eth0", Holding: holding, Reason: reason}},
			health:     []*resourcepb.EndpointHealthSpec{{Name: "apiserver", Address: "127.0.0.1:6443", Healthy: true, State: "healthy"}},
		})
	}

	return append(nodes, &nodeReport{endpoint: "10.5.0.5:50070", name: "w-1", role: "worker", config: &resourcepb.ConfigStatusSpec{Generation: 1}})
}

func problems(findings []finding) []finding {
	var out []finding

	for _, f := range findings {
		if f.sev == sevProblem || f.sev == sevWarning {
			out = append(out, f)
		}
	}

	return out
}

func TestDoctorHealthyCluster(t *testing.T) {
	findings := diagnose(healthyCluster())
	assert.Empty(t, problems(findings))

	var out bytes.Buffer
	require.NoError(t, printFindings(&out, findings))
	assert.Contains(t, out.String(), "[ok] election: leader cp-2 (term 3), agreed by 3 of 3")
	assert.Contains(t, out.String(), "[ok] vip: 10.5.0.100 held by cp-2 (10.5.0.3:50070)")
	assert.Contains(t, out.String(), "[not checked] kubernetes: kube-proxy in IPVS mode without strictARP")
}

func TestDoctorFindings(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(nodes []*nodeReport)
		sev    severity
		check  string
		what   string
		fix    string
	}{
		"unreachable": {
			func(n []*nodeReport) {
				n[0] = &nodeReport{endpoint: "10.5.0.2:50070", unreachable: errors.New("node 10.5.0.2:50070: connection refused")}
			},
			sevProblem, "reachable", "connection refused", "service ext-lb-agent",
		},
		"vip section missing": {
			func(n []*nodeReport) { n[2].vipConfig, n[2].leadership, n[2].vips = nil, nil, nil },
			sevProblem, "vip config", "no vip section on cp-3 (10.5.0.4:50070)", "same vip section",
		},
		"vip sections differ": {
			func(n []*nodeReport) { n[0].vipConfig.Addresses = []string{"10.5.0.101"} },
			sevProblem, "vip config", "differ", "lbctl gen config",
		},
		"no quorum": {
			func(n []*nodeReport) { n[0].leadership.Leader = "" },
			sevProblem, "election", "no leader known to cp-1 (10.5.0.2:50070)", "tcp/50071",
		},
		"split views": {
			func(n []*nodeReport) { n[2].leadership.Leader, n[2].leadership.Term = "cp-1", 2 },
			sevProblem, "election", "disagree on the leader", "older term",
		},
		"native vip in the way": {
			func(n []*nodeReport) {
				n[1].vips[0].Holding = false
				n[1].vips[0].Reason = "10.5.0.100 is already an address of eth0, not added by talos-lb (a VIP must not be a node address)"
			},
			sevProblem, "vip", "put there by something else", "remove-native-vip.yaml",
		},
		"two holders": {
			func(n []*nodeReport) { n[0].vips[0].Holding = true },
			sevProblem, "vip", "held by 2 nodes at once", "do not hear each other",
		},
		"apiserver refuses anonymous readyz": {
			func(n []*nodeReport) {
				n[0].health[0] = &resourcepb.EndpointHealthSpec{Name: "apiserver", State: "unhealthy", LastError: "HTTP 401"}
			},
			sevWarning, "health", "apiserver is unhealthy: HTTP 401", "kind: tcp",
		},
		"ip_vs not loaded": {
			func(n []*nodeReport) {
				n[1].ipvs = []*resourcepb.IPVSStatusSpec{{Address: "10.5.0.100", Port: 6443, State: "ipvs-missing"}}
			},
			sevProblem, "ipvs", "ip_vs is not loaded", "KernelModuleConfig",
		},
		"KubePrism's port": {
			func(n []*nodeReport) {
				n[3].proxies = []*resourcepb.ProxyStatusSpec{{Name: "kubernetes", State: "failed", LastError: "listen tcp 127.0.0.1:7445: bind: address already in use"}}
			},
			sevProblem, "ports", "proxy kubernetes cannot listen", "KubePrism",
		},
		"Talos BGP on 179": {
			func(n []*nodeReport) {
				n[0].bgpPeers = []*resourcepb.BgpPeerStatusSpec{{Name: "tor-a", Address: "10.5.0.1", State: "idle", LastError: "listen tcp [::]:179: bind: address already in use"}}
			},
			sevProblem, "ports", "BGP peer tor-a (10.5.0.1) cannot listen", "leave bgp.listenPort unset",
		},
		"proxy refuses everyone": {
			func(n []*nodeReport) {
				n[3].proxies = []*resourcepb.ProxyStatusSpec{{Name: "kubernetes", State: "no-healthy-upstream", Upstreams: 3}}
			},
			sevProblem, "proxy", "proxy kubernetes has no healthy upstream of 3", "caFile",
		},
		"exclude label on every node": {
			func(n []*nodeReport) {
				n[1].push = &resourcepb.PushStatusSpec{Generation: 7}
				n[1].nodeSets = []*resourcepb.NodeSet{
					{Name: "all", Nodes: []string{"w-1"}},
					{Name: "cp-only", Excluded: map[string]string{"cp-1": desired.ReasonExcluded}, DefaultReason: desired.ReasonExcluded},
				}
			},
			sevProblem, "kubernetes", "node set cp-only: every node is excluded by label", "--ignore-exclude-label",
		},
		"node set empty for other reasons": {
			func(n []*nodeReport) {
				n[0].push = &resourcepb.PushStatusSpec{Generation: 3}
				n[0].nodeSets = []*resourcepb.NodeSet{{Name: "local", DefaultReason: desired.ReasonNoLocalEndpoint, Excluded: map[string]string{"cp-1": desired.ReasonNotReady}}}
			},
			sevWarning, "kubernetes", "node set local: no local endpoints; node not ready", "lbctl --controller get services",
		},
		"config rejected": {
			func(n []*nodeReport) { n[3].config.LastError = "line 3: node.role: unknown role" },
			sevWarning, "config", "generation 1 keeps running", "lbctl validate",
		},
	} {
		t.Run(name, func(t *testing.T) {
			nodes := healthyCluster()
			tc.mutate(nodes)

			var found bool

			for _, f := range problems(diagnose(nodes)) {
				if f.sev == tc.sev && f.check == tc.check && strings.Contains(f.what, tc.what) {
					found = true

					assert.Contains(t, f.fix, tc.fix)
				}
			}

			assert.True(t, found, "no %s %q finding with %q in %+v", tc.sev, tc.check, tc.what, problems(diagnose(nodes)))
		})
	}
}

func TestDoctorBGPModeWantsEveryHealthyNode(t *testing.T) {
	nodes := healthyCluster()
	for _, n := range nodes[:3] {
		n.vipConfig.Mode, n.leadership = "bgp", nil
		n.vips[0].Holding, n.vips[0].Reason = true, ""
	}

	findings := diagnose(nodes)
	assert.Empty(t, problems(findings))

	var out bytes.Buffer
	require.NoError(t, printFindings(&out, findings))
	assert.Contains(t, out.String(), "10.5.0.100 announced over BGP by cp-1")
}

func TestDoctorTalosconfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config")

	require.NoError(t, os.WriteFile(file, []byte("context: dev\ncontexts:\n  dev:\n    endpoints: [10.5.0.100]\n"), 0o600))

	f := checkTalosconfig(file, healthyCluster())
	require.Len(t, f, 1)
	assert.Equal(t, sevWarning, f[0].sev)
	assert.Contains(t, f[0].fix, "talosctl config endpoint 10.5.0.2 10.5.0.3 10.5.0.4")

	require.NoError(t, os.WriteFile(file, []byte("context: dev\ncontexts:\n  dev:\n    endpoints: [10.5.0.2, 10.5.0.3]\n"), 0o600))
	assert.Equal(t, sevOK, checkTalosconfig(file, healthyCluster())[0].sev)

	assert.Empty(t, checkTalosconfig("", healthyCluster()), "--talosconfig '' skips the check")
}

func TestDoctorFailsOnProblems(t *testing.T) {
	err := printFindings(&bytes.Buffer{}, []finding{{sevProblem, "x", "y", "z"}, {sevWarning, "x", "y", "z"}})
	require.EqualError(t, err, "1 problem(s) found")
}

func TestDoctorNodeSetsNeedAPush(t *testing.T) {
	find := func(nodes []*nodeReport) finding {
		for _, f := range diagnose(nodes) {
			if f.check == "kubernetes" && (strings.Contains(f.what, "node set") || strings.Contains(f.what, desired.ExcludeLabel)) {
				return f
			}
		}

		t.Fatal("no node set finding")

		return finding{}
	}

	nodes := healthyCluster()
	assert.Equal(t, sevNotChecked, find(nodes).sev, "nothing pushed yet: nothing to say")

	nodes[2].push = &resourcepb.PushStatusSpec{Generation: 4}
	nodes[2].nodeSets = []*resourcepb.NodeSet{{Name: "all", Nodes: []string{"cp-1", "w-1"}}}

	f := find(nodes)
	assert.Equal(t, sevOK, f.sev)
	assert.Contains(t, f.what, "push 4, as cp-3")
}
