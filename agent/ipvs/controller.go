// Package ipvs turns IPVSService resources into kernel IPVS virtual services (with NAT
// forwarding and, when asked, a masquerade rule so replies return through this node) and
// publishes what the kernel runs as IPVSStatus resources.
//
// It owns IPVSStatus, the IPVS services it programmed (see reconciler for the ownership
// rule) and the SNAT implementation's table. It never decides which services should
// exist: that is the job of whoever writes IPVSService (the VIP holder logic). The kernel
// and nftables sit behind the Kernel and SNAT interfaces; their real implementations live
// in the kernel and snat sub-packages.
package ipvs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
	"github.com/talos-lb/talos-lb/pkg/resources"
)

// States of an IPVSStatus.
const (
	StateProgrammed  = "programmed"
	StateIPVSMissing = "ipvs-missing"
	StateInvalid     = "invalid"
	StateFailed      = "failed"
)

// DefaultPollInterval is how often the kernel is re-read without any input change: it
// refreshes connection counts, repairs changes made behind the agent's back, and notices
// an ip_vs module loaded after start.
const DefaultPollInterval = 2 * time.Second

// ServiceController programs IPVSService resources into the kernel and writes IPVSStatus.
type ServiceController struct {
	Kernel  Kernel
	SNAT    SNAT
	Metrics *Metrics
	// PollInterval defaults to DefaultPollInterval.
	PollInterval time.Duration

	// mu keeps Cleanup from running into a reconcile.
	mu  sync.Mutex
	rec *reconciler
	// touched is set once the controller changed anything on the host, so an agent that
	// never balances with IPVS never opens IPVS or nftables at all, not even to clean up.
	touched bool
	// lastReason remembers what was last logged per service, to log changes only.
	lastReason map[resource.ID]string
}

// Name implements controller.Controller.
func (ctrl *ServiceController) Name() string {
	return "ipvs.ServiceController"
}

// Inputs implements controller.Controller.
func (ctrl *ServiceController) Inputs() []controller.Input {
	return []controller.Input{{
		Namespace: resources.IPVSNamespace,
		Type:      resources.IPVSServiceType,
		Kind:      controller.InputWeak,
	}}
}

