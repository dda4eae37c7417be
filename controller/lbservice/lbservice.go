// Package lbservice translates between Kubernetes Services and the IPAM's
// terms: which Services are ours, what each asks for, what its status
// already holds, and the status it should show.
package lbservice

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// DefaultClass is the loadBalancerClass lb-controller handles.
const DefaultClass = "lb.talos-lb.dev/lb"

// Annotations read from Services. MetalLB's are honoured so Services move over unchanged.
const (
	AnnotationPool           = "lb.talos-lb.dev/address-pool"
	AnnotationMetalLBPool    = "metallb.io/address-pool"
	AnnotationMetalLBOldPool = "metallb.universe.tf/address-pool"

	AnnotationSharing           = "lb.talos-lb.dev/allow-shared-ip"
	AnnotationMetalLBSharing    = "metallb.io/allow-shared-ip"
	AnnotationMetalLBOldSharing = "metallb.universe.tf/allow-shared-ip"
)

// Classes says which LoadBalancer Services are ours.
type Classes struct {
	// Class is our spec.loadBalancerClass.
	Class string
	// NoClass also takes Services without a class (as the cluster's default
	// load balancer); off by default so we coexist with MetalLB, kube-vip or Cilium.
	NoClass bool
}

// Ours reports whether svc is a LoadBalancer Service we handle.
func (c Classes) Ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}

	if svc.Spec.LoadBalancerClass == nil {
		return c.NoClass
	}

	return *svc.Spec.LoadBalancerClass == c.Class
}

// Key is the IPAM's key of svc.
func Key(svc *corev1.Service) ipam.ServiceKey {
	return ipam.ServiceKey{Namespace: svc.Namespace, Name: svc.Name}
}

func firstAnnotation(svc *corev1.Service, keys ...string) string {
	for _, k := range keys {
		if v, ok := svc.Annotations[k]; ok {
			return strings.TrimSpace(v)
		}
	}

	return ""
}

// Request is what svc asks of the IPAM. namespaceLabels are the labels of
// svc's namespace, for pools' namespace selectors. The error names the field
// or annotation at fault.
func Request(svc *corev1.Service, namespaceLabels map[string]string) (ipam.Request, error) {
	r := ipam.Request{
		Service:         Key(svc),
		Pool:            firstAnnotation(svc, AnnotationPool, AnnotationMetalLBPool, AnnotationMetalLBOldPool),
		SharingKey:      firstAnnotation(svc, AnnotationSharing, AnnotationMetalLBSharing, AnnotationMetalLBOldSharing),
		Labels:          svc.Labels,
		NamespaceLabels: namespaceLabels,
	}

	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			r.Families = append(r.Families, ipam.IPv4)
		case corev1.IPv6Protocol:
			r.Families = append(r.Families, ipam.IPv6)
		default:
			return ipam.Request{}, fmt.Errorf("spec.ipFamilies: unknown family %q", f)
		}
	}

	if len(r.Families) == 0 {
		// The API server fills ipFamilies; an empty list is a Service from an
		// old or test client, single-stack IPv4 by Kubernetes' default.
		r.Families = []ipam.Family{ipam.IPv4}
	}

	switch p := svc.Spec.IPFamilyPolicy; {
	case p == nil || *p == corev1.IPFamilyPolicySingleStack:
		r.Policy = ipam.SingleStack
	case *p == corev1.IPFamilyPolicyPreferDualStack:
		r.Policy = ipam.PreferDualStack
	case *p == corev1.IPFamilyPolicyRequireDualStack:
		r.Policy = ipam.RequireDualStack
	default:
		return ipam.Request{}, fmt.Errorf("spec.ipFamilyPolicy: unknown policy %q", *p)
	}

	ips, err := ipam.RequestedIPs(svc.Spec.LoadBalancerIP, svc.Annotations)
	if err != nil {
		return ipam.Request{}, err
	}

	r.IPs = ips

	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}

		r.Ports = append(r.Ports, ipam.Port{Protocol: proto, Port: uint16(p.Port)}) //nolint:gosec // the API server keeps ports in 1-65535
	}

	return r, nil
}

// StatusIPs returns the IPs svc's status holds, skipping hostnames.
func StatusIPs(svc *corev1.Service) ([]netip.Addr, error) {
	var ips []netip.Addr

	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue
		}

		ip, err := netip.ParseAddr(ing.IP)
		if err != nil {
			return nil, fmt.Errorf("status.loadBalancer.ingress[%d].ip: %w", i, err)
		}

		ips = append(ips, ip)
	}

	return ips, nil
}

// Ingress is the status svc should show for ips. The IP mode is VIP: the
// node takes the traffic as addressed to the IP (kube-proxy or Cilium
// handle it there), as with MetalLB.
func Ingress(svc *corev1.Service, ips []netip.Addr) []corev1.LoadBalancerIngress {
	out := make([]corev1.LoadBalancerIngress, 0, len(ips))
	mode := corev1.LoadBalancerIPModeVIP

	for _, ip := range ips {
		ing := corev1.LoadBalancerIngress{IP: ip.String(), IPMode: &mode}

		for _, p := range svc.Spec.Ports {
			ing.Ports = append(ing.Ports, corev1.PortStatus{Port: p.Port, Protocol: p.Protocol})
		}

		out = append(out, ing)
	}

	return out
}

// SameIngress reports whether the status already shows ips, in order.
func SameIngress(svc *corev1.Service, ips []netip.Addr) bool {
	have := svc.Status.LoadBalancer.Ingress
	if len(have) != len(ips) {
		return false
	}

	for i, ip := range ips {
		if have[i].IP != ip.String() || have[i].Hostname != "" {
			return false
		}
	}

	return true
}

// LocalOnly reports externalTrafficPolicy: Local.
func LocalOnly(svc *corev1.Service) bool {
	return svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

// Describe is a short human form of ips for Events.
func Describe(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}

	return strings.Join(s, ", ")
}
