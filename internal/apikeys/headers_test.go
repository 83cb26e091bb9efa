package apikeys

import "testing"

func TestFromHeaders(t *testing.T) {
	const key = "eak_abcdefghijklmnopqrstuvwxyzABCDEF2Wym5R"
	both := []string{"x-api-key", "authorization"}
	tests := []struct {
		name       string
		headers    map[string]string
		names      []string
		wantKey    string
		wantHeader string
	}{
		{"bearer", map[string]string{"authorization": "Bearer " + key}, both, key, "authorization"},
		{"lower-case scheme", map[string]string{"authorization": "bearer " + key}, both, key, "authorization"},
		{"upper-case scheme", map[string]string{"authorization": "BEARER " + key}, both, key, "authorization"},
		{"several spaces", map[string]string{"authorization": "Bearer    " + key}, both, key, "authorization"},
		{"surrounding whitespace", map[string]string{"authorization": "  Bearer " + key + " \t"}, both, key, "authorization"},
		{"tab after scheme", map[string]string{"authorization": "Bearer\t" + key}, both, "", ""},
		{"no space after scheme", map[string]string{"authorization": "Bearer" + key}, both, "", ""},
		{"scheme only", map[string]string{"authorization": "Bearer "}, both, "", ""},
		{"basic scheme", map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, both, "", ""},
		{"bare key in authorization", map[string]string{"authorization": key}, both, "", ""},
		{"two tokens", map[string]string{"authorization": "Bearer a b"}, both, "", ""},
		{"x-api-key", map[string]string{"x-api-key": key}, both, key, "x-api-key"},
		{"x-api-key trimmed", map[string]string{"x-api-key": " \t" + key + " "}, both, key, "x-api-key"},
		{"x-api-key empty", map[string]string{"x-api-key": "  "}, both, "", ""},
		{"x-api-key takes no scheme", map[string]string{"x-api-key": "Bearer " + key}, both, "Bearer " + key, "x-api-key"},
		{"first name wins", map[string]string{"x-api-key": "first", "authorization": "Bearer second"}, both, "first", "x-api-key"},
		{"order reversed", map[string]string{"x-api-key": "first", "authorization": "Bearer second"}, []string{"authorization", "x-api-key"}, "second", "authorization"},
		{"basic falls through", map[string]string{"x-api-key": "k", "authorization": "Basic abc"}, []string{"authorization", "x-api-key"}, "k", "x-api-key"},
		{"empty falls through", map[string]string{"x-api-key": "", "authorization": "Bearer t"}, both, "t", "authorization"},
		{"names lower-cased", map[string]string{"x-api-key": key}, []string{"X-Api-Key"}, key, "x-api-key"},
		{"name not listed", map[string]string{"x-other": key}, both, "", ""},
		{"no names", map[string]string{"x-api-key": key}, nil, "", ""},
		{"no headers", nil, both, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, header, ok := FromHeaders(tt.headers, tt.names)
			if key != tt.wantKey || header != tt.wantHeader || ok != (tt.wantKey != "") {
				t.Errorf("FromHeaders = (%q, %q, %v), want (%q, %q, %v)", key, header, ok, tt.wantKey, tt.wantHeader, tt.wantKey != "")
			}
		})
	}
}
