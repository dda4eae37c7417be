package lbctl

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/talos-lb/talos-lb/controller/desired"
)

// Each check reads the nodes' reports and says what it saw; anything short
// of "ok" carries the fix, in the words of the Talos config that applies it.

func diagnose(nodes []*nodeReport) []finding {
	out := checkReachable(nodes)

	var answered []*nodeReport

	for _, n := range nodes {
		if n.unreachable == nil {
			answered = append(answered, n)
		}
	}

	for _, check := range []func([]*nodeReport) []finding{
		checkConfigs, checkVIPSections, checkElection, checkHolders, checkHealth, checkIPVS, checkListeners,
		checkProxies, checkNodeSets,
	} {
		out = append(out, check(answered)...)
	}

	return append(out, pendingKubernetesChecks()...)
}

func checkReachable(nodes []*nodeReport) []finding {
	var out []finding

	for _, n := range nodes {
		switch {
		case n.unreachable != nil:
			out = append(out, finding{sevProblem, "reachable", n.unreachable.Error(),
				"is ext-lb-agent running? talosctl -n <node> service ext-lb-agent; talosctl -n <node> logs ext-lb-agent\n" +
					"With the host firewall blocking by default, allow tcp/50070 (NetworkRuleConfig talos-lb-api: lbctl gen config --firewall-subnets)."})
		case n.readErr != nil:
			out = append(out, finding{sevWarning, "reachable", n.label() + ": " + n.readErr.Error(),
				"lbctl and the agent may be of different versions: lbctl version"})
		}
	}

	if len(out) == 0 {
		out = append(out, finding{sevOK, "reachable", fmt.Sprintf("all %d agents answer", len(nodes)), ""})
	}

	return out
}

func checkConfigs(nodes []*nodeReport) []finding {
	var out []finding

	for _, n := range nodes {
		c := n.config
		if c == nil {
			continue
		}

		if c.GetLastError() != "" {
			out = append(out, finding{sevWarning, "config",
				fmt.Sprintf("%s rejected its new config, generation %d keeps running: %s", n.label(), c.GetGeneration(), c.GetLastError()),
				"correct the agent config in the ExtensionServiceConfig (check it with lbctl validate <patch>) and apply it again"})
		}

		if len(c.GetRestartRequired()) > 0 {
			out = append(out, finding{sevWarning, "config",
				fmt.Sprintf("%s runs old values of %s until it restarts", n.label(), strings.Join(c.GetRestartRequired(), ", ")),
				"talosctl -n <node> service ext-lb-agent restart"})
		}
	}

	return out
}

func controlPlane(nodes []*nodeReport) []*nodeReport {
	var out []*nodeReport

	for _, n := range nodes {
		if n.role == "controlplane" {
			out = append(out, n)
		}
	}

	return out
}

func labels(nodes []*nodeReport) string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.label())
	}

	return strings.Join(out, ", ")
}

// vipSignature is what must be equal on every control-plane node: the link
// may differ between machines, the rest may not.
func vipSignature(n *nodeReport) string {
	c := n.vipConfig

	peers := make([]string, 0, len(c.GetPeers()))
	for _, p := range c.GetPeers() {
		peers = append(peers, p.GetName()+"="+p.GetAddress())
	}

	slices.Sort(peers)

	addrs := slices.Clone(c.GetAddresses())
	slices.Sort(addrs)

	return fmt.Sprintf("mode %s, addresses %v, peers %v", c.GetMode(), addrs, peers)
}

const sharedPatchFix = "give every control-plane node the same vip section: apply one control-plane patch (lbctl gen config) to all of them"

