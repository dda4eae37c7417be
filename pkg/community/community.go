// Package community parses BGP communities as operators write them:
// "ASN:value" or a well-known name, and "global:local1:local2" large ones.
package community

import (
	"fmt"
	"strconv"
	"strings"
)

// wellKnown are the RFC 1997 community names operators write.
var wellKnown = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"blackhole":           0xFFFF029A,
}

// Parse reads "ASN:value" (each 0-65535) or a well-known name.
func Parse(s string) (uint32, error) {
	if v, ok := wellKnown[strings.ToLower(s)]; ok {
		return v, nil
	}

	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want ASN:value or a well-known name", s)
	}

	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)

	if errA != nil || errB != nil {
		return 0, fmt.Errorf("community %q: both halves must be 0-65535", s)
	}

	return uint32(a)<<16 | uint32(b), nil
}

// ParseLarge reads "global:local1:local2" (each 0-4294967295).
func ParseLarge(s string) ([3]uint32, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return [3]uint32{}, fmt.Errorf("large community %q: want global:local1:local2", s)
	}

	var out [3]uint32

	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return [3]uint32{}, fmt.Errorf("large community %q: each part must be 0-4294967295", s)
		}

		out[i] = uint32(v)
	}

	return out, nil
}
