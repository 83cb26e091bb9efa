package sessions

import (
	"reflect"
	"strings"
	"testing"
)

// Options.Scopes reads a scope string or a list of scopes from the session, as Roles reads
// roles; unset, sessions carry no scopes even when the session holds the field.
func TestScopes(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			b := b.start(t)
			b.set(t, "sess:list", `{"userId":"u1","perms":{"scopes":["read","",3,"write","x\r\ny"]}}`)
			b.set(t, "sess:one", `{"userId":"u2","perms":{"scopes":"read"}}`)
			b.set(t, "sess:obj", `{"userId":"u3","perms":{"scopes":{"read":true}}}`)
			s := newStore(t, b.rdb, Options{Secrets: []string{"k"}, Subject: "userId", Scopes: "perms.scopes"})
			for sid, want := range map[string][]string{"list": {"read", "write"}, "one": {"read"}, "obj": nil} {
				got, err := s.Resolve(t.Context(), cookieHeader(sid, "k"))
				if err != nil {
					t.Fatalf("%s: Resolve: %v", sid, err)
				}
				if !reflect.DeepEqual(got.Scopes, want) {
					t.Errorf("%s: Scopes = %q, want %q", sid, got.Scopes, want)
				}
				if got.Roles != nil {
					t.Errorf("%s: Roles = %q, want none (Roles is unset)", sid, got.Roles)
				}
			}
			unset := newStore(t, b.rdb, Options{Secrets: []string{"k"}, Subject: "userId", Roles: "perms.scopes"})
			got, err := unset.Resolve(t.Context(), cookieHeader("list", "k"))
			if err != nil {
				t.Fatal(err)
			}
			if got.Scopes != nil || !reflect.DeepEqual(got.Roles, []string{"read", "write"}) {
				t.Errorf("Scopes unset: scopes %q roles %q, want no scopes and the roles", got.Scopes, got.Roles)
			}
		})
	}
}

func TestScopesPathValidated(t *testing.T) {
	_, err := New(idleClient(t), Options{Secrets: []string{"k"}, Subject: "userId", Scopes: "perms..scopes"})
	if err == nil || !strings.Contains(err.Error(), "Scopes:") {
		t.Fatalf("New with a bad scopes path: %v, want a Scopes error", err)
	}
}
