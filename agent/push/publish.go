package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// PasswordDir is the directory under the state directory holding one file
// per pushed BGP peer with a password, named after the peer.
const PasswordDir = "bgp-passwords"

// published is what this handler put into the state, so an apply writes only
// what changed and removes only what it made. It is updated resource by
// resource, so a failed apply leaves it telling the truth.
type published struct {
	serviceIPs map[string]*resourcepb.ServiceIPSpec
	nodeSets   map[string]*resourcepb.NodeSet
	bgpRules   map[string]*resourcepb.BgpAdvertisementRule
	peers      map[string]*resourcepb.PushedBgpPeer
	nodes      map[string]*resourcepb.NodeAddress
	endpoints  []string
	// passwords written, by peer; nil until the directory was first cleaned.
	passwords map[string]string
}

func newPublished() published {
	return published{
		serviceIPs: map[string]*resourcepb.ServiceIPSpec{},
		nodeSets:   map[string]*resourcepb.NodeSet{},
		bgpRules:   map[string]*resourcepb.BgpAdvertisementRule{},
		peers:      map[string]*resourcepb.PushedBgpPeer{},
		nodes:      map[string]*resourcepb.NodeAddress{},
	}
}

// apply publishes a valid state and makes it the running one.
func (h *Handler) apply(ctx context.Context, s *resourcepb.NodeDesiredState, appliedAt time.Time) error {
	st := h.opts.State

	if err := syncByID(ctx, st, h.pub.serviceIPs, s.GetServiceIps(), (*resourcepb.ServiceIPSpec).GetAddress, resources.NewServiceIP,
		func(r *resources.ServiceIP, v *resourcepb.ServiceIPSpec) { r.TypedSpec().Value = v }); err != nil {
		return fmt.Errorf("service IPs: %w", err)
	}

	if err := syncByID(ctx, st, h.pub.nodeSets, withOwnReason(s, h.opts.NodeName), (*resourcepb.NodeSet).GetName, resources.NewNodeSet,
		func(r *resources.NodeSet, v *resourcepb.NodeSet) { r.TypedSpec().Value = v }); err != nil {
		return fmt.Errorf("node sets: %w", err)
	}

	if err := syncByID(ctx, st, h.pub.bgpRules, s.GetBgpAdvertisements(), (*resourcepb.BgpAdvertisementRule).GetName, resources.NewBGPAdvertisementRule,
		func(r *resources.BGPAdvertisementRule, v *resourcepb.BgpAdvertisementRule) { r.TypedSpec().Value = v }); err != nil {
		return fmt.Errorf("BGP advertisement rules: %w", err)
	}

	if err := syncByID(ctx, st, h.pub.nodes, joinableNodes(s.GetNodes()), (*resourcepb.NodeAddress).GetName, resources.NewPushedNode,
		func(r *resources.PushedNode, v *resourcepb.NodeAddress) { r.TypedSpec().Value = v }); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}

	if err := h.applyPeers(ctx, s.GetBgpPeers()); err != nil {
		return err
	}

	if err := h.applyEndpoints(ctx, s.GetApiEndpoints()); err != nil {
		return err
	}

	h.running = s
	h.generation.Set(float64(s.GetGeneration()))

	return h.writeStatus(ctx, func(p *resourcepb.PushStatusSpec) {
		p.AppliedAt = timestamppb.New(appliedAt)
		p.RejectedGeneration = 0
		p.LastError = ""
	})
}

// joinableNodes is the pushed node list without the entries gossip could not
// use (no name, an address that is not an IP), each name once (the first
// wins). The node list only helps agents find each other, so a bad entry is
// dropped rather than failing the whole push.
func joinableNodes(nodes []*resourcepb.NodeAddress) []*resourcepb.NodeAddress {
	out := make([]*resourcepb.NodeAddress, 0, len(nodes))
	seen := make(map[string]bool, len(nodes))

	for _, n := range nodes {
		if n.GetName() == "" || seen[n.GetName()] {
			continue
		}

		if ip, err := netip.ParseAddr(n.GetAddress()); err != nil || ip.Zone() != "" {
			continue
		}

		seen[n.GetName()] = true

		out = append(out, n)
	}

	return out
}

