package config

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDurationRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want string // the marshalled form
	}{
		{"zero", 0, "0s"},
		{"milliseconds", 25 * time.Millisecond, "25ms"},
		{"fraction of a millisecond", 1500 * time.Microsecond, "1.5ms"},
		{"seconds", 10 * time.Second, "10s"},
		{"minute", time.Minute, "1m"},
		{"minutes and seconds", 90 * time.Second, "1m30s"},
		{"day", 24 * time.Hour, "24h"},
		{"hours and minutes", 90 * time.Minute, "1h30m"},
		{"negative", -time.Second, "-1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := yaml.Marshal(struct {
				D Duration `yaml:"d"`
			}{Duration(tt.in)})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); got != "d: "+tt.want {
				t.Errorf("marshalled %q, want %q", got, "d: "+tt.want)
			}
			var back struct {
				D Duration `yaml:"d"`
			}
			if err := yaml.Unmarshal(out, &back); err != nil {
				t.Fatalf("unmarshal %q: %v", out, err)
			}
			if back.D.D() != tt.in {
				t.Errorf("round trip gave %v, want %v", back.D.D(), tt.in)
			}
		})
	}
}

func TestDurationUnmarshalErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bare integer", "d: 25", "use a unit, e.g. 25ms"},
		{"bare float", "d: 2.5", "use a unit, e.g. 25ms"},
		{"quoted integer", "d: '25'", "use a unit, e.g. 25ms"},
		{"words", "d: soon", `"soon" is not a duration`},
		{"boolean", "d: true", "expected a duration such as 25ms, got the boolean true"},
		{"list", "d: [1s]", "expected a duration such as 25ms, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v struct {
				D Duration `yaml:"d"`
			}
			err := yaml.Unmarshal([]byte(tt.yaml), &v)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDurationBareZero(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
	}
	v.D = Duration(time.Second)
	if err := yaml.Unmarshal([]byte("d: 0"), &v); err != nil {
		t.Fatalf("bare 0: %v", err)
	}
	if v.D != 0 {
		t.Errorf("bare 0 gave %v, want 0s", v.D)
	}
}
