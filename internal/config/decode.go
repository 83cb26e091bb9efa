package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decoder decodes a YAML node tree into a Go value by walking both together, instead of
// handing the tree to yaml.v3 in one call, for three reasons: unknown keys become errors with
// their full path and line, a bad value is reported with its path rather than yaml.v3's bare
// line, and decoding goes on after a problem so that every problem is reported at once. It
// records where each value came from, so that Validate can point at lines too.
type decoder struct {
	file    string
	errs    []*FieldError
	origins map[string]origin
	// visits counts values walked, to stop a document whose aliases expand exponentially
	// ("billion laughs"): yaml.v3 guards its own decoding, but this walk follows aliases itself.
	visits int
}

// maxVisits bounds the values one document may expand to, far above any real config.
const maxVisits = 100_000

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (d *decoder) fail(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// document decodes the single YAML document in data over c. An empty document, or one that is
// only comments or null, leaves c as it is.
func (d *decoder) document(data []byte, c *Config) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.errs = append(d.errs, syntaxError(d.file, err))
		}
		return
	}
	// A second document is an error, since only one would take effect; an empty one, as left
	// by a trailing "---", is harmless.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.errs = append(d.errs, syntaxError(d.file, err))
	case !isNull(root(&next)):
		d.fail(next.Line, "", "more than one YAML document: a config file holds one")
	}
	n := root(&doc)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, "", "expected a mapping of config sections, got %s", describeNode(n))
		return
	}
	d.value(n, reflect.ValueOf(c).Elem(), "", n.Line)
}

// root returns the content of a document node, following aliases.
func root(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	return resolve(doc)
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// value decodes n into v, which is addressable, reporting problems under path. line is where
// the value's key sits, which is what an error about the value should point at.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, line int) {
	n = resolve(n)
	d.visits++
	if d.visits == maxVisits {
		d.fail(n.Line, path, "the document expands to more than %d values through aliases", maxVisits)
	}
	if d.visits >= maxVisits {
		return
	}
	// A null leaves the default in place: "timeout:" with nothing after it means "not set".
	if isNull(n) {
		return
	}
	switch {
	case reflect.PointerTo(v.Type()).Implements(unmarshalerType):
		d.leaf(n, v, path)
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, path)
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path, line)
		return
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Uint8:
		d.sequence(n, v, path)
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String:
		d.stringMap(n, v, path)
	default:
		d.leaf(n, v, path)
	}
	// A leaf that failed to decode still holds its default, which passes Validate, so
	// recording it here never pins a validation problem on the wrong value.
	if path != "" {
		d.origins[path] = origin{file: d.file, line: line, val: v.Interface()}
	}
}

// leaf decodes a scalar (or a type with its own UnmarshalYAML) through yaml.v3, turning its
// errors into messages that name the expected type.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string) {
	// yaml.v3 truncates 1.5 into an int field; a count written as a fraction is a mistake.
	// Types with their own UnmarshalYAML, such as Duration, judge their input themselves.
	custom := reflect.PointerTo(v.Type()).Implements(unmarshalerType)
	if isInt(v.Kind()) && !custom && n.ShortTag() != "!!int" {
		d.fail(n.Line, path, "expected an integer, got %s", describeNode(n))
		return
	}
	tmp := reflect.New(v.Type())
	tmp.Elem().Set(v)
	if err := n.Decode(tmp.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			d.fail(n.Line, path, "expected %s, got %s", describeType(v.Type()), describeNode(n))
		} else {
			d.fail(n.Line, path, "%s", err.Error())
		}
		return
	}
	// Only a value that decoded cleanly replaces the default, so that Validate does not report
	// a half-decoded one a second time.
	v.Set(tmp.Elem())
}

