package apikeys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// newUnitStore returns a Store over a fake that fails every call, for tests that must not
// reach Redis.
func newUnitStore(t *testing.T, opts Options) (*Store, *countingRedis) {
	t.Helper()
	f := &countingRedis{}
	s, err := New(f, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, f
}

func TestGoldenKeys(t *testing.T) {
	// Computed independently (Python's zlib.crc32 and a hand-written base62 encoder), so that
	// the format cannot drift without this test noticing.
	tests := []struct {
		name, tokenPrefix, key string
	}{
		{"all zero body", "", "eak_000000000000000000000000000000001OATQx"},
		{"mixed body", "", "eak_abcdefghijklmnopqrstuvwxyzABCDEF2Wym5R"},
		{"custom token prefix", "tok_", "tok_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ09hjUN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newUnitStore(t, Options{TokenPrefix: tt.tokenPrefix})
			if err := s.Check(tt.key); err != nil {
				t.Errorf("Check(golden) = %v, want nil", err)
			}
		})
	}
}

func TestGenerateFormat(t *testing.T) {
	s, f := newUnitStore(t, Options{})
	const n = 10000
	seen := make(map[string]bool, n)
	counts := map[byte]int{}
	for i := 0; i < n; i++ {
		key, err := s.Generate()
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		if got, want := len(key), len(DefaultTokenPrefix)+BodyLen+ChecksumLen; got != want {
			t.Fatalf("len(key) = %d, want %d", got, want)
		}
		if !strings.HasPrefix(key, DefaultTokenPrefix) {
			t.Fatalf("key does not start with %q", DefaultTokenPrefix)
		}
		rest := key[len(DefaultTokenPrefix):]
		for j := 0; j < len(rest); j++ {
			if !strings.ContainsRune(base62, rune(rest[j])) {
				t.Fatalf("key has %q outside base62", rest[j])
			}
		}
		if !s.Valid(key) {
			t.Fatalf("Valid(generated key) = false: %v", s.Check(key))
		}
		if seen[key] {
			t.Fatalf("key generated twice after %d keys", i)
		}
		seen[key] = true
		for j := 0; j < BodyLen; j++ {
			counts[rest[j]]++
		}
	}
	// A modulo bias (b%62 over all 256 byte values) would make the first eight characters 25%
	// likelier; with 320,000 characters the expected count is ~5161 and sigma ~71, so 10% is
	// seven sigmas for chance and far inside the bias.
	want := float64(n*BodyLen) / 62
	for i := 0; i < len(base62); i++ {
		c := base62[i]
		if got := float64(counts[c]); got < want*0.9 || got > want*1.1 {
			t.Errorf("character %q drawn %.0f times, want about %.0f", c, got, want)
		}
	}
	if f.calls.Load() != 0 {
		t.Errorf("Generate and Valid made %d Redis calls, want 0", f.calls.Load())
	}
}

func TestRandomBase62RejectsHighBytes(t *testing.T) {
	// 248..255 must be skipped; the rest map to b%62.
	in := []byte{255, 248, 0, 61, 62, 247, 250, 123, 124}
	in = append(in, make([]byte, batchLen(6)-len(in))...)
	got, err := randomBase62(bytes.NewReader(in), 6)
	if err != nil {
		t.Fatalf("randomBase62: %v", err)
	}
	if want := "0z0zz0"; got != want {
		t.Errorf("randomBase62 = %q, want %q", got, want)
	}
}

func TestRandomBase62RefillsAfterRejects(t *testing.T) {
	// A whole batch of rejected bytes must lead to another read, not to a short string.
	in := bytes.Repeat([]byte{255}, batchLen(4))
	in = append(in, bytes.Repeat([]byte{1}, batchLen(4))...)
	got, err := randomBase62(bytes.NewReader(in), 4)
	if err != nil {
		t.Fatalf("randomBase62: %v", err)
	}
	if want := "1111"; got != want {
		t.Errorf("randomBase62 = %q, want %q", got, want)
	}
	if _, err := randomBase62(bytes.NewReader(nil), 4); err == nil {
		t.Error("randomBase62 on an empty reader: want an error")
	}
}

