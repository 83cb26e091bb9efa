package redisconn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// RESP2, the Redis wire protocol, for the decision hot path (see pipe.go): commands are
// encoded straight into a connection's write buffer, and replies are decoded into the value
// types go-redis gives its callers (int64, string, []interface{}, nil), so that the results
// can be handed back as ordinary go-redis Cmds.

// maxBulk and maxArray bound what a reply may announce before it is read, so that a corrupt
// or hostile length cannot make the reader allocate without limit. Nothing the sidecar asks
// for comes near them.
const (
	maxBulk  = 64 << 20
	maxArray = 1 << 20
	// maxDepth bounds nested arrays; the scripts' replies are flat.
	maxDepth = 8
)

// errProtocol marks a reply that is not RESP2. The connection is closed after one.
var errProtocol = errors.New("redis protocol error")

// errIntRange marks an integer reply, well formed, that an int64 cannot hold. It fails its
// command only: the reply has been read whole, so the connection is still in step.
var errIntRange = errors.New("redis integer reply out of range")

// rangeError is the value readReply gives for an integer reply out of range, or for an array
// holding one (read to its end). Like replyError it belongs to its command; Pipe returns it
// as that command's error.
type rangeError string

func (e rangeError) Error() string { return fmt.Sprintf("redisconn: %v: %s", errIntRange, string(e)) }

// Unwrap makes errors.Is(err, errIntRange) hold.
func (rangeError) Unwrap() error { return errIntRange }

// replyError is an error reply ("-ERR ...", "-NOSCRIPT ..."). It is a go-redis Error, so
// redis.HasErrorPrefix and the callers' NOSCRIPT and WRONGTYPE checks work unchanged. It
// belongs to its command only; the connection stays usable.
type replyError string

func (e replyError) Error() string { return string(e) }

// RedisError marks the type as a Redis error reply for go-redis.
func (replyError) RedisError() {}

// appendCommand appends one command as a RESP array of bulk strings.
func appendCommand(b []byte, args ...string) []byte {
	b = appendHeader(b, '*', len(args))
	for _, a := range args {
		b = appendBulk(b, a)
	}
	return b
}

