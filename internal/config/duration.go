package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as a Go duration string such as "25ms", "1m" or
// "24h". Bare numbers are rejected, except 0, because "timeout: 25" is ambiguous between
// seconds and milliseconds and guessing wrong is a silent outage.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration, without the zero units it would append: "1m" rather
// than "1m0s", "24h" rather than "24h0m0s", so that a marshalled config reads like a written one.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// UnmarshalYAML reads a duration string. The decoder does not call it for a null value, so an
// empty key keeps the default.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 25ms, got %s", describeNode(n))
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		// A bare 0 is the one number that means the same in every unit.
		if n.Value == "0" {
			*d = 0
			return nil
		}
		return fmt.Errorf("%s has no unit: use a unit, e.g. 25ms", n.Value)
	case "!!str":
	default:
		return fmt.Errorf("expected a duration such as 25ms, got %s", describeNode(n))
	}
	s := strings.TrimSpace(n.Value)
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
			return fmt.Errorf("%q has no unit: use a unit, e.g. 25ms", n.Value)
		}
		return fmt.Errorf("%q is not a duration: use a number and a unit, e.g. 25ms, 1m or 24h", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d in the form UnmarshalYAML reads.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }
