package sessions

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The wants are node 20's String(JSON.parse(literal)).
func TestJSNumber(t *testing.T) {
	tests := []struct{ literal, want string }{
		{"42", "42"},
		{"-0", "0"},
		{"42.0", "42"},
		{"1.5", "1.5"},
		{"-12.50", "-12.5"},
		{"1E3", "1000"},
		{"0.1", "0.1"},
		{"1e20", "100000000000000000000"},
		{"1e21", "1e+21"},
		{"123456789012345678901", "123456789012345680000"},
		{"12345678901234567890", "12345678901234567000"},
		{"9007199254740993", "9007199254740992"},
		{"0.000001", "0.000001"},
		{"1e-7", "1e-7"},
		{"-1.5e-7", "-1.5e-7"},
		{"123e-20", "1.23e-18"},
		{"1.2345678901234567e+30", "1.2345678901234567e+30"},
		{"1.7976931348623157e308", "1.7976931348623157e+308"},
		{"5e-324", "5e-324"},
		{"1e400", "Infinity"},
		{"-1e400", "-Infinity"},
	}
	for _, tt := range tests {
		t.Run(tt.literal, func(t *testing.T) {
			got, ok := jsNumber(json.Number(tt.literal))
			if got != tt.want || !ok {
				t.Errorf("jsNumber(%s) = %q, %v; want %q", tt.literal, got, ok, tt.want)
			}
		})
	}
}

func TestParseSession(t *testing.T) {
	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{"express-session value", expressSession, true},
		{"empty object", "{}", true},
		{"surrounding whitespace", " {} \n", true},
		{"empty", "", false},
		{"not JSON", "hello", false},
		{"truncated", `{"cookie":{`, false},
		{"array", "[1,2]", false},
		{"string", `"x"`, false},
		{"null", "null", false},
		{"trailing data", `{}{}`, false},
		{"trailing garbage", `{} x`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := parseSession(tt.data); ok != tt.ok {
				t.Errorf("parseSession(%q) ok = %v, want %v", tt.data, ok, tt.ok)
			}
		})
	}
}

func TestLookupAndText(t *testing.T) {
	obj, ok := parseSession(`{"s":"x","n":42,"f":1.5,"t":true,"no":false,"null":null,"o":{"a":{"b":"deep"}},"l":[1],"e":"","dot.ted":"k"}`)
	if !ok {
		t.Fatal("parse failed")
	}
	tests := []struct {
		path    string
		want    string
		wantOK  bool
		present bool
	}{
		{"s", "x", true, true},
		{"n", "42", true, true},
		{"f", "1.5", true, true},
		{"t", "true", true, true},
		{"no", "false", true, true},
		{"e", "", true, true},
		{"o.a.b", "deep", true, true},
		{"null", "", false, true},
		{"o", "", false, true},
		{"l", "", false, true},
		{"missing", "", false, false},
		{"s.x", "", false, false},
		{"l.0", "", false, false},
		{"o.a.b.c", "", false, false},
		{"dot.ted", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			v, present := lookup(obj, splitPath(tt.path))
			if present != tt.present {
				t.Fatalf("lookup(%q) present = %v, want %v", tt.path, present, tt.present)
			}
			got, ok := text(v)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("text(lookup(%q)) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestSplitPath(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"userId", []string{"userId"}},
		{"passport.user", []string{"passport", "user"}},
		{"", nil},
		{".a", nil},
		{"a.", nil},
		{"a..b", nil},
	}
	for _, tt := range tests {
		if got := splitPath(tt.path); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitPath(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestTouchSeconds(t *testing.T) {
	tests := []struct {
		name   string
		cookie string
		want   int64
	}{
		{"a day", `{"originalMaxAge":86400000}`, 86400},
		{"rounded up", `{"originalMaxAge":1001}`, 2},
		{"fraction of a second", `{"originalMaxAge":1}`, 1},
		{"fractional ms", `{"originalMaxAge":1500.5}`, 2},
		{"null: browser-session cookie", `{"originalMaxAge":null}`, 0},
		{"zero", `{"originalMaxAge":0}`, 0},
		{"negative", `{"originalMaxAge":-5000}`, 0},
		{"string", `{"originalMaxAge":"86400000"}`, 0},
		{"absent", `{}`, 0},
		{"capped", `{"originalMaxAge":1e300}`, maxTouchSeconds},
		{"infinite", `{"originalMaxAge":1e400}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, ok := parseSession(`{"cookie":` + tt.cookie + `}`)
			if !ok {
				t.Fatal("parse failed")
			}
			if got := touchSeconds(obj); got != tt.want {
				t.Errorf("touchSeconds(%s) = %d, want %d", tt.cookie, got, tt.want)
			}
		})
	}
	if got := touchSeconds(map[string]any{"cookie": "x"}); got != 0 {
		t.Errorf("touchSeconds with a non-object cookie = %d, want 0", got)
	}
}

func TestRoles(t *testing.T) {
	tests := []struct {
		name string
		json string
		want []string
	}{
		{"string", `{"r":"admin"}`, []string{"admin"}},
		{"list", `{"r":["admin","editor"]}`, []string{"admin", "editor"}},
		{"mixed list keeps its strings", `{"r":["admin",1,null,{"x":1},"editor"]}`, []string{"admin", "editor"}},
		{"empty string", `{"r":""}`, nil},
		{"empty list", `{"r":[]}`, nil},
		{"number", `{"r":7}`, nil},
		{"object", `{"r":{"admin":true}}`, nil},
		{"CRLF role dropped", `{"r":["ok","bad\r\nx-admin: 1"]}`, []string{"ok"}},
		{"missing", `{}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, ok := parseSession(tt.json)
			if !ok {
				t.Fatal("parse failed")
			}
			if got := roles(obj, []string{"r"}); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("roles(%s) = %q, want %q", tt.json, got, tt.want)
			}
		})
	}
}

func TestHeaderSafe(t *testing.T) {
	for _, s := range []string{"a\rb", "a\nb", "a\x00b", "\r\n"} {
		if headerSafe(s) {
			t.Errorf("headerSafe(%q) = true", s)
		}
	}
	for _, s := range []string{"", "plain", "tab\tok", "é", strings.Repeat("x", 100)} {
		if !headerSafe(s) {
			t.Errorf("headerSafe(%q) = false", s)
		}
	}
}
