package config

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse checks the config loader on arbitrary bytes: it never panics, and it returns either a
// config that Validate accepts as it is, or no config and an error whose every part is a
// *FieldError naming the file.
func FuzzParse(f *testing.F) {
	if example, err := os.ReadFile("../../examples/extauthz.yaml"); err == nil {
		f.Add(example)
	}
	f.Add([]byte(""))
	f.Add([]byte("redis: {url: redis://127.0.0.1:6379/0, timeout: 25ms}\n"))
	f.Add([]byte("sessions: {secrets: [s], subject: userId}\npolicies:\n  - {name: a, match: {path_prefix: /a/}, auth: session, limits: [{by: ip, requests: 5, window: 1m}]}\n"))
	f.Add([]byte("policies: [{name: a, limits: [{by: ip, requests: 4000000000000000, window: 1m, algorithm: sliding}]}]\n"))
	f.Add([]byte("listen: &a {grpc: *a}\n"))
	f.Add([]byte("a: &a [*a, *a, *a]\nb: &b [*a, *a]\n"))
	f.Add([]byte("redis:\n  timeout: -1s\n---\nx: 1\n"))
	f.Add([]byte("<<: {listen: {grpc: ':1'}}\n"))
	f.Add([]byte("\t- [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse("f.yaml", data, noEnv) // no environment: the result depends on data alone
		if err == nil {
			if c == nil {
				t.Fatal("parse returned neither a config nor an error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("parse accepted a config that Validate refuses: %v", err)
			}
			return
		}
		if c != nil {
			t.Fatalf("parse returned a config with the error %v", err)
		}
		joined, ok := err.(interface{ Unwrap() []error })
		if !ok {
			t.Fatalf("parse error %T is not a joined error", err)
		}
		for _, e := range joined.Unwrap() {
			var fe *FieldError
			if !errors.As(e, &fe) {
				t.Fatalf("parse error part %v is not a *FieldError", e)
			}
			if fe.File != "f.yaml" && fe.File != "" {
				t.Fatalf("parse error %v names another file", fe)
			}
		}
	})
}
