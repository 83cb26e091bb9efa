package redistest

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

// The topologies ask their nodes about roles, slots and peers with the few lines of RESP2 in
// this file rather than with a client library: the harness must not depend on the client
// under test, and must keep working whichever library the project settles on.

// ReplyError is an error reply (-ERR ..., -MOVED ...) from the server, without its '-'.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// Command sends one command over a fresh connection to addr (after AUTH when password is
// set) and returns its reply: a string for simple and bulk strings, int64, []any, nil for a
// null, and a ReplyError for an error reply. ctx bounds the whole exchange; without a
// deadline it gets 5 s. It is the one small RESP2 reader of the test harnesses (topologies,
// e2e checks, the benchmark's setup), so that they never depend on the client under test.
func Command(ctx context.Context, addr, password string, args ...string) (any, error) {
	return command(ctx, addr, password, args...)
}

// InfoField returns field of an INFO or CLUSTER INFO text ("" when absent).
func InfoField(info, field string) string { return infoField(info, field) }

// Pairs turns a flat RESP2 key/value array (SENTINEL REPLICAS entries) into a map.
func Pairs(v any) map[string]string { return pairs(v) }

// command sends one command over a fresh connection to addr, after AUTH when password is
// set, and returns its reply: a string for simple and bulk strings, int64, []any, nil for a
// null, and a ReplyError for an error reply.
func command(ctx context.Context, addr, password string, args ...string) (any, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	var b strings.Builder
	if password != "" {
		writeCommand(&b, "AUTH", password)
	}
	writeCommand(&b, args...)
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := readReply(r, 0); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	return readReply(r, 0)
}

func writeCommand(b *strings.Builder, args ...string) {
	fmt.Fprintf(b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(b, "$%d\r\n%s\r\n", len(a), a)
	}
}

// Bounds on what readReply accepts from a server: far above any reply the harnesses read
// (INFO, CLUSTER SLOTS), far below what would exhaust memory on a garbled stream.
const (
	maxBulk  = 64 << 20
	maxArray = 1 << 20
)

// readReply reads one RESP2 reply; depth bounds the nesting of arrays.
func readReply(r *bufio.Reader, depth int) (any, error) {
	if depth > 8 {
		return nil, errors.New("reply nested too deep")
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, ReplyError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n > maxBulk {
			return nil, fmt.Errorf("bulk length %q", body)
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
		if err != nil || n > maxArray {
			return nil, fmt.Errorf("array length %q", body)
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, 0, n)
		for i := 0; i < n; i++ {
			v, err := readReply(r, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply type %q", line)
}

// ask runs command under a short deadline and returns the reply.
func ask(addr, password string, args ...string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return command(ctx, addr, password, args...)
}

// askString runs command and expects a string reply.
func askString(addr, password string, args ...string) (string, error) {
	r, err := ask(addr, password, args...)
	if err != nil {
		return "", err
	}
	s, ok := r.(string)
	if !ok {
		return "", fmt.Errorf("%s: reply %T, want a string", args[0], r)
	}
	return s, nil
}

// infoField returns field of an INFO or CLUSTER INFO text ("" when absent).
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// pairs turns a flat RESP2 key/value array (SENTINEL REPLICAS entries) into a map.
func pairs(v any) map[string]string {
	a, _ := v.([]any)
	m := make(map[string]string, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		k, _ := a[i].(string)
		val, _ := a[i+1].(string)
		m[k] = val
	}
	return m
}