// mapping decodes a YAML mapping into the struct v, field by field, by yaml tag.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a mapping, got %s", describeNode(n))
		return
	}
	fields := structFields(v.Type())
	names := make([]string, 0, len(fields))
	for _, f := range fields {
		names = append(names, f.name)
	}
	seen := map[string]int{}
	d.eachPair(n, path, func(k, val *yaml.Node, merged bool) {
		p := childPath(path, k.Value)
		f, ok := findField(fields, k.Value)
		if !ok {
			if s := suggest(k.Value, names); s != "" {
				d.fail(k.Line, p, "unknown field (did you mean %q?)", s)
			} else {
				d.fail(k.Line, p, "unknown field (known: %s)", strings.Join(names, ", "))
			}
			return
		}
		if !merged {
			if first, dup := seen[f.name]; dup {
				d.fail(k.Line, p, "duplicate key (first set at line %d)", first)
				return
			}
			seen[f.name] = k.Line
		}
		d.value(val, v.FieldByIndex(f.index), p, k.Line)
	})
}

// eachPair calls fn for each key and value of a mapping, after the pairs of any "<<" merge
// keys (with merged set), so that keys written out override merged ones as YAML intends.
func (d *decoder) eachPair(n *yaml.Node, path string, fn func(k, v *yaml.Node, merged bool)) {
	var own [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.merge(val, path, func(k, v *yaml.Node, _ bool) { fn(k, v, true) })
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k.Line, path, "mapping keys must be plain strings, got %s", describeNode(k))
			continue
		}
		own = append(own, [2]*yaml.Node{k, val})
	}
	for _, p := range own {
		fn(p[0], p[1], false)
	}
}

// merge feeds the pairs of a merge key's value (a mapping or a list of mappings) to fn. A list
// is fed last to first, because YAML gives its earlier mappings precedence and later calls
// to fn overwrite earlier ones.
func (d *decoder) merge(n *yaml.Node, path string, fn func(k, v *yaml.Node, merged bool)) {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		d.eachPair(n, path, fn)
	case yaml.SequenceNode:
		for i := len(n.Content) - 1; i >= 0; i-- {
			d.merge(n.Content[i], path, fn)
		}
	default:
		d.fail(n.Line, path, "a << merge needs a mapping or a list of mappings, got %s", describeNode(n))
	}
}

// sequence decodes a YAML list into the slice v, each element under path[i]. Elements start
// from their zero value: defaults apply to sections, not to list items.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n.Line, path, "expected a list, got %s", describeNode(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, el := range n.Content {
		d.value(el, s.Index(i), path+"["+strconv.Itoa(i)+"]", el.Line)
	}
	v.Set(s)
}

// stringMap decodes a YAML mapping with free-form keys into the map v, replacing any default
// map whole: a written map says everything it means.
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a mapping, got %s", describeNode(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	seen := map[string]int{}
	d.eachPair(n, path, func(k, val *yaml.Node, merged bool) {
		p := childPath(path, k.Value)
		if !merged {
			if first, dup := seen[k.Value]; dup {
				d.fail(k.Line, p, "duplicate key (first set at line %d)", first)
				return
			}
			seen[k.Value] = k.Line
		}
		el := reflect.New(v.Type().Elem()).Elem()
		d.value(val, el, p, k.Line)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), el)
	})
	v.Set(m)
}

// field is a struct field as the config file names it.
type field struct {
	name  string
	index []int
}

// structFields lists t's exported fields by yaml name, the way yaml.v3 names them: the tag's
// name, else the lower-cased field name; "-" skips a field and ",inline" lifts a struct's
// fields into its parent.
func structFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if sf.Type.Kind() == reflect.Struct && hasOption(opts, "inline") {
			for _, sub := range structFields(sf.Type) {
				sub.index = append([]int{i}, sub.index...)
				out = append(out, sub)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, field{name: name, index: []int{i}})
	}
	return out
}

func hasOption(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

func findField(fields []field, name string) (field, bool) {
	for _, f := range fields {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

// childPath appends a key to a dotted path.
func childPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func isInt(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// describeType names what a field expects, in the words of the file rather than of Go.
func describeType(t reflect.Type) string {
	switch {
	case isInt(t.Kind()):
		return "an integer"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return "a " + t.String()
}
