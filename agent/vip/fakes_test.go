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
	// watchers hear of every change, as netlink subscribers do.
	watchers []chan<- struct{}
}

// linkChanges is the AddressSource of fakeLinks: like the kernel, it tells
// watchers when an address comes or goes.
type linkChanges struct{ f *fakeLinks }

func (linkChanges) Addresses() ([]netip.Prefix, error) { return nil, nil }

func (c linkChanges) Watch(ctx context.Context, changed chan<- struct{}) error {
	c.f.mu.Lock()
	c.f.watchers = append(c.f.watchers, changed)
	c.f.notify() // subscribed: as the kernel's source does
	c.f.mu.Unlock()

	<-ctx.Done()

	return nil
}

func (f *fakeLinks) notify() {
	for _, w := range f.watchers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
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
	f.notify()

	return nil
}

func (f *fakeLinks) RemoveAddress(link string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.links[link] = slices.DeleteFunc(f.links[link], func(q netip.Prefix) bool { return q == p })
	f.removed = append(f.removed, p)
	f.notify()

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

func (f *fakeLinks) removedList() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()

	return slices.Clone(f.removed)
}
