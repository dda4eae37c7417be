package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExampleProxy(t *testing.T) {
	cfg, err := Parse(Example())
	require.NoError(t, err)
	require.Len(t, cfg.Proxies, 1)

	p := cfg.Proxies[0]
	assert.Equal(t, []string{DefaultProxyListen}, p.Listen)
	assert.Len(t, p.Upstreams, 3)
	assert.Equal(t, CheckHTTPS, p.Check.Kind)
	assert.Equal(t, 500*time.Millisecond, p.Check.Timeout.Duration)
}

func TestProxyDefaults(t *testing.T) {
	stubHostname(t)
	cfg, err := Parse([]byte(base + `proxies:
  - name: kubernetes
    upstreams: [10.0.0.1:6443, "cp-2.example:6443"]
  - name: web
    listen: ["[::1]:8080", 127.0.0.2:8080]
    upstreams: [10.0.0.1:80]
    healthCheck: {kind: https, insecureSkipVerify: true, interval: 300ms}
    connectTimeout: 500ms
`))
	require.NoError(t, err)

	assert.Equal(t, []Proxy{
		{
			Name: "kubernetes", Listen: []string{"127.0.0.1:7446"}, Upstreams: []string{"10.0.0.1:6443", "cp-2.example:6443"},
			Check: ProxyCheck{
				Kind: CheckTCP, Interval: dur(time.Second), Timeout: dur(500 * time.Millisecond), Rise: 2, Fall: 2,
			},
			Balance: BalanceRoundRobin, ConnectTimeout: dur(5 * time.Second), DialTimeout: dur(time.Second),
			Keepalive: dur(10 * time.Second), UserTimeout: dur(30 * time.Second),
		},
		{
			Name: "web", Listen: []string{"[::1]:8080", "127.0.0.2:8080"}, Upstreams: []string{"10.0.0.1:80"},
			Check: ProxyCheck{
				Kind: CheckHTTPS, Path: "/readyz", InsecureSkipVerify: true,
				Interval: dur(300 * time.Millisecond), Timeout: dur(300 * time.Millisecond), Rise: 2, Fall: 2,
			},
			// The attempt budget follows a short overall budget down.
			Balance: BalanceRoundRobin, ConnectTimeout: dur(500 * time.Millisecond), DialTimeout: dur(500 * time.Millisecond),
			Keepalive: dur(10 * time.Second), UserTimeout: dur(30 * time.Second),
		},
	}, cfg.Proxies)

	hc := cfg.Proxies[1].Check.HealthCheck("web-1", "10.0.0.1:80")
	assert.Equal(t, "10.0.0.1:80", hc.Address)
	assert.True(t, hc.InsecureSkipVerify)
}

func TestProxyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "every proxy rule",
			in: base + `proxies:
  - name: Kube
    listen: [10.0.0.1:7446, "127.0.0.1", "[fe80::1%lo]:1", 127.0.0.1:7446, 127.0.0.1:7446]
    upstreams: [":6443", 10.0.0.1:0, 10.0.0.2:6443, 10.0.0.2:6443]
    healthCheck:
      kind: grpc
      interval: 10ms
    balance: random
    connectTimeout: 0s
    drainPeriod: -1s
    keepalive: 2h
    userTimeout: 100ms
  - name: kube2
    listen: []
    upstreams: []
    connectTimeout: 1s
    dialTimeout: 2s
  - name: kube2
    listen: [127.0.0.1:7446]
    upstreams: [10.0.0.1:6443]
    dialTimeout: 0s
  - {}
`,
			want: []string{
				`line 11: proxies[0].name: must be 1-63 characters of a-z, 0-9 and '-', got "Kube"`,
				`line 12: proxies[0].listen[0]: must be a loopback address (127.0.0.0/8 or ::1), got "10.0.0.1"`,
				`line 12: proxies[0].listen[1]: want host:port, got "127.0.0.1"`,
				`line 12: proxies[0].listen[2]: must be a loopback address (127.0.0.0/8 or ::1), got "fe80::1%lo"`,
				`line 12: proxies[0].listen[4]: duplicate of listen[3]`,
				`line 13: proxies[0].upstreams[0]: needs a host, got ":6443"`,
				`line 13: proxies[0].upstreams[1]: port must be a number from 1 to 65535, got "0"`,
				`line 13: proxies[0].upstreams[3]: duplicate of upstreams[2]`,
				`line 15: proxies[0].healthCheck.kind: unknown kind "grpc" (https, http or tcp)`,
				`line 16: proxies[0].healthCheck.interval: must be between 100ms and 1m, got 10ms`,
				`line 17: proxies[0].balance: unknown balance "random" (round-robin or least-connections)`,
				`line 18: proxies[0].connectTimeout: must be positive, got 0s`,
				`line 19: proxies[0].drainPeriod: must not be negative, got -1s`,
				`line 20: proxies[0].keepalive: must be between 1s and 1h0m0s, got 2h0m0s`,
				`line 21: proxies[0].userTimeout: must be between 1s and 10m0s, got 100ms`,
				`line 23: proxies[1].listen: required (loopback host:port, e.g. 127.0.0.1:7446)`,
				`line 24: proxies[1].upstreams: required (host:port of each API server)`,
				`line 26: proxies[1].dialTimeout: must not exceed connectTimeout (1s), got 2s`,
				`line 27: proxies[2].name: duplicate name "kube2" (first in proxies[1])`,
				`line 28: proxies[2].listen[0]: already listened on by proxies[0]`,
				`line 30: proxies[2].dialTimeout: must be positive, got 0s`,
				`line 31: proxies[3].name: required`,
				`line 31: proxies[3].upstreams: required (host:port of each API server)`,
				// The default listen address is taken too.
				`line 31: proxies[3].listen[0]: already listened on by proxies[2]`,
			},
		},
		{
			name: "decode errors",
			in: base + `proxies:
  - name: kube
    listen: 127.0.0.1:7446
    upstreams: [{host: a}]
    healthCheck: {address: x}
    balance: [a]
    drainPeriod: soon
`,
			want: []string{
				`line 12: proxies[0].listen: expected a list, got "127.0.0.1:7446"`,
				`line 13: proxies[0].upstreams[0]: expected a string, got a mapping`,
				`line 14: proxies[0].healthCheck.address: unknown field (known: kind, path, caFile, insecureSkipVerify, serverName, interval, timeout, rise, fall)`,
				`line 15: proxies[0].balance: expected a string, got a list`,
				`line 16: proxies[0].drainPeriod: invalid duration "soon"`,
			},
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