func appendHeader(b []byte, kind byte, n int) []byte {
	b = append(b, kind)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

func appendBulk(b []byte, s string) []byte {
	b = appendHeader(b, '$', len(s))
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// appendArg appends one argument as a bulk string, formatted the way go-redis formats it.
// Scalars are accepted; anything else is an error rather than a guess at its text form.
func appendArg(b []byte, v interface{}) ([]byte, error) {
	var tmp [32]byte
	var num []byte
	switch v := v.(type) {
	case nil:
		return appendBulk(b, ""), nil
	case string:
		return appendBulk(b, v), nil
	case []byte:
		return appendBulkBytes(b, v), nil
	case int:
		num = strconv.AppendInt(tmp[:0], int64(v), 10)
	case int8:
		num = strconv.AppendInt(tmp[:0], int64(v), 10)
	case int16:
		num = strconv.AppendInt(tmp[:0], int64(v), 10)
	case int32:
		num = strconv.AppendInt(tmp[:0], int64(v), 10)
	case int64:
		num = strconv.AppendInt(tmp[:0], v, 10)
	case time.Duration:
		num = strconv.AppendInt(tmp[:0], v.Nanoseconds(), 10)
	case uint:
		num = strconv.AppendUint(tmp[:0], uint64(v), 10)
	case uint8:
		num = strconv.AppendUint(tmp[:0], uint64(v), 10)
	case uint16:
		num = strconv.AppendUint(tmp[:0], uint64(v), 10)
	case uint32:
		num = strconv.AppendUint(tmp[:0], uint64(v), 10)
	case uint64:
		num = strconv.AppendUint(tmp[:0], v, 10)
	case float32:
		num = strconv.AppendFloat(tmp[:0], float64(v), 'f', -1, 64)
	case float64:
		num = strconv.AppendFloat(tmp[:0], v, 'f', -1, 64)
	case bool:
		if v {
			return appendBulk(b, "1"), nil
		}
		return appendBulk(b, "0"), nil
	default:
		return b, fmt.Errorf("redisconn: cannot send an argument of type %T", v)
	}
	return appendBulkBytes(b, num), nil
}

func appendBulkBytes(b, s []byte) []byte {
	b = appendHeader(b, '$', len(s))
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// readReply reads one reply. A Redis error reply comes back as a replyError value (not as the
// error result), so that one failed command does not look like a broken connection; the error
// result is only for I/O and protocol failures, after which the connection must be closed.
func readReply(r *bufio.Reader) (interface{}, error) {
	return readValue(r, 0)
}

func readValue(r *bufio.Reader, depth int) (interface{}, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	switch line[0] {
	case '+':
		return string(line[1:]), nil
	case '-':
		return replyError(line[1:]), nil
	case ':':
		n, err := parseInt(line[1:])
		if errors.Is(err, errIntRange) {
			return rangeError(truncate(line[1:], 40)), nil
		}
		if err != nil {
			return nil, err
		}
		return n, nil
	case '$':
		n, err := parseLength(line[1:], maxBulk, "bulk")
		if err != nil || n == -1 {
			return nil, err
		}
		return readBulk(r, int(n))
	case '*':
		n, err := parseLength(line[1:], maxArray, "array")
		if err != nil || n == -1 {
			return nil, err
		}
		if depth >= maxDepth {
			return nil, fmt.Errorf("%w: arrays nested deeper than %d", errProtocol, maxDepth)
		}
		out := make([]interface{}, n)
		var bad interface{}
		for i := range out {
			// An error inside an array (a script's pcall result) stays a value, the way
			// go-redis returns it. An integer out of range makes the whole array that
			// value, once the array has been read to its end.
			if out[i], err = readValue(r, depth+1); err != nil {
				return nil, err
			}
			if re, ok := out[i].(rangeError); ok && bad == nil {
				bad = re
			}
		}
		if bad != nil {
			return bad, nil
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: unexpected reply type %q", errProtocol, line[0])
	}
}

// parseLength parses the length of a bulk string or an array: -1 (nil) up to limit. Unlike
// an integer reply, a length out of range is a protocol error: what follows cannot be read.
func parseLength(b []byte, limit int64, what string) (int64, error) {
	n, err := parseInt(b)
	if errors.Is(err, errIntRange) {
		return 0, fmt.Errorf("%w: %s length %q", errProtocol, what, truncate(b, 40))
	}
	if err != nil {
		return 0, err
	}
	if n < -1 || n > limit {
		return 0, fmt.Errorf("%w: %s length %d", errProtocol, what, n)
	}
	return n, nil
}

// readBulk reads a bulk string's n bytes and its CRLF.
func readBulk(r *bufio.Reader, n int) (interface{}, error) {
	var b []byte
	if n+2 <= r.Size() {
		// Fits in the read buffer: the string is the only copy.
		var err error
		if b, err = r.Peek(n + 2); err != nil {
			return nil, err
		}
	} else {
		b = make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
	}
	if b[n] != '\r' || b[n+1] != '\n' {
		return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
	}
	s := string(b[:n])
	if n+2 <= r.Size() {
		_, _ = r.Discard(n + 2)
	}
	return s, nil
}

// readLine returns one CRLF-terminated line without its CRLF. The slice is only valid until
// the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errProtocol, r.Size())
		}
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: malformed line %q", errProtocol, line)
	}
	return line[:len(line)-2], nil
}

// parseInt parses a RESP integer without allocating. A well-formed integer outside int64
// (any number of digits) is errIntRange; anything else that is not an integer is
// errProtocol.
func parseInt(b []byte) (int64, error) {
	digits := b
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		digits = b[1:]
	}
	if len(digits) == 0 {
		return 0, fmt.Errorf("%w: bad integer %q", errProtocol, truncate(b, 40))
	}
	var n uint64
	over := false
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad integer %q", errProtocol, truncate(b, 40))
		}
		d := uint64(c - '0')
		if over || n > (math.MaxUint64-d)/10 {
			over = true
			continue
		}
		n = n*10 + d
	}
	limit := uint64(math.MaxInt64)
	if neg {
		limit++ // -2^63 fits
	}
	if over || n > limit {
		return 0, fmt.Errorf("%w: %q", errIntRange, truncate(b, 40))
	}
	if neg {
		return int64(-n), nil
	}
	return int64(n), nil
}

// truncate returns b as a string of at most n bytes, for error messages.
func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
