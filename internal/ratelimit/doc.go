// Package ratelimit holds limits as values, the counting algorithms as Lua scripts run
// atomically in Redis, and the IETF RateLimit response headers.
package ratelimit
