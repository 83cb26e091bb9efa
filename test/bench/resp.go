package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The orchestrator sets up its private Redis (readiness, roles, slots, scripts, the bench
// session) with these few lines of RESP2 rather than with a client library: the harness must
// not depend on the client under test, and it needs no redis-cli for one command.

// replyError is an error reply (-ERR ...) from the server.
type replyError string

func (e replyError) Error() string { return "redis: " + string(e) }

// respTimeout bounds one command when ctx has no earlier deadline.
const respTimeout = 5 * time.Second

// respCommand sends one command over a fresh connection to addr and returns its reply: a
// string for simple and bulk strings, int64, []any, nil for a null, and a replyError for an
// error reply.
func respCommand(ctx context.Context, addr string, args ...string) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, respTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := io.WriteString(c, encodeCommand(args...)); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(c), 0)
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

func encodeCommand(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// maxBulk bounds a bulk string this harness accepts (INFO and CLUSTER NODES are a few KiB).
const maxBulk = 16 << 20

// readReply reads one RESP2 reply; depth bounds the nesting of arrays.
func readReply(r *bufio.Reader, depth int) (any, error) {
	if depth > 8 {
		return nil, errors.New("redis reply nested too deep")
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty redis reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, replyError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n > maxBulk {
			return nil, fmt.Errorf("redis bulk length %q", body)
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n > 1<<20 {
			return nil, fmt.Errorf("redis array length %q", body)
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, 0, n)
		for range n {
			v, err := readReply(r, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown redis reply type %q", line)
}

// infoField is the value of field in an INFO reply, "" when absent.
func infoField(info, field string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// pairs turns a flat [k1 v1 k2 v2 ...] reply (SENTINEL REPLICAS entries) into a map.
func pairs(r any) map[string]string {
	a, _ := r.([]any)
	m := make(map[string]string, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		k, _ := a[i].(string)
		v, _ := a[i+1].(string)
		m[k] = v
	}
	return m
}
