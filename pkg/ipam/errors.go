package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sentinels for errors.Is; the typed errors below unwrap to them and carry
// the details for errors.As.
var (
	ErrInvalid      = errors.New("invalid request")
	ErrPoolConfig   = errors.New("invalid pool configuration")
	ErrUnknownPool  = errors.New("unknown pool")
	ErrOutsidePools = errors.New("IP outside the pools")
	ErrNoPool       = errors.New("no pool serves the service")
	ErrInUse        = errors.New("IP in use")
	ErrExhausted    = errors.New("pools exhausted")
)

// UnknownPoolError says a Request names a pool that does not exist.
type UnknownPoolError struct {
	Service ServiceKey
	Pool    string
}

func (e *UnknownPoolError) Error() string {
	return fmt.Sprintf("%s asks for pool %q, which does not exist", e.Service, e.Pool)
}

func (e *UnknownPoolError) Unwrap() error { return ErrUnknownPool }

// OutsidePoolsError says a requested IP lies in none of the pools it may come from.
type OutsidePoolsError struct {
	IP    netip.Addr
	Pools []string
}

func (e *OutsidePoolsError) Error() string {
	if len(e.Pools) == 0 {
		return fmt.Sprintf("%s is outside every pool: there are no pools", e.IP)
	}

	return fmt.Sprintf("%s is outside pool(s) %s", e.IP, strings.Join(e.Pools, ", "))
}

func (e *OutsidePoolsError) Unwrap() error { return ErrOutsidePools }

// NoPoolError says no pool may serve a service one of its families.
type NoPoolError struct {
	Service ServiceKey
	Family  Family
	Reason  string
}

func (e *NoPoolError) Error() string {
	return fmt.Sprintf("no %s address for %s: %s", e.Family, e.Service, e.Reason)
}

func (e *NoPoolError) Unwrap() error { return ErrNoPool }

// InUseError says an IP is held by a service the requester may not share with.
type InUseError struct {
	IP       netip.Addr
	Holder   ServiceKey
	Key      string // the requester's sharing key
	Collides *Port  // set when the keys match but a port collides
}

func (e *InUseError) Error() string {
	switch {
	case e.Collides != nil:
		return fmt.Sprintf("%s is used by %s, which shares key %s but also serves %s", e.IP, e.Holder, e.Key, e.Collides)
	case e.Key == "":
		return fmt.Sprintf("%s is used by %s, and a service without a sharing key never shares", e.IP, e.Holder)
	default:
		return fmt.Sprintf("%s is used by %s, which does not share key %s", e.IP, e.Holder, e.Key)
	}
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// ExhaustedError says every pool that could serve a family is full.
type ExhaustedError struct {
	Service ServiceKey
	Family  Family
	Pools   []string
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("no free %s address for %s: pool(s) %s full", e.Family, e.Service, strings.Join(e.Pools, ", "))
}

func (e *ExhaustedError) Unwrap() error { return ErrExhausted }

// ClaimError says Assign did not load a Service's IPs from its status.
type ClaimError struct {
	Service ServiceKey
	Err     error
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("status of %s not loaded: %v", e.Service, e.Err)
}

func (e *ClaimError) Unwrap() error { return e.Err }
