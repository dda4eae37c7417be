// Package snat is the real ipvs.SNAT: nftables masquerade rules that rewrite the source of
// connections IPVS forwards to a real server, so the real server answers this node (which
// puts the VIP back) instead of the client directly.
//
// It owns the inet table TableName of the agent's network namespace, and nothing else: it
// reads other tables' names only to find its own, never changes them (kube-proxy's, Talos's
// firewall), and deletes its table when no rule is wanted.
package snat

import (
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/talos-lb/talos-lb/agent/ipvs"
)

const (
	// TableName names our table, of family inet (IPv4 and IPv6).
	TableName = "talos-lb"
	// ChainName is the base chain, hooked at postrouting with the srcnat priority.
	ChainName = "ipvs-masquerade"
	// ruleTag starts the user data of our rules; the rest is the service key, so rules are
	// matched to services without comparing expressions. v1 changes when the expressions do,
	// and an upgraded agent then replaces the old rules.
	ruleTag = "talos-lb/v1 "
)

// Masquerade programs one rule per IPVS service that wants SNAT:
//
//	meta nfproto ipv4 meta l4proto tcp ct original ip daddr VIP ct original proto-dst PORT ip daddr != VIP counter masquerade
//
// The conntrack original tuple still names the VIP after IPVS rewrote the destination, so
// the rule catches exactly the connections IPVS forwarded to a real server ("ip daddr !=
// VIP" leaves out any that were delivered locally).
type Masquerade struct {
	mu sync.Mutex
}

// Sync implements ipvs.SNAT.
func (m *Masquerade) Sync(keys []ipvs.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer conn.CloseLasting() //nolint:errcheck // nothing left to lose

	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("listing inet tables: %w", err)
	}

	var table *nftables.Table

	for _, t := range tables {
		if t.Name == TableName {
			table = t
		}
	}

	if len(keys) == 0 {
		if table == nil {
			return nil
		}

		conn.DelTable(table)

		if err := conn.Flush(); err != nil {
			return fmt.Errorf("deleting table inet %s: %w", TableName, err)
		}

		return nil
	}

	var chain *nftables.Chain

	if table == nil {
		table = conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
	} else if chain, err = findChain(conn, table); err != nil {
		return err
	}

	have := map[string]*nftables.Rule{}

	if chain == nil {
		chain = conn.AddChain(&nftables.Chain{
			Name:     ChainName,
			Table:    table,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  nftables.ChainHookPostrouting,
			Priority: nftables.ChainPriorityNATSource,
		})
	} else {
		rules, err := conn.GetRules(table, chain)
		if err != nil {
			return fmt.Errorf("listing rules of inet %s %s: %w", TableName, ChainName, err)
		}

		for _, r := range rules {
			if _, dup := have[string(r.UserData)]; dup {
				if err := conn.DelRule(r); err != nil {
					return fmt.Errorf("deleting a duplicate rule: %w", err)
				}

				continue
			}

			have[string(r.UserData)] = r
		}
	}

	for _, k := range keys {
		tag := ruleTag + k.String()
		if _, ok := have[tag]; ok {
			delete(have, tag)

			continue
		}

		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: masquerade(k), UserData: []byte(tag)})
	}

	for _, r := range have {
		if err := conn.DelRule(r); err != nil {
			return fmt.Errorf("deleting rule %q: %w", r.UserData, err)
		}
	}

	if err := conn.Flush(); err != nil {
		return fmt.Errorf("programming table inet %s: %w", TableName, err)
	}

	return nil
}

func findChain(conn *nftables.Conn, table *nftables.Table) (*nftables.Chain, error) {
	chains, err := conn.ListChainsOfTableFamily(table.Family)
	if err != nil {
		return nil, fmt.Errorf("listing inet chains: %w", err)
	}

	for _, c := range chains {
		if c.Table.Name == table.Name && c.Name == ChainName {
			return c, nil
		}
	}

	return nil, nil
}

// masquerade is the rule of one service; see Masquerade.
func masquerade(k ipvs.Key) []expr.Any {
	vip := k.Address.AsSlice()

	nfproto, ctDaddr, daddrOffset := byte(unix.NFPROTO_IPV4), expr.CtKeyDSTIP, uint32(16)
	if k.Address.Is6() {
		nfproto, ctDaddr, daddrOffset = unix.NFPROTO_IPV6, expr.CtKeyDSTIP6, 24
	}

	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(k.Protocol)}},
		&expr.Ct{Key: ctDaddr, Direction: 0, Register: 1}, // 0: original direction
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: vip},
		&expr.Ct{Key: expr.CtKeyPROTODST, Direction: 0, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(k.Port)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOffset, Len: uint32(len(vip))},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: vip},
		&expr.Counter{},
		&expr.Masq{},
	}
}
