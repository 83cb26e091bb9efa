// Package metricstest reads a Prometheus registry in tests: every counter series as
// name{label="value",...} -> value, so a test can assert on exact label sets.
package metricstest

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Counters gathers g and returns every counter series by its name and labels, as
// `extauthz_x_total{a="1",b="2"}` (labels in the order Prometheus gives them, sorted by name).
func Counters(t testing.TB, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}

// Dump lists the extauthz_ series of Counters, one a line and sorted, for a failure message.
func Dump(series map[string]float64) string {
	lines := make([]string, 0, len(series))
	for n, v := range series {
		if strings.HasPrefix(n, "extauthz_") {
			lines = append(lines, fmt.Sprintf("  %s %v", n, v))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
