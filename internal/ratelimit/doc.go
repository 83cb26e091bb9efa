// Package ratelimit holds limits as values, the counting algorithms as Lua scripts run
// atomically in Redis, and the IETF RateLimit response headers.
//
// The scripts, their arguments and the keys they touch are a public format: counters are
// shared with rate-limit-redis (Express) apps and with envoyproxy/ratelimit deployments
// that are being migrated, so they do not change with the Redis client. The package reaches
// Redis through Scripter, one method that runs a script by its SHA1; *redisconn.Client is the
// one the sidecar uses.
//
// # Redis Cluster: one script per slot
//
// A Lua script may only touch keys of one Cluster hash slot. A request's limits usually share
// a slot (a {hash tag} per subject), but not always: limits keyed by different subjects, or a
// shared_prefix key (rate-limit-redis's own key, "rl:" + the client's address, no tag) next
// to tagged ones. With WithClusterSlots (Limiter) and FixedWindowClusterSlots (FixedWindow),
// which the sidecar turns on when its client talks to a Cluster, such a call is split into
// one script per slot, sent at once. Without the options every call is one script, which a
// single server or a Sentinel-managed one runs whatever the keys' slots, fully atomic. What
// a split call counts when one slot denies and another allows:
//
// FixedWindow (the envoyproxy/ratelimit service): every hit is counted, in every slot,
// whatever the other hits' counts. A FixedWindow does not decide; the caller compares the
// counts with its limits afterwards, as envoyproxy/ratelimit increments every descriptor's
// counter before it looks at any. So a request over one descriptor's limit still spends one
// on every other descriptor, on a Cluster exactly as on one server, and the counts and
// verdicts are the same on both. Only the atomicity is per slot: another request's hits may
// land between two slots' scripts.
//
// Limiter (the authz limits): the call stays all or nothing. Each slot's script decides and
// counts its own limits only when all of them allow. When every slot allows, every limit
// with a cost is counted, as one script would. When a slot denies, every slot that counted
// runs a second script that takes its counts back, so the counters end as one script leaves
// them: nothing counted for a denied call, every limit's count unchanged (the one exception
// on a single server, a call made of a single fixed window, which is counted even when
// denied as rate-limit-redis counts, is one slot by construction and so the same on a
// Cluster). A denied fixed window in a split call is never counted alone. Until the undo
// lands, other calls see the counts it takes back, so they may be denied by them, never
// allowed past a limit; an undo that fails leaves them counted (WithUndoFailed hears of it).
// A credits balance (AlgorithmCredits) is one more key of the call: spent only when every
// slot allows, and given back by the undo when another slot denies, unless a refill replaced
// the balance in between.
package ratelimit
