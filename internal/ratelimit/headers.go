package ratelimit

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Format selects which RateLimit response headers AppendHeaders writes. The formats are
// express-rate-limit 8's, byte for byte, because Express apps and their clients are the
// reference this sidecar replaces.
type Format int

const (
	// FormatNone writes no headers, not even Retry-After.
	FormatNone Format = iota
	// FormatDraft6 writes RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining and
	// RateLimit-Reset (draft-ietf-httpapi-ratelimit-headers-06).
	FormatDraft6
	// FormatDraft7 writes RateLimit-Policy and the combined RateLimit field (draft-07).
	FormatDraft7
	// FormatDraft8 writes named quota items in RateLimit-Policy and RateLimit (draft-08).
	FormatDraft8
	// FormatLegacy writes X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset,
	// the last as absolute epoch seconds.
	FormatLegacy
)

// ParseFormat parses the config spelling of a Format: "none", "draft-6", "draft-7",
// "draft-8" or "legacy".
func ParseFormat(s string) (Format, error) {
	for f := FormatNone; f <= FormatLegacy; f++ {
		if f.String() == s {
			return f, nil
		}
	}
	return FormatNone, fmt.Errorf("ratelimit: unknown header format %q: want none, draft-6, draft-7, draft-8 or legacy", s)
}