func checkVIPSections(nodes []*nodeReport) []finding {
	cps := controlPlane(nodes)

	var with, without []*nodeReport

	for _, n := range cps {
		if n.vipConfig != nil {
			with = append(with, n)
		} else {
			without = append(without, n)
		}
	}

	switch {
	case len(with) == 0:
		return []finding{{sevOK, "vip config", "no control-plane VIP configured: the API endpoint is another's job", ""}}
	case len(without) > 0:
		return []finding{{sevProblem, "vip config", fmt.Sprintf("no vip section on %s, while %s have one", labels(without), labels(with)), sharedPatchFix}}
	}

	bySig := map[string][]*nodeReport{}
	for _, n := range with {
		bySig[vipSignature(n)] = append(bySig[vipSignature(n)], n)
	}

	if len(bySig) > 1 {
		var parts []string
		for sig, ns := range bySig {
			parts = append(parts, labels(ns)+": "+sig)
		}

		slices.Sort(parts)

		return []finding{{sevProblem, "vip config", "the control-plane nodes' vip sections differ: " + strings.Join(parts, "; "), sharedPatchFix}}
	}

	out := []finding{{sevOK, "vip config", fmt.Sprintf("%d control-plane nodes share the VIP section (%s)", len(with), vipSignature(with[0])), ""}}

	answered := map[string]bool{}
	for _, n := range with {
		answered[n.name] = true
	}

	for _, p := range with[0].vipConfig.GetPeers() {
		if !answered[p.GetName()] {
			out = append(out, finding{sevWarning, "vip config",
				fmt.Sprintf("election peer %s (%s) was not asked", p.GetName(), p.GetAddress()),
				"name every control-plane node in --nodes, or in the lbctl context's endpoints"})
		}
	}

	return out
}

// l2Nodes are the control-plane nodes running the L2 election.
func l2Nodes(nodes []*nodeReport) []*nodeReport {
	var out []*nodeReport

	for _, n := range controlPlane(nodes) {
		if n.vipConfig != nil && n.vipConfig.GetMode() != "bgp" && n.leadership != nil {
			out = append(out, n)
		}
	}

	return out
}

const electionFix = "a majority of the peers must reach each other on the election port (tcp/50071): check the nodes are up, " +
	"the host firewall (NetworkRuleConfig talos-lb-election), and lbctl get election -n <node>"

func checkElection(nodes []*nodeReport) []finding {
	l2 := l2Nodes(nodes)
	if len(l2) == 0 {
		return nil
	}

	var (
		out        []finding
		leaders    = map[string][]string{}
		leaderless []*nodeReport
	)

	for _, n := range l2 {
		l := n.leadership

		if l.GetLastError() != "" {
			out = append(out, finding{sevWarning, "election", n.label() + ": " + l.GetLastError(), electionFix})
		}

		if l.GetLeader() == "" {
			leaderless = append(leaderless, n)

			continue
		}

		key := fmt.Sprintf("%s (term %d)", l.GetLeader(), l.GetTerm())
		leaders[key] = append(leaders[key], n.label())
	}

	if len(leaderless) > 0 {
		out = append(out, finding{sevProblem, "election", "no leader known to " + labels(leaderless) + ": no quorum", electionFix})
	}

	switch {
	case len(leaders) == 0:
	case len(leaders) == 1 && len(leaderless) == 0:
		for leader, ns := range leaders {
			out = append(out, finding{sevOK, "election", fmt.Sprintf("leader %s, agreed by %d of %d", leader, len(ns), len(l2)), ""})
		}
	case len(leaders) > 1:
		var parts []string
		for leader, ns := range leaders {
			parts = append(parts, strings.Join(ns, ", ")+" follow "+leader)
		}

		slices.Sort(parts)
		out = append(out, finding{sevProblem, "election", "the nodes disagree on the leader: " + strings.Join(parts, "; "),
			"the nodes on the older term do not hear the leader: " + electionFix})
	}

	return out
}

