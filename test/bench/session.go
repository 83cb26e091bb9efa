package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
)

// The Check scenario's session: a connect-redis record and the express-session cookie that
// names it, signed with benchSecret exactly as express-session signs it.
const (
	benchSecret  = "bench-secret"
	benchSID     = "benchSessionId0123456789abcdef"
	benchSession = `{"cookie":{"originalMaxAge":86400000,"expires":null,"httpOnly":true,"path":"/"},"userId":"bench-user","role":"member"}`
)

// benchConfig is the sidecar's config file for the run: a session route and an auth: optional
// route, each with one per-principal limit so high that every call is allowed and all the work
// is deciding.
const benchConfig = `
log: {level: warn}
sessions:
  secrets: [` + benchSecret + `]
  subject: userId
  headers: {x-user-id: userId, x-user-role: role}
  roles: role
policies:
  - name: bench
    match: {path_prefix: /api/}
    auth: session
    limits: [{name: per-user, by: principal, requests: 1000000000, window: 1m}]
  - name: bench-optional
    match: {path_prefix: /feed/}
    auth: optional
    limits: [{name: per-caller, by: principal, requests: 1000000000, window: 1m}]
`

// benchCookie is the Cookie header value loadgen sends.
var benchCookie = sessionCookie(benchSecret, benchSID)

// sessionCookie is the Cookie header value express-session sets for session id sid, signed with
// secret: "connect.sid=" + URL-encoded "s:<sid>.<base64 HMAC-SHA256 of sid, unpadded>".
func sessionCookie(secret, sid string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(sid))
	signed := "s:" + sid + "." + base64.RawStdEncoding.EncodeToString(mac.Sum(nil))
	return "connect.sid=" + url.QueryEscape(signed)
}
