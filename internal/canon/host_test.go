package canon

import (
	"errors"
	"strings"
	"testing"
)

func TestHost(t *testing.T) {
	tests := []struct {
		name, host, want string
		bad              bool
	}{
		{name: "empty", host: "", want: ""},
		{name: "plain", host: "example.com", want: "example.com"},
		{name: "case folded", host: "Admin.Example.COM", want: "admin.example.com"},
		{name: "port and trailing dot", host: "Admin.Example.COM.:8443", want: "admin.example.com"},
		{name: "trailing dot", host: "admin.example.com.", want: "admin.example.com"},
		{name: "empty port", host: "example.com:", want: "example.com"},
		{name: "underscore", host: "my_host.local", want: "my_host.local"},
		{name: "ipv4 with port", host: "127.0.0.1:9002", want: "127.0.0.1"},
		{name: "ipv6 literal with port", host: "[::1]:80", want: "::1"},
		{name: "ipv6 literal", host: "[FE80::1]", want: "fe80::1"},
		{name: "ipv6 literal canonical", host: "[::0001]", want: "::1"},
		{name: "bare ipv6", host: "::1", want: "::1"},
		{name: "single label", host: "localhost", want: "localhost"},

		{name: "space", host: "example.com ", bad: true},
		{name: "slash", host: "example.com/admin", bad: true},
		{name: "at sign", host: "user@example.com", bad: true},
		{name: "percent", host: "ex%61mple.com", bad: true},
		{name: "non-ascii", host: "ex\xc3\xa4mple.com", bad: true},
		{name: "port not digits", host: "example.com:http", bad: true},
		{name: "two trailing dots", host: "example.com..", bad: true},
		{name: "empty label", host: "a..example.com", bad: true},
		{name: "leading dot", host: ".example.com", bad: true},
		{name: "only a dot", host: ".", bad: true},
		{name: "only a port", host: ":80", bad: true},
		{name: "unclosed bracket", host: "[::1", bad: true},
		{name: "text after bracket", host: "[::1]x", bad: true},
		{name: "bracket not ipv6", host: "[example.com]", bad: true},
		{name: "ipv4 in brackets", host: "[127.0.0.1]", bad: true},
		{name: "bracket inside", host: "a[b]", bad: true},
		{name: "colons not ipv6", host: "a:b:c", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Host(tt.host)
			if tt.bad {
				var ce *Error
				if !errors.As(err, &ce) || ce.Reason != ReasonBadHost {
					t.Fatalf("Host(%q) = %q, %v; want bad_host", tt.host, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Host(%q) = %q, %v; want %q", tt.host, got, err, tt.want)
			}
		})
	}
}

func TestHostCanonicalDoesNotAllocate(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		if _, err := Host("example.com"); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("Host allocates %v times for a canonical host, want 0", n)
	}
}

func TestMethod(t *testing.T) {
	tests := []struct {
		name, method string
		ok           bool
	}{
		{name: "get", method: "GET", ok: true},
		{name: "delete", method: "DELETE", ok: true},
		{name: "extension with dash", method: "M-SEARCH", ok: true},
		{name: "empty", method: ""},
		{name: "lower case", method: "get"},
		{name: "mixed case", method: "Get"},
		{name: "space", method: "GET "},
		{name: "separator", method: "GET/1"},
		{name: "non-ascii", method: "G\xc3\x89T"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Method(tt.method)
			if !tt.ok {
				var ce *Error
				if !errors.As(err, &ce) || ce.Reason != ReasonBadMethod {
					t.Fatalf("Method(%q) = %q, %v; want bad_method", tt.method, got, err)
				}
				return
			}
			if err != nil || got != tt.method {
				t.Fatalf("Method(%q) = %q, %v", tt.method, got, err)
			}
		})
	}
}

func TestParseClasses(t *testing.T) {
	got, err := ParseClasses(ClassNames)
	if err != nil || got != allClasses {
		t.Fatalf("ParseClasses(all) = %v, %v; want %v", got, err, allClasses)
	}
	for i, name := range ClassNames {
		c, err := ParseClasses([]string{name})
		if err != nil || c != Class(1)<<i {
			t.Fatalf("ParseClasses(%q) = %v, %v", name, c, err)
		}
		if c.String() != name {
			t.Fatalf("Class(%d).String() = %q, want %q", c, c.String(), name)
		}
	}
	if c, err := ParseClasses(nil); err != nil || c != 0 || c.String() != "none" {
		t.Fatalf("ParseClasses(nil) = %v, %v", c, err)
	}
	_, err = ParseClasses([]string{"semicolon", "encoded-slash"})
	if err == nil {
		t.Fatal("ParseClasses accepted a misspelled class")
	}
	for _, name := range ClassNames {
		if !strings.Contains(err.Error(), name) {
			t.Fatalf("error %q does not list %q", err, name)
		}
	}
}
