package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMembersAbsentMeansNoGossip(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(base))
	require.NoError(t, err)
	assert.Nil(t, cfg.Members)

	// A bare "members:" is null: still absent.
	cfg, err = Parse([]byte(base + "members:\n"))
	require.NoError(t, err)
	assert.Nil(t, cfg.Members)
}

func TestMembersDefaults(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(base + "members: {}\n"))
	require.NoError(t, err)
	require.NotNil(t, cfg.Members)

	assert.Equal(t, &Members{Listen: "[::]:7947", Profile: MembersProfileLAN}, cfg.Members)
	assert.Equal(t, netip.MustParseAddrPort("[::]:7947"), cfg.Members.ListenAddrPort())
	assert.False(t, cfg.Members.AdvertiseAddrPort().IsValid(), "picked by the agent at start")
	assert.Empty(t, cfg.Members.JoinAddrs())
}

func TestMembersExplicit(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(base + `members:
  listen: 10.0.0.2:7000
  advertise: 192.0.2.2
  join: [10.0.0.3, "10.0.0.4:7001", "fd00::5", "[fd00::6]:7002"]
  secretKeyFile: /var/etc/talos-lb/gossip.key
  profile: wan
`))
	require.NoError(t, err)

	m := cfg.Members
	assert.Equal(t, netip.MustParseAddrPort("10.0.0.2:7000"), m.ListenAddrPort())
	assert.Equal(t, netip.MustParseAddrPort("192.0.2.2:7000"), m.AdvertiseAddrPort(), "listen's port by default")
	assert.Equal(t, []string{"10.0.0.3:7000", "10.0.0.4:7001", "[fd00::5]:7000", "[fd00::6]:7002"}, m.JoinAddrs())
	assert.Equal(t, MembersProfileWAN, m.Profile)
	assert.Contains(t, cfg.Files(), "/var/etc/talos-lb/gossip.key", "tools check the key file is mounted")
}

func TestMembersErrors(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(base + `members:
  listen: "gossip.local:7947"
  advertise: "0.0.0.0"
  join:
    - node-2.example.com
    - "10.0.0.3:0"
    - "fe80::1%eth0"
    - 10.0.0.4
    - 10.0.0.4
  secretKeyFile: gossip.key
  profile: fast
  interval: 1s
`))
	require.Error(t, err)
	assert.Nil(t, cfg)
	assert.Equal(t, []string{
		`line 21: members.interval: unknown field (known: listen, advertise, join, secretKeyFile, profile)`,
	}, strings.Split(err.Error(), "\n"), "unknown fields stop parsing before validation")

	cfg, err = Parse([]byte(base + `members:
  listen: "gossip.local:7947"
  advertise: "0.0.0.0"
  join:
    - node-2.example.com
    - "10.0.0.3:0"
    - "fe80::1%eth0"
    - 10.0.0.4
    - 10.0.0.4
  secretKeyFile: gossip.key
  profile: fast
`))
	require.Error(t, err)
	assert.Nil(t, cfg)
	assert.Equal(t, []string{
		`line 11: members.listen: host must be an IP address, got "gossip.local"`,
		`line 12: members.advertise: must be a unicast address other agents reach this one on, got "0.0.0.0"`,
		`line 14: members.join[0]: want IP or IP:port, got "node-2.example.com"`,
		`line 15: members.join[1]: port must be a number from 1 to 65535, got "0"`,
		`line 16: members.join[2]: must be an IP address without zone, got "fe80::1%eth0"`,
		`line 18: members.join[4]: duplicate of join[3]`,
		`line 19: members.secretKeyFile: must be an absolute path, got "gossip.key"`,
		`line 20: members.profile: unknown profile "fast" (lan or wan)`,
	}, strings.Split(err.Error(), "\n"))
}

func TestParseIPPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":         "10.0.0.1:7947",
		"10.0.0.1:80":      "10.0.0.1:80",
		"fd00::1":          "[fd00::1]:7947",
		"[fd00::1]:80":     "[fd00::1]:80",
		"::ffff:10.0.0.1":  "10.0.0.1:7947",
		"host:80":          "error",
		"10.0.0.1:http":    "error",
		"10.0.0.1:70000":   "error",
		"[fe80::1%eth0]:1": "error",
		"":                 "error",
	} {
		ap, err := ParseIPPort(in, DefaultMembersPort)
		if want == "error" {
			assert.Error(t, err, in)

			continue
		}

		require.NoError(t, err, in)
		assert.Equal(t, want, ap.String(), in)
	}
}
