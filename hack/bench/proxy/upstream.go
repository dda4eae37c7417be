package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// The upstreams are minimal HTTP/1.1 responders, cheaper per request than
// net/http, so that the proxies, not the servers, set the pace. A client
// that starts with "BULK" gets the bulk protocol instead:
//
//	BULK-DOWN <n>\n  the server sends n bytes and closes;
//	BULK-UP <n>\n    the client sends n bytes, the server answers "OK\n".
const (
	response      = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"
	closeResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, world\n"
)

func startUpstream() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("upstream: %w", err)
	}

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			go serveConn(c)
		}
	}()

	return ln.Addr().String(), nil
}

func serveConn(c net.Conn) {
	defer c.Close() //nolint:errcheck

	buf := make([]byte, 4096)
	n := 0

	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			return
		}

		n += m

		if bytes.HasPrefix(buf[:n], []byte("BULK")) {
			serveBulk(c, bufio.NewReaderSize(io.MultiReader(bytes.NewReader(buf[:n]), c), 256<<10))

			return
		}

		// Answer every complete request in the buffer; keep a partial one.
		for {
			end := bytes.Index(buf[:n], []byte("\r\n\r\n"))
			if end < 0 {
				break
			}

			req := buf[:end]
			closing := bytes.Contains(req, []byte("Connection: close"))

			resp := response
			if closing {
				resp = closeResponse
			}

			if _, err := io.WriteString(c, resp); err != nil || closing {
				return
			}

			n = copy(buf, buf[end+4:n])
		}

		if n == len(buf) {
			return // not HTTP from wrk
		}
	}
}

var block = bytes.Repeat([]byte("x"), 256<<10)

func serveBulk(c net.Conn, r *bufio.Reader) {
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}

	verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")

	size, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return
	}

	switch verb {
	case "BULK-DOWN":
		for size > 0 {
			k, err := c.Write(block[:min(int64(len(block)), size)])
			if err != nil {
				return
			}

			size -= int64(k)
		}
	case "BULK-UP":
		if drain(r, size) != nil {
			return
		}

		io.WriteString(c, "OK\n") //nolint:errcheck
	}
}

// drain reads and drops size bytes with one large buffer. io.Copy to
// io.Discard would read 8 KiB at a time and make the client the bottleneck.
func drain(r io.Reader, size int64) error {
	buf := make([]byte, 256<<10)

	for size > 0 {
		n, err := r.Read(buf[:min(int64(len(buf)), size)])
		size -= int64(n)

		if err != nil {
			if err == io.EOF && size == 0 {
				return nil
			}

			return err
		}
	}

	return nil
}
