// Command extauthz is the sidecar: Envoy's ext_authz and ratelimit services over Redis.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