func TestChecksumCatchesEverySingleSubstitution(t *testing.T) {
	s, _ := newUnitStore(t, Options{})
	// Every base62 character plus a few that are not, at every position, in a sample of keys.
	replacements := base62 + "_-+/= .\x00\xff"
	for i := 0; i < 25; i++ {
		key, err := s.Generate()
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		for pos := 0; pos < len(key); pos++ {
			for j := 0; j < len(replacements); j++ {
				c := replacements[j]
				if c == key[pos] {
					continue
				}
				bad := key[:pos] + string([]byte{c}) + key[pos+1:]
				if s.Valid(bad) {
					t.Fatalf("substituting %q at %d went unnoticed", c, pos)
				}
			}
		}
	}
}

func TestCheckRejects(t *testing.T) {
	s, f := newUnitStore(t, Options{})
	good := "eak_abcdefghijklmnopqrstuvwxyzABCDEF2Wym5R"
	body := good[4 : 4+BodyLen]
	// withChecksum builds a key whose checksum is right, so that only the named flaw remains.
	withChecksum := func(prefixBody string) string { return prefixBody + checksum(prefixBody) }
	tests := []struct {
		name, key, reason string
	}{
		{"empty", "", "wrong length"},
		{"prefix only", "eak_", "wrong length"},
		{"one short", good[:len(good)-1], "wrong length"},
		{"one long", good + "a", "wrong length"},
		{"other prefix", withChecksum("xak_" + body), "wrong prefix"},
		{"upper-case prefix", withChecksum("EAK_" + body), "wrong prefix"},
		{"dash in body", withChecksum("eak_" + body[:10] + "-" + body[11:]), "character outside base62"},
		{"non-ascii in body", withChecksum("eak_" + body[:30] + "é"), "character outside base62"},
		{"bad checksum", good[:len(good)-1] + "S", "bad checksum"},
		{"swapped body characters", "eak_bacdefghijklmnopqrstuvwxyzABCDEF2Wym5R", "bad checksum"},
		{"whitespace around", " " + good[:len(good)-1], "wrong prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Check(tt.key)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Check = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Check = %q, want the reason %q", err, tt.reason)
			}
			if tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q quotes the key", err)
			}
			if s.Valid(tt.key) {
				t.Error("Valid = true")
			}
		})
	}
	if err := s.Check(good); err != nil {
		t.Errorf("Check(good) = %v", err)
	}
	if f.calls.Load() != 0 {
		t.Errorf("Check made %d Redis calls, want 0", f.calls.Load())
	}
}

func TestHash(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := Hash(tt.in); got != tt.want {
			t.Errorf("Hash(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	key := "eak_abcdefghijklmnopqrstuvwxyzABCDEF2Wym5R"
	if h := Hash(key); !isHash(h) || strings.Contains(h, key[4:]) {
		t.Errorf("Hash(key) = %q, want 64 lower-case hex characters unrelated to the key", h)
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		wantErr    string
		wantShared bool
	}{
		{name: "defaults", opts: Options{}},
		{name: "hash tag", opts: Options{Prefix: "{apikey}:"}, wantShared: true},
		{name: "tag inside", opts: Options{Prefix: "svc:{keys}:"}, wantShared: true},
		{name: "empty tag", opts: Options{Prefix: "{}apikey:"}, wantErr: "hash tag"},
		{name: "open brace only", opts: Options{Prefix: "apikey{:"}, wantErr: "hash tag"},
		{name: "reversed braces", opts: Options{Prefix: "}a{"}, wantErr: "hash tag"},
		{name: "two tags", opts: Options{Prefix: "{a}{b}"}, wantErr: "hash tag"},
		{name: "token prefix with space", opts: Options{TokenPrefix: "ea k_"}, wantErr: "only A-Z"},
		{name: "token prefix too long", opts: Options{TokenPrefix: strings.Repeat("a", 17)}, wantErr: "longer"},
		{name: "token prefix with dash", opts: Options{TokenPrefix: "acme-live_"}, wantErr: "only A-Z"},
		{name: "custom token prefix", opts: Options{TokenPrefix: "acme_live_"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(&countingRedis{}, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want an error about %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if s.sharedSlot != tt.wantShared {
				t.Errorf("sharedSlot = %v, want %v", s.sharedSlot, tt.wantShared)
			}
		})
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil): want an error")
	}
}
