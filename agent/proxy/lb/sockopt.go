package lb

import (
	"time"

	"golang.org/x/sys/unix"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// socketOptions are what both legs of every connection get: keepalive, so an
// idle connection to a vanished peer is noticed, and TCP_USER_TIMEOUT, so
// data stuck unacknowledged (a black-holed upstream) ends it too.
type socketOptions struct {
	keepalive   time.Duration
	userTimeout time.Duration
}

func sockOpts(spec *resourcepb.ProxyConfigSpec) socketOptions {
	return socketOptions{keepalive: spec.GetKeepalive().AsDuration(), userTimeout: spec.GetUserTimeout().AsDuration()}
}

func (o socketOptions) apply(fd int) error {
	type opt struct{ level, name, value int }

	var opts []opt

	if o.keepalive > 0 {
		secs := max(int(o.keepalive/time.Second), 1)
		opts = append(opts,
			opt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			opt{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
			opt{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs},
		)
	}

	// With a user timeout the kernel ignores the keepalive probe count and
	// gives up once the timeout passed, which saves a system call per dial.
	if o.userTimeout > 0 {
		opts = append(opts, opt{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.userTimeout / time.Millisecond)})
	} else if o.keepalive > 0 {
		opts = append(opts, opt{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3})
	}

	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			return err
		}
	}

	return nil
}
