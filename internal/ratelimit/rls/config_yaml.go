package rls

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds the YAML nodes walked in one file. Aliases are expanded as they are walked,
// so without a bound a few lines of nested aliases could make a reload run for ever.
const maxNodes = 1 << 20

// maxErrors bounds the problems reported for one file: past a hundred, more only bury the
// first ones, which are the ones to fix.
const maxErrors = 100

// fileParser walks one file's YAML nodes, checking every field against the reference
// service's schema and collecting every problem instead of stopping at the first.
type fileParser struct {
	file  string
	errs  []error
	rules int
	nodes int
	// stopped is set once the node or error budget is spent; the walk then unwinds quietly.
	stopped bool
}

// field is one key of a YAML mapping with its value.
type field struct {
	name string
	val  *yaml.Node
	path string
}

func (p *fileParser) errorf(n *yaml.Node, path, format string, args ...any) {
	if p.stopped {
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	if len(p.errs) == maxErrors {
		format, args = "too many errors, stopping", nil
		p.stopped = true
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// spend charges one node to the budget and reports whether the walk may go on.
func (p *fileParser) spend(n *yaml.Node, path string) bool {
	if p.stopped {
		return false
	}
	p.nodes++
	if p.nodes > maxNodes {
		p.errorf(n, path, "config too large: more than %d YAML nodes after expanding aliases", maxNodes)
		p.stopped = true
		return false
	}
	return true
}

// parse walks a whole file and returns its domain, the domain's line and its descriptors.
func (p *fileParser) parse(data []byte) (domain string, domainLine int, root *level) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := splitYAMLError(err)
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: msg})
		return "", 0, nil
	}
	var top *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		top = deref(doc.Content[0])
	}
	var domainNode *yaml.Node
	if top != nil && !isNull(top) {
		var descriptors *field
		fields := p.mapping(top, "")
		for i := range fields {
			f := &fields[i]
			switch f.name {
			case "domain":
				domainNode = f.val
				domain = p.str(f.val, f.path)
			case "descriptors":
				descriptors = f
			default:
				p.ignored(*f)
			}
		}
		// Descriptors are walked once the domain is known, wherever it is in the file,
		// because every rule's name starts with it, like the reference's stats keys.
		if descriptors != nil {
			root = p.descriptors(descriptors.val, descriptors.path, domain)
		}
	}
	switch {
	case domainNode != nil:
		domainLine = domainNode.Line
	case top != nil:
		domainLine = top.Line
	}
	if domain == "" && !p.stopped {
		p.errs = append(p.errs, &Error{File: p.file, Line: domainLine, Path: "domain", Msg: "empty domain"})
	}
	return domain, domainLine, root
}

// descriptors walks a descriptors list into a level. It returns nil for a missing or empty
// list, which the reference treats as a leaf.
func (p *fileParser) descriptors(n *yaml.Node, path, parentRule string) *level {
	n = deref(n)
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "expected a list of descriptors, got %s", kindName(n))
		return nil
	}
	lvl := &level{byKey: make(map[string]*keyRules)}
	// seen holds each composite key ("key" or "key_value") of this level with the path of the
	// descriptor that declared it. The reference keys its maps by that composite, so it
	// rejects ("a_b") beside ("a", "b"), and so do we.
	seen := make(map[string]string)
	for i, item := range n.Content {
		p.descriptor(lvl, seen, item, fmt.Sprintf("%s[%d]", path, i), parentRule)
	}
	if len(lvl.byKey) == 0 {
		return nil
	}
	return lvl
}

