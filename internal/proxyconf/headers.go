package proxyconf

import (
	"net/http"
	"regexp"
	"strings"
)

// maxVariantDashes bounds the '_' spellings generated for one header name: a name with more
// dashes gets only the spelling with every dash an underscore, not all 2^n mixes.
const maxVariantDashes = 4

// newHeader spells a lower-case header name every way a proxy template needs it.
func newHeader(lower string) header {
	lower = strings.ToLower(lower)
	h := header{
		Lower:     lower,
		Canonical: http.CanonicalHeaderKey(lower),
		Var:       strings.ReplaceAll(lower, "-", "_"),
		Variants:  underscoreVariants(http.CanonicalHeaderKey(lower)),
	}
	for _, part := range strings.Split(h.Canonical, "-") {
		h.Ident += part
	}
	return h
}

// underscoreVariants returns name with one or more of its dashes written as underscores, in
// Go's canonical case of each result (which is how Caddy and Traefik delete a header, and how
// Go's server stores one it received).
func underscoreVariants(name string) []string {
	dashes := strings.Count(name, "-")
	if dashes == 0 {
		return nil
	}
	if dashes > maxVariantDashes {
		return []string{http.CanonicalHeaderKey(strings.ReplaceAll(name, "-", "_"))}
	}
	var out []string
	for mask := 1; mask < 1<<dashes; mask++ {
		var b strings.Builder
		i := 0
		for _, c := range name {
			if c == '-' {
				if mask&(1<<i) != 0 {
					c = '_'
				}
				i++
			}
			b.WriteRune(c)
		}
		out = append(out, http.CanonicalHeaderKey(b.String()))
	}
	return out
}

// canonicals joins the canonical names of hs with spaces (Caddy's copy_headers).
func canonicals(hs []header) string {
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Canonical
	}
	return strings.Join(names, " ")
}

// lowers joins the lower-case names of hs with commas (comments).
func lowers(hs []header) string {
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Lower
	}
	return strings.Join(names, ", ")
}

// alternation joins the lower-case names of hs as a regular expression alternation.
func alternation(hs []header) string {
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = regexp.QuoteMeta(h.Lower)
	}
	return strings.Join(names, "|")
}
