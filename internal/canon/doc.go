// Package canon turns what a proxy received (a raw request target, a host, a method) into the one
// canonical form that policies match on, and refuses every spelling that two components could read
// differently: the sidecar, the proxy in front of it and the router of the app behind it must agree
// on which path a request names, or the request is refused.
//
// # Request targets
//
// Path reads an origin-form target ("/a/b?q") exactly as it came over the wire, not decoded. It
// always refuses (Error.Reason in parentheses):
//
//   - an empty target or one that does not start with "/", such as "*" or "http://x/y" (not_origin_form);
//   - a target longer than Options.MaxTargetLength, 8192 bytes by default (too_long);
//   - a "#" anywhere, query included (fragment);
//   - a byte below 0x21 or 0x7F anywhere, query included (control_character);
//   - a raw "\" in the path (backslash);
//   - a "%" not followed by two hex digits (bad_escape);
//   - an escape that decodes to a control byte, %00-%1F and %7F, or a space (%20) that begins or
//     ends a segment, which some servers trim (encoded_control); a %20 inside a segment is kept
//     as %20;
//   - a "." or ".." segment once decoded, also when followed by ";params" (dot_segment).
//
// It refuses by default, unless Options.Allow holds the class named in parentheses:
//
//   - %2F or %5C, an encoded "/" or "\" (encoded_slash): kept as "%2F" or "%5C";
//   - %2E, an encoded "." (encoded_dot): decoded, and a dot segment that results is still refused;
//   - %25, an encoded "%" (encoded_percent): kept as "%25", so nothing is decoded twice;
//   - ";" in the path, raw or escaped as %3B (semicolon): kept (decoded);
//   - an empty segment, "//" (empty_segments): merged into one "/", as Envoy's merge_slashes does;
//   - a raw byte >= 0x80 in the path (non_ascii): kept.
//
// The query, from the first "?", is checked as above and dropped from the result. Every other escape
// is decoded ("/%61dmin" is "/admin"), except %3F and %23, which stay escaped (upper case) so that the
// result never holds a "?" or "#" that was not a path character. A trailing "/" and letter case are
// kept. A plain ASCII target with no "%", ".", ";", "\", "#" or "//" is returned as its path, without
// allocating.
//
// # Hosts and methods
//
// Host folds case, drops a ":port" (digits only), the brackets of an IPv6 literal and one trailing
// dot, and refuses anything else that a proxy could read as another host (bad_host). Method accepts
// an RFC 9110 token without lower-case letters (bad_method).
//
// docs/request-target.md says how each proxy and Express read the same bytes.
package canon