func checkHolders(nodes []*nodeReport) []finding {
	type view struct {
		holders []*nodeReport
		reasons []string
	}

	var (
		out   []finding
		order []string
		byVIP = map[string]*view{}
		bgp   bool
	)

	for _, n := range controlPlane(nodes) {
		if n.vipConfig == nil {
			continue
		}

		bgp = n.vipConfig.GetMode() == "bgp"

		for _, s := range n.vips {
			v := byVIP[s.GetAddress()]
			if v == nil {
				v = &view{}
				byVIP[s.GetAddress()] = v
				order = append(order, s.GetAddress())
			}

			if s.GetHolding() {
				v.holders = append(v.holders, n)
			} else {
				v.reasons = append(v.reasons, n.label()+": "+s.GetReason())
			}

			if strings.Contains(s.GetReason(), "not added by talos-lb") {
				out = append(out, finding{sevProblem, "vip", fmt.Sprintf("%s already carries %s, put there by something else: %s", n.label(), s.GetAddress(), s.GetReason()),
					"remove Talos's native VIP for this address (extension/examples/homelab/remove-native-vip.yaml, or remove-legacy-vip.yaml; docs/migration.md)"})
			}
		}
	}

	for _, addr := range order {
		v := byVIP[addr]

		switch {
		case len(v.holders) == 0:
			out = append(out, finding{sevProblem, "vip", fmt.Sprintf("%s is held by no node: %s", addr, strings.Join(v.reasons, "; ")),
				"act on the reasons above; lbctl get vips shows them as they change"})
		case bgp:
			out = append(out, finding{sevOK, "vip", fmt.Sprintf("%s announced over BGP by %s", addr, labels(v.holders)), ""})
		case len(v.holders) == 1:
			out = append(out, finding{sevOK, "vip", fmt.Sprintf("%s held by %s", addr, v.holders[0].label()), ""})
		default:
			out = append(out, finding{sevProblem, "vip", fmt.Sprintf("%s is held by %d nodes at once: %s", addr, len(v.holders), labels(v.holders)),
				"a failover lasts well under a second: if this persists, the holders do not hear each other: " + electionFix})
		}
	}

	return out
}

func checkHealth(nodes []*nodeReport) []finding {
	var out []finding

	for _, n := range nodes {
		gate := n.vipConfig.GetHealthCheck()

		for _, h := range n.health {
			if h.GetHealthy() {
				continue
			}

			what := fmt.Sprintf("%s: health check %s is %s", n.label(), h.GetName(), h.GetState())
			if h.GetLastError() != "" {
				what += ": " + h.GetLastError()
			}

			fix := "look at what the check probes on that node (" + h.GetAddress() + ")"

			switch {
			case strings.Contains(h.GetLastError(), "401") || strings.Contains(h.GetLastError(), "403"):
				fix = "the API server refuses anonymous /readyz (anonymous auth turned off): make the check kind: tcp, or allow anonymous health endpoints"
			case h.GetName() == gate:
				what += ": this node cannot hold the VIP"
				fix = "check the API server there (talosctl -n <node> containers -k; its logs); meanwhile the VIP stays on healthy nodes"
			}

			out = append(out, finding{sevWarning, "health", what, fix})
		}
	}

	return out
}

const ipvsModulesFix = "load ip_vs and ip_vs_mh with Talos (the agent cannot load modules): KernelModuleConfig documents on Talos 1.14+ " +
	"(extension/examples/enterprise/kernel-modules-v1.14.yaml), machine.kernel.modules on 1.13 (extension/examples/enterprise/controlplane.yaml)"

func checkIPVS(nodes []*nodeReport) []finding {
	var (
		out        []finding
		programmed int
	)

	for _, n := range nodes {
		for _, s := range n.ipvs {
			svc := net.JoinHostPort(s.GetAddress(), fmt.Sprint(s.GetPort()))

			switch s.GetState() {
			case "programmed":
				programmed++
			case "ipvs-missing":
				out = append(out, finding{sevProblem, "ipvs", fmt.Sprintf("%s should balance %s with IPVS, but ip_vs is not loaded", n.label(), svc), ipvsModulesFix})
			default:
				out = append(out, finding{sevProblem, "ipvs", fmt.Sprintf("%s: IPVS service %s is %s: %s", n.label(), svc, s.GetState(), s.GetReason()),
					"the reason names the module or setting to add; lbctl get ipvs -n <node>"})
			}
		}
	}

	if programmed > 0 && len(out) == 0 {
		out = append(out, finding{sevOK, "ipvs", fmt.Sprintf("%d IPVS services programmed", programmed), ""})
	}

	return out
}

