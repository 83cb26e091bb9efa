package canon

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

// reasons is every label Path may refuse with.
var pathReasons = map[string]bool{
	ReasonNotOriginForm: true, ReasonTooLong: true, ReasonFragment: true, ReasonControlCharacter: true,
	ReasonBackslash: true, ReasonBadEscape: true, ReasonEncodedControl: true, ReasonDotSegment: true,
	ReasonEncodedSlash: true, ReasonEncodedDot: true, ReasonEncodedPercent: true, ReasonSemicolon: true,
	ReasonEmptySegments: true, ReasonNonASCII: true,
}

// FuzzPath checks the invariants every accepted result holds, for every set of allowed classes.
func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"/", "/admin", "/admin/", "/public/../admin", "/public/%2e%2e/admin", "/%61dmin", "//admin",
		"/a;b", "/a%2Fb", "/a%252e", "/caf\xc3\xa9", "/a?x=/../y#z", "/a%3F", "/a/.;x/b", "http://x/y",
	} {
		f.Add(s, uint16(0))
		f.Add(s, uint16(allClasses))
	}
	f.Fuzz(func(t *testing.T, target string, allow uint16) {
		opts := Options{Allow: Class(allow) & allClasses, MaxTargetLength: 512}
		got, err := Path(target, opts)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || !pathReasons[ce.Reason] {
				t.Fatalf("Path(%q) error %v has no known reason", target, err)
			}
			if got != "" {
				t.Fatalf("Path(%q) = %q with an error", target, got)
			}
			return
		}
		checkCanonical(t, target, got)
		if len(got) > len(target) {
			t.Fatalf("Path(%q) = %q is longer than the target", target, got)
		}
		if !strings.Contains(got, "%") {
			again, err := Path(got, Options{Allow: allClasses, MaxTargetLength: 512})
			if err != nil || again != got {
				t.Fatalf("Path(%q) = %q, but Path of that = %q, %v", target, got, again, err)
			}
		}
		// Allowing more never changes the meaning of what was accepted.
		loose, err := Path(target, Options{Allow: allClasses, MaxTargetLength: 512})
		if err != nil || loose != got {
			t.Fatalf("Path(%q) = %q with %v, but %q, %v with every class", target, got, opts.Allow, loose, err)
		}
		if opts.Allow == 0 {
			compareWithURL(t, target, got)
		}
	})
}

// checkCanonical fails unless got has the shape every accepted result has.
func checkCanonical(t *testing.T, target, got string) {
	t.Helper()
	if !strings.HasPrefix(got, "/") {
		t.Fatalf("Path(%q) = %q does not start with /", target, got)
	}
	if strings.ContainsAny(got, "#?\\") || strings.Contains(got, "//") {
		t.Fatalf("Path(%q) = %q holds #, ?, \\ or //", target, got)
	}
	for i := 0; i < len(got); i++ {
		if got[i] < 0x21 || got[i] == 0x7f {
			t.Fatalf("Path(%q) = %q holds a control byte", target, got)
		}
	}
	for _, seg := range strings.Split(got, "/") {
		if isDotSegment(seg) {
			t.Fatalf("Path(%q) = %q holds the dot segment %q", target, got, seg)
		}
	}
}

// compareWithURL checks a strictly accepted target against Go's own reading: net/url decodes the
// path to the same bytes, and path.Clean finds nothing to resolve.
func compareWithURL(t *testing.T, target, got string) {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		// net/url refuses a few targets Path accepts (none so far); nothing to compare.
		return
	}
	want := u.Path
	if strings.Contains(got, "%") {
		// Only %3F, %23 and %20 (inside a segment) stay escaped under the default options.
		want = strings.NewReplacer("?", "%3F", "#", "%23", " ", "%20").Replace(want)
	}
	if got != want {
		t.Fatalf("Path(%q) = %q, net/url reads %q", target, got, want)
	}
	clean := path.Clean(got)
	if got != clean && got != clean+"/" {
		t.Fatalf("Path(%q) = %q, path.Clean would make it %q", target, got, clean)
	}
}

// FuzzHost checks that Host never panics and that its results are canonical and stable.
func FuzzHost(f *testing.F) {
	for _, s := range []string{
		"", "example.com", "Admin.Example.COM.:8443", "[::1]:80", "::1", "127.0.0.1:80", "a..b", "[x]", "a:b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got, err := Host(host)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Reason != ReasonBadHost {
				t.Fatalf("Host(%q) error %v is not bad_host", host, err)
			}
			return
		}
		if got != strings.ToLower(got) || strings.HasSuffix(got, ".") || strings.ContainsAny(got, "[]") {
			t.Fatalf("Host(%q) = %q is not canonical", host, got)
		}
		if strings.Count(got, ":") == 1 {
			t.Fatalf("Host(%q) = %q keeps a port", host, got)
		}
		again, err := Host(got)
		if err != nil || again != got {
			t.Fatalf("Host(%q) = %q, but Host of that = %q, %v", host, got, again, err)
		}
	})
}

// TestPathAgreesWithNetURL runs the comparison with Go's reading on a fixed list, so that it holds
// without fuzzing too.
func TestPathAgreesWithNetURL(t *testing.T) {
	for _, target := range []string{
		"/", "/admin/", "/%61dmin/users/1?x", "/a%3Fb", "/a%23b", "/x.y/z", "/caf%C3%A9", "/a/.../b",
	} {
		got, err := Path(target, Options{})
		if err != nil {
			t.Fatalf("Path(%q): %v", target, err)
		}
		checkCanonical(t, target, got)
		compareWithURL(t, target, got)
	}
}
