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
	// AlgorithmCredits spends a balance of credits that only refills (to Requests) when the
	// Limit's Refill period turns, never by time passing within it. It is an API key's quota
	// (apikeys), decided in the same script as the key's limits; no policy configures it, so
	// ParseAlgorithm does not accept it. See Limiter for its key.
	AlgorithmCredits
)

// Refill is when an AlgorithmCredits balance is set back to Limit.Requests: never, at every
// UTC midnight, or on the first of every month at 00:00 UTC, as Unkey's daily and monthly
// refills do. A refill replaces the balance, it does not add to it.
type Refill int

const (
	// RefillNone never refills: only an operator adds credits.
	RefillNone Refill = iota
	// RefillDaily refills when the UTC day changes ("1d").
	RefillDaily
	// RefillMonthly refills when the UTC month changes ("1mo").
	RefillMonthly
)

// ParseRefill parses the spelling of a Refill that apikey create takes: "" (none), "1d" or
// "1mo".
func ParseRefill(s string) (Refill, error) {
	switch s {
	case "":
		return RefillNone, nil
	case "1d":
		return RefillDaily, nil
	case "1mo":
		return RefillMonthly, nil
	}
	return RefillNone, fmt.Errorf("ratelimit: unknown refill period %q: want 1d or 1mo", s)
}

// String returns the spelling ParseRefill accepts.
func (r Refill) String() string {
	switch r {
	case RefillNone:
		return ""
	case RefillDaily:
		return "1d"
	case RefillMonthly:
		return "1mo"
	}
	return "Refill(" + strconv.Itoa(int(r)) + ")"
}

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
	case AlgorithmCredits:
		return "credits"
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
