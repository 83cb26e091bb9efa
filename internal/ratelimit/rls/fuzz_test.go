package rls

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
)

// fuzzRule is one descriptor of the config FuzzMatch matches against; the test renders it as
// YAML for Parse and walks it itself as the oracle. Keys and values hold no "." so that a
// rule's depth is the number of dots in its Rule.
type fuzzRule struct {
	key, value string
	requests   int // -1: no rate_limit on this descriptor
	children   []fuzzRule
}

var fuzzRules = []fuzzRule{
	{key: "k", value: "a", requests: 1, children: []fuzzRule{
		{key: "k", value: "a*b", requests: 2, children: []fuzzRule{
			{key: "k", requests: 3},
		}},
		{key: "j", value: "*", requests: -1, children: []fuzzRule{
			{key: "j", value: "z", requests: 4},
		}},
	}},
	{key: "k", value: "*x*", requests: 5},
	{key: "k", value: "x*", requests: 6},
	{key: "k", requests: -1, children: []fuzzRule{
		{key: "j", requests: 7},
		{key: "k", value: "**", requests: 8},
	}},
	{key: "j", value: "a", requests: 0},
}

func renderRules(b *strings.Builder, rules []fuzzRule, indent string) {
	for _, r := range rules {
		fmt.Fprintf(b, "%s- key: %q\n", indent, r.key)
		if r.value != "" {
			fmt.Fprintf(b, "%s  value: %q\n", indent, r.value)
		}
		if r.requests >= 0 {
			fmt.Fprintf(b, "%s  rate_limit: {unit: second, requests_per_unit: %d}\n", indent, r.requests)
		}
		if len(r.children) > 0 {
			fmt.Fprintf(b, "%s  descriptors:\n", indent)
			renderRules(b, r.children, indent+"    ")
		}
	}
}

// globMatch is the oracle for patterns: each '*' in p matches any run of bytes in v. It is the
// textbook dynamic program over bytes, slow and obviously right.
func globMatch(p, v string) bool {
	// ok[j] reports whether p[:i] matches v[:j], for the current i.
	ok := make([]bool, len(v)+1)
	ok[0] = true
	for i := 0; i < len(p); i++ {
		next := make([]bool, len(v)+1)
		for j := 0; j <= len(v); j++ {
			if p[i] == '*' {
				next[j] = ok[j] || (j > 0 && next[j-1])
			} else {
				next[j] = j > 0 && ok[j-1] && v[j-1] == p[i]
			}
		}
		ok = next
	}
	return ok[len(v)]
}

// oracleMatch walks rules as the reference service does, with no index: exact value, then the
// first matching pattern in config order, then the key-only descriptor.
func oracleMatch(rules []fuzzRule, es []*ratelimitv3.RateLimitDescriptor_Entry) (requests int, ok bool) {
	for i, e := range es {
		var hit *fuzzRule
		for j := range rules {
			r := &rules[j]
			if r.key == e.GetKey() && r.value != "" && r.value == e.GetValue() {
				hit = r
				break
			}
		}
		for j := range rules {
			r := &rules[j]
			if hit == nil && r.key == e.GetKey() && strings.Contains(r.value, "*") && globMatch(r.value, e.GetValue()) {
				hit = r
			}
		}
		for j := range rules {
			r := &rules[j]
			if hit == nil && r.key == e.GetKey() && r.value == "" {
				hit = r
			}
		}
		if hit == nil {
			return 0, false
		}
		if i == len(es)-1 {
			return hit.requests, hit.requests >= 0
		}
		rules = hit.children
	}
	return 0, false
}

// FuzzMatch checks descriptor matching on arbitrary request entries against the oracle above:
// it never panics, a limit applies only on the level of the request's last entry, and it is the
// one the reference's order (exact, patterns in order, key-only) picks.
func FuzzMatch(f *testing.F) {
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors:\n")
	renderRules(&b, fuzzRules, "  ")
	cfg, err := Parse([]File{{Name: "fuzz.yaml", Data: []byte(b.String())}})
	if err != nil {
		f.Fatalf("%v\n%s", err, b.String())
	}
	keys := []string{"k", "j", "x", ""}
	f.Add([]byte{0, 0, 0}, "a", "aXb", "q", "", uint8(3))
	f.Add([]byte{0, 1, 1}, "a", "anything", "z", "", uint8(3))
	f.Add([]byte{0}, "yxz", "", "", "", uint8(1))
	f.Add([]byte{0, 1}, "other", "v", "", "", uint8(2))
	f.Add([]byte{1}, "a", "", "", "", uint8(1))
	f.Add([]byte{0, 0, 0, 0}, "a", "ab", "c", "d", uint8(4))
	f.Add([]byte{0}, "a", "", "", "", uint8(129))
	f.Fuzz(func(t *testing.T, keyPick []byte, v1, v2, v3, v4 string, n uint8) {
		domain := "d"
		if n >= 128 {
			domain = "other"
		}
		values := []string{v1, v2, v3, v4}
		es := make([]*ratelimitv3.RateLimitDescriptor_Entry, int(n%5))
		for i := range es {
			key := "k"
			if i < len(keyPick) {
				key = keys[int(keyPick[i])%len(keys)]
			}
			es[i] = &ratelimitv3.RateLimitDescriptor_Entry{Key: key, Value: values[i]}
		}
		got := cfg.Match(domain, es)
		want, ok := oracleMatch(fuzzRules, es)
		if domain != "d" || len(es) == 0 {
			ok = false
		}
		if !ok {
			if got != nil {
				t.Fatalf("Match(%s, %v) = %+v, want no limit", domain, es, got)
			}
			return
		}
		if got == nil || int(got.RequestsPerUnit) != want {
			t.Fatalf("Match(%s, %v) = %+v, want requests_per_unit %d", domain, es, got, want)
		}
		if depth := strings.Count(got.Rule, "."); depth != len(es) || !strings.HasPrefix(got.Rule, "d.") {
			t.Fatalf("Match(%v) = rule %q, which is not on the request's level %d", es, got.Rule, len(es))
		}
	})
}

// FuzzPattern checks the compiled wildcard matcher against globMatch.
func FuzzPattern(f *testing.F) {
	f.Add("a*b*c", "abbcbc")
	f.Add("*.png", ".png")
	f.Add("**", "")
	f.Add("a*a", "a")
	f.Add("*ab*ab*", "abab")
	f.Fuzz(func(t *testing.T, p, v string) {
		if !strings.Contains(p, "*") || len(p) > 64 || len(v) > 256 {
			return
		}
		pat := compilePattern(p)
		if got, want := pat.match(v), globMatch(p, v); got != want {
			t.Fatalf("pattern %q on %q = %v, want %v", p, v, got, want)
		}
	})
}

// FuzzParse checks that arbitrary YAML never panics the descriptor config parser, and that
// every problem it reports is an *Error naming the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"))
	f.Add([]byte("domain: d\ndescriptors: [{key: k, value: 'a*', descriptors: [{key: j}]}]\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("domain: [\n"))
	f.Add([]byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: YEAR, requests_per_unit: -1, unlimited: true}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse([]File{{Name: "f.yaml", Data: data}})
		if err == nil {
			if cfg == nil {
				t.Fatal("Parse returned neither a config nor an error")
			}
			_ = cfg.Match("d", []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}})
			return
		}
		if cfg != nil {
			t.Fatal("Parse returned a config with an error")
		}
		var e *Error
		if !errors.As(err, &e) || e.File != "f.yaml" {
			t.Fatalf("Parse error %v is not an *Error naming the file", err)
		}
	})
}
