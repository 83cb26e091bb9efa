package rls

import (
	"strings"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
)

// level is one level of descriptors, indexed by key at parse time so that Match does two map
// lookups per request entry and allocates nothing.
type level struct {
	byKey map[string]*keyRules
}

// keyRules are the descriptors of one level that share a key, in the order Match tries them.
type keyRules struct {
	// exact maps each configured value to its descriptor. Values with a '*' are here too: the
	// reference looks a request's value up literally before it tries any pattern.
	exact map[string]*node
	// wildcards are the values with a '*', in config order, because the first match wins.
	wildcards []wildcard
	// fallback is the descriptor with this key and no value, which matches any value.
	fallback *node
}

type wildcard struct {
	pattern pattern
	// value is the configured value, the stars included: the counter key of a share_threshold
	// wildcard spells it instead of the request's value.
	value string
	node  *node
}

// node is one descriptor: its own limit (nil when it has none) and its nested level (nil when
// it has no nested descriptors, which ends the walk).
type node struct {
	limit *RateLimit
	next  *level
	// share is the descriptor's share_threshold (only ever set on a wildcard value): every
	// request value it matches counts on one counter, keyed by the pattern.
	share bool
}

// add puts a descriptor into the level. The parser has already rejected duplicates.
func (l *level) add(key, value string, n *node) {
	kr := l.byKey[key]
	if kr == nil {
		kr = &keyRules{}
		l.byKey[key] = kr
	}
	if value == "" {
		kr.fallback = n
		return
	}
	if kr.exact == nil {
		kr.exact = make(map[string]*node)
	}
	kr.exact[value] = n
	if strings.Contains(value, "*") {
		kr.wildcards = append(kr.wildcards, wildcard{pattern: compilePattern(value), value: value, node: n})
	}
}

// lookup finds the descriptor a request entry matches: the exact value, then the first
// matching pattern, then the key-only fallback. keyValue is the value the entry's part of the
// counter key spells: the request's own, or a share_threshold wildcard's pattern.
func (l *level) lookup(key, value string) (n *node, keyValue string) {
	kr := l.byKey[key]
	if kr == nil {
		return nil, value
	}
	if n := kr.exact[value]; n != nil {
		return n, value
	}
	for i := range kr.wildcards {
		if w := &kr.wildcards[i]; w.pattern.match(value) {
			if w.node.share {
				return w.node, w.value
			}
			return w.node, value
		}
	}
	return kr.fallback, value
}

// Match returns the limit that applies to a request descriptor in domain, or nil when none
// does. It walks the request's entries level by level as the reference's GetLimit does: a
// limit applies only on the level of the request's last entry, so a request deeper or
// shallower than the rule gets no limit. The result is shared and must not be modified.
func (c *Config) Match(domain string, entries []*ratelimitv3.RateLimitDescriptor_Entry) *RateLimit {
	lim, _ := c.MatchShared(domain, entries)
	return lim
}

// MatchShared is Match that also says which entries' values a share_threshold wildcard
// replaced on the way: shared is nil when none did (the usual case, which allocates nothing);
// otherwise shared[i], when not "", is the pattern entry i counts under, so that every value
// the wildcard matches counts on one counter, as the reference's share_threshold does.
func (c *Config) MatchShared(domain string, entries []*ratelimitv3.RateLimitDescriptor_Entry) (lim *RateLimit, shared []string) {
	if c == nil || len(entries) == 0 {
		return nil, nil
	}
	lvl := c.domains[domain]
	last := len(entries) - 1
	for i, e := range entries {
		if lvl == nil {
			return nil, nil
		}
		n, kv := lvl.lookup(e.GetKey(), e.GetValue())
		if n == nil {
			return nil, nil
		}
		if n.share && kv != e.GetValue() {
			if shared == nil {
				shared = make([]string, len(entries))
			}
			shared[i] = kv
		}
		if i == last {
			if n.limit == nil {
				return nil, nil
			}
			return n.limit, shared
		}
		lvl = n.next
	}
	return nil, nil
}

// pattern is a compiled config value with '*' wildcards, each matching any run of characters,
// the empty one included. It is split at the stars so that matching is a prefix test, a
// suffix test and a left-to-right search for the parts between, which finds a match whenever
// there is one and allocates nothing.
type pattern struct {
	prefix, suffix string
	middle         []string
	// minLen is the length of all the literal parts: no shorter value can match.
	minLen int
}

// compilePattern compiles a value that contains at least one '*'.
func compilePattern(s string) pattern {
	parts := strings.Split(s, "*")
	p := pattern{prefix: parts[0], suffix: parts[len(parts)-1]}
	p.minLen = len(p.prefix) + len(p.suffix)
	for _, m := range parts[1 : len(parts)-1] {
		if m == "" {
			continue // "**" is the same as "*".
		}
		p.middle = append(p.middle, m)
		p.minLen += len(m)
	}
	return p
}

func (p *pattern) match(v string) bool {
	if len(v) < p.minLen || !strings.HasPrefix(v, p.prefix) || !strings.HasSuffix(v, p.suffix) {
		return false
	}
	// The prefix and suffix cannot overlap because v is at least as long as both; the middle
	// parts must appear in order in what lies between them, and taking each at its leftmost
	// place leaves the most room for the rest.
	v = v[len(p.prefix) : len(v)-len(p.suffix)]
	for _, m := range p.middle {
		i := strings.Index(v, m)
		if i < 0 {
			return false
		}
		v = v[i+len(m):]
	}
	return true
}
