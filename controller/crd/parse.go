package crd

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Parse decodes and validates an object of any of the four kinds, chosen by
// its kind. The error, if any, is an *InvalidError listing every problem.
func Parse(u *unstructured.Unstructured) (Object, error) {
	if u == nil || u.Object == nil {
		return nil, &InvalidError{Fields: []*FieldError{{Field: "object", Message: "empty"}}}
	}

	// Each case returns its own typed nil on error, which must not become a
	// non-nil Object.
	var (
		o   Object
		err error
	)

	switch k := u.GetKind(); k {
	case KindIPAddressPool:
		var p *IPAddressPool
		if p, err = ParseIPAddressPool(u); err == nil {
			o = p
		}
	case KindBGPPeer:
		var p *BGPPeer
		if p, err = ParseBGPPeer(u); err == nil {
			o = p
		}
	case KindBGPAdvertisement:
		var a *BGPAdvertisement
		if a, err = ParseBGPAdvertisement(u); err == nil {
			o = a
		}
	case KindL2Advertisement:
		var a *L2Advertisement
		if a, err = ParseL2Advertisement(u); err == nil {
			o = a
		}
	default:
		ref := Ref{Kind: k, Namespace: u.GetNamespace(), Name: u.GetName()}
		err = &InvalidError{Ref: ref, Fields: []*FieldError{{
			Field:   "kind",
			Message: fmt.Sprintf("want one of %s, %s, %s or %s, got %q", KindIPAddressPool, KindBGPPeer, KindBGPAdvertisement, KindL2Advertisement, k),
		}}}
	}

	return o, err
}

// ParseIPAddressPool decodes u strictly, fills in the defaults and validates
// it. On error the pool is nil and the error an *InvalidError.
func ParseIPAddressPool(u *unstructured.Unstructured) (*IPAddressPool, error) {
	p := &IPAddressPool{}
	fe := decodeObject(u, KindIPAddressPool, p, &p.Spec, true)
	p.Spec.defaults()
	p.Spec.validate(fe)

	if err := fe.err(refOfU(KindIPAddressPool, u)); err != nil {
		return nil, err
	}

	return p, nil
}

// ParseBGPPeer decodes u strictly, fills in the defaults and validates it.
func ParseBGPPeer(u *unstructured.Unstructured) (*BGPPeer, error) {
	p := &BGPPeer{}
	fe := decodeObject(u, KindBGPPeer, p, &p.Spec, true)
	p.Spec.defaults()
	p.Spec.validate(fe)

	if err := fe.err(refOfU(KindBGPPeer, u)); err != nil {
		return nil, err
	}

	return p, nil
}

// ParseBGPAdvertisement decodes u strictly, fills in the defaults and
// validates it. An absent spec advertises every pool from every node to every
// peer.
func ParseBGPAdvertisement(u *unstructured.Unstructured) (*BGPAdvertisement, error) {
	a := &BGPAdvertisement{}
	fe := decodeObject(u, KindBGPAdvertisement, a, &a.Spec, false)
	a.Spec.defaults()
	a.Spec.validate(fe)

	if err := fe.err(refOfU(KindBGPAdvertisement, u)); err != nil {
		return nil, err
	}

	return a, nil
}

// ParseL2Advertisement decodes u strictly and validates it. An absent spec
// advertises every pool from every node.
func ParseL2Advertisement(u *unstructured.Unstructured) (*L2Advertisement, error) {
	a := &L2Advertisement{}
	fe := decodeObject(u, KindL2Advertisement, a, &a.Spec, false)
	a.Spec.validate(fe)

	if err := fe.err(refOfU(KindL2Advertisement, u)); err != nil {
		return nil, err
	}

	return a, nil
}

// refOfU names u by the kind it was parsed as.
func refOfU(kind string, u *unstructured.Unstructured) Ref {
	if u == nil {
		return Ref{Kind: kind}
	}

	return Ref{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
}
