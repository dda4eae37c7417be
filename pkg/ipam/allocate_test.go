package ipam_test

import (
	"errors"
	"testing"

	"github.com/talos-lb/talos-lb/pkg/ipam"
)

// allocCase allocates before in order (each must succeed), then req.
type allocCase struct {
	name    string
	pools   []ipam.Pool
	before  []ipam.Request
	req     ipam.Request
	want    string // the IPs, comma-separated, when no error is expected
	wantErr error
	errText string
}

func (tc allocCase) run(t *testing.T) {
	t.Helper()

	a := newAllocator(t, tc.pools...)
	for _, r := range tc.before {
		if _, err := a.Allocate(r); err != nil {
			t.Fatalf("%s: setup %s: %v", tc.name, r.Service, err)
		}
	}

	al, err := a.Allocate(tc.req)

	switch {
	case tc.wantErr == nil && err != nil:
		t.Errorf("%s: %v", tc.name, err)
	case tc.wantErr == nil && ipStrings(al) != tc.want:
		t.Errorf("%s: got %s, want %s", tc.name, ipStrings(al), tc.want)
	case tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !contains(err, tc.errText)):
		t.Errorf("%s: got %v (%v), want %v with %q", tc.name, al.IPs, err, tc.wantErr, tc.errText)
	}
}

func with(r ipam.Request, edit func(*ipam.Request)) ipam.Request {
	edit(&r)
	return r
}

func TestAllocateAuto(t *testing.T) {
	manual := ipam.Pool{Name: "manual", Addresses: []string{"10.9.0.0/24"}}
	low := auto("low", "10.1.0.0/24")
	low.Priority = 10
	high := auto("high", "10.2.0.0/24")
	high.Priority = 1
	buggy := auto("buggy", "10.0.0.255-10.0.1.1")
	buggy.AvoidBuggyIPs = true
	onlyProd := auto("prod", "10.3.0.0/24")
	onlyProd.NamespaceSelector = func(l map[string]string) bool { return l["env"] == "prod" }
	onlyWeb := auto("web", "10.4.0.0/24")
	onlyWeb.ServiceSelector = func(l map[string]string) bool { return l["app"] == "web" }

	for _, tc := range []allocCase{
		{name: "first address", pools: []ipam.Pool{auto("a", "10.0.0.0/30")}, req: v4("ns/a"), want: "10.0.0.0"},
		{name: "next free", pools: []ipam.Pool{auto("a", "10.0.0.0/30")}, before: []ipam.Request{v4("ns/a")}, req: v4("ns/b"), want: "10.0.0.1"},
		{name: "lower priority number wins", pools: []ipam.Pool{low, high}, req: v4("ns/a"), want: "10.2.0.0"},
		{name: "auto-assign off is skipped", pools: []ipam.Pool{manual, auto("a", "10.0.0.0/30")}, req: v4("ns/a"), want: "10.0.0.0"},
		{name: "named pool may be manual", pools: []ipam.Pool{manual, auto("a", "10.0.0.0/30")}, req: with(v4("ns/a"), func(r *ipam.Request) { r.Pool = "manual" }), want: "10.9.0.0"},
		{name: "avoid buggy skips .255 and .0", pools: []ipam.Pool{buggy}, req: v4("ns/a"), want: "10.0.1.1"},
		{name: "namespace selector", pools: []ipam.Pool{onlyProd, low}, req: with(v4("ns/a"), func(r *ipam.Request) { r.NamespaceLabels = map[string]string{"env": "prod"} }), want: "10.3.0.0"},
		{name: "namespace selector excludes", pools: []ipam.Pool{onlyProd, low}, req: v4("ns/a"), want: "10.1.0.0"},
		{name: "service selector", pools: []ipam.Pool{onlyWeb}, req: with(v4("ns/a"), func(r *ipam.Request) { r.Labels = map[string]string{"app": "web"} }), want: "10.4.0.0"},
		{name: "second pool when first is full", pools: []ipam.Pool{auto("a", "10.0.0.0/32"), auto("b", "10.0.1.0/32")}, before: []ipam.Request{v4("ns/a")}, req: v4("ns/b"), want: "10.0.1.0"},

		{name: "exhausted names the pools", pools: []ipam.Pool{auto("a", "10.0.0.0/32"), auto("b", "10.0.1.0/32")}, before: []ipam.Request{v4("ns/a"), v4("ns/b")}, req: v4("ns/c"),
			wantErr: ipam.ErrExhausted, errText: "no free IPv4 address for ns/c: pool(s) a, b full"},
		{name: "exhausted with buggy IPs skipped", pools: []ipam.Pool{buggy}, before: []ipam.Request{v4("ns/a")}, req: v4("ns/b"), wantErr: ipam.ErrExhausted, errText: "pool(s) buggy full"},
		{name: "no pool selects", pools: []ipam.Pool{onlyProd}, req: v4("ns/a"), wantErr: ipam.ErrNoPool, errText: "no IPv4 address for ns/a: no auto-assign pool with IPv4 addresses selects it"},
		{name: "only manual pools", pools: []ipam.Pool{manual}, req: v4("ns/a"), wantErr: ipam.ErrNoPool},
		{name: "named pool does not select", pools: []ipam.Pool{onlyProd}, req: with(v4("ns/a"), func(r *ipam.Request) { r.Pool = "prod" }), wantErr: ipam.ErrNoPool, errText: "pool prod does not select it"},
		{name: "named pool lacks the family", pools: []ipam.Pool{low}, req: with(v4("ns/a"), func(r *ipam.Request) { r.Pool = "low"; r.Families = []ipam.Family{ipam.IPv6} }), wantErr: ipam.ErrNoPool, errText: "pool low has no IPv6 addresses"},
		{name: "unknown pool", pools: []ipam.Pool{low}, req: with(v4("ns/a"), func(r *ipam.Request) { r.Pool = "nope" }), wantErr: ipam.ErrUnknownPool, errText: `ns/a asks for pool "nope", which does not exist`},
		{name: "no families", pools: []ipam.Pool{low}, req: ipam.Request{Service: svc("ns/a")}, wantErr: ipam.ErrInvalid, errText: "0 IP families"},
	} {
		tc.run(t)
	}
}

