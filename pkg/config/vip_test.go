package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const vipBase = base + `healthChecks:
  - name: apiserver
    kind: https
    address: 127.0.0.1:6443
    insecureSkipVerify: true
vip:
  addresses: [10.0.0.100, "fd00::100"]
  link: eth0
  healthCheck: apiserver
  election:
    peers:
      - {name: test-host, address: 10.0.0.2:50071}
      - {name: cp-2, address: 10.0.0.3:50071}
      - {name: cp-3, address: "[fd00::4]:50071"}
`

func TestVIPDefaults(t *testing.T) {
	stubHostname(t)

	cfg, err := Parse([]byte(vipBase))
	require.NoError(t, err)
	require.NotNil(t, cfg.VIP)

	assert.Equal(t, "[::]:50071", cfg.VIP.Election.Listen)
	assert.Equal(t, 200*time.Millisecond, cfg.VIP.Election.HeartbeatTimeout.Duration)
	assert.Equal(t, 100*time.Millisecond, cfg.VIP.Election.LeaderLeaseTimeout.Duration)
	assert.Equal(t, Announce{Count: 5, Interval: dur(250 * time.Millisecond), Refresh: dur(10 * time.Second)}, cfg.VIP.Announce)
}

func TestVIPErrors(t *testing.T) {
	stubHostname(t)

	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "every vip rule",
			in: base + `vip:
  addresses: [10.0.0.100, not-an-ip, 224.0.0.1, 10.0.0.100]
  healthCheck: apiserver
  election:
    listen: localhost:1
    peers:
      - {name: cp-2, address: "10.0.0.3"}
      - {name: cp-2, address: "cp-3:50071"}
      - {address: 10.0.0.5:50071}
    heartbeatTimeout: 1s
    leaderLeaseTimeout: 600ms
  announce:
    count: 0
    interval: 1ms
    refresh: 10ms
`,
			want: []string{
				`line 10: vip.link: required: the interface that carries the VIP, e.g. eth0`,
				`line 11: vip.addresses[1]: not an IP address: "not-an-ip"`,
				`line 11: vip.addresses[2]: must be a unicast address without zone, got "224.0.0.1"`,
				`line 11: vip.addresses[3]: duplicate of addresses[0]`,
				`line 12: vip.healthCheck: no healthChecks entry is named "apiserver"`,
				`line 14: vip.election.listen: host must be an IP address, got "localhost"`,
				`line 15: vip.election.peers: must include this node (node.name "test-host")`,
				`line 16: vip.election.peers[0].address: want host:port, got "10.0.0.3"`,
				`line 17: vip.election.peers[1].address: host must be an IP address, got "cp-3"`,
				`line 17: vip.election.peers[1].name: duplicate of peers[0].name`,
				`line 18: vip.election.peers[2].name: required (the peer's node.name)`,
				`line 20: vip.election.leaderLeaseTimeout: must be between 10ms and half of heartbeatTimeout (500ms), got 600ms: a longer lease could let an isolated leader keep the VIP while the majority elects another`,
				`line 22: vip.announce.count: must be between 1 and 50, got 0`,
				`line 23: vip.announce.interval: must be between 10ms and 10s, got 1ms`,
				`line 24: vip.announce.refresh: must be between 1s and 1h0m0s, got 10ms`,
			},
		},
		{
			name: "workers take no part",
			in:   strings.Replace(vipBase, "role: controlplane", "role: worker", 1),
			want: []string{`line 15: vip: only control-plane nodes (node.role: controlplane) take part in the VIP`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.in))
			require.Error(t, err)
			assert.Nil(t, cfg)
			assert.Equal(t, tc.want, strings.Split(err.Error(), "\n"))
		})
	}
}
