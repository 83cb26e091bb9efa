package apikeys

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The states State reports.
const (
	StateActive  = "active"
	StateExpired = "expired"
	StateRevoked = "revoked"
)

// The hash fields of a record, as the package comment lists them.
const (
	fieldID       = "id"
	fieldName     = "name"
	fieldOwner    = "owner"
	fieldTier     = "tier"
	fieldScopes   = "scopes"
	fieldCreated  = "created"
	fieldExpires  = "expires"
	fieldDisabled = "disabled"
)

// Record is what Redis holds about one key. It carries neither the key nor its hash, so
// printing or logging a Record cannot leak either.
type Record struct {
	// ID names the key for List and Revoke: "k_" plus 12 base62 characters.
	ID string
	// Name is a free-text label, for example the service the key was issued to.
	Name string
	// Owner is who the key acts for; authorization uses it as the principal.
	Owner string
	// Tier selects per-tier rate limits; empty means the policy's default limits.
	Tier string
	// Scopes are what the key may do; nil when it has none. None of them holds a comma.
	Scopes []string
	// Created is when the key was issued, to the second, in UTC.
	Created time.Time
	// Expires is when the key stops working, to the second, in UTC; zero means never.
	Expires time.Time
	// Disabled is set by Revoke and never cleared.
	Disabled bool
	// Credits is the key's credit quota; Credits.Enabled is false for a key without one.
	Credits Credits
}

// State says whether the key works at now: "revoked" once disabled (whatever its expiry),
// else "expired" from the Expires instant on, else "active".
func (r Record) State(now time.Time) string {
	switch {
	case r.Disabled:
		return StateRevoked
	case !r.Expires.IsZero() && !now.Before(r.Expires):
		return StateExpired
	default:
		return StateActive
	}
}

// fields encodes r as HSET arguments.
func (r Record) fields() []string {
	expires := int64(0)
	if !r.Expires.IsZero() {
		expires = r.Expires.Unix()
	}
	disabled := "0"
	if r.Disabled {
		disabled = "1"
	}
	return r.Credits.appendFields([]string{
		fieldID, r.ID,
		fieldName, r.Name,
		fieldOwner, r.Owner,
		fieldTier, r.Tier,
		fieldScopes, strings.Join(r.Scopes, ","),
		fieldCreated, strconv.FormatInt(r.Created.Unix(), 10),
		fieldExpires, strconv.FormatInt(expires, 10),
		fieldDisabled, disabled,
	})
}

// parseRecord decodes an HGETALL reply. A reply that lacks the id or holds numbers that do not
// parse is an error: it was not written by Create, and guessing could let a revoked or
// expired key through.
func parseRecord(m map[string]string) (Record, error) {
	r := Record{
		ID:    m[fieldID],
		Name:  m[fieldName],
		Owner: m[fieldOwner],
		Tier:  m[fieldTier],
	}
	if r.ID == "" {
		return Record{}, fmt.Errorf("%w: no id", errBadRecord)
	}
	if s := m[fieldScopes]; s != "" {
		r.Scopes = strings.Split(s, ",")
	}
	created, err := strconv.ParseInt(m[fieldCreated], 10, 64)
	if err != nil {
		return Record{}, fmt.Errorf("%w: id %s: created %q", errBadRecord, r.ID, m[fieldCreated])
	}
	r.Created = time.Unix(created, 0).UTC()
	expires, err := strconv.ParseInt(m[fieldExpires], 10, 64)
	if err != nil {
		return Record{}, fmt.Errorf("%w: id %s: expires %q", errBadRecord, r.ID, m[fieldExpires])
	}
	if expires != 0 {
		r.Expires = time.Unix(expires, 0).UTC()
	}
	switch m[fieldDisabled] {
	case "0":
	case "1":
		r.Disabled = true
	default:
		return Record{}, fmt.Errorf("%w: id %s: disabled %q", errBadRecord, r.ID, m[fieldDisabled])
	}
	if r.Credits, err = parseCredits(r.ID, m); err != nil {
		return Record{}, err
	}
	return r, nil
}
