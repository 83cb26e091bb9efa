package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// The defaults of sessions.index; internal/sessions has the same values and says why.
const (
	DefaultSessionIndexPrefix     = "extauthz:sessions:"
	DefaultSessionIndexMaxPerUser = 50
	DefaultSessionIndexSeenEvery  = time.Minute
	// MaxSessionIndexPerUser bounds sessions.index.max_per_user.
	MaxSessionIndexPerUser = 1000
)

// SessionIndex configures the per-user index of sessions that `extauthz sessions` and the
// admin API's /v1/sessions list and revoke from ("sign out everywhere"). It applies only when
// sessions are configured.
type SessionIndex struct {
	// Enabled keeps the index; on by default.
	Enabled bool `yaml:"enabled"`
	// Prefix starts every key of the index. It may not hold { or }, which would move the
	// keys' Redis Cluster hash slot.
	Prefix string `yaml:"prefix"`
	// MaxPerUser caps the sessions indexed per user; past it the soonest-expiring drop out of
	// the index (the sessions themselves stay valid).
	MaxPerUser int `yaml:"max_per_user"`
	// SeenEvery is the least time between two updates of a session's last_seen by one
	// sidecar. A session is also written when a sidecar first resolves it.
	SeenEvery Duration `yaml:"seen_every"`
}

func defaultSessionIndex() SessionIndex {
	return SessionIndex{
		Enabled:    true,
		Prefix:     DefaultSessionIndexPrefix,
		MaxPerUser: DefaultSessionIndexMaxPerUser,
		SeenEvery:  Duration(DefaultSessionIndexSeenEvery),
	}
}

// sessionIndex checks sessions.index.
func (k *checker) sessionIndex() {
	ix := k.c.Sessions.Index
	if p := ix.Prefix; p == "" || strings.ContainsAny(p, "{} \t\r\n") {
		k.fail("sessions.index.prefix", p, "%q must be non-empty, without braces or whitespace", p)
	}
	if n := ix.MaxPerUser; n < 1 || n > MaxSessionIndexPerUser {
		k.fail("sessions.index.max_per_user", n, "must be from 1 to %d, got %d", MaxSessionIndexPerUser, n)
	}
	if ix.SeenEvery < Duration(time.Second) {
		k.fail("sessions.index.seen_every", ix.SeenEvery, "must be at least 1s, got %s", ix.SeenEvery)
	}
}

// adminAPI checks admin.api_allow.
func (k *checker) adminAPI() {
	for i, s := range k.c.Admin.APIAllow {
		if _, err := parseAllow(s); err != nil {
			k.fail(fmt.Sprintf("admin.api_allow[%d]", i), s, "%q is not a CIDR or an IP address", s)
		}
	}
}

// APIAllowPrefixes returns admin.api_allow parsed; a single address is a prefix of its full
// length. Call it on a validated config: entries that do not parse are left out.
func (a Admin) APIAllowPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range a.APIAllow {
		if p, err := parseAllow(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parseAllow(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
