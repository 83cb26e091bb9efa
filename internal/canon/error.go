package canon

// The reasons an Error carries: bounded snake_case labels, safe in metrics and logs.
const (
	ReasonNotOriginForm    = "not_origin_form"
	ReasonTooLong          = "too_long"
	ReasonFragment         = "fragment"
	ReasonControlCharacter = "control_character"
	ReasonBackslash        = "backslash"
	ReasonBadEscape        = "bad_escape"
	ReasonEncodedControl   = "encoded_control"
	ReasonDotSegment       = "dot_segment"
	ReasonEncodedSlash     = "encoded_slash"
	ReasonEncodedDot       = "encoded_dot"
	ReasonEncodedPercent   = "encoded_percent"
	ReasonSemicolon        = "semicolon"
	ReasonEmptySegments    = "empty_segments"
	ReasonNonASCII         = "non_ascii"
	ReasonBadHost          = "bad_host"
	ReasonBadMethod        = "bad_method"
	ReasonMethodOverride   = "method_override"
)

// Error is why a request is refused; Reason is a bounded snake_case label usable in metrics.
// Detail says where, never echoing the input, which may hold secrets in its query.
type Error struct {
	Reason string
	Detail string
}

// Error returns the reason and the detail.
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Reason
	}
	return e.Reason + ": " + e.Detail
}

func refuse(reason, detail string) *Error {
	return &Error{Reason: reason, Detail: detail}
}
