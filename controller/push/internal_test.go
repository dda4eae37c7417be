package push

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

func sampleState() *resourcepb.NodeDesiredState {
	return &resourcepb.NodeDesiredState{
		Node: "node-a",
		ServiceIps: []*resourcepb.ServiceIPSpec{
			{Address: "192.0.2.1", Services: []string{"default/web"}, L2: &resourcepb.L2Announcement{NodeSet: "all"}},
			{Address: "2001:db8::1", Bgp: []*resourcepb.BgpAnnouncement{{Advertisement: "tor", NodeSet: "all"}}},
		},
		BgpPeers:          []*resourcepb.PushedBgpPeer{{Peer: &resourcepb.BgpPeerSpec{Name: "tor-1", Address: "192.0.2.254", Asn: 65001}, Password: "x"}},
		ApiEndpoints:      []string{"192.0.2.10:6443"},
		NodeSets:          []*resourcepb.NodeSet{{Name: "all", Nodes: []string{"node-a"}, Excluded: map[string]string{"node-b": "not ready", "node-c": "no local endpoints"}}},
		BgpAdvertisements: []*resourcepb.BgpAdvertisementRule{{Name: "tor", Communities: []string{"65000:1"}}},
		Nodes:             []*resourcepb.NodeAddress{{Name: "node-a", Address: "192.0.2.20"}},
		Ineligible:        []*resourcepb.NodeReason{{Node: "node-b", Reason: "node not ready"}},
	}
}

// Every field of NodeDesiredState must be carried by stamp and belong to
// exactly one of the per-node and the shared encodings, or a field added to
// the protocol would silently not be pushed.
func TestStampAndEncodingCarryEveryField(t *testing.T) {
	perNode := map[protoreflect.Name]bool{"generation": true, "node": true, "controller": true, "bgp_peers": true}
	shared := newSharedPart(sampleState()).msg.ProtoReflect()
	fields := (&resourcepb.NodeDesiredState{}).ProtoReflect().Descriptor().Fields()

	s := sampleState()
	stamped := stamp(s, "node-a", 42, "controller-0").ProtoReflect()

	for i := range fields.Len() {
		f := fields.Get(i)

		require.True(t, stamped.Has(f), "stamp drops %s", f.Name())
		require.NotEqual(t, perNode[f.Name()], shared.Has(f), "%s must be in exactly one of the per-node and shared parts", f.Name())
	}
}

func TestEncodedRequestDecodesAsTheState(t *testing.T) {
	s := stamp(sampleState(), "node-a", 42, "controller-0")
	part := newSharedPart(s)

	pieces, err := encodeRequest(s, part)
	require.NoError(t, err)
	require.Len(t, pieces, 2)

	var got agentpb.PushRequest
	require.NoError(t, proto.Unmarshal(bytes.Join(pieces, nil), &got))
	require.True(t, proto.Equal(&agentpb.PushRequest{State: s}, &got), "got %v", &got)

	// The shared bytes are encoded once and reused for another node.
	other := stamp(sampleState(), "node-b", 43, "controller-0")
	other.ServiceIps, other.NodeSets = s.ServiceIps, s.NodeSets

	again, err := encodeRequest(other, part)
	require.NoError(t, err)
	require.Same(t, &pieces[1][0], &again[1][0])
}

func TestRetryDelayGrowsWithJitterUpToTheMaximum(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second

	for failures, want := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		5: 1600 * time.Millisecond, 6: 2 * time.Second, 60: 2 * time.Second, 1000: 2 * time.Second,
	} {
		for range 100 {
			d := retryDelay(failures, lo, hi)
			require.GreaterOrEqual(t, d, want/2, "failures %d", failures)
			require.LessOrEqual(t, d, want, "failures %d", failures)
		}
	}

	for range 100 {
		d := jitter(30 * time.Second)
		require.GreaterOrEqual(t, d, 27*time.Second)
		require.LessOrEqual(t, d, 33*time.Second)
	}
}

func TestQueueLanes(t *testing.T) {
	q := newQueue(1)

	q.add("dead-1", laneRetry)
	q.add("dead-2", laneRetry)
	q.add("live", laneFresh)
	q.add("live", laneFresh) // once only

	name, l, ok := q.get()
	require.True(t, ok)
	require.Equal(t, "live", name, "fresh work first")
	require.Equal(t, laneFresh, l)

	name, l, _ = q.get()
	require.Equal(t, "dead-1", name)
	require.Equal(t, laneRetry, l)

	// One retry at a time: dead-2 waits while dead-1 is in work, fresh work does not.
	q.add("live", laneFresh) // still in work: comes back when done
	q.done("live", laneFresh)

	name, _, _ = q.get()
	require.Equal(t, "live", name)

	got := make(chan string)

	go func() {
		name, _, _ := q.get()
		got <- name
	}()

	select {
	case name := <-got:
		t.Fatalf("%s handed out while the retry lane is full", name)
	case <-time.After(50 * time.Millisecond):
	}

	q.done("dead-1", laneRetry)
	require.Equal(t, "dead-2", <-got)

	// A retry promoted to fresh is handed out once, as fresh.
	q.add("x", laneRetry)
	q.add("x", laneFresh)

	name, l, _ = q.get()
	require.Equal(t, "x", name)
	require.Equal(t, laneFresh, l)

	q.forget("y")
	q.close()

	_, _, ok = q.get()
	require.False(t, ok)
}
