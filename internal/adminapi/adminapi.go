// Package adminapi serves the sidecar's admin API, mounted under /v1/ on the admin listener
// for the app in the same pod: today the session index's list and revoke ("sign out
// everywhere"). Who may call it is the server's business: internal/server serves it to
// loopback peers and admin.api_allow only.
package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/sessions"
)

// Bounds of one call.
const (
	// maxBody bounds a request body: a revoke request is a few dozen bytes.
	maxBody = 16 << 10
	// maxUser bounds the user a request names.
	maxUser = 1024
	// DefaultTimeout bounds the Redis work of one call.
	DefaultTimeout = 5 * time.Second
)

// SessionIndex is the part of *sessions.Index the API uses.
type SessionIndex interface {
	List(ctx context.Context, subject string) ([]sessions.Entry, error)
	Revoke(ctx context.Context, subject, except string) (int, error)
	RevokeID(ctx context.Context, id, subject string) (string, error)
}

var _ SessionIndex = (*sessions.Index)(nil)

// Options configures the API.
type Options struct {
	// Sessions serves /v1/sessions; nil answers those paths 404 with a reason.
	Sessions SessionIndex
	// Timeout bounds the Redis work of one call, DefaultTimeout when zero.
	Timeout time.Duration
	Logger  *zap.Logger
}

// New returns the handler of every path under /v1/:
//
//	GET  /v1/sessions?user=U      200 {"user": U, "sessions": [entry...]}
//	POST /v1/sessions/revoke      {"user": U, "except": ID} or {"id": ID}  200 {"revoked": N}
//
// Errors are JSON {"error": text}: 400 for a bad request, 404 for an unknown id, 415 for a
// body that is not application/json, 503 when Redis fails. No answer and no log line holds a
// sid or a cookie.
func New(opts Options) http.Handler {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	a := &api{opts: opts, log: opts.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions", a.list)
	mux.HandleFunc("POST /v1/sessions/revoke", a.revoke)
	// The catch-all outranks the mux's own 405, so it answers a wrong method itself.
	allowed := map[string]string{"/v1/sessions": "GET", "/v1/sessions/revoke": "POST"}
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, r.URL.Path+" takes "+m)
			return
		}
		writeError(w, http.StatusNotFound, "no such admin API endpoint")
	})
	return mux
}

type api struct {
	opts Options
	log  *zap.Logger
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	if a.opts.Sessions == nil {
		writeError(w, http.StatusNotFound, "the session index is off: it needs sessions configured and sessions.index.enabled")
		return
	}
	user := r.URL.Query().Get("user")
	if msg := checkUser(user); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.Timeout)
	defer cancel()
	entries, err := a.opts.Sessions.List(ctx, user)
	if err != nil {
		a.backendError(w, "list", err)
		return
	}
	if entries == nil {
		entries = []sessions.Entry{}
	}
	writeJSON(w, http.StatusOK, struct {
		User     string           `json:"user"`
		Sessions []sessions.Entry `json:"sessions"`
	}{user, entries})
}

// revokeRequest is the body of POST /v1/sessions/revoke.
type revokeRequest struct {
	User   string `json:"user"`
	Except string `json:"except"`
	ID     string `json:"id"`
}

func (a *api) revoke(w http.ResponseWriter, r *http.Request) {
	if a.opts.Sessions == nil {
		writeError(w, http.StatusNotFound, "the session index is off: it needs sessions configured and sessions.index.enabled")
		return
	}
	// A JSON content type keeps a web page's cross-origin form or fetch, which cannot set it
	// without a preflight this API never answers, from revoking through a browser on the host.
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		writeError(w, http.StatusUnsupportedMediaType, "send the body as application/json")
		return
	}
	var req revokeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body over 16 KiB")
			return
		}
		writeError(w, http.StatusBadRequest, "body is not a JSON object of user, except and id: "+jsonProblem(err))
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body holds more than one JSON value")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.Timeout)
	defer cancel()
	switch {
	case req.ID != "":
		if req.Except != "" {
			writeError(w, http.StatusBadRequest, `"except" goes with "user", not with "id"`)
			return
		}
		if req.User != "" {
			if msg := checkUser(req.User); msg != "" {
				writeError(w, http.StatusBadRequest, msg)
				return
			}
		}
		if !sessions.ValidPublicID(req.ID) {
			writeError(w, http.StatusBadRequest, `"id" must be a session id as listed (16 hex digits)`)
			return
		}
		_, err := a.opts.Sessions.RevokeID(ctx, req.ID, req.User)
		switch {
		case errors.Is(err, sessions.ErrUnknownID):
			writeError(w, http.StatusNotFound, "no indexed session with that id")
			return
		case err != nil:
			a.backendError(w, "revoke", err)
			return
		}
		a.log.Info("session revoked through the admin API", zap.String("id", req.ID))
		writeJSON(w, http.StatusOK, map[string]int{"revoked": 1})
	default:
		if msg := checkUser(req.User); msg != "" {
			writeError(w, http.StatusBadRequest, msg+` (or give "id")`)
			return
		}
		if req.Except != "" && !sessions.ValidPublicID(req.Except) {
			writeError(w, http.StatusBadRequest, `"except" must be a session id as listed (16 hex digits)`)
			return
		}
		n, err := a.opts.Sessions.Revoke(ctx, req.User, req.Except)
		switch {
		case errors.Is(err, sessions.ErrUnknownID):
			writeError(w, http.StatusNotFound, `no indexed session of that user has the "except" id; nothing was revoked`)
			return
		case err != nil:
			a.backendError(w, "revoke", err)
			return
		}
		a.log.Info("sessions revoked through the admin API", zap.Int("revoked", n), zap.Bool("except", req.Except != ""))
		writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
	}
}

// checkUser says what is wrong with a user named in a request, or "".
func checkUser(user string) string {
	switch {
	case user == "":
		return `"user" is required`
	case len(user) > maxUser:
		return `"user" is over 1024 bytes`
	case strings.ContainsAny(user, "\r\n\x00"):
		return `"user" holds CR, LF or NUL, which no session subject does`
	}
	return ""
}

// backendError answers 503 with a fixed text and logs the detail, which may name the Redis
// address but never a sid.
func (a *api) backendError(w http.ResponseWriter, op string, err error) {
	a.log.Warn("admin API: session index call failed", zap.String("op", op), zap.Error(err))
	writeError(w, http.StatusServiceUnavailable, "the session index is unavailable (redis failed); try again")
}

func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// jsonProblem describes a decode error without quoting the body.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON"
	case errors.As(err, &te):
		return "field " + te.Field + " has the wrong type"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or truncated body"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The field's name is the caller's own text: bounded, it is the useful part.
		msg := strings.TrimPrefix(err.Error(), "json: ")
		if len(msg) > 80 {
			msg = msg[:80] + "..."
		}
		return msg
	}
	return "unreadable"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
