package server

import "net/http"

// tooLargeBody is the answer to a request that declares a body longer than the cap.
const tooLargeBody = `{"error":"request body too large"}` + "\n"

// capBody wraps a handler whose requests carry no body worth reading (the authorization
// endpoints decide on the request line and headers). It never lets more than max bytes of a
// body be read:
//   - a declared Content-Length above max is answered 413 and the connection closed unread;
//   - a body of unknown length (chunked) is answered normally and the connection closed, so
//     the server does not read it to reuse the connection;
//   - a declared body up to max is left to the server, which discards it after the answer to
//     keep the connection, within the listener's ReadTimeout.
//
// The handler sees the body behind http.MaxBytesReader in case it ever reads one.
func capBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.ContentLength > max:
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusRequestEntityTooLarge, tooLargeBody)
			return
		case r.ContentLength < 0:
			w.Header().Set("Connection", "close")
		}
		if r.ContentLength != 0 {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		next.ServeHTTP(w, r)
	})
}
