package canon

import (
	"errors"
	"testing"
)

func TestOverride(t *testing.T) {
	for _, tt := range []struct {
		name    string
		target  string
		headers map[string]string
		allow   Class
		refused bool
	}{
		{"plain", "/a?b=1", nil, 0, false},
		{"header", "/a", map[string]string{"x-http-method-override": "DELETE"}, 0, true},
		{"empty header still claims", "/a", map[string]string{"x-http-method": ""}, 0, true},
		{"other spelling", "/a", map[string]string{"x-method-override": "PUT"}, 0, true},
		{"query", "/a?x=1&_method=DELETE", nil, 0, true},
		{"query first", "/a?_method=put", nil, 0, true},
		{"query escaped", "/a?%5Fmethod=put", nil, 0, true},
		{"query upper case", "/a?_METHOD=put", nil, 0, true},
		{"a value named _method is fine", "/a?x=_method", nil, 0, false},
		{"a longer name is fine", "/a?_methods=1", nil, 0, false},
		{"allowed", "/a?_method=DELETE", map[string]string{"x-http-method-override": "DELETE"}, MethodOverride, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Override(tt.target, tt.headers, tt.allow)
			var e *Error
			if tt.refused != (err != nil) || (err != nil && (!errors.As(err, &e) || e.Reason != ReasonMethodOverride)) {
				t.Errorf("Override = %v, want refused %v", err, tt.refused)
			}
		})
	}
}