// descriptor walks one descriptor and adds it to lvl when it is valid.
func (p *fileParser) descriptor(lvl *level, seen map[string]string, n *yaml.Node, path, parentRule string) {
	var (
		key, value          string
		keyNode             *yaml.Node
		rateLimit, children *field
		shadow, detailed    bool
		share               bool
		shareNode           *yaml.Node
	)
	n = deref(n)
	fields := p.mapping(n, path)
	for i := range fields {
		f := &fields[i]
		switch f.name {
		case "key":
			keyNode = f.val
			key = p.str(f.val, f.path)
		case "value":
			value = p.str(f.val, f.path)
		case "rate_limit":
			rateLimit = f
		case "descriptors":
			children = f
		case "shadow_mode":
			shadow = p.boolean(f.val, f.path)
		case "detailed_metric":
			detailed = p.boolean(f.val, f.path)
		case "share_threshold":
			shareNode = f.val
			share = p.boolean(f.val, f.path)
		case "quota_mode":
			if p.boolean(f.val, f.path) {
				p.errorf(f.val, f.path, "%s", quotaModeUnsupported)
			}
		default:
			p.ignored(*f)
		}
	}
	if p.stopped {
		return
	}
	ok := n.Kind == yaml.MappingNode
	if ok && key == "" {
		at := n
		if keyNode != nil {
			at = keyNode
		}
		p.errorf(at, path+".key", "descriptor has empty key")
		ok = false
	}
	if share && ok && !strings.Contains(value, "*") {
		// The reference shares a counter among the values one wildcard matches; a descriptor
		// without a wildcard value has nothing to share, and guessing a meaning for it (one
		// counter for every value of a key-only descriptor?) could silently change limits.
		p.errorf(shareNode, path+".share_threshold", "share_threshold applies to a wildcard value (one with '*'), this descriptor has %s; "+
			"to make every value of key %q share one counter, write value: \"*\" with share_threshold: true", describeValue(value), key)
		ok = false
	}
	segment := key
	if value != "" {
		segment += "_" + value
	}
	rule := parentRule + "." + segment
	if prev, dup := seen[segment]; dup && ok {
		p.errorf(n, path, "duplicate descriptor composite key %q (also %s)", rule, prev)
		ok = false
	} else if ok {
		seen[segment] = path
	}
	var limit *RateLimit
	if rateLimit != nil {
		limit = p.rateLimit(rateLimit.val, rateLimit.path, rule, shadow, detailed)
	}
	var next *level
	if children != nil {
		next = p.descriptors(children.val, children.path, rule)
	}
	if ok {
		lvl.add(key, value, &node{limit: limit, next: next, share: share})
	}
}

// quotaModeUnsupported is why quota_mode: true is refused. The reference's quota mode is a
// contract with Envoy, not a verdict alone: a request over a quota_mode limit is let through
// and reported in the response's dynamic metadata, for Envoy's quota-aware routing to pick
// another backend, and it is denied only once every quota_mode descriptor of the request is
// over. That metadata's shape and the mixed-mode rule were still being reworked upstream, so
// serving it here would hand Envoy something that may not be what it reads; a config that
// relies on it must fail to load rather than enforce a hard limit or none.
const quotaModeUnsupported = "quota_mode is not supported: in envoyproxy/ratelimit it lets requests over the limit " +
	"through and reports them in dynamic metadata for Envoy's quota-aware routing (denying only when every " +
	"quota_mode descriptor is over), which this service does not implement; use shadow_mode: true for a limit " +
	"that is counted and reported but never denies, remove quota_mode for a hard limit, or keep this domain on " +
	"envoyproxy/ratelimit"

// describeValue names a descriptor's value for an error message.
func describeValue(v string) string {
	if v == "" {
		return "no value (key only)"
	}
	return fmt.Sprintf("value %q", v)
}

