package redisconn

import (
	"fmt"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// endpoint is the part of a Redis URL the single-node client uses, with the credentials kept
// apart so that nothing that prints an endpoint can print them.
type endpoint struct {
	// scheme is redis, rediss or unix.
	scheme string
	// addrs holds one host:port pair, or a single socket path for unix.
	addrs []string
	// db is the logical database selected on every new connection.
	db       int
	username string
	password string
}

// describe renders the endpoint as a URL without credentials, for logs and errors, as
// redisurl renders every URL.
func (e endpoint) describe() string {
	u := redisurl.URL{Topology: redisurl.Single, TLS: e.scheme == "rediss", Addrs: e.addrs, DB: e.db}
	if e.scheme == "unix" {
		u.Topology = redisurl.Unix
	}
	return u.Redacted()
}

// parseURL reads raw with redisurl.Parse, the parser config validation runs too, and keeps
// what the single-node client can use. Sentinel and Cluster URLs parse but are refused here
// until the decision client can reach them; removing that refusal is the whole of this
// function's part in supporting them.
func parseURL(raw string) (endpoint, error) {
	u, err := redisurl.Parse(raw)
	if err != nil {
		// Its message never quotes a credential.
		return endpoint{}, err
	}
	switch u.Topology {
	case redisurl.Single, redisurl.Unix:
	default:
		return endpoint{}, fmt.Errorf("redisconn: %s:// is parsed but the decision client does not support it yet (issue 11)", u.Scheme())
	}
	return endpoint{scheme: u.Scheme(), addrs: u.Addrs, db: u.DB, username: u.Username, password: u.Password}, nil
}
