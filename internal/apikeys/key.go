package apikeys

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	// base62 is the alphabet of bodies, checksums and ids. '0' comes first so that a checksum
	// padded with it reads as a number with leading zeros.
	base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

	// BodyLen is the number of random base62 characters in a key: 32·log2(62) ≈ 190.5 bits.
	BodyLen = 32
	// ChecksumLen is the number of base62 characters that encode the CRC-32; 62^6 > 2^32.
	ChecksumLen = 6

	// acceptBelow is the largest multiple of 62 that fits a byte (4·62). Random bytes at or
	// above it are thrown away, so that b%62 is uniform: keeping them would make the first
	// eight characters of the alphabet slightly likelier than the rest.
	acceptBelow = 248

	// idPrefix and idBodyLen shape record ids: "k_" plus 12 base62 characters (~71 bits), so
	// that a collision among even millions of keys is vanishingly unlikely; Create still
	// refuses to overwrite an id.
	idPrefix  = "k_"
	idBodyLen = 12
)

// batchLen is how many random bytes randomBase62 reads at a time for n characters: a few to
// spare, because about 3% of bytes are rejected.
func batchLen(n int) int { return n + n/8 + 4 }

// randomBase62 returns n characters drawn uniformly from base62 using bytes from r.
func randomBase62(r io.Reader, n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, batchLen(n))
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("apikeys: read random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= acceptBelow {
				continue
			}
			out = append(out, base62[b%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out), nil
}

// checksum encodes the CRC-32 (IEEE) of s as ChecksumLen base62 characters, most significant
// first, padded with '0'.
func checksum(s string) string {
	var out [ChecksumLen]byte
	v := uint64(crc32.ChecksumIEEE([]byte(s)))
	for i := ChecksumLen - 1; i >= 0; i-- {
		out[i] = base62[v%62]
		v /= 62
	}
	return string(out[:])
}

func isBase62(c byte) bool {
	return ('0' <= c && c <= '9') || ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z')
}

// newKey returns a fresh key with the given token prefix.
func newKey(r io.Reader, tokenPrefix string) (string, error) {
	body, err := randomBase62(r, BodyLen)
	if err != nil {
		return "", err
	}
	return tokenPrefix + body + checksum(tokenPrefix+body), nil
}

// checkKey reports why key is not a well-formed key with the given token prefix, or nil. The
// reasons never quote the key: they end up in errors that may be logged.
func checkKey(key, tokenPrefix string) error {
	if len(key) != len(tokenPrefix)+BodyLen+ChecksumLen {
		return fmt.Errorf("%w: wrong length", ErrMalformed)
	}
	if key[:len(tokenPrefix)] != tokenPrefix {
		return fmt.Errorf("%w: wrong prefix", ErrMalformed)
	}
	for i := len(tokenPrefix); i < len(key); i++ {
		if !isBase62(key[i]) {
			return fmt.Errorf("%w: character outside base62", ErrMalformed)
		}
	}
	split := len(key) - ChecksumLen
	if checksum(key[:split]) != key[split:] {
		return fmt.Errorf("%w: bad checksum", ErrMalformed)
	}
	return nil
}

// validID reports whether id has the shape Create gives ids, so that Revoke can answer
// ErrNotFound for anything else without a Redis call.
func validID(id string) bool {
	if len(id) != len(idPrefix)+idBodyLen || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for i := len(idPrefix); i < len(id); i++ {
		if !isBase62(id[i]) {
			return false
		}
	}
	return true
}

// Hash returns the lower-case hex SHA-256 of the whole key, token prefix included. It is the
// only form of a key that is stored or logged.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
