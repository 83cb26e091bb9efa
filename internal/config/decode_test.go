package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// future has the shapes later sections (sessions, apikeys, policies) will bring: lists of
// structs, maps and optional sections. The decoder must handle them with no change.
type future struct {
	Policies []futurePolicy    `yaml:"policies"`
	Headers  map[string]string `yaml:"headers"`
	Touch    *futureTouch      `yaml:"touch"`
	Skipped  string            `yaml:"-"`
	hidden   string
}

type futurePolicy struct {
	Name   string   `yaml:"name"`
	Window Duration `yaml:"window"`
	Tiers  []string `yaml:"tiers"`
}

type futureTouch struct {
	TTL Duration `yaml:"ttl"`
}

func decodeFuture(t *testing.T, doc string) (future, []*FieldError) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	d := decoder{file: "f.yaml", origins: map[string]origin{}}
	var v future
	d.value(root(&n), reflect.ValueOf(&v).Elem(), "", 1)
	return v, d.errs
}

func TestDecodeFutureShapes(t *testing.T) {
	v, errs := decodeFuture(t, `policies:
  - name: login
    window: 15m
    tiers: [free, pro]
  - name: api
    window: 1m
headers:
  x-user-id: userId
touch:
  ttl: 24h
`)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := future{
		Policies: []futurePolicy{
			{Name: "login", Window: Duration(15 * time.Minute), Tiers: []string{"free", "pro"}},
			{Name: "api", Window: Duration(time.Minute)},
		},
		Headers: map[string]string{"x-user-id": "userId"},
		Touch:   &futureTouch{TTL: Duration(24 * time.Hour)},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got  %+v\nwant %+v", v, want)
	}
}

func TestDecodeFutureErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown key in a list item", "policies:\n  - name: a\n  - name: b\n    windw: 1m\n",
			`f.yaml:4: policies[1].windw: unknown field (did you mean "window"?)`},
		{"bad value in a list item", "policies:\n  - name: a\n    window: 60\n",
			"f.yaml:3: policies[0].window: 60 has no unit"},
		{"list expected", "policies: {name: a}\n", "f.yaml:1: policies: expected a list, got a mapping"},
		{"map value type", "headers:\n  x-a: [1]\n", "f.yaml:2: headers.x-a: expected a string, got a list"},
		{"duplicate map key", "headers:\n  x-a: a\n  x-a: b\n", "f.yaml:3: headers.x-a: duplicate key (first set at line 2)"},
		{"unknown key in an optional section", "touch:\n  tll: 1h\n", `f.yaml:2: touch.tll: unknown field (did you mean "ttl"?)`},
		{"ignored field is unknown", "skipped: x\n", "f.yaml:1: skipped: unknown field"},
		{"unexported field is unknown", "hidden: x\n", "f.yaml:1: hidden: unknown field"},
		{"non-string key", "? [a]\n: b\n", "f.yaml:1: mapping keys must be plain strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := decodeFuture(t, tt.doc)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], tt.want) {
				t.Errorf("got %q, want one error starting %q", got, tt.want)
			}
		})
	}
}

// tree is recursive, so aliases in its document can expand exponentially.
type tree struct {
	Kids []tree `yaml:"kids"`
}

func TestDecodeAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("kids:\n  - &a0 {kids: []}\n")
	for i := 1; i <= 6; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "  - &a%d {kids: [%s]}\n", i, refs)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &n); err != nil {
		t.Fatal(err)
	}
	d := decoder{file: "f.yaml", origins: map[string]origin{}}
	var v tree
	d.value(root(&n), reflect.ValueOf(&v).Elem(), "", 1)
	if len(d.errs) != 1 || !strings.Contains(d.errs[0].Msg, "expands to more than") {
		t.Fatalf("got %v, want the expansion stopped once", d.errs)
	}
}
