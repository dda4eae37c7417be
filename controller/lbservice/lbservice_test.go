package lbservice_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/talos-lb/talos-lb/controller/lbservice"
	"github.com/talos-lb/talos-lb/pkg/ipam"
)

func service(class *string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: class,
			IPFamilies:        []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:             []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}},
		},
	}
}

func TestOurs(t *testing.T) {
	ours, other := lbservice.DefaultClass, "metallb.io/metallb"
	c := lbservice.Classes{Class: ours}

	require.True(t, c.Ours(service(&ours)))
	require.False(t, c.Ours(service(&other)))
	require.False(t, c.Ours(service(nil)))

	c.NoClass = true
	require.True(t, c.Ours(service(nil)))
	require.False(t, c.Ours(service(&other)), "another class is never ours")

	cluster := service(&ours)
	cluster.Spec.Type = corev1.ServiceTypeClusterIP
	require.False(t, c.Ours(cluster))
}

func TestRequest(t *testing.T) {
	svc := service(nil)
	svc.Annotations[lbservice.AnnotationMetalLBPool] = "pool-a"
	svc.Annotations[lbservice.AnnotationMetalLBSharing] = "dns"
	svc.Annotations["metallb.io/loadBalancerIPs"] = "192.0.2.7"
	dual := corev1.IPFamilyPolicyPreferDualStack
	svc.Spec.IPFamilyPolicy = &dual
	svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, corev1.IPv6Protocol)

	r, err := lbservice.Request(svc, map[string]string{"team": "a"})
	require.NoError(t, err)
	require.Equal(t, ipam.ServiceKey{Namespace: "default", Name: "web"}, r.Service)
	require.Equal(t, "pool-a", r.Pool)
	require.Equal(t, "dns", r.SharingKey)
	require.Equal(t, []netip.Addr{netip.MustParseAddr("192.0.2.7")}, r.IPs)
	require.Equal(t, []ipam.Family{ipam.IPv4, ipam.IPv6}, r.Families)
	require.Equal(t, ipam.PreferDualStack, r.Policy)
	require.Equal(t, []ipam.Port{{Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 53}}, r.Ports)
	require.Equal(t, "a", r.NamespaceLabels["team"])

	svc.Annotations["metallb.io/loadBalancerIPs"] = "192.0.2.300"
	_, err = lbservice.Request(svc, nil)
	require.ErrorContains(t, err, "metallb.io/loadBalancerIPs")
}

func TestStatusRoundTrip(t *testing.T) {
	svc := service(nil)
	ips := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	require.False(t, lbservice.SameIngress(svc, ips))

	svc.Status.LoadBalancer.Ingress = lbservice.Ingress(svc, ips)
	require.True(t, lbservice.SameIngress(svc, ips))
	require.Equal(t, corev1.LoadBalancerIPModeVIP, *svc.Status.LoadBalancer.Ingress[0].IPMode)
	require.Len(t, svc.Status.LoadBalancer.Ingress[1].Ports, 2)

	got, err := lbservice.StatusIPs(svc)
	require.NoError(t, err)
	require.Equal(t, ips, got)

	svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: "nope"})
	_, err = lbservice.StatusIPs(svc)
	require.ErrorContains(t, err, "status.loadBalancer.ingress[2].ip")
}