func TestAllocateRequested(t *testing.T) {
	pools := []ipam.Pool{auto("a", "10.0.0.0/24"), {Name: "manual", Addresses: []string{"10.9.0.0/24", "fd09::/120"}}}
	want := func(key string, addrs ...string) ipam.Request {
		return with(v4(key), func(r *ipam.Request) { r.IPs = ips(addrs...) })
	}
	dual := func(r ipam.Request, p ipam.FamilyPolicy) ipam.Request {
		r.Families, r.Policy = []ipam.Family{ipam.IPv4, ipam.IPv6}, p
		return r
	}

	for _, tc := range []allocCase{
		{name: "free", pools: pools, req: want("ns/a", "10.0.0.5"), want: "10.0.0.5"},
		{name: "in a manual pool", pools: pools, req: want("ns/a", "10.9.0.5"), want: "10.9.0.5"},
		{name: "in the named pool", pools: pools, req: with(want("ns/a", "10.9.0.5"), func(r *ipam.Request) { r.Pool = "manual" }), want: "10.9.0.5"},
		{name: "dual-stack pair", pools: pools, req: dual(want("ns/a", "fd09::1", "10.9.0.1"), ipam.RequireDualStack), want: "10.9.0.1,fd09::1"},
		{name: "prefer dual-stack with one IP keeps to it", pools: pools, req: dual(want("ns/a", "fd09::1"), ipam.PreferDualStack), want: "fd09::1"},

		{name: "taken, no key", pools: pools, before: []ipam.Request{want("default/web", "10.0.0.5")}, req: want("ns/a", "10.0.0.5"),
			wantErr: ipam.ErrInUse, errText: "10.0.0.5 is used by default/web, and a service without a sharing key never shares"},
		{name: "taken, other key", pools: pools, before: []ipam.Request{with(want("default/web", "10.0.0.5"), func(r *ipam.Request) { r.SharingKey = "y" })},
			req: with(want("ns/a", "10.0.0.5"), func(r *ipam.Request) { r.SharingKey = "x" }), wantErr: ipam.ErrInUse, errText: "10.0.0.5 is used by default/web, which does not share key x"},
		{name: "outside every pool", pools: pools, req: want("ns/a", "10.7.0.1"), wantErr: ipam.ErrOutsidePools, errText: "10.7.0.1 is outside pool(s) a, manual"},
		{name: "outside the named pool", pools: pools, req: with(want("ns/a", "10.0.0.5"), func(r *ipam.Request) { r.Pool = "manual" }), wantErr: ipam.ErrOutsidePools, errText: "10.0.0.5 is outside pool(s) manual"},
		{name: "buggy IP is outside its pool", pools: []ipam.Pool{{Name: "b", Addresses: []string{"10.0.0.0/24"}, AvoidBuggyIPs: true}}, req: want("ns/a", "10.0.0.255"), wantErr: ipam.ErrOutsidePools},
		{name: "pool does not select", pools: []ipam.Pool{{Name: "sel", Addresses: []string{"10.0.0.0/24"}, ServiceSelector: func(map[string]string) bool { return false }}},
			req: want("ns/a", "10.0.0.5"), wantErr: ipam.ErrNoPool, errText: "pool sel, which holds 10.0.0.5, does not select it"},
		{name: "family not wanted", pools: pools, req: want("ns/a", "fd09::1"), wantErr: ipam.ErrInvalid, errText: "requested fd09::1 is IPv6, but the service takes [IPv4]"},
		{name: "two of a family", pools: pools, req: dual(want("ns/a", "10.0.0.1", "10.0.0.2"), ipam.PreferDualStack), wantErr: ipam.ErrInvalid, errText: "more than one IPv4 address requested"},
		{name: "require dual-stack with one IP", pools: pools, req: dual(want("ns/a", "10.0.0.1"), ipam.RequireDualStack), wantErr: ipam.ErrInvalid, errText: "RequireDualStack needs a requested IP of each family"},
		{name: "prefer dual-stack, one requested IP taken", pools: pools, before: []ipam.Request{want("ns/b", "10.9.0.1")}, req: dual(want("ns/a", "10.9.0.1", "fd09::1"), ipam.PreferDualStack), wantErr: ipam.ErrInUse},
	} {
		tc.run(t)
	}
}

