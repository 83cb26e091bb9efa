package rls

import (
	"fmt"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// maxWindowSeconds is ratelimit.MaxWindow in seconds: the longest window an override may ask
// for (config units end at a year, well below it).
const maxWindowSeconds = int64(ratelimit.MaxWindow / time.Second)

// bound returns v, def when v is zero or negative, and ceiling when v is above it.
func bound[T int | uint64](v, def, ceiling T) T {
	switch {
	case v <= 0:
		return def
	case v > ceiling:
		return ceiling
	}
	return v
}

// checkBounds rejects, with InvalidArgument and before any matching or Redis call, a request
// with more descriptors, more entries in a descriptor, or a larger hits_addend than the
// service accepts. Every descriptor is checked, whatever its domain: the work a request can
// cause is bounded before its meaning is looked at.
func (s *Service) checkBounds(req *rlsv3.RateLimitRequest) error {
	descs := req.GetDescriptors()
	if len(descs) > s.maxDescs {
		return status.Errorf(codes.InvalidArgument, "%d descriptors, more than the maximum %d (ratelimit.max_descriptors)", len(descs), s.maxDescs)
	}
	if h := uint64(req.GetHitsAddend()); h > s.maxHits {
		return status.Errorf(codes.InvalidArgument, "hits_addend %d above the maximum %d (ratelimit.max_hits_addend)", h, s.maxHits)
	}
	for i, d := range descs {
		if n := len(d.GetEntries()); n > s.maxEntries {
			return status.Errorf(codes.InvalidArgument, "descriptors[%d]: %d entries, more than the maximum %d (ratelimit.max_entries)", i, n, s.maxEntries)
		}
		if h := d.GetHitsAddend(); h != nil && h.GetValue() > s.maxHits {
			return status.Errorf(codes.InvalidArgument, "descriptors[%d].hits_addend %d above the maximum %d (ratelimit.max_hits_addend)", i, h.GetValue(), s.maxHits)
		}
	}
	return nil
}

// hitsFor is the descriptor's own hits_addend when set (0 means check only), else the
// request's (0 means 1). checkBounds has bounded both.
func hitsFor(req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor) uint64 {
	if d.GetIsNegativeHits() {
		// Refunds are not supported: the counter is read, never decremented.
		return 0
	}
	if h := d.GetHitsAddend(); h != nil {
		return h.GetValue()
	}
	if n := req.GetHitsAddend(); n > 0 {
		return uint64(n)
	}
	return 1
}

// overrideLimit builds the limit a request asks for with its own `limit` field; it replaces
// config matching for that descriptor. The window is the unit times unit_multiplier (1 when
// unset), at most ratelimit.MaxWindow; a multiplier of 0 breaks the proto's own rule (gt 0).
func overrideLimit(o *ratelimitv3.RateLimitDescriptor_RateLimitOverride) (*RateLimit, error) {
	// envoy.type.v3.RateLimitUnit and the response's Unit share their numbering for
	// SECOND..YEAR.
	unit := rlsv3.RateLimitResponse_RateLimit_Unit(int32(o.GetUnit()))
	window, ok := UnitWindow(unit)
	if !ok {
		return nil, fmt.Errorf("unknown rate limit unit %s", o.GetUnit())
	}
	if m := o.GetUnitMultiplier(); m != nil {
		if m.GetValue() == 0 {
			return nil, fmt.Errorf("unit_multiplier must be at least 1")
		}
		// At most 365 days x (2^32-1) seconds: no overflow in int64.
		window *= int64(m.GetValue())
	}
	if window > maxWindowSeconds {
		return nil, fmt.Errorf("window of %d seconds (%s x unit_multiplier) is longer than the maximum %d seconds (10 years)", window, unit, maxWindowSeconds)
	}
	return &RateLimit{
		RequestsPerUnit: o.GetRequestsPerUnit(),
		Unit:            unit,
		Window:          window,
		Rule:            "_override",
	}, nil
}
