package member

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKeys(t *testing.T) {
	k16 := "MDEyMzQ1Njc4OWFiY2RlZg=="                     // 0123456789abcdef
	k32 := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // twice that

	keys, err := ParseKeys([]byte("# rotation in progress\n" + k32 + "\n\n  " + k16 + "  \n"))
	require.NoError(t, err)
	require.Len(t, keys, 2)
	assert.Equal(t, "0123456789abcdef0123456789abcdef", string(keys[0]), "the first line encrypts")
	assert.Equal(t, "0123456789abcdef", string(keys[1]))

	kr, err := keyring(keys)
	require.NoError(t, err)
	assert.Equal(t, keys[0], kr.GetPrimaryKey())
	assert.Len(t, kr.GetKeys(), 2)

	for data, want := range map[string]string{
		"":                   "no key",
		"# only a comment\n": "no key",
		"not base64!":        "line 1: not base64",
		"\nMDEyMzQ1Njc=":     "line 2: a key must be 16, 24 or 32 bytes, got 8",
	} {
		_, err := ParseKeys([]byte(data))
		assert.EqualError(t, err, want, data)
	}
}

func TestLoadKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	require.NoError(t, os.WriteFile(path, []byte("MDEyMzQ1Njc4OWFiY2RlZg==\n"), 0o600))

	keys, err := LoadKeys(path)
	require.NoError(t, err)
	assert.Len(t, keys, 1)

	_, err = LoadKeys(path + ".missing")
	assert.ErrorContains(t, err, "reading gossip keys")

	require.NoError(t, os.WriteFile(path, []byte("short\n"), 0o600))
	_, err = LoadKeys(path)
	assert.ErrorContains(t, err, path+": line 1")

	kr, err := keyring(nil)
	require.NoError(t, err)
	assert.Nil(t, kr, "no keys, no encryption")
}