var portInUse = regexp.MustCompile(`:(\d+): bind: address already in use`)

// portFix names who usually holds a port an agent listener wants.
func portFix(port string) string {
	switch port {
	case "7445":
		return "KubePrism listens on 127.0.0.1:7445: give the proxy another port (7446), or turn KubePrism off first (machine.features.kubePrism.enabled: false)"
	case "179":
		return "Talos 1.14's own BGP (BGPInstanceConfig) or another speaker owns :179: leave bgp.listenPort unset, the agent dials the routers itself"
	default:
		return "another program holds the port: free it, or move this listener in the agent config"
	}
}

// checkListeners finds agent listeners that lost their port, and other
// errors of proxies and BGP sessions.
func checkListeners(nodes []*nodeReport) []finding {
	var out []finding

	report := func(n *nodeReport, what, err string, sev severity, otherwise string) {
		if m := portInUse.FindStringSubmatch(err); m != nil {
			out = append(out, finding{sevProblem, "ports", fmt.Sprintf("%s: %s cannot listen: %s", n.label(), what, err), portFix(m[1])})

			return
		}

		out = append(out, finding{sev, "listeners", fmt.Sprintf("%s: %s: %s", n.label(), what, err), otherwise})
	}

	for _, n := range nodes {
		for _, p := range n.proxies {
			if p.GetState() == "failed" {
				report(n, "proxy "+p.GetName(), p.GetLastError(), sevProblem, "lbctl get proxies -n <node> -o yaml")
			}
		}

		if l := n.leadership; l != nil && portInUse.MatchString(l.GetLastError()) {
			report(n, "election", l.GetLastError(), sevProblem, "")
		}

		for _, p := range n.bgpPeers {
			if strings.EqualFold(p.GetState(), "established") {
				continue
			}

			err := p.GetLastError()
			if err == "" {
				err = "session " + p.GetState()
			}

			report(n, "BGP peer "+p.GetName()+" ("+p.GetAddress()+")", err, sevWarning,
				"the router must list this node's address and ASN as a neighbour (and the MD5 password, if any); lbctl get peers -n <node>")
		}
	}

	return out
}

// checkProxies: a proxy with no healthy upstream refuses every client, so
// kubelet and friends on that node lose the API.
func checkProxies(nodes []*nodeReport) []finding {
	var out []finding

	for _, n := range nodes {
		for _, p := range n.proxies {
			if p.GetState() == "no-healthy-upstream" {
				out = append(out, finding{sevProblem, "proxy", fmt.Sprintf("%s: proxy %s has no healthy upstream of %d: it refuses every client", n.label(), p.GetName(), p.GetUpstreams()),
					"lbctl get upstreams -n <node> shows each one's last error; an https check needs the cluster CA in caFile, or kind: tcp"})
			}
		}
	}

	return out
}

