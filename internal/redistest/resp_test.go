package redistest

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	cases := []struct {
		in   string
		want any
	}{
		{"+OK\r\n", "OK"},
		{":42\r\n", int64(42)},
		{"$5\r\nhello\r\n", "hello"},
		{"$0\r\n\r\n", ""},
		{"$-1\r\n", nil},
		{"*-1\r\n", nil},
		{"*3\r\n$3\r\nfoo\r\n:1\r\n*2\r\n+a\r\n$-1\r\n", []any{"foo", int64(1), []any{"a", nil}}},
		{"$12\r\nline1\r\nline2\r\n", "line1\r\nline2"}, // a bulk string may hold CRLF
	}
	for _, c := range cases {
		got, err := readReply(bufio.NewReader(strings.NewReader(c.in)), 0)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("readReply(%q) = %#v, %v; want %#v", c.in, got, err, c.want)
		}
	}

	_, err := readReply(bufio.NewReader(strings.NewReader("-MOVED 3999 127.0.0.1:6381\r\n")), 0)
	var re ReplyError
	if !errors.As(err, &re) || string(re) != "MOVED 3999 127.0.0.1:6381" {
		t.Errorf("error reply: err = %v", err)
	}
	for _, bad := range []string{"", "?x\r\n", "$5\r\nab\r\n", ":x\r\n", "$99999999999\r\n", "*99999999999\r\n", strings.Repeat("*1\r\n", 10) + ":1\r\n"} {
		if got, err := readReply(bufio.NewReader(strings.NewReader(bad)), 0); err == nil {
			t.Errorf("readReply(%q) = %#v, want an error", bad, got)
		}
	}
}

func TestInfoFieldAndPairs(t *testing.T) {
	info := "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n"
	if got := InfoField(info, "master_link_status"); got != "up" {
		t.Errorf("InfoField = %q", got)
	}
	if got := InfoField(info, "master"); got != "" {
		t.Errorf("InfoField of a prefix = %q, want none", got)
	}
	m := Pairs([]any{"flags", "slave", "port", "6380", "odd"})
	if m["flags"] != "slave" || m["port"] != "6380" || len(m) != 2 {
		t.Errorf("Pairs = %v", m)
	}
}
