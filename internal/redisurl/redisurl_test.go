package redisurl

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// dump prints every field of u, credentials included, for test failures: %v prints only
// Redacted.
func dump(u URL) string {
	type plain URL
	return fmt.Sprintf("%+v", plain(u))
}

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		want     URL
		redacted string
	}{
		// redis:// and rediss://, exactly as redisconn read them before this package.
		{"plain", "redis://127.0.0.1:6380/0",
			URL{Topology: Single, Addrs: []string{"127.0.0.1:6380"}},
			"redis://127.0.0.1:6380/0"},
		{"default port and db", "redis://cache.internal",
			URL{Topology: Single, Addrs: []string{"cache.internal:6379"}},
			"redis://cache.internal:6379/0"},
		{"empty port", "redis://cache.internal:/1",
			URL{Topology: Single, Addrs: []string{"cache.internal:6379"}, DB: 1},
			"redis://cache.internal:6379/1"},
		{"trailing slash", "redis://cache.internal:6379/",
			URL{Topology: Single, Addrs: []string{"cache.internal:6379"}},
			"redis://cache.internal:6379/0"},
		{"empty query", "redis://cache.internal:6379/2?",
			URL{Topology: Single, Addrs: []string{"cache.internal:6379"}, DB: 2},
			"redis://cache.internal:6379/2"},
		{"password only", "redis://:s3cret@127.0.0.1:6379/1",
			URL{Topology: Single, Addrs: []string{"127.0.0.1:6379"}, DB: 1, Password: "s3cret"},
			"redis://127.0.0.1:6379/1"},
		{"user only", "redis://app@127.0.0.1",
			URL{Topology: Single, Addrs: []string{"127.0.0.1:6379"}, Username: "app"},
			"redis://127.0.0.1:6379/0"},
		{"user and escaped password", "redis://app:p%40ss%2Fw0rd@127.0.0.1:6379/2",
			URL{Topology: Single, Addrs: []string{"127.0.0.1:6379"}, DB: 2, Username: "app", Password: "p@ss/w0rd"},
			"redis://127.0.0.1:6379/2"},
		{"unescaped @ and : in password", "redis://app:p@ss:w@127.0.0.1",
			URL{Topology: Single, Addrs: []string{"127.0.0.1:6379"}, Username: "app", Password: "p@ss:w"},
			"redis://127.0.0.1:6379/0"},
		{"tls", "rediss://app:s3cret@redis.example.com:6380/0",
			URL{Topology: Single, TLS: true, Addrs: []string{"redis.example.com:6380"}, Username: "app", Password: "s3cret"},
			"rediss://redis.example.com:6380/0"},
		{"ipv6", "redis://[::1]:6379/0",
			URL{Topology: Single, Addrs: []string{"[::1]:6379"}},
			"redis://[::1]:6379/0"},
		{"ipv6 default port", "redis://[2001:db8::7]",
			URL{Topology: Single, Addrs: []string{"[2001:db8::7]:6379"}},
			"redis://[2001:db8::7]:6379/0"},
		{"ipv6 zone", "redis://[fe80::1%25eth0]:6380",
			URL{Topology: Single, Addrs: []string{"[fe80::1%eth0]:6380"}},
			"redis://[fe80::1%25eth0]:6380/0"},
		{"scheme in capitals", "REDIS://127.0.0.1:6379/0",
			URL{Topology: Single, Addrs: []string{"127.0.0.1:6379"}},
			"redis://127.0.0.1:6379/0"},
		{"escaped db", "redis://r/%31",
			URL{Topology: Single, Addrs: []string{"r:6379"}, DB: 1},
			"redis://r:6379/1"},

		// unix://
		{"unix socket", "unix:///run/redis/redis.sock?db=4",
			URL{Topology: Unix, Addrs: []string{"/run/redis/redis.sock"}, DB: 4},
			"unix:///run/redis/redis.sock?db=4"},
		{"unix socket with password", "unix://:s3cret@/run/redis/redis.sock",
			URL{Topology: Unix, Addrs: []string{"/run/redis/redis.sock"}, Password: "s3cret"},
			"unix:///run/redis/redis.sock?db=0"},
		{"unix socket with escapes", "unix:///run/my%20redis/a%40b.sock",
			URL{Topology: Unix, Addrs: []string{"/run/my redis/a@b.sock"}},
			"unix:///run/my%20redis/a%40b.sock?db=0"},

		// redis-sentinel://
		{"sentinel", "redis-sentinel://s1:26379,s2:26380,s3/mymaster",
			URL{Topology: Sentinel, Addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, MasterName: "mymaster"},
			"redis-sentinel://s1:26379,s2:26380,s3:26379/mymaster/0"},
		{"sentinel one host", "redis-sentinel://s1/mymaster/",
			URL{Topology: Sentinel, Addrs: []string{"s1:26379"}, MasterName: "mymaster"},
			"redis-sentinel://s1:26379/mymaster/0"},
		{"sentinel with everything", "redis-sentinel://app:data%20pw@s1:26379,[::1]:26380/my-master/3?sentinel_password=sen+pw%26x&sentinel_username=watcher",
			URL{Topology: Sentinel, Addrs: []string{"s1:26379", "[::1]:26380"}, MasterName: "my-master", DB: 3,
				Username: "app", Password: "data pw", SentinelUsername: "watcher", SentinelPassword: "sen pw&x"},
			"redis-sentinel://s1:26379,[::1]:26380/my-master/3"},
		{"sentinel escaped master name", "redis-sentinel://s1/a%2Fb%40c/1",
			URL{Topology: Sentinel, Addrs: []string{"s1:26379"}, MasterName: "a/b@c", DB: 1},
			"redis-sentinel://s1:26379/a%2Fb%40c/1"},
		{"sentinel tls scheme", "rediss-sentinel://s1,s2/mymaster/0",
			URL{Topology: Sentinel, TLS: true, Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster"},
			"rediss-sentinel://s1:26379,s2:26379/mymaster/0"},
		{"sentinel tls parameter", "Redis-Sentinel://s1/mymaster?tls=true",
			URL{Topology: Sentinel, TLS: true, Addrs: []string{"s1:26379"}, MasterName: "mymaster"},
			"rediss-sentinel://s1:26379/mymaster/0"},
		{"sentinel tls false", "redis-sentinel://s1/mymaster?tls=false",
			URL{Topology: Sentinel, Addrs: []string{"s1:26379"}, MasterName: "mymaster"},
			"redis-sentinel://s1:26379/mymaster/0"},
		{"sentinel tls scheme and parameter", "rediss-sentinel://s1/mymaster?tls=true",
			URL{Topology: Sentinel, TLS: true, Addrs: []string{"s1:26379"}, MasterName: "mymaster"},
			"rediss-sentinel://s1:26379/mymaster/0"},

		// redis-cluster://
		{"cluster", "redis-cluster://n1:7000,n2:7001,n3",
			URL{Topology: Cluster, Addrs: []string{"n1:7000", "n2:7001", "n3:6379"}},
			"redis-cluster://n1:7000,n2:7001,n3:6379"},
		{"cluster with password and db 0", "redis-cluster://:s3cret@n1,n2/0",
			URL{Topology: Cluster, Addrs: []string{"n1:6379", "n2:6379"}, Password: "s3cret"},
			"redis-cluster://n1:6379,n2:6379"},
		{"cluster tls scheme", "rediss-cluster://app:s3cret@n1:6380",
			URL{Topology: Cluster, TLS: true, Addrs: []string{"n1:6380"}, Username: "app", Password: "s3cret"},
			"rediss-cluster://n1:6380"},
		{"cluster tls parameter", "redis-cluster://n1,[fe80::2%25en0]:7000/?tls=true",
			URL{Topology: Cluster, TLS: true, Addrs: []string{"n1:6379", "[fe80::2%en0]:7000"}},
			"rediss-cluster://n1:6379,[fe80::2%25en0]:7000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.raw, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q) =\n  %s\nwant\n  %s", tt.raw, dump(got), dump(tt.want))
			}
			if r := got.Redacted(); r != tt.redacted {
				t.Errorf("Redacted() = %q, want %q", r, tt.redacted)
			}
			// Redacted is a URL that reads back as the same server, without the credentials.
			back, err := Parse(got.Redacted())
			if err != nil {
				t.Fatalf("Parse(Redacted() = %q): %v", got.Redacted(), err)
			}
			if want := withoutCredentials(got); !reflect.DeepEqual(back, want) {
				t.Errorf("Parse(Redacted()) =\n  %s\nwant\n  %s", dump(back), dump(want))
			}
		})
	}
}

