package main

import (
	"context"
	"fmt"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// The orchestrator sets up its private Redis (readiness, roles, slots, scripts, the bench
// session) with the test harnesses' small RESP2 reader (redistest.Command) rather than with the
// sidecar's client: the harness must not depend on the client under test, and it needs no
// redis-cli for one command.

// replyError is an error reply (-ERR ..., -MOVED ...) from the server.
type replyError = redistest.ReplyError

// respTimeout bounds one command when ctx has no earlier deadline.
const respTimeout = 5 * time.Second

// respCommand sends one command over a fresh connection to addr and returns its reply: a
// string for simple and bulk strings, int64, []any, nil for a null, and a replyError for an
// error reply.
func respCommand(ctx context.Context, addr string, args ...string) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, respTimeout)
	defer cancel()
	return redistest.Command(ctx, addr, "", args...)
}

// respString is respCommand for a command whose reply is a string.
func respString(ctx context.Context, addr string, args ...string) (string, error) {
	r, err := respCommand(ctx, addr, args...)
	if err != nil {
		return "", err
	}
	s, ok := r.(string)
	if !ok {
		return "", fmt.Errorf("%s: reply %T, want a string", args[0], r)
	}
	return s, nil
}

// infoField is the value of field in an INFO reply, "" when absent.
func infoField(info, field string) string { return redistest.InfoField(info, field) }

// pairs turns a flat [k1 v1 k2 v2 ...] reply (SENTINEL REPLICAS entries) into a map.
func pairs(r any) map[string]string { return redistest.Pairs(r) }
