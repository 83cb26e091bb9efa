package ratelimit

import (
	"strings"
	"testing"
)

func TestAppendEscaped(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "user-42@example-com", "user-42@example-com"},
		{"dot", "example.com", "example%2Ecom"},
		{"empty", "", ""},
		{"separators", "a_b.c:d", "a%5Fb%2Ec%3Ad"},
		{"escape byte", "100%", "100%25"},
		{"braces", "{tag}", "%7Btag%7D"},
		{"space and control", "a b\r\n\x00\t", "a%20b%0D%0A%00%09"},
		{"del and non-ASCII", "\x7fé", "%7F%C3%A9"},
		{"printable punctuation kept", "/api/*?x=1&y=[2]", "/api/*?x=1&y=[2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendEscaped([]byte("p:"), tc.in))
			if got != "p:"+tc.want {
				t.Errorf("AppendEscaped(%q) = %q, want %q", tc.in, got, "p:"+tc.want)
			}
			if n := EscapedLen(tc.in); n != len(tc.want) {
				t.Errorf("EscapedLen(%q) = %d, want %d", tc.in, n, len(tc.want))
			}
		})
	}
}

// descriptorKey joins escaped pairs the way rls builds counter keys.
func descriptorKey(pairs ...string) string {
	b := []byte("rls:{d")
	for i := 0; i+1 < len(pairs); i += 2 {
		b = append(b, '.')
		b = AppendEscaped(b, pairs[i])
		b = append(b, '_')
		b = AppendEscaped(b, pairs[i+1])
	}
	return string(append(b, '}'))
}

func TestEscapedKeysDoNotCollide(t *testing.T) {
	for _, tc := range [][2][]string{
		{{"a_b", "c"}, {"a", "b_c"}},
		{{"a.b", "c"}, {"a", "b.c"}},
		{{"a", "b", "c", "d"}, {"a", "b.c_d"}},
		{{"a%5F", "b"}, {"a_", "b"}},
		{{"x", "}{"}, {"x}", "{"}},
	} {
		if k1, k2 := descriptorKey(tc[0]...), descriptorKey(tc[1]...); k1 == k2 {
			t.Errorf("%q and %q share key %q", tc[0], tc[1], k1)
		}
	}
}

func TestEscapedHasNoBraces(t *testing.T) {
	// Every byte value, alone and in a run, so that no input can smuggle a brace or a
	// separator through.
	var all strings.Builder
	for c := 0; c < 256; c++ {
		all.WriteByte(byte(c))
		got := string(AppendEscaped(nil, string([]byte{byte(c)})))
		if strings.ContainsAny(got, "{}:_. ") {
			t.Errorf("byte %#x escapes to %q", c, got)
		}
	}
	got := string(AppendEscaped(nil, all.String()))
	if strings.ContainsAny(got, "{}") {
		t.Errorf("escaped value contains a brace: %q", got)
	}
	for i := 0; i < len(got); i++ {
		if got[i] <= ' ' || got[i] >= 0x7F {
			t.Fatalf("escaped value contains byte %#x", got[i])
		}
	}
}

func TestAppendEscapedAllocs(t *testing.T) {
	dst := make([]byte, 0, 128)
	allocs := testing.AllocsPerRun(100, func() {
		dst = AppendEscaped(dst[:0], "user_{alice}.example:443")
	})
	if allocs != 0 {
		t.Errorf("AppendEscaped allocated %v times with room in dst, want 0", allocs)
	}
}

func BenchmarkAppendEscaped(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"plain", "203.0.113.7-user-42"},
		{"escaped", "user_{alice}.example:443"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			dst := make([]byte, 0, 128)
			for b.Loop() {
				dst = AppendEscaped(dst[:0], bc.in)
			}
		})
	}
}
