package ipvs

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"go.uber.org/zap"
)

// reconciler applies the difference between the services wanted and the kernel's table.
// It reads only the services it may touch, one by one: a node running kube-proxy in IPVS
// mode can have thousands of others, and they are polled every 2 s.
//
// Ownership rule: the agent touches a kernel service only when its key (address, port,
// protocol) is wanted now, or was programmed by this process and not removed since (owned).
// A service someone else made under a key we are asked for is adopted: changed to what we
// want and owned from then on. Every other service is left alone. Owned lives in memory:
// after a crash the next process knows nothing of the old services, so leftovers stay until
// their key is wanted again (then they are adopted) — Talos restarts the agent in 5 s, and a
// crashed agent's VIP moves to a peer, so leftovers on a node without the VIP see no traffic.
type reconciler struct {
	kernel Kernel
	owned  map[Key]bool
	// onChange counts kernel changes by operation, for the metrics.
	onChange func(op string)
	// changes counts every change made, so apply knows which services to read back.
	changes int
}

func (r *reconciler) changed(op string) {
	r.changes++
	r.onChange(op)
}

// apply makes the kernel run want and forgets owned services no longer wanted. It returns
// the kernel's wanted services as they are afterwards (with connection counts), the error
// of each wanted service that could not be programmed, and the errors of removals.
func (r *reconciler) apply(want map[Key]Service, logger *zap.Logger) (map[Key]Service, map[Key]error, error) {
	var removeErrs []error

	for _, k := range slices.SortedFunc(maps.Keys(r.owned), compareKeys) {
		if _, ok := want[k]; ok {
			continue
		}

		_, exists, err := r.kernel.Service(k)
		if err != nil {
			removeErrs = append(removeErrs, fmt.Errorf("reading IPVS service %s: %w", k, err))

			continue
		}

		if exists {
			if err := r.kernel.DeleteService(k); err != nil {
				// Still owned: the next reconcile tries again.
				removeErrs = append(removeErrs, fmt.Errorf("removing IPVS service %s: %w", k, err))

				continue
			}

			r.changed("delete_service")
			logger.Info("IPVS service removed", zap.Stringer("service", k))
		}

		delete(r.owned, k)
	}

	current := map[Key]Service{}
	failed := map[Key]error{}

	for _, k := range slices.SortedFunc(maps.Keys(want), compareKeys) {
		c, exists, err := r.kernel.Service(k)
		if err != nil {
			failed[k] = fmt.Errorf("reading IPVS service %s: %w", k, err)

			continue
		}

		changes := r.changes

		if err := r.applyService(want[k], c, exists, logger); err != nil {
			failed[k] = err
		}

		if r.changes != changes { // read back what the kernel made of it
			if c, exists, err = r.kernel.Service(k); err != nil && failed[k] == nil {
				failed[k] = fmt.Errorf("reading IPVS service %s back: %w", k, err)
			}
		}

		if exists {
			current[k] = c
		}
	}

	return current, failed, errors.Join(removeErrs...)
}

func (r *reconciler) applyService(w Service, c Service, exists bool, logger *zap.Logger) error {
	switch {
	case !exists:
		// Owned before the call: a service the kernel made but then failed on is ours to remove.
		r.owned[w.Key] = true

		if err := r.kernel.AddService(w); err != nil {
			return fmt.Errorf("adding IPVS service %s: %w", w.Key, err)
		}

		r.changed("add_service")
		logger.Info("IPVS service added", zap.Stringer("service", w.Key), zap.String("scheduler", w.Scheduler))
	case !r.owned[w.Key]:
		logger.Info("adopting an existing IPVS service with the wanted address and port", zap.Stringer("service", w.Key))

		r.owned[w.Key] = true

		fallthrough
	default:
		if c.Scheduler != w.Scheduler || c.Flags != w.Flags {
			if err := r.kernel.UpdateService(w); err != nil {
				return fmt.Errorf("updating IPVS service %s: %w", w.Key, err)
			}

			r.changed("update_service")
			logger.Info("IPVS service updated", zap.Stringer("service", w.Key), zap.String("scheduler", w.Scheduler))
		}
	}

	return r.applyRealServers(w, c.RealServers, logger)
}

func (r *reconciler) applyRealServers(w Service, current []RealServer, logger *zap.Logger) error {
	have := make(map[string]RealServer, len(current))
	for _, rs := range current {
		have[rs.Address.String()] = rs
	}

	var errs []error

	for _, rs := range w.RealServers {
		h, ok := have[rs.Address.String()]
		delete(have, rs.Address.String())

		log := logger.With(zap.Stringer("service", w.Key), zap.Stringer("real_server", rs.Address), zap.Uint32("weight", rs.Weight))

		switch {
		case !ok:
			if err := r.kernel.AddRealServer(w.Key, rs); err != nil {
				errs = append(errs, fmt.Errorf("adding real server %s: %w", rs.Address, err))

				continue
			}

			r.changed("add_real_server")
			log.Info("IPVS real server added")
		case h.Weight != rs.Weight || h.Forwarding != rs.Forwarding:
			if err := r.kernel.UpdateRealServer(w.Key, rs); err != nil {
				errs = append(errs, fmt.Errorf("updating real server %s: %w", rs.Address, err))

				continue
			}

			r.changed("update_real_server")
			log.Info("IPVS real server updated", zap.Uint32("old_weight", h.Weight))
		}
	}

	for _, rs := range have {
		if err := r.kernel.DeleteRealServer(w.Key, rs.Address); err != nil {
			errs = append(errs, fmt.Errorf("removing real server %s: %w", rs.Address, err))

			continue
		}

		r.changed("delete_real_server")
		logger.Info("IPVS real server removed", zap.Stringer("service", w.Key), zap.Stringer("real_server", rs.Address))
	}

	if len(errs) > 0 {
		return fmt.Errorf("IPVS service %s: %w", w.Key, errors.Join(errs...))
	}

	return nil
}

// removeOwned deletes every owned service from the kernel: the agent is stopping.
func (r *reconciler) removeOwned(logger *zap.Logger) error {
	_, _, err := r.apply(nil, logger)

	return err
}

func compareKeys(a, b Key) int {
	if c := a.Address.Compare(b.Address); c != 0 {
		return c
	}

	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}

	return int(a.Protocol) - int(b.Protocol)
}