func TestAllocateDualStack(t *testing.T) {
	dual := auto("dual", "10.0.0.0/30", "fd00::/126")
	only4 := auto("only4", "10.0.0.0/30")
	families := func(p ipam.FamilyPolicy, f ...ipam.Family) ipam.Request {
		return ipam.Request{Service: svc("ns/a"), Families: f, Policy: p}
	}

	for _, tc := range []allocCase{
		{name: "single stack takes the first family", pools: []ipam.Pool{dual}, req: families(ipam.SingleStack, ipam.IPv6, ipam.IPv4), want: "fd00::"},
		{name: "require both, IPv6 primary", pools: []ipam.Pool{dual}, req: families(ipam.RequireDualStack, ipam.IPv6, ipam.IPv4), want: "fd00::,10.0.0.0"},
		{name: "prefer both gets both", pools: []ipam.Pool{dual}, req: families(ipam.PreferDualStack, ipam.IPv4, ipam.IPv6), want: "10.0.0.0,fd00::"},
		{name: "prefer both settles for one", pools: []ipam.Pool{only4}, req: families(ipam.PreferDualStack, ipam.IPv4, ipam.IPv6), want: "10.0.0.0"},
		{name: "prefer both settles for the secondary", pools: []ipam.Pool{auto("only6", "fd00::/126")}, req: families(ipam.PreferDualStack, ipam.IPv4, ipam.IPv6), want: "fd00::"},
		{name: "require both fails", pools: []ipam.Pool{only4}, req: families(ipam.RequireDualStack, ipam.IPv4, ipam.IPv6), wantErr: ipam.ErrNoPool, errText: "no IPv6 address for ns/a"},
		{name: "prefer both, neither", pools: []ipam.Pool{auto("x", "fd00::/126")}, req: families(ipam.PreferDualStack, ipam.IPv4), wantErr: ipam.ErrNoPool},
		{name: "require both with one family listed", pools: []ipam.Pool{dual}, req: families(ipam.RequireDualStack, ipam.IPv4), wantErr: ipam.ErrInvalid, errText: "RequireDualStack needs both IP families"},
		{name: "family listed twice", pools: []ipam.Pool{dual}, req: families(ipam.PreferDualStack, ipam.IPv4, ipam.IPv4), wantErr: ipam.ErrInvalid, errText: "listed twice"},
	} {
		tc.run(t)
	}
}
