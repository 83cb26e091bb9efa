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

// benchConfig is the sidecar's config file for the run: a session route with one
// per-principal limit so high that every call is allowed and all the work is deciding.
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
`

// benchCookie is the Cookie header value loadgen sends.
var benchCookie = func() string {
	mac := hmac.New(sha256.New, []byte(benchSecret))
	mac.Write([]byte(benchSID))
	signed := "s:" + benchSID + "." + base64.RawStdEncoding.EncodeToString(mac.Sum(nil))
	return "connect.sid=" + url.QueryEscape(signed)
}()
