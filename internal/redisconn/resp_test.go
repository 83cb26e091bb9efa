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
		ok   bool
	}{
		{"0", 0, true},
		{"-1", -1, true},
		{"42", 42, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"-9223372036854775807", -(1<<63 - 1), true},
		{"9223372036854775808", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"+1", 0, false},
		{"1 ", 0, false},
		{"0x10", 0, false},
		{"123456789012345678901", 0, false},
	} {
		got, err := parseInt([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseInt(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, errProtocol) {
			t.Errorf("parseInt(%q) error %v is not a protocol error", tc.in, err)
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
