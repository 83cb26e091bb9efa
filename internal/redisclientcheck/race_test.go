//go:build race

package redisclientcheck

// raceEnabled: the race detector slows every goroutine and makes timings noisy.
const raceEnabled = true
