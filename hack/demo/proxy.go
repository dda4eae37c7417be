package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/talos-lb/talos-lb/integration/cluster"
	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/integration/standin"
	"github.com/talos-lb/talos-lb/integration/vipcheck"
)

// proxyListen is where every agent's local API proxy listens, beside
// KubePrism's 7445.
const proxyListen = "127.0.0.1:7446"

// proxyConfig is the agents' local API proxy: the control-plane endpoint
// (the VIP) from the configuration, and every API server the controller
// pushes.
func proxyConfig() string {
	return fmt.Sprintf(`proxies:
  - name: kubernetes
    listen: [%s]
    upstreams: ["%s"]
    pushedUpstreams: true
    healthCheck: {kind: https, path: /readyz, insecureSkipVerify: true, interval: 200ms}
`, proxyListen, netip.AddrPortFrom(vipcheck.VIP4, standin.APIPort))
}

// apiEndpoints are the API servers the demo's controller pushes, as
// lb-controller pushes the ready endpoints of default/kubernetes.
func apiEndpoints(l *lab.Lab) []string {
	out := make([]string, 0, len(l.Nodes))
	for _, h := range l.Nodes {
		out = append(out, netip.AddrPortFrom(h.IPv4, standin.APIPort).String())
	}

	return out
}

// localProxy shows node-1's local API proxy: its upstreams (configured and
// pushed, its own API server preferred), a request through it, and its own
// API server going unready.
func (d *demo) localProxy() error {
	node := d.lab.Nodes[0]
	own := netip.AddrPortFrom(node.IPv4, standin.APIPort).String()

	// node-2 has just come back from the L2 failover: wait for every upstream.
	for _, addr := range append(apiEndpoints(d.lab), netip.AddrPortFrom(vipcheck.VIP4, standin.APIPort).String()) {
		if err := d.waitUpstream(node, addr, "healthy", 30*time.Second); err != nil {
			return err
		}
	}

	for _, args := range [][]string{{"get", "proxies"}, {"get", "upstreams"}} {
		if err := d.lbctl(append([]string{"-n", node.IPv4.String()}, args...)...); err != nil {
			return err
		}
	}

	if err := d.readyz(node); err != nil {
		return err
	}

	step("%s's API server reports not ready (/readyz 500)", node.Name)
	d.standins[node.Name].SetReady(false)

	fault := time.Now()
	if err := d.waitUpstream(node, own, "unhealthy", 30*time.Second); err != nil {
		return err
	}

	step("%s's proxy took its own API server out %d ms later; clients go to the others (the VIP's health check saw it too)", node.Name, time.Since(fault).Milliseconds())

	if err := d.readyz(node); err != nil {
		return err
	}

	if err := d.lbctl("-n", node.IPv4.String(), "get", "upstreams"); err != nil {
		return err
	}

	step("%s's API server is ready again", node.Name)
	d.standins[node.Name].SetReady(true)

	return d.waitUpstream(node, own, "healthy", 30*time.Second)
}

// readyz asks /readyz through node's proxy, from inside node, as kubelet
// would ask its API server.
func (d *demo) readyz(node *lab.Host) error {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return node.Dial(ctx, network, addr)
			},
			// The stand-ins' certificates come from a CA of their own; a real
			// client verifies against the cluster CA.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // demo stand-ins
		},
	}
	defer client.CloseIdleConnections()

	resp, err := client.Get("https://" + proxyListen + "/readyz")
	if err != nil {
		return fmt.Errorf("/readyz through %s's proxy: %w", node.Name, err)
	}
	defer resp.Body.Close() //nolint:errcheck

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}

	step("GET https://%s/readyz from inside %s (through its proxy): %s %s", proxyListen, node.Name, resp.Status, body)

	return nil
}

// waitUpstream waits until node's proxy says addr is in state.
func (d *demo) waitUpstream(node *lab.Host, addr, state string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)

	for {
		out, err := d.c.Lbctl(d.ctx, "-n", cluster.Endpoint(node.IPv4), "get", "upstreams", "-o", "json")
		if err != nil {
			return err
		}

		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var doc struct {
				Spec struct {
					Address string `json:"address"`
					State   string `json:"state"`
				} `json:"spec"`
			}

			if err := dec.Decode(&doc); err != nil {
				return fmt.Errorf("lbctl get upstreams: %w", err)
			}

			if doc.Spec.Address == addr && doc.Spec.State == state {
				return nil
			}
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("%s's upstream %s never became %s:\n%s", node.Name, addr, state, out)
		}

		time.Sleep(20 * time.Millisecond)
	}
}
