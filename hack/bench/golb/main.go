// Command golb runs go-loadbalancer, the library behind Talos's KubePrism,
// as a plain TCP proxy for the proxy benchmark. It lives in its own module so
// the library never becomes a dependency of talos-lb.
package main

import (
	"flag"
	"log"
	"strings"
	"time"

	"github.com/siderolabs/go-loadbalancer/loadbalancer"
	"github.com/siderolabs/go-loadbalancer/upstream"
	"go.uber.org/zap"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7445", "address to listen on")
	upstreams := flag.String("upstreams", "", "comma-separated host:port list")
	flag.Parse()

	// The settings Talos gives KubePrism.
	lb := &loadbalancer.TCP{
		Logger:          zap.NewNop(),
		DialTimeout:     15 * time.Second,
		KeepAlivePeriod: time.Second,
		TCPUserTimeout:  30 * time.Second,
	}

	if err := lb.AddRoute(*listen, strings.SplitSeq(*upstreams, ","),
		upstream.WithHealthcheckInterval(time.Second),
		upstream.WithHealthcheckTimeout(time.Second),
	); err != nil {
		log.Fatal(err)
	}

	if err := lb.Start(); err != nil {
		log.Fatal(err)
	}

	if err := lb.Wait(); err != nil {
		log.Fatal(err)
	}
}
