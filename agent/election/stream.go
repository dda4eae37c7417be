package election

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/talos-lb/talos-lb/pkg/pki"
)

// tlsStream is Raft's stream layer over mutual TLS: both ends present the
// agent certificate, and each refuses a peer whose certificate is not an
// agent's. Election traffic decides who holds the VIP, so it gets no less
// protection than the API.
type tlsStream struct {
	net.Listener

	client *tls.Config
}

// newTLSStream listens on addr. server must require client certificates of
// the cluster CA (pki.ServerTLS); client presents the agent certificate.
func newTLSStream(addr string, server, client *tls.Config) (*tlsStream, error) {
	server = server.Clone()
	server.NextProtos = nil
	server.VerifyConnection = requireAgentPeer

	client = client.Clone()
	client.NextProtos = nil
	client.VerifyConnection = requireAgentPeer

	ln, err := tls.Listen("tcp", addr, server)
	if err != nil {
		return nil, fmt.Errorf("election listener %s: %w", addr, err)
	}

	return &tlsStream{Listener: ln, client: client}, nil
}

// Dial implements raft.StreamLayer.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}

	conn, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("dialing election peer %s: %w", address, err)
	}

	return conn, nil
}

func requireAgentPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("election peer presented no certificate")
	}

	role, err := pki.RoleOf(cs.PeerCertificates[0])
	if err != nil {
		return err
	}

	if role != pki.RoleAgent {
		return fmt.Errorf("election peer has role %q, only agents take part", role)
	}

	return nil
}
