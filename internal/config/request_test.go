package config

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestRequestSection(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		wantPaths []string // nil: valid
	}{
		{"defaults", "{}\n", nil},
		{"trusted proxies and allow", "trusted_proxies: [10.0.0.0/8, 127.0.0.1, 'fd00::/8']\nclient_ip_header: x-real-ip\nrequest: {allow: [encoded_slash, semicolon]}\n", nil},
		{"bad cidr", "trusted_proxies: [10.0.0.0/33, nope]\n", []string{"trusted_proxies[0]", "trusted_proxies[1]"}},
		{"bad header", "client_ip_header: forwarded\n", []string{"client_ip_header"}},
		{"unknown class", "request: {allow: [fragment, dot_segments]}\n", []string{"request.allow[0]", "request.allow[1]"}},
		{"caps out of range", "request: {max_headers: 0, max_target_length: 10}\n", []string{"request.max_headers", "request.max_target_length"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(tt.yaml), noEnv)
			var got []string
			for _, e := range unwrapAll(err) {
				var fe *FieldError
				if errors.As(e, &fe) {
					got = append(got, fe.Path)
				}
			}
			if !slices.Equal(got, tt.wantPaths) {
				t.Errorf("problems at %v, want %v (%v)", got, tt.wantPaths, err)
			}
		})
	}
}

func TestParsedTrustedProxies(t *testing.T) {
	c := Default()
	c.TrustedProxies = []string{"10.1.2.3/8", "::ffff:127.0.0.1", "2001:db8::1"}
	got, err := c.ParsedTrustedProxies()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("2001:db8::1/128")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func unwrapAll(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
