package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/talos-lb/talos-lb/hack/bench/stats"
)

var (
	reqsPerSec = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reqsTotal  = regexp.MustCompile(`(\d+) requests in`)
	wrkErrors  = regexp.MustCompile(`(Socket errors:.*|Non-2xx or 3xx responses:.*)`)
)

// wrkResult is one wrk run.
type wrkResult struct {
	rps      float64
	requests int64
	errors   string
}

// runWrk drives HTTP load at addr; closing asks for a new connection per request.
func runWrk(ctx context.Context, addr string, conns int, d time.Duration, closing bool) (wrkResult, error) {
	args := []string{"-t1", "-c" + strconv.Itoa(conns), "-d" + d.String()}
	if closing {
		args = append(args, "-H", "Connection: close")
	}

	out, err := exec.CommandContext(ctx, "wrk", append(args, "http://"+addr+"/")...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}

	m, n := reqsPerSec.FindSubmatch(out), reqsTotal.FindSubmatch(out)
	if m == nil || n == nil {
		return wrkResult{}, fmt.Errorf("wrk output not understood:\n%s", out)
	}

	var r wrkResult

	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)        //nolint:errcheck // the regexp matched a number
	r.requests, _ = strconv.ParseInt(string(n[1]), 10, 64) //nolint:errcheck

	if e := wrkErrors.FindAll(out, -1); e != nil {
		r.errors = string(slices.Concat(e...))
	}

	return r, nil
}

// bulk moves size bytes over one connection, down (upstream to client) or up,
// and returns GB/s.
func bulk(addr string, size int64, down bool) (float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}

	defer c.Close() //nolint:errcheck

	start := time.Now()

	if down {
		if _, err := fmt.Fprintf(c, "BULK-DOWN %d\n", size); err != nil {
			return 0, err
		}

		if err := drain(c, size); err != nil {
			return 0, fmt.Errorf("bulk down: %w", err)
		}
	} else {
		if _, err := fmt.Fprintf(c, "BULK-UP %d\n", size); err != nil {
			return 0, err
		}

		for left := size; left > 0; {
			k, err := c.Write(block[:min(int64(len(block)), left)])
			if err != nil {
				return 0, err
			}

			left -= int64(k)
		}

		ok, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || ok != "OK\n" {
			return 0, fmt.Errorf("bulk up: %q, %w", ok, err)
		}
	}

	return float64(size) / time.Since(start).Seconds() / 1e9, nil
}

// firstByte measures n sequential connect + request + first response byte
// round trips and returns p50 and p99.
func firstByte(addr string, n int) (p50, p99 time.Duration, err error) {
	samples := make([]time.Duration, 0, n)
	buf := make([]byte, 512)

	for range n {
		start := time.Now()

		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, 0, err
		}

		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"); err != nil {
			c.Close() //nolint:errcheck

			return 0, 0, err
		}

		if _, err := c.Read(buf); err != nil {
			c.Close() //nolint:errcheck

			return 0, 0, err
		}

		samples = append(samples, time.Since(start))

		c.Close() //nolint:errcheck
	}

	return pct(samples, 50), pct(samples, 99), nil
}

func pct(d []time.Duration, p float64) time.Duration {
	return time.Duration(stats.Pct(d, p) * float64(time.Millisecond))
}
