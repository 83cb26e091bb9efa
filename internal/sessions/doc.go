// Package sessions resolves the session cookies of Express apps (express-session with
// connect-redis) against the same Redis, so that the sidecar can authorize a request as the
// app itself would: which user, which roles, which fields to pass upstream.
//
// # What is on the wire and in Redis
//
// express-session sets a cookie (connect.sid by default) whose value is
// "s:" + sid + "." + signature, URL-encoded by the cookie package's serialize
// (encodeURIComponent: "s%3A...", "+" as "%2B", "/" as "%2F"). The signature is the HMAC-SHA256
// of the sid keyed by the first secret, in standard base64 with the "=" padding removed
// (always 43 characters). Any of the configured secrets verifies, so secrets can be rotated.
//
// connect-redis keeps the session under prefix+sid ("sess:" by default) as
// JSON.stringify(session): a "cookie" object (originalMaxAge, expires, httpOnly, path, ...)
// and the app's own fields at the top level (userId, passport.user, ...). The key's TTL is
// the only expiry: connect-redis never checks cookie.expires when it reads a session, and
// the stored field goes stale whenever a session is touched, so this package ignores it too. A session exists iff its key
// does.
//
// # Matching the Node packages
//
// CookieValue parses a Cookie header the way the cookie package (0.7, the one express-session
// 1.18 uses) does: pairs without "=" are skipped rather than voiding the line, the first pair
// with a name wins, spaces and tabs around names and values are trimmed, one pair of
// surrounding double quotes is removed, and a value with "%" is decoded with
// decodeURIComponent semantics ("+" stays "+", and a value that fails to decode is kept raw).
// net/http's cookie parsing differs on every one of these points, which is why it is not used.
//
// Unsign accepts exactly what cookie-signature's unsign accepts: it re-signs the part before
// the last "." and compares the resulting text with the given one, so a signature whose
// base64 decodes to the right bytes but is written differently (padding, trailing bits)
// does not verify.
//
// # Cost of hostile input
//
// Resolve ignores Cookie headers longer than MaxCookieHeader, and it reaches Redis only with
// a sid whose signature verified: a forged or malformed cookie costs one HMAC per secret and
// no I/O. Session values longer than MaxSessionBytes are not parsed.
//
// # Touch
//
// connect-redis renews a session's TTL on every request Express handles (EXPIRE with the
// cookie's remaining life). Requests that only reach APIs behind the sidecar would otherwise
// let active users' sessions expire, so Store can do the same, throttled to one EXPIRE per
// session per Options.TouchEvery in this process. The TTL is ceil(cookie.originalMaxAge/1000)
// seconds: connect-redis takes it from cookie.expires just after express-session has reset
// that to now + originalMaxAge, which comes to the same. Like Express without its rolling
// option, this renews the data in Redis, not the browser's cookie, which the sidecar never
// sets.
//
// # Cache
//
// With Options.Cache, Resolve reads sessions through the Redis client's own cache (RESP3
// client-side caching, CLIENT TRACKING): Redis remembers which keys this process read and
// pushes an invalidation as soon as one changes, so a cached session costs no round trip and a
// logout (connect-redis's DEL when the app destroys the session) is seen by the next request.
// Unknown sids are cached as well, which is safe for the same reason: the SET of a login
// invalidates them. Any touch, this process's or the app's, is a change too, so an active
// session is read from Redis again after each one.
//
// # Session index
//
// Index keeps, per subject, the sessions the sidecars have seen, so that an operator or the app
// can list them and sign a user out everywhere (Revoke deletes the connect-redis keys). Its Redis
// layout is public (see Index). A Recorder writes it from the decisions without slowing them:
// Store.Seen, called with a resolved session, queues a visit when this process first builds
// the Session and then at most once per RecorderOptions.Every, never blocking and never
// allocating; Recorder.Run does the Redis work in the background. Listings show a session by
// PublicID, never by its sid.
//
// # Secrets
//
// Cookie values, session ids and signing secrets never appear in errors, and the String and
// GoString methods of Options, Session and Store redact them. Session.ID is exported because
// the caller may need it (to key a cache, say), and it must not be logged.
package sessions
