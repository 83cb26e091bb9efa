package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem in a config, located by its dotted field path (such as
// "redis.timeout" or, for future lists, "policies[2].name") and, when the value came from a
// file, by the file name and line.
type FieldError struct {
	File string // the file name given to Parse; empty when unknown
	Line int    // 1-based; 0 when unknown
	Path string // dotted field path; empty for problems with the document itself
	Msg  string
}

// Error formats e as "file:line: path: msg", leaving out the parts that are unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// origin says where a field's value came from: a file line or an environment variable. val is
// the value it had then; a problem is only pinned to the origin while the field still holds
// that value, so that a flag set after Parse is not blamed on the file.
type origin struct {
	file string
	line int
	env  string
	val  any
}

// join sorts problems by line, unknown lines last and otherwise in the order found, and joins
// them into one error whose Unwrap() []error lists each *FieldError.
func join(problems []*FieldError) error {
	if len(problems) == 0 {
		return nil
	}
	slices.SortStableFunc(problems, func(a, b *FieldError) int {
		switch {
		case a.Line == b.Line:
			return 0
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return a.Line - b.Line
	})
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// syntaxError turns a yaml.v3 parse error ("yaml: line 3: mapping values are not allowed in
// this context") into a FieldError that carries the line on its own.
func syntaxError(file string, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &FieldError{File: file, Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				e.Line, e.Msg = n, tail
			}
		}
	}
	e.Msg = "invalid YAML: " + e.Msg
	return e
}

// describeNode names what a YAML node holds, for messages such as "expected an integer, got
// a mapping". It quotes scalars, which are config values a user wrote, never secrets from the
// environment.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int":
			return "the integer " + n.Value
		case "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "null"
		}
		return strconv.Quote(n.Value)
	}
	return "an unexpected YAML node"
}

// suggest returns the known word closest to an unknown one, or "" when none is close enough
// to be a likely typo, or when two are equally close ("draft-9" is as near "draft-6" as
// "draft-8", and naming one would mislead). Case and the choice between _ and - or camelCase
// are forgiven first, because "dialTimeout" for "dial_timeout" is the most common slip.
func suggest(unknown string, known []string) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
	}
	best, bestDist, tie := "", -1, false
	for _, k := range known {
		if norm(k) == norm(unknown) {
			return k
		}
		d := editDistance(strings.ToLower(unknown), k)
		switch {
		case bestDist < 0 || d < bestDist:
			best, bestDist, tie = k, d, false
		case d == bestDist:
			tie = true
		}
	}
	limit := 2
	if len(unknown) <= 4 {
		limit = 1
	}
	if bestDist < 0 || bestDist > limit || tie {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions, deletions, substitutions
// and swaps of adjacent characters each count one, so "grcp" is one edit from "grpc".
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between the first i runes of a and the first j runes of b.
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
