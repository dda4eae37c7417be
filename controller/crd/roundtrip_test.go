package crd_test

import (
	"fmt"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/talos-lb/talos-lb/controller/crd"
)

// full are objects with every spec field set (checked below), so a round
// trip exercises every field.
var full = map[string]string{
	crd.KindIPAddressPool: `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: IPAddressPool
metadata: {name: pool, namespace: lb, labels: {tier: gold}}
spec:
  addresses: [10.0.0.0/24, 10.0.1.10-10.0.1.20, 10.0.2.7, "fd00::/120"]
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 10
    namespaces: [team-a]
    namespaceSelectors: [{matchLabels: {env: prod}}]
    serviceSelectors: [{matchExpressions: [{key: app, operator: In, values: [web]}]}]
`,
	crd.KindBGPPeer: `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor, namespace: lb}
spec:
  myASN: 4200000001
  peerASN: 65001
  peerAddress: 10.1.0.1
  peerPort: 1179
  sourceAddress: 10.1.0.10
  holdTime: 9s
  keepaliveTime: 3s
  ebgpMultiHopTTL: 3
  password: s3cret
  passwordSecret: {name: bgp, key: md5}
  nodeSelectors: [{matchLabels: {rack: r1}}]
  bfd: {minTx: 100ms, minRx: 200ms, multiplier: 5}
  gracefulRestart: {enabled: true, restartTime: 60s}
`,
	crd.KindBGPAdvertisement: `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: bgp, namespace: lb}
spec:
  ipAddressPools: [pool]
  ipAddressPoolSelectors: [{matchLabels: {tier: gold}}]
  communities: ["65000:100", no-export]
  largeCommunities: ["4200000001:1:2"]
  localPref: 150
  peers: [tor]
  nodeSelectors: [{matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}]
  aggregationLength: 24
  aggregationLengthV6: 64
`,
	crd.KindL2Advertisement: `
apiVersion: lb.talos-lb.dev/v1alpha1
kind: L2Advertisement
metadata: {name: l2, namespace: lb}
spec:
  ipAddressPools: [pool]
  ipAddressPoolSelectors: [{matchLabels: {tier: gold}}]
  nodeSelectors: [{matchLabels: {l2: "yes"}}]
  interfaces: [eth0, bond0.100]
`,
}

func TestRoundTrip(t *testing.T) {
	for kind, doc := range full {
		t.Run(kind, func(t *testing.T) {
			u := obj(t, doc)
			if kind == crd.KindBGPPeer {
				// password and passwordSecret are exclusive; each is set in
				// turn so that both round-trip.
				spec := u.Object["spec"].(map[string]any)
				delete(spec, "passwordSecret")
				roundTrip(t, u)
				delete(spec, "password")
				spec["passwordSecret"] = map[string]any{"name": "bgp", "key": "md5"}
			}

			o := roundTrip(t, u)
			if kind != crd.KindBGPPeer {
				assertAllSet(t, "spec", reflect.ValueOf(o).Elem().FieldByName("Spec"))
			}
		})
	}
}

// roundTrip parses u, turns the result back into unstructured form with
// apimachinery's converter (what the controller would send), parses that and
// wants the same object.
func roundTrip(t *testing.T, u *unstructured.Unstructured) crd.Object {
	t.Helper()

	first := mustParse(t, u)

	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(first)
	if err != nil {
		t.Fatal(err)
	}

	second := mustParse(t, &unstructured.Unstructured{Object: m})
	if !reflect.DeepEqual(first, second) {
		t.Errorf("round trip changed the object:\n%#v\n%#v", first, second)
	}

	return first
}

// assertAllSet fails for every zero field under v, so that the full examples
// keep covering every field as the types grow.
func assertAllSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()

	if v.IsZero() {
		t.Errorf("%s is not set in the full example", path)
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		// Non-nil is set, also when it points to false or 0.
		if v.Elem().Kind() == reflect.Struct {
			assertAllSet(t, path, v.Elem())
		}
	case reflect.Struct:
		if v.Type().PkgPath() != reflect.TypeFor[crd.BGPPeerSpec]().PkgPath() {
			return // metav1 types: set is enough
		}

		for i := range v.NumField() {
			assertAllSet(t, fmt.Sprintf("%s.%s", path, v.Type().Field(i).Name), v.Field(i))
		}
	case reflect.Slice:
		assertAllSet(t, path+"[0]", v.Index(0))
	}
}

// The peer example without password covers everything but Password and
// vice versa; check each half.
func TestRoundTripPeerCoversAllFields(t *testing.T) {
	u := obj(t, full[crd.KindBGPPeer])
	delete(u.Object["spec"].(map[string]any), "password")

	p := mustParse(t, u).(*crd.BGPPeer)
	p.Spec.Password = "set in the other half"
	assertAllSet(t, "spec", reflect.ValueOf(p.Spec))
}
