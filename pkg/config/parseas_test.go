package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAsNamesTheNode(t *testing.T) {
	stubHostname(t)

	const shared = base + `vip:
  addresses: [10.0.0.100]
  link: eth0
  election:
    peers:
      - {name: cp-1, address: "10.0.0.2:50071"}
`
	_, err := Parse([]byte(shared))
	require.ErrorContains(t, err, `must include this node (node.name "test-host")`)

	cfg, err := ParseAs([]byte(shared), "cp-1")
	require.NoError(t, err)
	assert.Equal(t, "cp-1", cfg.Node.Name)

	// A name the file sets stays the agent's, whoever parses it.
	named := strings.Replace(shared, "node:\n", "node:\n  name: cp-1\n", 1)
	cfg, err = ParseAs([]byte(named), "cp-2")
	require.NoError(t, err)
	assert.Equal(t, "cp-1", cfg.Node.Name)
}
