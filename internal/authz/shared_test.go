package authz

import (
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// Responses share okStatus and the interned metadata values; marshalling them from many
// goroutines at once, as gRPC does, must be race-free (run under -race) and must give every
// response its own principal.
func TestSharedResponsePartsMarshalConcurrently(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				d := Decision{Allow: true, Status: 200, Policy: "api", Kind: KindSession, Principal: string(rune('a' + g)),
					SetHeaders: []ratelimit.Header{{Name: "x-user-id", Value: "u"}}}
				b, err := proto.Marshal(checkResponse(d))
				if err != nil {
					t.Error(err)
					return
				}
				back := &authv3.CheckResponse{}
				if err := proto.Unmarshal(b, back); err != nil {
					t.Error(err)
					return
				}
				if got := back.GetDynamicMetadata().GetFields()[MetaPrincipal].GetStringValue(); got != d.Principal {
					t.Errorf("iteration %d: principal %q, want %q", i, got, d.Principal)
					return
				}
				if back.GetStatus().GetCode() != 0 || back.GetDynamicMetadata().GetFields()[MetaPolicy].GetStringValue() != "api" {
					t.Errorf("iteration %d: %v", i, back)
					return
				}
			}
		}()
	}
	wg.Wait()
	if okStatus.GetCode() != 0 || okStatus.GetMessage() != "" {
		t.Fatalf("shared okStatus was modified: %v", okStatus)
	}
}