// String returns the config spelling that ParseFormat accepts.
func (f Format) String() string {
	switch f {
	case FormatNone:
		return "none"
	case FormatDraft6:
		return "draft-6"
	case FormatDraft7:
		return "draft-7"
	case FormatDraft8:
		return "draft-8"
	case FormatLegacy:
		return "legacy"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Quota describes one limit's state after a decision.
type Quota struct {
	// Name is the draft-8 policy name. "" gives express-rate-limit's default identifier,
	// "<limit>-in-<duration>" with the largest whole unit ("100-in-1min", "5-in-30sec",
	// "1000-in-2hrs", "10-in-1day").
	Name string
	// Limit is the number of hits the window allows.
	Limit uint64
	// Remaining is the number of hits left in the window.
	Remaining uint64
	// Window is the window length; headers show it in whole seconds, rounded up.
	Window time.Duration
	// Reset is the time until the window resets; headers show it in whole seconds, rounded
	// up, and never negative.
	Reset time.Duration
	// Key identifies the client's partition (for example the counter's key). It is only
	// ever shown hashed, as draft-8's pk parameter, so that it leaks nothing.
	Key string
	// Over reports that this quota denied the request.
	Over bool
}

// Header is one response header.
type Header struct {
	Name, Value string
}

// AppendHeaders appends to dst the headers that format f gives for quotas, and returns the
// extended slice. now is the decision's time (Redis's clock), which legacy's absolute
// X-RateLimit-Reset needs.
//
// Headers come in express-rate-limit 8.7's order; names are canonical-case.
//
// The RateLimit field (and draft-6's and legacy's single-quota headers) describe the quota
// closest to its limit: the lowest Remaining, on a tie the longest Reset, then the first.
// RateLimit-Policy lists the quotas in input order, but only one per limit value, because
// draft-07 forbids two policies with the same quota: the described quota if it has that
// value, else the first. Retry-After is added when any quota is Over, with the longest Reset
// among those, because the request stays denied until all of them have reset. No quotas or
// FormatNone leave dst unchanged.
func AppendHeaders(dst []Header, f Format, quotas []Quota, now time.Time) []Header {
	if len(quotas) == 0 || f <= FormatNone || f > FormatLegacy {
		return dst
	}
	sel := describedQuota(quotas)
	q := &quotas[sel]
	// Values are built in one stack buffer; the only allocations left are the value
	// strings themselves and, when dst is short, one growth of dst.
	var scratch [192]byte
	b := scratch[:0]
	dst = slices.Grow(dst, 5)
	switch f {
	case FormatDraft6:
		dst = append(dst, Header{"RateLimit-Policy", string(appendPolicy(b, quotas, sel))})
		dst = append(dst, Header{"RateLimit-Limit", string(strconv.AppendUint(b, q.Limit, 10))})
		dst = append(dst, Header{"RateLimit-Remaining", string(strconv.AppendUint(b, q.Remaining, 10))})
		dst = append(dst, Header{"RateLimit-Reset", string(strconv.AppendUint(b, ceilSeconds(q.Reset), 10))})
	case FormatDraft7:
		dst = append(dst, Header{"RateLimit-Policy", string(appendPolicy(b, quotas, sel))})
		b = append(b, "limit="...)
		b = strconv.AppendUint(b, q.Limit, 10)
		b = append(b, ", remaining="...)
		b = strconv.AppendUint(b, q.Remaining, 10)
		b = append(b, ", reset="...)
		b = strconv.AppendUint(b, ceilSeconds(q.Reset), 10)
		dst = append(dst, Header{"RateLimit", string(b)})
	case FormatDraft8:
		// express-rate-limit writes RateLimit before RateLimit-Policy in draft-8 only.
		b = appendName(b, q)
		b = append(b, "; r="...)
		b = strconv.AppendUint(b, q.Remaining, 10)
		b = append(b, "; t="...)
		b = strconv.AppendUint(b, ceilSeconds(q.Reset), 10)
		dst = append(dst, Header{"RateLimit", string(b)})
		dst = append(dst, Header{"RateLimit-Policy", string(appendPolicy8(b[:0], quotas, sel))})
	case FormatLegacy:
		dst = append(dst, Header{"X-RateLimit-Limit", string(strconv.AppendUint(b, q.Limit, 10))})
		dst = append(dst, Header{"X-RateLimit-Remaining", string(strconv.AppendUint(b, q.Remaining, 10))})
		dst = append(dst, Header{"X-RateLimit-Reset", string(strconv.AppendInt(b, resetEpoch(now, q.Reset), 10))})
	}
	if retry, over := retryAfter(quotas); over {
		dst = append(dst, Header{"Retry-After", string(strconv.AppendUint(b[:0], retry, 10))})
	}
	return dst
}

// describedQuota is the index of the quota closest to its limit: the lowest Remaining, on a
// tie the longest Reset (it keeps the client out longer), then the first. Resets are compared
// in the whole seconds the headers show: two quotas whose resets differ by a fraction of a
// second (one measured on Redis's clock, one on this process's, say) describe the same
// moment, and the first stays chosen, so the answer does not flip from request to request.
func describedQuota(quotas []Quota) int {
	sel := 0
	for i := 1; i < len(quotas); i++ {
		q, s := &quotas[i], &quotas[sel]
		if q.Remaining < s.Remaining || (q.Remaining == s.Remaining && ceilSeconds(q.Reset) > ceilSeconds(s.Reset)) {
			sel = i
		}
	}
	return sel
}

// listed reports whether quota i gets a RateLimit-Policy item: it is the one item for its
// limit value, the described quota sel when that shares the value, else the first. Quotas
// are few, so the quadratic scan is cheaper than a map.
func listed(quotas []Quota, sel, i int) bool {
	limit := quotas[i].Limit
	if quotas[sel].Limit == limit {
		return i == sel
	}
	for j := 0; j < i; j++ {
		if quotas[j].Limit == limit {
			return false
		}
	}
	return true
}

// appendPolicy appends draft-6/7 policy items, "100;w=60, 1000;w=3600".
func appendPolicy(b []byte, quotas []Quota, sel int) []byte {
	first := true
	for i := range quotas {
		if !listed(quotas, sel, i) {
			continue
		}
		if !first {
			b = append(b, ", "...)
		}
		first = false
		b = strconv.AppendUint(b, quotas[i].Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendUint(b, ceilSeconds(quotas[i].Window), 10)
	}
	return b
}

// appendPolicy8 appends draft-8 policy items, `"100-in-1min"; q=100; w=60; pk=:...:`.
func appendPolicy8(b []byte, quotas []Quota, sel int) []byte {
	first := true
	for i := range quotas {
		if !listed(quotas, sel, i) {
			continue
		}
		if !first {
			b = append(b, ", "...)
		}
		first = false
		q := &quotas[i]
		b = appendName(b, q)
		b = append(b, "; q="...)
		b = strconv.AppendUint(b, q.Limit, 10)
		b = append(b, "; w="...)
		b = strconv.AppendUint(b, ceilSeconds(q.Window), 10)
		b = append(b, "; pk=:"...)
		b = appendPartitionKey(b, q.Key)
		b = append(b, ':')
	}
	return b
}

// appendName appends q's draft-8 name as a structured-field string. A configured name is
// escaped (backslash before '"' and '\\'), and bytes a structured-field string may not hold
// become '?', so that a name from config can neither break the field nor inject a header.
func appendName(b []byte, q *Quota) []byte {
	b = append(b, '"')
	if q.Name == "" {
		b = appendDefaultName(b, q.Limit, q.Window)
	} else {
		for i := 0; i < len(q.Name); i++ {
			switch c := q.Name[i]; {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c > 0x7E:
				b = append(b, '?')
			default:
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// appendDefaultName appends express-rate-limit's default identifier: the limit, "-in-", and
// the window in the largest unit below its next one (sec under a minute, min under an hour,
// hr(s) under a day, else day(s)), as a JavaScript number prints, so 90 s is "1.5min".
// It starts from whole milliseconds, as express-rate-limit's windowMs does, so the
// divisions round exactly as JavaScript's.
func appendDefaultName(b []byte, limit uint64, window time.Duration) []byte {
	b = strconv.AppendUint(b, limit, 10)
	b = append(b, "-in-"...)
	ms := float64(window.Milliseconds())
	var n float64
	var unit string
	switch seconds, minutes, hours := ms/1e3, ms/6e4, ms/36e5; {
	case seconds < 60:
		n, unit = seconds, "sec"
	case minutes < 60:
		n, unit = minutes, "min"
	case hours < 24:
		n, unit = hours, "hr"
	default:
		n, unit = ms/864e5, "day"
	}
	b = strconv.AppendFloat(b, n, 'f', -1, 64)
	b = append(b, unit...)
	if (unit == "hr" || unit == "day") && n > 1 {
		b = append(b, 's')
	}
	return b
}

// appendPartitionKey appends express-rate-limit's draft-8 partition key: standard base64
// of the text of the first 12 hex digits of sha256(key). It identifies the partition
// without revealing the key (an IP address, a user ID).
func appendPartitionKey(b []byte, key string) []byte {
	sum := sha256.Sum256([]byte(key))
	var hexed [12]byte
	hex.Encode(hexed[:], sum[:6])
	var out [16]byte
	base64.StdEncoding.Encode(out[:], hexed[:])
	return append(b, out[:]...)
}

// retryAfter is the longest Reset among the quotas that denied the request, in whole
// seconds, and whether any did.
func retryAfter(quotas []Quota) (seconds uint64, over bool) {
	var longest time.Duration
	for i := range quotas {
		if quotas[i].Over {
			over = true
			longest = max(longest, quotas[i].Reset)
		}
	}
	return ceilSeconds(longest), over
}

// ceilSeconds rounds d up to whole seconds, as express-rate-limit's Math.ceil does, and
// clamps negative durations to 0 so that a late reply never shows a reset in the past.
func ceilSeconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	return uint64(s)
}

// resetEpoch is the absolute time the window resets, in Unix seconds rounded up.
func resetEpoch(now time.Time, reset time.Duration) int64 {
	t := now.Add(max(reset, 0))
	s := t.Unix()
	if t.Nanosecond() != 0 {
		s++
	}
	return s
}