// applyPeers publishes the peers without their passwords: those go to
// private files that the resources name.
func (h *Handler) applyPeers(ctx context.Context, peers []*resourcepb.PushedBgpPeer) error {
	st := h.opts.State
	dir := filepath.Join(h.opts.StateDir, PasswordDir)
	want := make(map[string]bool, len(peers))

	for _, p := range peers {
		name := p.GetPeer().GetName()
		want[name] = true

		spec := proto.CloneOf(p)
		spec.Password = ""
		spec.Peer.PasswordFile = ""

		if pw := p.GetPassword(); pw != "" {
			path := filepath.Join(dir, name)

			if old, ok := h.pub.passwords[name]; !ok || old != pw {
				if err := writeSecret(path, []byte(pw)); err != nil {
					return fmt.Errorf("BGP peer %s: writing its password: %w", name, err)
				}

				if h.pub.passwords != nil {
					h.pub.passwords[name] = pw
				}
			}

			spec.Peer.PasswordFile = path
		}

		if old, ok := h.pub.peers[name]; ok && proto.Equal(old, spec) {
			continue
		}

		if err := safe.StateModify(ctx, st, resources.NewPushedBGPPeer(name), func(r *resources.PushedBGPPeer) error {
			r.TypedSpec().Value = spec

			return nil
		}); err != nil {
			return fmt.Errorf("publishing BGP peer %s: %w", name, err)
		}

		h.pub.peers[name] = spec
	}

	for name := range h.pub.peers {
		if want[name] {
			continue
		}

		if err := destroy(ctx, st, resources.NewPushedBGPPeer(name).Metadata()); err != nil {
			return fmt.Errorf("removing BGP peer %s: %w", name, err)
		}

		delete(h.pub.peers, name)
	}

	return h.removeStalePasswords(dir, peers)
}

// removeStalePasswords deletes the password files of peers no longer pushed
// or pushed without a password; the first time, also those an earlier run left.
func (h *Handler) removeStalePasswords(dir string, peers []*resourcepb.PushedBgpPeer) error {
	keep := make(map[string]string, len(peers))

	for _, p := range peers {
		if pw := p.GetPassword(); pw != "" {
			keep[p.GetPeer().GetName()] = pw
		}
	}

	var stale []string

	if h.pub.passwords == nil {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("listing BGP password files: %w", err)
		}

		for _, e := range entries {
			stale = append(stale, e.Name())
		}
	} else {
		for name := range h.pub.passwords {
			stale = append(stale, name)
		}
	}

	for _, name := range stale {
		if _, ok := keep[name]; ok {
			continue
		}

		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing BGP password file: %w", err)
		}
	}

	h.pub.passwords = keep

	return nil
}

func (h *Handler) applyEndpoints(ctx context.Context, endpoints []string) error {
	if h.pub.endpoints != nil && slices.Equal(h.pub.endpoints, endpoints) {
		return nil
	}

	st := h.opts.State

	if len(endpoints) == 0 {
		if err := destroy(ctx, st, resources.NewAPIEndpoints().Metadata()); err != nil {
			return fmt.Errorf("removing API endpoints: %w", err)
		}

		h.pub.endpoints = []string{}

		return nil
	}

	if err := safe.StateModify(ctx, st, resources.NewAPIEndpoints(), func(r *resources.APIEndpoints) error {
		r.TypedSpec().Value.Endpoints = endpoints

		return nil
	}); err != nil {
		return fmt.Errorf("publishing API endpoints: %w", err)
	}

	h.pub.endpoints = endpoints

	return nil
}

