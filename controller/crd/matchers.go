package crd

import "slices"

// These hand the compiled node selectors to the desired-state computation,
// which asks per node and per rule rather than per node for everything.

// L2AdvertisementNodes returns whether a node with the given labels may
// announce under a, one of c's L2Advertisements.
func (c *Config) L2AdvertisementNodes(a *L2Advertisement) func(map[string]string) bool {
	return c.l2Nodes[slices.Index(c.L2Advertisements, a)].nodeMatch
}

// BGPAdvertisementNodes returns whether a node with the given labels
// announces under a, one of c's BGPAdvertisements.
func (c *Config) BGPAdvertisementNodes(a *BGPAdvertisement) func(map[string]string) bool {
	return c.bgpNodes[slices.Index(c.BGPAdvertisements, a)].nodeMatch
}

// PeerNodes returns whether a node with the given labels peers with p, one of c's Peers.
func (c *Config) PeerNodes(p *BGPPeer) func(map[string]string) bool {
	return c.peerNodes[slices.Index(c.Peers, p)].nodeMatch
}
