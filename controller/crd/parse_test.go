package crd_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/talos-lb/talos-lb/controller/crd"
)

// want is one field error a case must produce: the field path exactly, and
// a piece of the message (which must show the bad value where there is one).
type want struct{ field, msg string }

func TestValidationErrors(t *testing.T) {
	longPassword := strings.Repeat("p", 81)

	cases := []struct {
		name, kind, spec string
		want             []want
	}{
		// IPAddressPool
		{"pool without addresses", crd.KindIPAddressPool, "autoAssign: true", []want{{"spec.addresses", "required"}}},
		{"pool with empty addresses", crd.KindIPAddressPool, "addresses: []", []want{{"spec.addresses", "required"}}},
		{"pool bad CIDR", crd.KindIPAddressPool, "addresses: [10.0.0.0/24, 10.0.0.0/33]", []want{{"spec.addresses[1]", `"10.0.0.0/33" is not a CIDR, a range a-b or an address`}}},
		{"pool garbage", crd.KindIPAddressPool, "addresses: [pool]", []want{{"spec.addresses[0]", `"pool" is not a CIDR`}}},
		{"pool empty address", crd.KindIPAddressPool, `addresses: [""]`, []want{{"spec.addresses[0]", `"" is not a CIDR`}}},
		{"pool zoned address", crd.KindIPAddressPool, `addresses: ["fe80::1%eth0"]`, []want{{"spec.addresses[0]", `"fe80::1%eth0" is not`}}},
		{"pool reversed range", crd.KindIPAddressPool, "addresses: [10.0.0.9-10.0.0.1]", []want{{"spec.addresses[0]", `"10.0.0.9-10.0.0.1" is not a valid range a-b: 10.0.0.9 comes after 10.0.0.1`}}},
		{"pool mixed range", crd.KindIPAddressPool, "addresses: [10.0.0.1-fd00::1]", []want{{"spec.addresses[0]", "different families"}}},
		{"pool bad range end", crd.KindIPAddressPool, "addresses: [10.0.0.1-10.0.0.300]", []want{{"spec.addresses[0]", `"10.0.0.1-10.0.0.300" is not a valid range`}}},
		{"pool overlap inside", crd.KindIPAddressPool, "addresses: [10.0.0.0/24, 10.0.0.7]", []want{{"spec.addresses", "overlaps"}}},
		{"pool negative priority", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation: {priority: -1}", []want{{"spec.serviceAllocation.priority", "got -1"}}},
		{"pool priority too high", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation: {priority: 2147483647}", []want{{"spec.serviceAllocation.priority", "got 2147483647"}}},
		{"pool bad namespace", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation: {namespaces: [ok, Bad_NS]}", []want{{"spec.serviceAllocation.namespaces[1]", `"Bad_NS" is not a namespace name`}}},
		{"pool bad namespace selector", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation:\n  namespaceSelectors:\n  - matchExpressions: [{key: a, operator: Maybe}]", []want{{"spec.serviceAllocation.namespaceSelectors[0]", `"Maybe"`}}},
		{"pool bad service selector", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation:\n  serviceSelectors:\n  - {}\n  - matchLabels: {app: 'a b'}", []want{{"spec.serviceAllocation.serviceSelectors[1]", "a b"}}},
		{"pool typo", crd.KindIPAddressPool, "adresses: [10.0.0.0/24]", []want{{"spec.adresses", "unknown field"}, {"spec.addresses", "required"}}},
		{"pool nested typo", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation: {namespace: [a]}", []want{{"spec.serviceAllocation.namespace", "unknown field"}}},
		{"pool selector typo", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation:\n  serviceSelectors:\n  - matchLabel: {a: b}", []want{{"spec.serviceAllocation.serviceSelectors[0].matchLabel", "unknown field"}}},
		{"pool autoAssign not bool", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nautoAssign: 'yes'", []want{{"spec.autoAssign", `want true or false, got a string ("yes")`}}},
		{"pool addresses not a list", crd.KindIPAddressPool, "addresses: 10.0.0.0/24", []want{{"spec.addresses", `want a list, got a string ("10.0.0.0/24")`}}},
		{"pool address not a string", crd.KindIPAddressPool, "addresses: [10.0.0.0/24, 7]", []want{{"spec.addresses[1]", "want a string, got a number (7)"}}},
		{"pool priority not an integer", crd.KindIPAddressPool, "addresses: [10.0.0.0/24]\nserviceAllocation: {priority: 1.5}", []want{{"spec.serviceAllocation.priority", "want an integer, got a number (1.5)"}}},
		{"pool spec not an object", crd.KindIPAddressPool, "- 10.0.0.0/24", []want{{"spec", "want an object, got a list"}}},
		{"pool several", crd.KindIPAddressPool, "addresses: [nope, 10.0.0.0/24, 10.0.0.0/99]\navoidBuggyIPs: 1\nserviceAllocation: {priority: -5}", []want{
			{"spec.addresses[0]", `"nope"`}, {"spec.addresses[2]", `"10.0.0.0/99"`}, {"spec.avoidBuggyIPs", "want true or false"}, {"spec.serviceAllocation.priority", "-5"},
		}},

		// BGPPeer
		{"peer without ASNs", crd.KindBGPPeer, "peerAddress: 10.0.0.1", []want{{"spec.myASN", "got 0"}, {"spec.peerASN", "got 0"}}},
		{"peer AS_TRANS", crd.KindBGPPeer, "myASN: 23456\npeerASN: 4294967295\npeerAddress: 10.0.0.1", []want{{"spec.myASN", "got 23456"}, {"spec.peerASN", "got 4294967295"}}},
		{"peer ASN too big", crd.KindBGPPeer, "myASN: 4294967296\npeerASN: 65001\npeerAddress: 10.0.0.1", []want{{"spec.myASN", "4.294967296e+09 is out of range (0 to 4294967295)"}}},
		{"peer ASN negative", crd.KindBGPPeer, "myASN: -1\npeerASN: 65001\npeerAddress: 10.0.0.1", []want{{"spec.myASN", "-1 is out of range"}}},
		{"peer without address", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001", []want{{"spec.peerAddress", "required"}}},
		{"peer bad address", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.300", []want{{"spec.peerAddress", `"10.0.0.300" is not an IP address`}}},
		{"peer zoned address", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: fe80::1%eth0", []want{{"spec.peerAddress", `"fe80::1%eth0" carries a zone`}}},
		{"peer bad source", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nsourceAddress: here", []want{{"spec.sourceAddress", `"here" is not an IP address`}}},
		{"peer source family", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nsourceAddress: fd00::2", []want{{"spec.sourceAddress", "fd00::2 is not of the family of peerAddress 10.0.0.1"}}},
		{"peer port", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npeerPort: 70000", []want{{"spec.peerPort", "70000 is out of range (0 to 65535)"}}},
		{"peer hold too short", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 2s", []want{{"spec.holdTime", "must be 0 (no keepalives) or 3s to 65535s, got 2s"}}},
		{"peer hold negative", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: -9s", []want{{"spec.holdTime", "got -9s"}}},
		{"peer hold too long", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 20h", []want{{"spec.holdTime", "got 20h0m0s"}}},
		{"peer hold fraction", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 3500ms", []want{{"spec.holdTime", "whole seconds, got 3.5s"}}},
		{"peer hold not a duration", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 9", []want{{"spec.holdTime", "want a duration such as"}}},
		{"peer hold bad duration", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 9 seconds", []want{{"spec.holdTime", `"9 seconds" is not a duration`}}},
		{"peer keepalive not shorter", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 9s\nkeepaliveTime: 9s", []want{{"spec.keepaliveTime", "must be shorter than holdTime (9s), got 9s"}}},
		{"peer keepalive zero", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nkeepaliveTime: 0s", []want{{"spec.keepaliveTime", "must be positive, got 0s"}}},
		{"peer keepalive without hold", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nholdTime: 0s\nkeepaliveTime: 10s", []want{{"spec.keepaliveTime", "must be 0 when holdTime is 0"}}},
		{"peer keepalive fraction", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nkeepaliveTime: 1500ms", []want{{"spec.keepaliveTime", "whole seconds, got 1.5s"}}},
		{"peer multihop", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nebgpMultiHopTTL: 256", []want{{"spec.ebgpMultiHopTTL", "256 is out of range (0 to 255)"}}},
		{"peer MetalLB multihop", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nebgpMultiHop: true", []want{{"spec.ebgpMultiHop", "unknown field: set spec.ebgpMultiHopTTL instead"}}},
		{"peer MetalLB bfdProfile", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nbfdProfile: fast", []want{{"spec.bfdProfile", "unknown field: BFD is configured inline"}}},
		{"peer both passwords", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npassword: s3cret\npasswordSecret: {name: bgp}", []want{{"spec.passwordSecret", "either password or passwordSecret, not both"}}},
		{"peer long password", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npassword: " + longPassword, []want{{"spec.password", "81 bytes long"}}},
		{"peer secret without name", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npasswordSecret: {key: pw}", []want{{"spec.passwordSecret.name", "required"}}},
		{"peer secret bad name and key", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npasswordSecret: {name: Bad_Name, key: a/b}", []want{{"spec.passwordSecret.name", `"Bad_Name" is not a Secret name`}, {"spec.passwordSecret.key", `"a/b" is not a Secret key`}}},
		{"peer secret in another namespace", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\npasswordSecret: {name: bgp, namespace: other}", []want{{"spec.passwordSecret.namespace", "unknown field: the Secret must be in the BGPPeer's own namespace"}}},
		{"peer node selector", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nnodeSelectors:\n- matchExpressions: [{key: rack, operator: In}]", []want{{"spec.nodeSelectors[0]", "values"}}},
		{"peer node selector type", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nnodeSelectors: {matchLabels: {a: b}}", []want{{"spec.nodeSelectors", "want a list, got an object"}}},
		{"peer bfd ranges", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nbfd: {minTx: 1ms, minRx: 20s, multiplier: 300}", []want{
			{"spec.bfd.minTx", "must be 10ms to 10s, got 1ms"}, {"spec.bfd.minRx", "got 20s"}, {"spec.bfd.multiplier", "must be 1 to 255, got 300"},
		}},
		{"peer bfd negative", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\nbfd: {minTx: -300ms}", []want{{"spec.bfd.minTx", "got -300ms"}}},
		{"peer restart time", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\ngracefulRestart: {enabled: true, restartTime: 5000s}", []want{{"spec.gracefulRestart.restartTime", "must be 1s to 1h8m15s, got 1h23m20s"}}},
		{"peer restart fraction", crd.KindBGPPeer, "myASN: 65000\npeerASN: 65001\npeerAddress: 10.0.0.1\ngracefulRestart: {enabled: true, restartTime: 1500ms}", []want{{"spec.gracefulRestart.restartTime", "whole seconds, got 1.5s"}}},
		{"peer without spec", crd.KindBGPPeer, "", []want{{"spec", "required"}}},

		// BGPAdvertisement
		{"bgp bad community", crd.KindBGPAdvertisement, "communities: [no-export, 65536:1]", []want{{"spec.communities[1]", `"65536:1"`}}},
		{"bgp MetalLB large community", crd.KindBGPAdvertisement, "communities: ['large:1:2:3']", []want{{"spec.communities[0]", `large communities go in spec.largeCommunities, written "1:2:3"`}}},
		{"bgp bad large community", crd.KindBGPAdvertisement, "largeCommunities: ['1:2']", []want{{"spec.largeCommunities[0]", `"1:2"`}}},
		{"bgp aggregation", crd.KindBGPAdvertisement, "aggregationLength: 33\naggregationLengthV6: 0", []want{{"spec.aggregationLength", "must be 1 to 32, got 33"}, {"spec.aggregationLengthV6", "must be 1 to 128, got 0"}}},
		{"bgp aggregation v6", crd.KindBGPAdvertisement, "aggregationLengthV6: 129", []want{{"spec.aggregationLengthV6", "got 129"}}},
		{"bgp local pref", crd.KindBGPAdvertisement, "localPref: -1", []want{{"spec.localPref", "-1 is out of range (0 to 4294967295)"}}},
		{"bgp pool name", crd.KindBGPAdvertisement, "ipAddressPools: [good, Bad_Pool]", []want{{"spec.ipAddressPools[1]", `"Bad_Pool" is not a valid IPAddressPool name`}}},
		{"bgp peer name", crd.KindBGPAdvertisement, `peers: [""]`, []want{{"spec.peers[0]", `"" is not a valid BGPPeer name`}}},
		{"bgp pool selector", crd.KindBGPAdvertisement, "ipAddressPoolSelectors:\n- matchExpressions: [{key: '', operator: Exists}]", []want{{"spec.ipAddressPoolSelectors[0]", "key"}}},
		{"bgp node selector", crd.KindBGPAdvertisement, "nodeSelectors:\n- matchLabels: {'bad key!': x}", []want{{"spec.nodeSelectors[0]", "bad key!"}}},
		{"bgp typo", crd.KindBGPAdvertisement, "comunities: [no-export]", []want{{"spec.comunities", "unknown field"}}},

		// L2Advertisement
		{"l2 interfaces", crd.KindL2Advertisement, `interfaces: [eth0, "", this-is-too-long-0, eth/1, ".."]`, []want{
			{"spec.interfaces[1]", `"" is not an interface name: empty`},
			{"spec.interfaces[2]", "longer than 15 bytes"},
			{"spec.interfaces[3]", `"eth/1"`},
			{"spec.interfaces[4]", "reserved"},
		}},
		{"l2 pool name", crd.KindL2Advertisement, "ipAddressPools: [a..b]", []want{{"spec.ipAddressPools[0]", `"a..b"`}}},
		{"l2 node selector", crd.KindL2Advertisement, "nodeSelectors:\n- matchExpressions: [{key: x, operator: Exists, values: [y]}]", []want{{"spec.nodeSelectors[0]", "values"}}},
		{"l2 interfaces type", crd.KindL2Advertisement, "interfaces: eth0", []want{{"spec.interfaces", "want a list"}}},
		{"l2 typo", crd.KindL2Advertisement, "interface: [eth0]", []want{{"spec.interface", "unknown field"}}},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := withSpec(t, c.kind, "obj-a", c.spec)

			o, err := crd.Parse(u)
			if err == nil {
				t.Fatalf("accepted: %+v", o)
			}

			if o != nil {
				t.Errorf("returned an object with the error")
			}

			prefix := c.kind + " default/obj-a: "
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}

			got := fieldErrors(t, err)
			for _, w := range c.want {
				found := false

				for _, fe := range got {
					if fe.Field == w.field && strings.Contains(fe.Message, w.msg) {
						found = true
						break
					}
				}

				if !found {
					t.Errorf("no error %s: ...%s...; got:\n%s", w.field, w.msg, listErrors(got))
				}
			}

			if len(got) != len(c.want) {
				t.Errorf("%d errors, want %d:\n%s", len(got), len(c.want), listErrors(got))
			}

			if c.name == "peer long password" && strings.Contains(err.Error(), longPassword) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func listErrors(fes []*crd.FieldError) string {
	var b strings.Builder
	for _, fe := range fes {
		fmt.Fprintf(&b, "  %s\n", fe)
	}

	return b.String()
}

// The example from the issue, to the letter.
func TestErrorMessage(t *testing.T) {
	u := obj(t, `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: pool-a, namespace: default}
spec:
  addresses: [10.0.0.0/24, 10.0.0.0/33]
`)

	_, err := crd.ParseIPAddressPool(u)

	const want = `IPAddressPool default/pool-a: spec.addresses[1]: "10.0.0.0/33" is not a CIDR, a range a-b or an address`
	if err == nil || err.Error() != want {
		t.Fatalf("error\n%v\nwant\n%s", err, want)
	}

	u = withSpec(t, crd.KindIPAddressPool, "pool-a", "adresses: [10.0.0.0/24]\nautoAssign: maybe")
	_, err = crd.ParseIPAddressPool(u)

	const want2 = `IPAddressPool default/pool-a: spec.adresses: unknown field; spec.autoAssign: want true or false, got a string ("maybe"); spec.addresses: required: at least one CIDR, range a-b or address`
	if err == nil || err.Error() != want2 {
		t.Fatalf("error\n%v\nwant\n%s", err, want2)
	}
}

func TestEnvelopeErrors(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []want
	}{
		{"unknown top-level field", "apiVersion: lb.talos-lb.dev/v1alpha1\nkind: L2Advertisement\nmetadata: {name: a}\nspecs: {}", []want{{"specs", "unknown field"}}},
		{"MetalLB object", "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: a}", []want{{"apiVersion", "a MetalLB object"}}},
		{"no name", "apiVersion: lb.talos-lb.dev/v1alpha1\nkind: L2Advertisement\nmetadata: {namespace: x}", []want{{"metadata.name", "required"}}},
		{"unknown kind", "apiVersion: lb.talos-lb.dev/v1alpha1\nkind: Pool\nmetadata: {name: a}", []want{{"kind", `got "Pool"`}}},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := crd.Parse(obj(t, c.doc))
			got := fieldErrors(t, err)

			for _, w := range c.want {
				found := false

				for _, fe := range got {
					if fe.Field == w.field && strings.Contains(fe.Message, w.msg) {
						found = true
					}
				}

				if !found {
					t.Errorf("no error %s: ...%s...; got:\n%s", w.field, w.msg, listErrors(got))
				}
			}
		})
	}

	// A kind-specific parser refuses another kind.
	_, err := crd.ParseBGPPeer(withSpec(t, crd.KindL2Advertisement, "a", ""))
	if err == nil || !strings.Contains(err.Error(), `kind: want BGPPeer, got "L2Advertisement"`) {
		t.Errorf("ParseBGPPeer of an L2Advertisement: %v", err)
	}

	if _, err := crd.Parse(nil); err == nil {
		t.Errorf("Parse(nil) accepted")
	}
}

func TestDefaults(t *testing.T) {
	pool := mustParse(t, withSpec(t, crd.KindIPAddressPool, "p", "addresses: [10.0.0.0/24]\nautoAssign: null")).(*crd.IPAddressPool)
	if pool.Spec.AutoAssign == nil || !*pool.Spec.AutoAssign {
		t.Errorf("autoAssign not defaulted to true: %v", pool.Spec.AutoAssign)
	}

	off := mustParse(t, withSpec(t, crd.KindIPAddressPool, "p", "addresses: [10.0.0.0/24]\nautoAssign: false")).(*crd.IPAddressPool)
	if *off.Spec.AutoAssign {
		t.Errorf("autoAssign: false became true")
	}

	peer := mustParse(t, withSpec(t, crd.KindBGPPeer, "r", `
myASN: 65000
peerASN: 65001
peerAddress: 10.0.0.1
passwordSecret: {name: bgp}
bfd: {}
gracefulRestart: {enabled: true}
`)).(*crd.BGPPeer)

	s := peer.Spec
	if s.PeerPort != 179 || s.HoldTime.Duration != 90*time.Second || s.KeepaliveTime.Duration != 30*time.Second {
		t.Errorf("port %d, hold %v, keepalive %v; want 179, 90s, 30s", s.PeerPort, s.HoldTime, s.KeepaliveTime)
	}

	if s.PasswordSecret.Key != "password" {
		t.Errorf("passwordSecret.key %q, want password", s.PasswordSecret.Key)
	}

	if s.BFD.MinTx.Duration != 300*time.Millisecond || s.BFD.MinRx.Duration != 300*time.Millisecond || s.BFD.Multiplier != 3 {
		t.Errorf("bfd %+v, want 300ms/300ms/3", s.BFD)
	}

	if s.GracefulRestart.RestartTime.Duration != 120*time.Second {
		t.Errorf("restartTime %v, want 120s", s.GracefulRestart.RestartTime)
	}

	// Keepalive follows a given hold time; hold time 0 means no keepalives.
	for hold, keepalive := range map[string]time.Duration{"9s": 3 * time.Second, "4s": time.Second, "0s": 0} {
		p := mustParse(t, withSpec(t, crd.KindBGPPeer, "r", "myASN: 65000\npeerASN: 65000\npeerAddress: fd00::1\nholdTime: "+hold)).(*crd.BGPPeer)
		if p.Spec.KeepaliveTime.Duration != keepalive {
			t.Errorf("holdTime %s: keepalive %v, want %v", hold, p.Spec.KeepaliveTime.Duration, keepalive)
		}
	}

	adv := mustParse(t, withSpec(t, crd.KindBGPAdvertisement, "a", "")).(*crd.BGPAdvertisement)
	if *adv.Spec.AggregationLength != 32 || *adv.Spec.AggregationLengthV6 != 128 {
		t.Errorf("aggregation %d/%d, want 32/128", *adv.Spec.AggregationLength, *adv.Spec.AggregationLengthV6)
	}

	// An L2Advertisement with no spec at all is MetalLB's "everything".
	if _, err := crd.ParseL2Advertisement(withSpec(t, crd.KindL2Advertisement, "all", "")); err != nil {
		t.Errorf("empty L2Advertisement: %v", err)
	}
}

func TestAddressForms(t *testing.T) {
	for _, a := range []string{"10.0.0.0/24", "10.0.0.5/24", "10.0.0.10-10.0.0.20", "10.0.0.7", "fd00::/120", "fd00::1-fd00::ff", "fd00::7", "::ffff:10.1.0.0/120", " 10.2.0.1 "} {
		if _, err := crd.ParseIPAddressPool(withSpec(t, crd.KindIPAddressPool, "p", "addresses: ['"+a+"']")); err != nil {
			t.Errorf("%q: %v", a, err)
		}
	}
}

// Status is read leniently and kept: the controller compares it before
// writing.
func TestStatusKept(t *testing.T) {
	u := obj(t, `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: L2Advertisement
metadata: {name: a, namespace: lb, generation: 4}
status:
  conditions:
  - {type: Valid, status: "True", reason: Valid, message: "", observedGeneration: 3, lastTransitionTime: "2026-01-02T03:04:05Z"}
  somethingOld: 1
`)

	a := mustParse(t, u).(*crd.L2Advertisement)
	if len(a.Status.Conditions) != 1 || a.Status.Conditions[0].ObservedGeneration != 3 || a.Generation != 4 {
		t.Errorf("status %+v, generation %d", a.Status, a.Generation)
	}
}
