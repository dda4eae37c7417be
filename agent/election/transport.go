package election

import (
	"crypto/tls"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TransportFactory makes the transport of a new Raft node.
type TransportFactory func(s Settings, logOutput io.Writer) (raft.Transport, error)

// TLSTransport is the real transport: TCP with mutual TLS between agents.
func TLSTransport(server, client *tls.Config) TransportFactory {
	return func(s Settings, logOutput io.Writer) (raft.Transport, error) {
		stream, err := newTLSStream(s.Listen, server, client)
		if err != nil {
			return nil, err
		}

		return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  stream,
			MaxPool: 3,
			// An I/O deadline a little past the heartbeat timeout: a frozen peer
			// must not hold a connection for longer than it takes to replace it.
			Timeout: 2 * s.HeartbeatTimeout,
			Logger:  hclog.New(&hclog.LoggerOptions{Name: "raft-net", Level: hclog.Warn, Output: logOutput, JSONFormat: true}),
		}), nil
	}
}