// rateLimit walks one rate_limit block. It returns nil for a missing block and for an invalid
// one, whose problems it has recorded.
func (p *fileParser) rateLimit(n *yaml.Node, path, rule string, shadow, detailed bool) *RateLimit {
	n = deref(n)
	if n == nil || isNull(n) {
		return nil
	}
	nerrs := len(p.errs)
	rl := &RateLimit{Rule: rule, ShadowMode: shadow, DetailedMetric: detailed}
	var unit string
	var unitNode, replaces *yaml.Node
	var replacesPath string
	for _, f := range p.mapping(n, path) {
		switch f.name {
		case "unit":
			unitNode = f.val
			unit = p.str(f.val, f.path)
		case "requests_per_unit":
			rl.RequestsPerUnit = p.count(f.val, f.path)
		case "unlimited":
			rl.Unlimited = p.boolean(f.val, f.path)
		case "name":
			rl.Name = p.str(f.val, f.path)
		case "replaces":
			replaces, replacesPath = f.val, f.path
		default:
			p.ignored(f)
		}
	}
	if p.stopped || n.Kind != yaml.MappingNode {
		return nil
	}
	switch {
	case rl.Unlimited && unit != "":
		// The reference only complains about a valid unit here and ignores an invalid one;
		// both are mistakes, so both are reported.
		p.errorf(unitNode, path+".unit", "should not specify rate limit unit when unlimited")
	case rl.Unlimited:
	case unit == "":
		at := n
		if unitNode != nil {
			at = unitNode
		}
		p.errorf(at, path+".unit", "missing unit")
	default:
		u, ok := parseUnit(unit)
		if !ok {
			p.errorf(unitNode, path+".unit", "invalid unit %q", unit)
			break
		}
		rl.Unit = u
		rl.Window, _ = UnitWindow(u)
	}
	rl.Replaces = p.replaces(replaces, replacesPath, rl.Name)
	if len(p.errs) > nerrs {
		return nil
	}
	p.rules++
	return rl
}

// replaces walks a replaces list: mappings that each name another limit.
func (p *fileParser) replaces(n *yaml.Node, path, own string) []string {
	n = deref(n)
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "expected a list, got %s", kindName(n))
		return nil
	}
	names := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		item = deref(item)
		var name string
		var nameNode *yaml.Node
		for _, f := range p.mapping(item, ipath) {
			if f.name == "name" {
				nameNode = f.val
				name = p.str(f.val, f.path)
			} else {
				p.ignored(f)
			}
		}
		if p.stopped || item.Kind != yaml.MappingNode {
			continue
		}
		at := item
		if nameNode != nil {
			at = nameNode
		}
		switch name {
		case "":
			p.errorf(at, ipath+".name", "should not have an empty replaces entry")
		case own:
			p.errorf(at, ipath+".name", "replaces should not contain name of same descriptor %q", own)
		default:
			names = append(names, name)
		}
	}
	return names
}

// mapping checks that n is a mapping whose keys are all known to the schema, each once, and
// returns its fields in order. Problems are recorded and their fields left out.
func (p *fileParser) mapping(n *yaml.Node, path string) []field {
	if !p.spend(n, path) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return nil
	}
	fields := make([]field, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		fpath := k.Value
		if path != "" {
			fpath = path + "." + k.Value
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(k, path, "key is not a string")
			continue
		case !validKey(k.Value):
			p.errorf(k, fpath, "unknown key %q", k.Value)
			continue
		}
		// YAML forbids repeated keys; the reference's YAML library lets the last one win,
		// which silently hides the first, so we reject them.
		dup := false
		for _, f := range fields {
			dup = dup || f.name == k.Value
		}
		if dup {
			p.errorf(k, fpath, "duplicate key %q", k.Value)
			continue
		}
		fields = append(fields, field{name: k.Value, val: v, path: fpath})
	}
	return fields
}

// ignored checks a field the schema knows but not at this place. The reference checks only that
// a key is one it knows anywhere, then ignores the misplaced ones; we do the same so that every
// directory it loads loads here, and check the ignored value's keys as it does.
func (p *fileParser) ignored(f field) {
	p.anyValue(f.val, f.path)
}

func (p *fileParser) anyValue(n *yaml.Node, path string) {
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		for _, f := range p.mapping(n, path) {
			p.anyValue(f.val, f.path)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			ipath := fmt.Sprintf("%s[%d]", path, i)
			if deref(item).Kind != yaml.MappingNode {
				p.errorf(item, ipath, "expected a mapping, got %s", kindName(item))
				continue
			}
			p.anyValue(item, ipath)
		}
	}
}
