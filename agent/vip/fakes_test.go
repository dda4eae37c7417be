package vip_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/talos-lb/talos-lb/pkg/netutil"
)

// fakeLinks is an in-memory link table.
type fakeLinks struct {
	mu    sync.Mutex
	links map[string][]netip.Prefix
	// removed records every removal, to prove what was (not) touched.
	removed []netip.Prefix
}

func (f *fakeLinks) Addresses(link string) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	addrs, ok := f.links[link]
	if !ok {
		return nil, fmt.Errorf("%s: %w", link, netutil.ErrNoLink)
	}

	return slices.Clone(addrs), nil
}

func (f *fakeLinks) AddAddress(link string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.links[link] = append(f.links[link], p)

	return nil
}

func (f *fakeLinks) RemoveAddress(link string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.links[link] = slices.DeleteFunc(f.links[link], func(q netip.Prefix) bool { return q == p })
	f.removed = append(f.removed, p)

	return nil
}

func (f *fakeLinks) has(link string, p netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()

	return slices.Contains(f.links[link], p)
}

func (f *fakeLinks) wasRemoved(p netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()

	return slices.Contains(f.removed, p)
}

// noChanges never reports address changes: tests drive reconciles with resources.
type noChanges struct{}

func (noChanges) Addresses() ([]netip.Prefix, error) { return nil, nil }

func (noChanges) Watch(ctx context.Context, _ chan<- struct{}) error {
	<-ctx.Done()

	return nil
}

type countingAnnouncer struct {
	mu    sync.Mutex
	count map[netip.Addr]int
}

func (c *countingAnnouncer) Announce(_ string, ip netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	c.count[ip]++

	return nil
}

func (c *countingAnnouncer) sent(ip netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.count[ip]
}
