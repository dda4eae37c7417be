package push

import (
	"fmt"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// A NodeDesiredState has a small per-node part (generation, node, controller,
// BGP peers) and a large part that is the same for every node (service IPs,
// API endpoints, node sets, advertisement rules, node addresses, ineligible
// nodes: see
// api/resource/v1alpha1).
// The controller builds the shared part once and hands every node the same
// slices; the pusher recognises them by identity, compares and encodes them
// once per change instead of once per node, and sends the bytes as they are.

// sharedKey identifies the shared slices of a state by their backing arrays.
// It is only looked up among parts the pusher still holds, whose arrays are
// therefore alive and unchanged (Set takes ownership of the states).
type sharedKey struct {
	serviceIPs  **resourcepb.ServiceIPSpec
	nServiceIPs int
	endpoints   *string
	nEndpoints  int
	nodeSets    **resourcepb.NodeSet
	nNodeSets   int
	advs        **resourcepb.BgpAdvertisementRule
	nAdvs       int
	nodes       **resourcepb.NodeAddress
	nNodes      int
	ineligible  **resourcepb.NodeReason
	nIneligible int
}

func keyOf(s *resourcepb.NodeDesiredState) sharedKey {
	return sharedKey{
		serviceIPs: unsafe.SliceData(s.GetServiceIps()), nServiceIPs: len(s.GetServiceIps()),
		endpoints: unsafe.SliceData(s.GetApiEndpoints()), nEndpoints: len(s.GetApiEndpoints()),
		nodeSets: unsafe.SliceData(s.GetNodeSets()), nNodeSets: len(s.GetNodeSets()),
		advs: unsafe.SliceData(s.GetBgpAdvertisements()), nAdvs: len(s.GetBgpAdvertisements()),
		nodes: unsafe.SliceData(s.GetNodes()), nNodes: len(s.GetNodes()),
		ineligible: unsafe.SliceData(s.GetIneligible()), nIneligible: len(s.GetIneligible()),
	}
}

// sharedPart is the shared part of one or more nodes' states, encoded at most once.
type sharedPart struct {
	msg *resourcepb.NodeDesiredState // only the shared fields

	once    sync.Once
	encoded []byte
	err     error
}

func newSharedPart(s *resourcepb.NodeDesiredState) *sharedPart {
	return &sharedPart{msg: &resourcepb.NodeDesiredState{
		ServiceIps:        s.GetServiceIps(),
		ApiEndpoints:      s.GetApiEndpoints(),
		NodeSets:          s.GetNodeSets(),
		BgpAdvertisements: s.GetBgpAdvertisements(),
		Nodes:             s.GetNodes(),
		Ineligible:        s.GetIneligible(),
	}}
}

func (p *sharedPart) bytes() ([]byte, error) {
	p.once.Do(func() {
		p.encoded, p.err = proto.Marshal(p.msg)
	})

	return p.encoded, p.err
}

// stamp is the state to push: the caller's shared and per-node parts (shared,
// not copied) with the pusher's generation, node and controller.
func stamp(s *resourcepb.NodeDesiredState, node string, gen uint64, controller string) *resourcepb.NodeDesiredState {
	return &resourcepb.NodeDesiredState{
		Generation:        gen,
		Node:              node,
		Controller:        controller,
		ServiceIps:        s.GetServiceIps(),
		BgpPeers:          s.GetBgpPeers(),
		ApiEndpoints:      s.GetApiEndpoints(),
		NodeSets:          s.GetNodeSets(),
		BgpAdvertisements: s.GetBgpAdvertisements(),
		Nodes:             s.GetNodes(),
		Ineligible:        s.GetIneligible(),
	}
}

// perNodeEqual compares what stamp takes from the per-node part.
func perNodeEqual(a, b *resourcepb.NodeDesiredState) bool {
	if a.GetNode() != b.GetNode() || a.GetController() != b.GetController() {
		return false
	}

	pa, pb := a.GetBgpPeers(), b.GetBgpPeers()
	if len(pa) != len(pb) {
		return false
	}

	if unsafe.SliceData(pa) == unsafe.SliceData(pb) {
		return true
	}

	for i := range pa {
		if !proto.Equal(pa[i], pb[i]) {
			return false
		}
	}

	return true
}

// encodeRequest returns the wire form of PushRequest{state: s} as pieces to
// send one after the other: the header and per-node fields, then the shared
// bytes. Fields of one message encoded apart and concatenated decode as the
// whole message (protobuf merges them), so the agent sees an ordinary request.
func encodeRequest(s *resourcepb.NodeDesiredState, shared *sharedPart) ([][]byte, error) {
	common, err := shared.bytes()
	if err != nil {
		return nil, fmt.Errorf("encoding the shared state: %w", err)
	}

	own, err := proto.Marshal(&resourcepb.NodeDesiredState{
		Generation: s.GetGeneration(),
		Node:       s.GetNode(),
		Controller: s.GetController(),
		BgpPeers:   s.GetBgpPeers(),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the state of %s: %w", s.GetNode(), err)
	}

	head := make([]byte, 0, 16+len(own))
	head = protowire.AppendTag(head, stateField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(own)+len(common)))
	head = append(head, own...)

	return [][]byte{head, common}, nil
}

// stateField is PushRequest.state's field number.
var stateField = protowire.Number((&agentpb.PushRequest{}).ProtoReflect().Descriptor().Fields().ByName("state").Number())