// writeStatus publishes PushStatus from the running state, then lets edit
// set what the caller knows (applied time, rejection).
func (h *Handler) writeStatus(ctx context.Context, edit func(*resourcepb.PushStatusSpec)) error {
	s := h.running

	if err := safe.StateModify(ctx, h.opts.State, resources.NewPushStatus(), func(r *resources.PushStatus) error {
		p := r.TypedSpec().Value
		p.Generation = s.GetGeneration()
		p.Controller = s.GetController()
		p.ServiceIps = uint32(len(s.GetServiceIps()))     //nolint:gosec // a count of pushed entries
		p.BgpPeers = uint32(len(s.GetBgpPeers()))         //nolint:gosec // a count of pushed entries
		p.ApiEndpoints = uint32(len(s.GetApiEndpoints())) //nolint:gosec // a count of pushed entries
		edit(p)

		return nil
	}); err != nil {
		return fmt.Errorf("publishing push status: %w", err)
	}

	return nil
}

func destroy(ctx context.Context, st state.State, md resource.Pointer) error {
	if err := st.Destroy(ctx, md); err != nil && !state.IsNotFoundError(err) {
		return err
	}

	return nil
}

// writeSecret writes a file readable by its owner only, atomically, and
// leaves it alone when it already holds data.
func writeSecret(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}

	return writeAtomic(path, data, true)
}

// writeAtomic leaves either the old or the new content at path, never half
// of it; with sync, the new content is on disk before it replaces the old.
func writeAtomic(path string, data []byte, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}

	tmp := f.Name()

	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}

	if closeErr := f.Close(); err == nil {
		err = closeErr
	}

	if err == nil {
		err = os.Rename(tmp, path)
	}

	if err != nil {
		return errors.Join(err, os.Remove(tmp))
	}

	return nil
}

// syncByID publishes one resource per item, keyed by id: unchanged items are
// skipped and resources of items no longer pushed are removed. have tracks
// what is published and is updated item by item, so a failed sync leaves it
// true.
func syncByID[S proto.Message, R resource.Resource](
	ctx context.Context, st state.State, have map[string]S, items []S,
	id func(S) string, newResource func(string) R, set func(R, S),
) error {
	want := make(map[string]bool, len(items))

	for _, item := range items {
		key := id(item)
		want[key] = true

		if old, ok := have[key]; ok && proto.Equal(old, item) {
			continue
		}

		if err := safe.StateModify(ctx, st, newResource(key), func(r R) error {
			set(r, item)

			return nil
		}); err != nil {
			return fmt.Errorf("publishing %s: %w", key, err)
		}

		have[key] = item
	}

	for key := range have {
		if want[key] {
			continue
		}

		if err := destroy(ctx, st, newResource(key).Metadata()); err != nil {
			return fmt.Errorf("removing %s: %w", key, err)
		}

		delete(have, key)
	}

	return nil
}

// withOwnReason returns the pushed node sets with this node's node-wide
// reason (ineligible) written into each set it is not in, so readers of a
// NodeSet need look nowhere else to say why this node does not announce.
// Sets are copied only when they change: the pushed ones stay as received.
func withOwnReason(s *resourcepb.NodeDesiredState, self string) []*resourcepb.NodeSet {
	var reason string

	for _, r := range s.GetIneligible() {
		if r.GetNode() == self {
			reason = r.GetReason()
		}
	}

	if reason == "" {
		return s.GetNodeSets()
	}

	out := make([]*resourcepb.NodeSet, len(s.GetNodeSets()))

	for i, set := range s.GetNodeSets() {
		out[i] = set

		if slices.Contains(set.GetNodes(), self) || set.GetExcluded()[self] != "" {
			continue
		}

		cp := proto.CloneOf(set)
		if cp.Excluded == nil {
			cp.Excluded = map[string]string{}
		}

		cp.Excluded[self] = reason
		out[i] = cp
	}

	return out
}
