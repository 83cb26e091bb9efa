package canon

import "strings"

// OverrideHeaders are the headers through which frameworks let a request claim another method:
// Express's method-override middleware reads X-HTTP-Method-Override (and any header it is
// told to), Rails and Laravel X-HTTP-Method-Override, Microsoft stacks X-HTTP-Method, others
// X-Method-Override. Names are lower-case, as transports pass them.
var OverrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// Override refuses (method_override) a request that claims another method than the one it was
// sent with, unless allow has MethodOverride: a policy would match the method on the wire while
// an app behind a method-override middleware runs the handler of the claimed one, so a POST
// policy would decide a DELETE. It reads the headers and a `_method` parameter in the target's
// query (method-override's usual query form).
func Override(target string, headers map[string]string, allow Class) error {
	if allow.Has(MethodOverride) {
		return nil
	}
	for _, h := range OverrideHeaders {
		if _, ok := headers[h]; ok {
			return refuse(ReasonMethodOverride, "the request claims another method in "+h)
		}
	}
	_, query, ok := strings.Cut(target, "?")
	if !ok {
		return nil
	}
	for query != "" {
		var param string
		param, query, _ = strings.Cut(query, "&")
		name, _, _ := strings.Cut(param, "=")
		if strings.EqualFold(name, "_method") || strings.EqualFold(name, "%5Fmethod") {
			return refuse(ReasonMethodOverride, "the request claims another method in a _method parameter")
		}
	}
	return nil
}
