package apikeys

import (
	"strings"
	"testing"
)

// cycle is an endless reader over a fuzzer's bytes, standing in for crypto/rand. After each
// pass over them it yields one byte below acceptBelow, so that bytes randomBase62 rejects
// (>= 248) cannot keep it reading forever.
type cycle struct {
	b []byte
	i int
}

func (c *cycle) Read(p []byte) (int, error) {
	for n := range p {
		k := c.i % (len(c.b) + 1)
		if k == len(c.b) {
			p[n] = byte(c.i % acceptBelow)
		} else {
			p[n] = c.b[k]
		}
		c.i++
	}
	return len(p), nil
}

// FuzzCheckKey checks key validation on arbitrary strings: it never panics, a valid key is its
// own prefix and body followed by their checksum, a key built from arbitrary "random" bytes is
// valid, and changing any one character of a valid key makes it invalid.
func FuzzCheckKey(f *testing.F) {
	good, err := newKey(&cycle{b: []byte("seed")}, DefaultTokenPrefix)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, []byte("seed"), uint8(5))
	f.Add("eak_"+strings.Repeat("0", BodyLen+ChecksumLen), []byte{0xff, 0xf8, 1}, uint8(0))
	f.Add("eak_\xff", []byte{}, uint8(40))
	f.Add("", []byte{247, 248}, uint8(1))
	f.Fuzz(func(t *testing.T, key string, random []byte, pos uint8) {
		if err := checkKey(key, DefaultTokenPrefix); err == nil {
			split := len(key) - ChecksumLen
			if !strings.HasPrefix(key, DefaultTokenPrefix) || key[:split]+checksum(key[:split]) != key {
				t.Fatalf("checkKey accepts %q, which is not prefix+body+checksum", key)
			}
			if h := Hash(key); len(h) != 64 || strings.ToLower(h) != h {
				t.Fatalf("Hash(%q) = %q, want 64 lower-case hex digits", key, h)
			}
		}
		fresh, err := newKey(&cycle{b: random}, DefaultTokenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkKey(fresh, DefaultTokenPrefix); err != nil {
			t.Fatalf("a fresh key %q does not check: %v", fresh, err)
		}
		// A one-character change is a burst of at most 8 bits, which CRC-32 always detects.
		i := len(DefaultTokenPrefix) + int(pos)%(BodyLen+ChecksumLen)
		b := []byte(fresh)
		b[i] = base62[(strings.IndexByte(base62, b[i])+1+int(pos)%61)%62]
		if err := checkKey(string(b), DefaultTokenPrefix); err == nil {
			t.Fatalf("changing character %d of %q to %q still checks", i, fresh, b)
		}
	})
}

// FuzzFromHeaders checks key extraction from arbitrary header values: it never panics, and what
// it returns is a non-empty value without surrounding blanks, from a configured header, with no
// blank inside when it came from a Bearer authorization.
func FuzzFromHeaders(f *testing.F) {
	f.Add("Bearer eak_abc", "")
	f.Add("bearer  \t x y", " eak_x ")
	f.Add("Basic dXNlcjpwYXNz", "\t")
	f.Add("BEARER", "k")
	f.Fuzz(func(t *testing.T, authorization, xAPIKey string) {
		headers := map[string]string{"authorization": authorization, "x-api-key": xAPIKey}
		key, header, ok := FromHeaders(headers, []string{"Authorization", "X-Api-Key"})
		if !ok {
			if key != "" || header != "" {
				t.Fatalf("FromHeaders found nothing but returned %q, %q", key, header)
			}
			if strings.Trim(xAPIKey, " \t") != "" {
				t.Fatalf("FromHeaders skipped x-api-key %q", xAPIKey)
			}
			return
		}
		if key == "" || strings.Trim(key, " \t") != key {
			t.Fatalf("FromHeaders returned the key %q with blanks around it", key)
		}
		switch header {
		case "authorization":
			if strings.ContainsAny(key, " \t") || !strings.Contains(authorization, key) {
				t.Fatalf("FromHeaders read %q from the authorization %q", key, authorization)
			}
		case "x-api-key":
			if key != strings.Trim(xAPIKey, " \t") {
				t.Fatalf("FromHeaders read %q from the x-api-key %q", key, xAPIKey)
			}
		default:
			t.Fatalf("FromHeaders names the header %q, which is not configured", header)
		}
	})
}
