package rls_test

import (
	"fmt"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/ratelimit/rls"
)

func ExampleConfig_Match() {
	cfg, err := rls.Parse([]rls.File{{Name: "api.yaml", Data: []byte(`
domain: api
descriptors:
  - key: path
    value: "/api/*"
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 60}
`)}})
	if err != nil {
		fmt.Println(err)
		return
	}
	lim := cfg.Match("api", []*ratelimitv3.RateLimitDescriptor_Entry{
		{Key: "path", Value: "/api/orders"},
		{Key: "user", Value: "alice"},
	})
	fmt.Println(lim.RequestsPerUnit, lim.Unit, lim.Window, lim.Rule)
	// A request that stops at the path level gets no limit: the rule is one level deeper.
	fmt.Println(cfg.Match("api", []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "path", Value: "/api/orders"}}) == nil)
	// Output:
	// 60 MINUTE 60 api.path_/api/*.user
	// true
}
