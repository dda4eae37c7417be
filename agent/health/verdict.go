package health

// States of an endpoint as the resource shows them.
const (
	StateUnknown   = "unknown"
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
)

// verdict applies rise/fall hysteresis: one flapping probe must not move a VIP.
type verdict struct {
	state     string
	successes uint32
	failures  uint32
}

// observe folds one probe result in and reports whether the state changed.
func (v *verdict) observe(ok bool, rise, fall uint32) bool {
	if ok {
		v.successes++
		v.failures = 0

		if v.state != StateHealthy && v.successes >= rise {
			v.state = StateHealthy

			return true
		}

		return false
	}

	v.failures++
	v.successes = 0

	if v.state != StateUnhealthy && v.failures >= fall {
		v.state = StateUnhealthy

		return true
	}

	return false
}
