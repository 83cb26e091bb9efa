package ratelimit

import (
	"fmt"
	"strconv"
)

// Algorithm selects how a Limiter counts a Limit.
type Algorithm int

const (
	// AlgorithmFixed counts in a window that opens at a key's first hit and lasts Window,
	// the way rate-limit-redis (express-rate-limit's Redis store) does, on the same key.
	// It admits up to twice Requests across the boundary of two windows.
	AlgorithmFixed Algorithm = iota
	// AlgorithmSliding approximates a sliding window with two epoch-aligned fixed windows,
	// weighting the previous one's count by how much of it the sliding window still
	// covers. It needs O(1) memory per subject and smooths out boundary bursts.
	AlgorithmSliding
	// AlgorithmGCRA is the generic cell rate algorithm (a leaky bucket kept as one
	// timestamp): Burst at once, then one request every Window/Requests.
	AlgorithmGCRA
)

// ParseAlgorithm parses the config spelling of an Algorithm: "fixed", "sliding" or "gcra".
// "" is "fixed", the zero value.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "", "fixed":
		return AlgorithmFixed, nil
	case "sliding":
		return AlgorithmSliding, nil
	case "gcra":
		return AlgorithmGCRA, nil
	}
	return AlgorithmFixed, fmt.Errorf("ratelimit: unknown algorithm %q: want fixed, sliding or gcra", s)
}

// String returns the config spelling that ParseAlgorithm accepts.
func (a Algorithm) String() string {
	switch a {
	case AlgorithmFixed:
		return "fixed"
	case AlgorithmSliding:
		return "sliding"
	case AlgorithmGCRA:
		return "gcra"
	}
	return "Algorithm(" + strconv.Itoa(int(a)) + ")"
}

// MarshalText writes the config spelling, so that config dumps show names, not numbers.
func (a Algorithm) MarshalText() ([]byte, error) {
	if a < AlgorithmFixed || a > AlgorithmGCRA {
		return nil, fmt.Errorf("ratelimit: cannot marshal %v", a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads the config spelling, so that YAML and JSON decoders accept names.
func (a *Algorithm) UnmarshalText(b []byte) error {
	v, err := ParseAlgorithm(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
