// Package apikeys issues, checks and revokes API keys whose records live in Redis under the
// key's SHA-256, so that the raw key exists only in the hands of whoever it was given to.
//
// # Key format
//
// A key is <token prefix><body><checksum>, for example eak_ plus 38 characters:
//
//   - token prefix: Options.TokenPrefix, "eak_" (extauthz API key) by default. It lets secret
//     scanners and people recognise a leaked key.
//   - body: 32 base62 characters (0-9, A-Z, a-z) from crypto/rand, drawn by rejection sampling
//     so that every character is equally likely: 32·log2(62) ≈ 190 bits.
//   - checksum: CRC-32 (IEEE) of prefix+body, written as 6 base62 characters, most significant
//     first, padded with leading "0"s (62^6 > 2^32, so every CRC fits).
//
// Valid and Check reject a wrong prefix, a wrong length, a character outside base62 or a bad
// checksum without any I/O, so typos and scanners probing with random strings cost no Redis
// call. The checksum is not a secret and proves nothing about the key being issued; it only
// catches garbage early.
//
// # Redis layout
//
// With Options.Prefix P ("apikey:" by default) and H the lower-case hex SHA-256 of the whole key:
//
//   - P+H: a hash {id, name, owner, tier, scopes (comma-joined), created (unix seconds),
//     expires (unix seconds, 0 = never), disabled ("0" or "1")}. Lookup is one HGETALL on it.
//   - P+"id:"+id: a string holding H, so that a key can be revoked by its id.
//   - P+"index": a set of every id, for List.
//   - P+"credits:"+id, only for a key created with credits: a hash {remaining, period}, the
//     live balance and the refill period it belongs to (ratelimit.AlgorithmCredits). The
//     record then also holds credits (the initial balance), refill (the refill amount, 0 for
//     none) and refill_every ("1d", "1mo" or ""). The balance is a key of its own because
//     every request changes it: in the record it would invalidate every sidecar's cached copy
//     on every request. A record without those fields is a key without credits.
//
// Ids are "k_" plus 12 random base62 characters. Neither the raw key nor anything from which it
// could be derived is stored; H is safe to store and log because the body has ~190 bits.
//
// On Redis Cluster the keys hash to different slots unless P holds a {hash tag}. With the
// default prefix every record sits in its own slot, so lookups spread over the shards, and
// Create writes the keys one after another in an order that is safe to interrupt (see Create).
// With a tagged prefix such as "{apikey}:" all keys share one slot, Create writes them in one
// MULTI, at the cost of putting every lookup on one shard.
package apikeys
