package redisurl_test

import (
	"fmt"

	"github.com/extauthz/extauthz/internal/redisurl"
)

func ExampleParse() {
	u, err := redisurl.Parse("redis-sentinel://app:s3cret@sentinel-0:26379,sentinel-1/mymaster/2?sentinel_password=other")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(u.Topology, u.Addrs, u.MasterName, u.DB, u.TLS)
	fmt.Println(u.Redacted())

	_, err = redisurl.Parse("redis-cluster://:s3cret@node-0:6379,,node-2:6379")
	fmt.Println(err)
	// Output:
	// sentinel [sentinel-0:26379 sentinel-1:26379] mymaster 2 false
	// redis-sentinel://sentinel-0:26379,sentinel-1:26379/mymaster/2
	// redisurl: url has an empty entry in its host list (host 2 of 3): separate hosts with one comma
}
