package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBGPDefaultsAndVIPMode(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(base + `bgp:
  asn: 64513
  peers:
    - {name: tor, address: 10.0.0.1, asn: 64512, bfd: {}}
vip:
  mode: bgp
  addresses: [192.0.2.10]
`))
	require.NoError(t, err)

	p := cfg.BGP.Peers[0]
	assert.Equal(t, 179, p.Port)
	assert.Equal(t, 9*time.Second, p.HoldTime.Duration)
	assert.Equal(t, 3*time.Second, p.Keepalive.Duration)
	assert.Equal(t, &BFD{MinTx: dur(300 * time.Millisecond), MinRx: dur(300 * time.Millisecond), Multiplier: 3}, p.BFD)
	assert.Equal(t, "lo", cfg.VIP.Link, "a BGP VIP is bound to lo: routers, not ARP, bring its traffic")
}

func TestBGPErrors(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(base + `bgp:
  asn: 23456
  routerID: "fd00::1"
  peers:
    - name: tor
      address: 10.0.0.1
      asn: 0
      localAddress: "fd00::2"
      holdTime: 2s
      passwordFile: secret
      multihop: 300
      bfd: {minTx: 1ms, multiplier: 0}
    - {name: tor, address: 10.0.0.1, asn: 64512, keepalive: 5s}
vip:
  mode: ecmp
  addresses: [192.0.2.10]
  link: eth0
`))
	require.Error(t, err)
	assert.Nil(t, cfg)
	assert.Equal(t, []string{
		`line 11: bgp.asn: required: a valid AS number (not 0, 23456, 65535 or 4294967295), got 23456`,
		`line 12: bgp.routerID: must be an IPv4 address, got "fd00::1"`,
		`line 16: bgp.peers[0].asn: required: a valid AS number, got 0`,
		`line 17: bgp.peers[0].localAddress: must be of the same family as address 10.0.0.1, got fd00::2`,
		`line 18: bgp.peers[0].holdTime: must be between 3s and 18h12m15s, got 2s`,
		`line 19: bgp.peers[0].passwordFile: must be an absolute path, got "secret"`,
		`line 20: bgp.peers[0].multihop: must be between 1 and 255, got 300`,
		`line 21: bgp.peers[0].bfd.minTx: must be between 10ms and 10s, got 1ms`,
		`line 21: bgp.peers[0].bfd.multiplier: must be between 1 and 255, got 0`,
		`line 22: bgp.peers[1].keepalive: must be between 1s and a third of holdTime (3s), got 5s`,
		`line 22: bgp.peers[1].name: duplicate of peers[0].name`,
		`line 22: bgp.peers[1].address: duplicate of peers[0].address`,
		`line 24: vip.mode: unknown mode "ecmp" (l2 or bgp)`,
	}, strings.Split(err.Error(), "\n"))
}
