package rls

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// str reads a string field. Any scalar is taken as its text, as the reference's YAML library
// does when it decodes into a string, and null is the empty string.
func (p *fileParser) str(n *yaml.Node, path string) string {
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, path, "expected a string, got %s", kindName(n))
		return ""
	}
	if isNull(n) {
		return ""
	}
	return n.Value
}

// boolean reads a bool field. The reference reads YAML 1.1, where yes/no/on/off are booleans,
// so unquoted ones are accepted here too; null is false.
func (p *fileParser) boolean(n *yaml.Node, path string) bool {
	n = deref(n)
	if n.Kind == yaml.ScalarNode {
		if isNull(n) {
			return false
		}
		if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) == 0 {
			switch n.Value {
			case "true", "True", "TRUE", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
				return true
			case "false", "False", "FALSE", "n", "N", "no", "No", "NO", "off", "Off", "OFF":
				return false
			}
		}
	}
	p.errorf(n, path, "expected true or false, got %s", describe(n))
	return false
}

// count reads requests_per_unit: an integer from 0 to 2^32-1, or null for 0 as in the
// reference. Floats are rejected rather than truncated.
func (p *fileParser) count(n *yaml.Node, path string) uint32 {
	n = deref(n)
	if isNull(n) {
		return 0
	}
	var v uint32
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		p.errorf(n, path, "expected an integer from 0 to 4294967295, got %s", describe(n))
		return 0
	}
	return v
}

// validKey reports whether k is a key of the reference's schema, at any level.
func validKey(k string) bool {
	switch k {
	case "domain", "key", "value", "descriptors", "rate_limit", "unit", "requests_per_unit",
		"unlimited", "shadow_mode", "name", "replaces", "detailed_metric", "share_threshold", "quota_mode":
		return true
	}
	return false
}

// deref follows aliases to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch deref(n).Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	}
	return "nothing"
}

// describe names a node for an error message: a scalar by its text, anything else by kind.
func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kindName(n)
}

// splitYAMLError turns yaml.v3's "yaml: line 3: msg" into 3 and "msg". The library gives no
// line for some errors; those get 0. It prints scanner errors' lines 1-based but parser errors'
// 0-based, so a parser error, known by its message, is moved down a line to the one it names.
func splitYAMLError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	rest, ok := strings.CutPrefix(msg, "line ")
	if !ok {
		return 0, msg
	}
	num, after, ok := strings.Cut(rest, ": ")
	line, convErr := strconv.Atoi(num)
	if !ok || convErr != nil {
		return 0, msg
	}
	switch after {
	case "did not find expected <stream-start>", "did not find expected <document start>",
		"did not find expected node content", "did not find expected '-' indicator",
		"did not find expected key", "did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"found undefined tag handle", "found duplicate %YAML directive", "found duplicate %TAG directive",
		"found incompatible YAML document":
		line++
	}
	return line, after
}
