package member

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/memberlist"
)

// LoadKeys reads a gossip key file: base64 keys of 16, 24 or 32 bytes
// (AES-128/192/256-GCM), one per line; blank lines and lines starting with #
// are ignored. The first key encrypts; every key decrypts, so a key is
// rotated by adding the new one second on every node, then moving it first,
// then removing the old one.
func LoadKeys(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading gossip keys: %w", err)
	}

	keys, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("gossip keys in %s: %w", path, err)
	}

	return keys, nil
}

// ParseKeys parses the content of a key file, as LoadKeys.
func ParseKeys(data []byte) ([][]byte, error) {
	var keys [][]byte

	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}

		key, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64", i+1)
		}

		if err := memberlist.ValidateKey(key); err != nil {
			return nil, fmt.Errorf("line %d: a key must be 16, 24 or 32 bytes, got %d", i+1, len(key))
		}

		keys = append(keys, key)
	}

	if len(keys) == 0 {
		return nil, errors.New("no key")
	}

	return keys, nil
}

// keyring puts the first key first.
func keyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil //nolint:nilnil // no keys: no encryption
	}

	return memberlist.NewKeyring(keys[1:], keys[0])
}
