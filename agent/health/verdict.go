package health

// States of an endpoint as the resource shows them.
const (
	StateUnknown   = "unknown"
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
)

// Verdict applies rise/fall hysteresis: one flapping probe must not move a VIP
// or send a proxy's clients elsewhere.
type Verdict struct {
	State     string
	Successes uint32
	Failures  uint32
}

// NewVerdict returns a verdict that has not seen a probe yet.
func NewVerdict() Verdict {
	return Verdict{State: StateUnknown}
}

// Observe folds one probe result in and reports whether the state changed.
func (v *Verdict) Observe(ok bool, rise, fall uint32) bool {
	if ok {
		v.Successes++
		v.Failures = 0

		if v.State != StateHealthy && v.Successes >= rise {
			v.State = StateHealthy

			return true
		}

		return false
	}

	v.Failures++
	v.Successes = 0

	if v.State != StateUnhealthy && v.Failures >= fall {
		v.State = StateUnhealthy

		return true
	}

	return false
}

// Eject makes the endpoint unhealthy at once and reports whether that changed
// its state: a failure seen on real traffic is stronger evidence than a probe,
// and the endpoint must then earn `rise` good probes again.
func (v *Verdict) Eject() bool {
	changed := v.State != StateUnhealthy
	v.State = StateUnhealthy
	v.Successes = 0

	return changed
}