func withoutCredentials(u URL) URL {
	u.Username, u.Password, u.SentinelUsername, u.SentinelPassword = "", "", "", ""
	return u
}

// TestParseErrors checks that every error names the part that is wrong and says what is
// wrong with it.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		part string
		want string // a piece of the message
	}{
		{"empty", "", "scheme", "is empty"},
		{"no scheme", "127.0.0.1:6379", "scheme", "needs a scheme"},
		{"credentials without scheme", "app:pw@127.0.0.1:6379", "scheme", "needs a scheme"},
		{"unix with one slash", "unix:/run/redis.sock", "scheme", "unix:///run/redis.sock"},
		{"http scheme", "http://127.0.0.1:6379", "scheme", `scheme "http" is not supported`},
		{"odd scheme not echoed", "a:b@c://h", "scheme", "has an unsupported scheme"},
		{"control character", "redis://r\n:6379", "url", "control character"},

		{"port not a number", "redis://127.0.0.1:notaport/0", "port", "invalid port: not a number"},
		{"port zero", "redis://127.0.0.1:0/0", "port", "port is not in 1-65535"},
		{"port too large", "redis://127.0.0.1:70000/0", "port", "port is not in 1-65535"},
		{"port huge", "redis://127.0.0.1:99999999999999999999999", "port", "port is not in 1-65535"},
		{"no host", "redis:///0", "host", "has no host"},
		{"only a port", "redis://:6379/0", "host", "has no host, only a port"},
		{"two hosts on redis", "redis://a:6379,b:6379/0", "host", "redis:// takes one"},
		{"bad host character", "redis://my host/0", "host", "a host name with a character other than"},
		{"ipv6 without brackets", "redis://::1:6379", "host", "IPv6 address without brackets"},
		{"ipv6 unclosed", "redis://[::1:6379", "host", "without its closing ']'"},
		{"ipv6 junk after bracket", "redis://[::1]x", "host", "not a :port"},
		{"brackets around a name", "redis://[localhost]:6379", "host", "not an IPv6 address"},
		{"brackets around ipv4", "redis://[127.0.0.1]:6379", "host", "not an IPv6 address"},
		{"ipv6 raw zone", "redis://[fe80::1%eth0]:6379", "host", "not an IPv6 address"},
		{"ipv6 empty zone", "redis://[fe80::1%25]:6379", "host", "empty IPv6 zone"},
		{"ipv6 bad zone", "redis://[fe80::1%25e/0]:6379", "host", "without its closing ']'"},
		{"ipv6 zone character", "redis://[fe80::1%25e!0]:6379", "host", "zone with a character"},

		{"db not a number", "redis://127.0.0.1:6379/zero", "db", `database "zero" is not a non-negative number`},
		{"db negative", "redis://127.0.0.1:6379/-1", "db", "not a non-negative number"},
		{"db overflow", "redis://r/99999999999999999999999", "db", "not a non-negative number"},
		{"path too deep", "redis://127.0.0.1:6379/1/2", "db", "not a non-negative number"},
		{"db in the query", "redis://r:6379?db=2", "query", `parameter "db" is not supported by redis://: set client options in the config file; put the database in the path, as in redis://host:6379/2`},
		{"tls in the query", "redis://r?tls=true", "query", "use rediss:// for TLS"},
		{"query parameters", "redis://127.0.0.1:6379/0?password=x&max_retries=3", "query", `parameters "max_retries", "password" are not supported`},
		{"odd parameter name not echoed", "rediss://r?p%40ss%3Aword=1", "query", "(a name not shown)"},
		{"unknown name not echoed", "redis://r?retries=1&password=x", "query", `parameters "password", (a name not shown) are not supported`},
		{"parameter given twice", "redis-cluster://n1?tls=true&tls=true", "query", `parameter "tls" is given twice`},
		{"bad escape in parameter name", "redis://r?%zz=1", "query", "parameter name with an invalid %-escape"},
		{"bad escape in parameter value", "redis-sentinel://s/m?sentinel_password=%zz", "query", `"sentinel_password" has a value with an invalid %-escape`},
		{"fragment", "redis://127.0.0.1:6379/0#x", "fragment", "must not have a #fragment"},
		{"empty fragment", "redis://127.0.0.1:6379/0#", "fragment", "must not have a #fragment"},
		{"bad escape in password", "redis://app:pw%zz@127.0.0.1:6379/0", "userinfo", "password has an invalid %-escape"},
		{"bad escape in username", "redis://%zzapp:x@127.0.0.1:6379/0", "userinfo", "username has an invalid %-escape"},
		{"unescaped slash in password", "redis://app:p/w@127.0.0.1:6379/0", "userinfo", "'@' after the host"},
		{"unescaped hash in password", "redis://app:p#w@127.0.0.1:6379/0", "userinfo", "'@' after the host"},
		{"unescaped question mark in password", "redis://app:p?w@127.0.0.1:6379/0", "userinfo", "'@' after the host"},

		{"unix without path", "unix://", "path", "unix url has no socket path"},
		{"unix root", "unix:///", "path", "unix url has no socket path"},
		{"unix relative path", "unix://run/redis.sock", "host", "must not name a host"},
		{"unix bad escape", "unix:///run/%zz.sock", "path", "invalid %-escape"},
		{"unix escaped control character", "unix:///run/a%0Ab.sock", "path", "control character"},
		{"unix bad db", "unix:///run/redis.sock?db=x", "db", `database "x" is not a non-negative number`},
		{"unix empty db", "unix:///run/redis.sock?db=", "db", `parameter "db" is empty`},
		{"unix unknown parameter", "unix:///run/redis.sock?db=1&timeout=1s", "query", `parameter "timeout" is not supported by unix://: only db is`},

		{"sentinel no master", "redis-sentinel://s1:26379,s2:26379", "master name", "has no master name"},
		{"sentinel no master with slash", "redis-sentinel://s1:26379/", "master name", "has no master name"},
		{"sentinel db without master", "redis-sentinel://s1:26379//0", "master name", "has no master name"},
		{"sentinel master with space", "redis-sentinel://s1/my%20master", "master name", "space or a control character"},
		{"sentinel master bad escape", "redis-sentinel://s1/my%zz", "master name", "invalid %-escape"},
		{"sentinel bad db", "redis-sentinel://s1/mymaster/x", "db", `database "x"`},
		{"sentinel path too deep", "redis-sentinel://s1/mymaster/0/1", "db", `database "0/1"`},
		{"sentinel empty host in list", "redis-sentinel://s1:26379,,s3:26379/mymaster", "host", "empty entry in its host list (host 2 of 3)"},
		{"sentinel trailing comma", "redis-sentinel://s1:26379,/mymaster", "host", "empty entry in its host list (host 2 of 2)"},
		{"sentinel no hosts", "redis-sentinel:///mymaster", "host", "has no host"},
		{"sentinel bad port in list", "redis-sentinel://s1:26379,s2:x/mymaster", "port", "invalid port (host 2 of 2): not a number"},
		{"sentinel port out of range in list", "redis-sentinel://s1:26379,s2:0/mymaster", "port", "port (host 2 of 2) is not in 1-65535"},
		{"sentinel same address twice", "redis-sentinel://s1,S1:26379/mymaster", "host", "same address twice (hosts 1 and 2 of 2)"},
		{"sentinel unknown parameter", "redis-sentinel://s1/m?password=x", "query", `parameter "password" is not supported by redis-sentinel://: only sentinel_username, sentinel_password and tls are`},
		{"sentinel tls not a bool", "redis-sentinel://s1/m?tls=yes", "query", `parameter "tls" must be true or false`},
		{"sentinel tls false with rediss", "rediss-sentinel://s1/m?tls=false", "query", "is false but the scheme is rediss-sentinel://"},

		{"cluster db", "redis-cluster://n1,n2/1", "db", "names database 1: a cluster has database 0 only"},
		{"cluster bad db", "redis-cluster://n1,n2/x", "db", `database "x"`},
		{"cluster empty host", "redis-cluster://n1,,n3", "host", "empty entry in its host list (host 2 of 3)"},
		{"cluster leading comma", "redis-cluster://,n1", "host", "empty entry in its host list (host 1 of 2)"},
		{"cluster ipv6 without brackets", "redis-cluster://n1,::1", "host", "IPv6 address without brackets (host 2 of 2)"},
		{"cluster master name", "redis-cluster://n1/mymaster", "db", `database "mymaster"`},
		{"cluster sentinel parameter", "redis-cluster://n1?sentinel_password=x", "query", `parameter "sentinel_password" is not supported by redis-cluster://: only tls is`},
		{"cluster tls not a bool", "redis-cluster://n1?tls=1", "query", `parameter "tls" must be true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := Parse(tt.raw)
			if err == nil {
				t.Fatalf("Parse(%q) = %s, want an error", tt.raw, dump(u))
			}
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("Parse(%q) error %T, want *Error", tt.raw, err)
			}
			if ue.Part != tt.part {
				t.Errorf("Parse(%q) error part = %q, want %q (%v)", tt.raw, ue.Part, tt.part, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.raw, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "redisurl: url ") {
				t.Errorf("Parse(%q) error = %q, want the prefix %q", tt.raw, err, "redisurl: url ")
			}
		})
	}
}

// TestParseErrorsKeepSecrets breaks URLs in every way the parser knows, each carrying a
// distinctive password in every place a password goes (and in some where it should not), and
// checks that no error repeats any piece of it.
func TestParseErrorsKeepSecrets(t *testing.T) {
	const pw = "Hunter2Secret"
	// The distinctive pieces: any one of them in a message means the password leaked.
	pieces := []string{"Hunter2", "2Secret", "unter2Sec"}
	userinfos := []string{
		":" + pw,
		"app:" + pw,
		pw,
		pw + ":x",
		"app:" + pw + "%zz",
		"app:%zz" + pw,
		pw + "%zz:x",
		"app:" + url.PathEscape(pw+"/@?#"),
	}
	var inputs []string
	for _, ui := range userinfos {
		for _, form := range []string{
			"redis://%s@127.0.0.1:notaport/0",
			"redis://%s@127.0.0.1:0/0",
			"redis://%s@/0",
			"redis://%s@h/zero",
			"redis://%s@h/0/1",
			"redis://%s@h?db=1",
			"redis://%s@h/0#frag",
			"redis://%s@a,b",
			"redis://%s@[::1",
			"redis://%s@h\x00",
			"http://%s@h",
			"unix://%s@host/run.sock",
			"unix://%s@",
			"unix://%s@/run.sock?db=x",
			"redis-sentinel://%s@s1,,s2/m",
			"redis-sentinel://%s@s1",
			"redis-sentinel://%s@s1/m/x?sentinel_password=x",
			"redis-sentinel://%s@s1/m?tls=maybe",
			"redis-cluster://%s@n1/3",
			"redis-cluster://%s@n1,n1",
			"rediss-cluster://%s@n1?tls=false",
		} {
			inputs = append(inputs, fmt.Sprintf(form, ui))
		}
	}
	// The password where it does not belong: unescaped delimiters, no '@', no scheme, the
	// query, the sentinel password.
	inputs = append(inputs,
		"redis://app:"+pw+"/x@h:6379/0",
		"redis://app:"+pw+"?x@h:6379/0",
		"redis://app:"+pw+"#x@h:6379/0",
		"redis://app:"+pw+"@h:6379/0/"+pw+"@",
		"app:"+pw+"@127.0.0.1:6379",
		":"+pw+"@h",
		"redis:"+pw+"@h",
		"redis:/"+pw+"@h",
		"redis://:"+pw,
		"redis://app:"+pw,
		"redis://"+pw+":"+pw,
		"redis://h/0?password="+pw,
		"redis://h/0?"+pw+"=1",
		"redis://h/0?"+pw,
		"redis://h/0?x="+pw+"%zz",
		"redis-sentinel://s1/m?sentinel_password="+pw+"%zz",
		"redis-sentinel://s1/m?sentinel_password="+pw+"&sentinel_password="+pw,
		"redis-sentinel://s1/m?sentinel_password="+pw+"&tls=on",
		"redis-sentinel://s1/m?sentinel_password="+pw+"&db=1",
		"redis-sentinel://s1,s2:x/m?sentinel_password="+pw,
		"redis-sentinel://:"+pw+"@s1,s2:x/m?sentinel_password="+pw,
		"redis-cluster://n1?tls="+pw,
		"unix://"+pw+"/run.sock",
		"unix:"+pw,
	)
	for _, raw := range inputs {
		_, err := Parse(raw)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", raw)
			continue
		}
		for _, p := range pieces {
			if strings.Contains(err.Error(), p) {
				t.Errorf("Parse(%q) error = %q repeats the password", raw, err)
				break
			}
		}
	}
}

// TestRedactedNeverShowsCredentials checks the property FuzzParse checks, on URLs whose
// credentials are set after parsing to values no address can hold.
func TestRedactedNeverShowsCredentials(t *testing.T) {
	for _, raw := range []string{
		"redis://app:pw@h/1", "rediss://h", "unix:///run/r.sock?db=2",
		"redis-sentinel://s1,s2/m/3?sentinel_username=u&sentinel_password=p", "rediss-cluster://n1,n2",
	} {
		u, err := Parse(raw)
		if err != nil {
			t.Fatalf("Parse(%q): %v", raw, err)
		}
		u.Username, u.Password, u.SentinelUsername, u.SentinelPassword = "user\x01", "pass\x02", "suser\x03", "spass\x04"
		for _, s := range []string{u.Redacted(), u.String(), fmt.Sprintf("%v %+v %#v %s", u, u, u, u)} {
			if strings.ContainsAny(s, "\x01\x02\x03\x04") || strings.Contains(s, "user") || strings.Contains(s, "pass") {
				t.Errorf("%q shows a credential", s)
			}
		}
	}
}

func TestZeroURL(t *testing.T) {
	var u URL
	if got := u.Redacted(); got != "" {
		t.Errorf("URL{}.Redacted() = %q, want \"\"", got)
	}
	if got := Topology(0).String(); got != "Topology(0)" {
		t.Errorf("Topology(0).String() = %q", got)
	}
}

func TestTopologyString(t *testing.T) {
	for topo, want := range map[Topology]string{Single: "single", Unix: "unix", Sentinel: "sentinel", Cluster: "cluster"} {
		if got := topo.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(topo), got, want)
		}
	}
}
