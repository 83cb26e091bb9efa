package redisconn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		// err is nil, errIntRange (well formed, too large) or errProtocol.
		err error
	}{
		{"0", 0, nil},
		{"-1", -1, nil},
		{"42", 42, nil},
		{"9223372036854775807", 1<<63 - 1, nil},
		{"-9223372036854775807", -(1<<63 - 1), nil},
		// Redis sends -2^63 for a Lua number at or past 2^63 (INCRBY to 2^63-1, then
		// returned from a script): it must not read as a broken connection.
		{"-9223372036854775808", -1 << 63, nil},
		{"9223372036854775808", 0, errIntRange},
		{"-9223372036854775809", 0, errIntRange},
		{"18446744073709551616", 0, errIntRange},
		{"123456789012345678901", 0, errIntRange},
		{strings.Repeat("9", 400), 0, errIntRange},
		{"", 0, errProtocol},
		{"-", 0, errProtocol},
		{"+1", 0, errProtocol},
		{"1 ", 0, errProtocol},
		{"0x10", 0, errProtocol},
		{strings.Repeat("9", 30) + "x", 0, errProtocol},
	} {
		got, err := parseInt([]byte(tc.in))
		if tc.err == nil && (err != nil || got != tc.want) {
			t.Errorf("parseInt(%.40q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("parseInt(%.40q) = %d, %v; want %v", tc.in, got, err, tc.err)
		}
		if errors.Is(err, errIntRange) && errors.Is(err, errProtocol) {
			t.Errorf("parseInt(%.40q): %v is both out of range and a protocol error", tc.in, err)
		}
	}
}

// An integer reply out of range becomes its command's error value, alone or inside an
// array, and the reader stays in step: the next reply reads as it was sent. A length out of
// range still breaks the connection, since what follows it cannot be found.
func TestReadReplyIntegerOutOfRange(t *testing.T) {
	huge := "99999999999999999999999"
	for _, tc := range []struct{ name, in string }{
		{"alone", ":" + huge + "\r\n"},
		{"in an array", "*3\r\n:1\r\n:" + huge + "\r\n$1\r\nx\r\n"},
		{"nested, with a later one", "*2\r\n*2\r\n:-" + huge + "\r\n:2\r\n:" + huge + "\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tc.in+"+NEXT\r\n"), 64)
			v, err := readReply(r)
			re, ok := v.(rangeError)
			if err != nil || !ok || !errors.Is(re, errIntRange) || errors.Is(re, errProtocol) {
				t.Fatalf("readReply = %#v, %v; want a rangeError value", v, err)
			}
			if v, err := readReply(r); v != "NEXT" || err != nil {
				t.Fatalf("next reply = %#v, %v; want NEXT: the reader lost its place", v, err)
			}
		})
	}
	for _, in := range []string{"$" + huge + "\r\n", "*" + huge + "\r\n"} {
		if _, err := readReply(bufio.NewReader(strings.NewReader(in))); !errors.Is(err, errProtocol) {
			t.Errorf("readReply(%q) = %v, want a protocol error", in, err)
		}
	}
}

func TestReadReplyLimits(t *testing.T) {
	deep := strings.Repeat("*1\r\n", maxDepth+1) + ":1\r\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"nested too deep", deep, "nested deeper"},
		{"array too long", fmt.Sprintf("*%d\r\n", maxArray+1), "array length"},
		{"negative length", "$-2\r\n", "bulk length"},
		{"bare LF", "+OK\n", "malformed line"},
		{"line longer than the buffer", "+" + strings.Repeat("x", 200) + "\r\n", "line longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readReply(bufio.NewReaderSize(strings.NewReader(tc.in), 64))
			if !errors.Is(err, errProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readReply = %v, want a protocol error saying %q", err, tc.want)
			}
		})
	}
	// A bulk string longer than the read buffer is read in full, outside it.
	long := strings.Repeat("y", 300)
	v, err := readReply(bufio.NewReaderSize(strings.NewReader(fmt.Sprintf("$%d\r\n%s\r\n", len(long), long)), 64))
	if err != nil || v != long {
		t.Fatalf("long bulk = %v, %v", v, err)
	}
}

// The encoder's output is what the decoder reads back: a command is an array of bulk strings.
func TestAppendCommandRoundTrip(t *testing.T) {
	b := appendCommand(nil, "SET", "k", "v\r\n", "")
	v, err := readReply(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%q", v); got != `["SET" "k" "v\r\n" ""]` {
		t.Fatalf("round trip = %s", got)
	}
}

// Arbitrary bytes never panic the decoder or make it read past what it was given; what it
// accepts re-reads the same from a buffer of the minimum size.
func FuzzReadReply(f *testing.F) {
	for _, seed := range []string{
		"+OK\r\n", "-ERR x\r\n", ":-12\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*-1\r\n",
		"*3\r\n:1\r\n$1\r\nx\r\n*1\r\n+y\r\n", "*2\r\n$0\r\n\r\n-NOSCRIPT no\r\n", "$5\r\nab\r\n", "*1\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		v, err := readReply(r)
		if err != nil {
			return
		}
		again, err := readReply(bufio.NewReaderSize(bytes.NewReader(in), 4096))
		if err != nil || fmt.Sprintf("%#v", again) != fmt.Sprintf("%#v", v) {
			t.Fatalf("%q: %#v with a small buffer, %#v (%v) with a large one", in, v, again, err)
		}
	})
}
