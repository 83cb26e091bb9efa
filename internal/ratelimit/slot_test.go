package ratelimit

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// slotCases were answered by CLUSTER KEYSLOT on redis-server 7.0.15. They cover the hash tag
// rule's corners as the Redis Cluster specification states them.
var slotCases = []struct {
	name, key string
	want      int
}{
	{"empty key", "", 0},
	{"CRC16 check value", "123456789", 12739},
	{"plain key", "foo", 12182},
	{"plain key 2", "bar", 5061},
	{"tag", "{user1000}.following", 3443},
	{"same tag, same slot", "{user1000}.followers", 3443},
	{"the tag alone", "user1000", 3443},
	{"empty first tag hashes the whole key", "foo{}{bar}", 8363},
	{"tag up to the first closing brace", "foo{{bar}}zap", 4015},
	{"first tag only", "foo{bar}{zap}", 5061},
	{"only braces", "{}", 15257},
	{"open brace alone", "{", 4092},
	{"close brace alone", "}", 12090},
	{"unclosed tag", "a{b", 13340},
	{"close before open", "a}b{c}", 7365},
	{"authz limit key", "rl:{api:minute:principal%3Aalice}", 11518},
	{"rate-limit-redis key (shared_prefix)", "rl:1.2.3.4", 7531},
	{"rls key", "rls:{api.user_alice}", 13232},
	{"high bytes", "\xff\xfe", 3374},
}

func TestSlot(t *testing.T) {
	for _, tc := range slotCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Slot(tc.key); got != tc.want {
				t.Fatalf("Slot(%q) = %d, want %d", tc.key, got, tc.want)
			}
		})
	}
}

// TestSlotMatchesRedis asks a real server (a cluster-enabled node: CLUSTER KEYSLOT needs
// cluster mode, not slots) for the slot of the table's keys and of random ones, braces and
// binary bytes included.
func TestSlotMatchesRedis(t *testing.T) {
	s := redistest.Start(t, "--cluster-enabled", "yes")
	rc := newClient(t, s.URL(), false)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	keys := []string{"\x00", "{\x00}", "}{", "{{}}", "{a}{b}", "x{}y{z}"}
	for _, tc := range slotCases {
		keys = append(keys, tc.key)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab{}:_.%\x00\xff")
	for range 2000 {
		b := make([]byte, rng.IntN(24))
		for i := range b {
			if rng.IntN(3) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = byte(rng.IntN(256))
			}
		}
		keys = append(keys, string(b))
	}
	// The keys go as arguments, not keys: the node serves no slots, and CLUSTER KEYSLOT
	// only hashes its argument.
	for _, k := range keys {
		v, err := rc.Do(ctx, "CLUSTER", nil, "KEYSLOT", k)
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		if got := Slot(k); int64(got) != v {
			t.Fatalf("Slot(%q) = %d, CLUSTER KEYSLOT says %v", k, got, v)
		}
	}
}

func TestBySlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []string
		want [][]int
	}{
		{"one key", []string{"{a}"}, [][]int{{0}}},
		{"one tag", []string{"{a}1", "{a}2", "x{a}"}, [][]int{{0, 1, 2}}},
		{"groups in order of first key, indexes ascending", []string{"{b}1", "{a}1", "{b}2", "{c}", "{a}2"}, [][]int{{0, 2}, {1, 4}, {3}}},
		{"untagged keys hash whole", []string{"rl:1.2.3.4", "rl:1.2.3.5", "rl:1.2.3.4"}, [][]int{{0, 2}, {1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bySlot(tc.keys); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("bySlot(%q) = %v, want %v", tc.keys, got, tc.want)
			}
			if got, want := oneSlot(tc.keys), len(tc.want) == 1; got != want {
				t.Fatalf("oneSlot(%q) = %t, want %t", tc.keys, got, want)
			}
		})
	}
}

// TestOneSlotAllocs: the common case, every key in one slot, costs no allocation on top of
// the single script.
func TestOneSlotAllocs(t *testing.T) {
	keys := []string{"rl:{p:minute:principal%3Aalice}", "rl:{p:minute:principal%3Aalice}h", "{p:minute:principal%3Aalice}:x"}
	if n := testing.AllocsPerRun(100, func() {
		if !oneSlot(keys) {
			t.Fatal("keys with one tag are not in one slot")
		}
	}); n != 0 {
		t.Fatalf("oneSlot allocates %v times", n)
	}
}

// spreadTags returns n hash tags, prefix then a number, whose slots lie in n different
// ranges of the 16384 (the middle of each nth), so that on a three-master Cluster made by
// redis-cli --cluster create, three tags land on three masters.
func spreadTags(prefix string, n int) []string {
	tags := make([]string, n)
	width := Slots / n
	for j := range n {
		for i := 0; ; i++ {
			tag := prefix + strconv.Itoa(i)
			if s := Slot(tag); s >= j*width+width/4 && s < (j+1)*width-width/4 {
				tags[j] = tag
				break
			}
		}
	}
	return tags
}
