// Package standin runs, inside a lab node's namespace, what stands in for a
// control-plane node's API server: TLS on :6443 serving /readyz (whose answer
// the test switches) and a plain TCP "whoami" port that answers the node's
// name, so a client can tell which node a VIP led it to.
package standin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/talos-lb/talos-lb/integration/lab"
	"github.com/talos-lb/talos-lb/pkg/pki"
)

// Ports the stand-ins listen on, on every address of the node.
const (
	APIPort    = 6443
	WhoamiPort = 7000
)

// APIServer is one node's stand-in.
type APIServer struct {
	Host  *lab.Host
	ready atomic.Bool
	srv   *http.Server
	who   net.Listener
}

// Start serves the stand-in in h's namespace until ctx ends; /readyz starts healthy.
func Start(ctx context.Context, h *lab.Host) (*APIServer, error) {
	ca, err := pki.NewCA("stand-in", time.Hour)
	if err != nil {
		return nil, err
	}

	kp, err := ca.Issue(pki.IssueOptions{CommonName: "kube-apiserver", Role: pki.RoleAgent, Validity: time.Hour})
	if err != nil {
		return nil, err
	}

	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("stand-in certificate: %w", err)
	}

	api, err := h.Listen(ctx, "tcp", fmt.Sprintf("[::]:%d", APIPort))
	if err != nil {
		return nil, fmt.Errorf("stand-in API listener on %s: %w", h.Name, err)
	}

	who, err := h.Listen(ctx, "tcp", fmt.Sprintf("[::]:%d", WhoamiPort))
	if err != nil {
		api.Close() //nolint:errcheck

		return nil, fmt.Errorf("stand-in whoami listener on %s: %w", h.Name, err)
	}

	s := &APIServer{Host: h, who: who}
	s.ready.Store(true)

	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.ready.Load() {
			fmt.Fprint(w, "ok")

			return
		}

		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "[-]etcd failed: stand-in switched off")
	})

	// Probes that close right after the handshake are normal here, not worth a log line.
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}

	go s.srv.ServeTLS(api, "", "") //nolint:errcheck // ends with Close
	go s.serveWhoami()

	go func() {
		<-ctx.Done()
		s.Close()
	}()

	return s, nil
}

func (s *APIServer) serveWhoami() {
	for {
		c, err := s.who.Accept()
		if err != nil {
			return
		}

		fmt.Fprintln(c, s.Host.Name) //nolint:errcheck
		c.Close()                    //nolint:errcheck
	}
}

// SetReady switches /readyz between 200 and 500.
func (s *APIServer) SetReady(ok bool) {
	s.ready.Store(ok)
}

// Close stops both listeners.
func (s *APIServer) Close() {
	s.srv.Close() //nolint:errcheck
	s.who.Close() //nolint:errcheck
}

// Whoami connects from the client host to addr's whoami port and returns the
// name of the node that answered.
func Whoami(ctx context.Context, from *lab.Host, addr net.IP, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	conn, err := from.Dial(ctx, "tcp", net.JoinHostPort(addr.String(), fmt.Sprint(WhoamiPort)))
	if err != nil {
		return "", err
	}
	defer conn.Close() //nolint:errcheck

	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline) //nolint:errcheck
	}

	b, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}

	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", errors.New("whoami: empty answer")
	}

	return name, nil
}

// StartAll starts a stand-in on every host, by host name.
func StartAll(ctx context.Context, hosts []*lab.Host) (map[string]*APIServer, error) {
	out := map[string]*APIServer{}

	for _, h := range hosts {
		s, err := Start(ctx, h)
		if err != nil {
			return nil, err
		}

		out[h.Name] = s
	}

	return out, nil
}
