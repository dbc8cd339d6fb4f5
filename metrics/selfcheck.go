package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeprov/provisiond/internal/selfcheck"
)

// SelfCheck publishes the outcome of the startup self-check as
// provisiond_selfcheck_ok{check}: 1 when the check passed, 0 when it
// failed or warned (`provisiond status` tells which, and the fix). A later
// call replaces the figures.
func (m *Metrics) SelfCheck(rep *selfcheck.Report) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "selfcheck_ok",
		Help: "1 when the startup self-check passed, 0 when it failed or warned, by check.",
	}, []string{"check"})
	if err := m.reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err) // a programmer error: a clashing metric name
		}
		g = are.ExistingCollector.(*prometheus.GaugeVec)
	}
	g.Reset()
	for _, r := range rep.Results {
		v := 0.0
		if r.Status == selfcheck.OK {
			v = 1
		}
		g.WithLabelValues(r.Name).Set(v)
	}
}
