package node_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/talos-lb/talos-lb/agent/node"
	"github.com/talos-lb/talos-lb/pkg/ctest"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

type fakeAddresses struct {
	mu      sync.Mutex
	addrs   []netip.Prefix
	changed chan<- struct{}
	ready   chan struct{}
}

func (f *fakeAddresses) Addresses() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	return f.addrs, nil
}

func (f *fakeAddresses) Watch(ctx context.Context, changed chan<- struct{}) error {
	f.mu.Lock()
	f.changed = changed
	f.mu.Unlock()
	close(f.ready)

	select { // subscribed: as the kernel's source does
	case changed <- struct{}{}:
	default:
	}
	<-ctx.Done()

	return nil
}

func (f *fakeAddresses) set(addrs ...string) {
	<-f.ready
	f.mu.Lock()
	defer f.mu.Unlock()

	f.addrs = nil
	for _, a := range addrs {
		f.addrs = append(f.addrs, netip.MustParsePrefix(a))
	}

	f.changed <- struct{}{}
}

func TestNodeStatusFollowsConfigAndAddresses(t *testing.T) {
	addrs := &fakeAddresses{addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24")}, ready: make(chan struct{})}
	started := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	h := ctest.New(t, &node.StatusController{Addresses: addrs, Version: "v1.2.3", StartedAt: started})

	cfg := resources.NewAgentConfig()
	cfg.TypedSpec().Value.NodeName = "cp-1"
	cfg.TypedSpec().Value.Role = "controlplane"
	h.Create(cfg)

	status := resources.NewConfigStatus()
	status.TypedSpec().Value.Generation = 3
	h.Create(status)

	ctest.AssertResource(h, "cp-1", func(r *resources.NodeStatus, a *assert.Assertions) {
		s := r.TypedSpec().Value
		a.Equal("controlplane", s.GetRole())
		a.Equal("v1.2.3", s.GetVersion())
		a.Equal(uint64(3), s.GetConfigGeneration())
		a.Equal([]string{"10.0.0.2/24"}, s.GetAddresses())
		a.True(s.GetStartedAt().AsTime().Equal(started))
	})

	addrs.set("10.0.0.2/24", "fd00::2/64")

	ctest.AssertResource(h, "cp-1", func(r *resources.NodeStatus, a *assert.Assertions) {
		a.Equal([]string{"10.0.0.2/24", "fd00::2/64"}, r.TypedSpec().Value.GetAddresses())
	})
}
