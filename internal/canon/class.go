package canon

import (
	"fmt"
	"strings"
)

// Class is a set of opt-out classes: target spellings denied by default that an operator may allow.
type Class uint16

// The opt-out classes, one bit each. ClassNames holds their config spellings in this order.
const (
	EncodedSlash   Class = 1 << iota // %2F or %5C in the path
	EncodedDot                       // %2E in the path
	EncodedPercent                   // %25 in the path
	Semicolon                        // ';' in the path
	EmptySegments                    // "//" in the path
	NonASCII                         // raw bytes >= 0x80 in the path
	MethodOverride                   // X-HTTP-Method-Override and kin, or a _method query parameter
)

// ClassNames are the config spellings of the classes, in bit order: ClassNames[i] names Class(1<<i).
var ClassNames = []string{"encoded_slash", "encoded_dot", "encoded_percent", "semicolon", "empty_segments", "non_ascii", "method_override"}

// classNames is the private copy that the package reads, so that a caller changing ClassNames
// cannot change how classes parse.
var classNames = [...]string{"encoded_slash", "encoded_dot", "encoded_percent", "semicolon", "empty_segments", "non_ascii", "method_override"}

// ParseClasses turns config spellings into a Class. An unknown name is an error that lists the
// valid ones; an empty list is no class at all.
func ParseClasses(names []string) (Class, error) {
	var c Class
	for _, name := range names {
		bit, ok := classBit(name)
		if !ok {
			return 0, fmt.Errorf("unknown request class %q (valid: %s)", name, strings.Join(classNames[:], ", "))
		}
		c |= bit
	}
	return c, nil
}

func classBit(name string) (Class, bool) {
	for i, n := range classNames {
		if n == name {
			return 1 << i, true
		}
	}
	return 0, false
}

// Has reports whether c holds every class of o.
func (c Class) Has(o Class) bool { return c&o == o }

// String lists the config spellings of the classes in c, comma-separated, or "none".
func (c Class) String() string {
	var parts []string
	for i, n := range classNames {
		if c&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if rest := c &^ (1<<len(classNames) - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint16(rest)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