// checkNodeSets reads the controller's last push, as the agents hold it: a
// node set no node is in means Service IPs nobody announces. The usual cause
// is Talos's exclude label on every node that could.
func checkNodeSets(nodes []*nodeReport) []finding {
	var latest *nodeReport

	for _, n := range nodes {
		if n.push.GetGeneration() > 0 && (latest == nil || n.push.GetGeneration() > latest.push.GetGeneration()) {
			latest = n
		}
	}

	if latest == nil {
		return []finding{{sevNotChecked, "kubernetes", "nodes kept out by " + desired.ExcludeLabel, "no lb-controller push has reached an agent yet"}}
	}

	var out []finding

	for _, set := range latest.nodeSets {
		if len(set.GetNodes()) > 0 {
			continue
		}

		reasons := slices.Collect(maps.Values(set.GetExcluded()))
		if r := set.GetDefaultReason(); r != "" {
			reasons = append(reasons, r)
		}

		slices.Sort(reasons)
		reasons = slices.Compact(reasons)

		if len(reasons) == 1 && reasons[0] == desired.ReasonExcluded {
			out = append(out, finding{sevProblem, "kubernetes", fmt.Sprintf("no node may announce the Service IPs of node set %s: every node is %s", set.GetName(), desired.ReasonExcluded),
				"Talos puts the label on control-plane nodes: delete it there (docs/troubleshooting.md), or run lb-controller with --ignore-exclude-label"})

			continue
		}

		out = append(out, finding{sevWarning, "kubernetes", fmt.Sprintf("no node may announce the Service IPs of node set %s: %s", set.GetName(), strings.Join(reasons, "; ")),
			"lbctl --controller get services shows which Services use it"})
	}

	if len(out) == 0 {
		out = append(out, finding{sevOK, "kubernetes", fmt.Sprintf("every pushed node set has a node to announce it (push %d, as %s holds it)", latest.push.GetGeneration(), latest.label()), ""})
	}

	return out
}

func pendingKubernetesChecks() []finding {
	const unseen = "the agents cannot see it; see docs/troubleshooting.md"

	return []finding{
		{sevNotChecked, "kubernetes", "kube-proxy in IPVS mode without strictARP", unseen},
		{sevNotChecked, "kubernetes", "another LoadBalancer controller answering the same Services", unseen},
	}
}

func defaultTalosconfig() string {
	if p := os.Getenv("TALOSCONFIG"); p != "" {
		return p
	}

	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}

	return filepath.Join(home, ".talos", "config")
}

// checkTalosconfig: talosctl must reach nodes directly. Through the VIP it
// loses its way whenever the VIP moves or is down — during an upgrade of the
// very node holding it, for one.
func checkTalosconfig(path string, nodes []*nodeReport) []finding {
	var (
		vips    = map[string]bool{}
		nodeIPs []string // the peers', for the fix
	)

	for _, n := range nodes {
		for _, a := range n.vipConfig.GetAddresses() {
			vips[a] = true
		}

		for _, p := range n.vipConfig.GetPeers() {
			if host, _, err := net.SplitHostPort(p.GetAddress()); err == nil && !slices.Contains(nodeIPs, host) {
				nodeIPs = append(nodeIPs, host)
			}
		}
	}

	if len(vips) == 0 || path == "" {
		return nil
	}

	data, err := os.ReadFile(path)
	if err != nil {
		return []finding{{sevNotChecked, "talosconfig", fmt.Sprintf("%s: %v", path, err), "pass --talosconfig"}}
	}

	var tc struct {
		Context  string `yaml:"context"`
		Contexts map[string]struct {
			Endpoints []string `yaml:"endpoints"`
		} `yaml:"contexts"`
	}

	if err := yaml.Unmarshal(data, &tc); err != nil {
		return []finding{{sevNotChecked, "talosconfig", fmt.Sprintf("%s: %v", path, err), ""}}
	}

	for _, ep := range tc.Contexts[tc.Context].Endpoints {
		host := strings.TrimPrefix(strings.TrimPrefix(ep, "https://"), "http://")
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}

		if vips[strings.Trim(host, "[]")] {
			return []finding{{sevWarning, "talosconfig",
				fmt.Sprintf("talosctl context %q lists the VIP %s among its endpoints", tc.Context, host),
				"talosctl config endpoint " + strings.Join(nodeIPs, " ") + "   (the nodes' own addresses: the VIP follows the API server's health and moves during upgrades)"}}
		}
	}

	return []finding{{sevOK, "talosconfig", fmt.Sprintf("context %q does not use the VIP", tc.Context), ""}}
}
