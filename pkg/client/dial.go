package client

import (
	"fmt"
	"net"

	cosiapi "github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/protobuf/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	agentpb "github.com/talos-lb/talos-lb/api/agent/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/pki"

	// Register every resource type with the protobuf codec so the state client decodes them.
	_ "github.com/talos-lb/talos-lb/pkg/resources"
)

// Agent is a connection to one agent.
type Agent struct {
	Endpoint string
	Conn     *grpc.ClientConn
	// State reads the agent's resources (COSI State API).
	State state.State
	API   agentpb.AgentServiceClient
}

// WithDefaultPort appends the agent port to a bare host.
func WithDefaultPort(endpoint string) string {
	return withPort(endpoint, DefaultAgentPort)
}

func withPort(endpoint, port string) string {
	if _, _, err := net.SplitHostPort(endpoint); err == nil {
		return endpoint
	}

	return net.JoinHostPort(endpoint, port)
}

// DialAgent connects lazily to an agent at endpoint (host or host:port).
func DialAgent(endpoint string, c *Context) (*Agent, error) {
	return dial(withPort(endpoint, DefaultAgentPort), c, pki.AgentServerName)
}

// DialController connects lazily to lb-controller at endpoint (host or
// host:port). It serves the same read API as an agent, over its own resources.
func DialController(endpoint string, c *Context) (*Agent, error) {
	return dial(withPort(endpoint, DefaultControllerPort), c, pki.ControllerServerName)
}

func dial(endpoint string, c *Context, serverName string) (*Agent, error) {
	caPEM, certPEM, keyPEM, err := c.PEM()
	if err != nil {
		return nil, err
	}

	tlsConfig, err := pki.ClientTLS(caPEM, certPEM, keyPEM, serverName)
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}

	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", endpoint, err)
	}

	return &Agent{
		Endpoint: endpoint,
		Conn:     conn,
		State:    state.WrapCore(client.NewAdapter(cosiapi.NewStateClient(conn))),
		API:      agentpb.NewAgentServiceClient(conn),
	}, nil
}

// Close closes the connection.
func (a *Agent) Close() error {
	return a.Conn.Close()
}
