package rank_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/talos-lb/talos-lb/pkg/rank"
)

func TestOwnerIsFirstLiveInOrder(t *testing.T) {
	nodes := []string{"a", "b", "c", "d", "e"}

	for i := range 50 {
		ip := fmt.Sprintf("192.0.2.%d", i)
		order := rank.Order(ip, nodes)
		require.ElementsMatch(t, nodes, order)

		all := func(string) bool { return true }
		owner, ok := rank.Owner(ip, nodes, all)
		require.True(t, ok)
		require.Equal(t, order[0], owner)

		notFirst := func(n string) bool { return n != order[0] }
		owner, ok = rank.Owner(ip, nodes, notFirst)
		require.True(t, ok)
		require.Equal(t, order[1], owner, "the next in rank takes over")
	}

	_, ok := rank.Owner("192.0.2.1", nodes, func(string) bool { return false })
	require.False(t, ok)
}

func TestOrderIndependentOfInputOrder(t *testing.T) {
	require.Equal(t, rank.Order("2001:db8::1", []string{"x", "y", "z"}), rank.Order("2001:db8::1", []string{"z", "x", "y"}))
}

func TestSpreadsOwners(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	count := map[string]int{}

	for i := range 4000 {
		o, _ := rank.Owner(fmt.Sprintf("10.0.%d.%d", i/256, i%256), nodes, func(string) bool { return true })
		count[o]++
	}

	for _, n := range nodes {
		require.InDelta(t, 1000, count[n], 150, "node %s owns %d of 4000", n, count[n])
	}
}

// Removing a node moves only the IPs it owned.
func TestRemovalMovesOnlyItsIPs(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	without := []string{"n1", "n2", "n4"}

	for i := range 1000 {
		ip := fmt.Sprintf("10.1.%d.%d", i/256, i%256)
		before := rank.Order(ip, nodes)[0]
		after := rank.Order(ip, without)[0]

		if before != "n3" {
			require.Equal(t, before, after, ip)
		}
	}
}

func TestTopIsThePrefixOfOrder(t *testing.T) {
	nodes := make([]string, 50)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%02d", i)
	}

	for i := range 100 {
		ip := fmt.Sprintf("198.51.100.%d", i)
		order := rank.Order(ip, nodes)

		for _, k := range []int{1, 3, 8, 50, 60} {
			require.Equal(t, order[:min(k, len(order))], rank.Top(ip, nodes, k), "%s k=%d", ip, k)
		}
	}

	require.Empty(t, rank.Top("198.51.100.1", nil, 3))
}

func BenchmarkTop3Of1000(b *testing.B) {
	nodes := make([]string, 1000)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%04d", i)
	}

	for b.Loop() {
		rank.Top("198.51.100.7", nodes, 3)
	}
}
