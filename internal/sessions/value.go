package sessions

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
)

// parseSession decodes a connect-redis value: one JSON object, nothing after it. Numbers
// stay json.Number so that they can be rendered as JavaScript renders them rather than
// through a float64 and Go's formatting.
func parseSession(data string) (map[string]any, bool) {
	dec := json.NewDecoder(strings.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false
	}
	obj, ok := v.(map[string]any)
	return obj, ok
}

// splitPath splits a dotted path into its keys, or returns nil when a key is empty. Keys
// that themselves contain a dot cannot be addressed.
func splitPath(path string) []string {
	keys := strings.Split(path, ".")
	for _, k := range keys {
		if k == "" {
			return nil
		}
	}
	return keys
}

// lookup follows keys through nested objects. Arrays are not indexed: a key applied to
// anything but an object finds nothing.
func lookup(obj map[string]any, keys []string) (any, bool) {
	var v any = obj
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// text renders a string, number or boolean as the Node app would see it in a template
// literal. Objects, arrays and null have no such text here: rendering them as JSON would
// hand upstream services a format nobody agreed on.
func text(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		return jsNumber(v)
	}
	return "", false
}

// headerSafe reports whether s can go into an HTTP header value without splitting it.
func headerSafe(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}

// jsNumber renders a JSON number as JavaScript's String(JSON.parse(n)) would. Values written
// by JSON.stringify come back unchanged; others are normalised ("42.0" becomes "42", "1E3"
// becomes "1000", integers beyond 2^53 are rounded) so that the text matches what the
// Express app itself sees.
func jsNumber(n json.Number) (string, bool) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return "", false
	}
	return formatJSNumber(f), true
}

// formatJSNumber implements ECMAScript's Number::toString(x) for radix 10. Go's shortest
// round-tripping digits are the digits the specification asks for (the fewest that
// identify x, the closest to x when there is a choice); only their layout differs.
func formatJSNumber(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0: // Both zeros print as "0".
		return "0"
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// FormatFloat 'e' gives d.ddde±XX; the specification's s is the digits, k their count,
	// and n the exponent plus one (x = 0.s × 10^n).
	mant, exp, _ := strings.Cut(strconv.FormatFloat(f, 'e', -1, 64), "e")
	digits := strings.Replace(mant, ".", "", 1)
	e, _ := strconv.Atoi(exp)
	k, n := len(digits), e+1
	switch {
	case k <= n && n <= 21:
		return sign + digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return sign + digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return sign + "0." + strings.Repeat("0", -n) + digits
	}
	expSign := "+"
	if n-1 < 0 {
		expSign = "-"
	}
	frac := ""
	if k > 1 {
		frac = "." + digits[1:]
	}
	return sign + digits[:1] + frac + "e" + expSign + strconv.Itoa(abs(n-1))
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// touchSeconds returns the TTL connect-redis would set when touching the session:
// ceil(cookie.originalMaxAge / 1000) seconds when that is a positive number, else 0.
// connect-redis derives it from cookie.expires after express-session has just reset it to
// now + originalMaxAge, which comes to the same; the stored expires is stale and unused.
// The result is capped at maxTouchSeconds so that a silly maxAge cannot overflow a Duration.
func touchSeconds(obj map[string]any) int64 {
	v, ok := lookup(obj, []string{"cookie", "originalMaxAge"})
	if !ok {
		return 0
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0
	}
	ms, err := strconv.ParseFloat(string(n), 64)
	if err != nil || !(ms > 0) || math.IsInf(ms, 0) {
		return 0
	}
	sec := math.Ceil(ms / 1000)
	if sec > maxTouchSeconds {
		return maxTouchSeconds
	}
	return int64(sec)
}
