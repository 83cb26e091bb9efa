package envoy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	// Every extension the configs pack into an Any. A blank import registers the package's
	// messages in protoregistry.GlobalTypes, which resolves "@type" while decoding and unpacking;
	// a config using a type not imported here fails with "unable to resolve".
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// parseYAML turns an Envoy YAML document into plain Go values (maps, slices, strings, numbers,
// booleans, nil) the way Envoy's own loader (yaml-cpp) reads it, not the way YAML 1.2 does:
// an unquoted scalar is a boolean if yaml-cpp's bool conversion accepts it (y, yes, on, off,
// true, n, no, false in lower, upper or title case), else a number if it parses as one, else
// a string; quoted and block scalars are always strings. So `enable_x_ratelimit_headers: OFF`
// fails here as it fails in Envoy, where it becomes false for an enum field.
func parseYAML(data []byte) (any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("empty YAML document")
	}
	return yamlValue(doc.Content[0])
}

func yamlValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.AliasNode:
		return yamlValue(n.Alias)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: mapping keys must be scalars", k.Line)
			}
			if k.Value == "<<" && k.Style == 0 {
				return nil, fmt.Errorf("line %d: YAML merge keys (<<) are not portable to Envoy's loader", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			val, err := yamlValue(v)
			if err != nil {
				return nil, err
			}
			m[k.Value] = val
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlValue(c)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	case yaml.ScalarNode:
		return yamlScalar(n), nil
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
}

// yamlBools are the spellings yaml-cpp's convert<bool> accepts, before its case folding.
var yamlBools = map[string]bool{"y": true, "yes": true, "true": true, "on": true, "n": false, "no": false, "false": false, "off": false}

// yamlFloat is a plain decimal number as a C++ stream reads it (no inf, nan or hex).
var yamlFloat = regexp.MustCompile(`^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$`)

func yamlScalar(n *yaml.Node) any {
	quoted := n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0
	if quoted || (n.Style&yaml.TaggedStyle != 0 && n.Tag == "!!str") {
		return n.Value
	}
	s := n.Value
	switch s {
	case "", "~", "null", "Null", "NULL":
		return nil
	}
	// yaml-cpp folds case only for all-lower, all-upper or Title-case words.
	if s == strings.ToLower(s) || s == strings.ToUpper(s) || s == strings.ToUpper(s[:1])+strings.ToLower(s[1:]) {
		if b, ok := yamlBools[strings.ToLower(s)]; ok {
			return b
		}
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if yamlFloat.MatchString(s) {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f
		}
	}
	return s
}

// decodeBootstrap decodes a parsed config into a Bootstrap strictly: unknown fields, in the
// Bootstrap or inside any typed_config, are errors (DiscardUnknown false, Envoy's default for
// static config), and every "@type" must be a registered message.
func decodeBootstrap(tree any) (*bootstrapv3.Bootstrap, error) {
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("to JSON: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	opts := protojson.UnmarshalOptions{DiscardUnknown: false, Resolver: protoregistry.GlobalTypes}
	if err := opts.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("decode Bootstrap: %w", err)
	}
	return b, nil
}

// node is one message of a decoded config, with its field path from the Bootstrap.
type node struct {
	// path is like static_resources.clusters[1].typed_extension_protocol_options["..."].
	path string
	msg  protoreflect.Message
	// unpacked is true for the Bootstrap and for every message unpacked from an Any: the roots
	// ValidateAll must be called on, because generated validation stops at an Any.
	unpacked bool
}

// messages returns every message of b, depth first, with each Any replaced by the message it
// holds (at the Any's own path).
func messages(b *bootstrapv3.Bootstrap) ([]node, error) {
	var out []node
	err := walk(b.ProtoReflect(), "", true, &out)
	return out, err
}

func walk(m protoreflect.Message, path string, unpacked bool, out *[]node) error {
	*out = append(*out, node{path: path, msg: m, unpacked: unpacked})
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			keys := make([]protoreflect.MapKey, 0, v.Map().Len())
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
			for _, k := range keys {
				if err = child(v.Map().Get(k).Message(), fmt.Sprintf("%s[%q]", p, k.String()), out); err != nil {
					return false
				}
			}
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			for i := 0; i < v.List().Len(); i++ {
				if err = child(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), out); err != nil {
					return false
				}
			}
		case fd.Message() != nil:
			err = child(v.Message(), p, out)
		}
		return err == nil
	})
	return err
}

func child(m protoreflect.Message, path string, out *[]node) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return walk(m, path, false, out)
	}
	inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes})
	if err != nil {
		return fmt.Errorf("%s: unpack %s: %w", path, a.GetTypeUrl(), err)
	}
	return walk(inner.ProtoReflect(), path, true, out)
}

// validate runs the API's own checks on every message of a config:
//   - ValidateAll (protoc-gen-validate rules) on the Bootstrap and on every unpacked Any;
//   - no negative durations, which Envoy rejects at load time but the generated rules allow in
//     most places (GrpcService.timeout, the ratelimit filter's timeout);
//   - no deprecated field, enum value or message type: Envoy warns on them and refuses the
//     ones it has made fatal by default.
func validate(nodes []node) []error {
	var errs []error
	for _, n := range nodes {
		where := n.path
		if where == "" {
			where = "(bootstrap)"
		}
		if n.unpacked {
			if v, ok := n.msg.Interface().(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					errs = append(errs, fmt.Errorf("%s (%s): %w", where, n.msg.Descriptor().FullName(), err))
				}
			}
		}
		if d, ok := n.msg.Interface().(*durationpb.Duration); ok && (d.GetSeconds() < 0 || d.GetNanos() < 0) {
			errs = append(errs, fmt.Errorf("%s: negative duration %s", where, d.AsDuration()))
		}
		errs = append(errs, deprecatedUses(where, n.msg)...)
	}
	return errs
}

func deprecatedUses(where string, m protoreflect.Message) []error {
	var errs []error
	if o, ok := m.Descriptor().Options().(*descriptorpb.MessageOptions); ok && o.GetDeprecated() {
		errs = append(errs, fmt.Errorf("%s: message %s is deprecated", where, m.Descriptor().FullName()))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if o, ok := fd.Options().(*descriptorpb.FieldOptions); ok && o.GetDeprecated() {
			errs = append(errs, fmt.Errorf("%s.%s: field is deprecated", where, fd.Name()))
		}
		if fd.Enum() == nil || fd.IsMap() {
			return true
		}
		nums := []protoreflect.EnumNumber{}
		if fd.IsList() {
			for i := 0; i < v.List().Len(); i++ {
				nums = append(nums, v.List().Get(i).Enum())
			}
		} else {
			nums = append(nums, v.Enum())
		}
		for _, num := range nums {
			ev := fd.Enum().Values().ByNumber(num)
			if ev == nil {
				continue // an undefined number is ValidateAll's to report
			}
			if o, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && o.GetDeprecated() {
				errs = append(errs, fmt.Errorf("%s.%s: enum value %s is deprecated", where, fd.Name(), ev.Name()))
			}
		}
		return true
	})
	return errs
}
