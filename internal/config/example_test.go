package config_test

import (
	"fmt"

	"github.com/extauthz/extauthz/internal/config"
)

func ExampleParse() {
	cfg, err := config.Parse("extauthz.yaml", []byte(`
redis:
  url: redis://127.0.0.1:6379/0
  timeout: 50ms
ratelimit:
  config_dir: /etc/extauthz/rls.d
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Redis.Timeout, cfg.Listen.GRPC, cfg.Embedded())

	_, err = config.Parse("extauthz.yaml", []byte(`
listen:
  grcp: 127.0.0.1:9001
redis:
  timeout: 25
`))
	fmt.Println(err)
	// Output:
	// 50ms 127.0.0.1:9001 false
	// extauthz.yaml:3: listen.grcp: unknown field (did you mean "grpc"?)
	// extauthz.yaml:5: redis.timeout: 25 has no unit: use a unit, e.g. 25ms
}
