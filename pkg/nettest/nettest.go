// Package nettest runs the small TCP servers that tests put behind the
// proxy: an accept loop, a handler per connection, and a crash on demand.
// Only tests import it.
package nettest

import (
	"net"
	"sync"
	"testing"
)

// Server accepts on a listener until the test ends or Kill.
type Server struct {
	ln net.Listener

	mu    sync.Mutex
	conns []net.Conn
}

// Serve runs handle for each connection ln accepts, in its own goroutine.
// Connections stay open after handle returns unless it closes them; the
// listener and every connection are closed when the test ends.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) *Server {
	t.Helper()

	s := &Server{ln: ln}

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()

			go handle(c)
		}
	}()

	t.Cleanup(s.Kill)

	return s
}

// Listen serves on a fresh loopback port.
func Listen(t testing.TB, handle func(net.Conn)) *Server {
	t.Helper()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}

	return Serve(t, ln, handle)
}

// Addr is the listening address.
func (s *Server) Addr() string {
	return s.ln.Addr().String()
}

// Kill is a crash: the port refuses from now on, and every connection gets
// a reset instead of an orderly close.
func (s *Server) Kill() {
	s.ln.Close() //nolint:errcheck // a second Kill finds it closed

	s.mu.Lock()
	defer s.mu.Unlock()

	for _, c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) //nolint:errcheck // best effort before the close
		}

		c.Close() //nolint:errcheck
	}

	s.conns = nil
}
