package canon

import (
	"errors"
	"strings"
	"testing"
)

const allClasses = EncodedSlash | EncodedDot | EncodedPercent | Semicolon | EmptySegments | NonASCII | MethodOverride

func TestPath(t *testing.T) {
	long := "/" + strings.Repeat("a", DefaultMaxTargetLength-1)
	tests := []struct {
		name   string
		target string
		allow  Class
		max    int
		want   string
		reason string // empty when the target is accepted
	}{
		{name: "root", target: "/", want: "/"},
		{name: "plain", target: "/api/v1/users", want: "/api/v1/users"},
		{name: "trailing slash kept", target: "/admin/", want: "/admin/"},
		{name: "case kept", target: "/Admin/X", want: "/Admin/X"},
		{name: "query dropped", target: "/a/b?x=1&y=/../z", want: "/a/b"},
		{name: "empty query dropped", target: "/admin?", want: "/admin"},
		{name: "dot in a name", target: "/static/app.min.js", want: "/static/app.min.js"},
		{name: "three dots are a name", target: "/a/.../b", want: "/a/.../b"},
		{name: "dot prefix is a name", target: "/.well-known/x", want: "/.well-known/x"},
		{name: "unreserved escape decoded", target: "/%61dmin", want: "/admin"},
		{name: "upper and lower hex", target: "/%41%6a", want: "/Aj"},
		{name: "utf-8 escape decoded", target: "/caf%C3%A9", want: "/caf\xc3\xa9"},
		{name: "escaped question mark kept", target: "/a%3fb", want: "/a%3Fb"},
		{name: "escaped hash kept", target: "/a%23b", want: "/a%23b"},
		{name: "escaped space inside a segment kept", target: "/files/my%20doc.pdf", want: "/files/my%20doc.pdf"},
		{name: "escaped semicolon allowed", target: "/a%3Bb", allow: Semicolon, want: "/a;b"},
		{name: "exactly the maximum", target: long, want: long},
		{name: "query non-ascii is fine", target: "/a?q=\xc3\xa9", want: "/a"},
		{name: "query semicolon is fine", target: "/a?x;y", want: "/a"},
		{name: "query escapes are not read", target: "/a?x=%2F%00%zz", want: "/a"},

		{name: "empty", target: "", reason: ReasonNotOriginForm},
		{name: "asterisk form", target: "*", reason: ReasonNotOriginForm},
		{name: "absolute form", target: "http://x/admin", reason: ReasonNotOriginForm},
		{name: "authority form", target: "example.com:443", reason: ReasonNotOriginForm},
		{name: "relative", target: "admin", reason: ReasonNotOriginForm},
		{name: "too long", target: long + "a", reason: ReasonTooLong},
		{name: "custom maximum", target: "/abcdef", max: 4, reason: ReasonTooLong},
		{name: "fragment", target: "/public#/../admin", reason: ReasonFragment},
		{name: "fragment in the query", target: "/public?x#y", reason: ReasonFragment},
		{name: "fragment only", target: "/#", reason: ReasonFragment},
		{name: "space", target: "/admin ", reason: ReasonControlCharacter},
		{name: "tab", target: "/a\tb", reason: ReasonControlCharacter},
		{name: "nul", target: "/admin\x00", reason: ReasonControlCharacter},
		{name: "del", target: "/a\x7f", reason: ReasonControlCharacter},
		{name: "control byte in the query", target: "/a?x=\n", reason: ReasonControlCharacter},
		{name: "backslash", target: "/public\\..\\admin", reason: ReasonBackslash},
		{name: "backslash allowed classes do not matter", target: "/a\\b", allow: allClasses, reason: ReasonBackslash},
		{name: "truncated escape", target: "/a%4", reason: ReasonBadEscape},
		{name: "percent at the end", target: "/a%", reason: ReasonBadEscape},
		{name: "non-hex escape", target: "/a%zz", reason: ReasonBadEscape},
		{name: "escape cut by the query", target: "/a%4?1", reason: ReasonBadEscape},
		{name: "encoded nul", target: "/admin%00", reason: ReasonEncodedControl},
		{name: "encoded space ending a segment", target: "/admin%20", reason: ReasonEncodedControl},
		{name: "encoded space ending a segment before a slash", target: "/admin%20/x", reason: ReasonEncodedControl},
		{name: "encoded space beginning a segment", target: "/files/%20x", reason: ReasonEncodedControl},
		{name: "encoded semicolon", target: "/admin%3Bx", reason: ReasonSemicolon},
		{name: "encoded newline", target: "/a%0ab", reason: ReasonEncodedControl},
		{name: "encoded del", target: "/a%7F", reason: ReasonEncodedControl},
		{name: "dot segment", target: "/public/../admin", reason: ReasonDotSegment},
		{name: "single dot segment", target: "/./admin", reason: ReasonDotSegment},
		{name: "trailing dot segment", target: "/admin/..", reason: ReasonDotSegment},
		{name: "trailing single dot", target: "/admin/.", reason: ReasonDotSegment},
		{name: "dot segment then query", target: "/a/..?x", reason: ReasonDotSegment},
		{name: "dot segment with params", target: "/public/..;/admin", allow: Semicolon, reason: ReasonDotSegment},
		{name: "single dot with params", target: "/a/.;x/b", allow: Semicolon, reason: ReasonDotSegment},
		{name: "encoded dot segment allowed still refused", target: "/public/%2e%2e/admin", allow: EncodedDot, reason: ReasonDotSegment},
		{name: "mixed dot segment allowed still refused", target: "/public/.%2E/admin", allow: allClasses, reason: ReasonDotSegment},
		{name: "merged slashes do not hide a dot segment", target: "/a//..//b", allow: EmptySegments, reason: ReasonDotSegment},

		{name: "encoded slash", target: "/public%2F..%2Fadmin", reason: ReasonEncodedSlash},
		{name: "encoded slash lower", target: "/a%2fb", reason: ReasonEncodedSlash},
		{name: "encoded backslash", target: "/a%5cb", reason: ReasonEncodedSlash},
		{name: "encoded slash allowed", target: "/a%2fb", allow: EncodedSlash, want: "/a%2Fb"},
		{name: "encoded backslash allowed", target: "/a%5cb", allow: EncodedSlash, want: "/a%5Cb"},
		{name: "encoded dot", target: "/public/%2e%2e/admin", reason: ReasonEncodedDot},
		{name: "half encoded dot", target: "/public/.%2E/admin", reason: ReasonEncodedDot},
		{name: "encoded dot allowed", target: "/a%2Ejson", allow: EncodedDot, want: "/a.json"},
		{name: "encoded percent", target: "/public/%252e%252e/admin", reason: ReasonEncodedPercent},
		{name: "encoded percent allowed stays escaped", target: "/a%252e", allow: EncodedPercent, want: "/a%252e"},
		{name: "encoded percent allowed upper-cased", target: "/100%25", allow: EncodedPercent, want: "/100%25"},
		{name: "semicolon", target: "/admin;x", reason: ReasonSemicolon},
		{name: "semicolon allowed", target: "/a;jsessionid=1/b", allow: Semicolon, want: "/a;jsessionid=1/b"},
		{name: "empty segment", target: "//admin", reason: ReasonEmptySegments},
		{name: "empty segment inside", target: "/a//b", reason: ReasonEmptySegments},
		{name: "empty segment allowed merged", target: "/a//b", allow: EmptySegments, want: "/a/b"},
		{name: "leading empty segments merged", target: "///admin", allow: EmptySegments, want: "/admin"},
		{name: "trailing empty segment merged", target: "/a//", allow: EmptySegments, want: "/a/"},
		{name: "only slashes", target: "//", allow: EmptySegments, want: "/"},
		{name: "raw non-ascii", target: "/caf\xc3\xa9", reason: ReasonNonASCII},
		{name: "raw non-ascii allowed", target: "/caf\xc3\xa9", allow: NonASCII, want: "/caf\xc3\xa9"},
		{name: "all allowed together", target: "/a//b;c/%2e%2Fx%25?q", allow: allClasses, want: "/a/b;c/.%2Fx%25"},
		{name: "an allowed class does not allow another", target: "/a;b%2F", allow: Semicolon, reason: ReasonEncodedSlash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Path(tt.target, Options{Allow: tt.allow, MaxTargetLength: tt.max})
			if tt.reason != "" {
				var ce *Error
				if !errors.As(err, &ce) {
					t.Fatalf("Path(%q) = %q, %v; want a refusal %s", tt.target, got, err, tt.reason)
				}
				if ce.Reason != tt.reason {
					t.Fatalf("Path(%q) reason = %s (%v), want %s", tt.target, ce.Reason, err, tt.reason)
				}
				if got != "" {
					t.Fatalf("Path(%q) = %q with an error, want empty", tt.target, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Path(%q) = %v, want %q", tt.target, err, tt.want)
			}
			if got != tt.want {
				t.Fatalf("Path(%q) = %q, want %q", tt.target, got, tt.want)
			}
		})
	}
}

// TestPathErrorHidesTheTarget checks that a refusal never repeats the input, which may hold a
// secret in its query.
func TestPathErrorHidesTheTarget(t *testing.T) {
	for _, target := range []string{"/a?token=SECRET#x", "/a?token=SECRET\n", "/SECRET/../x", "/SECRET%zz"} {
		_, err := Path(target, Options{})
		if err == nil {
			t.Fatalf("Path(%q) accepted", target)
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("Path(%q) error %q repeats the target", target, err)
		}
	}
}

func TestPathPlainDoesNotAllocate(t *testing.T) {
	for _, target := range []string{"/api/v1/users/42?limit=10&x=%2F", "/", "/admin/"} {
		n := testing.AllocsPerRun(100, func() {
			if _, err := Path(target, Options{}); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Fatalf("Path(%q) allocates %v times, want 0", target, n)
		}
	}
}

func TestPathDotsWithoutChangesDoNotAllocate(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		if _, err := Path("/static/app.min.js?v=1", Options{}); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("a dotted name allocates %v times, want 0", n)
	}
}

// TestPathAcceptedIsAlsoAcceptedWithMoreClasses checks that allowing a class never changes what an
// already accepted target means.
func TestPathAcceptedIsAlsoAcceptedWithMoreClasses(t *testing.T) {
	for _, target := range []string{"/a/b", "/%61dmin/", "/a%3Fb?c", "/a.b/c"} {
		strict, err := Path(target, Options{})
		if err != nil {
			t.Fatal(err)
		}
		loose, err := Path(target, Options{Allow: allClasses})
		if err != nil || loose != strict {
			t.Fatalf("Path(%q) = %q strict, %q, %v with every class", target, strict, loose, err)
		}
	}
}
