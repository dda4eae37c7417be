package speaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
)

// Which peers a path goes to (Path.Peers) is enforced by export policy.
//
// GoBGP gives per-neighbor policies to route-server clients only, and a
// route-server client is sent paths unchanged (no AS prepended, no next hop
// set): not what a node announcing to its routers wants. So the filter sits
// in the global export policy, which GoBGP evaluates per destination peer:
// every running peer has a policy of one statement, "to this neighbor, reject
// the prefixes in its deny set". A deny set holds the prefixes of paths that
// name peers but not this one. Paths carry nothing on the wire for it.
//
// A deny set is changed in place (GoBGP's policy keeps a pointer to the set):
// prefixes are added before paths change, so a new path never reaches a peer
// it is not meant for, and removed after. GoBGP does not re-evaluate what it
// already sent when a set changes, so a peer whose set changed for a prefix
// it may already have (or now may have) gets a soft reset out: GoBGP then
// withdraws what the policy now rejects and sends what it now accepts.

// Names of the GoBGP policy objects of one peer.
func neighborSetName(a netip.Addr) string { return "talos-lb-peer-" + a.String() }
func denySetName(a netip.Addr) string     { return "talos-lb-deny-" + a.String() }
func exportPolicyName(a netip.Addr) string {
	return "talos-lb-export-" + a.String()
}

// denySets computes every wanted peer's deny set: the prefixes of its family
// whose path names peers, but not this one.
func denySets(peers []Peer, paths []Path) map[netip.Addr]map[netip.Prefix]bool {
	out := make(map[netip.Addr]map[netip.Prefix]bool, len(peers))

	for _, p := range peers {
		deny := map[netip.Prefix]bool{}

		for _, path := range paths {
			if len(path.Peers) > 0 && !slices.Contains(path.Peers, p.Name) && path.Prefix.Addr().Is4() == p.Address.Is4() {
				deny[path.Prefix] = true
			}
		}

		out[p.Address] = deny
	}

	return out
}

func apiPrefixes(prefixes []netip.Prefix) []*api.Prefix {
	out := make([]*api.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		bits := uint32(p.Bits()) //nolint:gosec // 0..128
		out = append(out, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: bits, MaskLengthMax: bits})
	}

	return out
}

func denySet(a netip.Addr, prefixes []netip.Prefix) *api.DefinedSet {
	return &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: denySetName(a), Prefixes: apiPrefixes(prefixes)}
}

// addFilter installs a peer's export policy with its deny set, before the peer is added.
func (g *GoBGP) addFilter(ctx context.Context, a netip.Addr, deny map[netip.Prefix]bool) error {
	bits := 32
	if a.Is6() {
		bits = 128
	}

	s := g.server

	if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: neighborSetName(a), List: []string{netip.PrefixFrom(a, bits).String()},
	}, Replace: true}); err != nil {
		return fmt.Errorf("defining its neighbor set: %w", err)
	}

	if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: denySet(a, slices.Collect(maps.Keys(deny))), Replace: true}); err != nil {
		return fmt.Errorf("defining its deny set: %w", err)
	}

	policy := &api.Policy{Name: exportPolicyName(a), Statements: []*api.Statement{{
		Name: exportPolicyName(a) + "-deny",
		Conditions: &api.Conditions{
			NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: neighborSetName(a)},
			PrefixSet:   &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: denySetName(a)},
		},
		Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}}}

	if err := s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy}); err != nil {
		return fmt.Errorf("defining its export policy: %w", err)
	}

	g.filters[a] = maps.Clone(deny)

	if err := g.assignFilters(ctx); err != nil {
		delete(g.filters, a)

		return err
	}

	return nil
}

// removeFilter drops a peer's export policy once the peer is gone.
func (g *GoBGP) removeFilter(ctx context.Context, a netip.Addr) error {
	delete(g.filters, a)

	if err := g.assignFilters(ctx); err != nil {
		return err
	}

	s := g.server

	if err := s.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: exportPolicyName(a)}, All: true}); err != nil {
		return fmt.Errorf("removing the export policy of %s: %w", a, err)
	}

	for _, set := range []*api.DefinedSet{
		{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: neighborSetName(a)},
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: denySetName(a)},
	} {
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set, All: true}); err != nil {
			return fmt.Errorf("removing %s: %w", set.GetName(), err)
		}
	}

	return nil
}

// assignFilters makes the global export policy the list of every peer's policy.
func (g *GoBGP) assignFilters(ctx context.Context) error {
	addrs := slices.SortedFunc(maps.Keys(g.filters), netip.Addr.Compare)
	policies := make([]*api.Policy, 0, len(addrs))

	for _, a := range addrs {
		policies = append(policies, &api.Policy{Name: exportPolicyName(a)})
	}

	if err := g.server.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies:      policies,
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}}); err != nil {
		return fmt.Errorf("setting the export policy: %w", err)
	}

	return nil
}

// tighten adds to a running peer's deny set what it must no longer get. It
// says whether the peer may already have one of those prefixes (then it needs
// a soft reset to have it withdrawn).
func (g *GoBGP) tighten(ctx context.Context, a netip.Addr, want map[netip.Prefix]bool) (reset bool, err error) {
	have := g.filters[a]

	var add []netip.Prefix

	for p := range want {
		if !have[p] {
			add = append(add, p)

			if _, announced := g.paths[p]; announced {
				reset = true
			}
		}
	}

	if len(add) == 0 {
		return false, nil
	}

	if err := g.server.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: denySet(a, add)}); err != nil {
		return false, fmt.Errorf("adding to the deny set of %s: %w", a, err)
	}

	for _, p := range add {
		have[p] = true
	}

	return reset, nil
}

// loosen removes from a running peer's deny set what it may get again. It
// says whether one of those prefixes is announced (then the peer needs a soft
// reset to get it).
func (g *GoBGP) loosen(ctx context.Context, a netip.Addr, want map[netip.Prefix]bool) (reset bool, err error) {
	have := g.filters[a]

	var drop []netip.Prefix

	for p := range have {
		if !want[p] {
			drop = append(drop, p)

			if _, announced := g.paths[p]; announced {
				reset = true
			}
		}
	}

	if len(drop) == 0 {
		return false, nil
	}

	if err := g.server.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: denySet(a, drop)}); err != nil {
		return false, fmt.Errorf("removing from the deny set of %s: %w", a, err)
	}

	for _, p := range drop {
		delete(have, p)
	}

	return reset, nil
}

// softResetOut makes GoBGP send a peer its routes again through the export
// policy: it withdraws what the policy now rejects, announces what it now accepts.
func (g *GoBGP) softResetOut(ctx context.Context, a netip.Addr) error {
	if err := g.server.ResetPeer(ctx, &api.ResetPeerRequest{
		Address: a.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT,
	}); err != nil {
		return fmt.Errorf("re-sending routes to %s after a peer filter change: %w", a, err)
	}

	return nil
}
