package metrics

import "github.com/prometheus/client_golang/prometheus"

// SessionIndex counts the writes of the session index ("sign out everywhere"), which run in
// the background, off the decisions' path. It is registered only when the index is on.
type SessionIndex struct {
	// Writes counts index writes by result (ok, error).
	Writes *prometheus.CounterVec
	// Dropped counts visits not written because the writer's queue was full.
	Dropped prometheus.Counter
}

// NewSessionIndex registers the session index's metrics on m's registry.
func (m *Metrics) NewSessionIndex() *SessionIndex {
	s := &SessionIndex{
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "session_index", Name: "writes_total",
			Help: "Session index writes (first sight of a session, then last_seen every seen_every) by result.",
		}, []string{"result"}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "session_index", Name: "dropped_total",
			Help: "Session index writes dropped because the background writer's queue was full.",
		}),
	}
	m.Registry.MustRegister(s.Writes, s.Dropped)
	s.Writes.WithLabelValues("ok")
	s.Writes.WithLabelValues("error")
	return s
}
