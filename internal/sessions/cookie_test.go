package sessions

import "testing"

// The wants below were checked against cookie.parse of the cookie npm package 0.7.2 (the
// version express-session 1.18.2 installs), as was a random differential run of 400,000
// headers; see the report that introduced this package.
func TestCookieValue(t *testing.T) {
	tests := []struct {
		name   string
		header string
		cookie string
		want   string
		wantOK bool
	}{
		{"single", "connect.sid=abc", "connect.sid", "abc", true},
		{"several", "a=1; connect.sid=abc; b=2", "connect.sid", "abc", true},
		{"last of several", "a=1; b=2; connect.sid=abc", "connect.sid", "abc", true},
		{"first of duplicates wins", "connect.sid=first; connect.sid=second", "connect.sid", "first", true},
		{"empty first duplicate still wins", "connect.sid=; connect.sid=second", "connect.sid", "", true},
		{"malformed pair in the middle", "a=1; garbage; connect.sid=abc", "connect.sid", "abc", true},
		{"malformed pair first", "garbage;connect.sid=abc", "connect.sid", "abc", true},
		{"several malformed pairs", "x; y; z;connect.sid=abc", "connect.sid", "abc", true},
		{"spaces and tabs", " \t connect.sid \t = \t abc \t ;b=2", "connect.sid", "abc", true},
		{"no space after semicolon", "a=1;connect.sid=abc", "connect.sid", "abc", true},
		{"inner space kept", "connect.sid=a b", "connect.sid", "a b", true},
		{"CR is not trimmed", "connect.sid=abc\r", "connect.sid", "abc\r", true},
		{"quoted value", `connect.sid="abc"`, "connect.sid", "abc", true},
		{"quoted value with spaces outside", `connect.sid= "abc" `, "connect.sid", "abc", true},
		{"only a leading quote", `connect.sid="abc`, "connect.sid", `"abc`, true},
		{"lone quote", `connect.sid="`, "connect.sid", "", true},
		{"quoted then decoded", `connect.sid="s%3Aabc"`, "connect.sid", "s:abc", true},
		{"url-encoded signed value", "connect.sid=s%3AQ2lt%2BhQ%2FZmFr.ZV9zaWQ.cyTvSzart15IR2TfPYKsWiiNZ05jTglXpppg%2Bvihk0E",
			"connect.sid", "s:Q2lt+hQ/ZmFr.ZV9zaWQ.cyTvSzart15IR2TfPYKsWiiNZ05jTglXpppg+vihk0E", true},
		{"lower-case hex", "connect.sid=s%3aa%2bb%2fc", "connect.sid", "s:a+b/c", true},
		{"literal plus stays plus", "connect.sid=s:a+b", "connect.sid", "s:a+b", true},
		{"literal plus stays plus when decoding", "connect.sid=s%3Aa+b", "connect.sid", "s:a+b", true},
		{"encoded semicolon", "connect.sid=a%3Bb", "connect.sid", "a;b", true},
		{"utf-8", "connect.sid=caf%C3%A9", "connect.sid", "café", true},
		{"bad percent-encoding returned raw", "connect.sid=s%3Aab%zz", "connect.sid", "s%3Aab%zz", true},
		{"truncated escape returned raw", "connect.sid=s%3Aab%2", "connect.sid", "s%3Aab%2", true},
		{"lone percent returned raw", "connect.sid=%", "connect.sid", "%", true},
		{"invalid utf-8 returned raw", "connect.sid=%FF", "connect.sid", "%FF", true},
		{"incomplete utf-8 returned raw", "connect.sid=%C3", "connect.sid", "%C3", true},
		{"escape cannot borrow a literal byte", "connect.sid=%C3\xa9", "connect.sid", "%C3\xa9", true},
		{"overlong utf-8 returned raw", "connect.sid=%C0%80", "connect.sid", "%C0%80", true},
		{"surrogate returned raw", "connect.sid=%ED%A0%80", "connect.sid", "%ED%A0%80", true},
		{"equals inside the value", "connect.sid=a=b=c", "connect.sid", "a=b=c", true},
		{"empty value", "connect.sid=", "connect.sid", "", true},
		{"empty header", "", "connect.sid", "", false},
		{"absent", "a=1; b=2", "connect.sid", "", false},
		{"name is a prefix of another name", "connect.sid2=abc", "connect.sid", "", false},
		{"longer name after the prefix", "connect.sid2=abc; connect.sid=def", "connect.sid", "def", true},
		{"another name is a prefix of the name", "connect=abc", "connect.sid", "", false},
		{"name only, no equals", "connect.sid", "connect.sid", "", false},
		{"name without equals then real pair", "connect.sid; connect.sid=abc", "connect.sid", "abc", true},
		{"names are case-sensitive", "Connect.sid=abc", "connect.sid", "", false},
		{"names are not decoded", "connect%2Esid=abc", "connect.sid", "", false},
		{"empty name never matches", "=abc", "", "", false},
		{"trailing semicolon", "connect.sid=abc;", "connect.sid", "abc", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := CookieValue(tt.header, tt.cookie)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("CookieValue(%q, %q) = %q, %v; want %q, %v", tt.header, tt.cookie, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
