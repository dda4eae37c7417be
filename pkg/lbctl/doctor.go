package lbctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/client"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

func newDoctorCmd(g *globals) *cobra.Command {
	var talosconfig string

	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check agents for the traps users hit, each finding with its fix",
		Long: `Ask every selected agent (--nodes, default: the context's endpoints; list
them all) what it runs and sees, and check, across nodes:

  - every agent answers, and runs the config it was given;
  - the control-plane nodes share one VIP section, the election has one
    leader all agree on, and each VIP has the holders its mode wants;
  - health checks gating the VIP pass;
  - ip_vs is loaded where IPVS balancing is programmed;
  - no listener (local proxy, BGP, election) lost its port to another
    program (KubePrism on 7445, Talos's BGP on 179);
  - the talosconfig does not send talosctl through the VIP.

The Kubernetes-side traps (the exclude-from-external-load-balancers label,
strict ARP, another LoadBalancer controller) need the controller and are
not checked yet. Exits non-zero when a problem is found.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			agents, err := g.agents()
			if err != nil {
				return err
			}
			defer closeAll(agents)

			nodes := make([]*nodeReport, 0, len(agents))
			for _, a := range agents {
				nodes = append(nodes, collect(cmd.Context(), a))
			}

			findings := diagnose(nodes)
			findings = append(findings, checkTalosconfig(talosconfig, nodes)...)

			return printFindings(g.out, findings)
		},
	}

	cmd.Flags().StringVar(&talosconfig, "talosconfig", defaultTalosconfig(), "talosctl's config, checked for the VIP among its endpoints; empty: skip")

	return cmd
}

// nodeReport is what one agent told: its resources' specs, read once.
type nodeReport struct {
	endpoint string
	// unreachable is set when the agent could not be asked at all,
	// readErr when some of its resources could not be read.
	unreachable, readErr error
	name, role           string
	config               *resourcepb.ConfigStatusSpec
	vipConfig            *resourcepb.VipConfigSpec
	leadership           *resourcepb.VipLeadershipSpec
	vips                 []*resourcepb.VipStatusSpec
	health               []*resourcepb.EndpointHealthSpec
	ipvs                 []*resourcepb.IPVSStatusSpec
	proxies              []*resourcepb.ProxyStatusSpec
	bgpPeers             []*resourcepb.BgpPeerStatusSpec
	push                 *resourcepb.PushStatusSpec
	nodeSets             []*resourcepb.NodeSet
}

// label names the node as users know it.
func (n *nodeReport) label() string {
	if n.name == "" || n.name == n.endpoint {
		return n.endpoint
	}

	return fmt.Sprintf("%s (%s)", n.name, n.endpoint)
}

func collect(ctx context.Context, a *client.Agent) *nodeReport {
	n := &nodeReport{endpoint: a.Endpoint}

	v, err := a.API.Version(ctx, &agentpb.VersionRequest{})
	if err != nil {
		n.unreachable = explain(a.Endpoint, err)

		return n
	}

	n.name = v.GetNodeName()

	var errs []error

	read := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", what, err))
		}
	}

	statuses, err := specsOf[*resourcepb.NodeStatusSpec](ctx, a.State, resources.AgentNamespace, resources.NodeStatusType)
	read("node status", err)
	n.role = last(statuses).GetRole()

	configs, err := specsOf[*resourcepb.ConfigStatusSpec](ctx, a.State, resources.ConfigNamespace, resources.ConfigStatusType)
	read("config status", err)
	n.config = last(configs)

	vipConfigs, err := specsOf[*resourcepb.VipConfigSpec](ctx, a.State, resources.VIPNamespace, resources.VIPConfigType)
	read("vip config", err)
	n.vipConfig = last(vipConfigs)

	leaderships, err := specsOf[*resourcepb.VipLeadershipSpec](ctx, a.State, resources.VIPNamespace, resources.VIPLeadershipType)
	read("election", err)
	n.leadership = last(leaderships)

	n.vips, err = specsOf[*resourcepb.VipStatusSpec](ctx, a.State, resources.VIPNamespace, resources.VIPStatusType)
	read("vip status", err)
	n.health, err = specsOf[*resourcepb.EndpointHealthSpec](ctx, a.State, resources.AgentNamespace, resources.EndpointHealthType)
	read("health", err)
	n.ipvs, err = specsOf[*resourcepb.IPVSStatusSpec](ctx, a.State, resources.IPVSNamespace, resources.IPVSStatusType)
	read("ipvs status", err)
	n.proxies, err = specsOf[*resourcepb.ProxyStatusSpec](ctx, a.State, resources.AgentNamespace, resources.ProxyStatusType)
	read("proxy status", err)
	n.bgpPeers, err = specsOf[*resourcepb.BgpPeerStatusSpec](ctx, a.State, resources.BGPNamespace, resources.BGPPeerStatusType)
	read("bgp peers", err)

	pushes, err := specsOf[*resourcepb.PushStatusSpec](ctx, a.State, resources.ConfigNamespace, resources.PushStatusType)
	read("push status", err)
	n.push = last(pushes)
	n.nodeSets, err = specsOf[*resourcepb.NodeSet](ctx, a.State, resources.ServiceNamespace, resources.NodeSetType)
	read("node sets", err)

	n.readErr = errors.Join(errs...)

	return n
}

// specsOf lists the resources of one type and returns their specs as S.
func specsOf[S proto.Message](ctx context.Context, st state.State, ns resource.Namespace, typ resource.Type) ([]S, error) {
	list, err := st.List(ctx, resource.NewMetadata(ns, typ, "", resource.VersionUndefined))
	if err != nil {
		return nil, err
	}

	out := make([]S, 0, len(list.Items))

	for _, r := range list.Items {
		pb, ok := r.Spec().(interface{ GetValue() proto.Message })
		if !ok {
			return nil, fmt.Errorf("%s %s: spec is %T, not protobuf", typ, r.Metadata().ID(), r.Spec())
		}

		s, ok := pb.GetValue().(S)
		if !ok {
			return nil, fmt.Errorf("%s %s: spec is %T", typ, r.Metadata().ID(), pb.GetValue())
		}

		out = append(out, s)
	}

	return out, nil
}

// last is the only element of a singleton's list, or nil.
func last[S any](list []S) (s S) {
	if len(list) > 0 {
		s = list[len(list)-1]
	}

	return s
}

// severity orders findings: problems first.
type severity int

const (
	sevProblem severity = iota
	sevWarning
	sevOK
	sevNotChecked
)

func (s severity) String() string {
	return [...]string{"PROBLEM", "warning", "ok", "not checked"}[s]
}

// finding is one result of a check: what was seen and, unless all is well, what to do.
type finding struct {
	sev   severity
	check string
	what  string
	fix   string
}

func printFindings(w io.Writer, findings []finding) error {
	problems := 0

	for _, sev := range []severity{sevProblem, sevWarning, sevOK, sevNotChecked} {
		for _, f := range findings {
			if f.sev != sev {
				continue
			}

			fmt.Fprintf(w, "[%s] %s: %s\n", f.sev, f.check, f.what)

			if f.fix != "" {
				label := "fix:"
				if sev == sevNotChecked {
					label = "why:"
				}

				fmt.Fprintf(w, "    %s %s\n", label, strings.ReplaceAll(f.fix, "\n", "\n         "))
			}

			if sev == sevProblem {
				problems++
			}
		}
	}

	if problems > 0 {
		return fmt.Errorf("%d problem(s) found", problems)
	}

	return nil
}