// Outputs implements controller.Controller.
func (ctrl *ServiceController) Outputs() []controller.Output {
	return []controller.Output{{Type: resources.IPVSStatusType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller.
func (ctrl *ServiceController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	ticker := time.NewTicker(cmp.Or(ctrl.PollInterval, DefaultPollInterval))
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-ticker.C:
		}

		if err := ctrl.reconcile(ctx, r, logger); err != nil {
			return err
		}
	}
}

// wanted is one IPVSService and what became of it in this reconcile.
type wanted struct {
	id   resource.ID
	spec *resourcepb.IPVSServiceSpec
	svc  Service
	// state and err are the outcome; err is nil only when programmed.
	state string
	err   error
}

func (ctrl *ServiceController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	list, err := safe.ReaderListAll[*resources.IPVSService](ctx, r)
	if err != nil {
		return fmt.Errorf("listing IPVS services: %w", err)
	}

	var all []*wanted

	byKey := map[Key]*wanted{}

	// List order is by ID, so of two services with one key the first ID wins, stably.
	for res := range list.All() {
		w := &wanted{id: res.Metadata().ID(), spec: res.TypedSpec().Value}
		all = append(all, w)

		w.svc, w.err = desiredService(w.spec)
		if w.err == nil {
			if first, ok := byKey[w.svc.Key]; ok {
				w.err = fmt.Errorf("same address, port and protocol as IPVSService %s", first.id)
			} else {
				byKey[w.svc.Key] = w
			}
		}

		if w.err != nil {
			w.state = StateInvalid
		}
	}

	current := ctrl.program(byKey, logger)

	r.StartTrackingOutputs()

	reasons := make(map[resource.ID]string, len(all))

	for _, w := range all {
		reasons[w.id] = ctrl.logOutcome(w, logger)

		var kernel Service
		if byKey[w.svc.Key] == w {
			kernel = current[w.svc.Key]
		}

		if err := safe.WriterModify(ctx, r, resources.NewIPVSStatus(w.id), func(res *resources.IPVSStatus) error {
			fillStatus(res.TypedSpec().Value, w, kernel)

			return nil
		}); err != nil {
			return fmt.Errorf("writing IPVS status %s: %w", w.id, err)
		}
	}

	if err := r.CleanupOutputs(ctx, resources.NewIPVSStatus("").Metadata()); err != nil {
		return fmt.Errorf("cleaning up IPVS statuses: %w", err)
	}

	ctrl.lastReason = reasons

	ctrl.Metrics.observe(all, current)

	return nil
}

// program makes kernel and masquerade rules match the valid wanted services, records each
// one's outcome, and returns the kernel's services (with connection counts) by key.
func (ctrl *ServiceController) program(byKey map[Key]*wanted, logger *zap.Logger) map[Key]Service {
	ctrl.mu.Lock()
	defer ctrl.mu.Unlock()

	if ctrl.rec == nil {
		ctrl.rec = &reconciler{kernel: ctrl.Kernel, owned: map[Key]bool{}, onChange: ctrl.Metrics.changed}
	}

	if len(byKey) == 0 {
		if ctrl.touched && ctrl.cleanupLocked(logger) == nil {
			// Everything is gone again: back to not touching the host at all.
			ctrl.touched = false
		}

		return nil
	}

	ctrl.touched = true

	fail := func(state string, err error) map[Key]Service {
		for _, w := range byKey {
			w.state, w.err = state, err
		}

		return nil
	}

	if err := ctrl.Kernel.Check(); err != nil {
		if errors.Is(err, ErrIPVSMissing) {
			ctrl.Metrics.setAvailable(false)

			return fail(StateIPVSMissing, err)
		}

		return fail(StateFailed, err)
	}

	ctrl.Metrics.setAvailable(true)

	want := make(map[Key]Service, len(byKey))
	for k, w := range byKey {
		want[k] = w.svc
	}

	current, failed, err := ctrl.rec.apply(want, logger)
	if err != nil {
		logger.Warn("removing IPVS services no longer wanted", zap.Error(err))
	}

	incomplete := err != nil || len(failed) > 0

	var snat []Key

	for k, w := range byKey {
		if w.err = failed[k]; w.err != nil {
			w.state = StateFailed

			continue
		}

		w.state = StateProgrammed

		if w.spec.GetSnat() {
			snat = append(snat, k)
		}
	}

	slices.SortFunc(snat, compareKeys)

	if err := ctrl.SNAT.Sync(snat); err != nil {
		incomplete = true
		err = fmt.Errorf("masquerade rules: %w", err)

		for _, k := range snat {
			byKey[k].state, byKey[k].err = StateFailed, err
		}
	}

	if incomplete {
		ctrl.Metrics.failed()
	}

	return current
}

// Cleanup removes the IPVS services this controller programmed and its masquerade rules.
// The daemon calls it on shutdown, after the controller runtime has stopped.
func (ctrl *ServiceController) Cleanup(logger *zap.Logger) error {
	ctrl.mu.Lock()
	defer ctrl.mu.Unlock()

	if !ctrl.touched {
		return nil
	}

	err := ctrl.cleanupLocked(logger)
	if err == nil {
		ctrl.touched = false
	}

	return err
}

func (ctrl *ServiceController) cleanupLocked(logger *zap.Logger) error {
	var errs []error

	if len(ctrl.rec.owned) > 0 {
		if err := ctrl.rec.removeOwned(logger); err != nil {
			errs = append(errs, err)
		}
	}

	if err := ctrl.SNAT.Sync(nil); err != nil {
		errs = append(errs, fmt.Errorf("removing masquerade rules: %w", err))
	}

	if len(errs) == 0 {
		logger.Info("IPVS services and masquerade rules removed")
	}

	return errors.Join(errs...)
}

// logOutcome logs a service's outcome when it differs from the last reconcile's, and
// returns it for the next comparison.
func (ctrl *ServiceController) logOutcome(w *wanted, logger *zap.Logger) string {
	reason := ""
	if w.err != nil {
		reason = w.err.Error()
	}

	if last, seen := ctrl.lastReason[w.id]; seen && last == reason {
		return reason
	}

	if w.err != nil {
		logger.Warn("IPVS service not programmed", zap.String("id", w.id), zap.String("state", w.state), zap.Error(w.err))
	} else {
		logger.Info("IPVS service programmed", zap.String("id", w.id), zap.Stringer("service", w.svc.Key))
	}

	return reason
}

func fillStatus(s *resourcepb.IPVSStatusSpec, w *wanted, kernel Service) {
	s.Address = w.spec.GetAddress()
	s.Port = w.spec.GetPort()
	s.Protocol = TCP.String()
	s.Scheduler = w.svc.Scheduler
	s.Snat = w.spec.GetSnat()
	s.State = w.state
	s.Reason = ""

	if w.err != nil {
		s.Reason = w.err.Error()
	}

	s.RealServers = nil
	s.Serving = 0
	s.ActiveConnections = 0
	s.InactiveConnections = 0

	real := slices.Clone(kernel.RealServers)
	sortRealServers(real)

	for _, rs := range real {
		s.RealServers = append(s.RealServers, &resourcepb.IPVSRealServerStatus{
			Address:             rs.Address.Addr().String(),
			Port:                uint32(rs.Address.Port()),
			Weight:              rs.Weight,
			ActiveConnections:   uint64(rs.ActiveConnections),
			InactiveConnections: uint64(rs.InactiveConnections),
		})

		if rs.Weight > 0 {
			s.Serving++
		}

		s.ActiveConnections += uint64(rs.ActiveConnections)
		s.InactiveConnections += uint64(rs.InactiveConnections)
	}
}
