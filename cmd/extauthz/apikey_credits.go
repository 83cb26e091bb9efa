package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// creditFlags are apikey create's credit flags.
type creditFlags struct {
	credits, refill *int64
	every           *string
}

func addCreditFlags(fs *flag.FlagSet) creditFlags {
	return creditFlags{
		credits: fs.Int64("credits", -1, "give the key `N` credits; every request it makes spends one (default: no credits)"),
		refill:  fs.Int64("refill", 0, "set the balance back to `N` at every refill (needs --credits and --refill-every)"),
		every:   fs.String("refill-every", "", "refill `PERIOD`: 1d (every UTC midnight) or 1mo (the 1st of every month, UTC)"),
	}
}

// params turns the flags into CreditParams: nil without --credits.
func (f creditFlags) params() (*apikeys.CreditParams, error) {
	if *f.credits < 0 {
		if *f.credits != -1 {
			return nil, fmt.Errorf("--credits %d: want 0 or more", *f.credits)
		}
		if *f.refill != 0 || *f.every != "" {
			return nil, errors.New("--refill and --refill-every need --credits")
		}
		return nil, nil
	}
	if (*f.refill > 0) != (*f.every != "") {
		return nil, errors.New("--refill and --refill-every go together: --refill N --refill-every 1d|1mo")
	}
	if _, err := ratelimit.ParseRefill(*f.every); err != nil {
		return nil, fmt.Errorf("--refill-every %q: want 1d or 1mo", *f.every)
	}
	if *f.refill < 0 {
		return nil, fmt.Errorf("--refill %d: want 1 or more", *f.refill)
	}
	return &apikeys.CreditParams{Initial: *f.credits, Refill: *f.refill, Every: *f.every}, nil
}

// refillText describes a key's refill: "refill 100 every 1d", or "no refill".
func refillText(c apikeys.Credits) string {
	if c.Every == "" {
		return "no refill"
	}
	return fmt.Sprintf("refill %d every %s", c.Refill, c.Every)
}

// creditsEntry is the "credits" object of list --json and credits --json. Remaining is null
// when the balance is missing (every request on the key is then denied); NextRefill is null
// without a refill.
type creditsEntry struct {
	Remaining   *int64  `json:"remaining"`
	Initial     int64   `json:"initial"`
	Refill      int64   `json:"refill"`
	RefillEvery string  `json:"refill_every"`
	NextRefill  *string `json:"next_refill"`
}

// creditsJSON is rec's credits object, nil for a key without credits.
func creditsJSON(rec apikeys.Record, b ratelimit.Balance, ok bool, now time.Time) *creditsEntry {
	c := rec.Credits
	if !c.Enabled {
		return nil
	}
	e := &creditsEntry{Initial: c.Initial, Refill: c.Refill, RefillEvery: c.Every}
	if ok {
		e.Remaining = &b.Remaining
		if b.NextRefill > 0 {
			s := now.Add(b.NextRefill).UTC().Truncate(time.Second).Format(time.RFC3339)
			e.NextRefill = &s
		}
	}
	return e
}

// creditsCell is the CREDITS column of list: "42 (100/1d)", "42" without a refill,
// "missing" when the balance is gone, "-" for a key without credits.
func creditsCell(rec apikeys.Record, b ratelimit.Balance, ok bool) string {
	c := rec.Credits
	switch {
	case !c.Enabled:
		return "-"
	case !ok:
		return "missing"
	case c.Every == "":
		return strconv.FormatInt(b.Remaining, 10)
	}
	return fmt.Sprintf("%d (%d/%s)", b.Remaining, c.Refill, c.Every)
}

func runAPIKeyCredits(args []string, stdout, stderr io.Writer) int {
	fs, rf := newAPIKeyFlags("credits", stderr)
	set := fs.String("set", "", "set the balance to `N` (it counts as this period's refill)")
	add := fs.String("add", "", "add `N` credits after the refill that is due (negative takes away, never below 0)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	var n int64
	switch {
	case len(pos) != 1:
		err = errors.New("want exactly one ID")
	case *set != "" && *add != "":
		err = errors.New("--set and --add do not go together")
	case *set != "":
		if n, err = strconv.ParseInt(*set, 10, 64); err != nil || n < 0 {
			err = fmt.Errorf("--set %q: want a whole number, 0 or more", *set)
		}
	case *add != "":
		if n, err = strconv.ParseInt(*add, 10, 64); err != nil {
			err = fmt.Errorf("--add %q: want a whole number", *add)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "extauthz apikey credits: %v\n\n%s", err, apikeyUsage)
		return 2
	}
	id := pos[0]
	return withStore("credits", rf, stderr, func(ctx context.Context, st *apikeys.Store) int {
		if st.Valid(id) {
			fmt.Fprintln(stderr, "extauthz apikey credits: that is an api key, not its id: use the id that create and list print")
			return 1
		}
		var rec apikeys.Record
		var b ratelimit.Balance
		var err error
		switch {
		case *set != "":
			rec, b, err = st.SetCredits(ctx, id, n)
		case *add != "":
			rec, b, err = st.AddCredits(ctx, id, n)
		default:
			if rec, err = st.Get(ctx, id); err == nil {
				b, err = st.Balance(ctx, rec)
			}
		}
		switch {
		case errors.Is(err, apikeys.ErrNotFound):
			fmt.Fprintf(stderr, "extauthz apikey credits: no api key with id %q\n", id)
			return 1
		case errors.Is(err, apikeys.ErrNoCredits):
			fmt.Fprintf(stderr, "extauthz apikey credits: api key %s has no credits (create a key with --credits to meter it)\n", id)
			return 1
		case errors.Is(err, ratelimit.ErrNoBalance):
			fmt.Fprintf(stderr, "extauthz apikey credits: the balance of %s is missing, so every request on it is denied; restore it with --set N\n", id)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "extauthz apikey credits: %v\n", err)
			return 1
		}
		next := ""
		if b.NextRefill > 0 {
			next = ", next " + time.Now().Add(b.NextRefill).UTC().Truncate(time.Second).Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%s: %d credits remaining, %s%s\n", id, b.Remaining, refillText(rec.Credits), next)
		return 0
	})
}
